//! [`ChunkArchiver`]: one episode's archive run, under its lock.

use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use bson::oid::ObjectId;

use tokio_util::sync::CancellationToken;

use crate::chunk::{
    ChunkError, ChunkWriter, EncodedChunk, chunk_key, chunk_number_of_key, episode_key_prefix,
    new_attempt,
};
use crate::config::{ArchiveSettings, Settings};
use crate::domain::EpisodeId;
use crate::metrics::ArchiveMetrics;
use crate::model::{ArchivedMessage, LogChunk, LogEntry, LogMetadata};
use crate::mongo::lease::{LeaseGrant, holds_lease, lease_until};
use crate::mongo::{Decision, MongoStore, RecordedChunk};
use crate::object_store::{ObjectStore, put_verified};

use super::ArchiveError;
use crate::contract::ArchiveKind;
use crate::faults::{FaultPoint, Faults};

/// What one call of [`ChunkArchiver::archive_episode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveOutcome {
    /// The lock was held, and `chunks` chunks holding `logs` logs were committed (maybe 0).
    Done { chunks: u32, logs: i64 },
    /// Another worker holds a live lock.
    Busy,
    /// No LogMetadata exists for the episode.
    Unknown,
    /// A flush found a counted log missing at this sequence number.
    Gap { at: i64 },
}

/// Archives episodes into chunks. Cheap to share: one per worker, behind an `Arc`.
pub struct ChunkArchiver<S: ObjectStore> {
    pub(super) store: MongoStore,
    pub(super) objects: S,
    pub(super) settings: ArchiveSettings,
    pub(super) key_prefix: String,
    /// Instance id written into the lease; tells this worker's locks from others'.
    pub(super) owner: String,
    /// Fault hooks (tests; see [`crate::faults`]).
    pub(super) faults: Faults,
    /// Episodes this process is archiving now: the sweep and the event consumer share one lease
    /// owner, so they must not run on the same episode at once.
    pub(super) running: std::sync::Mutex<std::collections::HashSet<EpisodeId>>,
    /// Episodes whose runs failed lately, and when to try them again (the sweep's isolation).
    pub(super) failing: super::sweep::FailingEpisodes,
    /// How long an archived message's dedup record is kept (`ingest.dedup_horizon_secs`).
    pub(super) dedup_horizon: Duration,
    /// The sweep's period: the unit of a failing episode's backoff.
    pub(super) sweep_interval: Duration,
    /// The retention policy (`[retention]`), for the retention pass.
    pub(super) retention: crate::config::RetentionSettings,
    pub metrics: Arc<ArchiveMetrics>,
}

/// What [`ChunkArchiver::under_lock`] found.
pub(super) enum Locked<T> {
    /// No such episode.
    Unknown,
    /// A run of this process or another worker holds the episode's lock.
    Busy,
    /// The work ran under the lock and gave this.
    Ran(T),
}

/// Removes an episode from [`ChunkArchiver::running`] when its run ends, however it ends.
struct RunningGuard<'a> {
    /// The set the episode is removed from.
    pub(super) set: &'a std::sync::Mutex<std::collections::HashSet<EpisodeId>>,
    /// The episode.
    pub(super) episode: EpisodeId,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("not poisoned").remove(&self.episode);
    }
}

/// Entries handed to the chunk writer's thread at a time.
const BUILD_BATCH: usize = 1_000;

impl<S: ObjectStore> ChunkArchiver<S> {
    pub fn new(store: MongoStore, objects: S, settings: &Settings, owner: String) -> Self {
        Self {
            store,
            objects,
            settings: settings.archive.clone(),
            key_prefix: settings.s3.key_prefix.clone(),
            owner,
            faults: Faults::default(),
            running: Default::default(),
            failing: Default::default(),
            dedup_horizon: Duration::from_secs(settings.ingest.dedup_horizon_secs),
            sweep_interval: Duration::from_secs(settings.archive.sweep_interval_secs.max(1)),
            retention: settings.retention.clone(),
            metrics: Arc::default(),
        }
    }

    /// Installs fault hooks (tests; see [`crate::faults`]). A crash at an archive point leaves
    /// the lock held, as a dead process would.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_until(&self) -> DateTime {
        lease_until(Duration::from_secs(self.settings.lease_secs))
    }

    /// Takes the lock and archives what `kind` asks for. Runs that fail release the lock; a
    /// fault-plan stop leaves it held, like a crash would.
    pub async fn archive_episode(
        &self,
        ep: &EpisodeId,
        kind: ArchiveKind,
    ) -> Result<ArchiveOutcome, ArchiveError> {
        let result = self
            .under_lock(ep, "archive", |meta| self.archive_locked(meta, kind))
            .await
            .map(|locked| match locked {
                Locked::Unknown => ArchiveOutcome::Unknown,
                Locked::Busy => ArchiveOutcome::Busy,
                Locked::Ran(outcome) => outcome,
            });
        let outcome = match &result {
            Ok(ArchiveOutcome::Done { .. }) => "done",
            Ok(ArchiveOutcome::Busy) => "busy",
            Ok(ArchiveOutcome::Unknown) => "unknown",
            Ok(ArchiveOutcome::Gap { .. }) => "gap",
            Err(ArchiveError::Injected(_)) => "stopped",
            Err(_) => "error",
        };
        self.metrics.runs.with_label_values(&[outcome]).inc();
        result
    }

    /// Runs `work` on the episode's LogMetadata under its archive lock: the one skeleton of
    /// every run that moves or removes an episode's data (archive runs, retention expiries).
    /// One run per episode in this process; the lease taken, over an expired one too (counted,
    /// and logged with `purpose`); kept alive in the background for as long as `work` runs,
    /// which stops at once if a renewal finds the lease lost (this process stalled past it and
    /// another worker took over); released after, except after an injected crash (a crashed
    /// process releases nothing).
    pub(super) async fn under_lock<T, F, Fut>(
        &self,
        ep: &EpisodeId,
        purpose: &'static str,
        work: F,
    ) -> Result<Locked<T>, ArchiveError>
    where
        F: FnOnce(LogMetadata) -> Fut,
        Fut: std::future::Future<Output = Result<T, ArchiveError>>,
    {
        if !self
            .running
            .lock()
            .expect("not poisoned")
            .insert(ep.clone())
        {
            return Ok(Locked::Busy);
        }
        let _guard = RunningGuard {
            set: &self.running,
            episode: ep.clone(),
        };
        let lease = Duration::from_secs(self.settings.lease_secs);
        let meta = match self
            .store
            .acquire_archive_lease(ep, &self.owner, lease)
            .await?
        {
            LeaseGrant::Unknown => return Ok(Locked::Unknown),
            LeaseGrant::Busy => return Ok(Locked::Busy),
            LeaseGrant::Granted {
                metadata,
                took_over_from,
            } => {
                if let Some(previous_owner) = took_over_from {
                    self.metrics.lock_takeovers.inc();
                    tracing::warn!(episode = %ep, previous_owner, purpose, "took over an expired archive lock");
                }
                *metadata
            }
        };
        let keeper = LeaseKeeper::start(
            self.store.clone(),
            ep.clone(),
            self.owner.clone(),
            lease,
            self.faults.clone(),
        );
        let result = tokio::select! {
            r = work(meta) => r,
            _ = keeper.lost.cancelled() => Err(ArchiveError::LeaseLost(ep.clone())),
        };
        drop(keeper);
        if !matches!(result, Err(ArchiveError::Injected(_)))
            && let Err(e) = self.store.release_archive_lease(ep, &self.owner).await
        {
            tracing::warn!(episode = %ep, error = %e, "releasing the archive lock failed; it expires with its lease");
        }
        result.map(Locked::Ran)
    }

    /// Applies `change` to the LogMetadata by compare-and-set, provided this worker still holds
    /// the lock (the fence: a run that lost it changes nothing); retries when an ingest-worker
    /// wrote in between. Renews the lease on the way.
    pub(super) async fn update_locked(
        &self,
        ep: &EpisodeId,
        mut change: impl FnMut(&mut LogMetadata) -> Result<(), ArchiveError>,
    ) -> Result<LogMetadata, ArchiveError> {
        let lease = self.lease_until();
        let updated = self
            .store
            .update_metadata(ep, None, |m| {
                if !holds_lease(m, &self.owner) {
                    return Err(ArchiveError::LeaseLost(ep.clone()));
                }
                change(m)?;
                if let Some(l) = m.archive_lease.as_mut() {
                    l.expires_at = lease;
                }
                Ok(Decision::Write(()))
            })
            .await?;
        updated
            .map(|u| u.metadata)
            .ok_or_else(|| ArchiveError::LeaseLost(ep.clone()))
    }

    /// The chunk to archive next, as `(first sequence, count)`: `chunkSize` counted logs from
    /// `archivedLogs` while `currentLogs` is at or over the threshold; on a flush also the last,
    /// partial chunk. `None`: nothing (more) to archive.
    pub fn next_chunk(meta: &LogMetadata, kind: ArchiveKind) -> Option<(i64, i64)> {
        let start = meta.archived_logs;
        let hot = meta.next_sequence_number - start;
        let chunk_size = i64::from(meta.chunk_size.max(1));
        let over_threshold = meta.current_logs >= i64::from(meta.archive_threshold);
        if hot >= chunk_size && (over_threshold || kind == ArchiveKind::Flush) {
            Some((start, chunk_size))
        } else if kind == ArchiveKind::Flush && hot > 0 {
            Some((start, hot))
        } else {
            None
        }
    }

    async fn archive_locked(
        &self,
        meta: LogMetadata,
        kind: ArchiveKind,
    ) -> Result<ArchiveOutcome, ArchiveError> {
        let ep = meta.episode_id.clone();
        // Finish what a run before left (it died or stalled after a commit), then clear out
        // objects no record points at.
        let mut meta = self.finish_commit(meta, None).await?;
        // An expiry a retention pass left unfinished goes first (docs/retention.md).
        if meta.expiring.is_some() {
            meta = self.finish_expiry(meta).await?.0;
        }
        self.faults.at(FaultPoint::ArchiveBeforeCleanup).await?;
        self.remove_orphans(&ep).await?;
        let (mut chunks, mut logs) = (0u32, 0i64);
        while let Some((start, count)) = Self::next_chunk(&meta, kind) {
            let chunk_number = meta.total_chunks;
            let build = self.metrics.chunk_build_seconds.start_timer();
            let built = self.build_chunk(&ep, start, count).await?;
            build.observe_duration();
            let (encoded, records) = match built {
                Ok(c) => c,
                Err(gap_at) => {
                    tracing::warn!(episode = %ep, gap_at, "a counted log is missing; archiving stops before it");
                    if kind == ArchiveKind::Flush {
                        return Ok(ArchiveOutcome::Gap { at: gap_at });
                    }
                    break;
                }
            };
            self.faults.at(FaultPoint::ArchiveAfterBuild).await?;
            // Every attempt writes its own object: nothing this run uploads can replace what a
            // record points at.
            let key = chunk_key(&self.key_prefix, &ep, chunk_number, &new_attempt());
            let size_bytes = encoded.bytes.len() as i64;
            let upload = self.metrics.chunk_upload_seconds.start_timer();
            put_verified(&self.objects, &key, encoded.bytes.clone()).await?;
            upload.observe_duration();
            self.metrics.chunk_bytes.observe(size_bytes as f64);
            self.faults.at(FaultPoint::ArchiveAfterUpload).await?;
            let now = DateTime::now();
            let record = LogChunk {
                id: ObjectId::new(),
                episode_id: ep.clone(),
                chunk_number,
                start_sequence: encoded.start_sequence,
                end_sequence: encoded.end_sequence,
                start_time: encoded.start_time,
                end_time: encoded.end_time,
                log_count: encoded.log_count as i32,
                src: key.clone(),
                size_bytes,
                created_at: now,
                last_accessed: now,
            };
            // The commit point: fenced on holding the lock and on this being the chunk the
            // episode is at, it moves the counters and names the chunk (`pendingChunk`) until
            // its LogChunk record is written.
            let committed = self
                .update_locked(&ep, |m| {
                    if m.archived_logs != start || m.total_chunks != chunk_number {
                        return Err(ArchiveError::LeaseLost(ep.clone()));
                    }
                    m.archived_logs += encoded.log_count;
                    m.current_logs -= encoded.log_count;
                    m.total_chunks += 1;
                    m.archived_s3_bytes += size_bytes;
                    m.current_mongo_bytes -= encoded.logical_bytes;
                    m.last_archived_at = Some(now);
                    m.pending_chunk = Some(record.clone());
                    m.sweep_due = true;
                    Ok(())
                })
                .await;
            meta = match committed {
                Ok(m) => m,
                // Refused for certain: the object is nobody's.
                Err(e @ ArchiveError::LeaseLost(_)) => {
                    if let Err(de) = self.objects.delete(&key).await {
                        tracing::warn!(%key, error = %de, "removing an uncommitted chunk object failed; a later run removes it");
                    }
                    return Err(e);
                }
                // Perhaps committed (a call that timed out may still have landed): the object
                // stays; a later run removes it if no record names it.
                Err(e) => return Err(e),
            };
            self.faults.at(FaultPoint::ArchiveAfterMetadata).await?;
            meta = self.finish_commit(meta, Some(records)).await?;
            chunks += 1;
            logs += encoded.log_count;
            self.metrics.chunks_written.inc();
            self.metrics.logs_archived.inc_by(encoded.log_count as u64);
            self.metrics
                .hot_bytes_archived
                .inc_by(encoded.logical_bytes.max(0) as u64);
            tracing::info!(episode = %ep, chunk_number, start, count = encoded.log_count, size_bytes, %key, "chunk archived");
        }
        // Numbers this run committed may have an uncommitted upload of an earlier attempt
        // (a worker that froze after its upload): only now are they below `totalChunks`.
        if chunks > 0 {
            self.remove_orphans(&ep).await?;
        }
        Ok(ArchiveOutcome::Done { chunks, logs })
    }

    /// The steps after a commit, each idempotent: write the pending chunk's LogChunk record,
    /// record the archived messages for dedup, delete the archived entries, clear
    /// `pendingChunk`. `records`: the archived messages, when this run built the chunk (else
    /// they are read from the entries still there).
    pub(super) async fn finish_commit(
        &self,
        mut meta: LogMetadata,
        records: Option<Vec<ArchivedMessage>>,
    ) -> Result<LogMetadata, ArchiveError> {
        let ep = meta.episode_id.clone();
        if let Some(pending) = &meta.pending_chunk {
            self.record_chunk(pending).await?;
            self.faults.at(FaultPoint::ArchiveAfterLogChunk).await?;
        }
        let below = meta.archived_logs;
        let records = match records {
            Some(r) => r,
            None => self.store.archived_message_records(&ep, below).await?,
        };
        self.store.record_archived_messages(&records).await?;
        self.store.delete_entries_below(&ep, below).await?;
        if meta.pending_chunk.is_some() {
            // `sweepDue` stays set while the lock is held (the release recomputes it): a
            // holder that dies after this step leaves its lock for the sweep to find. Cleared
            // here, an episode below its threshold kept an expired lock for good.
            meta = self
                .update_locked(&ep, |m| {
                    m.pending_chunk = None;
                    Ok(())
                })
                .await?;
        }
        Ok(meta)
    }

    /// Deletes the episode's objects that can never be part of it: uploads of attempts that
    /// did not commit (a run that died or lost its lock after its upload).
    ///
    /// Safe even when this run is stale (it froze here and another worker holds the lock
    /// now): the objects are listed first, then LogMetadata is read, then the records. Only a
    /// key whose chunk number is below `totalChunks` is a candidate: that number is committed,
    /// so no upload for it can commit any more. A committed chunk is named by `pendingChunk`
    /// until its record exists, so read in this order every committed object is named by one
    /// or the other, and kept. Uploads for numbers not yet committed (perhaps a live worker's)
    /// are left for a later run.
    pub(super) async fn remove_orphans(&self, ep: &EpisodeId) -> Result<(), ArchiveError> {
        let keys = self
            .objects
            .list(&episode_key_prefix(&self.key_prefix, ep))
            .await?;
        if keys.is_empty() {
            return Ok(());
        }
        let Some(meta) = self.store.metadata_of(ep).await? else {
            return Ok(());
        };
        let mut named: std::collections::HashSet<String> =
            meta.pending_chunk.iter().map(|c| c.src.clone()).collect();
        named.extend(self.store.chunks_of(ep).await?.into_iter().map(|c| c.src));
        let orphan = |k: &String| {
            !named.contains(k) && chunk_number_of_key(k).is_some_and(|n| n < meta.total_chunks)
        };
        for key in keys.iter().filter(|k| orphan(k)) {
            tracing::info!(episode = %ep, %key, "removing a chunk object no record points at");
            self.objects.delete(key).await?;
            self.metrics.orphans_removed.inc();
        }
        Ok(())
    }

    /// Reads `count` entries from `start` and encodes them; `Ok(Err(seq))` names the first
    /// missing sequence number when the range is not complete. Also returns the dedup records
    /// of the messages whose first log is in the chunk.
    async fn build_chunk(
        &self,
        ep: &EpisodeId,
        start: i64,
        count: i64,
    ) -> Result<Result<(EncodedChunk, Vec<ArchivedMessage>), i64>, ArchiveError> {
        let mut cursor = self
            .store
            .entries_in_range(ep, start, start + count)
            .await?;
        // Serializing and compressing is CPU work: it runs on a blocking thread (the writer's
        // own pool compresses sealed members beside it), fed entries in batches through a
        // bounded channel, so the async threads only read from MongoDB.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<LogEntry>>(4);
        let (level, member_bytes) = (self.settings.gzip_level, self.settings.member_bytes);
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter::new(level).with_member_bytes(member_bytes);
            while let Some(batch) = rx.blocking_recv() {
                for e in &batch {
                    w.push(e)?;
                }
            }
            Ok::<_, ChunkError>((w.len(), w))
        });
        let now = DateTime::now();
        let mut records = Vec::new();
        let mut next = start;
        let mut batch = Vec::with_capacity(BUILD_BATCH);
        let mut gap = None;
        while let Some(entry) = cursor.next().await? {
            if entry.sequence_number != next {
                gap = Some(next);
                break;
            }
            next += 1;
            if let Some(r) = ArchivedMessage::of_first_entry(&entry, now) {
                records.push(r);
            }
            batch.push(entry);
            if batch.len() == BUILD_BATCH
                && tx
                    .send(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(BUILD_BATCH),
                    ))
                    .await
                    .is_err()
            {
                break;
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        drop(tx);
        let (written, w) = writer
            .await
            .map_err(|e| ChunkError::Io(std::io::Error::other(e)))??;
        if let Some(at) = gap {
            return Ok(Err(at));
        }
        if written < count {
            return Ok(Err(start + written));
        }
        let encoded = tokio::task::spawn_blocking(move || w.finish())
            .await
            .map_err(|e| ChunkError::Io(std::io::Error::other(e)))??;
        Ok(Ok((encoded, records)))
    }

    /// Writes a committed chunk's LogChunk record (from `pendingChunk`). A record of that number
    /// that differs can only be this chunk's written by an earlier try of the same step (only a
    /// run that committed writes records), so LogMetadata, the commit, wins.
    async fn record_chunk(&self, record: &LogChunk) -> Result<(), ArchiveError> {
        if let RecordedChunk::Exists(existing) = self.store.record_chunk(record).await?
            && existing.src != record.src
        {
            tracing::warn!(episode = %record.episode_id, chunk_number = record.chunk_number, found = %existing.src, committed = %record.src, "a LogChunk record disagrees with the commit; writing the committed one");
            self.store
                .replace_uncommitted_chunk(&existing, record)
                .await?;
        }
        Ok(())
    }
}

/// Renews a run's lease every third of its length, in the background, until dropped; cancels
/// `lost` when a renewal finds another owner.
struct LeaseKeeper {
    /// Cancelled when the lease is lost.
    pub(super) lost: CancellationToken,
    /// The renewal task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    pub(super) fn start(
        store: MongoStore,
        ep: EpisodeId,
        owner: String,
        lease: Duration,
        faults: Faults,
    ) -> Self {
        let lost = CancellationToken::new();
        let task = tokio::spawn({
            let lost = lost.clone();
            async move {
                let every = (lease / 3).max(Duration::from_millis(100));
                loop {
                    tokio::time::sleep(every).await;
                    // A test may hold the renewal here; a crash verdict means nothing to it.
                    let _ = faults.at(FaultPoint::ArchiveLeaseRenewal).await;
                    match store.renew_archive_lease(&ep, &owner, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(episode = %ep, "the archive lock was taken over; stopping this run");
                            lost.cancel();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(episode = %ep, error = %e, "renewing the archive lease failed; trying again")
                        }
                    }
                }
            }
        });
        Self { lost, task }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::MemoryObjectStore;

    /// An episode with `counted` logs numbered, `archived` of them in chunks.
    fn meta(threshold: i32, chunk_size: i32, counted: i64, archived: i64) -> LogMetadata {
        let mut m = LogMetadata::new(
            EpisodeId::parse("ep").unwrap(),
            threshold,
            chunk_size,
            DateTime::from_millis(0),
        );
        m.next_sequence_number = counted;
        m.total_logs = counted;
        m.archived_logs = archived;
        m.current_logs = counted - archived;
        m
    }

    /// The chunks a run would cut, in order: `next_chunk` applied as the commit applies it.
    fn plan(mut m: LogMetadata, kind: ArchiveKind) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some((start, count)) = ChunkArchiver::<MemoryObjectStore>::next_chunk(&m, kind) {
            assert_eq!(
                start, m.archived_logs,
                "a chunk starts where the last one ended"
            );
            out.push((start, count));
            m.archived_logs += count;
            m.current_logs -= count;
            assert!(out.len() <= 1_000, "the plan ends");
        }
        out
    }

    #[test]
    fn a_threshold_run_cuts_whole_chunks_while_the_episode_is_over_its_threshold() {
        // The README's demo episode: 110,000 logs, threshold and chunk 50,000.
        assert_eq!(
            plan(meta(50_000, 50_000, 110_000, 0), ArchiveKind::Threshold),
            vec![(0, 50_000), (50_000, 50_000)],
            "10,000 stay hot: under the threshold after the second chunk"
        );
        assert_eq!(
            plan(meta(50_000, 50_000, 49_999, 0), ArchiveKind::Threshold),
            vec![],
            "under the threshold: nothing"
        );
        // A threshold above the chunk size: chunks until under the threshold.
        assert_eq!(
            plan(meta(3_000, 1_000, 3_500, 0), ArchiveKind::Threshold),
            vec![(0, 1_000)],
            "2,500 hot is under 3,000"
        );
        // A threshold below the chunk size: nothing until a whole chunk is there.
        assert_eq!(
            plan(meta(100, 1_000, 999, 0), ArchiveKind::Threshold),
            vec![],
            "never a partial chunk on a threshold"
        );
        // Resumes after chunks already archived.
        assert_eq!(
            plan(meta(1_000, 1_000, 5_200, 3_000), ArchiveKind::Threshold),
            vec![(3_000, 1_000), (4_000, 1_000)]
        );
    }

    #[test]
    fn a_flush_archives_everything_counted_the_last_chunk_partial() {
        assert_eq!(
            plan(meta(50_000, 1_000, 2_500, 0), ArchiveKind::Flush),
            vec![(0, 1_000), (1_000, 1_000), (2_000, 500)]
        );
        assert_eq!(
            plan(meta(50_000, 1_000, 3_000, 3_000), ArchiveKind::Flush),
            vec![],
            "all archived already"
        );
        assert_eq!(
            plan(meta(50_000, 1_000, 1, 0), ArchiveKind::Flush),
            vec![(0, 1)]
        );
    }

    #[test]
    fn a_chunk_size_of_zero_is_taken_as_one() {
        assert_eq!(
            plan(meta(1, 0, 2, 0), ArchiveKind::Threshold),
            vec![(0, 1), (1, 1)]
        );
    }
}
