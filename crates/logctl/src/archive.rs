//! `logctl archive flush`: ask the archive-workers to archive a finished episode's last,
//! partial chunk.

use logfleet::amqp::{ConfirmedPublisher, Topology, request_archive};
use logfleet::config::Settings;
use logfleet::contract::ArchiveKind;
use logfleet::domain::EpisodeId;

#[derive(clap::Subcommand)]
pub enum ArchiveCommand {
    /// Archive the final partial chunk of a finished episode (publishes a flush request to the
    /// archive-workers).
    Flush {
        /// The episode id.
        episode: String,
    },
}

/// Publishes a flush request for `episode`.
pub async fn flush(settings: Settings, episode: &str) -> anyhow::Result<()> {
    let ep = EpisodeId::parse(episode)?;
    let topology = Topology::new(&settings.amqp);
    let conn = logfleet::amqp::connect(&settings.amqp, "logctl").await?;
    topology.declare(&conn).await?;
    let publisher = ConfirmedPublisher::open(&conn).await?;
    request_archive(&publisher, &topology, &ep, ArchiveKind::Flush).await?;
    println!("flush of {ep} requested on {}", topology.archive_exchange);
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
