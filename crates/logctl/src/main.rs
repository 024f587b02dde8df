//! logctl: the operator's command line for logfleet.
//!
//! - `logctl demo`: the fleet's main job on local services: runs an ingest-worker and an
//!   archive-worker, publishes a sample load, flushes one finished episode and prints what
//!   landed in MongoDB and S3.
//! - `logctl flush EPISODE`: asks the archive-workers to archive a finished episode's final
//!   partial chunk.
//! - `logctl topology`: declares the exchanges and queues (idempotent) and prints them.
//! - `logctl stats EPISODE`: prints an episode's LogMetadata.
//!
//! Settings come from the same layered configuration as the workers (`LOGFLEET__*`).

mod demo;

use anyhow::Context;
use clap::{Parser, Subcommand};
use logfleet::amqp::{ConfirmedPublisher, Topology};
use logfleet::archive::{ArchiveKind, request_archive};
use logfleet::config::Settings;
use logfleet::domain::EpisodeId;
use logfleet::mongo::MongoStore;

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
    /// Archive the final partial chunk of a finished episode (publishes a flush request).
    Flush {
        /// The episode id.
        episode: String,
    },
    /// Declare the exchanges and queues (idempotent) and print their names.
    Topology,
    /// Print an episode's LogMetadata as JSON.
    Stats {
        /// The episode id.
        episode: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    logfleet::telemetry::init(&settings.telemetry);
    match cli.command {
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Flush { episode } => {
            let ep = EpisodeId::parse(&episode)?;
            let topology = Topology::new(&settings.amqp);
            let conn = logfleet::amqp::connect(&settings.amqp, "logctl").await?;
            topology.declare(&conn).await?;
            let publisher = ConfirmedPublisher::open(&conn).await?;
            request_archive(&publisher, &topology, &ep, ArchiveKind::Flush).await?;
            println!("flush of {ep} requested on {}", topology.archive_exchange);
            Ok(())
        }
        Command::Topology => {
            let topology = Topology::new(&settings.amqp);
            let conn = logfleet::amqp::connect(&settings.amqp, "logctl").await?;
            topology
                .declare(&conn)
                .await
                .context("declaring the topology")?;
            println!(
                "exchange {} (x-consistent-hash, routing key = episodeId)",
                topology.logs_exchange
            );
            for q in &topology.partition_queues {
                println!(
                    "  queue {q} ({}, one exclusive consumer)",
                    topology.partition_queue_type
                );
            }
            println!(
                "exchange {} -> queue {}",
                topology.dead_letter_exchange, topology.dead_letter_queue
            );
            println!(
                "exchange {} -> queue {}",
                topology.archive_exchange, topology.archive_queue
            );
            println!(
                "exchange {} -> queue {}",
                topology.archive_dead_letter_exchange, topology.archive_dead_letter_queue
            );
            Ok(())
        }
        Command::Stats { episode } => {
            let ep = EpisodeId::parse(&episode)?;
            let store = MongoStore::connect(&settings.mongo).await?;
            let meta = store
                .metadata_of(&ep)
                .await?
                .with_context(|| format!("no LogMetadata for {ep}"))?;
            let mut doc = bson::to_document(&meta)?;
            doc.remove("recentMessages");
            println!(
                "{}",
                serde_json::to_string_pretty(&bson::Bson::Document(doc).into_relaxed_extjson())?
            );
            Ok(())
        }
    }
}
