//! The `aiserve` binary: `serve` a model repository, `train` a model into it.

mod train;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "aiserve", version, about = "Train and serve AI models from one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model and publish it as a new version in a repository.
    Train(train::TrainArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(args) => train::run(args),
    }
}
