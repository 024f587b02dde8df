//! The archive-worker: MongoDB → S3 chunks, each chunk exactly once.
//!
//! Work arrives two ways: threshold events on `{prefix}.archive.events` (published by the
//! ingest-worker, or a flush command), and a periodic sweep of LogMetadata through its
//! `currentLogs` index, so a lost event only delays archiving.
//!
//! For one episode, [`ChunkArchiver::archive_episode`]:
//! 1. takes the episode's `isArchiving` lock with a lease (owner, expiry) by compare-and-set,
//!    taking over a lock whose lease ran out;
//! 2. deletes entries below `archivedLogs` (finishing a run that died before its delete);
//! 3. while a full chunk is there (`chunkSize` contiguous logs from `archivedLogs`, and
//!    `currentLogs >= archiveThreshold`; on a flush also the final partial chunk):
//!    build it, renew the lease, upload and verify it, write its LogChunk record, commit
//!    LogMetadata by compare-and-set (the commit point, fenced on owner and `archivedLogs`),
//!    delete its entries;
//! 4. releases the lock.
//!
//! A crash between any two steps leaves a state the next run completes: the S3 key is
//! deterministic (a retry overwrites), a LogChunk record above `totalChunks` is not committed yet
//! and is replaced, and entries below `archivedLogs` are deleted on the next run.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use bson::oid::ObjectId;
use futures::{StreamExt, TryStreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, AmqpError, Backoff, ConfirmedPublisher, Topology};
use crate::chunk::{ChunkError, ChunkWriter, EncodedChunk, chunk_key};
use crate::config::{ArchiveSettings, Settings};
use crate::domain::EpisodeId;
use crate::health::{self, HttpListen, Readiness};
use crate::metrics::ArchiveMetrics;
use crate::model::{ArchiveLease, LogChunk, LogMetadata};
use crate::mongo::{MongoError, MongoStore, is_duplicate_key};
use crate::s3::{ObjectStore, S3ObjectStore, StoreError, put_verified};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("episode {0}: the archive lock was lost to another worker")]
    LeaseLost(EpisodeId),
    #[error("stopped by the fault plan after {0:?}")]
    Stopped(ArchiveStep),
    #[error("HTTP endpoints: {0}")]
    Http(String),
}

impl From<lapin::Error> for ArchiveError {
    fn from(e: lapin::Error) -> Self {
        ArchiveError::Amqp(e.into())
    }
}

impl From<mongodb::error::Error> for ArchiveError {
    fn from(e: mongodb::error::Error) -> Self {
        ArchiveError::Mongo(e.into())
    }
}

/// The boundaries between the steps of archiving one chunk, where a test may stop a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStep {
    AfterUpload,
    AfterLogChunk,
    AfterMetadata,
}

/// What an archive request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// Archive full chunks while `currentLogs >= archiveThreshold`.
    Threshold,
    /// The episode is finished: archive every full chunk, then the final partial one.
    Flush,
}

/// Body of a message on `{prefix}.archive`: `{"episodeId": "...", "kind": "threshold"|"flush"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveRequest {
    pub episode_id: EpisodeId,
    pub kind: ArchiveKind,
}

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
    store: MongoStore,
    objects: S,
    settings: ArchiveSettings,
    key_prefix: String,
    /// Instance id written into the lease; tells this worker's locks from others'.
    owner: String,
    stop_after: Option<ArchiveStep>,
    /// Episodes this process is archiving now: the sweep and the event consumer share one lease
    /// owner, so they must not run on the same episode at once.
    running: std::sync::Mutex<std::collections::HashSet<EpisodeId>>,
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

impl<S: ObjectStore> ChunkArchiver<S> {
    pub fn new(store: MongoStore, objects: S, settings: &Settings, owner: String) -> Self {
        Self {
            store,
            objects,
            settings: settings.archive.clone(),
            key_prefix: settings.s3.key_prefix.clone(),
            owner,
            stop_after: None,
            running: Default::default(),
            metrics: Arc::default(),
        }
    }

    /// Makes every run stop (as if the process died, lock left held) after `step`.
    pub fn stop_after(mut self, step: Option<ArchiveStep>) -> Self {
        self.stop_after = step;
        self
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_until(&self) -> DateTime {
        DateTime::from_millis(
            DateTime::now().timestamp_millis() + self.settings.lease_secs as i64 * 1000,
        )
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
            Err(ArchiveError::Stopped(_)) => "stopped",
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
        let Some(meta) = self.store.metadata_of(ep).await? else {
            return Ok(ArchiveOutcome::Unknown);
        };
        let Some(meta) = self.acquire(meta).await? else {
            return Ok(ArchiveOutcome::Busy);
        };
        let result = self.archive_locked(meta, kind).await;
        if matches!(result, Err(ArchiveError::Stopped(_))) {
            return result;
        }
        if let Err(e) = self.release(ep).await {
            tracing::warn!(episode = %ep, error = %e, "releasing the archive lock failed; it expires with its lease");
        }
        result
    }

    /// Takes the lock by compare-and-set, or returns None if another worker's lease is live.
    async fn acquire(&self, mut meta: LogMetadata) -> Result<Option<LogMetadata>, ArchiveError> {
        loop {
            let now = DateTime::now();
            let holder = meta.archive_lease.as_ref().map(|l| l.owner.clone());
            if meta.lock_held_at(now) && holder.as_deref() != Some(&self.owner) {
                return Ok(None);
            }
            let mut next = meta.clone();
            next.is_archiving = true;
            next.archive_lease = Some(ArchiveLease {
                owner: self.owner.clone(),
                expires_at: self.lease_until(),
            });
            next.version += 1;
            next.updated_at = now;
            if self.store.replace_metadata(meta.version, &next).await? {
                if meta.is_archiving && holder.as_deref() != Some(&self.owner) {
                    self.metrics.lock_takeovers.inc();
                    tracing::warn!(episode = %meta.episode_id, previous_owner = ?holder, "took over an expired archive lock");
                }
                return Ok(Some(next));
            }
            meta = self.reread(&meta.episode_id).await?;
        }
    }

    async fn reread(&self, ep: &EpisodeId) -> Result<LogMetadata, ArchiveError> {
        self.store
            .metadata_of(ep)
            .await?
            .ok_or_else(|| ArchiveError::LeaseLost(ep.clone()))
    }

    /// Applies `change` to the LogMetadata by compare-and-set, provided this worker still holds
    /// the lock; retries when an ingest-worker wrote in between.
    async fn update_locked(
        &self,
        ep: &EpisodeId,
        mut change: impl FnMut(&mut LogMetadata) -> Result<(), ArchiveError>,
    ) -> Result<LogMetadata, ArchiveError> {
        loop {
            let meta = self.reread(ep).await?;
            let mine = meta.is_archiving
                && meta
                    .archive_lease
                    .as_ref()
                    .is_some_and(|l| l.owner == self.owner);
            if !mine {
                return Err(ArchiveError::LeaseLost(ep.clone()));
            }
            let mut next = meta.clone();
            change(&mut next)?;
            next.version += 1;
            next.updated_at = DateTime::now();
            if self.store.replace_metadata(meta.version, &next).await? {
                return Ok(next);
            }
        }
    }

    async fn release(&self, ep: &EpisodeId) -> Result<(), ArchiveError> {
        match self
            .update_locked(ep, |m| {
                m.is_archiving = false;
                m.archive_lease = None;
                Ok(())
            })
            .await
        {
            Ok(_) | Err(ArchiveError::LeaseLost(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn stop_point(&self, step: ArchiveStep) -> Result<(), ArchiveError> {
        if self.stop_after == Some(step) {
            tracing::warn!(?step, "fault plan: stopping here");
            return Err(ArchiveError::Stopped(step));
        }
        Ok(())
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
            self.stop_point(ArchiveStep::AfterUpload)?;
            self.record_chunk(&ep, chunk_number, &encoded, &key).await?;
            self.stop_point(ArchiveStep::AfterLogChunk)?;
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
            self.stop_point(ArchiveStep::AfterMetadata)?;
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
        let mut writer = ChunkWriter::new(self.settings.gzip_level)
            .with_member_bytes(self.settings.member_bytes);
        while let Some(entry) = cursor.try_next().await.map_err(MongoError::from)? {
            let expected = start + writer.len();
            if entry.sequence_number != expected {
                return Ok(Err(expected));
            }
            writer.push(&entry)?;
        }
        if writer.len() < count {
            return Ok(Err(start + writer.len()));
        }
        Ok(Ok(writer.finish()?))
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
        match self.store.chunks.insert_one(&record).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => {
                let existing = self.store.chunk_of(ep, chunk_number).await?.ok_or(e)?;
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
                    let replacement = LogChunk {
                        id: existing.id,
                        ..record
                    };
                    self.store
                        .chunks
                        .replace_one(bson::doc! {"_id": existing.id}, &replacement)
                        .await?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Archives every episode at or over its threshold (or with an expired lock), found through
    /// the `currentLogs` index.
    pub async fn sweep(&self) -> Result<u32, ArchiveError> {
        let mut cursor = self
            .store
            .metadata
            .find(bson::doc! {"currentLogs": {"$gte": 1_i64}})
            .sort(bson::doc! {"currentLogs": -1})
            .projection(bson::doc! {"recentMessages": 0})
            .await
            .map_err(MongoError::from)?;
        let mut due = Vec::new();
        while let Some(doc) = cursor.next().await {
            let m = doc.map_err(MongoError::from)?;
            let expired_lock = m.is_archiving && !m.lock_held_at(DateTime::now());
            if m.current_logs >= i64::from(m.archive_threshold) || expired_lock {
                due.push(m.episode_id);
            }
        }
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

/// Options beyond the configuration, for tests and embedding.
#[derive(Debug, Default)]
pub struct ArchiveOptions {
    /// Instance id (lease owner, RabbitMQ connection name).
    pub instance: Option<String>,
    /// Stop every run after this step, leaving the lock held (tests of crash recovery).
    pub stop_after: Option<ArchiveStep>,
    /// The worker's metrics; shared with the caller so tests can read them.
    pub metrics: Arc<ArchiveMetrics>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen; `None` means `archive.http_listen`.
    pub http: Option<HttpListen>,
}

/// Runs an archive-worker until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ArchiveError> {
    run_with(settings, ArchiveOptions::default(), shutdown).await
}

pub async fn run_with(
    settings: Settings,
    mut options: ArchiveOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ArchiveError> {
    let cancel = CancellationToken::new();
    let store = MongoStore::connect(&settings.mongo).await?;
    let readiness = Arc::new(Readiness {
        mongo: Some(store.clone()),
        s3: Some(std::sync::OnceLock::new()),
        ..Default::default()
    });
    let _http = health::start(
        options.http.take(),
        &settings.archive.http_listen,
        options.metrics.registry.clone(),
        readiness.clone(),
    )
    .await
    .map_err(|e| ArchiveError::Http(e.to_string()))?;
    let drain = Duration::from_secs(
        settings
            .ingest
            .drain_deadline_secs
            .max(settings.archive.lease_secs),
    );
    let main = supervise(settings, options, store, readiness, cancel.clone());
    crate::run_until_drained(main, shutdown, &cancel, drain, "archive").await
}

async fn supervise(
    settings: Settings,
    options: ArchiveOptions,
    store: MongoStore,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) -> Result<(), ArchiveError> {
    let mut backoff = Backoff::new(
        settings.amqp.reconnect_initial(),
        settings.amqp.reconnect_max(),
    );
    while let Err(e) = store.ensure_indexes().await {
        if e.is_fatal() {
            tracing::error!(error = %e, "cannot start: an index of the schema conflicts with an existing one");
            return Err(e.into());
        }
        let wait = backoff.next_delay();
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "MongoDB not ready; retrying");
        tokio::select! { _ = cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(wait) => {} }
    }
    backoff.reset();
    let objects = loop {
        match S3ObjectStore::connect(&settings.s3).await {
            Ok(o) => {
                if let Some(cell) = &readiness.s3 {
                    let _ = cell.set(o.clone());
                }
                break o;
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "S3 not ready; retrying");
                tokio::select! { _ = cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(wait) => {} }
            }
        }
    };
    let instance = options.instance.unwrap_or_else(|| {
        format!(
            "archive-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let mut archiver = ChunkArchiver::new(store, objects, &settings, instance.clone())
        .stop_after(options.stop_after);
    archiver.metrics = options.metrics;
    let archiver = Arc::new(archiver);
    let mut sweeper = tokio::spawn(sweep_loop(
        archiver.clone(),
        settings.archive.clone(),
        cancel.clone(),
    ));
    let topology = Topology::new(&settings.amqp);
    backoff.reset();
    let events = async {
        loop {
            let Some(conn) = amqp::connect_with_retry(&settings.amqp, &instance, &cancel).await
            else {
                return Ok(());
            };
            readiness.set_amqp_connected(true);
            let r = consume_events(&archiver, &settings, &topology, &conn, &cancel).await;
            readiness.set_amqp_connected(false);
            let _ = conn.close(200, "bye".into()).await;
            match r {
                Ok(()) => return Ok(()),
                Err(e @ ArchiveError::Stopped(_)) => return Err(e),
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "archive session ended; reconnecting");
                    tokio::select! { _ = cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(wait) => {} }
                }
            }
        }
    };
    // Whichever of the two ends first (shutdown, or a fault-plan stop) ends the other.
    tokio::select! {
        r = events => {
            cancel.cancel();
            let _ = sweeper.await;
            r
        }
        r = &mut sweeper => {
            cancel.cancel();
            r.unwrap_or(Ok(()))
        }
    }
}

async fn sweep_loop<S: ObjectStore + 'static>(
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
            Err(e @ ArchiveError::Stopped(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "sweep failed; next sweep retries"),
        }
    }
}

async fn consume_events<S: ObjectStore + 'static>(
    archiver: &Arc<ChunkArchiver<S>>,
    settings: &Settings,
    topology: &Topology,
    conn: &lapin::Connection,
    cancel: &CancellationToken,
) -> Result<(), ArchiveError> {
    topology.declare(conn).await?;
    let publisher = ConfirmedPublisher::open(conn).await?;
    let channel = conn.create_channel().await?;
    let concurrency = settings.archive.concurrency;
    channel
        .basic_qos(
            concurrency.min(u16::MAX as usize) as u16,
            BasicQosOptions::default(),
        )
        .await?;
    let tag = format!("{}-events", archiver.owner());
    let mut consumer = channel
        .basic_consume(
            topology.archive_queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let stop = cancel.child_token();
    let result = loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(ArchiveError::Amqp(AmqpError::Nacked(format!("archive task panicked: {e}")))),
                }
            }
            d = consumer.next() => d,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(e.into()),
            None => {
                break Err(ArchiveError::Amqp(AmqpError::Nacked(format!(
                    "consumer of {} ended",
                    topology.archive_queue
                ))));
            }
        };
        archiver.metrics.requests_consumed.inc();
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (archiver, publisher, topology, s, stop) = (
            archiver.clone(),
            publisher.clone(),
            topology.clone(),
            settings.archive.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let r = handle_event(&archiver, &publisher, &topology, &s, delivery, &stop).await;
            drop(permit);
            r
        });
    };
    stop.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e @ ArchiveError::Stopped(_))) = done {
            return Err(e);
        }
    }
    result
}

/// Handles one archive request; acks it when done, dead-letters it when it cannot be done.
async fn handle_event<S: ObjectStore>(
    archiver: &ChunkArchiver<S>,
    publisher: &ConfirmedPublisher,
    topology: &Topology,
    s: &ArchiveSettings,
    delivery: Delivery,
    stop: &CancellationToken,
) -> Result<(), ArchiveError> {
    let request: ArchiveRequest = match serde_json::from_slice(&delivery.data) {
        Ok(r) => r,
        Err(e) => {
            return dead_letter(
                publisher,
                topology,
                &delivery,
                &format!("invalid archive request: {e}"),
            )
            .await;
        }
    };
    let ep = &request.episode_id;
    let flush_deadline = tokio::time::Instant::now() + Duration::from_secs(s.flush_wait_secs);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let retry_reason = match archiver.archive_episode(ep, request.kind).await {
            Ok(ArchiveOutcome::Done { .. }) | Ok(ArchiveOutcome::Unknown) => break,
            // Threshold: the holder, or the next sweep, archives what is due.
            Ok(ArchiveOutcome::Busy) if request.kind == ArchiveKind::Threshold => break,
            Ok(ArchiveOutcome::Busy) => "the archive lock is held by another worker".to_owned(),
            Ok(ArchiveOutcome::Gap { at }) => {
                format!("sequence {at} is reserved but not written yet")
            }
            Err(e @ ArchiveError::Stopped(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(episode = %ep, error = %e, "archive run failed; retrying");
                e.to_string()
            }
        };
        if request.kind == ArchiveKind::Flush && tokio::time::Instant::now() >= flush_deadline {
            let reason = format!(
                "flush of {ep} could not complete within {} s: {retry_reason}",
                s.flush_wait_secs
            );
            return dead_letter(publisher, topology, &delivery, &reason).await;
        }
        tokio::select! {
            // Shutdown: leave the request unacked; it returns to the queue.
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

async fn dead_letter(
    publisher: &ConfirmedPublisher,
    topology: &Topology,
    d: &Delivery,
    reason: &str,
) -> Result<(), ArchiveError> {
    tracing::warn!(%reason, "dead-lettering archive request");
    let props = amqp::dead_letter_properties(
        &d.properties,
        reason,
        &topology.archive_queue,
        d.routing_key.as_str(),
    );
    publisher
        .publish(
            &topology.archive_dead_letter_exchange,
            d.routing_key.as_str(),
            &d.data,
            props,
        )
        .await?;
    d.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Publishes an archive request (with confirm): `logctl flush` and tests use it.
pub async fn request_archive(
    publisher: &ConfirmedPublisher,
    topology: &Topology,
    ep: &EpisodeId,
    kind: ArchiveKind,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(&ArchiveRequest {
        episode_id: ep.clone(),
        kind,
    })
    .expect("serializable");
    let id = uuid::Uuid::new_v4().to_string();
    publisher
        .publish_json(&topology.archive_exchange, ep.as_str(), &body, Some(&id))
        .await
}
