//! The `aiserve` binary: `serve` a model repository, `train` or `pull` a model into it, `bench` a
//! server, ask one for its `health`.

mod bench;
mod health;
mod loader;
mod pull;
mod serve;
mod train;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "aiserve", version, about = "Train and serve AI models from one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` (human, coloured on a terminal) or `json` (one object per
    /// line, for log shippers). `RUST_LOG` sets the level (default `info`).
    #[arg(long, global = true, env = "AISERVE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a model repository over HTTP (classify, KServe v2, TF Serving REST, OpenAI) and gRPC
    /// (KServe v2, TF Serving).
    Serve(Box<serve::ServeArgs>),
    /// Train a model and publish it as a new version in a repository.
    Train(train::TrainArgs),
    /// Download a model from the Hugging Face Hub and publish it as a new version.
    Pull(pull::PullArgs),
    /// Load-test a running server over HTTP or gRPC: throughput and latency percentiles per
    /// concurrency level.
    Bench(bench::BenchArgs),
    /// Ask a running server whether it is live (or ready); exit 0 if so, 1 if not (a
    /// container's HEALTHCHECK).
    Health(health::HealthArgs),
}

fn main() -> anyhow::Result<()> {
    aiserve_models::configure_threads();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }
    match cli.command {
        Command::Serve(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve::run(*args))
        }
        Command::Train(args) => train::run(args),
        Command::Pull(args) => pull::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Health(args) => health::run(args),
    }
}
