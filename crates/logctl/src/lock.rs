//! `logctl lock show|release`: look at and repair an episode's archive lock.
//!
//! The archive lock is `LogMetadata.isArchiving` plus `archiveLease {owner, expiresAt}`. An
//! archive-worker takes over an expired lease by itself; `lock release --force` is for a lease
//! that must not wait for its expiry. Both go through `logfleet::mongo::lease`, the archive-worker's
//! own lock code (a compare-and-set on `version`). A worker still running under the released
//! lease is fenced: its next commit checks that it owns the lock, finds it does not, and stops
//! without committing.

use anyhow::Context;
use logfleet::config::Settings;
use logfleet::domain::EpisodeId;
use logfleet::mongo::MongoStore;
use logfleet::mongo::lease::{ForcedRelease, describe_lease};

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
            println!(
                "lock:         {}",
                describe_lease(&m, bson::DateTime::now())
            );
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
            match store.force_release_archive_lease(&ep).await? {
                ForcedRelease::Unknown => anyhow::bail!("no LogMetadata for {ep}"),
                ForcedRelease::NotLocked { version } => {
                    println!("{ep}: not locked (version {version}); nothing to do");
                }
                ForcedRelease::Released { before, version } => {
                    tracing::warn!(episode = %ep, previous = %before, "archive lock released by force");
                    println!(
                        "{ep}: released the archive lock ({before}); isArchiving false, archiveLease removed, now version {version}"
                    );
                }
            }
            Ok(())
        }
    }
}
