//! Structured outputs and tool calls over OpenAI chat with the fake generator, whose wishes
//! (the byte after the last one) the grammar overrides: JSON that validates against the
//! schema whole and streamed, forced calls (`required`, a named tool), calls parsed from the
//! model's own format with streamed `tool_calls` deltas, tool history, and errors by field.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::fake::Harness;
use super::fake_generator::write_generator;

async fn harness() -> Harness {
    let h = Harness::new().await;
    write_generator(h.repo(), "gen", 1, "");
    h.poll().await;
    h
}

fn chat(extra: Value) -> Value {
    let mut body = json!({ "model": "gen", "messages": [{ "role": "user", "content": "ab" }], "max_tokens": 40, "temperature": 0 });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn tools() -> Value {
    json!([{ "type": "function", "function": { "name": "f", "description": "adds", "parameters": {
        "type": "object", "properties": { "a": { "type": "integer", "minimum": 0, "maximum": 99 } }, "required": ["a"], "additionalProperties": false } } }])
}

/// The `data:` payloads of a streamed chat, parsed (without `[DONE]`).
async fn stream(h: &Harness, body: Value) -> Vec<Value> {
    let mut body = body;
    body["stream"] = true.into();
    let resp = h
        .send(
            axum::http::Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn content_of(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn json_schema_answers_validate_whole_and_streamed() {
    let h = harness().await;
    let schema = json!({ "type": "object", "properties": {
        "city": { "enum": ["cd", "xy"] }, "n": { "type": "integer", "minimum": 0, "maximum": 999 } }, "required": ["city", "n"], "additionalProperties": false });
    let rf = json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "place", "schema": schema, "strict": true } } });
    let (status, v) = h.json("POST", "/v1/chat/completions", chat(rf.clone())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let answer: Value = serde_json::from_str(&text).expect(&text);
    assert!(["cd", "xy"].contains(&answer["city"].as_str().unwrap()) && answer["n"].is_i64(), "{text}");
    assert_eq!(answer.as_object().unwrap().len(), 2);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Left alone the fake would say "cdefg…": the grammar made every choice.
    let chunks = stream(&h, chat(rf)).await;
    assert_eq!(content_of(&chunks), text);
    // llama.cpp's schema inside `json_object`, and vLLM's extension with a regex.
    let bool_schema = json!({ "type": "object", "properties": { "ok": { "type": "boolean" } }, "required": ["ok"], "additionalProperties": false });
    let rf = json!({ "response_format": { "type": "json_object", "schema": bool_schema } });
    let (_, v) = h.json("POST", "/v1/chat/completions", chat(rf)).await;
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(text).unwrap()["ok"].is_boolean(), "{text}");
    let (_, v) = h
        .json(
            "POST",
            "/v1/completions",
            json!({ "model": "gen", "prompt": "ab", "max_tokens": 20, "structured_outputs": { "regex": "[0-9]{3}" } }),
        )
        .await;
    assert_eq!(v["choices"][0]["text"].as_str().unwrap().len(), 3, "{v}");
}

#[tokio::test]
async fn forced_calls_come_back_as_tool_calls() {
    let h = harness().await;
    let (status, v) = h
        .json(
            "POST",
            "/v1/chat/completions",
            chat(json!({ "tools": tools(), "tool_choice": "required", "parallel_tool_calls": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["tool_calls"][0]["type"], "function");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "f");
    let args: Value = serde_json::from_str(m["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["a"].is_i64(), "{args}");
    assert!(m["tool_calls"][0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let named = json!({ "tools": tools(), "tool_choice": { "type": "function", "function": { "name": "f" } } });
    let (_, v) = h.json("POST", "/v1/chat/completions", chat(named.clone())).await;
    let args: Value =
        serde_json::from_str(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
            .unwrap();
    assert!(args["a"].is_i64(), "{args}");
    // Streamed: the call's header first, then its arguments as they come.
    let chunks = stream(&h, chat(named)).await;
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["function"]["name"], "f");
    assert_eq!(calls[0]["function"]["arguments"], "");
    let streamed: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), args);
    assert_eq!(content_of(&chunks), "");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn calls_in_the_models_own_format_are_parsed_and_never_leak_as_text() {
    let h = harness().await;
    // The grammar makes the fake write a Hermes call after some text.
    let said = "ok<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1}}</tool_call>";
    let body = chat(
        json!({ "tools": tools(), "structured_outputs": { "choice": [said] }, "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 60 }),
    );
    let (status, v) = h.json("POST", "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], "ok");
    assert_eq!(m["tool_calls"][0]["function"], json!({ "name": "f", "arguments": "{\"a\":1}" }));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let chunks = stream(&h, body).await;
    assert_eq!(content_of(&chunks), "ok");
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0]["index"].as_u64(), calls[0]["function"]["name"].as_str()), (Some(0), Some("f")));
    assert_eq!(calls[1]["function"]["arguments"], "{\"a\":1}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    // With `tool_choice: none` the same text is just text.
    let mut none = chat(
        json!({ "tools": tools(), "tool_choice": "none", "structured_outputs": { "choice": [said] }, "max_tokens": 60 }),
    );
    none["messages"] = json!([{ "role": "user", "content": "hi" }]);
    let (_, v) = h.json("POST", "/v1/chat/completions", none).await;
    assert_eq!(v["choices"][0]["message"]["content"], said);
}

#[tokio::test]
async fn tool_history_is_taken_and_bad_tool_fields_are_named() {
    let h = harness().await;
    let history = json!({ "tools": tools(), "messages": [
        { "role": "user", "content": "a" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "f", "arguments": "{\"a\": 1}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "2" } ], "max_tokens": 3 });
    let (status, v) = h.json("POST", "/v1/chat/completions", chat(history)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let unsupported = json!({"type": "object", "properties": {"a": {"type": "array", "unevaluatedItems": false}}});
    for (extra, field) in [
        (
            json!({ "tools": tools(), "tool_choice": { "type": "function", "function": { "name": "g" } } }),
            "tool_choice",
        ),
        (json!({ "tool_choice": "required" }), "tool_choice"),
        (json!({ "tools": [{ "type": "retrieval" }] }), "tools[0].type"),
        (json!({ "tools": [{ "type": "function", "function": { "name": "a b" } }] }), "tools[0].function.name"),
        (json!({ "tools": [tools()[0], tools()[0]] }), "tools[1]"),
        (json!({ "parallel_tool_calls": "yes" }), "parallel_tool_calls"),
        (json!({ "messages": [{ "role": "tool", "content": "x" }] }), "messages[0].tool_call_id"),
        (json!({ "messages": [{ "role": "user", "content": "x", "tool_calls": [] }] }), "messages[0].tool_calls"),
        (
            json!({ "tools": tools(), "tool_choice": "required", "response_format": { "type": "json_object" } }),
            "tool_choice",
        ),
        (
            json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": unsupported } } }),
            "response_format.json_schema.schema",
        ),
        (json!({ "structured_outputs": { "grammar": "start: (" } }), "structured_outputs.grammar"),
    ] {
        let (status, v) = h.json("POST", "/v1/chat/completions", chat(extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {v}");
        assert_eq!(v["error"]["param"], field, "{extra}: {v}");
    }
}
