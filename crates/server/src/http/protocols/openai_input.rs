//! The inputs of OpenAI's generation requests, read into the engine's types: chat messages
//! (text parts, assistant tool calls, tool results), completion prompts in their four forms, and
//! the offered tools with `tool_choice` and `parallel_tool_calls`.

use aiserve_core::chat::Message;
use aiserve_core::tools::{Tool, ToolChoice};
use aiserve_runtime::generation::tools::{ToolRequest, MAX_TOOLS};
use serde_json::{Map, Value};

use crate::error::{shown, Error};

/// Chat messages: `role` and `content` (a string, or a list of `{"type": "text"}` parts); an
/// assistant's `tool_calls`, a tool result's `tool_call_id`.
pub fn parse_messages(v: Option<Value>) -> Result<Vec<Message>, Error> {
    let items = match v {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(Error::invalid("messages", "`messages` must not be empty")),
        Some(other) => {
            return Err(Error::invalid("messages", format!("`messages` must be a list, got {}", shown(other))))
        }
        None => return Err(Error::invalid("messages", "`messages` is required")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("messages[{i}]");
            let Value::Object(m) = m else {
                return Err(Error::invalid(&field, format!("`{field}` must be an object with `role` and `content`")));
            };
            let role = match m.get("role") {
                Some(Value::String(r))
                    if ["system", "developer", "user", "assistant", "tool"].contains(&r.as_str()) =>
                {
                    r.clone()
                }
                other => {
                    return Err(Error::invalid(
                        format!("{field}.role"),
                        format!(
                            "`{field}.role` must be system, developer, user, assistant or tool, got {}",
                            other.map_or("nothing".into(), |v| v.to_string())
                        ),
                    ))
                }
            };
            let tool_calls = match m.get("tool_calls") {
                None | Some(Value::Null) => None,
                Some(v) if role == "assistant" => Some(history_calls(v, &format!("{field}.tool_calls"))?),
                Some(_) => {
                    return Err(Error::invalid(
                        format!("{field}.tool_calls"),
                        format!("`{field}.tool_calls` belongs on assistant messages only"),
                    ))
                }
            };
            let content = match m.get("content") {
                None | Some(Value::Null) if role == "assistant" => String::new(),
                Some(v) => text_content(v, &format!("{field}.content"))?,
                None => {
                    return Err(Error::invalid(format!("{field}.content"), format!("`{field}.content` is required")))
                }
            };
            let text = |key: &str| -> Result<Option<String>, Error> {
                match m.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => Err(Error::invalid(
                        format!("{field}.{key}"),
                        format!("`{field}.{key}` must be a string, got {}", shown(other)),
                    )),
                }
            };
            let tool_call_id = text("tool_call_id")?;
            if role == "tool" && tool_call_id.is_none() {
                return Err(Error::invalid(
                    format!("{field}.tool_call_id"),
                    format!("`{field}.tool_call_id` is required on tool messages"),
                ));
            }
            Ok(Message { role, content, tool_calls, tool_call_id, name: text("name")? })
        })
        .collect()
}

/// A string, or a list of `{"type": "text", "text": ...}` parts joined.
pub fn text_content(v: &Value, field: &str) -> Result<String, Error> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text" | "input_text" | "output_text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(Error::invalid(
                            format!("{field}[{j}]"),
                            "only {\"type\": \"text\", \"text\": ...} content parts are supported by text models",
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(Error::invalid(field, format!("`{field}` must be a string or a list of text parts"))),
    }
}

/// An assistant's earlier calls, as the template sees them: each `{id, type, function: {name,
/// arguments}}` with the arguments (a JSON string on the wire) as an object.
fn history_calls(v: &Value, field: &str) -> Result<Vec<Value>, Error> {
    let items = v.as_array().ok_or_else(|| Error::invalid(field, format!("`{field}` must be a list")))?;
    if items.len() > MAX_TOOLS {
        return Err(Error::invalid(
            field,
            format!("`{field}` may hold at most {MAX_TOOLS} calls, got {}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("{field}[{j}]");
            let f = c.get("function").and_then(Value::as_object);
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                Error::invalid(format!("{at}.function.name"), format!("`{at}.function.name` must be a string"))
            })?;
            let arguments = match f.and_then(|f| f.get("arguments")) {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.clone())),
                Some(Value::Object(o)) => Value::Object(o.clone()),
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(other) => {
                    return Err(Error::invalid(
                        format!("{at}.function.arguments"),
                        format!("`{at}.function.arguments` must be a JSON string, got {}", shown(other)),
                    ))
                }
            };
            let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
            Ok(serde_json::json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } }))
        })
        .collect()
}

/// A tool name as OpenAI allows it: 1 to 64 letters, digits, `_` or `-`.
pub fn tool_name(v: Option<&Value>, field: &str) -> Result<String, Error> {
    match v.and_then(Value::as_str) {
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Ok(n.to_string())
        }
        _ => Err(Error::invalid(
            field,
            format!("`{field}` must be 1 to 64 letters, digits, `_` or `-`, got {}", v.map_or("nothing".into(), shown)),
        )),
    }
}

/// A tool's parameter schema: an object schema (none means no arguments).
pub fn tool_parameters(v: Option<&Value>, field: &str) -> Result<Value, Error> {
    match v {
        None | Some(Value::Null) => Ok(serde_json::json!({"type": "object", "properties": {}})),
        Some(Value::Object(o)) => Ok(Value::Object(o.clone())),
        Some(other) => {
            Err(Error::invalid(field, format!("`{field}` must be a JSON schema object, got {}", shown(other))))
        }
    }
}

/// A request's `tools` list: each item read by `read` (its value and its field name), at most
/// [`MAX_TOOLS`], no name twice. The three APIs spell a tool differently; this is what they share.
pub fn tool_list(v: Option<&Value>, read: impl Fn(&Value, &str) -> Result<Tool, Error>) -> Result<Vec<Tool>, Error> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_TOOLS => items,
        Some(other) => {
            return Err(Error::invalid(
                "tools",
                format!("`tools` must be a list of at most {MAX_TOOLS} tools, got {}", shown(other)),
            ))
        }
    };
    let tools: Vec<Tool> =
        items.iter().enumerate().map(|(i, t)| read(t, &format!("tools[{i}]"))).collect::<Result<_, _>>()?;
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|u| u.name == t.name) {
            return Err(Error::invalid(format!("tools[{i}]"), format!("tool `{}` is offered twice", t.name)));
        }
    }
    Ok(tools)
}

/// A tool written flat (`name`, `description` and its schema under `schema_key`), as the
/// Responses API (`parameters`) and Anthropic (`input_schema`) write them.
pub fn flat_tool(t: &Value, at: &str, schema_key: &str) -> Result<Tool, Error> {
    Ok(Tool {
        name: tool_name(t.get("name"), &format!("{at}.name"))?,
        description: t.get("description").and_then(Value::as_str).map(str::to_owned),
        parameters: tool_parameters(t.get(schema_key), &format!("{at}.{schema_key}"))?,
    })
}

/// OpenAI's `parallel_tool_calls` (default true).
pub fn parallel_tool_calls(req: &Map<String, Value>) -> Result<bool, Error> {
    match req.get("parallel_tool_calls") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::invalid(
            "parallel_tool_calls",
            format!("`parallel_tool_calls` must be true or false, got {}", shown(other)),
        )),
    }
}

/// The tools part of a request: `None` when no tool is on offer (a choice that demands a call
/// then is the request's error).
pub fn tool_request(tools: Vec<Tool>, choice: ToolChoice, parallel: bool) -> Result<Option<ToolRequest>, Error> {
    if !tools.is_empty() {
        return Ok(Some(ToolRequest { tools, choice, parallel }));
    }
    if matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(Error::invalid("tool_choice", "`tool_choice` asks for a call but `tools` offers none"));
    }
    Ok(None)
}

/// OpenAI's `tool_choice`: `auto`, `none`, `required` or a function named by `named` (chat
/// nests the name under `function`, Responses does not).
pub fn openai_tool_choice(
    v: Option<&Value>,
    named: impl Fn(&Map<String, Value>) -> Result<String, Error>,
) -> Result<ToolChoice, Error> {
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "auto" => Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "none" => Ok(ToolChoice::None),
        Some(Value::String(s)) if s == "required" => Ok(ToolChoice::Required),
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Ok(ToolChoice::Named(named(o)?))
        }
        Some(other) => Err(Error::invalid(
            "tool_choice",
            format!("`tool_choice` must be none, auto, required or a function to call, got {}", shown(other)),
        )),
    }
}

/// OpenAI chat's `tools`, `tool_choice` and `parallel_tool_calls`; `None` when no tool is on offer.
pub fn parse_tools(req: &Map<String, Value>) -> Result<Option<ToolRequest>, Error> {
    let tools = tool_list(req.get("tools"), |t, at| {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Error::invalid(format!("{at}.type"), format!("`{at}.type` must be \"function\"")));
        }
        let f = t
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| Error::invalid(format!("{at}.function"), format!("`{at}.function` must be an object")))?;
        flat_tool(f, &format!("{at}.function"), "parameters")
    })?;
    let choice = openai_tool_choice(req.get("tool_choice"), |o| {
        tool_name(o.get("function").and_then(|f| f.get("name")), "tool_choice.function.name")
    })?;
    tool_request(tools, choice, parallel_tool_calls(req)?)
}

pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// OpenAI's four `prompt` forms.
pub fn parse_prompts(v: Option<Value>) -> Result<Vec<Prompt>, Error> {
    let token = |v: &Value, field: String| -> Result<u32, Error> {
        v.as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| Error::invalid(&field, format!("`{field}` must be a token id, got {}", shown(v))))
    };
    match v {
        None => Err(Error::invalid("prompt", "`prompt` is required")),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s)]),
        Some(Value::Array(items)) if items.is_empty() => Err(Error::invalid("prompt", "`prompt` must not be empty")),
        Some(Value::Array(items)) => match &items[0] {
            Value::Number(_) => Ok(vec![Prompt::Tokens(
                items.iter().enumerate().map(|(i, v)| token(v, format!("prompt[{i}]"))).collect::<Result<_, _>>()?,
            )]),
            _ => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(Prompt::Text(s.clone())),
                    Value::Array(ids) => ids
                        .iter()
                        .enumerate()
                        .map(|(j, v)| token(v, format!("prompt[{i}][{j}]")))
                        .collect::<Result<_, _>>()
                        .map(Prompt::Tokens),
                    other => Err(Error::invalid(
                        format!("prompt[{i}]"),
                        format!("`prompt[{i}]` must be a string or a list of token ids, got {}", shown(other)),
                    )),
                })
                .collect(),
        },
        Some(other) => Err(Error::invalid(
            "prompt",
            format!("`prompt` must be a string, a list of strings or token ids, got {}", shown(other)),
        )),
    }
}
