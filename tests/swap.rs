//! The whole loop: a running server on port 0 serves the bundled model, `aiserve train`
//! publishes version 2 into its repository, and the server swaps to it without a restart and
//! without failing a request in between.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiserve_models::CandleLoader;
use aiserve_server::ServeOptions;

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let json = resp.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
    (status, json)
}

#[test]
fn trained_version_is_picked_up_by_a_running_server() {
    let repo = tempfile::tempdir().unwrap();
    let src = crate::bundled_repo().join("digits/1");
    std::fs::create_dir_all(repo.path().join("digits/1")).unwrap();
    for f in ["config.toml", "model.safetensors"] {
        std::fs::copy(src.join(f), repo.path().join("digits/1").join(f)).unwrap();
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions { poll_interval: Duration::from_millis(100), ..ServeOptions::new(repo.path().to_owned()) };
    let server = rt.spawn(aiserve_server::serve(opts, Arc::new(CandleLoader::cpu()), listener, async {
        let _ = stopped.await;
    }));

    // A real "7" from the MNIST test set (its first image).
    let test = aiserve_models::mnist::load_dir(&crate::mnist_dir()).unwrap().test;
    let image: Vec<f32> = test.images[..784].iter().map(|&p| p as f32 / 255.0).collect();
    let body = serde_json::json!({ "image": image }).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, v) = loop {
        let r = post(addr, "/classify", &body);
        if r.0 == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["label"].as_u64(), v["version"].as_str()), (Some(test.labels[0] as u64), Some("1")));

    let out = crate::train_digits(repo.path(), &["--epochs", "1", "--limit-train", "1280", "--limit-test", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Keep asking while the server notices, loads and swaps: every answer must be a 200.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut versions = Vec::new();
    loop {
        let (status, v) = post(addr, "/classify", &body);
        assert_eq!(status, 200, "request failed during the swap: {v}");
        versions.push(v["version"].as_str().unwrap().to_owned());
        if versions.last().unwrap() == "2" || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(versions.last().map(String::as_str), Some("2"), "server never swapped: {versions:?}");
    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
