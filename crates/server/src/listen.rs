//! The HTTP(S) listener: connection and header limits, optional TLS, graceful shutdown with a
//! deadline. (`axum::serve` offers none of the limits, so connections are served here with
//! hyper directly.)
//!
//! - At most `max_connections` connections at once; one more is closed at accept (before any
//!   byte is read), so a flood of idle sockets cannot exhaust memory or file descriptors.
//! - Request heads larger than `max_header_bytes` are answered 431 by hyper; a head must arrive
//!   within `header_timeout` (slowloris).
//! - With a certificate and key, every connection is TLS (rustls); the handshake must finish
//!   within `header_timeout` too.
//! - On shutdown: stop accepting at once, let in-flight requests and streams finish, close idle
//!   keep-alive connections, and give up after `shutdown_timeout`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

pub use rustls::ServerConfig as TlsConfig;

/// Connection-level limits and TLS.
#[derive(Clone)]
pub struct ListenOptions {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// A rustls server config from PEM files (certificate chain, private key).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains as described above.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .keep_alive(true);
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = opts.max_connections, "connection refused: at the connection limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        let (acceptor, handshake_timeout) = (acceptor.clone(), opts.header_timeout);
        tokio::spawn(async move {
            let result = match acceptor {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => watcher.watch(http.serve_connection(TokioIo::new(tls), service)).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    match tokio::time::timeout(opts.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections finished"),
        Err(_) => tracing::warn!(
            seconds = opts.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed with requests still running; closing them"
        ),
    }
    Ok(())
}
