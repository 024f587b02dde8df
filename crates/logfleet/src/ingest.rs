//! The ingest-worker: RabbitMQ partition queues → MongoDB, exactly once, in order.
//!
//! Each partition queue has one exclusive consumer, so one worker handles an episode at a time,
//! batch after batch, in publish order; other workers stand by and take over when it dies (its
//! unacked messages return to their places in the queue). Each worker owns at most its fair
//! share, `ceil(partitions / live workers)` (live workers: consumers on the workers queue), and
//! hands the rest over at a batch boundary by closing their channels, so an added worker gets
//! partitions and a departed one's are taken over.
//! For every batch:
//!
//! 1. decode each delivery; an invalid one is republished (with confirm) to the dead-letter
//!    exchange with its reason in `x-logfleet-reason`;
//! 2. number each episode's messages with the [`SequenceLedger`] and write the new LogMetadata
//!    by compare-and-set: ranges and statistics change together or not at all;
//! 3. insert the LogEntries with unordered insertMany; entries an earlier try already wrote are
//!    refused by the unique [episodeId, sequenceNumber] index and counted as duplicates;
//! 4. publish a threshold event (with confirm) when an episode's `currentLogs` reached its
//!    `archiveThreshold`;
//! 5. ack the batch, only now that everything it caused is durable.
//!
//! Any failure in 2-4 is retried with backoff, from step 2: every step is idempotent because a
//! redelivered message finds its range in the ledger.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bson::DateTime;
use bson::oid::ObjectId;
use futures::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::{Connection, message::Delivery};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, AmqpError, Backoff, ConfirmedPublisher, Topology};
use crate::config::Settings;
use crate::domain::EpisodeId;
use crate::health::{self, HttpListen, Readiness};
use crate::ledger::{Plan, SequenceLedger};
use crate::message::{self, LogMessage, MessageProperties};
use crate::metrics::IngestMetrics;
use crate::model::{LogEntry, LogMetadata};
use crate::mongo::{MongoError, MongoStore};

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
    #[error("stopped by the fault plan at {0:?}")]
    Crashed(IngestStep),
    #[error("HTTP endpoints: {0}")]
    Http(String),
}

impl From<lapin::Error> for IngestError {
    fn from(e: lapin::Error) -> Self {
        IngestError::Amqp(e.into())
    }
}

/// A point in the handling of a batch where a test may make the worker die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestStep {
    /// The ranges are reserved in LogMetadata; no entry is written yet.
    AfterReserve,
    /// The entries are written; the batch is not acked.
    AfterInsert,
}

/// Makes the worker die, without acking, the `nth` time (1-based) a batch reaches `step`:
/// its connection closes and its unacked messages go back to the queue.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub step: IngestStep,
    pub nth: usize,
}

/// Options beyond the configuration, for tests and embedding.
#[derive(Debug, Default)]
pub struct IngestOptions {
    /// Name of the worker instance: RabbitMQ connection name and consumer tag prefix.
    pub instance: Option<String>,
    pub fault: Option<FaultPlan>,
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
    crate::run_until_drained(main, shutdown, &cancel, drain, "ingest").await
}

/// Shared state of one worker's consumers.
struct Worker {
    settings: Settings,
    store: MongoStore,
    topology: Topology,
    ledger: SequenceLedger,
    instance: String,
    fault: Option<FaultPlan>,
    /// How many batches reached the fault plan's step so far.
    fault_hits: AtomicUsize,
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
    let instance = options
        .instance
        .unwrap_or_else(|| format!("ingest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let worker = Arc::new(Worker {
        topology: Topology::new(&settings.amqp),
        ledger: SequenceLedger {
            window: settings.ingest.ledger_window,
        },
        store,
        instance,
        fault: options.fault,
        fault_hits: AtomicUsize::new(0),
        metrics: options.metrics,
        readiness,
        settings,
    });
    backoff.reset();
    loop {
        let Some(conn) =
            amqp::connect_with_retry(&worker.settings.amqp, &worker.instance, &cancel).await
        else {
            return Ok(());
        };
        let conn = Arc::new(conn);
        tracing::info!(instance = %worker.instance, "connected to RabbitMQ");
        worker.readiness.set_amqp_connected(true);
        let result = session(&worker, &conn, &cancel).await;
        worker.readiness.set_amqp_connected(false);
        let _ = conn.close(200, "bye".into()).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e @ IngestError::Crashed(_)) => return Err(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "ingest session ended; reconnecting");
                tokio::select! { _ = cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(wait) => {} }
            }
        }
    }
}

/// One connection's life: declare the topology, consume every partition queue.
async fn session(
    worker: &Arc<Worker>,
    conn: &Arc<Connection>,
    cancel: &CancellationToken,
) -> Result<(), IngestError> {
    worker.topology.declare(conn).await?;
    let publisher = ConfirmedPublisher::open(conn).await?;
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

/// This worker's share of the partitions: at most `ceil(partitions / live workers)`, so an
/// added worker gets partitions to consume and a departed one's are taken over by the rest.
/// Shared by one session's partition tasks; the counts are of partitions owned or being taken.
struct FairShare {
    partitions: usize,
    /// Partitions owned, plus attempts in progress.
    owned: AtomicUsize,
    /// The most this worker should own now.
    target: AtomicUsize,
    /// Partitions to hand over at their next batch boundary.
    to_release: AtomicUsize,
}

impl FairShare {
    /// Without fair share, the target is every partition (first come, first served).
    fn new(partitions: usize, enabled: bool) -> Self {
        Self {
            partitions,
            owned: AtomicUsize::new(0),
            // Until the first count of live workers: alone.
            target: AtomicUsize::new(if enabled { partitions } else { usize::MAX }),
            to_release: AtomicUsize::new(0),
        }
    }

    /// Sets the target for `live` workers and how many partitions to hand over to reach it.
    fn rebalance(&self, live: usize) -> usize {
        let target = self.partitions.div_ceil(live.max(1));
        self.target.store(target, Ordering::SeqCst);
        let over = self.owned.load(Ordering::SeqCst).saturating_sub(target);
        self.to_release.store(over, Ordering::SeqCst);
        target
    }

    /// Claims one hand-over, if any is due, and counts that partition out at once (so the
    /// next recount does not ask for it again).
    fn take_release(&self) -> bool {
        let claimed = self
            .to_release
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if claimed {
            self.released();
        }
        claimed
    }

    /// A partition is no longer owned.
    fn released(&self) {
        let _ = self
            .owned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

impl amqp::TakeGate for FairShare {
    fn reserve(&self) -> bool {
        let target = self.target.load(Ordering::SeqCst);
        self.owned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < target).then_some(n + 1)
            })
            .is_ok()
    }

    fn unreserve(&self) {
        self.released();
    }
}

/// Recounts the live workers every standby poll and sets this worker's share.
async fn keep_fair_share(
    worker: Arc<Worker>,
    (presence, _announced): (lapin::Channel, lapin::Consumer),
    share: Arc<FairShare>,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let poll = worker.standby_poll();
    let mut last = 0;
    loop {
        let live = worker.topology.live_workers(&presence).await? as usize;
        let target = share.rebalance(live);
        if target != last {
            tracing::info!(
                live_workers = live,
                partitions_at_most = target,
                "fair share of the partitions"
            );
            last = target;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Why a worker stopped consuming a partition it owned.
enum Ownership {
    /// Shutdown (or a batch abandoned by it).
    Stopped,
    /// Handed over to keep the fair share: the channel is closed, and its unacked messages
    /// return to their places for the next owner, as when a worker dies.
    Released,
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
            amqp::consume_exclusive(&conn, &queue, &tag, prefetch, poll, &*share, &stop).await?
        else {
            return Ok(());
        };
        let outcome = own_partition(
            &worker, &publisher, &queue, &channel, consumer, &share, &stop,
        )
        .await;
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
                return Ok(());
            }
            Err(e) => {
                share.released();
                return Err(e);
            }
        }
    }
}

/// Consumes a partition this worker owns, batch after batch, until shutdown or a hand-over.
async fn own_partition(
    worker: &Arc<Worker>,
    publisher: &ConfirmedPublisher,
    queue: &str,
    channel: &lapin::Channel,
    mut consumer: lapin::Consumer,
    share: &FairShare,
    stop: &CancellationToken,
) -> Result<Ownership, IngestError> {
    let prefetch = worker.settings.ingest.prefetch;
    let poll = worker.standby_poll();
    let metrics = worker.metrics.clone();
    metrics.partitions_owned.inc();
    let _owned = scopeguard(move || metrics.partitions_owned.dec());
    let linger = Duration::from_millis(worker.settings.ingest.batch_linger_ms);
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
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < usize::from(prefetch) && bytes < worker.settings.ingest.max_batch_bytes
        {
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
        let outcome = handle_batch(worker, publisher, queue, &batch, &mut cache, stop).await;
        worker.metrics.prefetch_in_use.sub(held);
        match outcome? {
            BatchOutcome::Done => {
                let last = batch.last().map(|d| d.delivery_tag).unwrap_or_default();
                channel
                    .basic_ack(last, BasicAckOptions { multiple: true })
                    .await?;
                worker.metrics.messages_acked.inc_by(held as u64);
            }
            // Shutdown while retrying: leave the batch unacked; it returns to the queue.
            BatchOutcome::Abandoned => return Ok(Ownership::Stopped),
        }
    }
}

fn next_delivery(d: Option<lapin::Result<Delivery>>, queue: &str) -> Result<Delivery, IngestError> {
    match d {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(e.into()),
        None => Err(IngestError::ConsumerEnded(queue.to_owned())),
    }
}

enum BatchOutcome {
    Done,
    Abandoned,
}

async fn handle_batch(
    worker: &Worker,
    publisher: &ConfirmedPublisher,
    queue: &str,
    batch: &[Delivery],
    cache: &mut HashMap<EpisodeId, LogMetadata>,
    stop: &CancellationToken,
) -> Result<BatchOutcome, IngestError> {
    let mut valid = Vec::with_capacity(batch.len());
    for d in batch {
        if d.redelivered {
            worker.metrics.messages_redelivered.inc();
        }
        let props = MessageProperties {
            message_id: d.properties.message_id().as_ref().map(|s| s.as_str()),
            content_type: d.properties.content_type().as_ref().map(|s| s.as_str()),
            content_encoding: d.properties.content_encoding().as_ref().map(|s| s.as_str()),
        };
        match message::decode(&d.data, props, &worker.settings.limits) {
            Ok(m) => {
                worker.metrics.logs_consumed.inc_by(m.logs.len() as u64);
                valid.push(m);
            }
            Err(reason) => {
                let kind = reason.kind();
                let reason = reason.to_string();
                tracing::warn!(queue, routing_key = %d.routing_key, %reason, bytes = d.data.len(), "dead-lettering invalid message");
                let props = amqp::dead_letter_properties(
                    &d.properties,
                    &reason,
                    queue,
                    d.routing_key.as_str(),
                );
                publisher
                    .publish(
                        &worker.topology.dead_letter_exchange,
                        d.routing_key.as_str(),
                        &d.data,
                        props,
                    )
                    .await?;
                worker
                    .metrics
                    .messages_dead_lettered
                    .with_label_values(&[kind])
                    .inc();
            }
        }
    }
    if valid.is_empty() {
        return Ok(BatchOutcome::Done);
    }
    // Group by episode, keeping delivery order inside each episode.
    let mut groups: Vec<(EpisodeId, Vec<&LogMessage>)> = Vec::new();
    for m in &valid {
        match groups.iter_mut().find(|(ep, _)| *ep == m.episode_id) {
            Some((_, msgs)) => msgs.push(m),
            None => groups.push((m.episode_id.clone(), vec![m])),
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        match write_batch(worker, &groups, cache).await {
            Ok(events) => {
                for ep in events {
                    let body = serde_json::json!({"episodeId": ep.as_str(), "kind": "threshold"})
                        .to_string();
                    let id = uuid::Uuid::new_v4().to_string();
                    publisher
                        .publish_json(
                            &worker.topology.archive_exchange,
                            ep.as_str(),
                            body.as_bytes(),
                            Some(&id),
                        )
                        .await?;
                    worker.metrics.threshold_events.inc();
                    tracing::info!(episode = %ep, "threshold reached: archive event published");
                }
                return Ok(BatchOutcome::Done);
            }
            Err(e @ IngestError::Crashed(_)) => return Err(e),
            Err(e) => {
                cache.clear();
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "batch write failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(BatchOutcome::Abandoned),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Steps 2-3 of a batch. Returns the episodes that need a threshold event.
async fn write_batch(
    worker: &Worker,
    groups: &[(EpisodeId, Vec<&LogMessage>)],
    cache: &mut HashMap<EpisodeId, LogMetadata>,
) -> Result<Vec<EpisodeId>, IngestError> {
    let now = DateTime::now();
    let mut entries = Vec::new();
    let mut replayed = Vec::new();
    let mut events = Vec::new();
    for (ep, msgs) in groups {
        let plan = reserve(worker, ep, msgs, cache, now).await?;
        let archived = plan.updated.archived_logs;
        if tracing::enabled!(tracing::Level::TRACE) {
            for (msg, a) in msgs.iter().zip(&plan.assignments) {
                tracing::trace!(instance = %worker.instance, episode = %ep, message_id = %msg.message_id, first = a.first_sequence, fresh = a.fresh, first_log = %msg.logs[0].message, "numbered");
            }
        }
        for (msg, a) in msgs.iter().zip(&plan.assignments) {
            for (k, log) in msg.logs.iter().enumerate() {
                let seq = a.first_sequence + k as i64;
                // A replayed log below archivedLogs is in S3 already: writing it again would
                // bring back an entry the archive-worker deleted.
                if !a.fresh && seq < archived {
                    continue;
                }
                entries.push(LogEntry {
                    id: ObjectId::new(),
                    episode_id: ep.clone(),
                    timestamp: log.timestamp,
                    level: log.level,
                    message: log.message.clone(),
                    metadata: log.metadata.clone(),
                    sequence_number: seq,
                    created_at: now,
                });
            }
        }
        let threshold = i64::from(plan.updated.archive_threshold);
        if plan.has_replays() {
            replayed.push((
                ep,
                plan.assignments
                    .iter()
                    .filter(|a| !a.fresh)
                    .map(|a| a.first_sequence)
                    .min(),
            ));
        }
        if plan.crossed_threshold || (plan.has_replays() && plan.updated.current_logs >= threshold)
        {
            events.push(ep.clone());
        }
    }
    worker.fault_point(IngestStep::AfterReserve)?;
    for slice in entries.chunks(worker.settings.ingest.max_batch_logs) {
        let timer = worker.metrics.insert_seconds.start_timer();
        let out = worker.store.insert_entries(slice).await?;
        timer.observe_duration();
        worker.metrics.logs_inserted.inc_by(out.inserted as u64);
        worker.metrics.logs_duplicate.inc_by(out.duplicates as u64);
    }
    worker.fault_point(IngestStep::AfterInsert)?;
    // A replayed entry may have been archived and deleted between our read of archivedLogs and
    // our insert; if so, the insert brought it back and it must go again.
    for (ep, lowest) in replayed {
        let fresh = worker.store.metadata_of(ep).await?;
        if let (Some(m), Some(lowest)) = (fresh, lowest) {
            if lowest < m.archived_logs {
                worker
                    .store
                    .delete_entries_below(ep, m.archived_logs)
                    .await?;
            }
            cache.insert(ep.clone(), m);
        }
    }
    Ok(events)
}

/// Numbers one episode's messages and writes the ledger by compare-and-set, retrying on conflict.
async fn reserve(
    worker: &Worker,
    ep: &EpisodeId,
    msgs: &[&LogMessage],
    cache: &mut HashMap<EpisodeId, LogMetadata>,
    now: DateTime,
) -> Result<Plan, IngestError> {
    loop {
        let current = match cache.remove(ep) {
            Some(m) => m,
            None => {
                let s = &worker.settings.ingest;
                worker
                    .store
                    .metadata_or_create(ep, s.archive_threshold, s.chunk_size)
                    .await?
            }
        };
        let plan = worker.ledger.plan(&current, msgs, now);
        if worker
            .store
            .replace_metadata(current.version, &plan.updated)
            .await?
        {
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(ep.clone(), plan.updated.clone());
            return Ok(plan);
        }
        tracing::debug!(episode = %ep, "LogMetadata changed under us; re-reading");
    }
}

impl Worker {
    fn fault_point(&self, step: IngestStep) -> Result<(), IngestError> {
        match self.fault {
            Some(f) if f.step == step => {
                let hits = self.fault_hits.fetch_add(1, Ordering::SeqCst) + 1;
                if hits == f.nth {
                    tracing::warn!(?step, "fault plan: dying here");
                    return Err(IngestError::Crashed(step));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Runs `f` when dropped: keeps a gauge right however a task ends.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::FairShare;
    use crate::amqp::TakeGate;

    #[test]
    fn fair_share_caps_takes_and_hands_over() {
        let s = FairShare::new(8, true);
        // Alone: every partition.
        assert_eq!(s.rebalance(1), 8);
        for _ in 0..8 {
            assert!(s.reserve());
        }
        assert!(!s.reserve(), "no ninth");
        // A second worker: four to hand over, one at a time.
        assert_eq!(s.rebalance(2), 4);
        for _ in 0..4 {
            assert!(s.take_release());
        }
        assert!(!s.take_release());
        // The next recount asks for nothing more, and there is no room to take one back.
        assert_eq!(s.rebalance(2), 4);
        assert!(!s.take_release());
        assert!(!s.reserve());
        // Three workers: ceil(8 / 3) = 3.
        assert_eq!(s.rebalance(3), 3);
        assert!(s.take_release());
        assert!(!s.take_release());
        // The second worker left: room for a fourth again; a refused attempt gives it back.
        assert_eq!(s.rebalance(2), 4);
        assert!(s.reserve());
        assert!(!s.reserve());
        s.unreserve();
        assert!(s.reserve());
        // Zero live workers counted (the count raced a restart) is treated as one.
        assert_eq!(s.rebalance(0), 8);
        // Fair share off: no cap, nothing handed over.
        let off = FairShare::new(8, false);
        for _ in 0..20 {
            assert!(off.reserve());
        }
        assert!(!off.take_release());
    }
}
