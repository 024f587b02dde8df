//! The periodic sweep: archives what no threshold event asked for (a lost event, an expired lock).

use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use crate::config::ArchiveSettings;
use crate::domain::EpisodeId;
use crate::object_store::ObjectStore;

use super::{ArchiveError, ArchiveOutcome, ChunkArchiver};
use crate::contract::ArchiveKind;

impl<S: ObjectStore> ChunkArchiver<S> {
    /// Archives every episode at or over its threshold (or with an expired lock), found through
    /// the `currentLogs` index.
    pub async fn sweep(&self) -> Result<u32, ArchiveError> {
        let now = DateTime::now();
        let due: Vec<EpisodeId> = self
            .store
            .episodes_with_hot_logs()
            .await?
            .into_iter()
            .filter(|m| {
                let expired_lock = m.is_archiving && !m.lock_held_at(now);
                m.current_logs >= i64::from(m.archive_threshold) || expired_lock
            })
            .map(|m| m.episode_id)
            .collect();
        let mut chunks = 0;
        for ep in due {
            if let ArchiveOutcome::Done { chunks: c, .. } =
                self.archive_episode(&ep, ArchiveKind::Threshold).await?
            {
                chunks += c;
            }
        }
        Ok(chunks)
    }
}

pub(super) async fn sweep_loop<S: ObjectStore + 'static>(
    archiver: Arc<ChunkArchiver<S>>,
    s: ArchiveSettings,
    cancel: CancellationToken,
) -> Result<(), ArchiveError> {
    let mut tick = tokio::time::interval(Duration::from_secs(s.sweep_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match archiver.sweep().await {
            Ok(0) => {}
            Ok(chunks) => tracing::info!(chunks, "sweep archived chunks"),
            Err(e @ ArchiveError::Injected(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "sweep failed; next sweep retries"),
        }
    }
}
