//! The sampling and length fields OpenAI's chat and completion requests (and KServe's generate
//! `parameters`) share, validated into a [`Params`]: ranges checked, fields that would change
//! the result but are not supported refused by name instead of ignored.

use aiserve_core::sampling::SamplingParams;
use serde_json::{Map, Value};

use super::grammar::{Grammar, GrammarRequest};
use crate::error::Error;

/// Most choices one request may ask for.
pub const MAX_N: usize = 16;
/// Most stop strings, and the longest one in bytes.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;
/// Most tokens one `logit_bias` may name (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;
/// Most alternatives reported per token (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// Each token's log-probability and this many alternatives': chat's `logprobs: true` with
    /// `top_logprobs`, or completions' `logprobs: k`.
    pub logprobs: Option<usize>,
    /// The grammar the text must follow: `response_format`, or the `structured_outputs`
    /// extension (vLLM's field: `json`, `regex`, `choice`, `grammar` in Lark, `json_object`).
    pub grammar: Option<GrammarRequest>,
    /// Special tokens come out as text (set for tool-call parsers that read a special marker).
    pub keep_special: bool,
}

fn number(v: &Value, field: &str, lo: f64, hi: f64) -> Result<f64, Error> {
    match v.as_f64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(Error::invalid(
            field,
            format!("`{field}` must be a number in [{lo}, {hi}], got {}", crate::error::shown(v)),
        )),
    }
}

fn integer(v: &Value, field: &str, lo: u64, hi: u64) -> Result<u64, Error> {
    match v.as_u64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(Error::invalid(
            field,
            format!("`{field}` must be an integer in [{lo}, {hi}], got {}", crate::error::shown(v)),
        )),
    }
}

fn boolean(v: &Value, field: &str) -> Result<bool, Error> {
    v.as_bool().ok_or_else(|| {
        Error::invalid(field, format!("`{field}` must be true or false, got {}", crate::error::shown(v)))
    })
}

/// A field present with a non-null value.
fn get<'a>(req: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    req.get(field).filter(|v| !v.is_null())
}

/// Refuses fields outside `known`, naming the first one.
pub fn check_fields(req: &Map<String, Value>, known: &[&str], route: &str) -> Result<(), Error> {
    match req.keys().find(|k| !known.contains(&k.as_str())) {
        Some(extra) => Err(Error::invalid(extra, format!("unknown or unsupported field `{extra}` for {route}"))),
        None => Ok(()),
    }
}

/// Fields that are fine when absent or at their no-op value, and refused otherwise.
pub fn refuse_unless_default(req: &Map<String, Value>) -> Result<(), Error> {
    let unsupported = |field: &str, why: &str| Error::invalid(field, format!("`{field}` is not supported: {why}"));
    for (field, ok) in [
        ("functions", get(req, "functions").is_none_or(|v| v.as_array().is_some_and(|a| a.is_empty()))),
        ("function_call", get(req, "function_call").is_none_or(|v| v == "none" || v == "auto")),
        (
            "echo",
            // The prompt's own log-probabilities would need logits for every prompt token.
            get(req, "echo").is_none_or(|v| v == &Value::Bool(false)) || get(req, "logprobs").is_none(),
        ),
        ("best_of", get(req, "best_of").is_none_or(|v| v == &Value::from(1))),
        ("suffix", get(req, "suffix").is_none_or(|v| v == "")),
    ] {
        if !ok {
            let why = match field {
                "functions" | "function_call" => {
                    "the deprecated function-calling fields are not served; use `tools` and `tool_choice`"
                }
                _ => "this server does not offer it; leave it unset",
            };
            return Err(unsupported(field, why));
        }
    }
    Ok(())
}

/// Reads the shared fields. `max_token_fields` are the names accepted for the length limit,
/// in order of precedence.
pub fn parse(req: &Map<String, Value>, max_token_fields: &[&str]) -> Result<Params, Error> {
    let mut p = Params {
        max_tokens: None,
        sampling: SamplingParams::default(),
        stop: Vec::new(),
        n: 1,
        stream: false,
        include_usage: false,
        logprobs: None,
        grammar: None,
        keep_special: false,
    };
    for field in max_token_fields {
        if let Some(v) = get(req, field) {
            p.max_tokens = Some(integer(v, field, 1, u32::MAX as u64)? as usize);
            break;
        }
    }
    if let Some(v) = get(req, "temperature") {
        p.sampling.temperature = number(v, "temperature", 0.0, 2.0)? as f32;
    }
    if let Some(v) = get(req, "top_p") {
        let x = number(v, "top_p", 0.0, 1.0)?;
        if x == 0.0 {
            return Err(Error::invalid("top_p", "`top_p` must be greater than 0"));
        }
        p.sampling.top_p = x as f32;
    }
    if let Some(v) = get(req, "top_k") {
        // vLLM's extension; -1 and 0 both mean "all tokens".
        p.sampling.top_k = match v.as_i64() {
            Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            _ => {
                return Err(Error::invalid(
                    "top_k",
                    format!("`top_k` must be -1, 0 or a positive integer, got {}", crate::error::shown(v)),
                ))
            }
        };
    }
    if let Some(v) = get(req, "frequency_penalty") {
        p.sampling.frequency_penalty = number(v, "frequency_penalty", -2.0, 2.0)? as f32;
    }
    if let Some(v) = get(req, "presence_penalty") {
        p.sampling.presence_penalty = number(v, "presence_penalty", -2.0, 2.0)? as f32;
    }
    if let Some(v) = get(req, "seed") {
        p.sampling.seed = Some(match v.as_i64() {
            Some(s) => s as u64,
            None => v.as_u64().ok_or_else(|| {
                Error::invalid("seed", format!("`seed` must be an integer, got {}", crate::error::shown(v)))
            })?,
        });
    }
    if let Some(v) = get(req, "n") {
        p.n = integer(v, "n", 1, MAX_N as u64)? as usize;
    }
    if let Some(v) = get(req, "stream") {
        p.stream = boolean(v, "stream")?;
    }
    if let Some(v) = get(req, "stream_options") {
        let o = v.as_object().ok_or_else(|| Error::invalid("stream_options", "`stream_options` must be an object"))?;
        if !p.stream {
            return Err(Error::invalid("stream_options", "`stream_options` is only allowed when `stream` is true"));
        }
        check_fields(o, &["include_usage", "continuous_usage_stats"], "stream_options")?;
        if let Some(u) = o.get("include_usage") {
            p.include_usage = boolean(u, "stream_options.include_usage")?;
        }
    }
    if let Some(v) = get(req, "logit_bias") {
        let o = v.as_object().ok_or_else(|| {
            Error::invalid(
                "logit_bias",
                format!("`logit_bias` must map token ids to numbers, got {}", crate::error::shown(v)),
            )
        })?;
        if o.len() > MAX_LOGIT_BIAS {
            return Err(Error::invalid(
                "logit_bias",
                format!("`logit_bias` may name at most {MAX_LOGIT_BIAS} tokens, got {}", o.len()),
            ));
        }
        p.sampling.logit_bias = o
            .iter()
            .map(|(id, bias)| {
                let id = id.parse::<u32>().map_err(|_| {
                    Error::invalid("logit_bias", format!("`logit_bias` keys must be token ids, got {id:?}"))
                })?;
                Ok((id, number(bias, "logit_bias", -100.0, 100.0)? as f32))
            })
            .collect::<Result<_, Error>>()?;
    }
    // Chat: `logprobs: true` and `top_logprobs: k`; completions: `logprobs: k`.
    let top = MAX_TOP_LOGPROBS as u64;
    p.logprobs = match get(req, "logprobs") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(0),
        Some(v) => Some(integer(v, "logprobs", 0, top)? as usize),
    };
    if let Some(v) = get(req, "top_logprobs") {
        let k = integer(v, "top_logprobs", 0, top)? as usize;
        match p.logprobs {
            Some(_) => p.logprobs = Some(k),
            None if k > 0 => return Err(Error::invalid("top_logprobs", "`top_logprobs` needs `logprobs` set to true")),
            None => {}
        }
    }
    p.grammar = match (get(req, "response_format"), get(req, "structured_outputs")) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "structured_outputs",
                "`response_format` and `structured_outputs` both constrain the output; send one",
            ))
        }
        (Some(v), None) => response_format(v)?,
        (None, Some(v)) => Some(structured_outputs(v)?),
        (None, None) => None,
    };
    if let Some(v) = get(req, "stop") {
        // Counted before anything is copied out of the request.
        if let Some(items) = v.as_array().filter(|a| a.len() > MAX_STOPS) {
            return Err(Error::invalid(
                "stop",
                format!("`stop` may hold at most {MAX_STOPS} strings, got {}", items.len()),
            ));
        }
        p.stop = match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str().map(str::to_owned).ok_or_else(|| {
                        Error::invalid(
                            format!("stop[{i}]"),
                            format!("`stop[{i}]` must be a string, got {}", crate::error::shown(s)),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(Error::invalid(
                    "stop",
                    format!("`stop` must be a string or a list of strings, got {}", crate::error::shown(other)),
                ))
            }
        };
        if let Some((i, s)) = p.stop.iter().enumerate().find(|(_, s)| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(Error::invalid(
                format!("stop[{i}]"),
                format!("stop strings must be 1 to {MAX_STOP_BYTES} bytes long, got {} bytes", s.len()),
            ));
        }
    }
    Ok(p)
}

/// OpenAI's `response_format`: `text`, `json_object` (with llama.cpp's optional `schema`), or
/// `json_schema` with `json_schema: {name, schema, strict, description}`.
fn response_format(v: &Value) -> Result<Option<GrammarRequest>, Error> {
    let o = v.as_object().ok_or_else(|| {
        Error::invalid(
            "response_format",
            format!("`response_format` must be an object, got {}", crate::error::shown(v)),
        )
    })?;
    let grammar = |grammar, field: &str| Ok(Some(GrammarRequest { grammar, field: field.into() }));
    match o.get("type").and_then(Value::as_str) {
        Some("text") => {
            check_fields(o, &["type"], "response_format")?;
            Ok(None)
        }
        Some("json_object") => {
            check_fields(o, &["type", "schema"], "response_format")?;
            match get(o, "schema") {
                Some(s) => grammar(Grammar::JsonSchema(schema(s, "response_format.schema")?), "response_format.schema"),
                None => grammar(Grammar::JsonObject, "response_format"),
            }
        }
        Some("json_schema") => {
            check_fields(o, &["type", "json_schema"], "response_format")?;
            let js = get(o, "json_schema").and_then(Value::as_object).ok_or_else(|| {
                Error::invalid(
                    "response_format.json_schema",
                    "`response_format.json_schema` must be an object with `name` and `schema`",
                )
            })?;
            check_fields(js, &["name", "schema", "strict", "description"], "response_format.json_schema")?;
            match js.get("name") {
                Some(Value::String(n)) if !n.is_empty() && n.len() <= 64 => {}
                other => {
                    return Err(Error::invalid(
                        "response_format.json_schema.name",
                        format!(
                            "`response_format.json_schema.name` must be a string of 1 to 64 characters, got {}",
                            other.map_or("nothing".into(), crate::error::shown)
                        ),
                    ))
                }
            }
            if let Some(s) = get(js, "strict") {
                boolean(s, "response_format.json_schema.strict")?;
            }
            let field = "response_format.json_schema.schema";
            match get(js, "schema") {
                Some(s) => grammar(Grammar::JsonSchema(schema(s, field)?), field),
                // OpenAI's schema is optional: without one any JSON object will do.
                None => grammar(Grammar::JsonObject, "response_format.json_schema"),
            }
        }
        _ => Err(Error::invalid(
            "response_format.type",
            format!(
                "`response_format.type` must be text, json_object or json_schema, got {}",
                o.get("type").map_or("nothing".into(), crate::error::shown)
            ),
        )),
    }
}

/// A JSON schema: an object (or `true`), or the same written as a JSON string.
fn schema(v: &Value, field: &str) -> Result<Value, Error> {
    let parsed;
    let v = match v {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| Error::invalid(field, format!("`{field}` is not valid JSON: {e}")))?;
            &parsed
        }
        v => v,
    };
    match v {
        Value::Object(_) => Ok(v.clone()),
        Value::Bool(true) => Ok(Value::Object(Map::new())),
        other => Err(Error::invalid(
            field,
            format!("`{field}` must be a JSON schema object, got {}", crate::error::shown(other)),
        )),
    }
}

/// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar` (Lark) or
/// `json_object: true`.
fn structured_outputs(v: &Value) -> Result<GrammarRequest, Error> {
    let field = "structured_outputs";
    let o = v
        .as_object()
        .ok_or_else(|| Error::invalid(field, format!("`{field}` must be an object, got {}", crate::error::shown(v))))?;
    check_fields(o, &["json", "regex", "choice", "grammar", "json_object"], field)?;
    let set: Vec<(&String, &Value)> = o.iter().filter(|(_, v)| !v.is_null() && **v != Value::Bool(false)).collect();
    let [(key, v)] = set[..] else {
        return Err(Error::invalid(
            field,
            format!(
                "`{field}` must hold exactly one of json, regex, choice, grammar or json_object, got {}",
                set.len()
            ),
        ));
    };
    let name = format!("{field}.{key}");
    let text = |v: &Value| {
        v.as_str().map(str::to_owned).filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::invalid(&name, format!("`{name}` must be a non-empty string, got {}", crate::error::shown(v)))
        })
    };
    let grammar = match key.as_str() {
        "json" => Grammar::JsonSchema(schema(v, &name)?),
        "regex" => Grammar::Regex(text(v)?),
        "grammar" => Grammar::Lark(text(v)?),
        "json_object" if *v == Value::Bool(true) => Grammar::JsonObject,
        "json_object" => return Err(Error::invalid(&name, format!("`{name}` must be true"))),
        _ => {
            let items = v
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= MAX_CHOICES)
                .ok_or_else(|| Error::invalid(&name, format!("`{name}` must list 1 to {MAX_CHOICES} strings")))?;
            Grammar::Choice(items.iter().map(text).collect::<Result<_, _>>()?)
        }
    };
    Ok(GrammarRequest { grammar, field: name })
}

/// Most strings `structured_outputs.choice` may list.
pub const MAX_CHOICES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reads_every_field_and_names_the_bad_one() {
        let p = parse(
            &obj(json!({"max_completion_tokens": 7, "max_tokens": 9, "temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 4,
                "n": 2, "stop": ["a", "b"], "stream": true, "stream_options": {"include_usage": true}})),
            &["max_completion_tokens", "max_tokens"],
        )
        .unwrap();
        assert_eq!(p.max_tokens, Some(7));
        assert_eq!(
            (p.sampling.temperature, p.sampling.top_p, p.sampling.top_k, p.sampling.seed),
            (0.0, 0.5, 3, Some(4))
        );
        assert_eq!((p.n, p.stream, p.include_usage, p.stop.len()), (2, true, true, 2));
        assert_eq!(p.logprobs, None);
        let chat = parse(&obj(json!({"logprobs": true, "top_logprobs": 3})), &["max_tokens"]).unwrap();
        let legacy = parse(&obj(json!({"logprobs": 2})), &["max_tokens"]).unwrap();
        assert_eq!((chat.logprobs, legacy.logprobs), (Some(3), Some(2)));
        assert_eq!(parse(&obj(json!({"top_logprobs": 0})), &["max_tokens"]).unwrap().logprobs, None);
        let bias = parse(&obj(json!({"logit_bias": {"7": -100, "9": 2.5}})), &["max_tokens"]).unwrap();
        let mut b = bias.sampling.logit_bias;
        b.sort_by_key(|x| x.0);
        assert_eq!(b, [(7, -100.0), (9, 2.5)]);
        for (bad, field) in [
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"n": 0}), "n"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"stop": [""]}), "stop[0]"),
            (json!({"stop": 5}), "stop"),
            (json!({"stop": vec!["x"; 17]}), "stop"),
            (json!({"stream_options": {"include_usage": true}}), "stream_options"),
            (json!({"top_k": -2}), "top_k"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs"),
            (json!({"logprobs": "yes"}), "logprobs"),
            (json!({"logit_bias": {"a": 1}}), "logit_bias"),
            (json!({"logit_bias": {"1": 101}}), "logit_bias"),
            (json!({"logit_bias": [1]}), "logit_bias"),
        ] {
            let err = parse(&obj(bad.clone()), &["max_tokens"]).unwrap_err();
            match err {
                Error::Input(e) => assert_eq!(e.field(), field, "{bad}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn output_formats_become_grammars_and_bad_ones_name_their_field() {
        let g = |v: Value| parse(&obj(v), &["max_tokens"]).map(|p| p.grammar);
        assert_eq!(g(json!({"response_format": {"type": "text"}})).unwrap(), None);
        let req = g(json!({"response_format": {"type": "json_object"}})).unwrap().unwrap();
        assert_eq!(req.grammar, Grammar::JsonObject);
        let s = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let req = g(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (req.grammar, req.field.as_str()),
            (Grammar::JsonSchema(s.clone()), "response_format.json_schema.schema")
        );
        let req = g(json!({"structured_outputs": {"json": s.to_string()}})).unwrap().unwrap();
        assert_eq!(req.grammar, Grammar::JsonSchema(s));
        let req = g(json!({"structured_outputs": {"choice": ["a", "b"]}})).unwrap().unwrap();
        assert_eq!(req.grammar, Grammar::Choice(vec!["a".into(), "b".into()]));
        let req = g(json!({"structured_outputs": {"regex": "[a-z]+"}})).unwrap().unwrap();
        assert_eq!(req.grammar, Grammar::Regex("[a-z]+".into()));
        for (bad, field) in [
            (json!({"response_format": {"type": "xml"}}), "response_format.type"),
            (json!({"response_format": "json"}), "response_format"),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}}),
                "response_format.json_schema.schema",
            ),
            (json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "extra": 1}}}), "extra"),
            (json!({"structured_outputs": {"regex": "a", "choice": ["b"]}}), "structured_outputs"),
            (json!({"structured_outputs": {"choice": []}}), "structured_outputs.choice"),
            (json!({"structured_outputs": {"grammar": ""}}), "structured_outputs.grammar"),
            (json!({"structured_outputs": {}, "response_format": {"type": "text"}}), "structured_outputs"),
        ] {
            match g(bad.clone()).unwrap_err() {
                Error::Input(e) => assert_eq!(e.field(), field, "{bad}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn semantic_fields_are_refused_unless_default() {
        assert!(refuse_unless_default(&obj(
            json!({"logprobs": true, "logit_bias": {"5": 1}, "functions": [], "response_format": {"type": "text"}})
        ))
        .is_ok());
        for bad in [
            json!({"functions": [{"name": "f"}]}),
            json!({"function_call": {"name": "f"}}),
            json!({"echo": true, "logprobs": 1}),
        ] {
            assert!(refuse_unless_default(&obj(bad.clone())).is_err(), "{bad}");
        }
        assert!(check_fields(&obj(json!({"model": "m", "extra": 1})), &["model"], "/x").is_err());
    }
}
