//! RabbitMQ adapter: topology, connections, confirmed publishing and dead-lettering.
//!
//! Topology, all durable, names under `amqp.prefix` (default `logfleet`):
//!
//! ```text
//! producers ──► {prefix}.logs  (x-consistent-hash, routing key = episodeId)
//!                  ├─► {prefix}.logs.p0 … p{N-1}   classic (or quorum) queues, each with
//!                  │                                one exclusive consumer, DLX {prefix}.logs.dlx
//! ingest-worker ───┘ invalid message ─► {prefix}.logs.dlx (fanout) ─► {prefix}.logs.dlq
//!               threshold event ─► {prefix}.archive (fanout) ─► {prefix}.archive.events
//!                                    (DLX {prefix}.archive.dlx ─► {prefix}.archive.dlq)
//! ```

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::AmqpSettings;

/// Header carrying the reason a message was dead-lettered by a worker.
pub const REASON_HEADER: &str = "x-logfleet-reason";
/// Header carrying when it was dead-lettered (RFC 3339).
pub const FAILED_AT_HEADER: &str = "x-logfleet-failed-at";
/// Header carrying the queue it was consumed from.
pub const SOURCE_QUEUE_HEADER: &str = "x-logfleet-source-queue";
/// Header carrying the routing key it was published with (the episodeId), for replay.
pub const ROUTING_KEY_HEADER: &str = "x-logfleet-routing-key";

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("RabbitMQ: {0}")]
    Lapin(#[from] lapin::Error),
    #[error("RabbitMQ refused (nacked) a publish to {0}")]
    Nacked(String),
    #[error(
        "RabbitMQ could not declare exchange {0} of type x-consistent-hash: enable the plugin with `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`"
    )]
    MissingPlugin(String),
}

/// Names of every exchange and queue, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub logs_exchange: String,
    pub partition_queues: Vec<String>,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub archive_exchange: String,
    pub archive_queue: String,
    pub archive_dead_letter_exchange: String,
    pub archive_dead_letter_queue: String,
    /// Every live ingest-worker consumes from it (it never holds a message): its consumer count
    /// is the number of live workers, from which each takes its fair share of the partitions.
    pub workers_queue: String,
    /// `x-delivery-limit` of the quorum queues.
    pub delivery_limit: u32,
    /// `classic` or `quorum` (see `amqp.partition_queue_type`).
    pub partition_queue_type: String,
}

impl Topology {
    pub fn new(s: &AmqpSettings) -> Self {
        let p = &s.prefix;
        Self {
            logs_exchange: format!("{p}.logs"),
            partition_queues: (0..s.partitions)
                .map(|i| format!("{p}.logs.p{i}"))
                .collect(),
            dead_letter_exchange: format!("{p}.logs.dlx"),
            dead_letter_queue: format!("{p}.logs.dlq"),
            archive_exchange: format!("{p}.archive"),
            archive_queue: format!("{p}.archive.events"),
            archive_dead_letter_exchange: format!("{p}.archive.dlx"),
            archive_dead_letter_queue: format!("{p}.archive.dlq"),
            workers_queue: format!("{p}.ingest.workers"),
            delivery_limit: s.delivery_limit,
            partition_queue_type: s.partition_queue_type.clone(),
        }
    }

    /// Declares everything, idempotently. Safe to run from every worker at every start.
    pub async fn declare(&self, conn: &Connection) -> Result<(), AmqpError> {
        let ch = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        if let Err(e) = ch
            .exchange_declare(
                self.logs_exchange.as_str().into(),
                ExchangeKind::Custom("x-consistent-hash".into()),
                durable,
                FieldTable::default(),
            )
            .await
        {
            tracing::error!(error = %e, exchange = %self.logs_exchange, "declaring the logs exchange failed");
            return Err(AmqpError::MissingPlugin(self.logs_exchange.clone()));
        }
        for (ex, q) in [
            (&self.dead_letter_exchange, &self.dead_letter_queue),
            (
                &self.archive_dead_letter_exchange,
                &self.archive_dead_letter_queue,
            ),
        ] {
            ch.exchange_declare(
                ex.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                quorum_args(None, None),
            )
            .await?;
            ch.queue_bind(
                q.as_str().into(),
                ex.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        for q in &self.partition_queues {
            let args = if self.partition_queue_type == "quorum" {
                quorum_args(Some(&self.dead_letter_exchange), Some(self.delivery_limit))
            } else {
                classic_partition_args(&self.dead_letter_exchange)
            };
            ch.queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), args)
                .await?;
            // Binding key of a consistent-hash exchange is the partition's weight.
            ch.queue_bind(
                q.as_str().into(),
                self.logs_exchange.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.exchange_declare(
            self.archive_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        let args = quorum_args(
            Some(&self.archive_dead_letter_exchange),
            Some(self.delivery_limit),
        );
        ch.queue_declare(
            self.archive_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
        ch.queue_bind(
            self.archive_queue.as_str().into(),
            self.archive_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        // Holds no message (anything published to it is dropped at once).
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
        ch.queue_declare(
            self.workers_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
        ch.close(200, "declared".into()).await?;
        Ok(())
    }

    /// Counts this worker among the live ones: a consumer on the workers queue, for as long as
    /// the returned consumer is kept (lapin cancels a dropped one) and its connection lives.
    pub async fn announce_worker(
        &self,
        conn: &Connection,
        tag: &str,
    ) -> Result<(Channel, lapin::Consumer), AmqpError> {
        use lapin::options::BasicConsumeOptions;
        let ch = conn.create_channel().await?;
        let consumer = ch
            .basic_consume(
                self.workers_queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// Live ingest-workers: consumers on the workers queue (the broker drops a dead worker's at
    /// once when its connection closes, or when heartbeats stop).
    pub async fn live_workers(&self, ch: &Channel) -> Result<u32, AmqpError> {
        Ok(look_at_queue(ch, &self.workers_queue)
            .await?
            .consumer_count())
    }
}

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

/// Arguments of a quorum queue; dead-lettering is at-least-once so nothing is lost on the way.
fn quorum_args(dlx: Option<&str>, delivery_limit: Option<u32>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dlx) = dlx {
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.into()),
        );
        t.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        t.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    if let Some(limit) = delivery_limit {
        t.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(limit.min(i32::MAX as u32) as i32),
        );
    }
    t
}

/// Arguments of a classic partition queue: a dead-letter exchange. One owner at a time comes
/// from exclusive consumption (see [`consume_exclusive`]), not from `x-single-active-consumer`,
/// whose classic-queue code path crashes the queue process in RabbitMQ 3.10 (seen in tests).
fn classic_partition_args(dlx: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.into()),
    );
    t
}

/// Whether an error is the broker's ACCESS_REFUSED (403): another consumer owns the queue.
pub fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::ACCESSREFUSED))
    )
}

/// Becomes the exclusive consumer of `queue`, waiting as a standby while another consumer owns
/// it (the broker refuses a second exclusive consumer) or while `gate` says this worker holds its
/// share: retries every `poll` until the owner goes away (its unacked messages then return to
/// their places in the queue) or `cancel` fires (then `None`). On success the gate's reservation
/// stays taken.
#[allow(clippy::too_many_arguments)]
pub async fn consume_exclusive(
    conn: &Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
    poll: Duration,
    gate: &dyn TakeGate,
    cancel: &tokio_util::sync::CancellationToken,
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

/// Opens a connection named `name` (visible in `rabbitmqctl list_connections name`).
pub async fn connect(s: &AmqpSettings, name: &str) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(&s.url, props).await?)
}

/// Waits until a connection succeeds or `cancel` fires, backing off between attempts.
pub async fn connect_with_retry(
    s: &AmqpSettings,
    name: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<Connection> {
    let mut backoff = Backoff::new(s.reconnect_initial(), s.reconnect_max());
    loop {
        match connect(s, name).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "RabbitMQ connection failed");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A passive declare: the queue's message and consumer counts, changing nothing (an error, which
/// closes the channel, when the queue does not exist).
async fn look_at_queue(ch: &Channel, queue: &str) -> Result<lapin::Queue, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), passive, FieldTable::default())
        .await
}

/// Messages ready in `queue` (a passive declare: fails if the queue does not exist).
pub async fn queue_depth(conn: &Connection, queue: &str) -> Result<u32, AmqpError> {
    let ch = conn.create_channel().await?;
    let q = look_at_queue(&ch, queue).await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(q.message_count())
}

/// A channel in confirm mode: every publish returns only once the broker has the message.
#[derive(Clone, Debug)]
pub struct ConfirmedPublisher {
    channel: Channel,
}

impl ConfirmedPublisher {
    pub async fn open(conn: &Connection) -> Result<Self, AmqpError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// Publishes persistently and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), AmqpError> {
        let props = props.with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(AmqpError::Nacked(exchange.to_owned())),
        }
    }

    /// Publishes a JSON body with a message id.
    pub async fn publish_json(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: Option<&str>,
    ) -> Result<(), AmqpError> {
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        self.publish(exchange, routing_key, body, props).await
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// Copies a delivery's properties and adds the dead-letter headers, for a republish to a DLX.
pub fn dead_letter_properties(
    original: &BasicProperties,
    reason: &str,
    source_queue: &str,
    routing_key: &str,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    let reason: String = reason.chars().take(1024).collect();
    headers.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        FAILED_AT_HEADER.into(),
        AMQPValue::LongString(
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        ),
    );
    headers.insert(
        SOURCE_QUEUE_HEADER.into(),
        AMQPValue::LongString(source_queue.into()),
    );
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(routing_key.into()),
    );
    original.clone().with_headers(headers)
}

/// A header's value as text, if it is a string.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let h = props.headers().as_ref()?;
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Header counting how often a dead letter was replayed (`logctl dlq replay`), an integer.
pub const REPLAYS_HEADER: &str = "x-logfleet-replays";
/// Header keeping earlier dead-letterings of a replayed message: an array of tables
/// `{reason, failed-at, source-queue, replayed-at}`, oldest first, at most [`MAX_HISTORY`].
pub const HISTORY_HEADER: &str = "x-logfleet-history";
/// Header naming the replay run that last republished a message.
pub const REPLAY_RUN_HEADER: &str = "x-logfleet-replay-run";
/// Most entries kept in [`HISTORY_HEADER`] (the count in [`REPLAYS_HEADER`] goes on).
pub const MAX_HISTORY: usize = 20;

/// A header's value as an integer, if it is one of AMQP's integer types.
pub fn header_i64(props: &BasicProperties, name: &str) -> Option<i64> {
    let h = props.headers().as_ref()?;
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// The properties a dead letter is replayed with: everything of the original (message id
/// included, so ingest stays exactly-once), minus the dead-letter headers of its last failure,
/// which move into [`HISTORY_HEADER`]; [`REPLAYS_HEADER`] is incremented and
/// [`REPLAY_RUN_HEADER`] set to `run`. A message that fails again is dead-lettered with these
/// headers copied, so it returns to the DLQ with its history.
pub fn replay_properties(original: &BasicProperties, run: &str) -> BasicProperties {
    let mut map = original
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    let text = |v: Option<AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => AMQPValue::LongString(s),
        Some(AMQPValue::ShortString(s)) => AMQPValue::LongString(s.as_str().into()),
        _ => AMQPValue::LongString("".into()),
    };
    let mut entry = FieldTable::default();
    entry.insert(
        "reason".into(),
        text(map.remove(&ShortString::from(REASON_HEADER))),
    );
    entry.insert(
        "failed-at".into(),
        text(map.remove(&ShortString::from(FAILED_AT_HEADER))),
    );
    entry.insert(
        "source-queue".into(),
        text(map.remove(&ShortString::from(SOURCE_QUEUE_HEADER))),
    );
    entry.insert(
        "replayed-at".into(),
        AMQPValue::LongString(
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        ),
    );
    map.remove(&ShortString::from(ROUTING_KEY_HEADER));
    let mut history: Vec<AMQPValue> = match map.remove(&ShortString::from(HISTORY_HEADER)) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    history.push(AMQPValue::FieldTable(entry));
    if history.len() > MAX_HISTORY {
        history.drain(..history.len() - MAX_HISTORY);
    }
    let replays = header_i64(original, REPLAYS_HEADER).unwrap_or(0) + 1;
    map.insert(HISTORY_HEADER.into(), AMQPValue::FieldArray(history.into()));
    map.insert(REPLAYS_HEADER.into(), AMQPValue::LongLongInt(replays));
    map.insert(REPLAY_RUN_HEADER.into(), AMQPValue::LongString(run.into()));
    original.clone().with_headers(FieldTable::from(map))
}

/// Exponential backoff with jitter, for reconnects and transient failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        let d = self.current.mul_f64(jitter);
        self.current = (self.current * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let s = crate::config::Settings::load_from(None).unwrap();
        let t = Topology::new(&s.amqp);
        assert_eq!(t.logs_exchange, "logfleet.logs");
        assert_eq!(t.dead_letter_queue, "logfleet.logs.dlq");
        assert_eq!(t.partition_queues.len(), 8);
        assert_eq!(t.partition_queues[7], "logfleet.logs.p7");
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let ds: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(ds[0] <= Duration::from_millis(113));
        assert!(ds[4] >= Duration::from_millis(349) && ds[4] <= Duration::from_millis(450));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(113));
    }

    #[test]
    fn dead_letter_headers_keep_the_original_ones() {
        let mut h = FieldTable::default();
        h.insert("trace".into(), AMQPValue::LongString("t-1".into()));
        let p = BasicProperties::default()
            .with_message_id("m1".into())
            .with_headers(h);
        let d = dead_letter_properties(&p, "invalid JSON", "q.p0", "ep-1");
        assert_eq!(
            header_str(&d, REASON_HEADER).as_deref(),
            Some("invalid JSON")
        );
        assert_eq!(header_str(&d, "trace").as_deref(), Some("t-1"));
        assert_eq!(header_str(&d, ROUTING_KEY_HEADER).as_deref(), Some("ep-1"));
        assert_eq!(d.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
    }

    #[test]
    fn replay_moves_the_failure_into_the_history_and_counts() {
        let p = BasicProperties::default().with_message_id("m1".into());
        let dead = dead_letter_properties(&p, "too many logs", "q.p0", "ep-1");
        let once = replay_properties(&dead, "run-1");
        assert_eq!(header_str(&once, REASON_HEADER), None);
        assert_eq!(header_str(&once, ROUTING_KEY_HEADER), None);
        assert_eq!(header_i64(&once, REPLAYS_HEADER), Some(1));
        assert_eq!(
            header_str(&once, REPLAY_RUN_HEADER).as_deref(),
            Some("run-1")
        );
        assert_eq!(once.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        let again = dead_letter_properties(&once, "still too many", "q.p1", "ep-1");
        let twice = replay_properties(&again, "run-2");
        assert_eq!(header_i64(&twice, REPLAYS_HEADER), Some(2));
        let h = twice.headers().as_ref().unwrap();
        let Some(AMQPValue::FieldArray(history)) =
            h.inner().get(&ShortString::from(HISTORY_HEADER))
        else {
            panic!("no history array");
        };
        let reasons: Vec<String> = history
            .as_slice()
            .iter()
            .map(|e| match e {
                AMQPValue::FieldTable(t) => match t.inner().get(&ShortString::from("reason")) {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("reason is {other:?}"),
                },
                other => panic!("history entry is {other:?}"),
            })
            .collect();
        assert_eq!(reasons, ["too many logs", "still too many"]);
    }
}
