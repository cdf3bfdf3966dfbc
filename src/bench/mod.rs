//! `aiserve bench`: a closed-loop HTTP and gRPC load generator (like perf_analyzer or
//! `vllm bench serve`).
//!
//! For each concurrency level, that many tasks each keep one request in flight on their own
//! keep-alive (HTTP/1.1) or HTTP/2 (gRPC) connection until the duration or request budget runs
//! out; latencies of successful responses go into a percentile summary. Targets must be loopback
//! unless `--allow-remote`.

mod grpc;
mod payload;
mod stats;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use payload::Protocol;
use stats::{summarise, table_header, table_row, LevelReport};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the server under test.
    #[arg(long, env = "AISERVE_BENCH_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Protocol (and so route and body) to exercise.
    #[arg(long, value_enum, default_value = "classify")]
    pub protocol: Protocol,
    /// Model name used in the route or body.
    #[arg(long, default_value = "digits")]
    pub model: String,
    /// Images per request (image protocols): 1 measures the request path, large batches the
    /// cost of moving tensors (JSON vs binary vs gRPC).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Concurrency levels to sweep, comma-separated: requests kept in flight at once.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// How long each level runs (`10s`, `500ms`); ignored when --requests is given.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Send exactly this many requests per level instead of running for --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Unmeasured requests per level before timing starts (connection setup, lazy init).
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// gRPC protocols: HTTP/2 connections the concurrent calls share (0: one per call in flight,
    /// as HTTP/1.1 needs). gRPC clients usually multiplex one channel's calls over one connection.
    #[arg(long, default_value_t = 0)]
    pub grpc_connections: usize,
    /// Request body file (JSON) instead of the generated one.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Request bodies, one JSON document per line: requests take them in turn (e.g. many
    /// different sentences for an embedding model, as its real traffic has). HTTP JSON only.
    #[arg(long, conflicts_with = "payload")]
    pub payloads: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Allow a target that is not a loopback address (off so a typo cannot load someone's server).
    #[arg(long)]
    pub allow_remote: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let uri: hyper::Uri = args.url.parse().with_context(|| format!("--url {:?} is not a URL", args.url))?;
    check_target(&uri, args.allow_remote)?;
    if args.concurrency.iter().any(|&c| c == 0 || c > 10_000) {
        bail!("--concurrency levels must be in 1..=10000, got {:?}", args.concurrency);
    }
    let batch = args.batch as usize;
    let bodies = match &args.payloads {
        Some(file) => payload::body_lines(args.protocol, file)?,
        None => vec![args.protocol.body(&args.model, args.payload.as_deref(), batch)?],
    };
    let bodies: Arc<[Body]> = bodies
        .into_iter()
        .map(|b| {
            let header = args.protocol.header(&b);
            (Bytes::from(b), header)
        })
        .collect();
    let target = format!("{}{}", args.url.trim_end_matches('/'), args.protocol.path(&args.model));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let grpc = args.protocol.is_grpc().then(|| grpc::Request::new(args.protocol, &args.model, batch));
    let size = match &grpc {
        Some(grpc::Request::Kserve(r)) => prost::Message::encoded_len(r),
        Some(grpc::Request::Tf(r)) => prost::Message::encoded_len(r),
        None => bodies.iter().map(|(b, _)| b.len()).sum::<usize>() / bodies.len(),
    };
    let what = if bodies.len() > 1 {
        format!("{} bodies in turn, {size} bytes on average", bodies.len())
    } else {
        format!("{size} byte request, {batch} per request")
    };
    println!("aiserve bench: {:?} {target} ({what})", args.protocol);
    println!("{}", table_header());
    let mut reports = Vec::new();
    for &c in &args.concurrency {
        let level = Level {
            protocol: args.protocol,
            target: target.clone(),
            bodies: bodies.clone(),
            grpc: grpc.clone(),
            grpc_connections: args.grpc_connections,
            concurrency: c,
        };
        rt.block_on(level.run(args.warmup, None))?;
        let report =
            rt.block_on(level.run(args.requests.unwrap_or(0), args.requests.is_none().then_some(args.duration)))?;
        println!("{}", table_row(&report));
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let doc =
            serde_json::json!({ "protocol": format!("{:?}", args.protocol), "target": target, "levels": reports });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Refuses non-loopback targets unless allowed.
fn check_target(uri: &hyper::Uri, allow_remote: bool) -> anyhow::Result<()> {
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://HOST:PORT (plain HTTP), got {uri}");
    }
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        bail!("refusing to load {host}: not a loopback address (pass --allow-remote if you mean it)");
    }
    Ok(())
}

/// A request body and the extra header it needs (see [`Protocol::header`]).
type Body = (Bytes, Option<(&'static str, String)>);

struct Level {
    protocol: Protocol,
    target: String,
    /// The request bodies, taken in turn, each with its extra header.
    bodies: Arc<[Body]>,
    /// The gRPC request, for the gRPC protocols.
    grpc: Option<grpc::Request>,
    /// HTTP/2 connections the gRPC calls share (0: one each).
    grpc_connections: usize,
    concurrency: usize,
}

impl Level {
    /// Sends `requests` requests (or runs for `duration`) at this level's concurrency.
    async fn run(&self, requests: u64, duration: Option<Duration>) -> anyhow::Result<LevelReport> {
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(self.concurrency).build_http();
        let budget = Arc::new(AtomicI64::new(if duration.is_some() { i64::MAX } else { requests as i64 }));
        let started = Instant::now();
        let stop_at = duration.map(|d| started + d);
        let turn = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(self.concurrency);
        let mut connections = Vec::new();
        if self.grpc.is_some() {
            let n = if self.grpc_connections == 0 { self.concurrency } else { self.grpc_connections };
            for _ in 0..n.min(self.concurrency) {
                connections
                    .push(grpc::connect(&self.target).await.with_context(|| format!("connecting to {}", self.target))?);
            }
        }
        for i in 0..self.concurrency {
            if let Some(req) = &self.grpc {
                let conn = connections[i % connections.len()].clone();
                tasks.push(tokio::spawn(grpc::task(conn, req.clone(), budget.clone(), stop_at)));
                continue;
            }
            let (client, budget, bodies, turn, protocol) =
                (client.clone(), budget.clone(), self.bodies.clone(), turn.clone(), self.protocol);
            let target: hyper::Uri = self.target.parse()?;
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut fail) = (Vec::new(), Vec::new());
                while budget.fetch_sub(1, Ordering::Relaxed) > 0 && stop_at.is_none_or(|t| Instant::now() < t) {
                    let (body, extra) = &bodies[turn.fetch_add(1, Ordering::Relaxed) % bodies.len()];
                    let mut req = hyper::Request::post(target.clone()).header("content-type", "application/json");
                    if let Some((name, value)) = extra {
                        req = req.header(*name, value.as_str());
                    }
                    let req = req.body(Full::new(body.clone())).expect("static request parts");
                    let t0 = Instant::now();
                    match client.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let json_len = resp
                                .headers()
                                .get("inference-header-content-length")
                                .and_then(|v| v.to_str().ok()?.parse().ok());
                            let bytes = resp.into_body().collect().await.map(|b| b.to_bytes());
                            match bytes {
                                Ok(b) if status.is_success() && payload::looks_valid(protocol, &b, json_len) => {
                                    lat.push(t0.elapsed().as_micros() as u64)
                                }
                                Ok(_) => fail.push(status.as_u16().to_string()),
                                Err(_) => fail.push("body".to_string()),
                            }
                        }
                        Err(e) if e.is_connect() => fail.push("connect".into()),
                        Err(_) => fail.push("transport".into()),
                    }
                }
                (lat, fail)
            }));
        }
        let (mut lat, mut fail) = (Vec::new(), Vec::new());
        for t in tasks {
            let (l, f) = t.await?;
            lat.extend(l);
            fail.extend(f);
        }
        Ok(summarise(self.concurrency, started.elapsed().as_secs_f64(), lat, fail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_without_the_flag() {
        for ok in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80", "http://127.3.4.5"] {
            assert!(check_target(&ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.1:8080", "http://example.com", "http://192.168.1.2"] {
            let err = check_target(&bad.parse().unwrap(), false).unwrap_err().to_string();
            assert!(err.contains("not a loopback"), "{err}");
            assert!(check_target(&bad.parse().unwrap(), true).is_ok());
        }
        assert!(check_target(&"https://127.0.0.1".parse().unwrap(), false).is_err());
    }
}
