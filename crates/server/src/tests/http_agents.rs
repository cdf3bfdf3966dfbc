//! Anthropic Messages and OpenAI Responses over the fake generator (`"ab"` continues
//! `"cdef…"`): whole and streamed answers in each API's shape and event order, stop sequences,
//! forced tool calls as `tool_use` blocks and `function_call` items, token counts, and errors in
//! each API's own shape.

use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use super::fake::Harness;
use super::fake_generator::write_generator;

async fn harness() -> Harness {
    let h = Harness::new().await;
    write_generator(h.repo(), "gen", 1, "");
    h.poll().await;
    h
}

fn tools() -> Value {
    json!([{ "name": "f", "description": "adds", "input_schema": {
        "type": "object", "properties": { "a": { "type": "integer", "minimum": 0, "maximum": 9 } }, "required": ["a"], "additionalProperties": false } }])
}

/// `(event name, data)` pairs of an SSE answer.
async fn events(h: &Harness, uri: &str, body: Value) -> Vec<(String, Value)> {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((name.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn anthropic_messages_whole_and_streamed() {
    let h = harness().await;
    let ask = json!({ "model": "gen", "max_tokens": 5, "temperature": 0, "system": "", "messages": [{ "role": "user", "content": "ab" }] });
    let (status, v) = h.json("POST", "/v1/messages", ask.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["type"].as_str(), v["role"].as_str()), (Some("message"), Some("assistant")));
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["content"], json!([{ "type": "text", "text": "cdefg" }]));
    assert_eq!((v["stop_reason"].as_str(), &v["stop_sequence"]), (Some("max_tokens"), &Value::Null));
    assert_eq!(v["usage"], json!({ "input_tokens": 2, "output_tokens": 5 }));
    let mut stop = ask.clone();
    stop["stop_sequences"] = json!(["ef"]);
    let (_, v) = h.json("POST", "/v1/messages", stop).await;
    assert_eq!(
        (v["content"][0]["text"].as_str(), v["stop_reason"].as_str(), v["stop_sequence"].as_str()),
        (Some("cd"), Some("stop_sequence"), Some("ef"))
    );
    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    let ev = events(&h, "/v1/messages", streamed).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert!(ev.iter().all(|(n, d)| d["type"] == *n), "{ev:?}");
    let text: String = ev.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "cdefg");
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(
        (delta["delta"]["stop_reason"].as_str(), delta["usage"]["output_tokens"].as_u64()),
        (Some("max_tokens"), Some(5))
    );
    let (status, v) = h
        .json(
            "POST",
            "/v1/messages/count_tokens",
            json!({ "model": "gen", "messages": [{ "role": "user", "content": "abc" }] }),
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({ "input_tokens": 3 })));
}

#[tokio::test]
async fn anthropic_tool_use_blocks_and_errors_in_its_shape() {
    let h = harness().await;
    let ask = json!({ "model": "gen", "max_tokens": 40, "temperature": 0, "tools": tools(), "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
        "messages": [{ "role": "user", "content": "hi" }] });
    let (status, v) = h.json("POST", "/v1/messages", ask.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!((block["type"].as_str(), block["name"].as_str()), (Some("tool_use"), Some("f")));
    assert!(block["id"].as_str().unwrap().starts_with("toolu_") && block["input"]["a"].is_i64(), "{v}");
    let mut streamed = ask;
    streamed["stream"] = true.into();
    let ev = events(&h, "/v1/messages", streamed).await;
    let start = ev.iter().find(|(n, _)| n == "content_block_start").unwrap();
    assert_eq!(start.1["content_block"]["type"], "tool_use");
    let json: String = ev.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), block["input"]);
    // A result goes back as a tool message.
    let history = json!({ "model": "gen", "max_tokens": 2, "tools": tools(), "messages": [
        { "role": "user", "content": "a" },
        { "role": "assistant", "content": [{ "type": "tool_use", "id": "toolu_1", "name": "f", "input": { "a": 1 } }] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "toolu_1", "content": [{ "type": "text", "text": "2" }] }] } ] });
    let (status, v) = h.json("POST", "/v1/messages", history).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for (body, status, kind) in [
        (
            json!({ "model": "gen", "messages": [{ "role": "user", "content": "a" }] }),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            json!({ "model": "nope", "max_tokens": 1, "messages": [{ "role": "user", "content": "a" }] }),
            StatusCode::NOT_FOUND,
            "not_found_error",
        ),
        (
            json!({ "model": "gen", "max_tokens": 1, "temperature": 1.5, "messages": [{ "role": "user", "content": "a" }] }),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            json!({ "model": "gen", "max_tokens": 1, "messages": [{ "role": "user", "content": [{ "type": "image" }] }] }),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
    ] {
        let (got, v) = h.json("POST", "/v1/messages", body.clone()).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some(kind)), "{v}");
    }
}

#[tokio::test]
async fn responses_whole_streamed_with_tools_and_formats() {
    let h = harness().await;
    let ask = json!({ "model": "gen", "input": "ab", "max_output_tokens": 5, "temperature": 0 });
    let (status, v) = h.json("POST", "/v1/responses", ask.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("incomplete")));
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(
        v["output"][0]["content"][0],
        json!({ "type": "output_text", "text": "cdefg", "annotations": [], "logprobs": [] })
    );
    assert_eq!(v["usage"]["total_tokens"], 7);
    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    let ev = events(&h, "/v1/responses", streamed).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        &names[names.len() - 4..],
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.incomplete"]
    );
    let seq: Vec<u64> = ev.iter().map(|(_, d)| d["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seq, (0..ev.len() as u64).collect::<Vec<_>>());
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "cdefg");
    // A forced call and a schema.
    let f = json!([{ "type": "function", "name": "f", "parameters": tools()[0]["input_schema"] }]);
    let (_, v) = h.json("POST", "/v1/responses", json!({ "model": "gen", "input": "hi", "tools": f, "tool_choice": "required", "parallel_tool_calls": false, "temperature": 0 })).await;
    let call = &v["output"][0];
    assert_eq!(
        (call["type"].as_str(), call["name"].as_str(), v["status"].as_str()),
        (Some("function_call"), Some("f"), Some("completed")),
        "{v}"
    );
    assert!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap()["a"].is_i64());
    let schema = json!({ "type": "object", "properties": { "ok": { "type": "boolean" } }, "required": ["ok"], "additionalProperties": false });
    let format = json!({ "format": { "type": "json_schema", "name": "x", "schema": schema, "strict": true } });
    let (_, v) = h
        .json("POST", "/v1/responses", json!({ "model": "gen", "input": "hi", "text": format, "temperature": 0 }))
        .await;
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(text).unwrap()["ok"].is_boolean(), "{v}");
    // History with a call and its output, and what is refused.
    let items = json!([{ "role": "user", "content": "a" }, { "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\": 1}" },
        { "type": "function_call_output", "call_id": "call_1", "output": "2" }]);
    let (status, v) =
        h.json("POST", "/v1/responses", json!({ "model": "gen", "input": items, "max_output_tokens": 2 })).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for (extra, field) in [
        (json!({ "previous_response_id": "resp_1" }), "previous_response_id"),
        (json!({ "store": true }), "store"),
        (json!({ "max_output_tokens": 0 }), "max_output_tokens"),
        (json!({ "text": { "format": { "type": "json_schema", "name": "x", "schema": 3 } } }), "text.format.schema"),
        (json!({ "input": [{ "type": "reasoning" }] }), "input[0].type"),
        (json!({ "tools": [{ "type": "web_search" }] }), "tools[0].type"),
    ] {
        let mut body = json!({ "model": "gen", "input": "a" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, v) = h.json("POST", "/v1/responses", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {v}");
        assert_eq!(v["error"]["param"], field, "{extra}: {v}");
    }
}
