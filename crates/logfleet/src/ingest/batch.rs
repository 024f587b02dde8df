//! One batch of deliveries: decode, number, write, publish threshold events.

use std::collections::HashMap;
use std::time::Duration;

use bson::DateTime;
use lapin::message::Delivery;

use super::{IngestError, Worker};
use crate::amqp::{self, ConfirmedPublisher};
use crate::contract::{self, LogMessage, MessageProperties};
use crate::domain::EpisodeId;
use crate::faults::FaultPoint;
use crate::ledger::Plan;
use crate::model::{LogEntry, LogMetadata};
use crate::mongo::{Decision, MongoError};
use crate::retry::Backoff;
use tokio_util::sync::CancellationToken;

pub(super) fn next_delivery(
    d: Option<lapin::Result<Delivery>>,
    queue: &str,
) -> Result<Delivery, IngestError> {
    match d {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(e.into()),
        None => Err(IngestError::ConsumerEnded(queue.to_owned())),
    }
}

pub(super) enum BatchOutcome {
    Done,
    Abandoned,
}

pub(super) async fn handle_batch(
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
        match contract::decode(&d.data, props, &worker.settings.limits) {
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
                    amqp::request_archive(
                        publisher,
                        &worker.topology,
                        &ep,
                        contract::ArchiveKind::Threshold,
                    )
                    .await?;
                    worker.metrics.threshold_events.inc();
                    tracing::info!(episode = %ep, "threshold reached: archive event published");
                }
                return Ok(BatchOutcome::Done);
            }
            Err(e @ IngestError::Injected(_)) => return Err(e),
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
                entries.push(
                    LogEntry::from_new_log(ep, log, seq, now)
                        .map_err(|e| IngestError::Encode(e.to_string()))?,
                );
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
    worker.faults.at(FaultPoint::IngestAfterReserve).await?;
    for slice in entries.chunks(worker.settings.ingest.max_batch_logs) {
        let timer = worker.metrics.insert_seconds.start_timer();
        let out = worker.store.insert_entries(slice).await?;
        timer.observe_duration();
        worker.metrics.logs_inserted.inc_by(out.inserted as u64);
        worker.metrics.logs_duplicate.inc_by(out.duplicates as u64);
    }
    worker.faults.at(FaultPoint::IngestAfterInsert).await?;
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
    let updated = worker
        .store
        .update_metadata(ep, Some(current), |m| {
            let plan = worker.ledger.plan(m, msgs, now);
            *m = plan.updated.clone();
            Ok::<_, IngestError>(Decision::Write(plan))
        })
        .await?
        .ok_or_else(|| MongoError::Missing(format!("LogMetadata of {ep} disappeared")))?;
    if cache.len() >= 10_000 {
        cache.clear();
    }
    cache.insert(ep.clone(), updated.metadata.clone());
    let mut plan = updated.value;
    plan.updated = updated.metadata;
    Ok(plan)
}

/// Runs `f` when dropped: keeps a gauge right however a task ends.
pub(super) fn scopeguard(f: impl FnOnce()) -> impl Drop {
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
