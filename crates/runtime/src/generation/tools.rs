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
    /// The model's own format, parsed (`auto`).
    Parsed(ToolFormat),
    /// The whole text is the arguments of this tool (a named `tool_choice`).
    Arguments(String),
    /// The text is a JSON list of `{name, parameters}` (`required`).
    List,
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
            (CallOutput::Arguments(name.clone()), Some(grammar))
        }
        ToolChoice::Required => {
            let grammar = GrammarRequest {
                grammar: Grammar::JsonSchema(required_schema(&req.tools, req.parallel)),
                field: "tools".into(),
            };
            (CallOutput::List, Some(grammar))
        }
        _ => (CallOutput::Parsed(format), None),
    };
    let keep_special = matches!(output, CallOutput::Parsed(_));
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
            Some(CallOutput::Parsed(f)) => Some(ToolParser::new(*f)),
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
            Some(CallOutput::Parsed(_)) => {
                let pieces = self.parser.as_mut().map(|p| p.push(text)).unwrap_or_default();
                self.pieces(pieces)
            }
            Some(CallOutput::Arguments(name)) => {
                let mut out = Vec::new();
                if self.calls == 0 {
                    out.push(Delta::Call { index: 0, id: tools::call_id(None), name: name.clone() });
                    self.calls = 1;
                }
                if !text.is_empty() {
                    out.push(Delta::Arguments { index: 0, json: text.to_string() });
                }
                out
            }
            Some(CallOutput::List) => {
                self.buffer.push_str(text);
                Vec::new()
            }
        }
    }

    /// The end of the choice's text.
    pub fn finish(&mut self) -> Vec<Delta> {
        match &self.output {
            None => Vec::new(),
            Some(CallOutput::Parsed(_)) => {
                let pieces = self.parser.as_mut().map(ToolParser::finish).unwrap_or_default();
                self.pieces(pieces)
            }
            Some(CallOutput::Arguments(_)) => self.push(""),
            Some(CallOutput::List) => {
                let text = std::mem::take(&mut self.buffer);
                match calls_of_required(&text) {
                    Some(calls) => self.pieces(calls.into_iter().map(Piece::Call).collect()),
                    // Cut short by `max_tokens`: what there is, as text.
                    None => vec![Delta::Text(text)],
                }
            }
        }
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> Vec<Delta> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Text(t) => out.push(Delta::Text(t)),
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

/// A whole answer: its text (`None` when calls left only whitespace) and its calls.
pub fn settle(output: Option<&CallOutput>, text: &str) -> (Option<String>, Vec<ToolCall>) {
    let mut stream = CallStream::new(output);
    let mut deltas = stream.push(text);
    deltas.extend(stream.finish());
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
        assert_eq!(p.output, Some(CallOutput::Parsed(ToolFormat::Hermes)));
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

    #[test]
    fn forced_calls_get_grammars_and_unknown_names_are_refused() {
        let t = ChatTemplate::new(NATIVE, "", "").unwrap();
        let p = prepare(Some(&req(ToolChoice::Named("get_weather".into()))), &t, vec![], "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::Arguments("get_weather".into())));
        assert_eq!(p.grammar.unwrap().field, "tools[0].parameters");
        let p = prepare(Some(&req(ToolChoice::Required)), &t, vec![], "tool_choice").unwrap();
        assert_eq!(p.output, Some(CallOutput::List));
        let err = prepare(Some(&req(ToolChoice::Named("nope".into()))), &t, vec![], "tool_choice").err().unwrap();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let p = prepare(Some(&req(ToolChoice::None)), &t, vec![], "tool_choice").unwrap();
        assert!(p.output.is_none() && p.tools.is_none());
    }

    #[test]
    fn answers_settle_into_text_and_calls() {
        let (content, calls) = settle(Some(&CallOutput::Arguments("f".into())), "{\"a\": 1}");
        assert_eq!((content, calls[0].name.as_str(), calls[0].arguments.as_str()), (None, "f", "{\"a\": 1}"));
        let (content, calls) = settle(
            Some(&CallOutput::List),
            "[{\"name\": \"f\", \"parameters\": {}}, {\"name\": \"g\", \"parameters\": {\"x\": 2}}]",
        );
        assert_eq!((content, calls.len(), calls[1].arguments.as_str()), (None, 2, "{\"x\":2}"));
        let (content, calls) = settle(Some(&CallOutput::List), "[{\"name\": \"f\"");
        assert_eq!((content.as_deref(), calls.len()), (Some("[{\"name\": \"f\""), 0));
        let (content, calls) = settle(None, "<tool_call>{}</tool_call>");
        assert_eq!((content.as_deref(), calls.len()), (Some("<tool_call>{}</tool_call>"), 0));
        // Streamed, a named call's arguments come as they are generated.
        let mut s = CallStream::new(Some(&CallOutput::Arguments("f".into())));
        let first = s.push("{\"a\"");
        assert!(matches!(&first[0], Delta::Call { index: 0, name, .. } if name == "f"));
        assert_eq!(first[1], Delta::Arguments { index: 0, json: "{\"a\"".into() });
        assert_eq!(s.push(": 1}"), [Delta::Arguments { index: 0, json: ": 1}".into() }]);
        assert!(s.finish().is_empty());
    }
}
