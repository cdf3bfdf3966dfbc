//! The real binary against requests that once took it down, and the limits that keep memory
//! bounded: after each, the process answers its liveness probe. (`bench/hostile.sh` runs the
//! full battery against all three model kinds.)

use crate::ops::Server;

/// `{"image": [[[[0, …3000 zeros…], 0, …], 0, …], 0, …]}`: 24 KB whose first elements claim
/// 3001⁴ numbers; it used to abort the process allocating 324 TB.
fn irregular(levels: usize) -> String {
    let zeros = vec!["0"; 3000].join(",");
    let mut v = "0".to_string();
    for _ in 0..levels {
        v = format!("[{v},{zeros}]");
    }
    v
}

fn post(server: &Server, path: &str, body: &str) -> String {
    server.request(&format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn assert_alive(server: &Server) {
    let live = server.request("GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(live.starts_with("HTTP/1.1 200"), "liveness: {live}");
}

#[test]
fn irregular_arrays_are_refused_and_the_server_stays_up() {
    let server = Server::start(&[], &[]);
    let tensor = irregular(4);
    let cases = [
        ("/classify", format!(r#"{{"image": {tensor}}}"#)),
        ("/classify", format!(r#"{{"images": [{tensor}]}}"#)),
        (
            "/v2/models/digits/infer",
            format!(r#"{{"inputs": [{{"name": "image", "shape": [1, 784], "datatype": "FP32", "data": {tensor}}}]}}"#),
        ),
        ("/v1/models/digits:predict", format!(r#"{{"instances": [{tensor}]}}"#)),
        ("/v1/models/digits:predict", format!(r#"{{"inputs": {tensor}}}"#)),
    ];
    for (path, body) in &cases {
        let resp = post(&server, path, body);
        assert!(resp.starts_with("HTTP/1.1 400") && resp.contains("ragged"), "{path}: {resp}");
        assert_alive(&server);
    }
    // A shape claim far beyond what arrived, and a binary size beyond the body.
    let resp = post(
        &server,
        "/v2/models/digits/infer",
        r#"{"inputs": [{"name": "image", "shape": [1000000000000, 784], "datatype": "FP32", "data": [0]}]}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_alive(&server);
    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}\n{}", log.join("\n"));
}

#[test]
fn a_tight_memory_budget_answers_503_or_413_never_an_abort() {
    // 16 MiB for all requests: a 4 MiB batch of images (a ~100 MiB tree once parsed) is refused
    // up front, and a small request still works.
    let server = Server::start(&["--memory-budget-mb", "16"], &[]);
    let image = format!("[{}]", vec!["0.5"; 784].join(","));
    let batch = format!(r#"{{"images": [{}]}}"#, vec![image.as_str(); 1000].join(","));
    let resp = post(&server, "/classify", &batch);
    assert!(
        resp.starts_with("HTTP/1.1 413") && resp.contains("--memory-budget-mb"),
        "{}",
        &resp[..resp.len().min(400)]
    );
    assert_alive(&server);
    let resp = post(&server, "/classify", &format!(r#"{{"image": {image}}}"#));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    server.stop();
}
