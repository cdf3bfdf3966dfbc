//! `aiserve serve` flags (each also an `AISERVE_*` environment variable), grouped by concern,
//! and their translation into the server's options.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiserve_server::auth::{Auth, KeyLimits};
use aiserve_server::listen::{tls_config, ListenOptions};
use aiserve_server::Limits;
use aiserve_server::TextLimits;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Model repository (`<repo>/<model>/<version>/`): a directory (the bundled `models/` by
    /// default) or object storage: `s3://bucket/prefix`, `gs://`, `az://`, or `http(s)://` for a
    /// WebDAV server. Object storage is mirrored into --repo-cache with the credentials of that
    /// cloud's standard environment variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
    /// `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_KEY`, ...); never put them in the URL.
    #[arg(long, env = "AISERVE_REPO", default_value = "models")]
    pub repo: String,
    /// Local directory a repository on object storage is mirrored into (downloaded versions are
    /// loaded from here; what leaves the bucket is deleted here). It must be empty or a mirror
    /// already, and one per server. Default: `$XDG_CACHE_HOME/aiserve/repos/<repository URL>`.
    #[arg(long, env = "AISERVE_REPO_CACHE")]
    pub repo_cache: Option<PathBuf>,
    /// Address to listen on. The default is loopback only; use 0.0.0.0 to expose the server.
    #[arg(long, env = "AISERVE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// gRPC address (KServe v2 `GRPCInferenceService`, health, reflection), beside the HTTP one
    /// like Triton's 8001; `off` serves no gRPC. Shares the HTTP port's TLS, keys and limits.
    #[arg(long, env = "AISERVE_GRPC_ADDR", default_value = "127.0.0.1:8001", value_parser = parse_grpc_addr)]
    pub grpc_addr: GrpcAddr,
    /// Most concurrent calls (HTTP/2 streams) on one gRPC connection.
    #[arg(long, env = "AISERVE_GRPC_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_streams: u32,
    /// Seconds between keepalive pings on an idle gRPC connection (0: never). A ping unanswered
    /// for 20 s closes the connection, so dead peers do not hold connection slots.
    #[arg(long, env = "AISERVE_GRPC_KEEPALIVE_S", default_value_t = 60)]
    pub grpc_keepalive_s: u64,
    /// How often to rescan the repository for new or removed versions, in milliseconds. Shorter
    /// picks up new versions sooner at the cost of more directory reads.
    #[arg(long, env = "AISERVE_POLL_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
    /// Model that `/classify` uses when the request does not name one.
    #[arg(long, env = "AISERVE_DEFAULT_MODEL", default_value = "digits")]
    pub default_model: String,
    /// ONNX Runtime's shared library (`libonnxruntime.so`, 1.22 or newer; PyPI's `onnxruntime`
    /// wheel ships one in onnxruntime/capi/). Opened when the first ONNX version loads; without
    /// it ONNX versions fail to load and say so, everything else is served. Default:
    /// `ORT_DYLIB_PATH`, else the dynamic loader's search path.
    #[arg(long, env = "AISERVE_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// Where gRPC listens, or nowhere.
#[derive(Clone, Copy, Debug)]
pub struct GrpcAddr(pub Option<SocketAddr>);

fn parse_grpc_addr(s: &str) -> Result<GrpcAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(GrpcAddr(None));
    }
    s.parse().map(|a| GrpcAddr(Some(a))).map_err(|e| format!("{e} (an address such as 127.0.0.1:8001, or `off`)"))
}

impl ServeArgs {
    pub fn http2(&self) -> aiserve_server::listen::Http2Options {
        aiserve_server::listen::Http2Options {
            max_concurrent_streams: self.grpc_max_streams,
            keepalive_interval: (self.grpc_keepalive_s > 0).then(|| Duration::from_secs(self.grpc_keepalive_s)),
            ..Default::default()
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Text generation")]
pub struct GenerationArgs {
    /// Memory the KV caches of one generation model may take, in MiB. It bounds how many
    /// tokens its sequences hold together; the longest sequence is also capped by it.
    #[arg(long, env = "AISERVE_KV_CACHE_MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub kv_cache_mb: u64,
    /// Most sequences decoding together in one forward pass (continuous batching).
    #[arg(long, env = "AISERVE_MAX_RUNNING_SEQS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_running_seqs: u64,
    /// Most tokens (decodes plus prompt chunks) in one forward pass.
    #[arg(long, env = "AISERVE_MAX_STEP_TOKENS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_step_tokens: u64,
    /// Most prompt tokens of one sequence per forward pass: long prompts are prefilled in chunks
    /// so running streams keep their pace.
    #[arg(long, env = "AISERVE_PREFILL_CHUNK", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub prefill_chunk: u64,
    /// Most sequences running or waiting per generation model before new requests get 503.
    #[arg(long, env = "AISERVE_MAX_QUEUED_SEQS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_seqs: u64,
    /// Most tokens a decoding sequence guesses ahead from its own context per forward pass
    /// (prompt-lookup speculative decoding: the model verifies them in the same pass, so answers
    /// do not change); it stops for a sequence whose guesses keep failing. 0 turns it off.
    #[arg(long, env = "AISERVE_DRAFT_TOKENS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=16))]
    pub draft_tokens: u64,
    /// Passes decoding more sequences than this draft nothing (many rows already keep the
    /// cores busy, so drafted rows cost what they save).
    #[arg(long, env = "AISERVE_DRAFT_MAX_SEQS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub draft_max_seqs: u64,
    /// Bits GGUF models round activations to before multiplying them with 4-bit weights: 16
    /// answers as f32 does; 8 (llama.cpp's choice) is faster but changes small models' answers.
    #[arg(long, env = "AISERVE_ACTIVATION_BITS", default_value_t = 16, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["8", "16"]), |v: String| v.parse::<u8>().expect("8 or 16")))]
    pub activation_bits: u8,
    /// What KV caches store: f32 answers as transformers' f32 does; f16 (llama.cpp's and vLLM's
    /// choice) holds twice the tokens per --kv-cache-mb and decodes long contexts faster, for a
    /// rounding of keys and values.
    #[arg(long, env = "AISERVE_KV_CACHE_DTYPE", default_value = "f32", value_parser = ["f32", "f16"])]
    pub kv_cache_dtype: String,
}

impl GenerationArgs {
    pub fn kv(&self) -> aiserve_models::llm::kv::KvDtype {
        match self.kv_cache_dtype.as_str() {
            "f16" => aiserve_models::llm::kv::KvDtype::F16,
            _ => aiserve_models::llm::kv::KvDtype::F32,
        }
    }

    pub fn bits(&self) -> aiserve_models::quant::Bits {
        match self.activation_bits {
            8 => aiserve_models::quant::Bits::Eight,
            _ => aiserve_models::quant::Bits::Sixteen,
        }
    }

    pub fn engine(&self) -> aiserve_runtime::generation::engine::EngineConfig {
        aiserve_runtime::generation::engine::EngineConfig {
            kv_cache_bytes: (self.kv_cache_mb as usize) << 20,
            max_seqs: self.max_running_seqs as usize,
            max_step_tokens: self.max_step_tokens as usize,
            prefill_chunk: self.prefill_chunk as usize,
            max_queued: self.max_queued_seqs as usize,
            draft_tokens: self.draft_tokens as usize,
            draft_max_seqs: self.draft_max_seqs as usize,
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
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
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "AISERVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "AISERVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Origins browsers may call from (CORS), comma-separated, `*` for any. Off by default.
    #[arg(long, env = "AISERVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve no playground page at `/` (it holds no data and calls only the public APIs with
    /// the key a person types; turn it off where nobody should browse to the server).
    #[arg(long, env = "AISERVE_NO_PLAYGROUND")]
    pub no_playground: bool,
}

#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest request body in bytes (413 beyond). Bigger allows larger batches and pictures but
    /// lets each request hold more memory.
    #[arg(long, env = "AISERVE_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) in bytes; 431 beyond. At least 8192.
    #[arg(long, env = "AISERVE_MAX_HEADER_BYTES", default_value_t = 16 << 10, value_parser = clap::value_parser!(u64).range(8192..))]
    pub max_header_bytes: u64,
    /// Most client connections at once; more are closed on accept.
    #[arg(long, env = "AISERVE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Longest a request may wait for its model (queue and compute) before it is answered 504.
    /// Clients can shorten it per request with the `x-request-timeout-ms` header.
    #[arg(long, env = "AISERVE_REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// How long a client may take to send its request head (and TLS handshake), in milliseconds.
    #[arg(long, env = "AISERVE_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long readiness answers 503 while requests are still served, in
    /// milliseconds, so load balancers (a Kubernetes Service's endpoints) stop sending before the
    /// listeners close. Set it a little above the readiness probe's period behind a balancer.
    #[arg(long, env = "AISERVE_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests get to finish once the listeners close.
    #[arg(long, env = "AISERVE_SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    pub shutdown_timeout_ms: u64,
    /// Cut texts longer than an embedding model's token limit instead of refusing them with 400
    /// (TEI's `--auto-truncate`). Off by default, so no input is silently shortened.
    #[arg(long, env = "AISERVE_AUTO_TRUNCATE")]
    pub auto_truncate: bool,
    /// Most texts one embeddings request may hold.
    #[arg(long, env = "AISERVE_MAX_INPUTS", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inputs: u64,
    /// Most images one request may hold. Requests beyond a model's `max_batch_size` are split
    /// across forward passes; this bounds how much one request may queue (400 beyond).
    #[arg(long, env = "AISERVE_MAX_REQUEST_IMAGES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_request_images: u64,
    /// Memory, in MiB, that all requests' bodies, parsed JSON, decoded tensors and pictures may
    /// take at once. Beyond it new requests get 503 with Retry-After until others finish; one
    /// request needing more than all of it gets 413. Larger serves more big requests at once,
    /// at the cost of peak memory.
    #[arg(long, env = "AISERVE_MEMORY_BUDGET_MB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(16..))]
    pub memory_budget_mb: u64,
    /// Most requests handled at once, streams included (probes and /metrics aside); more get
    /// 503 with Retry-After. TEI's `max_concurrent_requests`.
    #[arg(long, env = "AISERVE_MAX_CONCURRENT_REQUESTS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,
    /// Picture decodes and long tokenizations running at once (default: the number of cores);
    /// more wait their turn instead of each taking a thread.
    #[arg(long, env = "AISERVE_DECODE_THREADS", value_parser = clap::value_parser!(u64).range(1..))]
    pub decode_threads: Option<u64>,
}

impl SecurityArgs {
    pub fn auth(&self) -> anyhow::Result<Auth> {
        let defaults = KeyLimits {
            requests_per_second: NonZeroU32::new(self.key_rps),
            concurrency: NonZeroU32::new(self.key_concurrency),
        };
        match &self.api_keys_file {
            Some(path) => Auth::from_file(path, defaults).map_err(|e| anyhow::anyhow!("--api-keys-file: {e}")),
            None => Ok(Auth::open()),
        }
    }

    pub fn tls(&self) -> anyhow::Result<Option<Arc<aiserve_server::listen::TlsConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(tls_config(cert, key).map_err(|e| anyhow::anyhow!("TLS: {e}"))?)),
            _ => Ok(None),
        }
    }
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            text: TextLimits { max_inputs: self.max_inputs as usize, auto_truncate: self.auto_truncate },
            max_request_images: self.max_request_images as usize,
            memory_budget_bytes: (self.memory_budget_mb as usize) << 20,
            max_concurrent_requests: self.max_concurrent_requests as usize,
            decode_threads: self.decode_threads.map_or(defaults.decode_threads, |n| n as usize),
        }
    }

    pub fn listen(&self, tls: Option<Arc<aiserve_server::listen::TlsConfig>>) -> ListenOptions {
        ListenOptions {
            max_connections: self.max_connections as usize,
            max_header_bytes: self.max_header_bytes as usize,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            tls,
        }
    }
}
