//! logfleet-client: the producer side of logfleet, for Rust programs.
//!
//! A [`Producer`] buffers logs per episode and publishes them to the `{prefix}.logs` exchange as
//! batch messages (routing key = episodeId), following the producer contract of the README:
//!
//! - **Batching**: one open batch per episode, sealed when it reaches
//!   [`ProducerConfig::max_batch_logs`] logs or [`ProducerConfig::max_batch_bytes`] bytes of
//!   body, or when it has been open for [`ProducerConfig::linger`]; both caps are clamped to the
//!   published limits ([`LimitsSettings`]), and every log is validated against those limits with
//!   the ingest-worker's own decoder before it is buffered, so a batch is never dead-lettered.
//! - **Confirms**: batches are published persistently on a channel in confirm mode;
//!   [`Producer::flush`] returns `Ok` only once the broker confirmed every batch buffered before
//!   the call. `send` returning `Ok` means "buffered", never "delivered".
//! - **Idempotency**: each batch gets its `message_id` when it is sealed,
//!   `{producer_id}-{sequence}` with a per-producer sequence, and keeps it through every retry,
//!   so a batch re-published after an unconfirmed try is ingested once.
//! - **Order**: batches of one episode are published one at a time, each after the previous
//!   one's confirm, so they get increasing sequence numbers in send order.
//! - **Retries**: a failed publish (connection lost, channel closed, nack) is retried with
//!   exponential backoff, reconnecting through a `deadpool-lapin` pool, up to
//!   [`ProducerConfig::max_attempts`] tries; then [`ClientError::Publish`] is returned and the
//!   unconfirmed batches stay buffered (same ids) for the next `flush`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), logfleet_client::ClientError> {
//! use logfleet_contract::{EpisodeId, LogLevel};
//! use logfleet_client::{Log, Producer, ProducerConfig};
//!
//! let config = ProducerConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "logfleet.logs");
//! let producer = Producer::connect(config).await?;
//! let ep = EpisodeId::parse("run-42").expect("valid id");
//! producer.send(&ep, Log::now(LogLevel::Info, "step 1")).await?;
//! let report = producer.flush().await?; // returns once the broker confirmed
//! println!("{} logs confirmed", report.confirmed_logs);
//! producer.close().await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_lapin::{Pool, PoolConfig, Runtime};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, ConnectionProperties, ExchangeKind};
use logfleet_contract::{
    EpisodeId, LimitsSettings, LogLevel, MessageId, MessageProperties, RejectReason, WireLog,
    decode,
};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

/// Everything that can go wrong in the producer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The log breaks the producer contract or a published limit; it was not buffered.
    #[error("log for episode {episode} refused: {reason}")]
    Invalid {
        /// The episode the log was sent for.
        episode: EpisodeId,
        /// What is wrong with it, as the ingest-worker would say.
        reason: RejectReason,
    },
    /// One log alone makes a message larger than the batch byte cap.
    #[error("one log makes a {size}-byte message; the cap is {limit} bytes")]
    LogTooLarge {
        /// Bytes of the smallest message holding this log.
        size: usize,
        /// The effective cap (`max_batch_bytes` clamped to `limits.max_message_bytes`).
        limit: usize,
    },
    /// The configuration is unusable.
    #[error("producer configuration: {0}")]
    Config(String),
    /// The broker cannot be reached or refused the set-up (for example a missing exchange).
    #[error("RabbitMQ: {0}")]
    Connect(String),
    /// Publishing failed `attempts` times in a row; the unconfirmed batches stay buffered with
    /// their message ids, and the next [`Producer::flush`] tries them again.
    #[error(
        "publishing failed after {attempts} attempts ({pending_batches} batches, {pending_logs} logs unconfirmed): {last_error}"
    )]
    Publish {
        /// Tries made for the batch that failed.
        attempts: u32,
        /// Batches still waiting for a confirm.
        pending_batches: usize,
        /// Logs in those batches.
        pending_logs: u64,
        /// The last failure.
        last_error: String,
    },
    /// The producer was closed.
    #[error("the producer is closed")]
    Closed,
}

/// How a [`Producer`] connects, batches and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Broker URL, `amqp://user:pass@host:port/vhost`.
    pub amqp_url: String,
    /// Exchange the batches are published to: `{prefix}.logs`.
    pub exchange: String,
    /// Prefix of every `message_id` (`{producer_id}-{sequence}`); unique per producer instance.
    /// Defaults to `lfc-` and a random UUID.
    pub producer_id: String,
    /// Sequence number of the first batch (then +1 per batch).
    pub first_sequence: u64,
    /// Most logs in one batch message; clamped to `limits.max_logs_per_message`.
    pub max_batch_logs: usize,
    /// Largest batch body in bytes; clamped to `limits.max_message_bytes`.
    pub max_batch_bytes: usize,
    /// How long a batch may stay open before a background task publishes it; `None` publishes
    /// only when a batch is full or on [`Producer::flush`].
    pub linger: Option<Duration>,
    /// Tries of one publish before [`ClientError::Publish`] (at least 1).
    pub max_attempts: u32,
    /// First wait between tries; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest wait between tries.
    pub backoff_max: Duration,
    /// The published limits the batches must respect (the ingest-workers' `limits.*`).
    pub limits: LimitsSettings,
    /// Connection name shown by `rabbitmqctl list_connections name`.
    pub connection_name: String,
    /// Most connections the producer's pool opens.
    pub pool_max_size: usize,
}

impl ProducerConfig {
    /// Defaults for `exchange` on the broker at `amqp_url`: batches of up to 1,000 logs and
    /// 1 MiB, a 50 ms linger, 8 tries with backoff from 100 ms to 5 s, the default limits.
    pub fn new(amqp_url: impl Into<String>, exchange: impl Into<String>) -> Self {
        let producer_id = format!("lfc-{}", uuid::Uuid::new_v4().simple());
        Self {
            amqp_url: amqp_url.into(),
            exchange: exchange.into(),
            connection_name: format!("logfleet-producer {producer_id}"),
            producer_id,
            first_sequence: 0,
            max_batch_logs: 1_000,
            max_batch_bytes: 1024 * 1024,
            linger: Some(Duration::from_millis(50)),
            max_attempts: 8,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            limits: LimitsSettings::default(),
            pool_max_size: 2,
        }
    }

    /// Defaults for a fleet: its broker URL, its exchange prefix (`amqp.prefix`: the
    /// exchange is `{prefix}.logs`) and its published limits.
    pub fn for_fleet(amqp_url: impl Into<String>, prefix: &str, limits: LimitsSettings) -> Self {
        let mut c = Self::new(amqp_url, format!("{prefix}.logs"));
        c.limits = limits;
        c
    }

    fn batch_logs_cap(&self) -> usize {
        self.max_batch_logs
            .min(self.limits.max_logs_per_message)
            .max(1)
    }

    fn batch_bytes_cap(&self) -> usize {
        self.max_batch_bytes.min(self.limits.max_message_bytes)
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::Config(m.to_owned()));
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1");
        }
        if self.pool_max_size == 0 {
            return bad("pool_max_size must be at least 1");
        }
        if self.max_batch_logs == 0 {
            return bad("max_batch_logs must be at least 1");
        }
        // The id of the largest sequence must stay a valid message_id.
        if MessageId::parse(&format!("{}-{}", self.producer_id, u64::MAX)).is_err() {
            return bad("producer_id must be printable ASCII, at most 230 bytes");
        }
        Ok(())
    }
}

/// One log line as a producer sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// When it happened, in epoch milliseconds (in [1970, 2100)).
    pub timestamp_ms: i64,
    /// Its severity.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// Optional structured data; keys must not start with `$`.
    pub metadata: Option<Map<String, Value>>,
}

impl Log {
    /// A log at `timestamp_ms`.
    pub fn new(timestamp_ms: i64, level: LogLevel, message: impl Into<String>) -> Self {
        Self {
            timestamp_ms,
            level,
            message: message.into(),
            metadata: None,
        }
    }

    /// A log stamped with the current time.
    pub fn now(level: LogLevel, message: impl Into<String>) -> Self {
        Self::new(chrono::Utc::now().timestamp_millis(), level, message)
    }

    /// The same log with `metadata`.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// Counters of a producer since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Batch messages the broker confirmed.
    pub confirmed_messages: u64,
    /// Logs in those messages.
    pub confirmed_logs: u64,
    /// Logs buffered and not confirmed yet (open or sealed batches).
    pub pending_logs: u64,
    /// Publishes tried again after a failure.
    pub retries: u64,
}

/// A sealed batch: its final body and id, kept until the broker confirms it.
#[derive(Debug)]
struct Batch {
    /// The episode, also the routing key.
    episode: EpisodeId,
    /// `{producer_id}-{sequence}`, fixed at sealing time.
    message_id: String,
    /// The JSON body `{"episodeId":…,"logs":[…]}`.
    body: Vec<u8>,
    /// Logs in the body.
    logs: u64,
}

/// A batch still growing.
#[derive(Debug)]
struct OpenBatch {
    /// `{"episodeId":…,"logs":[` and the logs so far, comma-separated, without the closing `]}`.
    body: Vec<u8>,
    /// Logs so far.
    logs: u64,
    /// When its first log arrived.
    opened: Instant,
}

/// What is buffered, behind one lock that is never held across an await.
#[derive(Debug, Default)]
struct Buffers {
    /// The open batch of each episode.
    open: HashMap<EpisodeId, OpenBatch>,
    /// Sealed batches in sealing order, until confirmed.
    sealed: VecDeque<Arc<Batch>>,
    /// Set by [`Producer::close`].
    closed: bool,
}

/// The publishing lane: one confirm channel, used by one publisher at a time so that the
/// batches of an episode reach the broker in order.
#[derive(Default)]
struct Lane {
    /// The pooled connection the channel belongs to.
    conn: Option<deadpool_lapin::Connection>,
    /// A channel in confirm mode.
    channel: Option<Channel>,
}

struct Inner {
    /// The configuration, validated.
    config: ProducerConfig,
    /// Connections to the broker.
    pool: Pool,
    /// Open and sealed batches.
    buffers: Mutex<Buffers>,
    /// Serializes publishing.
    lane: tokio::sync::Mutex<Lane>,
    /// Next batch sequence number.
    next_sequence: AtomicU64,
    /// Confirmed batch messages.
    confirmed_messages: AtomicU64,
    /// Confirmed logs.
    confirmed_logs: AtomicU64,
    /// Retried publishes.
    retries: AtomicU64,
    /// The linger task, stopped on close.
    linger_task: Mutex<Option<JoinHandle<()>>>,
}

/// A batching, confirming, retrying producer of logs. Cheap to clone; clones share buffers.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("producer_id", &self.inner.config.producer_id)
            .field("exchange", &self.inner.config.exchange)
            .finish_non_exhaustive()
    }
}

/// A `deadpool-lapin` pool for `url`, whose connections are named `name`; several producers
/// may share one with [`Producer::with_pool`].
pub fn connection_pool(url: &str, name: &str, max_size: usize) -> Result<Pool, ClientError> {
    let cfg = deadpool_lapin::Config {
        url: Some(url.to_owned()),
        pool: Some(PoolConfig::new(max_size.max(1))),
    };
    let name = name.to_owned();
    cfg.create_pool(
        move || ConnectionProperties::default().with_connection_name(name.clone().into()),
        Runtime::Tokio1,
    )
    .map_err(|e| ClientError::Config(e.to_string()))
}

impl Producer {
    /// Connects with a pool of its own, checks that the exchange exists, and starts the linger
    /// task (when `linger` is set).
    pub async fn connect(config: ProducerConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let pool = connection_pool(
            &config.amqp_url,
            &config.connection_name,
            config.pool_max_size,
        )?;
        Self::with_pool(pool, config).await
    }

    /// Like [`Producer::connect`], on a shared pool.
    pub async fn with_pool(pool: Pool, config: ProducerConfig) -> Result<Self, ClientError> {
        config.validate()?;
        {
            let conn = pool
                .get()
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            let ch = conn
                .create_channel()
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            ch.exchange_declare(
                config.exchange.as_str().into(),
                ExchangeKind::Custom("x-modulus-hash".into()),
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ClientError::Connect(format!(
                    "exchange {} is not there ({e}); declare it with `logctl topology`",
                    config.exchange
                ))
            })?;
            let _ = ch.close(200, "checked".into()).await;
        }
        let linger = config.linger;
        let inner = Arc::new(Inner {
            next_sequence: AtomicU64::new(config.first_sequence),
            config,
            pool,
            buffers: Mutex::default(),
            lane: tokio::sync::Mutex::default(),
            confirmed_messages: AtomicU64::new(0),
            confirmed_logs: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            linger_task: Mutex::new(None),
        });
        if let Some(linger) = linger {
            let task = tokio::spawn(linger_loop(Arc::downgrade(&inner), linger));
            *inner.linger_task.lock().expect("not poisoned") = Some(task);
        }
        Ok(Self { inner })
    }

    /// The prefix of this producer's message ids.
    pub fn producer_id(&self) -> &str {
        &self.inner.config.producer_id
    }

    /// Validates `log` and buffers it in `episode`'s open batch. When that seals a batch (full
    /// by count or bytes), publishes the sealed batches and waits for their confirms, which
    /// paces a fast sender. `Ok` means buffered: only [`Producer::flush`] reports delivery.
    pub async fn send(&self, episode: &EpisodeId, log: Log) -> Result<(), ClientError> {
        let cfg = &self.inner.config;
        let wire = serde_json::to_vec(&WireLog::new(
            log.timestamp_ms,
            log.level.as_str(),
            &log.message,
            log.metadata,
        ))
        .map_err(|e| ClientError::Config(format!("log does not serialize: {e}")))?;
        let prefix = batch_prefix(episode);
        // The smallest message holding this log, checked with the ingest-worker's decoder.
        let mut alone = prefix.clone();
        alone.extend_from_slice(&wire);
        alone.extend_from_slice(b"]}");
        // The id this log's batch will get is not known yet; any valid one checks the rest.
        let props = MessageProperties {
            message_id: Some("validation"),
            routing_key: Some(episode.as_str()),
            content_type: Some("application/json"),
            content_encoding: None,
        };
        decode(&alone, props, &cfg.limits).map_err(|reason| ClientError::Invalid {
            episode: episode.clone(),
            reason,
        })?;
        let (max_logs, max_bytes) = (cfg.batch_logs_cap() as u64, cfg.batch_bytes_cap());
        if alone.len() > max_bytes {
            return Err(ClientError::LogTooLarge {
                size: alone.len(),
                limit: max_bytes,
            });
        }
        let sealed_any = {
            let mut b = self.inner.buffers.lock().expect("not poisoned");
            if b.closed {
                return Err(ClientError::Closed);
            }
            let fits = b.open.get(episode).is_some_and(|o| {
                o.logs < max_logs && o.body.len() + 1 + wire.len() + 2 <= max_bytes
            });
            if !fits && let Some(full) = b.open.remove(episode) {
                let batch = self.inner.seal(episode.clone(), full);
                b.sealed.push_back(batch);
            }
            let open = b.open.entry(episode.clone()).or_insert_with(|| OpenBatch {
                body: prefix,
                logs: 0,
                opened: Instant::now(),
            });
            if open.logs > 0 {
                open.body.push(b',');
            }
            open.body.extend_from_slice(&wire);
            open.logs += 1;
            if open.logs >= max_logs {
                let full = b.open.remove(episode).expect("just filled");
                let batch = self.inner.seal(episode.clone(), full);
                b.sealed.push_back(batch);
            }
            !b.sealed.is_empty()
        };
        if sealed_any {
            self.inner.publish_sealed().await?;
        }
        Ok(())
    }

    /// Seals every open batch, publishes everything buffered, and returns once the broker has
    /// confirmed all of it. On [`ClientError::Publish`] nothing is dropped: call it again.
    pub async fn flush(&self) -> Result<ProducerStats, ClientError> {
        {
            let mut b = self.inner.buffers.lock().expect("not poisoned");
            let open: Vec<_> = b.open.drain().collect();
            for (ep, o) in open {
                let batch = self.inner.seal(ep, o);
                b.sealed.push_back(batch);
            }
        }
        self.inner.publish_sealed().await?;
        Ok(self.stats())
    }

    /// Flushes, stops the linger task and closes the channel. Fails like `flush` if something
    /// stays unconfirmed; the producer refuses new logs either way.
    pub async fn close(self) -> Result<ProducerStats, ClientError> {
        let result = self.flush().await;
        self.inner.buffers.lock().expect("not poisoned").closed = true;
        if let Some(t) = self.inner.linger_task.lock().expect("not poisoned").take() {
            t.abort();
        }
        let mut lane = self.inner.lane.lock().await;
        if let Some(ch) = lane.channel.take() {
            let _ = ch.close(200, "producer closed".into()).await;
        }
        lane.conn = None;
        result
    }

    /// Counters since the producer was created.
    pub fn stats(&self) -> ProducerStats {
        let pending_logs = {
            let b = self.inner.buffers.lock().expect("not poisoned");
            b.open.values().map(|o| o.logs).sum::<u64>()
                + b.sealed.iter().map(|s| s.logs).sum::<u64>()
        };
        ProducerStats {
            confirmed_messages: self.inner.confirmed_messages.load(Ordering::Relaxed),
            confirmed_logs: self.inner.confirmed_logs.load(Ordering::Relaxed),
            pending_logs,
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }
}

/// `{"episodeId":"…","logs":[`
fn batch_prefix(episode: &EpisodeId) -> Vec<u8> {
    let mut p = b"{\"episodeId\":".to_vec();
    p.extend_from_slice(&serde_json::to_vec(episode.as_str()).expect("a string serializes"));
    p.extend_from_slice(b",\"logs\":[");
    p
}

/// Seals expired batches every half linger and publishes them; stops with the producer.
async fn linger_loop(inner: Weak<Inner>, linger: Duration) {
    let tick = (linger / 2).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        let any = {
            let mut b = inner.buffers.lock().expect("not poisoned");
            let expired: Vec<EpisodeId> = b
                .open
                .iter()
                .filter(|(_, o)| o.opened.elapsed() >= linger)
                .map(|(ep, _)| ep.clone())
                .collect();
            for ep in expired {
                let o = b.open.remove(&ep).expect("listed");
                let batch = inner.seal(ep, o);
                b.sealed.push_back(batch);
            }
            !b.sealed.is_empty()
        };
        if any && let Err(e) = inner.publish_sealed().await {
            // The batches stay buffered; the next send or flush tries them again.
            tracing::warn!(error = %e, producer_id = %inner.config.producer_id, "linger publish failed");
        }
    }
}

impl Inner {
    /// Closes an open batch and gives it its message id.
    fn seal(&self, episode: EpisodeId, mut open: OpenBatch) -> Arc<Batch> {
        open.body.extend_from_slice(b"]}");
        let seq = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        Arc::new(Batch {
            episode,
            message_id: format!("{}-{seq}", self.config.producer_id),
            body: open.body,
            logs: open.logs,
        })
    }

    /// Publishes sealed batches until none is left: each round takes the oldest sealed batch of
    /// every episode, publishes them together and waits for their confirms.
    async fn publish_sealed(&self) -> Result<(), ClientError> {
        let mut lane = self.lane.lock().await;
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut attempts = 0u32;
        loop {
            let round: Vec<Arc<Batch>> = {
                let b = self.buffers.lock().expect("not poisoned");
                let mut seen = HashSet::new();
                b.sealed
                    .iter()
                    .filter(|batch| seen.insert(batch.episode.clone()))
                    .cloned()
                    .collect()
            };
            if round.is_empty() {
                return Ok(());
            }
            attempts += 1;
            let (confirmed, failure) = self.publish_round(&mut lane, &round).await;
            if !confirmed.is_empty() {
                let mut b = self.buffers.lock().expect("not poisoned");
                b.sealed.retain(|s| !confirmed.contains(&s.message_id));
                for batch in round.iter().filter(|r| confirmed.contains(&r.message_id)) {
                    self.confirmed_messages.fetch_add(1, Ordering::Relaxed);
                    self.confirmed_logs.fetch_add(batch.logs, Ordering::Relaxed);
                }
            }
            let Some(error) = failure else {
                attempts = 0;
                backoff.reset();
                continue;
            };
            // Drop the channel and its connection: the pool recycles a live connection and
            // replaces a dead one.
            if let Some(ch) = lane.channel.take() {
                let _ = ch.close(200, "retrying".into()).await;
            }
            lane.conn = None;
            if attempts >= self.config.max_attempts {
                let b = self.buffers.lock().expect("not poisoned");
                return Err(ClientError::Publish {
                    attempts,
                    pending_batches: b.sealed.len(),
                    pending_logs: b.sealed.iter().map(|s| s.logs).sum(),
                    last_error: error,
                });
            }
            let wait = backoff.next_delay();
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %error, attempt = attempts, retry_in_ms = wait.as_millis() as u64, producer_id = %self.config.producer_id, "publish failed; retrying with the same message ids");
            tokio::time::sleep(wait).await;
        }
    }

    /// Publishes one round; returns the ids the broker confirmed and the first failure.
    async fn publish_round(
        &self,
        lane: &mut Lane,
        round: &[Arc<Batch>],
    ) -> (HashSet<String>, Option<String>) {
        let mut confirmed = HashSet::new();
        let channel = match self.channel(lane).await {
            Ok(c) => c,
            Err(e) => return (confirmed, Some(e)),
        };
        let mut pending = Vec::with_capacity(round.len());
        let mut failure = None;
        for batch in round {
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_message_id(batch.message_id.as_str().into())
                .with_app_id("logfleet-client".into());
            match channel
                .basic_publish(
                    self.config.exchange.as_str().into(),
                    batch.episode.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &batch.body,
                    props,
                )
                .await
            {
                Ok(confirm) => pending.push((batch, confirm)),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        for (batch, confirm) in pending {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => {
                    tracing::debug!(message_id = %batch.message_id, episode = %batch.episode, logs = batch.logs, "batch confirmed");
                    confirmed.insert(batch.message_id.clone());
                }
                Ok(Confirmation::Ack(Some(_))) => {
                    failure.get_or_insert_with(|| {
                        format!(
                            "batch {} returned unroutable by {}: no queue is bound",
                            batch.message_id, self.config.exchange
                        )
                    });
                }
                Ok(Confirmation::Nack(_)) => {
                    failure
                        .get_or_insert_with(|| format!("broker nacked batch {}", batch.message_id));
                }
                Ok(Confirmation::NotRequested) => {
                    failure.get_or_insert_with(|| "channel is not in confirm mode".into());
                }
                Err(e) => {
                    failure.get_or_insert_with(|| e.to_string());
                }
            }
        }
        (confirmed, failure)
    }

    /// The lane's confirm channel, opened on a pooled connection when missing or closed.
    async fn channel(&self, lane: &mut Lane) -> Result<Channel, String> {
        if let Some(ch) = &lane.channel
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        lane.channel = None;
        lane.conn = None;
        let conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        lane.conn = Some(conn);
        lane.channel = Some(ch.clone());
        Ok(ch)
    }
}

/// Exponential backoff with jitter between publish attempts.
#[derive(Debug, Clone)]
struct Backoff {
    /// The first delay, and the one after a reset.
    initial: Duration,
    /// The longest delay.
    max: Duration,
    /// The next delay before jitter.
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The current delay within +-12.5%, then doubled up to the cap.
    fn next_delay(&mut self) -> Duration {
        let jitter = 0.875 + 0.25 * (uuid::Uuid::new_v4().as_u128() % 1_000) as f64 / 1_000.0;
        let d = self.current.mul_f64(jitter);
        self.current = (self.current * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> EpisodeId {
        EpisodeId::parse(s).unwrap()
    }

    #[test]
    fn batch_prefix_and_body_decode_as_the_contract_says() {
        let mut body = batch_prefix(&ep("run-1"));
        body.extend_from_slice(br#"{"timestamp":5,"level":"info","message":"a"}]}"#);
        let props = MessageProperties {
            message_id: Some("p-1"),
            ..MessageProperties::default()
        };
        let m = decode(&body, props, &LimitsSettings::default()).unwrap();
        assert_eq!(m.episode_id.as_str(), "run-1");
        assert_eq!(m.logs.len(), 1);
    }

    #[test]
    fn caps_follow_the_published_limits() {
        let mut c = ProducerConfig::new("amqp://x", "l.logs");
        c.max_batch_logs = 50_000;
        c.max_batch_bytes = 64 * 1024 * 1024;
        assert_eq!(c.batch_logs_cap(), 10_000);
        assert_eq!(c.batch_bytes_cap(), 4 * 1024 * 1024);
        c.limits.max_logs_per_message = 7;
        assert_eq!(c.batch_logs_cap(), 7);
    }

    #[test]
    fn producer_ids_must_make_valid_message_ids() {
        let mut c = ProducerConfig::new("amqp://x", "l.logs");
        assert!(c.validate().is_ok());
        c.producer_id = "bad\nid".into();
        assert!(matches!(c.validate(), Err(ClientError::Config(_))));
        c.producer_id = "p".repeat(240);
        assert!(c.validate().is_err());
    }
}
