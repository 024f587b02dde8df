//! The ingest-worker: RabbitMQ partition queues → MongoDB, exactly once, in order.
//!
//! Each partition queue has one exclusive consumer, so one worker handles an episode at a time,
//! batch after batch, in publish order; other workers stand by and take over when it dies (its
//! unacked messages return to their places in the queue). Each worker owns at most its fair
//! share, `ceil(partitions / live workers)` (live workers: consumers on the workers queue), and
//! hands the rest over at a batch boundary by closing their channels, so an added worker gets
//! partitions and a departed one's are taken over.
//! Taking a partition claims a new ownership epoch (a global counter in MongoDB), higher
//! than any before; each count a worker writes into an episode's LogMetadata carries it, so a
//! previous owner that wakes up late is fenced off. For every batch ([`batch`] has the detail):
//!
//! 1. decode each delivery; an invalid one is republished (with confirm) to the dead-letter
//!    exchange with its reason in `x-logfleet-reason`, and acked;
//! 2. look up which messages the store already holds and number each episode's messages
//!    ([`SequenceLedger::plan`]);
//! 3. insert the LogEntries (unordered insertMany, deterministic `_id`s): entries an earlier
//!    try wrote are refused as duplicates; a message the store refuses for good is
//!    dead-lettered and the messages after it are numbered again;
//! 4. count each episode's new range into LogMetadata by compare-and-set, fenced by the epoch;
//! 5. dead-letter reused message ids, publish threshold events (with confirm);
//! 6. ack the batch, only now that everything it caused is durable.
//!
//! A failure in 2-5 is retried with backoff from step 2: a repeat finds what the try before
//! wrote. A batch whose delivery channel closed is not written further; it returns to the
//! queue for the partition's next owner.

mod batch;
pub mod partition;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Connection;
use lapin::options::BasicAckOptions;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::{AmqpError, ConfirmedPublisher, Topology};
use crate::config::Settings;
use crate::domain::EpisodeId;
use crate::faults::{Faults, InjectedFault};
use crate::health::{self, HttpListen, Readiness};
use crate::ledger::SequenceLedger;
use crate::metrics::IngestMetrics;
use crate::model::LogMetadata;
use crate::mongo::{MongoError, MongoStore};
use batch::{BatchOutcome, Partition, handle_batch, next_delivery, scopeguard};
use partition::{FairShare, consume_exclusive, keep_fair_share};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("RabbitMQ consumer of {0} was cancelled by the broker")]
    ConsumerEnded(String),
    #[error(transparent)]
    Injected(#[from] InjectedFault),
    /// The partition's delivery channel closed while a batch was in hand.
    #[error("the delivery channel of {0} closed")]
    ChannelGone(String),
    /// A newer owner of the partition counted one of the batch's episodes.
    #[error(transparent)]
    Fenced(#[from] crate::ledger::Fenced),
    /// The store contradicts the numbering (see [`crate::ledger::Inconsistent`]).
    #[error("numbering: {0}")]
    Inconsistent(String),
    #[error("HTTP endpoints: {0}")]
    Http(String),
}

impl From<lapin::Error> for IngestError {
    fn from(e: lapin::Error) -> Self {
        IngestError::Amqp(e.into())
    }
}

impl From<crate::ledger::Inconsistent> for IngestError {
    fn from(e: crate::ledger::Inconsistent) -> Self {
        IngestError::Inconsistent(e.to_string())
    }
}

/// Options beyond the configuration, for tests and embedding.
#[derive(Debug, Default)]
pub struct IngestOptions {
    /// Name of the worker instance: RabbitMQ connection name and consumer tag prefix.
    pub instance: Option<String>,
    /// Fault hooks (tests; see [`crate::faults`]).
    pub faults: Faults,
    /// The worker's metrics; shared with the caller so tests can read them.
    pub metrics: Arc<IngestMetrics>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen; `None` means `ingest.http_listen`.
    pub http: Option<HttpListen>,
}

/// Runs an ingest-worker until `shutdown` resolves, then drains in-flight batches.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IngestError> {
    run_with(settings, IngestOptions::default(), shutdown).await
}

pub async fn run_with(
    settings: Settings,
    mut options: IngestOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IngestError> {
    let cancel = CancellationToken::new();
    let drain = Duration::from_secs(settings.ingest.drain_deadline_secs);
    let store = MongoStore::connect(&settings.mongo).await?;
    let readiness = Arc::new(Readiness {
        mongo: Some(store.clone()),
        ..Default::default()
    });
    let _http = health::start(
        options.http.take(),
        &settings.ingest.http_listen,
        options.metrics.registry.clone(),
        readiness.clone(),
    )
    .await
    .map_err(|e| IngestError::Http(e.to_string()))?;
    let main = supervise(settings, options, store, readiness, cancel.clone());
    crate::worker::run_until_drained(main, shutdown, &cancel, drain, "ingest").await
}

/// Shared state of one worker's consumers.
struct Worker {
    settings: Settings,
    store: MongoStore,
    topology: Topology,
    ledger: SequenceLedger,
    instance: String,
    /// Fault hooks (tests; see [`crate::faults`]).
    faults: Faults,
    metrics: Arc<IngestMetrics>,
    readiness: Arc<Readiness>,
}

impl Worker {
    /// How often a standby looks for a partition, an idle owner for a hand-over, and the
    /// worker recounts the live workers.
    fn standby_poll(&self) -> Duration {
        Duration::from_millis(self.settings.ingest.standby_poll_ms.max(10))
    }
}

async fn supervise(
    settings: Settings,
    options: IngestOptions,
    store: MongoStore,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    if !crate::worker::ensure_schema(&store, &settings.amqp, &cancel).await? {
        return Ok(());
    }
    let instance = options
        .instance
        .unwrap_or_else(|| format!("ingest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let worker = Arc::new(Worker {
        topology: Topology::new(&settings.amqp),
        ledger: SequenceLedger,
        store,
        instance,
        faults: options.faults,
        metrics: options.metrics,
        readiness,
        settings,
    });
    crate::worker::reconnecting(
        &worker.settings.amqp,
        &worker.instance,
        &worker.readiness,
        &cancel,
        |e| matches!(e, IngestError::Injected(_)),
        |conn| {
            let worker = worker.clone();
            let cancel = cancel.clone();
            async move { session(&worker, &conn, &cancel).await }
        },
    )
    .await
}

/// One connection's life: declare the topology, consume every partition queue.
async fn session(
    worker: &Arc<Worker>,
    conn: &Arc<Connection>,
    cancel: &CancellationToken,
) -> Result<(), IngestError> {
    worker.topology.declare(conn).await?;
    let publisher = ConfirmedPublisher::open(conn).await?;
    let result = consume_partitions(worker, conn, &publisher, cancel).await;
    // Every channel closed before the connection is (see `amqp::close_channel`), whatever
    // ended the session.
    crate::amqp::close_channel(publisher.channel(), "session done").await;
    result
}

/// Consumes every partition this worker may own (and keeps its fair share, when on) until
/// `cancel` fires or a partition task fails.
async fn consume_partitions(
    worker: &Arc<Worker>,
    conn: &Arc<Connection>,
    publisher: &ConfirmedPublisher,
    cancel: &CancellationToken,
) -> Result<(), IngestError> {
    let stop = cancel.child_token();
    let mut tasks = JoinSet::new();
    let queues = &worker.topology.partition_queues;
    let share = Arc::new(FairShare::new(
        queues.len(),
        worker.settings.ingest.fair_share,
    ));
    if worker.settings.ingest.fair_share {
        let presence = worker
            .topology
            .announce_worker(conn, &format!("{}-presence", worker.instance))
            .await?;
        tasks.spawn(keep_fair_share(
            worker.clone(),
            presence,
            share.clone(),
            stop.clone(),
        ));
    }
    // Try the partitions in a per-worker rotation, so workers that start together spread
    // the partitions between them instead of racing for the same one first.
    let offset = rand::random::<u64>() as usize % queues.len();
    for queue in queues.iter().cycle().skip(offset).take(queues.len()) {
        let conn = conn.clone();
        tasks.spawn(consume_partition(
            worker.clone(),
            conn,
            publisher.clone(),
            queue.clone(),
            share.clone(),
            stop.clone(),
        ));
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let r = joined.unwrap_or_else(|e| {
            Err(IngestError::ConsumerEnded(format!(
                "partition task panicked: {e}"
            )))
        });
        if let Err(e) = r {
            stop.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Why a worker stopped consuming a partition it owned.
enum Ownership {
    /// Shutdown (or a batch abandoned by it).
    Stopped,
    /// Handed over to keep the fair share: the channel is closed, and its unacked messages
    /// return to their places for the next owner, as when a worker dies.
    Released,
    /// Lost: the delivery channel closed (a consumer timeout, a broker restart), or a newer
    /// owner counted one of its episodes. The batch in hand goes back unwritten; the worker
    /// stands by for the partition again.
    Lost,
}

async fn consume_partition(
    worker: Arc<Worker>,
    conn: Arc<Connection>,
    publisher: ConfirmedPublisher,
    queue: String,
    share: Arc<FairShare>,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let prefetch = worker.settings.ingest.prefetch;
    let tag = format!("{}-{}", worker.instance, queue);
    let poll = worker.standby_poll();
    loop {
        let Some((channel, consumer)) =
            consume_exclusive(&conn, &queue, &tag, prefetch, poll, &*share, &stop).await?
        else {
            return Ok(());
        };
        // A new ownership: a new epoch, higher than any before, fences the previous owner.
        let epoch = match worker
            .store
            .claim_ingest_epoch(&queue, &worker.instance)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                share.released();
                crate::amqp::close_channel(&channel, "no epoch").await;
                return Err(e.into());
            }
        };
        tracing::info!(queue, epoch, "partition owned");
        let part = Partition {
            queue: &queue,
            channel: &channel,
            epoch,
        };
        let outcome = own_partition(&worker, &publisher, &part, consumer, &share, &stop).await;
        match outcome {
            // `take_release` already counted it out.
            Ok(Ownership::Released) => {
                // Closing the channel hands back every unacked delivery at once, before the
                // broker lets another consumer in.
                channel.close(200, "fair share".into()).await?;
                tracing::info!(queue, "partition handed over to keep the fair share");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            Ok(Ownership::Stopped) => {
                share.released();
                crate::amqp::close_channel(&channel, "stopped").await;
                return Ok(());
            }
            Ok(Ownership::Lost) => {
                share.released();
                crate::amqp::close_channel(&channel, "partition lost").await;
                tracing::warn!(queue, epoch, "partition lost; standing by for it");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            Err(e) => {
                share.released();
                crate::amqp::close_channel(&channel, "batch failed").await;
                return Err(e);
            }
        }
    }
}

/// Consumes a partition this worker owns, batch after batch, until shutdown or a hand-over.
async fn own_partition(
    worker: &Arc<Worker>,
    publisher: &ConfirmedPublisher,
    part: &Partition<'_>,
    mut consumer: lapin::Consumer,
    share: &FairShare,
    stop: &CancellationToken,
) -> Result<Ownership, IngestError> {
    let (queue, channel) = (part.queue, part.channel);
    let prefetch = worker.settings.ingest.prefetch;
    let poll = worker.standby_poll();
    let metrics = worker.metrics.clone();
    metrics.partitions_owned.inc();
    let _owned = scopeguard(move || metrics.partitions_owned.dec());
    let linger = Duration::from_millis(worker.settings.ingest.batch_linger_ms);
    let max_wait = Duration::from_millis(worker.settings.ingest.batch_max_wait_ms);
    // Each partition holds its own episodes, so its LogMetadata cache needs no lock.
    let mut cache: HashMap<EpisodeId, LogMetadata> = HashMap::new();
    loop {
        // A batch boundary: everything delivered so far is acked.
        if share.take_release() {
            return Ok(Ownership::Released);
        }
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(Ownership::Stopped),
            d = consumer.next() => d,
            // Idle: look at the share again.
            _ = tokio::time::sleep(poll) => continue,
        };
        let mut batch = vec![next_delivery(first, queue)?];
        let mut bytes = batch[0].data.len();
        // The batch grows while deliveries keep coming (a backlog streams in faster than one
        // every `linger`), up to a full prefetch or `max_wait` after its first delivery: a
        // backlog makes full batches, and with them fewer LogMetadata counts per log.
        let latest = tokio::time::Instant::now() + max_wait;
        while batch.len() < usize::from(prefetch) && bytes < worker.settings.ingest.max_batch_bytes
        {
            let deadline = (tokio::time::Instant::now() + linger).min(latest);
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(d) => {
                    let d = next_delivery(d, queue)?;
                    bytes += d.data.len();
                    batch.push(d);
                }
                Err(_) => break,
            }
        }
        let held = batch.len() as i64;
        worker.metrics.messages_consumed.inc_by(held as u64);
        worker.metrics.prefetch_in_use.add(held);
        let outcome = handle_batch(worker, publisher, part, &batch, &mut cache, stop).await;
        worker.metrics.prefetch_in_use.sub(held);
        match outcome? {
            BatchOutcome::Done { ack_up_to } => {
                // `multiple` acks every delivery up to the tag not acked yet.
                if let Some(last) = ack_up_to {
                    channel
                        .basic_ack(last, BasicAckOptions { multiple: true })
                        .await?;
                }
                worker.metrics.messages_acked.inc_by(held as u64);
            }
            // Shutdown while retrying: leave the batch unacked; it returns to the queue.
            BatchOutcome::Abandoned => {
                worker
                    .metrics
                    .batches_abandoned
                    .with_label_values(&["shutdown"])
                    .inc();
                return Ok(Ownership::Stopped);
            }
            BatchOutcome::ChannelGone => {
                worker
                    .metrics
                    .batches_abandoned
                    .with_label_values(&["channel_gone"])
                    .inc();
                return Ok(Ownership::Lost);
            }
            BatchOutcome::Fenced => {
                worker
                    .metrics
                    .batches_abandoned
                    .with_label_values(&["fenced"])
                    .inc();
                return Ok(Ownership::Lost);
            }
        }
    }
}
