//! Who consumes which partition queue: one exclusive consumer per queue, a fair share per
//! worker.
//!
//! Each partition queue has one *exclusive* consumer: the worker that owns it. Other workers
//! stand by and try again every `ingest.standby_poll_ms`; when the owner goes away (crash,
//! shutdown, hand-over) the broker returns its unacked messages to their places and lets the
//! next one in. With `ingest.fair_share` a worker owns at most `ceil(partitions / live
//! workers)`, live workers being the consumers of the workers queue, and hands its surplus over
//! at a batch boundary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::{IngestError, Worker};
use crate::amqp::{AmqpError, is_access_refused, look_at_queue};
use tokio_util::sync::CancellationToken;

/// Asked before each attempt to become a queue's exclusive consumer.
pub trait TakeGate: Send + Sync {
    /// Reserves room for one more queue; `false`: not now (stand by).
    fn reserve(&self) -> bool;
    /// Gives back the room of an attempt the broker refused.
    fn unreserve(&self);
}

/// Takes every queue it can.
pub struct TakeAll;

impl TakeGate for TakeAll {
    fn reserve(&self) -> bool {
        true
    }
    fn unreserve(&self) {}
}

/// Becomes the exclusive consumer of `queue`, waiting as a standby while another consumer owns
/// it (the broker refuses a second exclusive consumer) or while `gate` says this worker holds its
/// share: retries every `poll` until the owner goes away (its unacked messages then return to
/// their places in the queue) or `cancel` fires (then `None`). On success the gate's reservation
/// stays taken.
#[allow(clippy::too_many_arguments)]
pub(super) async fn consume_exclusive(
    conn: &Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
    poll: Duration,
    gate: &dyn TakeGate,
    cancel: &CancellationToken,
) -> Result<Option<(Channel, lapin::Consumer)>, AmqpError> {
    use lapin::options::{BasicConsumeOptions, BasicQosOptions};
    let mut announced = false;
    // A refused attempt costs a channel (the broker closes it), so a standby first looks at the
    // queue's consumer count on one long-lived channel and tries only when nobody consumes.
    let mut probe: Option<Channel> = None;
    let result = loop {
        if gate.reserve() {
            if queue_has_consumer(conn, &mut probe, queue).await {
                gate.unreserve();
                if !announced {
                    tracing::info!(queue, "partition owned by another worker; standing by");
                    announced = true;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break Ok(None),
                    _ = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            let attempt = async {
                let channel = conn.create_channel().await?;
                channel
                    .basic_qos(prefetch, BasicQosOptions::default())
                    .await?;
                let opts = BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                };
                let consumer = channel
                    .basic_consume(queue.into(), tag.into(), opts, FieldTable::default())
                    .await?;
                Ok::<_, lapin::Error>((channel, consumer))
            };
            match attempt.await {
                Ok((channel, consumer)) => {
                    tracing::info!(queue, "now the consumer of this partition");
                    break Ok(Some((channel, consumer)));
                }
                // Taken by another worker between the look and the attempt.
                Err(e) if is_access_refused(&e) => gate.unreserve(),
                Err(e) => {
                    gate.unreserve();
                    break Err(e.into());
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break Ok(None),
            _ = tokio::time::sleep(poll) => {}
        }
    };
    if let Some(p) = probe {
        let _ = p.close(200, "probe done".into()).await;
    }
    result
}

/// Whether `queue` has a consumer now, by a passive declare on `probe` (opened when missing or
/// closed). When the broker cannot tell, says no: the attempt that follows will tell.
async fn queue_has_consumer(conn: &Connection, probe: &mut Option<Channel>, queue: &str) -> bool {
    if !probe.as_ref().is_some_and(|p| p.status().connected()) {
        *probe = conn.create_channel().await.ok();
    }
    let Some(ch) = probe.as_ref() else {
        return false;
    };
    match look_at_queue(ch, queue).await {
        Ok(q) => q.consumer_count() > 0,
        Err(_) => {
            *probe = None;
            false
        }
    }
}

/// This worker's share of the partitions: at most `ceil(partitions / live workers)`, so an
/// added worker gets partitions to consume and a departed one's are taken over by the rest.
/// Shared by one session's partition tasks; the counts are of partitions owned or being taken.
pub(super) struct FairShare {
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
    pub(super) fn new(partitions: usize, enabled: bool) -> Self {
        Self {
            partitions,
            owned: AtomicUsize::new(0),
            // Until the first count of live workers: alone.
            target: AtomicUsize::new(if enabled { partitions } else { usize::MAX }),
            to_release: AtomicUsize::new(0),
        }
    }

    /// Sets the target for `live` workers and how many partitions to hand over to reach it.
    pub(super) fn rebalance(&self, live: usize) -> usize {
        let target = self.partitions.div_ceil(live.max(1));
        self.target.store(target, Ordering::SeqCst);
        let over = self.owned.load(Ordering::SeqCst).saturating_sub(target);
        self.to_release.store(over, Ordering::SeqCst);
        target
    }

    /// Claims one hand-over, if any is due, and counts that partition out at once (so the
    /// next recount does not ask for it again).
    pub(super) fn take_release(&self) -> bool {
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
    pub(super) fn released(&self) {
        let _ = self
            .owned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

impl TakeGate for FairShare {
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
pub(super) async fn keep_fair_share(
    worker: Arc<Worker>,
    (presence, _announced): (lapin::Channel, lapin::Consumer),
    share: Arc<FairShare>,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let poll = worker.standby_poll();
    let mut last = 0;
    let result = loop {
        let live = match worker.topology.live_workers(&presence).await {
            Ok(n) => n as usize,
            Err(e) => break Err(e.into()),
        };
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
            _ = stop.cancelled() => break Ok(()),
            _ = tokio::time::sleep(poll) => {}
        }
    };
    // Closed before the session closes the connection: a channel dropped open is closed by
    // lapin in the background, racing the connection's close (an ERROR line at a clean stop).
    crate::amqp::close_channel(&presence, "presence done").await;
    result
}

#[cfg(test)]
mod tests {
    use super::{FairShare, TakeGate};

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
