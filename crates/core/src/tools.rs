//! Tool calling apart from any protocol: the tools a request offers, the three output formats
//! models are trained to call them in (recognised from their chat template), and a parser that
//! turns generated text into text and calls, whole or as it streams.
//!
//! - **Hermes** (Qwen 2.5, Hermes 2 Pro, and aiserve's own prompt for templates that know no
//!   tools): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, any number of them.
//! - **Llama 3.1+ JSON**: the whole answer is `{"name": ..., "parameters": {...}}` (several
//!   separated by `;`), optionally after the `<|python_tag|>` token.
//! - **Mistral**: `[TOOL_CALLS]` then a JSON list of `{"name": ..., "arguments": {...}}`.
//!
//! The streaming parser lets text through as it comes except what could still be the start of
//! a call marker, and hands out each call once it is complete, so markup never leaks into the
//! text. A call whose JSON does not parse comes out as the text it was.
//!
//! Requests that force a call (`required` or a named tool) do not depend on the format: their
//! output is constrained to JSON ([`required_schema`], the tool's own parameter schema) and read
//! back with [`calls_of_required`].

use rand::Rng;
use serde_json::{json, Map, Value};

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of its arguments (an object schema).
    pub parameters: Value,
}

impl Tool {
    /// The tool as transformers hands it to chat templates (OpenAI's shape).
    pub fn template_value(&self) -> Value {
        let mut f = Map::new();
        f.insert("name".into(), self.name.clone().into());
        if let Some(d) = &self.description {
            f.insert("description".into(), d.clone().into());
        }
        f.insert("parameters".into(), self.parameters.clone());
        json!({ "type": "function", "function": f })
    }
}

/// Whether and how the model must call a tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// The format a model writes its calls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3Json,
    Mistral,
}

impl ToolFormat {
    /// The format a chat template teaches, from the markers its text uses.
    pub fn of_template(source: &str) -> Option<Self> {
        if source.contains("<tool_call>") {
            Some(Self::Hermes)
        } else if source.contains("[TOOL_CALLS]") {
            Some(Self::Mistral)
        } else if source.contains("<|python_tag|>") || (source.contains("ipython") && source.contains("parameters")) {
            Some(Self::Llama3Json)
        } else {
            None
        }
    }

    fn open(self) -> &'static str {
        match self {
            Self::Hermes => "<tool_call>",
            Self::Llama3Json => "<|python_tag|>",
            Self::Mistral => "[TOOL_CALLS]",
        }
    }
}

/// One call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// A fresh call id: `call_` and 24 letters and digits, or the 9 that Mistral's templates insist on.
pub fn call_id(format: Option<ToolFormat>) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String { (0..n).map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char).collect() };
    match format {
        Some(ToolFormat::Mistral) => pick(9),
        _ => format!("call_{}", pick(24)),
    }
}

/// What the parser hands out.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plain text, watching for the call marker.
    Text,
    /// Inside `<tool_call>`, waiting for its end.
    InCall,
    /// Everything to the end is calls.
    Rest,
}

/// Generated text to text and calls, as it streams.
pub struct ToolParser {
    format: ToolFormat,
    mode: Mode,
    pending: String,
    /// Something other than whitespace went out as text (Llama's bare JSON must come first).
    said: bool,
    /// What opened the current call (to give back as text if the call does not parse).
    opened: String,
}

impl ToolParser {
    pub fn new(format: ToolFormat) -> Self {
        Self { format, mode: Mode::Text, pending: String::new(), said: false, opened: String::new() }
    }

    /// Takes the next piece of text; returns what is settled.
    pub fn push(&mut self, delta: &str) -> Vec<Piece> {
        self.pending.push_str(delta);
        let mut out = Vec::new();
        loop {
            match self.mode {
                Mode::Text => {
                    if self.format == ToolFormat::Llama3Json && !self.said {
                        let t = self.pending.trim_start();
                        if t.is_empty() {
                            break;
                        }
                        if t.starts_with('{') {
                            self.pending = t.to_string();
                            self.opened.clear();
                            self.mode = Mode::Rest;
                            continue;
                        }
                    }
                    let open = self.format.open();
                    if let Some(at) = self.pending.find(open) {
                        let before: String = self.pending.drain(..at + open.len()).collect();
                        self.text(&before[..at], &mut out);
                        self.opened = open.to_string();
                        self.mode = if self.format == ToolFormat::Hermes { Mode::InCall } else { Mode::Rest };
                        continue;
                    }
                    let hold = held_prefix(&self.pending, open);
                    let ready: String = self.pending.drain(..self.pending.len() - hold).collect();
                    self.text(&ready, &mut out);
                    break;
                }
                Mode::InCall => {
                    const CLOSE: &str = "</tool_call>";
                    let Some(at) = self.pending.find(CLOSE) else { break };
                    let body: String = self.pending.drain(..at + CLOSE.len()).collect();
                    self.calls(&body[..at], CLOSE, &mut out);
                    self.mode = Mode::Text;
                }
                Mode::Rest => break,
            }
        }
        out
    }

    /// The end of the text: whatever is held back is settled.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        match self.mode {
            Mode::Text => self.text(&rest, &mut out),
            // An unclosed call (the model ended at its end token) still counts if it parses.
            Mode::InCall | Mode::Rest => self.calls(&rest, "", &mut out),
        }
        self.mode = Mode::Text;
        out
    }

    fn text(&mut self, t: &str, out: &mut Vec<Piece>) {
        if t.is_empty() {
            return;
        }
        self.said |= !t.trim().is_empty();
        match out.last_mut() {
            Some(Piece::Text(prev)) => prev.push_str(t),
            _ => out.push(Piece::Text(t.to_string())),
        }
    }

    fn calls(&mut self, body: &str, close: &str, out: &mut Vec<Piece>) {
        match parse_calls(body) {
            Some(calls) if !calls.is_empty() => {
                out.extend(calls.into_iter().map(|(name, arguments)| {
                    Piece::Call(ToolCall { id: call_id(Some(self.format)), name, arguments })
                }));
            }
            _ => {
                let text = format!("{}{body}{close}", self.opened);
                self.text(&text, out);
            }
        }
    }
}

/// Length of the longest end of `text` that begins `marker` (held back: it may become one).
fn held_prefix(text: &str, marker: &str) -> usize {
    (1..marker.len()).rev().find(|&k| marker.is_char_boundary(k) && text.ends_with(&marker[..k])).unwrap_or(0)
}

/// Every JSON value in `body`, separated by whitespace, `;` or `,` (a JSON list counts as its
/// items), as `(name, arguments JSON)`; `None` if any is not a call.
fn parse_calls(body: &str) -> Option<Vec<(String, String)>> {
    let mut values = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let v = stream.next()?.ok()?;
        rest = rest[stream.byte_offset()..].trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == ',');
        match v {
            Value::Array(items) => values.extend(items),
            v => values.push(v),
        }
    }
    values.into_iter().map(call_of).collect()
}

/// `{"name": ..., "arguments" | "parameters": {...}}` as `(name, arguments JSON)`.
fn call_of(v: Value) -> Option<(String, String)> {
    let Value::Object(mut m) = v else { return None };
    let name = m.remove("name")?.as_str()?.to_string();
    let args = m.remove("arguments").or_else(|| m.remove("parameters")).unwrap_or_else(|| json!({}));
    let args = match args {
        // Some models write the arguments as a JSON string.
        Value::String(s) if serde_json::from_str::<Value>(&s).is_ok_and(|v| v.is_object()) => s,
        Value::Object(o) => Value::Object(o).to_string(),
        _ => return None,
    };
    Some((name, args))
}

/// The whole text at once: its text (`None` when only whitespace is left) and its calls.
pub fn parse(format: ToolFormat, text: &str) -> (Option<String>, Vec<ToolCall>) {
    let mut p = ToolParser::new(format);
    let mut pieces = p.push(text);
    pieces.extend(p.finish());
    let (mut content, mut calls) = (String::new(), Vec::new());
    for piece in pieces {
        match piece {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call(c) => calls.push(c),
        }
    }
    let content = if calls.is_empty() || !content.trim().is_empty() { Some(content) } else { None };
    (content, calls)
}

/// The schema a `required` choice constrains the output to: a list of calls (one at most when
/// parallel calls are off), each naming one of the tools with its arguments.
pub fn required_schema(tools: &[Tool], parallel: bool) -> Value {
    let options: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": { "name": { "const": t.name }, "parameters": t.parameters },
                "required": ["name", "parameters"],
                "additionalProperties": false
            })
        })
        .collect();
    let mut schema = json!({ "type": "array", "minItems": 1, "items": { "anyOf": options } });
    if !parallel {
        schema["maxItems"] = 1.into();
    }
    schema
}

/// The calls of an output constrained by [`required_schema`], with ids as `ids` spells them.
pub fn calls_of_required(text: &str, ids: Option<ToolFormat>) -> Option<Vec<ToolCall>> {
    let Value::Array(items) = serde_json::from_str::<Value>(text).ok()? else { return None };
    items
        .into_iter()
        .map(|v| call_of(v).map(|(name, arguments)| ToolCall { id: call_id(ids), name, arguments }))
        .collect()
}

/// A system prompt offering `tools` in the Hermes format, for models whose template knows no
/// tools (the wording of Qwen 2.5's template, which small instruction models follow well).
pub fn hermes_system_prompt(tools: &[Tool]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&t.template_value().to_string());
    }
    s.push_str("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(format: ToolFormat, text: &str, step: usize) -> Vec<Piece> {
        let mut p = ToolParser::new(format);
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for chunk in chars.chunks(step) {
            out.extend(p.push(&chunk.iter().collect::<String>()));
        }
        out.extend(p.finish());
        // Text pieces joined, calls with their ids blanked, for comparison.
        let mut merged: Vec<Piece> = Vec::new();
        for piece in out {
            match (merged.last_mut(), piece) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, Piece::Call(mut c)) => {
                    c.id.clear();
                    merged.push(Piece::Call(c))
                }
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    fn call(name: &str, args: &str) -> Piece {
        Piece::Call(ToolCall { id: String::new(), name: name.into(), arguments: args.into() })
    }

    fn text(t: &str) -> Piece {
        Piece::Text(t.into())
    }

    #[test]
    fn hermes_calls_come_out_whole_at_any_chunking_and_text_around_them_stays() {
        let out = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(
                stream(ToolFormat::Hermes, out, step),
                [
                    text("Let me check.\n"),
                    call("get_weather", "{\"city\":\"Paris\"}"),
                    text("\n"),
                    call("get_time", "{}"),
                ],
                "step {step}"
            );
        }
        // Text that only looks like the start of a marker is let through in the end.
        assert_eq!(stream(ToolFormat::Hermes, "a <tool and <b>", 1), [text("a <tool and <b>")]);
        // A call that does not parse is given back as the text it was.
        assert_eq!(
            stream(ToolFormat::Hermes, "<tool_call>{oops}</tool_call>", 2),
            [text("<tool_call>{oops}</tool_call>")]
        );
        // An unclosed call at the end still counts.
        assert_eq!(
            stream(ToolFormat::Hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}", 4),
            [call("f", "{\"x\":1}")]
        );
    }

    #[test]
    fn llama_json_and_mistral_lists() {
        let out =
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"f\", \"parameters\": {}}";
        for step in [1, 5, 1000] {
            assert_eq!(
                stream(ToolFormat::Llama3Json, out, step),
                [call("get_weather", "{\"city\":\"Oslo\"}"), call("f", "{}")]
            );
        }
        assert_eq!(
            stream(ToolFormat::Llama3Json, "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}", 3),
            [call("f", "{}")]
        );
        // Prose is prose, and JSON that is no call is text too.
        assert_eq!(stream(ToolFormat::Llama3Json, "The answer is {1}.", 2), [text("The answer is {1}.")]);
        assert_eq!(stream(ToolFormat::Llama3Json, "{\"a\": 1}", 2), [text("{\"a\": 1}")]);
        let m = "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}, {\"name\": \"neg\", \"arguments\": \"{\\\"x\\\": 3}\"}]";
        for step in [1, 4, 1000] {
            assert_eq!(
                stream(ToolFormat::Mistral, m, step),
                [call("add", "{\"a\":1,\"b\":2}"), call("neg", "{\"x\": 3}")]
            );
        }
    }

    #[test]
    fn whole_answers_and_formats_from_templates() {
        let (content, calls) =
            parse(ToolFormat::Hermes, "\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": \"x\"}}\n</tool_call>");
        assert_eq!((content, calls.len(), calls[0].arguments.as_str()), (None, 1, "{\"q\":\"x\"}"));
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
        assert_eq!(parse(ToolFormat::Hermes, "hi").0.as_deref(), Some("hi"));
        assert_eq!(call_id(Some(ToolFormat::Mistral)).len(), 9);
        assert_eq!(ToolFormat::of_template("{{ '<tool_call>' }}"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::of_template("[TOOL_CALLS] {{ x }}"), Some(ToolFormat::Mistral));
        assert_eq!(ToolFormat::of_template("{{ '<|python_tag|>' }}"), Some(ToolFormat::Llama3Json));
        assert_eq!(ToolFormat::of_template("{{ messages }}"), None);
    }

    #[test]
    fn forced_calls_read_back_from_their_schema() {
        let tools = [Tool { name: "f".into(), description: None, parameters: json!({"type": "object"}) }];
        let s = required_schema(&tools, false);
        assert_eq!(s["maxItems"], 1);
        assert_eq!(s["items"]["anyOf"][0]["properties"]["name"]["const"], "f");
        let calls = calls_of_required("[{\"name\": \"f\", \"parameters\": {\"a\": 1}}]", None).unwrap();
        assert_eq!((calls[0].name.as_str(), calls[0].arguments.as_str()), ("f", "{\"a\":1}"));
        assert!(calls_of_required("{", None).is_none());
        assert!(hermes_system_prompt(&tools).contains("{\"type\":\"function\",\"function\":{\"name\":\"f\""));
    }
}
