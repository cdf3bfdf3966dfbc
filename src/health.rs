//! `aiserve health`: asks a running server whether it is live (or ready) and exits 0 if so, 1
//! if not. The container image's HEALTHCHECK runs it (the image has no curl). Plain HTTP only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// The server's HTTP address (as given to `serve --addr`; 0.0.0.0 and [::] are asked on
    /// loopback).
    #[arg(long, env = "AISERVE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Ask for readiness (`/v2/health/ready`: models loaded, not draining) instead of liveness.
    #[arg(long)]
    pub ready: bool,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let mut addr = args.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let path = if args.ready { "/v2/health/ready" } else { "/v2/health/live" };
    let status = get_status(addr, path, args.timeout).with_context(|| format!("GET http://{addr}{path}"))?;
    if status != 200 {
        bail!("GET http://{addr}{path} answered {status}");
    }
    Ok(())
}

/// The status code of a GET, read from the first line of the answer.
fn get_status(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match conn.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = std::str::from_utf8(&head[..n]).unwrap_or_default();
    match line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 ")).and_then(|r| r.get(..3)) {
        Some(code) => Ok(code.parse().context("a malformed status line")?),
        None => bail!("not an HTTP answer: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_and_fails_on_refusal_or_non_200() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 Service Unavailable\r\n\r\n", "garbage"] {
                let (mut c, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 256];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the request head ends with a blank line");
                    head.extend_from_slice(&buf[..n]);
                }
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(get_status(addr, "/v2/health/live", t).unwrap(), 200);
        let args = |ready| HealthArgs { addr, ready, timeout: t };
        let err = run(args(true)).unwrap_err().to_string();
        assert!(err.contains("/v2/health/ready answered 503"), "{err}");
        assert!(run(args(false)).is_err());
        server.join().unwrap();
        assert!(run(args(false)).is_err(), "nothing listening");
    }
}
