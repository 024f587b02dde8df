//! [`ChunkArchiver`]: one episode's archive run, under its lock.

use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use bson::oid::ObjectId;
use futures::TryStreamExt;

use crate::chunk::{ChunkError, ChunkWriter, EncodedChunk, chunk_key};
use crate::config::{ArchiveSettings, Settings};
use crate::domain::EpisodeId;
use crate::metrics::ArchiveMetrics;
use crate::model::{LogChunk, LogEntry, LogMetadata};
use crate::mongo::lease::{LeaseGrant, holds_lease, lease_until};
use crate::mongo::{Decision, MongoError, MongoStore, RecordedChunk};
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
    /// A flush found a gap (logs reserved but not yet written) at this sequence number.
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
    pub metrics: Arc<ArchiveMetrics>,
}

/// Removes an episode from [`ChunkArchiver::running`] when its run ends, however it ends.
struct RunningGuard<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<EpisodeId>>,
    episode: EpisodeId,
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
        if !self
            .running
            .lock()
            .expect("not poisoned")
            .insert(ep.clone())
        {
            return Ok(ArchiveOutcome::Busy);
        }
        let _guard = RunningGuard {
            set: &self.running,
            episode: ep.clone(),
        };
        let result = self.archive_unguarded(ep, kind).await;
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

    async fn archive_unguarded(
        &self,
        ep: &EpisodeId,
        kind: ArchiveKind,
    ) -> Result<ArchiveOutcome, ArchiveError> {
        let lease = Duration::from_secs(self.settings.lease_secs);
        let meta = match self
            .store
            .acquire_archive_lease(ep, &self.owner, lease)
            .await?
        {
            LeaseGrant::Unknown => return Ok(ArchiveOutcome::Unknown),
            LeaseGrant::Busy => return Ok(ArchiveOutcome::Busy),
            LeaseGrant::Granted {
                metadata,
                took_over_from,
            } => {
                if let Some(previous_owner) = took_over_from {
                    self.metrics.lock_takeovers.inc();
                    tracing::warn!(episode = %ep, previous_owner, "took over an expired archive lock");
                }
                *metadata
            }
        };
        let result = self.archive_locked(meta, kind).await;
        if matches!(result, Err(ArchiveError::Injected(_))) {
            return result;
        }
        if let Err(e) = self.store.release_archive_lease(ep, &self.owner).await {
            tracing::warn!(episode = %ep, error = %e, "releasing the archive lock failed; it expires with its lease");
        }
        result
    }

    /// Applies `change` to the LogMetadata by compare-and-set, provided this worker still holds
    /// the lock; retries when an ingest-worker wrote in between.
    async fn update_locked(
        &self,
        ep: &EpisodeId,
        mut change: impl FnMut(&mut LogMetadata) -> Result<(), ArchiveError>,
    ) -> Result<LogMetadata, ArchiveError> {
        let updated = self
            .store
            .update_metadata(ep, None, |m| {
                if !holds_lease(m, &self.owner) {
                    return Err(ArchiveError::LeaseLost(ep.clone()));
                }
                change(m)?;
                Ok(Decision::Write(()))
            })
            .await?;
        updated
            .map(|u| u.metadata)
            .ok_or_else(|| ArchiveError::LeaseLost(ep.clone()))
    }

    async fn archive_locked(
        &self,
        mut meta: LogMetadata,
        kind: ArchiveKind,
    ) -> Result<ArchiveOutcome, ArchiveError> {
        let ep = meta.episode_id.clone();
        // Finish the delete step of an earlier run that died after its commit.
        self.store
            .delete_entries_below(&ep, meta.archived_logs)
            .await?;
        let (mut chunks, mut logs) = (0u32, 0i64);
        loop {
            let start = meta.archived_logs;
            let hot = meta.next_sequence_number - start;
            let chunk_size = i64::from(meta.chunk_size.max(1));
            let over_threshold = meta.current_logs >= i64::from(meta.archive_threshold);
            let count = if hot >= chunk_size && (over_threshold || kind == ArchiveKind::Flush) {
                chunk_size
            } else if kind == ArchiveKind::Flush && hot > 0 {
                hot
            } else {
                break;
            };
            let chunk_number = meta.total_chunks;
            let build = self.metrics.chunk_build_seconds.start_timer();
            let built = self.build_chunk(&ep, start, count).await?;
            build.observe_duration();
            let encoded = match built {
                Ok(c) => c,
                Err(gap_at) => {
                    tracing::info!(episode = %ep, gap_at, "logs not written yet; archiving stops before the gap");
                    if kind == ArchiveKind::Flush {
                        return Ok(ArchiveOutcome::Gap { at: gap_at });
                    }
                    break;
                }
            };
            let lease = self.lease_until();
            self.update_locked(&ep, |m| {
                if m.archived_logs != start || m.total_chunks != chunk_number {
                    return Err(ArchiveError::LeaseLost(ep.clone()));
                }
                m.archive_lease.as_mut().expect("held").expires_at = lease;
                Ok(())
            })
            .await?;
            let key = chunk_key(&self.key_prefix, &ep, chunk_number);
            let size_bytes = encoded.bytes.len() as i64;
            let upload = self.metrics.chunk_upload_seconds.start_timer();
            put_verified(&self.objects, &key, encoded.bytes.clone()).await?;
            upload.observe_duration();
            self.metrics.chunk_bytes.observe(size_bytes as f64);
            self.faults.at(FaultPoint::ArchiveAfterUpload).await?;
            self.record_chunk(&ep, chunk_number, &encoded, &key).await?;
            self.faults.at(FaultPoint::ArchiveAfterLogChunk).await?;
            let lease = self.lease_until();
            meta = self
                .update_locked(&ep, |m| {
                    // Fencing: commit only the chunk this run was built for.
                    if m.archived_logs != start || m.total_chunks != chunk_number {
                        return Err(ArchiveError::LeaseLost(ep.clone()));
                    }
                    m.archived_logs += encoded.log_count;
                    m.current_logs -= encoded.log_count;
                    m.total_chunks += 1;
                    m.archived_s3_bytes += size_bytes;
                    m.current_mongo_bytes -= encoded.logical_bytes;
                    m.last_archived_at = Some(DateTime::now());
                    m.archive_lease.as_mut().expect("held").expires_at = lease;
                    Ok(())
                })
                .await?;
            self.faults.at(FaultPoint::ArchiveAfterMetadata).await?;
            self.store
                .delete_entries_below(&ep, meta.archived_logs)
                .await?;
            chunks += 1;
            logs += encoded.log_count;
            self.metrics.chunks_written.inc();
            self.metrics.logs_archived.inc_by(encoded.log_count as u64);
            tracing::info!(episode = %ep, chunk_number, start, count = encoded.log_count, size_bytes, %key, "chunk archived");
        }
        Ok(ArchiveOutcome::Done { chunks, logs })
    }

    /// Reads `count` entries from `start` and encodes them; `Ok(Err(seq))` names the first
    /// missing sequence number when the range is not complete yet.
    async fn build_chunk(
        &self,
        ep: &EpisodeId,
        start: i64,
        count: i64,
    ) -> Result<Result<EncodedChunk, i64>, ArchiveError> {
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
        let mut next = start;
        let mut batch = Vec::with_capacity(BUILD_BATCH);
        let mut gap = None;
        while let Some(entry) = cursor.try_next().await.map_err(MongoError::from)? {
            if entry.sequence_number != next {
                gap = Some(next);
                break;
            }
            next += 1;
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
        Ok(Ok(encoded))
    }

    /// Writes the LogChunk record. A record for this number left by a run that died before its
    /// commit is replaced when it differs (it was never committed: `totalChunks` is below it).
    async fn record_chunk(
        &self,
        ep: &EpisodeId,
        chunk_number: i32,
        c: &EncodedChunk,
        key: &str,
    ) -> Result<(), ArchiveError> {
        let now = DateTime::now();
        let record = LogChunk {
            id: ObjectId::new(),
            episode_id: ep.clone(),
            chunk_number,
            start_sequence: c.start_sequence,
            end_sequence: c.end_sequence,
            start_time: c.start_time,
            end_time: c.end_time,
            log_count: c.log_count as i32,
            src: key.to_owned(),
            size_bytes: c.bytes.len() as i64,
            created_at: now,
            last_accessed: now,
        };
        match self.store.record_chunk(&record).await? {
            RecordedChunk::Inserted => Ok(()),
            RecordedChunk::Exists(existing) => {
                let same = (
                    existing.start_sequence,
                    existing.end_sequence,
                    existing.log_count,
                    existing.size_bytes,
                    &existing.src,
                ) == (
                    record.start_sequence,
                    record.end_sequence,
                    record.log_count,
                    record.size_bytes,
                    &record.src,
                ) && (existing.start_time, existing.end_time)
                    == (record.start_time, record.end_time);
                if !same {
                    self.store
                        .replace_uncommitted_chunk(&existing, &record)
                        .await?;
                }
                Ok(())
            }
        }
    }
}
