//! `aiserve serve`: serve a model repository over HTTP and gRPC until SIGINT/SIGTERM.

mod args;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiserve_models::CandleLoader;
use aiserve_onnx::OnnxLoader;
use aiserve_server::ServeOptions;
use aiserve_store::Mirror;
use anyhow::Context;

pub use args::ServeArgs;

use crate::loader::RepoLoader;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (repo, source) = repository(&args)?;
    let shown = source.as_ref().map_or_else(|| repo.display().to_string(), |s| s.location().to_owned());
    let auth = args.security.auth()?;
    let tls = args.security.tls()?;
    if auth.is_open() && !args.addr.ip().is_loopback() {
        tracing::warn!(addr = %args.addr, "no --api-keys-file: every route is open to anyone who can reach this address");
    } else if !auth.is_open() {
        tracing::info!(keys = auth.key_count(), "API keys required");
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, scheme, repo = %shown, "aiserve listening");
    if !args.security.no_playground {
        tracing::info!("playground: open {scheme}://{}/ in a browser", listener.local_addr()?);
    }
    let grpc = match args.grpc_addr.0 {
        None => None,
        Some(addr) => {
            if auth.is_open() && !addr.ip().is_loopback() {
                tracing::warn!(%addr, "no --api-keys-file: every gRPC call is open to anyone who can reach this address");
            }
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding gRPC {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, tls = tls.is_some(), "aiserve gRPC listening");
            Some((l, args.http2()))
        }
    };
    let loader = RepoLoader {
        candle: CandleLoader::cpu().with_activation_bits(args.generation.bits()).with_kv_dtype(args.generation.kv()),
        onnx: OnnxLoader::new(args.onnxruntime, aiserve_models::compute_threads()),
    };
    let opts = ServeOptions {
        repo,
        source: source.map(|s| s as Arc<dyn aiserve_runtime::source::RepoSource>),
        drain_delay: Duration::from_millis(args.limits.drain_delay_ms),
        listen: args.limits.listen(tls),
        cors_origins: args.security.cors_origins,
        playground: !args.security.no_playground,
        auth: Arc::new(auth),
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        limits: args.limits.limits(),
        default_model: args.default_model,
        generation: args.generation.engine(),
        grpc,
    };
    aiserve_server::serve(opts, Arc::new(loader), listener, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The directory the manager scans, and the remote repository it mirrors when `--repo` names
/// object storage.
fn repository(args: &ServeArgs) -> anyhow::Result<(PathBuf, Option<Arc<Mirror>>)> {
    if !aiserve_store::is_remote(&args.repo) {
        let repo = PathBuf::from(&args.repo);
        if !repo.is_dir() {
            anyhow::bail!(
                "model repository {} is not a directory (run from the aiserve checkout, or pass --repo)",
                repo.display()
            );
        }
        return Ok((repo, None));
    }
    let cache = match &args.repo_cache {
        Some(dir) => dir.clone(),
        None => default_cache_root()
            .context("no --repo-cache, and neither XDG_CACHE_HOME nor HOME is set")?
            .join(aiserve_store::cache_dir_name(&args.repo)),
    };
    let mirror = Mirror::open(&args.repo, cache)?;
    tracing::info!(repo = mirror.location(), cache = %mirror.cache().display(), "mirroring the remote repository");
    Ok((mirror.cache().to_owned(), Some(Arc::new(mirror))))
}

fn default_cache_root() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let base =
        xdg.or_else(|| Some(PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache")))?;
    Some(base.join("aiserve").join("repos"))
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
