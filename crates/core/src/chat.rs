//! Chat templates: the model's own Jinja template (from `tokenizer_config.json` or GGUF
//! `tokenizer.chat_template`) rendered with a real Jinja engine (minijinja, with Python string
//! methods like `.strip()` that Hugging Face templates call), never string concatenation.
//!
//! The context is what `transformers.apply_chat_template` passes: `messages` (each with `role`
//! and `content`; an assistant's `tool_calls` with their arguments as objects, a tool result's
//! `tool_call_id`), `add_generation_prompt`, `bos_token`, `eos_token`, `tools` (the offered
//! functions in OpenAI's shape, or none), and the functions templates call: `raise_exception(msg)` to reject
//! a conversation, `strftime_now(format)` for today's date (Llama 3's system prompt, in UTC).

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::Value;

use crate::tools::ToolFormat;

/// One chat message as the template sees it. Fields a message lacks are absent from it (Llama
/// 3.1's template tests `'tool_calls' in message`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant's calls: `{id, type: "function", function: {name, arguments}}`, the
    /// arguments an object as transformers passes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// A tool result's call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into(), tool_calls: None, tool_call_id: None, name: None }
    }
}

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// The tool-call format the template teaches, if any.
    tool_format: Option<ToolFormat>,
    /// The template reads `tools` (else offered tools must be described some other way).
    reads_tools: bool,
}

const NAME: &str = "chat";

/// Template instructions one render may run. Real chat templates need a few per message; the cap
/// stops a hostile template (a model file is input too) from looping for minutes per request.
const FUEL: u64 = 2_000_000;

impl ChatTemplate {
    /// Compiles `source`; a syntax error names the line.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |format: String| -> Result<String, Error> {
            // A format chrono cannot read is the template's error, not a panic.
            let mut out = String::new();
            std::fmt::Write::write_fmt(&mut out, format_args!("{}", chrono::Utc::now().format(&format)))
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format {format:?}")))?;
            Ok(out)
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned()).map_err(|e| format!("chat template: {e}"))?;
        let tool_format = ToolFormat::of_template(source);
        let reads_tools = tool_format.is_some() && source.contains("tools");
        Ok(Self { env, bos: bos.into(), eos: eos.into(), tool_format, reads_tools })
    }

    /// The tool-call format this template teaches, when it describes tools itself.
    pub fn tool_format(&self) -> Option<ToolFormat> {
        self.tool_format.filter(|_| self.reads_tools)
    }

    /// The prompt text for `messages`; with `add_generation_prompt` it ends where the
    /// assistant's answer begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`render`](Self::render) with `tools` (OpenAI's shape) in the template's context.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&[Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
                tools => tools,
            })
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => {
                    format!("the model's chat template refused the conversation: {}", e.detail().unwrap_or(""))
                }
                _ => format!("chat template: {e}"),
            })
    }
}

/// Jinja's `tojson` as transformers defines it for chat templates: Python's `json.dumps` with
/// `ensure_ascii=False` (`", "` and `": "` between items, or newlines with `indent`), no HTML
/// escaping. Tool schemas and call arguments reach the prompt exactly as the model saw them in
/// training.
fn tojson(value: minijinja::Value, kwargs: minijinja::value::Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_json(&v, indent, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(out)
}

fn write_json(v: &Value, indent: Option<usize>, sort: bool, depth: usize, out: &mut String) {
    let (item_sep, key_sep) = if indent.is_some() { (",", ": ") } else { (", ", ": ") };
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(m) if !m.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            if sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(key_sep);
                write_json(item, indent, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template (from its GGUF) and the prompts transformers'
    /// `apply_chat_template(..., add_generation_prompt=True)` renders for these conversations.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn a_template_that_runs_forever_is_stopped() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let err = t.render(&[Message::new("user", "hi")], true).unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn renders_like_transformers() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let one = [Message::new("user", "Which city is the capital of France?")];
        assert_eq!(
            t.render(&one, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhich city is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let chat = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "What is 2 + 2?"),
        ];
        assert_eq!(
            t.render(&chat, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!t.render(&one, false).unwrap().ends_with("assistant\n"));
    }

    /// The head of Llama 3.2's template (from its `tokenizer_config.json`): today's date through
    /// `strftime_now`.
    const LLAMA_3_2_HEAD: &str = "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n        {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}";

    #[test]
    fn llama_3_gets_todays_date_and_templates_see_no_tools() {
        let t = ChatTemplate::new(LLAMA_3_2_HEAD, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let out = t.render(&[Message::new("user", "hi")], true).unwrap();
        let today = chrono::Utc::now().format("%d %b %Y").to_string();
        assert_eq!(
            out,
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: {today}\n\n"
            )
        );
        // As transformers passes it: templates that test `tools is not none` see no tools.
        let tools = ChatTemplate::new("{% if tools is none %}no tools{% endif %}", "", "").unwrap();
        assert_eq!(tools.render(&[Message::new("user", "hi")], true).unwrap(), "no tools");
        let bad = ChatTemplate::new("{{ strftime_now('%Q') }}", "", "").unwrap();
        let err = bad.render(&[Message::new("user", "hi")], true).unwrap_err();
        assert!(err.contains("bad format"), "{err}");
    }

    #[test]
    fn tojson_writes_what_pythons_json_dumps_writes() {
        let t = ChatTemplate::new("{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}", "", "").unwrap();
        let tools = [serde_json::json!({"name": "f", "parameters": {"city": "Zürich <1>", "n": [1, 2.5], "e": {}}})];
        let out = t.render_with_tools(&[], Some(&tools), false).unwrap();
        assert_eq!(
            out,
            "[{\"name\": \"f\", \"parameters\": {\"city\": \"Zürich <1>\", \"n\": [1, 2.5], \"e\": {}}}]|{\n  \"name\": \"f\",\n  \"parameters\": {\n    \"city\": \"Zürich <1>\",\n    \"n\": [\n      1,\n      2.5\n    ],\n    \"e\": {}\n  }\n}"
        );
    }

    #[test]
    fn python_methods_exceptions_and_syntax_errors() {
        let strip = ChatTemplate::new("{{ messages[0]['content'].strip() }}{{ bos_token }}", "<s>", "</s>").unwrap();
        assert_eq!(strip.render(&[Message::new("user", "  hi  ")], false).unwrap(), "hi<s>");
        let strict = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        let err = strict.render(&[Message::new("assistant", "x")], true).unwrap_err();
        assert!(err.contains("must start with a user message"), "{err}");
        let err = ChatTemplate::new("{% for %}", "", "").err().unwrap();
        assert!(err.contains("chat template"), "{err}");
    }
}
