//! The periodic sweep: archives what no threshold event asked for (a lost event, an expired
//! lock, a commit whose follow-up steps a dead worker left), and expires old dedup records.
//!
//! It reads only the episodes flagged `sweepDue` (an indexed field), so its cost grows with the
//! episodes that are due, not with all episodes. A failing episode is isolated: the sweep goes
//! on with the others, and the failing one waits longer each time (doubling, up to 10 minutes)
//! before it is tried again. Episodes that failed three times in a row are reported by name
//! in `logfleet_archive_stuck_episode{episode}` (at most [`STUCK_LABELS`] of them).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use super::{ArchiveError, ArchiveOutcome, ChunkArchiver};
use crate::config::ArchiveSettings;
use crate::contract::ArchiveKind;
use crate::domain::EpisodeId;
use crate::object_store::ObjectStore;

/// Consecutive failures after which an episode counts as stuck.
const STUCK_AFTER: u32 = 3;
/// Most episodes named in the stuck-episode metric at once (metric labels stay bounded).
pub const STUCK_LABELS: usize = 100;
/// Longest wait before a failing episode is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// An episode's failures since its last success.
#[derive(Debug, Clone, Copy)]
pub(super) struct Failing {
    /// Failures in a row.
    count: u32,
    /// Not tried again before this.
    retry_at: Instant,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Episodes flagged due.
    pub due: usize,
    /// Chunks committed.
    pub chunks: u32,
    /// Episodes whose run failed this time.
    pub failed: usize,
    /// Episodes skipped, waiting after earlier failures.
    pub waiting: usize,
}

impl<S: ObjectStore> ChunkArchiver<S> {
    /// Archives every episode flagged due; one failing episode does not stop the others.
    pub async fn sweep(&self) -> Result<SweepReport, ArchiveError> {
        let mut report = SweepReport::default();
        let mut due: Vec<EpisodeId> = self
            .store
            .episodes_due()
            .await?
            .into_iter()
            .map(|m| m.episode_id)
            .collect();
        report.due = due.len();
        let now = Instant::now();
        {
            // Failing episodes last, so they never stand in front of healthy ones.
            let failing = self.failing.lock().expect("not poisoned");
            due.sort_by_key(|ep| failing.get(ep).map_or(0, |f| f.count));
        }
        for ep in due {
            let waiting = self
                .failing
                .lock()
                .expect("not poisoned")
                .get(&ep)
                .is_some_and(|f| f.retry_at > now);
            if waiting {
                report.waiting += 1;
                continue;
            }
            match self.archive_episode(&ep, ArchiveKind::Threshold).await {
                Ok(outcome) => {
                    if let ArchiveOutcome::Done { chunks, .. } = outcome {
                        report.chunks += chunks;
                    }
                    self.note_success(&ep);
                }
                Err(e @ ArchiveError::Injected(_)) => return Err(e),
                Err(e) => {
                    report.failed += 1;
                    self.note_failure(&ep, &e);
                }
            }
        }
        // Dedup records past the horizon go.
        let horizon = self.dedup_horizon.as_millis() as i64;
        let before = DateTime::from_millis(DateTime::now().timestamp_millis() - horizon);
        match self.store.expire_archived_messages(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "expired dedup records of archived messages"),
            Err(e) => {
                tracing::warn!(error = %e, "expiring dedup records failed; the next sweep retries")
            }
        }
        Ok(report)
    }

    /// Forgets an episode's failures.
    pub(super) fn note_success(&self, ep: &EpisodeId) {
        if self
            .failing
            .lock()
            .expect("not poisoned")
            .remove(ep)
            .is_some_and(|f| f.count >= STUCK_AFTER)
        {
            let _ = self
                .metrics
                .stuck_episode
                .remove_label_values(&[ep.as_str()]);
            tracing::info!(episode = %ep, "episode archives again");
        }
        self.metrics.stuck_episodes.set(self.stuck_count() as i64);
    }

    /// Counts a failure of an episode's run and sets when it is tried next.
    pub(super) fn note_failure(&self, ep: &EpisodeId, e: &ArchiveError) {
        let count = {
            let mut failing = self.failing.lock().expect("not poisoned");
            let f = failing.entry(ep.clone()).or_insert(Failing {
                count: 0,
                retry_at: Instant::now(),
            });
            f.count += 1;
            let wait =
                (self.sweep_interval * 2u32.saturating_pow(f.count.min(16))).min(MAX_BACKOFF);
            f.retry_at = Instant::now() + wait;
            f.count
        };
        tracing::warn!(episode = %ep, failures = count, error = %e, "archive run failed; other episodes go on");
        if count == STUCK_AFTER && self.stuck_count() <= STUCK_LABELS {
            self.metrics
                .stuck_episode
                .with_label_values(&[ep.as_str()])
                .set(1);
            tracing::error!(episode = %ep, error = %e, "episode stuck: its archive runs keep failing");
        }
        self.metrics.stuck_episodes.set(self.stuck_count() as i64);
    }

    fn stuck_count(&self) -> usize {
        self.failing
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|f| f.count >= STUCK_AFTER)
            .count()
    }
}

/// The failures of the episodes this worker archives, by episode.
pub(super) type FailingEpisodes = std::sync::Mutex<HashMap<EpisodeId, Failing>>;

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
            Ok(r) if r.chunks > 0 || r.failed > 0 => {
                tracing::info!(
                    due = r.due,
                    chunks = r.chunks,
                    failed = r.failed,
                    waiting = r.waiting,
                    "sweep"
                )
            }
            Ok(_) => {}
            Err(e @ ArchiveError::Injected(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "sweep failed; next sweep retries"),
        }
    }
}
