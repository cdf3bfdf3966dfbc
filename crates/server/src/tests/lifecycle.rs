//! The version manager through the HTTP surface: swaps, failures, removals, bad configs.

use axum::http::StatusCode;
use serde_json::json;

use super::fake::{write_version, Harness};

async fn served_version(h: &Harness) -> String {
    let (s, v) = h.json("POST", "/classify", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["version"].as_str().unwrap().to_owned()
}

async fn states(h: &Harness) -> Vec<(String, String)> {
    let (_, v) = h.get("/v1/models/digits").await;
    v["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["version"].as_str().unwrap().to_owned(), r["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn pair(v: &str, s: &str) -> (String, String) {
    (v.to_owned(), s.to_owned())
}

#[tokio::test]
async fn new_version_replaces_old_and_removal_falls_back() {
    let h = Harness::new().await;
    assert_eq!(served_version(&h).await, "1");
    write_version(h.repo(), "digits", 2, "shift 0");
    h.poll().await;
    assert_eq!(served_version(&h).await, "2");
    assert_eq!(states(&h).await, [pair("1", "END"), pair("2", "AVAILABLE")]);
    std::fs::remove_dir_all(h.repo().join("digits/2")).unwrap();
    h.poll().await;
    assert_eq!(served_version(&h).await, "1");
    assert_eq!(states(&h).await, [pair("1", "AVAILABLE"), pair("2", "END")]);
}

#[tokio::test]
async fn a_version_that_fails_to_load_keeps_the_old_one_serving() {
    let h = Harness::new().await;
    write_version(h.repo(), "digits", 2, "garbage");
    h.poll().await;
    assert_eq!(served_version(&h).await, "1");
    let (_, v) = h.get("/v1/models/digits/versions/2").await;
    assert_eq!(v["model_version_status"][0]["state"], "END");
    assert_eq!(v["model_version_status"][0]["status"]["error_code"], "UNKNOWN");
    assert!(v["model_version_status"][0]["status"]["error_message"]
        .as_str()
        .unwrap()
        .contains("unreadable fake weights"));

    // Fixing the files retries the load.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(h.repo().join("digits/2/weights.txt"), "shift 0\n").unwrap();
    h.poll().await;
    assert_eq!(served_version(&h).await, "2");
}

#[tokio::test]
async fn broken_files_never_take_the_server_down() {
    let h = Harness::new().await;
    // A version without config, one with a bad config, and a model with a broken model.toml.
    std::fs::create_dir_all(h.repo().join("digits/3")).unwrap();
    write_version(h.repo(), "other", 1, "shift 0");
    std::fs::write(h.repo().join("other/1/config.toml"), "kind = 'nonsense'").unwrap();
    h.poll().await;
    assert_eq!(served_version(&h).await, "1");
    let (s, v) = h.json("POST", "/classify?model=other", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("failed to load"), "{v}");

    std::fs::remove_dir_all(h.repo().join("digits/3")).unwrap();
    std::fs::write(h.repo().join("digits/model.toml"), "version_policy = 'bogus'").unwrap();
    write_version(h.repo(), "digits", 5, "shift 0");
    h.poll().await;
    // The bad model.toml freezes the model as it was rather than guessing.
    assert_eq!(served_version(&h).await, "1");
}

#[tokio::test]
async fn a_new_model_with_a_bad_config_says_why_it_is_not_ready() {
    let h = Harness::new().await;
    write_version(h.repo(), "fresh", 1, "shift 0");
    std::fs::write(h.repo().join("fresh/model.toml"), "max_batch_size = 0").unwrap();
    h.poll().await;
    let (s, v) = h.json("POST", "/classify?model=fresh", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("`max_batch_size` must be in 1..=4096, got 0"), "{v}");
}

#[tokio::test]
async fn removed_models_disappear() {
    let h = Harness::new().await;
    write_version(h.repo(), "other", 1, "shift 0");
    h.poll().await;
    assert_eq!(h.get("/v1/models/other").await.0, StatusCode::OK);
    std::fs::remove_dir_all(h.repo().join("other")).unwrap();
    h.poll().await;
    // Like TF Serving, the unloaded versions report END until the next poll forgets them.
    let (_, v) = h.get("/v1/models/other").await;
    assert_eq!(v["model_version_status"][0]["state"], "END", "{v}");
    assert_eq!(
        h.json("POST", "/classify?model=other", json!({ "image": vec![0.0; 784] })).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.poll().await;
    assert_eq!(h.get("/v1/models/other").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn probes_answer_while_models_load_and_readiness_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    write_version(dir.path(), "digits", 1, &format!("load-waits-for {}", go.display()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = crate::ServeOptions::new(dir.path().to_owned());
    let server =
        tokio::spawn(crate::serve(opts, std::sync::Arc::new(super::fake::FakeLoader::default()), listener, async {
            let _ = rx.await;
        }));
    // The load is blocked until `go` exists: the listener answers all the same.
    let http = super::fake::http;
    assert!(http(addr, "GET", "/v2/health/live", "").await.starts_with("HTTP/1.1 200"));
    assert!(http(addr, "GET", "/v2/health/ready", "").await.starts_with("HTTP/1.1 503"));
    // Once the first poll has found the model (it then stays LOADING until `go` exists) ...
    for _ in 0..2000 {
        if !http(addr, "GET", "/v2/models/digits/ready", "").await.starts_with("HTTP/1.1 404") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(http(addr, "GET", "/v2/health/ready", "").await.starts_with("HTTP/1.1 503"));
    let body = json!({ "image": vec![1.0; 784] }).to_string();
    let resp = http(addr, "POST", "/classify", &body).await;
    assert!(resp.starts_with("HTTP/1.1 503") && resp.contains("LOADING"), "{resp}");
    std::fs::write(&go, "").unwrap();
    super::fake::wait_ready(addr).await;
    let resp = http(addr, "POST", "/classify", &body).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

/// `serve` on a real loopback socket with one `digits` version and this drain delay, once
/// ready; the sender begins the shutdown.
async fn serve_digits(
    drain_delay: std::time::Duration,
) -> (
    tempfile::TempDir,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let dir = tempfile::tempdir().unwrap();
    write_version(dir.path(), "digits", 1, "shift 0");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = crate::ServeOptions {
        poll_interval: std::time::Duration::from_millis(50),
        drain_delay,
        ..crate::ServeOptions::new(dir.path().to_owned())
    };
    let server =
        tokio::spawn(crate::serve(opts, std::sync::Arc::new(super::fake::FakeLoader::default()), listener, async {
            let _ = rx.await;
        }));
    super::fake::wait_ready(addr).await;
    (dir, addr, tx, server)
}

#[tokio::test]
async fn serves_on_a_real_socket_and_shuts_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, addr, tx, server) = serve_digits(std::time::Duration::ZERO).await;
    let body = json!({ "image": vec![1.0; 784] }).to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"label\":9"), "{resp}");
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn draining_answers_not_ready_while_still_serving_then_closes() {
    let http = super::fake::http;
    let (_dir, addr, tx, server) = serve_digits(std::time::Duration::from_millis(1500)).await;
    let started = std::time::Instant::now();
    tx.send(()).unwrap();
    for _ in 0..200 {
        if http(addr, "GET", "/v2/health/ready", "").await.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(http(addr, "GET", "/v2/health/ready", "").await.starts_with("HTTP/1.1 503"));
    assert!(http(addr, "GET", "/v2/health/live", "").await.starts_with("HTTP/1.1 200"));
    let body = json!({ "image": vec![1.0; 784] }).to_string();
    let resp = http(addr, "POST", "/classify", &body).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "served while draining: {resp}");
    tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500), "the listener closed before the drain delay");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_versions_under_concurrent_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::ServiceExt;

    let h = Harness::new().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (app, stop, ok, failed) = (crate::app(h.state.clone()), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let body = json!({ "image": vec![0.0; 784] }).to_string();
            while !stop.load(Ordering::Relaxed) {
                let req = axum::http::Request::post("/classify")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.clone()))
                    .unwrap();
                let status = app.clone().oneshot(req).await.unwrap().status();
                let counter = if status == StatusCode::OK { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Publish, swap, remove and swap back while the clients run.
    for v in 2..=4 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        write_version(h.repo(), "digits", v, "shift 0");
        h.poll().await;
        assert_eq!(served_version(&h).await, v.to_string());
    }
    std::fs::remove_dir_all(h.repo().join("digits/4")).unwrap();
    h.poll().await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(served_version(&h).await, "3");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} requests succeeded", ok.load(Ordering::Relaxed));
    assert!(ok.load(Ordering::Relaxed) > 100);
}
