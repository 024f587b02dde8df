//! Test harness shared by the integration tests.
//!
//! Every test gets fresh names: its own exchange/queue prefix in RabbitMQ, its own MongoDB
//! database and its own S3 bucket, so tests run in parallel against one set of servers. The
//! servers come from the environment, as in production:
//! `AMQP_URL`, `MONGODB_URI`, `S3_ENDPOINT` (+ `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
//! `scripts/test.sh` starts local ones and sets these.

pub mod api;
pub mod browser;
pub mod crash;
pub mod hostile;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use logfleet::amqp::{ConfirmedPublisher, Topology};
use logfleet::archive::{
    self, ArchiveError, ArchiveKind, ArchiveOptions, ArchiveOutcome, ChunkArchiver,
};
use logfleet::chunk::{LogRecord, chunk_key, decode_chunk};
use logfleet::config::Settings;
use logfleet::domain::{EpisodeId, LogLevel};
use logfleet::ingest::{self, IngestOptions};
use logfleet::metrics::IngestMetrics;
use logfleet::model::{LogChunk, LogEntry, LogMetadata};
use logfleet::mongo::MongoStore;
use logfleet::object_store::{ObjectStore, S3ObjectStore};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any wait in a test may take before it fails as stuck. A liveness guard, not a
/// speed assertion: on a healthy machine every wait ends far sooner.
pub const STUCK_AFTER: Duration = Duration::from_secs(600);

/// One test's private slice of the three services.
pub struct TestEnv {
    pub settings: Settings,
    pub store: MongoStore,
    pub objects: S3ObjectStore,
    pub topology: Topology,
    pub conn: lapin::Connection,
    pub publisher: ConfirmedPublisher,
    /// Set by [`TestEnv::cleanup`]; otherwise `Drop` cleans up (a test that panicked).
    cleaned: bool,
}

/// What [`TestEnv::hand_over_under_a_pause`] leaves: both workers, their metrics, the logs sent.
pub struct HandOver {
    /// The worker held at the pause, its connection dropped.
    pub a: WorkerHandle<ingest::IngestError>,
    /// The worker that took the partition over.
    pub b: WorkerHandle<ingest::IngestError>,
    pub a_metrics: Arc<IngestMetrics>,
    pub b_metrics: Arc<IngestMetrics>,
    /// The 50 logs, in order.
    pub logs: Vec<SentLog>,
}

/// A worker running in this process, stoppable on demand.
pub struct WorkerHandle<E> {
    stop: Option<oneshot::Sender<()>>,
    pub join: JoinHandle<Result<(), E>>,
}

impl<E> WorkerHandle<E> {
    /// Signals shutdown and waits for the worker to drain and return.
    pub async fn stop(mut self) -> Result<(), E> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join.await.expect("worker task panicked")
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

fn spawn_worker<E: Send + 'static, F>(f: impl FnOnce(oneshot::Receiver<()>) -> F) -> WorkerHandle<E>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    WorkerHandle {
        stop: Some(tx),
        join: tokio::spawn(f(rx)),
    }
}

pub fn init_tracing() {
    logfleet::telemetry::init(&logfleet::config::TelemetrySettings {
        format: "human".into(),
        filter: std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
    });
}

impl TestEnv {
    /// Fresh names for `name`, the services from the environment, `tweak` applied last.
    pub async fn new(name: &str, tweak: impl FnOnce(&mut Settings)) -> Self {
        init_tracing();
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let mut s = Settings::load_from(None).expect("default settings");
        if let Ok(url) = std::env::var("AMQP_URL") {
            s.amqp.url = url;
        }
        if let Ok(uri) = std::env::var("MONGODB_URI") {
            s.mongo.uri = uri;
        }
        if let Ok(ep) = std::env::var("S3_ENDPOINT") {
            s.s3.endpoint = ep;
        }
        s.amqp.prefix = format!("t.{name}.{id}");
        s.amqp.partitions = 4;
        s.amqp.reconnect_initial_secs = 0.2;
        s.amqp.reconnect_max_secs = 2.0;
        s.mongo.database = format!("t_{}_{id}", name.replace(['-', '.'], "_"));
        s.s3.bucket = format!("t-{id}");
        s.archive.sweep_interval_secs = 1;
        s.ingest.drain_deadline_secs = 30;
        // In-process workers serve no HTTP endpoints unless a test passes a listener.
        s.ingest.http_listen = String::new();
        s.archive.http_listen = String::new();
        tweak(&mut s);
        s.validate().expect("valid test settings");
        let store = MongoStore::connect(&s.mongo).await.expect("MongoDB client");
        store
            .ensure_indexes()
            .await
            .expect("MongoDB reachable (is MONGODB_URI right?)");
        let objects = S3ObjectStore::connect(&s.s3)
            .await
            .expect("S3 reachable (is S3_ENDPOINT right?)");
        let topology = Topology::new(&s.amqp);
        let conn = logfleet::amqp::connect(&s.amqp, &format!("test-{name}"))
            .await
            .expect("RabbitMQ reachable");
        topology.declare(&conn).await.expect("topology");
        let publisher = ConfirmedPublisher::open(&conn)
            .await
            .expect("confirm channel");
        Self {
            settings: s,
            store,
            objects,
            topology,
            conn,
            publisher,
            cleaned: false,
        }
    }

    /// [`TestEnv::new`] with episodes archived in chunks of `chunk` logs, each as soon as it is
    /// full (`ingest.archive_threshold` and `ingest.chunk_size` both `chunk`); `tweak` applied
    /// last.
    pub async fn with_chunks_of(name: &str, chunk: i32, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::new(name, |s| {
            s.ingest.archive_threshold = chunk;
            s.ingest.chunk_size = chunk;
            tweak(s);
        })
        .await
    }

    pub fn spawn_ingest(&self, options: IngestOptions) -> WorkerHandle<ingest::IngestError> {
        let s = self.settings.clone();
        spawn_worker(move |rx| async move {
            ingest::run_with(s, options, async {
                let _ = rx.await;
            })
            .await
        })
    }

    pub fn spawn_archive(&self, options: ArchiveOptions) -> WorkerHandle<archive::ArchiveError> {
        let s = self.settings.clone();
        spawn_worker(move |rx| async move {
            archive::run_with(s, options, async {
                let _ = rx.await;
            })
            .await
        })
    }

    /// A chunk archiver in this process over this test's store, bucket and settings, taking
    /// leases as `owner`.
    pub fn archiver(&self, owner: &str) -> ChunkArchiver<S3ObjectStore> {
        ChunkArchiver::new(
            self.store.clone(),
            self.objects.clone(),
            &self.settings,
            owner.into(),
        )
    }

    /// Publishes `n` logs to `ep` in messages of 25 (ids `{ep}-{i}`), runs an ingest-worker
    /// until all are counted, and stops it. Returns the logs as sent.
    pub async fn ingest_with_worker(&self, ep: &str, n: usize) -> Vec<SentLog> {
        let logs = make_logs(ep, n, 1_764_100_000_000);
        let ingest = self.spawn_ingest(IngestOptions::default());
        self.publish_in_batches(ep, &logs, 25, ep).await;
        self.wait_for(&format!("{ep}: {n} logs ingested"), || async {
            self.metadata(ep)
                .await
                .is_some_and(|m| m.total_logs == n as i64)
        })
        .await;
        ingest.stop().await.expect("ingest-worker stops cleanly");
        logs
    }

    /// This test's settings as `LOGFLEET__*` variables, for running a worker binary.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        let v = |k: &str, val: String| (format!("LOGFLEET__{k}"), val);
        vec![
            v("AMQP__URL", s.amqp.url.clone()),
            v("AMQP__PREFIX", s.amqp.prefix.clone()),
            v("AMQP__PARTITIONS", s.amqp.partitions.to_string()),
            v(
                "AMQP__RECONNECT_INITIAL_SECS",
                s.amqp.reconnect_initial_secs.to_string(),
            ),
            v(
                "AMQP__RECONNECT_MAX_SECS",
                s.amqp.reconnect_max_secs.to_string(),
            ),
            v("MONGO__URI", s.mongo.uri.clone()),
            v("MONGO__DATABASE", s.mongo.database.clone()),
            v("S3__ENDPOINT", s.s3.endpoint.clone()),
            v("S3__BUCKET", s.s3.bucket.clone()),
            v(
                "INGEST__ARCHIVE_THRESHOLD",
                s.ingest.archive_threshold.to_string(),
            ),
            v("INGEST__CHUNK_SIZE", s.ingest.chunk_size.to_string()),
            v("INGEST__PREFETCH", s.ingest.prefetch.to_string()),
            v(
                "INGEST__DRAIN_DEADLINE_SECS",
                s.ingest.drain_deadline_secs.to_string(),
            ),
            v(
                "INGEST__STANDBY_POLL_MS",
                s.ingest.standby_poll_ms.to_string(),
            ),
            v(
                "ARCHIVE__SWEEP_INTERVAL_SECS",
                s.archive.sweep_interval_secs.to_string(),
            ),
            v("ARCHIVE__LEASE_SECS", s.archive.lease_secs.to_string()),
            v("TELEMETRY__FORMAT", "json".into()),
            v("INGEST__HTTP_LISTEN", "127.0.0.1:0".into()),
            v("ARCHIVE__HTTP_LISTEN", "127.0.0.1:0".into()),
        ]
    }

    /// Starts a worker binary with this test's settings; its output goes to the test's stderr.
    pub fn spawn_binary(&self, path: &str) -> std::process::Child {
        std::process::Command::new(path)
            .envs(self.worker_env())
            .env_remove("LOGFLEET_CONFIG")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"))
    }

    /// Publishes a JSON body to the logs exchange with routing key `routing_key`, with confirm.
    pub async fn publish(&self, routing_key: &str, body: &Value, message_id: Option<&str>) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.publisher
            .publish_json(
                &self.topology.logs_exchange,
                routing_key,
                &bytes,
                message_id,
            )
            .await
            .expect("publish confirmed");
    }

    /// A partition changing hands under a held batch: worker A, with `pause`, takes the first
    /// 10 of 50 logs of `ep` and is held there; B starts; the broker drops A's connection (as a
    /// consumer timeout or a network partition would); the other 40 are published, 10 per
    /// message (ids `{ep}-N`), and all 50 are counted (by B). `pause` is still held on return.
    pub async fn hand_over_under_a_pause(
        &self,
        ep: &str,
        pause: &logfleet::faults::PauseAt,
        base_ms: i64,
    ) -> HandOver {
        let db = &self.settings.mongo.database;
        let a_name = format!("{ep}-a-{db}");
        let (a_metrics, b_metrics) = (
            Arc::new(IngestMetrics::default()),
            Arc::new(IngestMetrics::default()),
        );
        let a = self.spawn_ingest(IngestOptions {
            instance: Some(a_name.clone()),
            faults: logfleet::faults::Faults::new(pause.clone()),
            metrics: a_metrics.clone(),
            http: None,
        });
        let logs = make_logs(ep, 50, base_ms);
        self.publish(ep, &batch_body(ep, &logs[..10]), Some(&format!("{ep}-0")))
            .await;
        pause.reached().await;
        let b = self.spawn_ingest(IngestOptions {
            instance: Some(format!("{ep}-b-{db}")),
            metrics: b_metrics.clone(),
            ..Default::default()
        });
        assert_eq!(broker_drops_connections(&a_name), 1, "A was connected");
        for (i, part) in logs[10..].chunks(10).enumerate() {
            self.publish(ep, &batch_body(ep, part), Some(&format!("{ep}-{}", i + 1)))
                .await;
        }
        self.wait_for_episode(ep, 50, 0).await;
        HandOver {
            a,
            b,
            a_metrics,
            b_metrics,
            logs,
        }
    }

    /// Publishes `logs` to `ep` in batch messages of `per_message` logs, one after another,
    /// each with confirm; their message ids are `{id_prefix}-0`, `{id_prefix}-1`, …
    pub async fn publish_in_batches(
        &self,
        ep: &str,
        logs: &[SentLog],
        per_message: usize,
        id_prefix: &str,
    ) {
        for (i, part) in logs.chunks(per_message).enumerate() {
            self.publish(ep, &batch_body(ep, part), Some(&format!("{id_prefix}-{i}")))
                .await;
        }
    }

    /// Publishes raw bytes with the given properties, with confirm.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], props: BasicProperties) {
        self.publisher
            .publish(&self.topology.logs_exchange, routing_key, body, props)
            .await
            .expect("publish confirmed");
    }

    pub async fn metadata(&self, ep: &str) -> Option<LogMetadata> {
        self.store
            .metadata_of(&EpisodeId::parse(ep).unwrap())
            .await
            .unwrap()
    }

    /// Polls `check` until it returns true; fails the test, naming `what`, if it never does.
    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + STUCK_AFTER;
        loop {
            if check().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stuck waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the episode's LogMetadata counts `total` logs, `chunks` chunks and no lock.
    pub async fn wait_for_episode(&self, ep: &str, total: i64, chunks: i32) {
        // LogMetadata counts a range after its entries are written; a batch that died between
        // the two leaves uncounted entries: the episode is settled when the hot entries
        // match `currentLogs` too.
        self.wait_for(
            &format!("{ep}: {total} logs, {chunks} chunks, unlocked, all written"),
            || async {
                let Some(m) = self.metadata(ep).await else {
                    return false;
                };
                let counted = m.total_logs == total
                    && m.total_chunks == chunks
                    && !m.is_archiving
                    && m.current_logs + m.archived_logs == total;
                counted
                    && self
                        .store
                        .count_entries_from(&m.episode_id, m.archived_logs)
                        .await
                        .is_ok_and(|n| n as i64 == m.current_logs)
            },
        )
        .await;
    }

    /// Messages waiting in a queue. Uses a fresh connection when this test's own one was
    /// closed (the crash suite restarts the broker).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        match logfleet::amqp::queue_depth(&self.conn, queue).await {
            Ok(n) => n,
            Err(_) => {
                let conn = logfleet::amqp::connect(&self.settings.amqp, "test-queue-depth")
                    .await
                    .expect("RabbitMQ reachable");
                let n = logfleet::amqp::queue_depth(&conn, queue)
                    .await
                    .expect("queue exists");
                let _ = conn.close(200, "done".into()).await;
                n
            }
        }
    }

    /// Waits until the logs dead-letter queue holds `n` messages; fails the test, naming `what`,
    /// if it never does.
    pub async fn wait_for_dead_letters(&self, what: &str, n: usize) {
        self.wait_for(what, || async {
            self.queue_depth(&self.topology.dead_letter_queue).await as usize == n
        })
        .await;
    }

    /// Takes every message from the logs dead-letter queue: (headers as text, body).
    pub async fn drain_dead_letters(&self) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        let ch = self.conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                self.topology.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let headers = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .iter()
                        .filter_map(|(k, v)| match v {
                            lapin::types::AMQPValue::LongString(s) => Some((
                                k.as_str().to_owned(),
                                String::from_utf8_lossy(s.as_bytes()).into_owned(),
                            )),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((headers, m.delivery.data.clone()));
        }
        out
    }

    /// Everything stored for one episode, from MongoDB and S3 alone.
    pub async fn snapshot(&self, ep: &str) -> EpisodeSnapshot {
        let episode = EpisodeId::parse(ep).unwrap();
        let metadata = self.metadata(ep).await.expect("episode has LogMetadata");
        let chunks = self.store.chunks_of(&episode).await.unwrap();
        let mut chunk_lines = Vec::new();
        for c in &chunks {
            let bytes = self.objects.get(&c.src).await.unwrap();
            chunk_lines.push((bytes.len(), decode_chunk(&bytes).unwrap()));
        }
        let hot: Vec<LogEntry> = self.store.all_entries(&episode).await.unwrap();
        let prefix = format!("{}/{}/", self.settings.s3.key_prefix, ep);
        let keys = self.objects.list(&prefix).await.unwrap();
        EpisodeSnapshot {
            episode,
            metadata,
            chunks,
            chunk_lines,
            hot,
            keys,
            key_prefix: self.settings.s3.key_prefix.clone(),
        }
    }

    /// Removes this test's queues, exchanges and database (its bucket is left: the names carry
    /// the test's id). A test that panics before calling this is cleaned up by `Drop`.
    pub async fn cleanup(mut self) {
        remove_test_resources(&self.settings).await;
        // Channels first: a connection closed under an open channel logs a lapin ERROR.
        logfleet::amqp::close_channel(self.publisher.channel(), "test done").await;
        let _ = self.conn.close(200, "done".into()).await;
        self.cleaned = true;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Drop may run inside the test's runtime, while a panic unwinds: the asynchronous
        // clean-up runs on a thread of its own, with a runtime of its own, and is waited for.
        let settings = self.settings.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        remove_test_resources(&settings),
                    )
                    .await;
                });
            }
        })
        .join();
    }
}

/// Deletes a test's queues and exchanges and drops its database, as far as the servers let.
pub async fn remove_test_resources(settings: &Settings) {
    if let Ok(conn) = logfleet::amqp::connect(&settings.amqp, "test-cleanup").await {
        if let Ok(ch) = conn.create_channel().await {
            let t = Topology::new(&settings.amqp);
            for q in t.partition_queues.iter().chain([
                &t.dead_letter_queue,
                &t.archive_queue,
                &t.archive_dead_letter_queue,
                &t.workers_queue,
            ]) {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in [
                &t.logs_exchange,
                &t.dead_letter_exchange,
                &t.archive_exchange,
                &t.archive_dead_letter_exchange,
            ] {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            logfleet::amqp::close_channel(&ch, "cleanup done").await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
    if let Ok(store) = MongoStore::connect(&settings.mongo).await {
        let _ = store.drop_database().await;
    }
}

/// A MongoDB outage a test causes with `MONGO_STOP_CMD` and ends with `MONGO_START_CMD`: the
/// server is started again when the guard is dropped, even if the test panicked meanwhile, so
/// the tests after it find it up.
pub struct MongoOutage {
    /// The command that starts the server again.
    start: String,
    /// Whether [`MongoOutage::end`] ran.
    ended: bool,
}

impl MongoOutage {
    /// Stops the server with `stop`; `start` starts it again.
    pub fn begin(stop: &str, start: &str) -> Self {
        run_shell(stop);
        Self {
            start: start.to_owned(),
            ended: false,
        }
    }

    /// Starts the server again.
    pub fn end(mut self) {
        self.ended = true;
        run_shell(&self.start);
    }
}

impl Drop for MongoOutage {
    fn drop(&mut self) {
        if !self.ended {
            let status = std::process::Command::new("sh")
                .args(["-c", &self.start])
                .status();
            eprintln!("MongoOutage dropped during the outage: restarted the server ({status:?})");
        }
    }
}

/// Runs a shell command; fails the test if it fails.
pub fn run_shell(cmd: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .expect("command runs");
    assert!(status.success(), "{cmd} failed");
}

/// Starts `archiver`'s archive run of `episode` (as for a threshold event) in a task of its own,
/// for a test that holds or freezes the run at a fault point meanwhile.
pub fn spawn_archive_run(
    archiver: &Arc<ChunkArchiver<S3ObjectStore>>,
    episode: &EpisodeId,
) -> JoinHandle<Result<ArchiveOutcome, ArchiveError>> {
    let (archiver, episode) = (archiver.clone(), episode.clone());
    tokio::spawn(async move {
        archiver
            .archive_episode(&episode, ArchiveKind::Threshold)
            .await
    })
}

/// Sends SIGTERM to a child process and waits for it to exit; returns its exit code.
pub async fn terminate(mut child: std::process::Child) -> Option<i32> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
    tokio::task::spawn_blocking(move || child.wait().unwrap().code())
        .await
        .unwrap()
}

/// A log as a producer sent it, for comparison with what was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SentLog {
    pub timestamp_ms: i64,
    pub level: LogLevel,
    pub message: String,
    pub metadata: Option<Value>,
}

impl SentLog {
    pub fn to_json(&self) -> Value {
        let mut v = json!({"timestamp": self.timestamp_ms, "level": self.level.as_str(), "message": self.message});
        if let Some(m) = &self.metadata {
            v["metadata"] = m.clone();
        }
        v
    }
}

/// A stored log, from either tier, reduced to what the producer sent plus its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    pub sequence_number: i64,
    pub log: SentLog,
}

/// Everything stored for one episode.
pub struct EpisodeSnapshot {
    pub episode: EpisodeId,
    pub metadata: LogMetadata,
    pub chunks: Vec<LogChunk>,
    /// Per chunk: the object's size and its decoded lines.
    pub chunk_lines: Vec<(usize, Vec<LogRecord>)>,
    pub hot: Vec<LogEntry>,
    /// Keys in S3 under the episode's prefix.
    pub keys: Vec<String>,
    pub key_prefix: String,
}

impl EpisodeSnapshot {
    /// Archived then hot logs, in sequence order.
    pub fn all_logs(&self) -> Vec<StoredLog> {
        let archived = self
            .chunk_lines
            .iter()
            .flat_map(|(_, lines)| lines)
            .map(|l| StoredLog {
                sequence_number: l.sequence_number,
                log: SentLog {
                    timestamp_ms: l.timestamp.timestamp_millis(),
                    level: l.level,
                    message: l.message.clone(),
                    metadata: l.metadata.clone(),
                },
            });
        let hot = self.hot.iter().map(|e| StoredLog {
            sequence_number: e.sequence_number,
            log: SentLog {
                timestamp_ms: e.timestamp.timestamp_millis(),
                level: e.level,
                message: e.message.clone(),
                metadata: e.metadata.as_ref().map(logfleet::chunk::metadata_to_json),
            },
        });
        archived.chain(hot).collect()
    }

    /// Checks every invariant that must hold for an idle fleet, and that exactly `expected`
    /// (as a multiset, in sequence order when `ordered`) is stored. Panics with what is wrong.
    pub fn assert_exact(&self, expected: &[SentLog]) {
        let ep = self.episode.as_str();
        let m = &self.metadata;
        let logs = self.all_logs();
        // Gapless, no duplicates: sequence numbers are exactly 0..n-1 across both tiers.
        let seqs: Vec<i64> = logs.iter().map(|l| l.sequence_number).collect();
        let want: Vec<i64> = (0..expected.len() as i64).collect();
        assert_eq!(
            seqs.len(),
            want.len(),
            "{ep}: stored {} logs, published {}",
            seqs.len(),
            expected.len()
        );
        assert_eq!(seqs, want, "{ep}: sequence numbers are not 0..n-1");
        // Content: the multiset of stored logs equals the multiset published.
        let mut got: Vec<String> = logs.iter().map(|l| format!("{:?}", l.log)).collect();
        let mut exp: Vec<String> = expected.iter().map(|l| format!("{l:?}")).collect();
        got.sort();
        exp.sort();
        assert!(
            got == exp,
            "{ep}: stored content differs from what was published"
        );
        // LogMetadata equals a recount.
        let n = expected.len() as i64;
        assert_eq!(
            (m.total_logs, m.next_sequence_number),
            (n, n),
            "{ep}: totalLogs / nextSequenceNumber"
        );
        assert_eq!(m.current_logs, self.hot.len() as i64, "{ep}: currentLogs");
        assert_eq!(
            m.archived_logs,
            n - self.hot.len() as i64,
            "{ep}: archivedLogs"
        );
        assert_eq!(
            m.total_chunks as usize,
            self.chunks.len(),
            "{ep}: totalChunks"
        );
        for level in LogLevel::ALL {
            let count = expected.iter().filter(|l| l.level == level).count() as i64;
            assert_eq!(m.level_count(level), count, "{ep}: levelCounts.{level}");
        }
        let (first, last) = (
            expected.iter().map(|l| l.timestamp_ms).min(),
            expected.iter().map(|l| l.timestamp_ms).max(),
        );
        assert_eq!(
            m.first_log_at.map(|t| t.timestamp_millis()),
            first,
            "{ep}: firstLogAt"
        );
        assert_eq!(
            m.last_log_at.map(|t| t.timestamp_millis()),
            last,
            "{ep}: lastLogAt"
        );
        let hot_bytes: i64 = self.hot.iter().map(LogEntry::size).sum();
        assert_eq!(m.current_mongo_bytes, hot_bytes, "{ep}: currentMongoBytes");
        let s3_bytes: i64 = self.chunks.iter().map(|c| c.size_bytes).sum();
        assert_eq!(m.archived_s3_bytes, s3_bytes, "{ep}: archivedS3Bytes");
        assert!(
            !m.is_archiving && m.archive_lease.is_none(),
            "{ep}: archive lock left held"
        );
        // Every LogChunk matches its object; objects and records correspond one to one.
        let mut expected_keys = Vec::new();
        for (i, (c, (size, lines))) in self.chunks.iter().zip(&self.chunk_lines).enumerate() {
            assert_eq!(c.chunk_number, i as i32, "{ep}: chunk numbers are 0..k-1");
            let prefix = chunk_key(&self.key_prefix, &self.episode, c.chunk_number, "");
            let attempt = c
                .src
                .strip_prefix(prefix.trim_end_matches(".jsonl.gz"))
                .and_then(|rest| rest.strip_suffix(".jsonl.gz"));
            assert!(
                attempt.is_some_and(|a| a.len() == 8 && a.chars().all(|ch| ch.is_ascii_hexdigit())),
                "{ep}: chunk key {} is not chunk {}'s with an attempt id",
                c.src,
                c.chunk_number
            );
            assert_eq!(
                c.log_count as usize,
                lines.len(),
                "{ep}: chunk {i} logCount"
            );
            assert_eq!(c.size_bytes, *size as i64, "{ep}: chunk {i} sizeBytes");
            assert_eq!(
                c.start_sequence,
                lines.first().unwrap().sequence_number,
                "{ep}: chunk {i} startSequence"
            );
            assert_eq!(
                c.end_sequence,
                lines.last().unwrap().sequence_number,
                "{ep}: chunk {i} endSequence"
            );
            let min = lines
                .iter()
                .map(|l| l.timestamp.timestamp_millis())
                .min()
                .unwrap();
            let max = lines
                .iter()
                .map(|l| l.timestamp.timestamp_millis())
                .max()
                .unwrap();
            assert_eq!(
                (
                    c.start_time.timestamp_millis(),
                    c.end_time.timestamp_millis()
                ),
                (min, max),
                "{ep}: chunk {i} times"
            );
            assert!(
                lines.iter().all(|l| l.episode_id == ep),
                "{ep}: chunk {i} holds another episode's log"
            );
            expected_keys.push(c.src.clone());
        }
        assert_eq!(
            self.keys, expected_keys,
            "{ep}: S3 objects differ from LogChunk records"
        );
    }
}

/// Deterministic test logs: levels cycle, every third log has metadata.
pub fn make_logs(tag: &str, n: usize, base_ms: i64) -> Vec<SentLog> {
    const LEVELS: [LogLevel; 5] = [
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Error,
    ];
    (0..n)
        .map(|i| SentLog {
            timestamp_ms: base_ms + i as i64,
            level: if i % 997 == 0 {
                LogLevel::Fatal
            } else {
                LEVELS[i % LEVELS.len()]
            },
            message: format!("{tag} line {i}"),
            metadata: (i % 3 == 0)
                .then(|| json!({"i": i, "tag": tag, "nested": {"ok": true, "ratio": 0.5}})),
        })
        .collect()
}

/// A batch body for `episode`.
pub fn batch_body(episode: &str, logs: &[SentLog]) -> Value {
    json!({"episodeId": episode, "logs": logs.iter().map(SentLog::to_json).collect::<Vec<_>>()})
}

/// A single-log body for `episode`.
pub fn single_body(episode: &str, log: &SentLog) -> Value {
    let mut v = log.to_json();
    v["episodeId"] = json!(episode);
    v
}

/// A plain HTTP/1.0 GET on loopback: (status code, body). Enough for the workers' endpoints.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path)
        .await
        .expect("endpoint reachable, answering HTTP")
}

/// [`http_get`] that gives `None` when nothing answers (a worker killed or stopped), or the
/// answer is no HTTP.
pub async fn try_http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let raw = raw_http_get(addr, path).await?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The whole answer (status line, headers and body, unparsed) to a plain HTTP/1.0 GET on
/// loopback; `None` when nothing answers (a worker killed, stopped or not listening yet).
pub async fn raw_http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    Some(raw)
}

/// The `sequenceNumber` of each log record, as the query-api and `logctl` render records.
pub fn sequence_numbers(records: &[Value]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r["sequenceNumber"].as_i64().unwrap())
        .collect()
}

/// A whole number with a comma between groups of three digits (`1234567` as `1,234,567`), as
/// the viewer shows counts and the bench prints them.
pub fn thousands(n: impl Into<i128>) -> String {
    let s = n.into().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The value of one sample in a Prometheus text rendering, e.g. `name{label="x"}`.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A loopback listener on a free port, for a worker's HTTP endpoints.
pub fn free_listener() -> (std::net::TcpListener, std::net::SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Closes, from the broker's side (`rabbitmqctl close_connection`), every connection whose
/// client-given name starts with `name_prefix`, as a network drop would. Returns how many.
pub fn broker_drops_connections(name_prefix: &str) -> usize {
    use std::process::Command;
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("{{\"connection_name\",\"{name_prefix}");
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(&needle)) {
        let pid = line.split_whitespace().next().expect("a pid column");
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: simulated network drop"])
            .status()
            .expect("rabbitmqctl runs");
        assert!(status.success(), "rabbitmqctl close_connection failed");
        closed += 1;
    }
    closed
}
