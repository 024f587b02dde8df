//! logctl: the operator's command line for logfleet.
//!
//! - `logctl demo`: the fleet's main job on local services: runs an ingest-worker and an
//!   archive-worker, publishes a sample load, flushes one finished episode and prints what
//!   landed in MongoDB and S3.
//! - `logctl archive flush EPISODE`: asks the archive-workers to archive a finished episode's
//!   final partial chunk (`archive.rs`).
//! - `logctl topology [--check]`: declares the exchanges and queues (idempotent) and prints
//!   them, or only checks that they exist.
//! - `logctl publish [FILE]`: publishes NDJSON through the producer library (`publish.rs`).
//! - `logctl dlq list|peek|replay|purge`: the logs dead-letter queue (`dlq.rs`).
//! - `logctl lock show|release`: an episode's archive lock (`lock.rs`).
//! - `logctl retention plan|run|set|clear`: expiry by hand and per-episode limits
//!   (`retention.rs`).
//! - Reading (`read.rs`, over `logfleet::query`, both tiers): `logctl logs EPISODE` with
//!   filters, `logctl tail [-f] EPISODE`, `logctl export EPISODE --out FILE`,
//!   `logctl stats EPISODE`, `logctl chunks EPISODE`, `logctl episodes`; tables or `--json`.
//!
//! Settings come from the same layered configuration as the workers (`LOGFLEET__*`).

mod archive;
mod demo;
mod dlq;
mod lock;
mod publish;
mod read;
mod retention;
mod topology;

use clap::{Parser, Subcommand};
use logfleet::config::Settings;

#[derive(Parser)]
#[command(name = "logctl", version, about = "Operate a logfleet fleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run both workers on the configured services with a sample load, then print a summary.
    Demo(demo::DemoArgs),
    /// Declare the exchanges and queues (idempotent) and print them; `--check` only verifies.
    Topology(topology::TopologyArgs),
    /// Publish NDJSON logs (a file or standard input) with confirms.
    Publish(publish::PublishArgs),
    /// Inspect, replay or purge the logs dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Archive operations.
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// Show or release an episode's archive lock.
    Lock {
        #[command(subcommand)]
        command: lock::LockCommand,
    },
    /// Plan or run a retention pass; set or clear an episode's own limits.
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
    /// An episode's logs from both tiers, with filters and paging.
    Logs(read::LogsArgs),
    /// The latest logs of an episode; `-f` keeps printing new ones.
    Tail(read::TailArgs),
    /// Every matching log of an episode to an NDJSON or JSONL.gz file.
    Export(read::ExportArgs),
    /// An episode's statistics (LogMetadata).
    Stats(read::EpisodeArgs),
    /// An episode's chunks (LogChunk).
    Chunks(read::ChunksArgs),
    /// The episodes, by id.
    Episodes(read::EpisodesArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    logfleet::telemetry::init(&settings.telemetry);
    match cli.command {
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Archive {
            command: archive::ArchiveCommand::Flush { episode },
        } => archive::flush(settings, &episode).await,
        Command::Topology(args) => topology::run(settings, args).await,
        Command::Publish(args) => publish::run(settings, args).await,
        Command::Dlq { command } => dlq::run(settings, command).await,
        Command::Lock { command } => lock::lock(settings, command).await,
        Command::Retention { command } => retention::run(settings, command).await,
        Command::Logs(args) => read::logs(settings, args).await,
        Command::Tail(args) => read::tail(settings, args).await,
        Command::Export(args) => read::export(settings, args).await,
        Command::Stats(args) => read::stats(settings, args).await,
        Command::Chunks(args) => read::chunks(settings, args).await,
        Command::Episodes(args) => read::episodes(settings, args).await,
    }
}
