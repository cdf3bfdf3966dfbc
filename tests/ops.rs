//! Operating the real binary: JSON logs that carry request ids and never keys, request ids on
//! every response, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `aiserve serve` on a free loopback port with its stderr captured.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(&crate::bundled_repo(), args, env)
    }

    /// The same, serving `repo`.
    pub fn start_in(repo: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aiserve"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--repo"])
            .arg(repo)
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let http = line.contains("aiserve listening");
                if let Some(a) =
                    line.split("addr=").nth(1).or_else(|| line.split("\"addr\":\"").nth(1)).filter(|_| http)
                {
                    let a: String = a.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                    let _ = tx.send(a);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("server printed its address").parse().unwrap();
        let s = Self { child, addr, log };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .request("GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .starts_with("HTTP/1.1 200")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became ready");
    }

    /// Sends a raw HTTP/1.1 request and returns the raw response.
    pub fn request(&self, raw: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    }

    /// Sends raw request bytes and returns the raw response bytes (binary bodies).
    pub fn request_bytes(&self, raw: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(raw).unwrap();
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        resp
    }

    /// SIGTERM, then the exit status and the whole log.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

/// A test that fails before `stop` leaves no server behind.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn json_logs_carry_request_ids_and_never_keys() {
    const KEY: &str = "s3cret-key-never-logged-42";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY} infer\n")).unwrap();
    let server = Server::start(
        &["--log-format", "json", "--api-keys-file", keys.to_str().unwrap()],
        &[("RUST_LOG", "info,tower_http=debug")],
    );
    let resp = server.request(&format!(
        "GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nx-request-id: trace-abc-1\r\nConnection: close\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(header(&resp, "x-request-id"), Some("trace-abc-1"));
    // No id (or an unusable one) gets a fresh UUID; refusals carry one too.
    let resp = server
        .request("GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nx-request-id: bad id\r\nConnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(header(&resp, "x-request-id").map(str::len), Some(36), "{resp}");
    let resp = server.request(&format!(
        "GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nx-api-key: {KEY}x\r\nConnection: close\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");

    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}\n{}", log.join("\n"));
    assert!(
        log.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "not all JSON:\n{}",
        log.join("\n")
    );
    assert!(log.iter().any(|l| l.contains("\"request_id\":\"trace-abc-1\"")), "{}", log.join("\n"));
    assert!(log.iter().all(|l| !l.contains("s3cret")), "a key reached the log");
    assert!(log.iter().any(|l| l.contains("shut down cleanly")));
}
