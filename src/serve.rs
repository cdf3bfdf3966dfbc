//! `aiserve serve`: serve a model repository over HTTP until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiserve_models::CandleLoader;
use aiserve_server::auth::{Auth, KeyLimits};
use aiserve_server::state::TextLimits;
use aiserve_server::{Limits, ServeOptions};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Model repository (`<repo>/<model>/<version>/`); the bundled `models/` by default.
    #[arg(long, env = "AISERVE_REPO", default_value = "models")]
    pub repo: PathBuf,
    /// Address to listen on. The default is loopback only; use 0.0.0.0 to expose the server.
    #[arg(long, env = "AISERVE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// How often to rescan the repository for new or removed versions, in milliseconds. Shorter
    /// picks up new versions sooner at the cost of more directory reads.
    #[arg(long, env = "AISERVE_POLL_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
    /// Largest request body in bytes (413 beyond). Bigger allows larger batches and pictures but
    /// lets each request hold more memory.
    #[arg(long, env = "AISERVE_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Longest a request may wait for its model (queue and compute) before it is answered 504.
    /// Clients can shorten it per request with the `x-request-timeout-ms` header.
    #[arg(long, env = "AISERVE_REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Cut texts longer than an embedding model's token limit instead of refusing them with 400
    /// (TEI's `--auto-truncate`). Off by default, so no input is silently shortened.
    #[arg(long, env = "AISERVE_AUTO_TRUNCATE")]
    pub auto_truncate: bool,
    /// Most texts one embeddings request may hold.
    #[arg(long, env = "AISERVE_MAX_INPUTS", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inputs: u64,
    /// API keys, one per line: `<key> <scope>[,<scope>...] [rps=N] [concurrency=N]` (scopes:
    /// infer, admin, metrics). Without it the server is open: keep it on loopback.
    #[arg(long, env = "AISERVE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Default requests per second per key (0: unlimited); a key's `rps=N` overrides it.
    #[arg(long, env = "AISERVE_KEY_RPS", default_value_t = 0)]
    pub key_rps: u32,
    /// Default requests in flight per key (0: unlimited); a key's `concurrency=N` overrides it.
    #[arg(long, env = "AISERVE_KEY_CONCURRENCY", default_value_t = 0)]
    pub key_concurrency: u32,
    /// Model that `/classify` uses when the request does not name one.
    #[arg(long, env = "AISERVE_DEFAULT_MODEL", default_value = "digits")]
    pub default_model: String,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.repo.is_dir() {
        anyhow::bail!(
            "model repository {} is not a directory (run from the aiserve checkout, or pass --repo)",
            args.repo.display()
        );
    }
    let defaults = KeyLimits {
        requests_per_second: std::num::NonZeroU32::new(args.key_rps),
        concurrency: std::num::NonZeroU32::new(args.key_concurrency),
    };
    let auth = match &args.api_keys_file {
        Some(path) => Auth::from_file(path, defaults).map_err(|e| anyhow::anyhow!("--api-keys-file: {e}"))?,
        None => Auth::open(),
    };
    if auth.is_open() && !args.addr.ip().is_loopback() {
        tracing::warn!(addr = %args.addr, "no --api-keys-file: every route is open to anyone who can reach this address");
    } else if !auth.is_open() {
        tracing::info!(keys = auth.key_count(), "API keys required");
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    tracing::info!(addr = %listener.local_addr()?, repo = %args.repo.display(), "aiserve listening");
    let opts = ServeOptions {
        repo: args.repo,
        auth: Arc::new(auth),
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            text: TextLimits { max_inputs: args.max_inputs as usize, auto_truncate: args.auto_truncate },
        },
        default_model: args.default_model,
    };
    aiserve_server::serve(opts, Arc::new(CandleLoader::cpu()), listener, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
