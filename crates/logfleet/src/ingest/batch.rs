//! One batch of deliveries: decode, number, write, count, publish threshold events.
//!
//! The order is what makes a batch safe to repeat and safe against a stalled worker:
//!
//! 1. decode every delivery; an invalid one is dead-lettered with its reason (confirmed) and
//!    acked at once, so a crash later in the batch does not dead-letter it a second time;
//! 2. look up what the store holds of the messages (by their first entry's `_id`, then the
//!    archived messages' records) and number each episode's messages ([`SequenceLedger::plan`]);
//! 3. write the entries (unordered `insertMany`; duplicates of an earlier try are refused and
//!    counted; an entry the server refuses for good gets its message dead-lettered, and the
//!    messages after it are numbered again);
//! 4. count each episode's new range into LogMetadata by compare-and-set ([`count`]), fenced by
//!    this worker's ownership epoch of the partition;
//! 5. dead-letter reused ids, publish threshold events (confirmed);
//! 6. the caller acks the batch.
//!
//! Nothing is counted before it is written, and nothing is acked before it is counted, so a
//! crash or a stall anywhere leaves messages that are redelivered and find their entries. Before
//! writing and before counting the worker checks that its delivery channel is still open: one
//! that lost its partition (a consumer timeout, a broker restart, a hand-over) stops there.

use std::collections::HashMap;
use std::time::Duration;

use bson::DateTime;
use bson::oid::ObjectId;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use super::{IngestError, Worker};
use crate::amqp::{self, ConfirmedPublisher};
use crate::contract::{self, LogMessage, MessageProperties};
use crate::domain::EpisodeId;
use crate::faults::FaultPoint;
use crate::ledger::{Action, CountError, Incoming, Known, Plan, count};
use crate::model::{LogEntry, LogMetadata, MessageKey, digest_of_message, message_entries};
use crate::mongo::{Decision, MongoError};
use crate::retry::Backoff;

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

/// The partition a batch came from.
pub(super) struct Partition<'a> {
    /// Its queue.
    pub queue: &'a str,
    /// The channel its deliveries came on; closed means the partition is no longer ours.
    pub channel: &'a lapin::Channel,
    /// This worker's ownership epoch of it.
    pub epoch: i64,
}

impl Partition<'_> {
    /// Stops here unless the delivery channel is still open.
    fn still_ours(&self) -> Result<(), IngestError> {
        if self.channel.status().connected() {
            Ok(())
        } else {
            Err(IngestError::ChannelGone(self.queue.to_owned()))
        }
    }
}

pub(super) enum BatchOutcome {
    /// Everything the batch caused is durable: ack it up to this delivery tag (`None`: every
    /// delivery was invalid and is acked already).
    Done { ack_up_to: Option<u64> },
    /// Shutdown while retrying: leave the batch unacked; it returns to the queue.
    Abandoned,
    /// The delivery channel closed under the batch (a consumer timeout, a broker restart, a
    /// dropped connection): the partition may be someone else's already, so nothing more of
    /// the batch is written; its messages return to the queue.
    ChannelGone,
    /// Another worker owns the partition now (a newer epoch counted one of its episodes): stop
    /// consuming it.
    Fenced,
}

/// A message to dead-letter: the delivery it came in, the reason, the metric's kind.
struct DeadLetter {
    delivery: usize,
    reason: String,
    kind: &'static str,
}

/// What writing a batch leaves to publish before the ack.
#[derive(Default)]
struct Written {
    dead_letters: Vec<DeadLetter>,
    /// Episodes whose `currentLogs` reached their threshold.
    events: Vec<EpisodeId>,
}

pub(super) async fn handle_batch(
    worker: &Worker,
    publisher: &ConfirmedPublisher,
    part: &Partition<'_>,
    batch: &[Delivery],
    cache: &mut HashMap<EpisodeId, LogMetadata>,
    stop: &CancellationToken,
) -> Result<BatchOutcome, IngestError> {
    let mut valid = Vec::with_capacity(batch.len());
    // The last delivery left for the batch ack (invalid ones are acked one by one).
    let mut ack_up_to = None;
    for (i, d) in batch.iter().enumerate() {
        if d.redelivered {
            worker.metrics.messages_redelivered.inc();
        }
        let props = MessageProperties {
            message_id: d.properties.message_id().as_ref().map(|s| s.as_str()),
            routing_key: Some(d.routing_key.as_str()),
            content_type: d.properties.content_type().as_ref().map(|s| s.as_str()),
            content_encoding: d.properties.content_encoding().as_ref().map(|s| s.as_str()),
        };
        match contract::decode(&d.data, props, &worker.settings.limits) {
            Ok(m) => {
                worker.metrics.logs_consumed.inc_by(m.logs.len() as u64);
                valid.push((i, m));
                ack_up_to = Some(d.delivery_tag);
            }
            Err(reason) => {
                dead_letter(
                    worker,
                    publisher,
                    part.queue,
                    d,
                    &reason.to_string(),
                    reason.kind(),
                )
                .await?;
                // Its dead letter is confirmed: nothing else in the batch depends on it.
                d.acker
                    .ack(lapin::options::BasicAckOptions::default())
                    .await?;
            }
        }
    }
    if valid.is_empty() {
        return Ok(BatchOutcome::Done { ack_up_to });
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let written = loop {
        match write_batch(worker, part, &valid, cache).await {
            Ok(w) => break w,
            Err(e @ IngestError::Injected(_)) => return Err(e),
            Err(IngestError::Fenced(f)) => {
                tracing::warn!(queue = part.queue, error = %f, "partition lost to a newer owner: the batch is left to it");
                return Ok(BatchOutcome::Fenced);
            }
            Err(IngestError::ChannelGone(q)) => {
                tracing::warn!(queue = %q, "delivery channel closed: the batch is left unwritten, it returns to the queue");
                return Ok(BatchOutcome::ChannelGone);
            }
            Err(e) => {
                cache.clear();
                worker.metrics.batch_retries.inc();
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "batch write failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(BatchOutcome::Abandoned),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    for dl in &written.dead_letters {
        dead_letter(
            worker,
            publisher,
            part.queue,
            &batch[dl.delivery],
            &dl.reason,
            dl.kind,
        )
        .await?;
    }
    for ep in written.events {
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
    Ok(BatchOutcome::Done { ack_up_to })
}

/// Republishes a delivery (with confirm) to the dead-letter exchange with `reason`.
async fn dead_letter(
    worker: &Worker,
    publisher: &ConfirmedPublisher,
    queue: &str,
    d: &Delivery,
    reason: &str,
    kind: &'static str,
) -> Result<(), IngestError> {
    tracing::warn!(queue, routing_key = %d.routing_key, %reason, bytes = d.data.len(), "dead-lettering a message");
    let props = amqp::dead_letter_properties(&d.properties, reason, queue, d.routing_key.as_str());
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
    Ok(())
}

/// One episode's part of a batch.
struct EpisodeBatch<'a> {
    episode: EpisodeId,
    /// Its messages, in delivery order.
    incoming: Vec<Incoming<'a>>,
    /// The delivery of each.
    deliveries: Vec<usize>,
    plan: Plan,
}

/// Steps 2-4 of a batch.
async fn write_batch(
    worker: &Worker,
    part: &Partition<'_>,
    valid: &[(usize, LogMessage)],
    cache: &mut HashMap<EpisodeId, LogMetadata>,
) -> Result<Written, IngestError> {
    let now = DateTime::now();
    let mut written = Written::default();
    // Group by episode, keeping delivery order inside each episode.
    let mut groups: Vec<EpisodeBatch<'_>> = Vec::new();
    for (delivery, m) in valid {
        let key = MessageKey::new(&m.episode_id, m.message_id.as_str());
        let inc = Incoming {
            first_id: key.entry_id(0),
            digest: digest_of_message(m),
            key,
            message: m,
        };
        match groups.iter_mut().find(|g| g.episode == m.episode_id) {
            Some(g) => {
                g.incoming.push(inc);
                g.deliveries.push(*delivery);
            }
            None => groups.push(EpisodeBatch {
                episode: m.episode_id.clone(),
                incoming: vec![inc],
                deliveries: vec![*delivery],
                plan: Plan {
                    actions: Vec::new(),
                    counted_from: 0,
                    count_to: 0,
                },
            }),
        }
    }
    let first_ids: Vec<ObjectId> = groups
        .iter()
        .flat_map(|g| g.incoming.iter().map(|i| i.first_id))
        .collect();
    let mut known = worker.store.known_messages(&first_ids).await?;
    // The first episode that cannot be numbered; every such episode is cleaned up before the
    // batch goes again, so that one retry serves them all (a retry per episode can outlast the
    // broker's consumer timeout on a slow store, and the next owner would start over).
    let mut unplanned = None;
    for g in &mut groups {
        let meta = match cache.get(&g.episode) {
            Some(m) => m.clone(),
            None => {
                let s = &worker.settings.ingest;
                let m = worker
                    .store
                    .metadata_or_create(&g.episode, s.archive_threshold, s.chunk_size)
                    .await?;
                cache.insert(g.episode.clone(), m.clone());
                m
            }
        };
        g.plan = match worker
            .ledger
            .plan(meta.next_sequence_number, &g.incoming, &known)
        {
            Ok(p) => p,
            // A message is stored uncounted somewhere else than this numbering puts it (a
            // dead or paused owner numbered another order): those entries are nobody's yet.
            Err(e) => {
                cache.remove(&g.episode);
                reclaim_uncounted(worker, part, &g.episode).await?;
                unplanned.get_or_insert(e);
                continue;
            }
        };
    }
    if let Some(e) = unplanned {
        return Err(e.into());
    }
    worker.faults.at(FaultPoint::IngestAfterPlan).await?;
    // Write, dead-letter what the server refuses for good, number again what followed it.
    part.still_ours()?;
    // Entries refused as already there: those of an earlier try, or another message's.
    let mut duplicates = 0usize;
    loop {
        let mut entries = Vec::new();
        // Where each entry came from: (group, message).
        let mut origin = Vec::new();
        // Messages refused for good: (group, message, reason).
        let mut refused: Vec<(usize, usize, String)> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            for (mi, (inc, action)) in g.incoming.iter().zip(&g.plan.actions).enumerate() {
                if let Action::Write { first } = *action {
                    match message_entries(&inc.key, inc.digest, inc.message, first, now, part.epoch)
                    {
                        Ok(es) => {
                            origin.extend(std::iter::repeat_n((gi, mi), es.len()));
                            entries.extend(es);
                        }
                        Err(e) => {
                            refused.push((gi, mi, format!("a log does not encode as BSON: {e}")))
                        }
                    }
                }
            }
        }
        if refused.is_empty() {
            let (refusals, dups) = insert_all(worker, &entries).await?;
            duplicates += dups;
            for (i, reason) in refusals {
                let (gi, mi) = origin[i];
                refused.push((gi, mi, reason));
            }
        }
        if refused.is_empty() {
            break;
        }
        // The first refused message of each episode, and everything numbered after it, go
        // again without it; it is dead-lettered with the server's reason.
        let mut redo: HashMap<usize, (usize, String)> = HashMap::new();
        for (gi, mi, reason) in refused {
            let e = redo.entry(gi).or_insert((mi, reason.clone()));
            if mi < e.0 {
                *e = (mi, reason);
            }
        }
        for (gi, (mi, reason)) in redo {
            let g = &mut groups[gi];
            let Action::Write { first } = g.plan.actions[mi] else {
                continue;
            };
            worker
                .store
                .delete_uncounted_entries(&g.episode, first, g.plan.count_to, part.epoch)
                .await?;
            written.dead_letters.push(DeadLetter {
                delivery: g.deliveries[mi],
                reason: format!("the store refused this message: {reason}"),
                kind: "store_refused",
            });
            g.incoming.remove(mi);
            g.deliveries.remove(mi);
            // Entries of messages after it were deleted: they are new again.
            for inc in &g.incoming[mi..] {
                known.remove(&inc.first_id);
            }
            g.plan = worker
                .ledger
                .plan(g.plan.counted_from, &g.incoming, &known)?;
        }
    }
    // A duplicate may be another message's entry at the same sequence number (one a dead or
    // paused owner wrote under another order), not this batch's: counted, that would lose a
    // message. It may also be this batch's own entry written by an older owner of the
    // partition: counted as it is, a clean-up that older owner paused in could still remove
    // it (it removes entries of its epoch or older). So after duplicates each range must hold
    // exactly this batch's entries, written under this worker's epoch; otherwise the
    // episode's uncounted entries are removed and the batch is written again.
    if duplicates > 0 {
        // Every episode whose range is not its own is cleaned up before the one retry.
        let mut foreign = Vec::new();
        for g in &groups {
            if g.plan.count_to <= g.plan.counted_from {
                continue;
            }
            let stored = worker
                .store
                .entry_ids_in(&g.episode, g.plan.counted_from, g.plan.count_to)
                .await?;
            let ours = g.incoming.iter().zip(&g.plan.actions).all(|(inc, a)| {
                let Action::Write { first } = *a else {
                    return true;
                };
                (0..inc.message.logs.len()).all(|i| {
                    stored.get(&(first + i as i64))
                        == Some(&(inc.key.entry_id(i), Some(part.epoch)))
                })
            });
            if !ours {
                cache.remove(&g.episode);
                reclaim_uncounted(worker, part, &g.episode).await?;
                foreign.push(format!(
                    "{}: sequence numbers {}..{}",
                    g.episode, g.plan.counted_from, g.plan.count_to
                ));
            }
        }
        if !foreign.is_empty() {
            return Err(IngestError::Inconsistent(format!(
                "{} held entries this worker did not write (another message's, or an older \
                 owner's); they are removed and the batch is written again",
                foreign.join("; ")
            )));
        }
    }
    worker.faults.at(FaultPoint::IngestAfterInsert).await?;
    // Count each episode's new range, fenced by this worker's epoch.
    part.still_ours()?;
    for g in &groups {
        for (inc, (action, delivery)) in g
            .incoming
            .iter()
            .zip(g.plan.actions.iter().zip(&g.deliveries))
        {
            if let Action::Reused(k) = action {
                written.dead_letters.push(DeadLetter {
                    delivery: *delivery,
                    reason: reused_reason(inc, k),
                    kind: "message_id_reused",
                });
            }
        }
        if g.plan.count_to <= g.plan.counted_from {
            continue;
        }
        let updated = worker
            .store
            .update_metadata(&g.episode, cache.remove(&g.episode), |m| {
                match count(m, &g.plan, &g.incoming, part.epoch) {
                    Ok(c) if c.logs == 0 && m.next_sequence_number >= g.plan.count_to => {
                        Ok(Decision::Keep(c))
                    }
                    Ok(c) => Ok(Decision::Write(c)),
                    Err(CountError::Fenced(f)) => Err(IngestError::Fenced(f)),
                    Err(e @ CountError::MovedBack { .. }) => {
                        Err(IngestError::Inconsistent(e.to_string()))
                    }
                }
            })
            .await?
            .ok_or_else(|| MongoError::Missing(format!("LogMetadata of {} is gone", g.episode)))?;
        worker
            .metrics
            .logs_counted
            .inc_by(updated.value.logs as u64);
        worker
            .metrics
            .hot_bytes_added
            .inc_by(updated.value.bytes.max(0) as u64);
        if updated.value.crossed_threshold {
            written.events.push(g.episode.clone());
        }
        cache.insert(g.episode.clone(), updated.metadata);
    }
    worker.faults.at(FaultPoint::IngestAfterCount).await?;
    if cache.len() >= 10_000 {
        cache.clear();
    }
    Ok(written)
}

/// Inserts entries in slices of `ingest.max_batch_logs`; returns the positions of the entries
/// the server refused for good, with its reason. Entries that cannot even be sent (refused by
/// the driver) are found by trying their messages one at a time.
async fn insert_all(
    worker: &Worker,
    entries: &[LogEntry],
) -> Result<(Vec<(usize, String)>, usize), IngestError> {
    let mut refused = Vec::new();
    let mut duplicates = 0;
    let slice = worker.settings.ingest.max_batch_logs.max(1);
    for (si, part) in entries.chunks(slice).enumerate() {
        let base = si * slice;
        let timer = worker.metrics.insert_seconds.start_timer();
        let outcome = match worker.store.insert_entries(part).await {
            Ok(o) => o,
            Err(e) if !e.is_transient() => {
                // The whole call was refused: one entry at a time finds the culprits.
                let mut o = crate::mongo::InsertOutcome::default();
                for (i, entry) in part.iter().enumerate() {
                    match worker
                        .store
                        .insert_entries(std::slice::from_ref(entry))
                        .await
                    {
                        Ok(one) => {
                            o.inserted += one.inserted;
                            o.duplicates += one.duplicates;
                            o.refused.extend(
                                one.refused
                                    .into_iter()
                                    .map(|r| crate::mongo::Refused { index: i, ..r }),
                            );
                        }
                        Err(e) if !e.is_transient() => o.refused.push(crate::mongo::Refused {
                            index: i,
                            code: 0,
                            message: e.to_string(),
                        }),
                        Err(e) => return Err(e.into()),
                    }
                }
                o
            }
            Err(e) => return Err(e.into()),
        };
        timer.observe_duration();
        worker.metrics.logs_inserted.inc_by(outcome.inserted as u64);
        worker
            .metrics
            .logs_duplicate
            .inc_by(outcome.duplicates as u64);
        duplicates += outcome.duplicates;
        refused.extend(
            outcome
                .refused
                .into_iter()
                .map(|r| (base + r.index, format!("code {}: {}", r.code, r.message))),
        );
    }
    Ok((refused, duplicates))
}

/// Removes an episode's uncounted entries (at or above `nextSequenceNumber`) so that this
/// batch can number them again. They are nobody's: reads and archiving stop at the counted
/// prefix, and the owner that wrote them is dead or paused. First this worker fences the
/// episode (its epoch into `ingestEpoch`, by compare-and-set: an older owner can no longer count
/// there), then it checks that no newer owner has claimed its partition, then it deletes the
/// entries of its epoch or older (a newer owner's stay, however long this worker paused).
async fn reclaim_uncounted(
    worker: &Worker,
    part: &Partition<'_>,
    ep: &EpisodeId,
) -> Result<(), IngestError> {
    part.still_ours()?;
    let epoch = part.epoch;
    let fenced = worker
        .store
        .update_metadata(ep, None, |m| {
            if m.ingest_epoch > epoch {
                return Err(IngestError::Fenced(crate::ledger::Fenced {
                    mine: epoch,
                    current: m.ingest_epoch,
                }));
            }
            m.ingest_epoch = epoch;
            Ok(Decision::Write(()))
        })
        .await?
        .ok_or_else(|| MongoError::Missing(format!("LogMetadata of {ep} is gone")))?;
    let latest = worker.store.latest_ingest_epoch_of(part.queue).await?;
    if latest > epoch {
        return Err(IngestError::Fenced(crate::ledger::Fenced {
            mine: epoch,
            current: latest,
        }));
    }
    part.still_ours()?;
    worker
        .faults
        .at(FaultPoint::IngestBeforeReclaimDelete)
        .await?;
    // Only entries of this epoch or older: a newer owner may have written and counted here
    // since the checks above, if this worker paused after them.
    let frontier = fenced.metadata.next_sequence_number;
    let removed = worker
        .store
        .delete_uncounted_entries(ep, frontier, i64::MAX, epoch)
        .await?;
    worker.metrics.uncounted_reclaimed.inc_by(removed);
    tracing::warn!(episode = %ep, frontier, removed, epoch, "removed uncounted entries another owner left; numbering again");
    Ok(())
}

fn reused_reason(inc: &Incoming<'_>, k: &Known) -> String {
    let id = &inc.key.message_id;
    if k.first_sequence < 0 {
        format!(
            "message_id {id:?} was reused in this batch for other content; a retry must carry the same logs"
        )
    } else {
        format!(
            "message_id {id:?} was used before for other content ({} logs stored from sequence {}); a retry must carry the same logs, a new message needs a new id",
            k.log_count, k.first_sequence
        )
    }
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
