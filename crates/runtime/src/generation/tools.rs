//! Tool calling around the engine, for every protocol that offers tools (OpenAI chat and
//! Responses, Anthropic Messages): how a request's tools reach the prompt, which grammar a
//! forced call runs under, and how generated text becomes text and calls ([`CallStream`]),
//! whole or streamed.
//!
//! Templates that describe tools themselves (Qwen 2.5, Llama 3.1+, Mistral) get them as
//! transformers passes them, and the answer is parsed in the template's own format. Templates
//! that know no tools (SmolLM2) get the tools described in a system message in the Hermes
//! format, and earlier calls and results written out in it, so any chat model can take part.
//! `required` and a named tool constrain the output to JSON that can only be such a call.

use aiserve_core::chat::{ChatTemplate, Message};
use aiserve_core::tools::{
    self, calls_of_required, hermes_system_prompt, required_schema, Piece, Tool, ToolCall, ToolChoice, ToolFormat,
    ToolParser,
};
use serde_json::Value;

use super::grammar::{Grammar, GrammarRequest};
use crate::error::Error;

/// The tools part of a request, validated by its protocol.
#[derive(Clone, Debug)]
pub struct ToolRequest {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// More than one call per answer (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
}

/// How a choice's text becomes calls.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutput {
    /// The model's own format, parsed (`auto`); without `parallel` only the first call counts.
    Parsed { format: ToolFormat, parallel: bool },
    /// The whole text is the arguments of tool `name` (a named `tool_choice`); call ids are
    /// spelt as `ids` wants them (Mistral's templates take back only 9 characters).
    Arguments { name: String, ids: Option<ToolFormat> },
    /// The text is a JSON list of `{name, parameters}` (`required`).
    List { ids: Option<ToolFormat> },
}

/// A chat ready for the template, and how its answer is read.
pub struct Prepared {
    pub messages: Vec<Message>,
    /// The tools in the template's context, when the template reads them.
    pub tools: Option<Vec<Value>>,
    pub output: Option<CallOutput>,
    /// The grammar of a forced call.
    pub grammar: Option<GrammarRequest>,
    /// The parser must see special tokens (a format's call marker may be one).
    pub keep_special: bool,
}

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

/// Prepares `messages` for the template under `req`'s tools; `field` names the request's tools
/// field in errors (`tools`, or `tool_choice` for a choice naming no offered tool).
pub fn prepare(
    req: Option<&ToolRequest>,
    template: &ChatTemplate,
    mut messages: Vec<Message>,
    choice_field: &str,
) -> Result<Prepared, Error> {
    let native = template.tool_format();
    if native.is_none() {
        messages = messages.into_iter().map(written_out).collect();
    }
    let Some(req) = req.filter(|r| !r.tools.is_empty() && r.choice != ToolChoice::None) else {
        return Ok(Prepared { messages, tools: None, output: None, grammar: None, keep_special: false });
    };
    let tools = match native {
        Some(_) => Some(req.tools.iter().map(Tool::template_value).collect()),
        None => {
            let offer = hermes_system_prompt(&req.tools);
            match messages.first_mut() {
                Some(m) if m.role == "system" || m.role == "developer" => {
                    m.content = format!("{}\n\n{offer}", m.content);
                }
                _ => messages.insert(0, Message::new("system", &offer)),
            }
            None
        }
    };
    let format = native.unwrap_or(ToolFormat::Hermes);
    let (output, grammar) = match &req.choice {
        ToolChoice::Named(name) => {
            let (i, tool) = req.tools.iter().enumerate().find(|(_, t)| &t.name == name).ok_or_else(|| {
                Error::invalid(
                    choice_field,
                    format!("`{choice_field}` names `{name}`, which is not among the tools offered"),
                )
            })?;
            let grammar = GrammarRequest {
                grammar: Grammar::JsonSchema(tool.parameters.clone()),
                field: format!("tools[{i}].parameters"),
            };
            (CallOutput::Arguments { name: name.clone(), ids: native }, Some(grammar))
        }
        ToolChoice::Required => {
            let grammar = GrammarRequest {
                grammar: Grammar::JsonSchema(required_schema(&req.tools, req.parallel)),
                field: "tools".into(),
            };
            (CallOutput::List { ids: native }, Some(grammar))
        }
        _ => (CallOutput::Parsed { format, parallel: req.parallel }, None),
    };
    let keep_special = matches!(output, CallOutput::Parsed { .. });
    Ok(Prepared { messages, tools, output: Some(output), grammar, keep_special })
}

/// A message for a template that knows no tools: calls and results written out as Hermes text.
fn written_out(mut m: Message) -> Message {
    if let Some(calls) = m.tool_calls.take() {
        for c in calls {
            let f = c.get("function").unwrap_or(&c);
            let call = serde_json::json!({ "name": f.get("name"), "arguments": f.get("arguments") });
            if !m.content.is_empty() {
                m.content.push('\n');
            }
            m.content.push_str(&format!("<tool_call>\n{call}\n</tool_call>"));
        }
    }
    if m.role == "tool" {
        m.role = "user".into();
        m.content = format!("<tool_response>\n{}\n</tool_response>", m.content);
        m.tool_call_id = None;
        m.name = None;
    }
    m
}

/// What a choice's text becomes, piece by piece.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    Text(String),
    /// A call starts: its position among the choice's calls, id and tool.
    Call {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a call's arguments (JSON text).
    Arguments {
        index: usize,
        json: String,
    },
}

/// One choice's text turned into text and calls as it streams.
pub struct CallStream {
    output: Option<CallOutput>,
    parser: Option<ToolParser>,
    /// A forced list's text, read when it ends.
    buffer: String,
    calls: usize,
}

impl CallStream {
    pub fn new(output: Option<&CallOutput>) -> Self {
        let parser = match output {
            Some(CallOutput::Parsed { format, .. }) => Some(ToolParser::new(*format)),
            _ => None,
        };
        Self { output: output.cloned(), parser, buffer: String::new(), calls: 0 }
    }

    /// Calls handed out so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    pub fn push(&mut self, text: &str) -> Vec<Delta> {
        match &self.output {
            None => vec![Delta::Text(text.to_string())],
            Some(CallOutput::Parsed { .. }) => {
                let pieces = self.parser.as_mut().map(|p| p.push(text)).unwrap_or_default();
                self.pieces(pieces)
            }
            Some(CallOutput::Arguments { name, ids }) => {
                let mut out = Vec::new();
                if self.calls == 0 {
                    out.push(Delta::Call { index: 0, id: tools::call_id(*ids), name: name.clone() });
                    self.calls = 1;
                }
                if !text.is_empty() {
                    out.push(Delta::Arguments { index: 0, json: text.to_string() });
                }
                out
            }
            Some(CallOutput::List { .. }) => {
                self.buffer.push_str(text);
                Vec::new()
            }
        }
    }

    /// The end of the choice's text.
    pub fn finish(&mut self) -> Vec<Delta> {
        match &self.output {
            None => Vec::new(),
            Some(CallOutput::Parsed { .. }) => {
                let pieces = self.parser.as_mut().map(ToolParser::finish).unwrap_or_default();
                self.pieces(pieces)
            }
            Some(CallOutput::Arguments { .. }) => self.push(""),
            Some(CallOutput::List { ids }) => {
                let text = std::mem::take(&mut self.buffer);
                match calls_of_required(&text, *ids) {
                    Some(calls) => self.pieces(calls.into_iter().map(Piece::Call).collect()),
                    // Cut short by `max_tokens`: what there is, as text.
                    None => vec![Delta::Text(text)],
                }
            }
        }
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> Vec<Delta> {
        let single = matches!(self.output, Some(CallOutput::Parsed { parallel: false, .. }));
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Text(t) => out.push(Delta::Text(t)),
                // `parallel_tool_calls: false`: calls after the first are dropped.
                Piece::Call(_) if single && self.calls > 0 => {}
                Piece::Call(ToolCall { id, name, arguments }) => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(Delta::Call { index, id, name });
                    out.push(Delta::Arguments { index, json: arguments });
                }
            }
        }
        out
    }
}

/// A whole answer as the deltas its stream would hand out, in one go, and its number of calls.
pub fn whole(output: Option<&CallOutput>, text: &str) -> (Vec<Delta>, usize) {
    let mut stream = CallStream::new(output);
    let mut deltas = stream.push(text);
    deltas.extend(stream.finish());
    (deltas, stream.calls())
}

/// A whole answer: its text (`None` when calls left only whitespace) and its calls.
pub fn settle(output: Option<&CallOutput>, text: &str) -> (Option<String>, Vec<ToolCall>) {
    let (deltas, _) = whole(output, text);
    let (mut content, mut calls) = (String::new(), Vec::<ToolCall>::new());
    for d in deltas {
        match d {
            Delta::Text(t) => content.push_str(&t),
            Delta::Call { id, name, .. } => calls.push(ToolCall { id, name, arguments: String::new() }),
            Delta::Arguments { index, json } => {
                if let Some(c) = calls.get_mut(index) {
                    c.arguments.push_str(&json);
                }
            }
        }
    }
    let content = if calls.is_empty() || !content.trim().is_empty() { Some(content) } else { None };
    (content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    fn req(choice: ToolChoice) -> ToolRequest {
        ToolRequest { tools: vec![weather()], choice, parallel: true }
    }

    /// A user asks for the weather, the assistant calls `get_weather` for Oslo with id `id`,
    /// and the tool answers "cold".
    fn weather_history(id: &str) -> Vec<Message> {
        let mut call = Message::new("assistant", "");
        call.tool_calls = Some(vec![
            json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}),
        ]);
        let mut result = Message::new("tool", "cold");
        result.tool_call_id = Some(id.into());
        vec![Message::new("user", "weather?"), call, result]
    }

    const NATIVE: &str = "{% if tools %}{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% endif %}{% endfor %}";

    #[test]
    fn native_templates_get_the_tools_and_plain_ones_a_system_prompt() {
        let native = ChatTemplate::new(NATIVE, "", "").unwrap();
        let mut call = Message::new("assistant", "");
        call.tool_calls = Some(vec![
            json!({"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}),
        ]);
        let history = vec![Message::new("user", "weather?"), call, Message::new("tool", "cold")];
        let p = prepare(Some(&req(ToolChoice::Auto)), &native, history.clone(), "tool_choice").unwrap();
        let text = native.render_with_tools(&p.messages, p.tools.as_deref(), true).unwrap();
        assert_eq!(text, "get_weather;[user]weather?[assistant]<tool_call>{\"city\": \"Oslo\"}</tool_call>[tool]cold");
        assert_eq!(p.output, Some(CallOutput::Parsed { format: ToolFormat::Hermes, parallel: true }));
        assert!(p.grammar.is_none() && p.keep_special);

        let plain =
            ChatTemplate::new("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}", "", "").unwrap();
        let p = prepare(Some(&req(ToolChoice::Auto)), &plain, history, "tool_choice").unwrap();
        let text = plain.render_with_tools(&p.messages, p.tools.as_deref(), true).unwrap();
        assert!(text.starts_with("[system]# Tools") && text.contains("\"name\":\"get_weather\""), "{text}");
        assert!(
            text.contains(
                "[assistant]<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>"
            ),
            "{text}"
        );
        assert!(text.ends_with("[user]<tool_response>\ncold\n</tool_response>"), "{text}");
    }

    /// Qwen 2.5's own template (the base models' variant: its default system prompt is "You are
    /// a helpful assistant."), and the prompt transformers renders from it for a conversation
    /// with a call and its result: tools through `tojson` as Python's `json.dumps` writes them.
    #[test]
    fn qwen_2_5s_template_renders_tools_calls_and_results_as_transformers_does() {
        let qwen = ChatTemplate::new(include_str!("testdata/qwen2.5-base.jinja"), "", "<|im_end|>").unwrap();
        let history = weather_history("call_1");
        let p = prepare(Some(&req(ToolChoice::Auto)), &qwen, history, "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::Parsed { format: ToolFormat::Hermes, parallel: true }));
        let text = qwen.render_with_tools(&p.messages, p.tools.as_deref(), true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nweather?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\ncold\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        );
        // What Qwen 2.5 answers in that format, streamed token-sized, comes back as the call.
        let answer = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bergen\"}}\n</tool_call>";
        let mut s = CallStream::new(p.output.as_ref());
        let mut deltas = Vec::new();
        for piece in answer.as_bytes().chunks(3) {
            deltas.extend(s.push(std::str::from_utf8(piece).unwrap()));
        }
        deltas.extend(s.finish());
        assert!(deltas.iter().all(|d| !matches!(d, Delta::Text(t) if !t.trim().is_empty())), "{deltas:?}");
        assert!(matches!(&deltas[0], Delta::Call { index: 0, name, .. } if name == "get_weather"));
        assert_eq!(deltas[1], Delta::Arguments { index: 0, json: "{\"city\":\"Bergen\"}".into() });
        // Without tools the template renders plain chat.
        let plain = qwen.render(&[Message::new("user", "hi")], true).unwrap();
        assert_eq!(plain, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    /// Llama 3.2's own template (from its `tokenizer_config.json`): tools in the first user
    /// message through `tojson(indent=4)`, a call as bare JSON with `parameters`, a string
    /// result quoted (Jinja counts strings as iterable), as transformers renders it.
    #[test]
    fn llama_3_2s_template_renders_tools_and_its_json_calls_are_read_back() {
        let llama =
            ChatTemplate::new(include_str!("testdata/llama3.2.jinja"), "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let history = weather_history("call_1");
        let p = prepare(Some(&req(ToolChoice::Auto)), &llama, history, "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::Parsed { format: ToolFormat::Llama3Json, parallel: true }));
        let text = llama.render_with_tools(&p.messages, p.tools.as_deref(), true).unwrap();
        let today = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}", "", "").unwrap().render(&[], false).unwrap();
        let tool = "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Weather in a city\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}";
        assert_eq!(
            text,
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: {today}\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {{\"name\": function name, \"parameters\": dictionary of argument name and its value}}.Do not use variables.\n\n{tool}\n\nweather?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{{\"name\": \"get_weather\", \"parameters\": {{\"city\": \"Oslo\"}}}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"cold\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        );
        let (content, calls) =
            settle(p.output.as_ref(), "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Bergen\"}}");
        assert_eq!(
            (content, calls[0].name.as_str(), calls[0].arguments.as_str()),
            (None, "get_weather", "{\"city\":\"Bergen\"}")
        );
        let (content, calls) = settle(p.output.as_ref(), "It is sunny in Bergen.");
        assert_eq!((content.as_deref(), calls.len()), (Some("It is sunny in Bergen."), 0));
    }

    /// Mistral 7B Instruct v0.3's own template: tools as `[AVAILABLE_TOOLS]` before the last
    /// user turn, calls after `[TOOL_CALLS]` with 9-character ids (the template refuses others),
    /// results in `[TOOL_RESULTS]`; as transformers renders it.
    #[test]
    fn mistral_v0_3s_template_renders_tools_and_its_marked_calls_are_read_back() {
        let mistral = ChatTemplate::new(include_str!("testdata/mistral-7b-v0.3.jinja"), "<s>", "</s>").unwrap();
        let history = weather_history("abcDEF123");
        let p = prepare(Some(&req(ToolChoice::Auto)), &mistral, history, "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::Parsed { format: ToolFormat::Mistral, parallel: true }));
        assert!(p.keep_special, "[TOOL_CALLS] is a special token the parser must see");
        let text = mistral.render_with_tools(&p.messages, p.tools.as_deref(), true).unwrap();
        assert_eq!(
            text,
            "<s>[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS][INST] weather?[/INST][TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}, \"id\": \"abcDEF123\"}]</s>[TOOL_RESULTS] {\"content\": cold, \"call_id\": \"abcDEF123\"}[/TOOL_RESULTS]"
        );
        let (content, calls) = settle(
            p.output.as_ref(),
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bergen\"}}]",
        );
        assert_eq!(
            (content, calls[0].name.as_str(), calls[0].arguments.as_str()),
            (None, "get_weather", "{\"city\":\"Bergen\"}")
        );
        assert_eq!(calls[0].id.len(), 9, "Mistral's template takes back only 9-character ids");
        let forced = prepare(Some(&req(ToolChoice::Required)), &mistral, vec![], "tool_choice").unwrap();
        let (_, calls) =
            settle(forced.output.as_ref(), "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}]");
        assert_eq!(calls[0].id.len(), 9);
    }

    #[test]
    fn forced_calls_get_grammars_and_unknown_names_are_refused() {
        let t = ChatTemplate::new(NATIVE, "", "").unwrap();
        let p = prepare(Some(&req(ToolChoice::Named("get_weather".into()))), &t, vec![], "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::Arguments { name: "get_weather".into(), ids: Some(ToolFormat::Hermes) }));
        assert_eq!(p.grammar.unwrap().field, "tools[0].parameters");
        let p = prepare(Some(&req(ToolChoice::Required)), &t, vec![], "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::List { ids: Some(ToolFormat::Hermes) }));
        let err = prepare(Some(&req(ToolChoice::Named("nope".into()))), &t, vec![], "tool_choice").err().unwrap();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let p = prepare(Some(&req(ToolChoice::None)), &t, vec![], "tool_choice").unwrap();
        assert!(p.output.is_none() && p.tools.is_none());
    }

    #[test]
    fn answers_settle_into_text_and_calls() {
        let (content, calls) = settle(Some(&CallOutput::Arguments { name: "f".into(), ids: None }), "{\"a\": 1}");
        assert_eq!((content, calls[0].name.as_str(), calls[0].arguments.as_str()), (None, "f", "{\"a\": 1}"));
        let (content, calls) = settle(
            Some(&CallOutput::List { ids: None }),
            "[{\"name\": \"f\", \"parameters\": {}}, {\"name\": \"g\", \"parameters\": {\"x\": 2}}]",
        );
        assert_eq!((content, calls.len(), calls[1].arguments.as_str()), (None, 2, "{\"x\":2}"));
        let (content, calls) = settle(Some(&CallOutput::List { ids: None }), "[{\"name\": \"f\"");
        assert_eq!((content.as_deref(), calls.len()), (Some("[{\"name\": \"f\""), 0));
        let two = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>";
        let (_, calls) = settle(Some(&CallOutput::Parsed { format: ToolFormat::Hermes, parallel: false }), two);
        assert_eq!(calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["f"]);
        let (_, calls) = settle(Some(&CallOutput::Parsed { format: ToolFormat::Hermes, parallel: true }), two);
        assert_eq!(calls.len(), 2);
        let (content, calls) = settle(None, "<tool_call>{}</tool_call>");
        assert_eq!((content.as_deref(), calls.len()), (Some("<tool_call>{}</tool_call>"), 0));
        // Streamed, a named call's arguments come as they are generated.
        let mut s = CallStream::new(Some(&CallOutput::Arguments { name: "f".into(), ids: None }));
        let first = s.push("{\"a\"");
        assert!(matches!(&first[0], Delta::Call { index: 0, name, .. } if name == "f"));
        assert_eq!(first[1], Delta::Arguments { index: 0, json: "{\"a\"".into() });
        assert_eq!(s.push(": 1}"), [Delta::Arguments { index: 0, json: ": 1}".into() }]);
        assert!(s.finish().is_empty());
    }
}
