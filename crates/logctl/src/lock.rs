//! `logctl lock` and `logctl archive flush`: repair and drive an episode's archiving.
//!
//! The archive lock is `LogMetadata.isArchiving` plus `archiveLease {owner, expiresAt}`. An
//! archive-worker takes over an expired lease by itself; `lock release --force` is for a lease
//! that must not wait for its expiry. Like every LogMetadata writer it replaces the whole
//! document by compare-and-set on `version` (bumping it), retrying when a worker wrote in
//! between. A worker still running under the released lease is fenced: its next commit checks
//! that it owns the lock, finds it does not, and stops without committing.

use anyhow::Context;
use logfleet::amqp::{ConfirmedPublisher, Topology};
use logfleet::archive::{ArchiveKind, request_archive};
use logfleet::config::Settings;
use logfleet::domain::EpisodeId;
use logfleet::model::LogMetadata;
use logfleet::mongo::MongoStore;

#[derive(clap::Subcommand)]
pub enum LockCommand {
    /// Print the archive lock of an episode: held or not, owner, expiry, whether expired.
    Show {
        /// The episode id.
        episode: String,
    },
    /// Release the archive lock of an episode, whoever holds it.
    Release {
        /// The episode id.
        episode: String,
        /// Required: releasing a live lock lets another worker start at once.
        #[arg(long, required = true)]
        force: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum ArchiveCommand {
    /// Archive the final partial chunk of a finished episode (publishes a flush request to the
    /// archive-workers).
    Flush {
        /// The episode id.
        episode: String,
    },
}

fn describe(m: &LogMetadata) -> String {
    let now = bson::DateTime::now();
    match &m.archive_lease {
        None if !m.is_archiving => "not locked".into(),
        None => "isArchiving is set without a lease (stuck)".into(),
        Some(l) => {
            let left_ms = l.expires_at.timestamp_millis() - now.timestamp_millis();
            let state = if left_ms > 0 {
                format!("live, expires in {:.1} s", left_ms as f64 / 1000.0)
            } else {
                format!("EXPIRED {:.1} s ago", -left_ms as f64 / 1000.0)
            };
            format!(
                "{} by {} until {} ({state})",
                if m.is_archiving {
                    "locked"
                } else {
                    "lease without isArchiving"
                },
                l.owner,
                l.expires_at
                    .try_to_rfc3339_string()
                    .unwrap_or_else(|_| l.expires_at.to_string()),
            )
        }
    }
}

pub async fn lock(settings: Settings, command: LockCommand) -> anyhow::Result<()> {
    let store = MongoStore::connect(&settings.mongo).await?;
    match command {
        LockCommand::Show { episode } => {
            let ep = EpisodeId::parse(&episode)?;
            let m = store
                .metadata_of(&ep)
                .await?
                .with_context(|| format!("no LogMetadata for {ep}"))?;
            println!("episode:      {ep}");
            println!("lock:         {}", describe(&m));
            println!("isArchiving:  {}", m.is_archiving);
            match &m.archive_lease {
                Some(l) => {
                    let expired = l.expires_at <= bson::DateTime::now();
                    println!("owner:        {}", l.owner);
                    println!(
                        "expiresAt:    {}",
                        l.expires_at
                            .try_to_rfc3339_string()
                            .unwrap_or_else(|_| l.expires_at.to_string())
                    );
                    println!("expired:      {}", if expired { "yes" } else { "no" });
                }
                None => println!("owner:        -"),
            }
            println!("version:      {}", m.version);
            println!(
                "logs:         {} total, {} hot, {} archived in {} chunks",
                m.total_logs, m.current_logs, m.archived_logs, m.total_chunks
            );
            Ok(())
        }
        LockCommand::Release { episode, force } => {
            anyhow::ensure!(force, "--force is required");
            let ep = EpisodeId::parse(&episode)?;
            loop {
                let m = store
                    .metadata_of(&ep)
                    .await?
                    .with_context(|| format!("no LogMetadata for {ep}"))?;
                if !m.is_archiving && m.archive_lease.is_none() {
                    println!("{ep}: not locked (version {}); nothing to do", m.version);
                    return Ok(());
                }
                let before = describe(&m);
                let mut next = m.clone();
                next.is_archiving = false;
                next.archive_lease = None;
                next.version += 1;
                next.updated_at = bson::DateTime::now();
                if store.replace_metadata(m.version, &next).await? {
                    tracing::warn!(episode = %ep, previous = %before, "archive lock released by force");
                    println!(
                        "{ep}: released the archive lock ({before}); isArchiving false, archiveLease removed, version {} -> {}",
                        m.version, next.version
                    );
                    return Ok(());
                }
                // A worker wrote in between: read again and retry.
            }
        }
    }
}

/// Publishes a flush request for `episode` (`logctl archive flush`, alias `logctl flush`).
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
