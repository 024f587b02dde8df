//! RabbitMQ adapter: connections, the topology, confirmed publishing and dead-letter headers.
//!
//! Layout:
//! - this file: [`AmqpError`], [`connect`] / [`connect_with_retry`], queue inspection
//!   ([`queue_depth`], [`look_at_queue`]);
//! - [`topology`]: every exchange and queue, declared from one prefix;
//! - [`publisher`]: [`ConfirmedPublisher`], a channel in confirm mode;
//! - [`dead_letter`]: the dead-letter headers a worker adds, and the replay properties
//!   `logctl dlq replay` gives a message.
//!
//! Topology, all durable, names under `amqp.prefix` (default `logfleet`):
//!
//! ```text
//! producers ──► {prefix}.logs  (x-modulus-hash, routing key = episodeId)
//!                  ├─► {prefix}.logs.p0 … p{N-1}   classic (or quorum) queues, each with
//!                  │                                one exclusive consumer, DLX {prefix}.logs.dlx
//! ingest-worker ───┘ invalid message ─► {prefix}.logs.dlx (fanout) ─► {prefix}.logs.dlq
//!               threshold event ─► {prefix}.archive (fanout) ─► {prefix}.archive.events
//!                                    (DLX {prefix}.archive.dlx ─► {prefix}.archive.dlq)
//! ```
//!
//! Who owns which partition queue is ingest's business: `crate::ingest::partition`.

pub mod dead_letter;
pub mod publisher;
pub mod topology;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::config::AmqpSettings;
use crate::retry::Backoff;

pub use dead_letter::{dead_letter_properties, header_i64, header_str, replay_properties};
pub use logfleet_contract::headers::{
    FAILED_AT_HEADER, HISTORY_HEADER, MAX_HISTORY, REASON_HEADER, REPLAY_RUN_HEADER,
    REPLAYS_HEADER, ROUTING_KEY_HEADER, SOURCE_QUEUE_HEADER,
};
pub use publisher::{ConfirmedPublisher, request_archive};
pub use topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("RabbitMQ: {0}")]
    Lapin(#[from] lapin::Error),
    #[error("RabbitMQ refused (nacked) a publish to {0}")]
    Nacked(String),
    #[error(
        "RabbitMQ could not declare exchange {0} of type x-modulus-hash: enable the plugin with `rabbitmq-plugins enable rabbitmq_sharding`"
    )]
    MissingPlugin(String),
    #[error(
        "exchange {exchange} exists with another type or other arguments ({detail}); an earlier logfleet declared it x-consistent-hash, whose routing can change at a broker restart: replace it as docs/operations.md says, \"The logs exchange\""
    )]
    LogsExchangeType {
        /// The logs exchange's name.
        exchange: String,
        /// The broker's words.
        detail: String,
    },
}

/// The type of the logs exchange: `x-modulus-hash` (plugin `rabbitmq_sharding`) routes an
/// episodeId to the partition queue at `hash(episodeId) mod N` among the bound queues sorted by
/// name, so an episode keeps its partition across broker restarts. (The consistent-hash
/// exchange rebuilds its ring in the order bindings are recovered, so a restart can move an
/// episode to another partition while its earlier messages still wait in the old one:
/// rabbitmq-server#3386.)
pub const LOGS_EXCHANGE_TYPE: &str = "x-modulus-hash";

/// Whether an error is the broker's PRECONDITION_FAILED (406): a declare that does not match
/// what exists.
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED))
    )
}

/// Whether an error is the broker's COMMAND_INVALID (503), what declaring an exchange of a type
/// no enabled plugin provides gets.
pub fn is_command_invalid(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), lapin::protocol::AMQPErrorKind::Hard(lapin::protocol::AMQPHardError::COMMANDINVALID))
    )
}

/// Whether an error is the broker's ACCESS_REFUSED (403): another consumer owns the queue.
pub fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::ACCESSREFUSED))
    )
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
    let backoff = Backoff::new(s.reconnect_initial(), s.reconnect_max());
    crate::retry::retry(
        "RabbitMQ connection",
        backoff,
        cancel,
        |_| crate::retry::Verdict::Retry,
        || connect(s, name),
    )
    .await
    .unwrap_or(None)
}

/// A passive declare: the queue's message and consumer counts, changing nothing (an error, which
/// closes the channel, when the queue does not exist).
pub(crate) async fn look_at_queue(ch: &Channel, queue: &str) -> Result<lapin::Queue, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), passive, FieldTable::default())
        .await
}

/// Closes a consuming channel and waits (at most 10 s) for the broker's close-ok, before the
/// caller drops its last handle. Unacked deliveries return to their queue, as when the channel
/// is dropped, but in order: lapin 4.12 auto-closes a dropped channel from its internal task,
/// and when that close meets a channel already closing (the connection closing next) it
/// escalates to a connection error whose clean-up can deadlock against the I/O loop still
/// delivering to the channel's consumer (seen as a worker frozen with unacked messages).
/// Closed here, the channel is no longer `connected` when dropped, so no auto-close is sent.
pub async fn close_channel(ch: &Channel, reason: &str) {
    if ch.status().connected() {
        let close = ch.close(200, reason.into());
        if tokio::time::timeout(Duration::from_secs(10), close)
            .await
            .is_err()
        {
            tracing::warn!(
                channel = ch.id(),
                reason,
                "closing a channel took over 10 s; dropping it"
            );
        }
    }
}

/// Messages ready in `queue` (a passive declare: fails if the queue does not exist).
pub async fn queue_depth(conn: &Connection, queue: &str) -> Result<u32, AmqpError> {
    let ch = conn.create_channel().await?;
    let q = look_at_queue(&ch, queue).await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(q.message_count())
}
