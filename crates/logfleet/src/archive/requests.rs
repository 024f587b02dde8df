//! Archive requests on `{prefix}.archive.events`: threshold events from the ingest-workers and
//! flushes from operators; each is acked when done and dead-lettered when it cannot be.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, AmqpError, ConfirmedPublisher, Topology};
use crate::config::{ArchiveSettings, Settings};
use crate::object_store::ObjectStore;
use crate::retry::Backoff;

use super::{ArchiveError, ArchiveOutcome, ChunkArchiver};
use crate::contract::{ArchiveKind, ArchiveRequest};

/// Tries of a threshold event before it is left to the sweep.
const THRESHOLD_TRIES: u32 = 3;

pub(super) async fn consume_events<S: ObjectStore + 'static>(
    archiver: &Arc<ChunkArchiver<S>>,
    settings: &Settings,
    topology: &Topology,
    conn: &lapin::Connection,
    cancel: &CancellationToken,
) -> Result<(), ArchiveError> {
    topology.declare(conn).await?;
    let publisher = ConfirmedPublisher::open(conn).await?;
    let result = match conn.create_channel().await {
        Ok(channel) => {
            let r = consume_on(archiver, settings, topology, &publisher, &channel, cancel).await;
            crate::amqp::close_channel(&channel, "consumer done").await;
            r
        }
        Err(e) => Err(e.into()),
    };
    // Every channel closed before the connection is (see `amqp::close_channel`), whatever
    // ended the session.
    crate::amqp::close_channel(publisher.channel(), "session done").await;
    result
}

/// Consumes archive requests on `channel` until `cancel` fires or the session fails, running
/// up to `archive.concurrency` of them at once.
async fn consume_on<S: ObjectStore + 'static>(
    archiver: &Arc<ChunkArchiver<S>>,
    settings: &Settings,
    topology: &Topology,
    publisher: &ConfirmedPublisher,
    channel: &lapin::Channel,
    cancel: &CancellationToken,
) -> Result<(), ArchiveError> {
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
    let mut injected = None;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e @ ArchiveError::Injected(_))) = done {
            // An injected crash: the rest stops where it is, as in a dead process.
            tasks.abort_all();
            injected.get_or_insert(e);
        }
    }
    injected.map_or(result, Err)
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
    let mut failures = 0;
    loop {
        let retry_reason = match archiver.archive_episode(ep, request.kind).await {
            Ok(ArchiveOutcome::Done { .. }) | Ok(ArchiveOutcome::Unknown) => {
                archiver.note_success(ep);
                break;
            }
            // Threshold: the holder, or the next sweep, archives what is due.
            Ok(ArchiveOutcome::Busy) if request.kind == ArchiveKind::Threshold => break,
            Ok(ArchiveOutcome::Busy) => "the archive lock is held by another worker".to_owned(),
            Ok(ArchiveOutcome::Gap { at }) => {
                format!("log {at} is counted but missing from MongoDB")
            }
            Err(e @ ArchiveError::Injected(_)) => return Err(e),
            Err(e) => {
                failures += 1;
                archiver.note_failure(ep, &e);
                // A threshold event is a hint: after a few failures it is acked and the episode
                // is left to the sweep (it stays flagged due), so a failing episode never holds
                // one of this worker's archive slots for good.
                if request.kind == ArchiveKind::Threshold && failures >= THRESHOLD_TRIES {
                    tracing::warn!(episode = %ep, error = %e, "threshold event given up after {THRESHOLD_TRIES} tries; the sweep takes the episode over");
                    break;
                }
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
