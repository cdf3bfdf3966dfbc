//! The listeners: connection and header limits, optional TLS, graceful shutdown with a
//! deadline. (`axum::serve` offers none of the limits, so connections are served here with
//! hyper directly.) The REST port speaks HTTP/1.1 ([`serve`]); the gRPC port speaks HTTP/2
//! ([`serve_wire`] with [`Wire::Http2`]: prior knowledge in clear text, ALPN `h2` under TLS), with
//! the same limits, TLS and drain.
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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// Which HTTP a listener speaks.
#[derive(Clone, Debug)]
pub enum Wire {
    /// HTTP/1.1 with keep-alive (the REST protocols).
    Http1,
    /// HTTP/2 (gRPC).
    Http2(Http2Options),
}

impl Wire {
    /// How logs name the listener.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http1 => "http",
            Self::Http2(_) => "grpc",
        }
    }
}

/// HTTP/2 connection settings of the gRPC listener.
#[derive(Clone, Debug)]
pub struct Http2Options {
    /// Most streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged (`None`: never); a ping unanswered within
    /// `keepalive_timeout` closes it, so half-open connections do not hold slots forever.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Default for Http2Options {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
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

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown` resolves, then drains as
/// described above.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_wire(listener, app, opts, Wire::Http1, shutdown).await
}

/// The connection builders of one listener.
#[derive(Clone)]
enum Conn {
    Http1(hyper::server::conn::http1::Builder),
    Http2(hyper::server::conn::http2::Builder<TokioExecutor>),
}

impl Conn {
    fn new(wire: &Wire, opts: &ListenOptions) -> Self {
        match wire {
            Wire::Http1 => {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(opts.header_timeout)
                    .max_buf_size(opts.max_header_bytes.max(8192))
                    .keep_alive(true);
                Self::Http1(http)
            }
            Wire::Http2(h2) => {
                let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                http.timer(TokioTimer::new())
                    .max_concurrent_streams(h2.max_concurrent_streams)
                    .max_header_list_size(opts.max_header_bytes.max(8192) as u32)
                    .keep_alive_interval(h2.keepalive_interval)
                    .keep_alive_timeout(h2.keepalive_timeout);
                Self::Http2(http)
            }
        }
    }

    /// Serves one connection until it closes or, after shutdown began, drains.
    async fn drive<I>(&self, io: I, app: Router, watcher: hyper_util::server::graceful::Watcher) -> Result<(), String>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(app);
        let io = TokioIo::new(io);
        match self {
            Self::Http1(b) => watcher.watch(b.serve_connection(io, service)).await.map_err(|e| e.to_string()),
            Self::Http2(b) => watcher.watch(b.serve_connection(io, service)).await.map_err(|e| e.to_string()),
        }
    }
}

/// Whether the 24-byte HTTP/2 client preface has arrived within `limit` (peeked, not read).
async fn preface_within(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    const PREFACE: usize = 24;
    let wait = async {
        let mut buf = [0u8; PREFACE];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= PREFACE => return true,
                // Part of it: peek answers at once until more arrives, so pause between looks.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

/// Serves `app` speaking `wire` on `listener` until `shutdown` resolves, then drains: HTTP/1.1
/// connections close once idle, HTTP/2 connections get GOAWAY and finish their open streams.
pub async fn serve_wire(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    wire: Wire,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_wire_draining(listener, app, opts, wire, std::future::pending(), shutdown).await
}

/// [`serve_wire`], and when `draining` resolves (shutdown has begun but the listener still
/// accepts, see `ServeOptions::drain_delay`), the HTTP/2 connections open then get GOAWAY: their
/// clients open new connections, which a load balancer sends to other replicas, while the
/// streams already open finish. (HTTP/1.1 responses say `Connection: close` meanwhile.)
pub async fn serve_wire_draining(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    wire: Wire,
    draining: impl std::future::Future<Output = ()>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let mut graceful = GracefulShutdown::new();
    // Connections told to go away when draining began, finishing their streams.
    let mut going_away: Option<tokio::task::JoinHandle<()>> = None;
    let goaway = matches!(wire, Wire::Http2(_));
    tokio::pin!(draining);
    let conn = Conn::new(&wire, &opts);
    let tls = match (&wire, opts.tls.clone()) {
        // gRPC clients negotiate HTTP/2 by ALPN.
        (Wire::Http2(_), Some(cfg)) => {
            let mut cfg = (*cfg).clone();
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(cfg))
        }
        (_, tls) => tls,
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut draining, if goaway && going_away.is_none() => {
                let open = std::mem::replace(&mut graceful, GracefulShutdown::new());
                going_away = Some(tokio::spawn(open.shutdown()));
                tracing::info!(listener = wire.name(), "draining: GOAWAY sent on the open connections");
                continue;
            }
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
        let (app, conn) = (app.clone(), conn.clone());
        let watcher = graceful.watcher();
        let (acceptor, handshake_timeout) = (acceptor.clone(), opts.header_timeout);
        tokio::spawn(async move {
            let result = match acceptor {
                // An HTTP/2 client speaks first (its preface); one that does not within the
                // header timeout is dropped, as HTTP/1.1's slow heads are.
                None if matches!(conn, Conn::Http2(_)) && !preface_within(&stream, handshake_timeout).await => {
                    tracing::debug!(%peer, "no HTTP/2 preface in time");
                    Ok(())
                }
                None => conn.drive(stream, app, watcher).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => conn.drive(tls, app, watcher).await,
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
    let all = async {
        graceful.shutdown().await;
        if let Some(open) = going_away {
            let _ = open.await;
        }
    };
    match tokio::time::timeout(opts.shutdown_timeout, all).await {
        Ok(()) => tracing::info!(listener = wire.name(), "all connections finished"),
        Err(_) => tracing::warn!(
            listener = wire.name(),
            seconds = opts.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed with requests still running; closing them"
        ),
    }
    Ok(())
}
