//! Text generation over HTTP with the fake generator (`"ab"` continues `"cdef…"`, ending after
//! `~`): OpenAI chat and completions whole and streamed, stop strings, `n`, usage, every input
//! error in OpenAI's shape, KServe generate, cancellation on disconnect, and continuous batching.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::join_all;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::fake::{write_embedder, Harness};
use super::fake_generator::write_generator;

async fn with_generator(weights: &str) -> Harness {
    let h = Harness::new().await;
    write_generator(h.repo(), "gen", 1, weights);
    write_embedder(h.repo(), "emb", 1, 16);
    h.poll().await;
    h
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({ "model": "gen", "messages": [{ "role": "user", "content": content }] });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// The `data:` payloads of an SSE body.
async fn sse(h: &Harness, uri: &str, body: Value) -> (StatusCode, Vec<String>) {
    let req = Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let resp = h.send(req).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (status, text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect())
}

#[tokio::test]
async fn chat_answers_with_usage_and_finish_reasons() {
    let h = with_generator("").await;
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("ab", json!({ "max_tokens": 5 }))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"], json!({ "role": "assistant", "content": "cdefg" }));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({ "prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7, "prompt_tokens_details": { "cached_tokens": 0 } })
    );
    // Runs to the end token: `z` … `~`, then 127.
    let (_, v) = h.json("POST", "/v1/chat/completions", chat("xy", json!({ "max_completion_tokens": 40 }))).await;
    assert_eq!(v["choices"][0]["message"]["content"], "z{|}~");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    // Without a limit the sequence may fill the context.
    let (_, v) = h.json("POST", "/v1/chat/completions", chat("xy", json!({}))).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn stop_strings_end_the_text_before_them() {
    let h = with_generator("").await;
    let (_, v) =
        h.json("POST", "/v1/chat/completions", chat("ab", json!({ "max_tokens": 20, "stop": ["fg", "zz"] }))).await;
    assert_eq!(v["choices"][0]["message"]["content"], "cde");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (_, v) = h
        .json("POST", "/v1/completions", json!({ "model": "gen", "prompt": "ab", "max_tokens": 20, "stop": "e" }))
        .await;
    assert_eq!(v["choices"][0]["text"], "cd");
}

#[tokio::test]
async fn streamed_chat_matches_the_whole_answer() {
    let h = with_generator("").await;
    let body = chat("ab", json!({ "max_tokens": 6, "stream": true, "stream_options": { "include_usage": true } }));
    let (status, events) = sse(&h, "/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "cdefgh");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({ "prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8, "prompt_tokens_details": { "cached_tokens": 0 } })
    );
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn completions_take_every_prompt_form_with_n_choices_each() {
    let h = with_generator("").await;
    let (status, v) = h
        .json("POST", "/v1/completions", json!({ "model": "gen", "prompt": ["ab", "pq"], "n": 2, "max_tokens": 3 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let texts: Vec<&str> = v["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["cde", "cde", "rst", "rst"]);
    assert!(v["choices"].as_array().unwrap().iter().enumerate().all(|(i, c)| c["index"] == i));
    assert_eq!(
        v["usage"],
        json!({ "prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16, "prompt_tokens_details": { "cached_tokens": 0 } })
    );
    // Token ids, and lists of them.
    let (_, v) =
        h.json("POST", "/v1/completions", json!({ "model": "gen", "prompt": [97, 98], "max_tokens": 2 })).await;
    assert_eq!(v["choices"][0]["text"], "cd");
    let (_, v) =
        h.json("POST", "/v1/completions", json!({ "model": "gen", "prompt": [[97], [120]], "max_tokens": 2 })).await;
    assert_eq!(v["choices"][1]["text"], "yz");
    // The legacy API's default length is 16 tokens.
    let (_, v) = h.json("POST", "/v1/completions", json!({ "model": "gen", "prompt": "A" })).await;
    assert_eq!(v["usage"]["completion_tokens"], 16);
    // Streaming completions.
    let (_, events) =
        sse(&h, "/v1/completions", json!({ "model": "gen", "prompt": "ab", "max_tokens": 3, "stream": true })).await;
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "cde");
}

#[tokio::test]
async fn logprobs_come_per_token_whole_and_streamed() {
    let h = with_generator("").await;
    // The fake model puts logit 100 on the next byte and 0 on the other 127: the chosen token
    // has log-probability ~0, the runner-up (byte 0, the lowest id of the ties) ~-100.
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-3;
    let body = chat("ab", json!({ "max_tokens": 3, "logprobs": true, "top_logprobs": 2 }));
    let (status, v) = h.json("POST", "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    let tokens: Vec<&str> = content.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(tokens.concat(), "cde");
    for t in &content {
        assert!(close(&t["logprob"], 0.0), "{t}");
        assert_eq!(t["bytes"], json!(t["token"].as_str().unwrap().as_bytes()));
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!((top.len(), &top[0]["token"]), (2, &t["token"]));
        assert!(close(&top[1]["logprob"], -100.0) && top[1]["token"] == "\u{0}", "{t}");
    }
    // Streamed: the same entries, spread over the text chunks.
    let mut body = body;
    body["stream"] = json!(true);
    let (_, chunks) = sse(&h, "/v1/chat/completions", body).await;
    let streamed: Vec<Value> = chunks
        .iter()
        .filter(|c| *c != "[DONE]")
        .filter_map(|c| {
            serde_json::from_str::<Value>(c).unwrap()["choices"][0]["logprobs"]["content"].as_array().cloned()
        })
        .flatten()
        .collect();
    assert_eq!(streamed, content);
    // The end token has none: five tokens of text, six counted.
    let (_, v) = h.json("POST", "/v1/chat/completions", chat("xy", json!({ "logprobs": true }))).await;
    assert_eq!(v["choices"][0]["logprobs"]["content"].as_array().unwrap().len(), 5);
    assert_eq!(v["usage"]["completion_tokens"], 6);
    // Without asking: null.
    let (_, v) = h.json("POST", "/v1/chat/completions", chat("ab", json!({ "max_tokens": 2 }))).await;
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    // Completions' shape: `logprobs: k`.
    let (status, v) = h
        .json("POST", "/v1/completions", json!({ "model": "gen", "prompt": "ab", "max_tokens": 3, "logprobs": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let l = &v["choices"][0]["logprobs"];
    assert_eq!((&l["tokens"], &l["text_offset"]), (&json!(["c", "d", "e"]), &json!([0, 1, 2])));
    assert!(l["token_logprobs"].as_array().unwrap().iter().all(|x| close(x, 0.0)), "{l}");
    assert!(close(&l["top_logprobs"][0]["c"], 0.0), "{l}");
}

#[tokio::test]
async fn completions_echo_their_prompt_whole_and_streamed() {
    let h = with_generator("").await;
    let body = json!({ "model": "gen", "prompt": ["ab", [120, 121]], "max_tokens": 2, "n": 2, "echo": true });
    let (status, v) = h.json("POST", "/v1/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let texts: Vec<&str> = v["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["abcd", "abcd", "xyz{", "xyz{"]);
    let mut body = body;
    body["stream"] = json!(true);
    let (_, chunks) = sse(&h, "/v1/completions", body).await;
    let mut streamed = [String::new(), String::new(), String::new(), String::new()];
    for c in chunks.iter().filter(|c| *c != "[DONE]") {
        let c: Value = serde_json::from_str(c).unwrap();
        let choice = &c["choices"][0];
        streamed[choice["index"].as_u64().unwrap() as usize].push_str(choice["text"].as_str().unwrap());
    }
    assert_eq!(streamed, texts.as_slice());
    let (status, v) =
        h.json("POST", "/v1/completions", json!({ "model": "gen", "prompt": "ab", "echo": true, "logprobs": 1 })).await;
    assert_eq!((status, &v["error"]["param"]), (StatusCode::BAD_REQUEST, &json!("echo")), "{v}");
}

#[tokio::test]
async fn logit_bias_changes_the_pick_and_names_bad_tokens() {
    let h = with_generator("").await;
    // `c` (99) banned and `x` (120) raised above the rest: greedy takes `x`, then goes on from it.
    let bias = json!({ "max_tokens": 3, "temperature": 0, "logit_bias": { "99": -100, "120": 50 } });
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("ab", bias)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "xyz");
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("ab", json!({ "logit_bias": { "128": 1 } }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "logit_bias");
    assert!(v["error"]["message"].as_str().unwrap().contains("vocabulary of 128"), "{v}");
}

#[tokio::test]
async fn bad_requests_name_the_field_in_openai_shape() {
    let h = with_generator("").await;
    for (body, param) in [
        (chat("ab", json!({ "temperature": 3 })), "temperature"),
        (chat("ab", json!({ "top_p": 0 })), "top_p"),
        (chat("ab", json!({ "n": 99 })), "n"),
        (chat("ab", json!({ "max_tokens": 0 })), "max_tokens"),
        (chat("ab", json!({ "top_logprobs": 2 })), "top_logprobs"),
        (chat("ab", json!({ "response_format": { "type": "yaml" } })), "response_format.type"),
        (chat("ab", json!({ "mirostat": 2 })), "mirostat"),
        (chat("ab", json!({ "max_tokens": 63 })), "max_tokens"),
        (json!({ "model": "gen", "messages": [] }), "messages"),
        (json!({ "model": "gen", "messages": [{ "role": "robot", "content": "x" }] }), "messages[0].role"),
        (
            json!({ "model": "gen", "messages": [{ "role": "user", "content": [{ "type": "image_url" }] }] }),
            "messages[0].content[0]",
        ),
        (json!({ "messages": [{ "role": "user", "content": "x" }] }), "model"),
    ] {
        let (status, v) = h.json("POST", "/v1/chat/completions", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("ab", json!({ "max_tokens": 63 }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("exceeds the 64 tokens"), "{v}");
    let (status, v) = h.json("POST", "/v1/completions", json!({ "model": "gen", "prompt": "x", "best_of": 2 })).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("best_of")));
    // Models of the wrong kind, both ways.
    let (status, v) = h
        .json(
            "POST",
            "/v1/chat/completions",
            json!({ "model": "emb", "messages": [{ "role": "user", "content": "x" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, _) = h.json("POST", "/v1/embeddings", json!({ "model": "gen", "input": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, v) = h
        .json(
            "POST",
            "/v1/chat/completions",
            chat("ab", json!({}))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("model".into(), "nope".into());
                    Value::Object(o)
                })
                .unwrap(),
        )
        .await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));
}

#[tokio::test]
async fn kserve_generate_and_generate_stream() {
    let h = with_generator("").await;
    let (status, v) = h
        .json("POST", "/v2/models/gen/generate", json!({ "text_input": "ab", "parameters": { "max_tokens": 4 } }))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({ "model_name": "gen", "model_version": "1", "text_output": "cdef", "finish_reason": "length" })
    );
    let (_, v) = h
        .json(
            "POST",
            "/v2/models/gen/versions/1/generate",
            json!({ "text_input": "ab", "max_tokens": 2, "temperature": 0 }),
        )
        .await;
    assert_eq!(v["text_output"], "cd");
    let (status, events) =
        sse(&h, "/v2/models/gen/generate_stream", json!({ "text_input": "ab", "max_tokens": 3 })).await;
    assert_eq!(status, StatusCode::OK);
    let parsed: Vec<Value> = events.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = parsed.iter().map(|e| e["text_output"].as_str().unwrap()).collect();
    assert_eq!(text, "cde");
    assert_eq!(parsed.last().unwrap()["finish_reason"], "length");
    let (status, v) = h.json("POST", "/v2/models/gen/generate", json!({ "text_input": 5 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, _) = h
        .json("POST", "/v2/models/gen/generate", json!({ "text_input": "x", "parameters": { "beam_width": 2 } }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.json("POST", "/v2/models/digits/generate", json!({ "text_input": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, v) = h.get("/v2/models/gen").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["inputs"][0]["name"], "text_input");
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_sequence_at_once() {
    let h = with_generator("sleep 20").await;
    let body = chat("A", json!({ "max_tokens": 60, "stream": true }));
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = h.send(req).await;
    let mut body = resp.into_body();
    // Read until some text has arrived, then hang up.
    let mut seen = String::new();
    while !seen.contains("\"B\"") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    assert_eq!(h.generated.live_seqs.load(Ordering::SeqCst), 1);
    drop(body);
    for _ in 0..50 {
        if h.generated.live_seqs.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.generated.live_seqs.load(Ordering::SeqCst), 0, "the sequence outlived its client");
    let passes = h.generated.batch_items.lock().unwrap().len();
    assert!(passes < 20, "{passes} forward passes for a stream dropped after its second token");
}

#[tokio::test]
async fn concurrent_chats_share_forward_passes_and_keep_their_own_text() {
    // The engine's first pass waits until every request has been submitted: the rest then run
    // together however the machine schedules the test.
    let gate = super::fake::Gate::new();
    let h = with_generator(&format!("first-pass-waits-for {}", gate.file().display())).await;
    let starts = ["A", "H", "O", "a", "h", "o", "0", "5"];
    let app = crate::app(h.state.clone());
    let requests = starts.iter().map(|s| {
        let body = chat(s, json!({ "max_tokens": 6 })).to_string();
        let req =
            Request::post("/v1/chat/completions").header("content-type", "application/json").body(Body::from(body));
        tower::ServiceExt::oneshot(app.clone(), req.unwrap())
    });
    let all = tokio::spawn(join_all(requests));
    let servable = h.state.registry.resolve("gen", None).unwrap();
    for _ in 0..4000 {
        if servable.generator().unwrap().engine.in_flight() == starts.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(servable.generator().unwrap().engine.in_flight(), starts.len());
    gate.open();
    let mut answers = Vec::new();
    for resp in all.await.unwrap() {
        answers.push(super::fake::read_json(resp.unwrap()).await);
    }
    for (s, (status, v)) in starts.iter().zip(answers) {
        assert_eq!(status, StatusCode::OK);
        let first = s.as_bytes()[0];
        let want: String = (1..=6).map(|i| (first + i) as char).collect();
        assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    }
    let widest = h.generated.batch_items.lock().unwrap().iter().copied().max().unwrap();
    assert!(widest >= 7, "at most {widest} sequences shared a forward pass");
}

#[tokio::test]
async fn seeded_sampling_repeats_and_greedy_ignores_the_seed() {
    let h = with_generator("").await;
    let body = chat("ab", json!({ "max_tokens": 8, "temperature": 1.5, "seed": 7, "n": 3 }));
    let (_, a) = h.json("POST", "/v1/chat/completions", body.clone()).await;
    let (_, b) = h.json("POST", "/v1/chat/completions", body).await;
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["choices"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_full_kv_cache_pauses_sequences_and_recomputes_them_without_changing_their_text() {
    use aiserve_runtime::generation::engine::EngineConfig;
    // 40 KV slots (the fake holds 1 KiB per token) for eight sequences of 3 + 24 tokens each: at
    // most one runs at a time near the end, the others are preempted and prefilled again.
    let generation = EngineConfig { kv_cache_bytes: 40 * 1024, max_seqs: 8, ..Default::default() };
    let h = Harness::with_config(aiserve_runtime::Limits::default(), generation).await;
    write_generator(h.repo(), "gen", 1, "sleep 1");
    h.poll().await;
    let starts = ["ABC", "DEF", "GHI", "JKL", "MNO", "PQR", "abc", "def"];
    let answers =
        join_all(starts.iter().map(|s| h.json("POST", "/v1/chat/completions", chat(s, json!({ "max_tokens": 24 })))))
            .await;
    for (s, (status, v)) in starts.iter().zip(answers) {
        assert_eq!(status, StatusCode::OK, "{v}");
        let last = *s.as_bytes().last().unwrap();
        let want: String = (1..=24u8).map(|i| last + i).take_while(|c| *c < 127).map(|c| c as char).collect();
        assert_eq!(v["choices"][0]["message"]["content"], want.as_str(), "{s}");
        assert_eq!(v["usage"]["completion_tokens"], want.len() + usize::from(want.len() < 24));
    }
    // Warm-up made one state and each request one more; every resumption after a preemption
    // made another.
    let made = h.generated.made_seqs.load(Ordering::SeqCst);
    assert!(made > 1 + starts.len(), "only {made} sequence states: nothing was preempted");
    // A sequence that can never fit the cache is refused up front, naming the limit.
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("AB", json!({ "max_tokens": 39 }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("40 tokens"), "{v}");
    assert_eq!(h.generated.live_seqs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_model_panic_fails_its_batch_with_an_error_id_and_the_engine_goes_on() {
    let h = with_generator("").await;
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("a!", json!({ "max_tokens": 3 }))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("internal error E"), "{v}");
    let (_, events) = sse(&h, "/v1/chat/completions", chat("b!", json!({ "stream": true }))).await;
    assert!(events.iter().any(|e| e.contains("\"error\"") && e.contains("internal error E")), "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("ab", json!({ "max_tokens": 3 }))).await;
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (StatusCode::OK, Some("cde")));
    assert_eq!(h.generated.live_seqs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_panic_in_the_engine_thread_fails_its_sequences_and_the_version_keeps_serving() {
    let h = with_generator("").await;
    // "\u{1}" continues with byte 2, which the fake tokenizer cannot decode without panicking.
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("\u{1}", json!({ "max_tokens": 3 }))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let (status, v) = h.json("POST", "/v1/chat/completions", chat("ab", json!({ "max_tokens": 3 }))).await;
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (StatusCode::OK, Some("cde")), "{v}");
}
