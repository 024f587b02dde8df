//! The archive-worker: MongoDB → S3 chunks, each chunk exactly once.
//!
//! Work arrives two ways: threshold events on `{prefix}.archive.events` (published by the
//! ingest-worker, or a flush command), and a periodic sweep of the LogMetadata documents
//! flagged `sweepDue` (an indexed field), so a lost event only delays archiving.
//!
//! For one episode, [`ChunkArchiver::archive_episode`]:
//! 1. takes the episode's `isArchiving` lock with a lease (owner, expiry) by compare-and-set,
//!    taking over a lock whose lease ran out; a background task renews the lease for as long
//!    as the run works, and stops the run if it finds the lock taken over;
//! 2. finishes what a run before left after its commit (the LogChunk record of
//!    `pendingChunk`, the dedup records, the delete of entries below `archivedLogs`), then
//!    removes objects of chunk numbers already committed that no record names;
//! 3. while a full chunk is there (`chunkSize` counted logs from `archivedLogs`, and
//!    `currentLogs >= archiveThreshold`; on a flush also the final partial chunk): build it,
//!    upload it under a key new for this attempt, commit LogMetadata by compare-and-set (the
//!    commit point, fenced on the lock and on the chunk number; it names the chunk in
//!    `pendingChunk`), then write its LogChunk record and the dedup records of its messages,
//!    delete its entries and clear `pendingChunk`;
//! 4. releases the lock.
//!
//! A crash or a stall between any two steps leaves a state the next run completes; a run that
//! wakes after its lock moved on cannot change what its successor committed (no key is ever
//! written twice, and every LogMetadata write is fenced on the lock).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::amqp::{AmqpError, Topology};
use crate::chunk::ChunkError;
use crate::config::Settings;
use crate::domain::EpisodeId;
use crate::faults::{Faults, InjectedFault};
use crate::health::{self, HttpListen, Readiness};
use crate::metrics::ArchiveMetrics;
use crate::mongo::{MongoError, MongoStore};
use crate::object_store::{S3ObjectStore, StoreError};
use crate::retry::{Backoff, Verdict};

mod archiver;
mod requests;
mod retention;
mod sweep;

use requests::consume_events;
use sweep::sweep_loop;

pub use crate::contract::{ArchiveKind, ArchiveRequest};
pub use archiver::{ArchiveOutcome, ChunkArchiver};
pub use retention::{
    ExpiryOutcome, KIND_CHUNKS, KIND_EPISODE, PlannedExpiry, RetentionPlan, RetentionReport,
    effective_limits, episode_due, format_age, parse_age,
};
pub use sweep::{STUCK_LABELS, SweepReport};

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
    #[error(transparent)]
    Injected(#[from] InjectedFault),
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

/// Options beyond the configuration, for tests and embedding.
#[derive(Debug, Default)]
pub struct ArchiveOptions {
    /// Instance id (lease owner, RabbitMQ connection name).
    pub instance: Option<String>,
    /// Fault hooks (tests; see [`crate::faults`]).
    pub faults: Faults,
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
    crate::worker::run_until_drained(main, shutdown, &cancel, drain, "archive").await
}

async fn supervise(
    settings: Settings,
    options: ArchiveOptions,
    store: MongoStore,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) -> Result<(), ArchiveError> {
    if !crate::worker::ensure_schema(&store, &settings.amqp, &cancel).await? {
        return Ok(());
    }
    let backoff = Backoff::new(
        settings.amqp.reconnect_initial(),
        settings.amqp.reconnect_max(),
    );
    let connect_s3 = || async {
        let o = S3ObjectStore::connect(&settings.s3).await?;
        if let Some(cell) = &readiness.s3 {
            let _ = cell.set(o.clone());
        }
        Ok::<_, StoreError>(o)
    };
    let Some(objects) = crate::retry::retry(
        "S3 start-up",
        backoff,
        &cancel,
        |_| Verdict::Retry,
        connect_s3,
    )
    .await?
    else {
        return Ok(());
    };
    let instance = options.instance.unwrap_or_else(|| {
        format!(
            "archive-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let mut archiver =
        ChunkArchiver::new(store, objects, &settings, instance.clone()).with_faults(options.faults);
    archiver.metrics = options.metrics;
    let archiver = Arc::new(archiver);
    let mut sweeper = tokio::spawn(sweep_loop(
        archiver.clone(),
        settings.archive.clone(),
        cancel.clone(),
    ));
    // The retention pass (returns at once unless `retention.enabled`).
    let retention = tokio::spawn(retention::retention_loop(archiver.clone(), cancel.clone()));
    let topology = Topology::new(&settings.amqp);
    let events = crate::worker::reconnecting(
        &settings.amqp,
        &instance,
        &readiness,
        &cancel,
        |e| matches!(e, ArchiveError::Injected(_)),
        |conn| {
            let (archiver, settings, topology, cancel) = (
                archiver.clone(),
                settings.clone(),
                topology.clone(),
                cancel.clone(),
            );
            async move { consume_events(&archiver, &settings, &topology, &conn, &cancel).await }
        },
    );
    // Whichever of the two ends first (shutdown, or a fault-plan stop) ends the other.
    let ended = tokio::select! {
        r = events => {
            cancel.cancel();
            let _ = sweeper.await;
            r
        }
        r = &mut sweeper => {
            cancel.cancel();
            r.unwrap_or(Ok(()))
        }
    };
    let _ = retention.await;
    ended
}
