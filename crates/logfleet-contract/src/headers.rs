//! Names of the AMQP headers logfleet adds: a worker when it dead-letters a message, and
//! `logctl dlq replay` when it republishes one.

/// Header carrying the reason a message was dead-lettered by a worker.
pub const REASON_HEADER: &str = "x-logfleet-reason";
/// Header carrying when it was dead-lettered (RFC 3339).
pub const FAILED_AT_HEADER: &str = "x-logfleet-failed-at";
/// Header carrying the queue it was consumed from.
pub const SOURCE_QUEUE_HEADER: &str = "x-logfleet-source-queue";
/// Header carrying the routing key it was published with (the episodeId), for replay.
pub const ROUTING_KEY_HEADER: &str = "x-logfleet-routing-key";
/// Header counting how often a dead letter was replayed (`logctl dlq replay`), an integer.
pub const REPLAYS_HEADER: &str = "x-logfleet-replays";
/// Header keeping earlier dead-letterings of a replayed message: an array of tables
/// `{reason, failed-at, source-queue, replayed-at}`, oldest first, at most [`MAX_HISTORY`].
pub const HISTORY_HEADER: &str = "x-logfleet-history";
/// Header naming the replay run that last republished a message.
pub const REPLAY_RUN_HEADER: &str = "x-logfleet-replay-run";
/// Most entries kept in [`HISTORY_HEADER`] (the count in [`REPLAYS_HEADER`] goes on).
pub const MAX_HISTORY: usize = 20;
