//! The listener on real sockets: the connection limit, the header limit, graceful shutdown
//! (in-flight requests finish; the deadline is enforced), TLS, and CORS preflights.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake::{until_running, write_version, FakeLoader, Gate};
use crate::listen::ListenOptions;
use crate::ServeOptions;

struct Running {
    addr: SocketAddr,
    observed: Arc<super::fake::Observed>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Starts a server on a free port; over plain HTTP, waits until its model is loaded.
async fn start(listen: ListenOptions, weights: &str) -> Running {
    let plain = listen.tls.is_none();
    let dir = tempfile::tempdir().unwrap();
    write_version(dir.path(), "digits", 1, weights);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let opts = ServeOptions { listen, ..ServeOptions::new(dir.path().to_owned()) };
    let loader = FakeLoader::default();
    let observed = loader.observed.clone();
    let server = tokio::spawn(crate::serve(opts, Arc::new(loader), listener, async {
        let _ = rx.await;
    }));
    if plain {
        super::fake::wait_ready(addr).await;
    }
    Running { addr, observed, stop, server, _dir: dir }
}

fn classify_request(close: bool) -> String {
    let body = serde_json::json!({ "image": vec![0.0; 784] }).to_string();
    let conn = if close { "close" } else { "keep-alive" };
    format!("POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}", body.len())
}

/// Sends `req` and reads until the response ends (connection close) or `limit` passes.
async fn exchange(conn: &mut TcpStream, req: &str) -> String {
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if !req.contains("close") && out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn extra_connections_are_closed_until_one_frees_up() {
    let r = start(ListenOptions { max_connections: 2, ..Default::default() }, "shift 0").await;
    let mut a = TcpStream::connect(r.addr).await.unwrap();
    let mut b = TcpStream::connect(r.addr).await.unwrap();
    assert!(exchange(&mut a, &classify_request(false)).await.starts_with("HTTP/1.1 200"));
    assert!(exchange(&mut b, &classify_request(false)).await.starts_with("HTTP/1.1 200"));
    let mut c = TcpStream::connect(r.addr).await.unwrap();
    let resp = exchange(&mut c, &classify_request(true)).await;
    assert!(resp.is_empty(), "the third connection must be closed unanswered: {resp}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = TcpStream::connect(r.addr).await.unwrap();
    assert!(exchange(&mut d, &classify_request(true)).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let r = start(ListenOptions { max_header_bytes: 8192, ..Default::default() }, "shift 0").await;
    let mut conn = TcpStream::connect(r.addr).await.unwrap();
    let req = format!(
        "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let resp = exchange(&mut conn, &req).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let gate = Gate::new();
    let r = start(ListenOptions::default(), &gate.weights()).await;
    let addr = r.addr;
    let in_flight = tokio::spawn(async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        exchange(&mut conn, &classify_request(true)).await
    });
    // The request is inside the model when shutdown begins.
    until_running(&r.observed, 1).await;
    r.stop.send(()).unwrap();
    let mut refused = false;
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "no new connections after shutdown begins");
    gate.open();
    let resp = in_flight.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "the in-flight request finished: {resp}");
    tokio::time::timeout(Duration::from_secs(5), r.server).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_gives_up_at_its_deadline() {
    let opts = ListenOptions { shutdown_timeout: Duration::from_millis(200), ..Default::default() };
    // The model never finishes while the test runs (its gate opens only when the test ends).
    let gate = Gate::new();
    let r = start(opts, &gate.weights()).await;
    let addr = r.addr;
    tokio::spawn(async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        exchange(&mut conn, &classify_request(true)).await
    });
    until_running(&r.observed, 1).await;
    let t = Instant::now();
    r.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), r.server).await.expect("returned at the deadline").unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    gate.open();
}

#[tokio::test]
async fn tls_serves_https_and_refuses_plain_http() {
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = super::fake::self_signed(dir.path());
    let tls = crate::listen::tls_config(&cert_path, &key_path).unwrap();
    let r = start(ListenOptions { tls: Some(tls), ..Default::default() }, "shift 0").await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(r.addr).await.unwrap();
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    tls.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let mut plain = TcpStream::connect(r.addr).await.unwrap();
    let resp = exchange(&mut plain, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(!resp.contains("200 OK"), "plain HTTP must not be served on the TLS port: {resp}");
    assert!(crate::listen::tls_config(&key_path, &key_path).is_err(), "a key is not a certificate");
}

#[tokio::test]
async fn cors_preflights_pass_before_the_key_check_and_only_for_listed_origins() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let mut h = super::fake::Harness::new().await;
    h.state.auth = Arc::new(crate::auth::Auth::from_text("k-0123456789abcdef infer", Default::default()).unwrap());
    let app = crate::app(h.state.clone()).layer(crate::cors_layer(&["https://ui.example".into()]).unwrap());
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/embeddings")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .body(Body::empty())
            .unwrap()
    };
    let resp = app.clone().oneshot(preflight("https://ui.example")).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://ui.example");
    let resp = app.clone().oneshot(preflight("https://evil.example")).await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // An actual call still needs its key.
    let call = Request::get("/v2/models/digits").header("origin", "https://ui.example").body(Body::empty()).unwrap();
    let resp = app.oneshot(call).await.unwrap();
    assert_eq!(resp.status(), axum::http::StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://ui.example");
}
