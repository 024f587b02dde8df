//! The crash suite: the real worker binaries as separate processes, killed with SIGKILL and
//! stalled with SIGSTOP/SIGCONT at random moments while a known load runs, the broker restarted
//! and MongoDB stopped and started once; then, when the fleet is idle, everything is checked
//! from MongoDB and S3 alone.
//!
//! Two kinds of stall, each a zombie that wakes up:
//! - an archive-worker (one holding an archive lease when one does) is stopped for longer than
//!   `archive.lease_secs`, so another worker takes its lease over, then continued;
//! - an ingest-worker holding a batch is stopped past the broker's consumer timeout (lowered for
//!   the run, see [`BrokerConsumerTimeout`]), so the broker closes its delivery channel and
//!   hands the batch to another worker, then continued.
//!
//! Once the faults stop, every episode must be ingested and archived up to its threshold
//! (waited for, as ingest is), and then exact. Each worker process writes its log to a file
//! under `target/<profile>/crash-logs/`; the report counts in them what the stalls caused.
//!
//! `tests/crash_suite.rs` runs a short plan in CI; `scripts/crash-suite.sh` runs the long one
//! (300,000 logs, 20 episodes, 40 kills, 12 stalls) and prints the figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use logfleet::amqp::ConfirmedPublisher;
use logfleet::model::LogMetadata;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{SentLog, TestEnv, make_logs};

/// The parameters of one run.
#[derive(Debug, Clone)]
pub struct CrashPlan {
    /// Logs published in all (duplicates not counted).
    pub logs: usize,
    /// Episodes they are spread over.
    pub episodes: usize,
    /// Concurrent producers; each publishes to every episode, in its own order.
    pub producers: usize,
    /// Ingest-worker processes (2-3).
    pub ingest_workers: usize,
    /// Archive-worker processes (two or more, so a stalled one's lease is taken over).
    pub archive_workers: usize,
    /// SIGKILLs to deliver, at random moments, to random workers (each restarted after).
    pub kills: usize,
    /// SIGSTOPs of an ingest-worker holding a batch, each longer than the broker's consumer
    /// timeout, then SIGCONT.
    pub ingest_stalls: usize,
    /// SIGSTOPs of an archive-worker (one holding a lease when one does), each longer than
    /// `lease_secs`, then SIGCONT.
    pub archive_stalls: usize,
    /// `archive.lease_secs` of the fleet: short, so that stalls outlast it.
    pub lease_secs: u64,
    /// The broker's `consumer_timeout` during the run, in ms (set for the run, then restored).
    pub consumer_timeout_ms: u64,
    /// `archiveThreshold` and `chunkSize` of every episode: small, so many chunks get written.
    pub chunk_size: i32,
    /// Percent of messages published a second time with the same message_id.
    pub duplicate_percent: u32,
    /// Restart the RabbitMQ broker once, mid-load (`rabbitmqctl stop_app` / `start_app`).
    pub restart_broker: bool,
    /// Stop and start MongoDB once, mid-load, with these commands (None: skip).
    pub mongo_stop_start: Option<(String, String)>,
    /// Seed of the chaos's choices (victims, moments, stall lengths); the moments the
    /// processes reach are not reproducible, the choices are.
    pub seed: u64,
}

impl CrashPlan {
    /// The short plan CI runs. `CRASH_SKIP_DISRUPTION=1` leaves out the broker restart and
    /// the MongoDB stop/start (for runs on a machine whose services others are using).
    pub fn short() -> Self {
        let disrupt = std::env::var_os("CRASH_SKIP_DISRUPTION").is_none();
        Self {
            logs: 40_000,
            episodes: 20,
            producers: 3,
            ingest_workers: 3,
            archive_workers: 2,
            kills: 20,
            // Each past the lowered consumer timeout: the broker closes the stalled worker's
            // channel and redelivers its batch to a successor while the zombie holds it (what
            // that exercises: docs/architecture.md, "When the orders differ").
            ingest_stalls: 2,
            archive_stalls: 3,
            lease_secs: 3,
            // Well over FerretDB's per-episode write-lock lease (10 s, docs/mongodb-servers.md
            // F3): at 5 s, a batch waiting out a lock a killed or stalled worker left lost its
            // channel, left its own lock behind, and the fleet went round in that circle.
            consumer_timeout_ms: 30_000,
            chunk_size: 500,
            duplicate_percent: 5,
            restart_broker: disrupt,
            mongo_stop_start: mongo_commands_from_env().filter(|_| disrupt),
            seed: 42,
        }
    }

    /// Logs each producer sends to each episode.
    pub fn logs_per_pair(&self) -> usize {
        self.logs / (self.episodes * self.producers)
    }

    /// Chunks an episode of `n` logs has once archiving has caught up: runs archive full
    /// chunks while `currentLogs` is at or over the threshold (threshold = chunk size here).
    pub fn chunks_for(&self, n: usize) -> usize {
        let (threshold, chunk) = (
            self.chunk_size.max(1) as usize,
            self.chunk_size.max(1) as usize,
        );
        let (mut hot, mut chunks) = (n, 0);
        while hot >= chunk && hot >= threshold {
            hot -= chunk;
            chunks += 1;
        }
        chunks
    }
}

/// `MONGO_STOP_CMD` and `MONGO_START_CMD`, when both are set.
pub fn mongo_commands_from_env() -> Option<(String, String)> {
    match (
        std::env::var("MONGO_STOP_CMD"),
        std::env::var("MONGO_START_CMD"),
    ) {
        (Ok(a), Ok(b)) if !a.is_empty() && !b.is_empty() => Some((a, b)),
        _ => None,
    }
}

/// What a run did and found.
#[derive(Debug, Default, Clone)]
pub struct CrashReport {
    /// SIGKILLs delivered, in all and per worker kind.
    pub kills: usize,
    /// SIGKILLs of ingest-workers.
    pub ingest_kills: usize,
    /// SIGKILLs of archive-workers.
    pub archive_kills: usize,
    /// Ingest-worker stalls; how many began while the worker held a batch; after how many
    /// the worker, continued, logged that the broker had closed a delivery channel of it for
    /// an ack that timed out (consumer timeout).
    pub ingest_stalls: usize,
    /// Ingest stalls that began while the worker held a batch.
    pub ingest_stalls_holding_batch: usize,
    /// Ingest stalls after which the worker logged a channel closed by the consumer timeout.
    pub ingest_stalls_channel_closed: usize,
    /// Archive-worker stalls; how many began while the worker held an archive lease; how many
    /// saw another worker take a lease of the stalled one over.
    pub archive_stalls: usize,
    /// Archive stalls that began while the worker held a lease.
    pub archive_stalls_holding_lease: usize,
    /// Archive stalls during which another worker took a lease of the stalled one over.
    pub archive_stalls_lease_taken_over: usize,
    /// Channels the broker closed for an ack that timed out, whatever the cause (stalls,
    /// batches retried through the MongoDB outage), as the workers logged them.
    pub ingest_consumer_timeouts: usize,
    /// The same, for the archive-workers' request channels.
    pub archive_consumer_timeouts: usize,
    /// Batches an ingest-worker left unwritten because its delivery channel had closed, as
    /// logged.
    pub batches_left_channel_gone: usize,
    /// RabbitMQ sessions the ingest-workers re-established, as logged.
    pub ingest_reconnects: usize,
    /// Expired archive locks taken over, and archive runs that stopped because their lock had
    /// been taken over (a stale archiver fenced), as the archive-workers logged them.
    pub lease_takeovers: usize,
    /// Archive runs stopped because their lock had been taken over (a stale archiver fenced).
    pub stale_archive_runs_stopped: usize,
    /// Worker processes started again after a kill.
    pub worker_restarts: usize,
    /// RabbitMQ restarts (its app stopped and started).
    pub broker_restarts: usize,
    /// MongoDB-protocol server restarts (`MONGO_STOP_CMD`, then `MONGO_START_CMD`).
    pub mongo_restarts: usize,
    /// Producer messages confirmed by the broker, duplicates included.
    pub messages_published: u64,
    /// Messages published a second time on purpose (same message_id and body).
    pub duplicate_publishes: u64,
    /// Publishes retried after a lost connection or an unconfirmed send.
    pub publish_retries: u64,
    /// Logs read back from both tiers and checked against what was sent.
    pub logs_checked: usize,
    /// Chunks due once archiving caught up (every episode at or over its threshold).
    pub chunks_expected: usize,
    /// Chunks read back from S3 and checked against their LogChunk records.
    pub chunks_checked: usize,
    /// Logs sent and found nowhere.
    pub lost: usize,
    /// Logs found more than once.
    pub duplicated: usize,
    /// (episode, producer) pairs whose logs are not numbered in publish order.
    pub out_of_order: usize,
    /// Messages in the dead-letter queue at the end (the load has no bad message: 0).
    pub dead_letters: u32,
    /// Wall time of the run.
    pub seconds: f64,
    /// Where the worker processes' logs are.
    pub log_dir: String,
    /// Per (episode, producer) pair out of order: where its order breaks first.
    pub order_violations: Vec<String>,
    /// Workers that did not exit after SIGTERM within their drain deadline and half a minute
    /// (killed then): their log files.
    pub shutdown_hangs: Vec<String>,
}

impl CrashReport {
    pub fn stalls(&self) -> usize {
        self.ingest_stalls + self.archive_stalls
    }
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "kills:               {} (ingest-worker {}, archive-worker {})",
            self.kills, self.ingest_kills, self.archive_kills
        )?;
        writeln!(
            f,
            "stalls:              {} (ingest-worker {}: {} holding a batch, {} had a channel closed by the consumer timeout; archive-worker {}: {} holding a lease, {} had a lease taken over)",
            self.stalls(),
            self.ingest_stalls,
            self.ingest_stalls_holding_batch,
            self.ingest_stalls_channel_closed,
            self.archive_stalls,
            self.archive_stalls_holding_lease,
            self.archive_stalls_lease_taken_over
        )?;
        writeln!(f, "worker restarts:     {}", self.worker_restarts)?;
        writeln!(f, "broker restarts:     {}", self.broker_restarts)?;
        writeln!(f, "mongodb restarts:    {}", self.mongo_restarts)?;
        writeln!(
            f,
            "consumer timeouts:   {} channels closed by the broker (ingest-worker {}, archive-worker {}); {} batches left unwritten, {} ingest reconnects",
            self.ingest_consumer_timeouts + self.archive_consumer_timeouts,
            self.ingest_consumer_timeouts,
            self.archive_consumer_timeouts,
            self.batches_left_channel_gone,
            self.ingest_reconnects
        )?;
        writeln!(
            f,
            "lease take-overs:    {} ({} stale archive runs stopped)",
            self.lease_takeovers, self.stale_archive_runs_stopped
        )?;
        writeln!(
            f,
            "messages published:  {} ({} duplicate publishes, {} retried after errors)",
            self.messages_published, self.duplicate_publishes, self.publish_retries
        )?;
        writeln!(f, "logs checked:        {}", self.logs_checked)?;
        writeln!(
            f,
            "chunks checked:      {} ({} due: archiving finished)",
            self.chunks_checked, self.chunks_expected
        )?;
        writeln!(f, "lost:                {}", self.lost)?;
        writeln!(f, "duplicated:          {}", self.duplicated)?;
        writeln!(f, "out of order:        {}", self.out_of_order)?;
        for v in self.order_violations.iter().take(10) {
            writeln!(f, "  {v}")?;
        }
        writeln!(f, "dead letters:        {}", self.dead_letters)?;
        if !self.shutdown_hangs.is_empty() {
            writeln!(
                f,
                "shutdown hangs:      {} workers did not exit after SIGTERM (killed): {}",
                self.shutdown_hangs.len(),
                self.shutdown_hangs.join(", ")
            )?;
        }
        writeln!(f, "worker logs:         {}", self.log_dir)?;
        write!(f, "wall time:           {:.1} s", self.seconds)
    }
}

/// `target/<profile>/`, beside the running executable.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a worker binary built beside the running executable (`target/<profile>/`).
pub fn worker_binary(name: &str) -> String {
    let path = target_profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workers first (cargo build --bins)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerKind {
    Ingest,
    Archive,
}

impl WorkerKind {
    fn name(self) -> &'static str {
        match self {
            WorkerKind::Ingest => "ingest-worker",
            WorkerKind::Archive => "archive-worker",
        }
    }
}

/// A worker process slot: the binary and its current process (its current life).
struct Slot {
    /// Ingest or archive.
    kind: WorkerKind,
    /// The worker binary's path.
    binary: String,
    /// The running process; None between a kill and the restart.
    child: Option<Child>,
    /// Processes started in this slot so far; names the current one's log file.
    lives: usize,
    /// The current process's log file.
    log: PathBuf,
    /// The current process's HTTP endpoint, once read from its log.
    addr: Option<std::net::SocketAddr>,
    /// The current process's instance name (as it logged on connecting), once read.
    instance: Option<String>,
    /// Stopped (SIGSTOP) by a stall now: kills leave it alone.
    stalled: bool,
}

impl Slot {
    /// Reads what the current process has logged about itself so far.
    fn learn(&mut self) {
        if self.addr.is_some() && self.instance.is_some() {
            return;
        }
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return;
        };
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            match v["message"].as_str() {
                Some("serving /metrics, /healthz, /readyz") => {
                    self.addr = v["addr"].as_str().and_then(|a| a.parse().ok());
                }
                Some("connected to RabbitMQ") => {
                    self.instance = v["instance"].as_str().map(str::to_owned);
                }
                _ => {}
            }
        }
    }

    /// Sends `signal` (STOP, CONT) to the current process.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a process in the slot");
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {signal} failed");
    }
}

/// The worker processes. Dropping it (a panicking run) kills whatever is still running,
/// stopped ones included.
struct Fleet {
    /// One per worker process the plan runs.
    slots: Vec<Slot>,
    /// The `LOGFLEET__*` environment every process gets (the test's names and services).
    env: Vec<(String, String)>,
    /// Where each process life writes its log file.
    log_dir: PathBuf,
}

impl Fleet {
    /// Starts a new process in slot `i`, logging to a file of its own.
    fn start(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.lives += 1;
        slot.log = self
            .log_dir
            .join(format!("{}-{i}.{}.log", slot.kind.name(), slot.lives));
        slot.addr = None;
        slot.instance = None;
        slot.stalled = false;
        slot.child = Some(spawn_with(&slot.binary, &self.env, &slot.log));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Publishes on its own connection, reconnecting and retrying the same message (same
/// message_id) until the broker confirms it.
struct ResilientPublisher {
    /// Where to connect again after the broker restarts.
    env_settings: logfleet::config::AmqpSettings,
    /// The connection name (one per producer, for the broker's management view).
    name: String,
    /// The current connection and its confirm channel; None until (re)connected.
    conn: Option<(lapin::Connection, ConfirmedPublisher)>,
    /// Publishes retried, shared with the report.
    retries: Arc<AtomicU64>,
}

impl ResilientPublisher {
    /// Returns how many tries it took.
    async fn publish(&mut self, exchange: &str, routing_key: &str, body: &[u8], id: &str) -> u32 {
        let mut tries = 0;
        loop {
            tries += 1;
            if self.conn.is_none()
                && let Ok(c) = logfleet::amqp::connect(&self.env_settings, &self.name).await
                && let Ok(p) = ConfirmedPublisher::open(&c).await
            {
                self.conn = Some((c, p));
            }
            if let Some((_, p)) = &self.conn {
                if p.publish_json(exchange, routing_key, body, Some(id))
                    .await
                    .is_ok()
                {
                    return tries;
                }
                self.conn = None;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

use crate::run_shell as run_cmd;

/// How often the broker's channels look for an ack that timed out, during the run (ms).
/// RabbitMQ checks on each channel's tick, every `channel_tick_interval` (60 s by default),
/// so without this a consumer timeout of seconds would be noticed up to a minute late.
const CHANNEL_TICK_MS: u64 = 1_000;

/// The broker's global `consumer_timeout` lowered for a run (and its `channel_tick_interval`,
/// so the timeout is noticed within a second), through `rabbitmqctl eval`. RabbitMQ 3.10 has
/// no per-queue consumer timeout; a channel reads the global value when it opens, so this is
/// set before the workers start. The previous values are put back by [`Self::restore`], or on
/// drop (after a panic).
///
/// The broker is shared by the checkouts on a machine, so the previous values are kept in the
/// broker itself with the list of runs using it (`logfleet_crash_saved`,
/// `logfleet_crash_users`): the last run to finish restores them, and a run that was killed
/// before restoring is struck off by the next one.
pub struct BrokerConsumerTimeout {
    /// This run's name in the broker's list of runs using the lowered timeout.
    me: String,
    /// The timeout this run set, in milliseconds.
    timeout_ms: u64,
    /// Whether [`BrokerConsumerTimeout::restore`] ran (otherwise `Drop` does it).
    restored: bool,
}

impl BrokerConsumerTimeout {
    /// Sets the broker's consumer timeout to `timeout_ms` for this process's run.
    pub fn set(timeout_ms: u64) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let me = format!("{host}:{}", std::process::id());
        // Runs of this machine registered but gone (killed before restoring): struck off.
        let users = rabbitmq_eval("application:get_env(rabbit, logfleet_crash_users, []).");
        let gone: Vec<String> = erlang_binaries(&users)
            .into_iter()
            .filter(|u| {
                u.split_once(':').is_some_and(|(h, pid)| {
                    h == host && !Path::new(&format!("/proc/{pid}")).exists()
                })
            })
            .collect();
        let guard = Self {
            me,
            timeout_ms,
            restored: false,
        };
        guard.apply(&gone);
        guard
    }

    /// Sets the values again (after a broker restart, which may have reset them) and returns
    /// the consumer timeout the broker had before, as it printed it.
    pub fn reapply(&self) -> String {
        let before = rabbitmq_eval("application:get_env(rabbit, consumer_timeout).");
        self.apply(&[]);
        before
    }

    fn apply(&self, gone: &[String]) {
        let gone = gone
            .iter()
            .map(|u| format!("<<\"{u}\">>"))
            .collect::<Vec<_>>()
            .join(",");
        let expr = format!(
            "global:trans({{logfleet_crash_suite, self()}}, fun() -> \
               Users = lists:usort([<<\"{me}\">> | application:get_env(rabbit, logfleet_crash_users, []) -- [{gone}]]), \
               case application:get_env(rabbit, logfleet_crash_saved) of \
                 undefined -> application:set_env(rabbit, logfleet_crash_saved, \
                   {{application:get_env(rabbit, consumer_timeout), application:get_env(rabbit, channel_tick_interval)}}); \
                 _ -> ok \
               end, \
               application:set_env(rabbit, logfleet_crash_users, Users), \
               application:set_env(rabbit, consumer_timeout, {timeout}), \
               application:set_env(rabbit, channel_tick_interval, {tick}), \
               {{application:get_env(rabbit, consumer_timeout), application:get_env(rabbit, channel_tick_interval)}} \
             end).",
            me = self.me,
            timeout = self.timeout_ms,
            tick = CHANNEL_TICK_MS,
        );
        let out = rabbitmq_eval(&expr);
        let want = format!("{{{{ok,{}}},{{ok,{CHANNEL_TICK_MS}}}}}", self.timeout_ms);
        assert_eq!(
            out.replace(char::is_whitespace, ""),
            want,
            "the broker's consumer_timeout / channel_tick_interval were not set"
        );
    }

    /// Puts the previous values back (unless another run on this broker still uses the low
    /// timeout; the last one puts them back). Returns what the broker answered.
    pub fn restore(mut self) -> String {
        self.restored = true;
        self.put_back()
    }

    fn put_back(&self) -> String {
        let expr = format!(
            "global:trans({{logfleet_crash_suite, self()}}, fun() -> \
               Users = application:get_env(rabbit, logfleet_crash_users, []) -- [<<\"{me}\">>], \
               application:set_env(rabbit, logfleet_crash_users, Users), \
               case {{Users, application:get_env(rabbit, logfleet_crash_saved)}} of \
                 {{[], {{ok, {{Timeout, Tick}}}}}} -> \
                   Put = fun(K, {{ok, V}}) -> application:set_env(rabbit, K, V); \
                            (K, undefined) -> application:unset_env(rabbit, K) end, \
                   Put(consumer_timeout, Timeout), \
                   Put(channel_tick_interval, Tick), \
                   application:unset_env(rabbit, logfleet_crash_saved), \
                   application:unset_env(rabbit, logfleet_crash_users), \
                   {{restored, Timeout, Tick}}; \
                 {{[], undefined}} -> nothing_saved; \
                 _ -> {{still_used_by, Users}} \
               end \
             end).",
            me = self.me
        );
        rabbitmq_eval(&expr)
    }
}

impl Drop for BrokerConsumerTimeout {
    fn drop(&mut self) {
        if !self.restored {
            let answer = self.put_back();
            eprintln!("the broker's consumer timeout put back after a failed run: {answer}");
        }
    }
}

/// `rabbitmqctl eval EXPR` on the local node; its printed result.
fn rabbitmq_eval(expr: &str) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "eval", expr])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl eval failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The strings of the Erlang binaries (`<<"...">>`) in a printed term.
fn erlang_binaries(term: &str) -> Vec<String> {
    term.split("<<\"")
        .skip(1)
        .filter_map(|s| s.split_once("\">>").map(|(b, _)| b.to_owned()))
        .collect()
}

/// What the chaos did.
#[derive(Debug, Default)]
struct Chaos {
    /// SIGKILLs of ingest-workers.
    ingest_kills: usize,
    /// SIGKILLs of archive-workers.
    archive_kills: usize,
    /// Processes started again after a kill.
    restarts: usize,
    /// Broker restarts.
    broker: usize,
    /// MongoDB restarts.
    mongo: usize,
    /// Every stall, for the report's figures read from the worker logs after.
    stalls: Vec<StallRecord>,
}

/// One stall: which process, whether it held work, when it was stopped and continued.
#[derive(Debug)]
struct StallRecord {
    /// Ingest or archive.
    kind: WorkerKind,
    /// Whether it held a batch (ingest) or a lease (archive) when stopped.
    holding: bool,
    /// The stalled process's log file.
    log: PathBuf,
    /// Its instance name, to find takeovers of its lease in the other workers' logs.
    instance: Option<String>,
    /// When SIGSTOP was sent.
    stopped: chrono::DateTime<chrono::Utc>,
    /// When SIGCONT was sent.
    continued: chrono::DateTime<chrono::Utc>,
}

/// Runs the plan against the services of `env` (created with `crash_env`) and returns what it
/// found. Panics only on harness failures, and when archiving never finishes once the faults
/// stop; the caller asserts on the report.
pub async fn run(env: &TestEnv, plan: &CrashPlan) -> CrashReport {
    let started = Instant::now();
    let mut report = CrashReport::default();
    assert_eq!(
        env.settings.archive.lease_secs, plan.lease_secs,
        "the environment's lease is the plan's (crash_env)"
    );
    // Before any worker opens a channel: channels read the consumer timeout when they open.
    let broker_timeout = if plan.ingest_stalls > 0 {
        let ms = plan.consumer_timeout_ms;
        let set = tokio::task::spawn_blocking(move || BrokerConsumerTimeout::set(ms));
        Some(Arc::new(set.await.expect("consumer timeout set")))
    } else {
        None
    };

    // Each run's worker logs under its own prefix; earlier runs' are left to `cargo clean`
    // (a run going on beside this one keeps its directory).
    let logs_root = target_profile_dir().join("crash-logs");
    let log_dir = logs_root.join(&env.settings.amqp.prefix);
    std::fs::create_dir_all(&log_dir).expect("log directory");
    report.log_dir = log_dir.display().to_string();

    let ingest_bin = worker_binary("ingest-worker");
    let archive_bin = worker_binary("archive-worker");
    let slot = |kind, binary: &String| Slot {
        kind,
        binary: binary.clone(),
        child: None,
        lives: 0,
        log: PathBuf::new(),
        addr: None,
        instance: None,
        stalled: false,
    };
    let mut fleet = Fleet {
        slots: (0..plan.ingest_workers)
            .map(|_| slot(WorkerKind::Ingest, &ingest_bin))
            .chain((0..plan.archive_workers).map(|_| slot(WorkerKind::Archive, &archive_bin)))
            .collect(),
        env: env.worker_env(),
        log_dir: log_dir.clone(),
    };
    for i in 0..fleet.slots.len() {
        fleet.start(i);
    }
    let fleet = Arc::new(Mutex::new(fleet));

    // The load: per producer, per episode, numbered logs; sizes of messages vary.
    let episodes: Vec<String> = (0..plan.episodes)
        .map(|i| format!("crash-{i:03}"))
        .collect();
    let per_pair = plan.logs_per_pair();
    let published = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let load_done = Arc::new(AtomicBool::new(false));
    let total_messages_estimate = (plan.logs / 13).max(1) as u64;
    let mut producers = Vec::new();
    for p in 0..plan.producers {
        let (episodes, published, duplicates, retries) = (
            episodes.clone(),
            published.clone(),
            duplicates.clone(),
            retries.clone(),
        );
        let exchange = env.topology.logs_exchange.clone();
        let amqp = env.settings.amqp.clone();
        let dup_pct = plan.duplicate_percent;
        let journal_dir = log_dir.clone();
        producers.push(tokio::spawn(async move {
            let mut publisher = ResilientPublisher { env_settings: amqp, name: format!("crash-producer-{p}"), conn: None, retries };
            let mut sent: HashMap<String, Vec<SentLog>> = HashMap::new();
            let mut cursor: HashMap<String, usize> = HashMap::new();
            let mut recent: Vec<(String, Vec<u8>, String)> = Vec::new();
            let mut seq = 0u64;
            let mut rng = StdRng::seed_from_u64(p as u64);
            // Every publish in order, for a look at what went wrong.
            let mut journal: Vec<String> = Vec::new();
            loop {
                let open: Vec<&String> = episodes.iter().filter(|e| cursor.get(*e).copied().unwrap_or(0) < per_pair).collect();
                if open.is_empty() {
                    break;
                }
                let ep = open[rng.gen_range(0..open.len())].clone();
                let from = cursor.get(&ep).copied().unwrap_or(0);
                let n = rng.gen_range(1..=25).min(per_pair - from);
                let logs = make_logs(&format!("p{p}-{ep}-{from}"), n, 1_766_000_000_000 + (p * 10_000_000 + from) as i64);
                let body = serde_json::to_vec(&json!({"episodeId": ep, "logs": logs.iter().map(SentLog::to_json).collect::<Vec<_>>()})).unwrap();
                let id = format!("crash-p{p}-{seq}");
                seq += 1;
                let tries = publisher.publish(&exchange, &ep, &body, &id).await;
                journal.push(format!("{id} {ep} from {from} logs {n} tries {tries}"));
                published.fetch_add(1, Ordering::Relaxed);
                sent.entry(ep.clone()).or_default().extend(logs);
                cursor.insert(ep.clone(), from + n);
                recent.push((ep, body, id));
                if recent.len() > 50 {
                    recent.remove(0);
                }
                if rng.gen_range(0..100) < dup_pct {
                    let (dep, dbody, did) = recent[rng.gen_range(0..recent.len())].clone();
                    let tries = publisher.publish(&exchange, &dep, &dbody, &did).await;
                    journal.push(format!("{did} {dep} again, tries {tries}"));
                    duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            journal.push(String::new());
            let _ = std::fs::write(journal_dir.join(format!("producer-{p}.txt")), journal.join("\n"));
            sent
        }));
    }

    // Chaos, two tasks at once: kills at random moments with one broker restart and one
    // MongoDB stop/start among them; and stalls, one at a time, of random kinds.
    let kills = {
        let (fleet, published, load_done) = (fleet.clone(), published.clone(), load_done.clone());
        let plan = plan.clone();
        let broker_timeout = broker_timeout.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(plan.seed);
            let mut chaos = Chaos::default();
            while chaos.ingest_kills + chaos.archive_kills < plan.kills {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1_200))).await;
                let mut guard = fleet.lock().await;
                let candidates: Vec<usize> = (0..guard.slots.len())
                    .filter(|i| !guard.slots[*i].stalled && guard.slots[*i].child.is_some())
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let victim = candidates[rng.gen_range(0..candidates.len())];
                let slot = &mut guard.slots[victim];
                let mut child = slot.child.take().expect("a process");
                let _ = child.kill();
                let _ = child.wait();
                match slot.kind {
                    WorkerKind::Ingest => chaos.ingest_kills += 1,
                    WorkerKind::Archive => chaos.archive_kills += 1,
                }
                drop(guard);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
                fleet.lock().await.start(victim);
                chaos.restarts += 1;
                let progress =
                    published.load(Ordering::Relaxed) as f64 / total_messages_estimate as f64;
                if plan.restart_broker
                    && chaos.broker == 0
                    && (progress > 0.3 || load_done.load(Ordering::Relaxed))
                {
                    let broker_timeout = broker_timeout.clone();
                    tokio::task::spawn_blocking(move || {
                        run_cmd("rabbitmqctl -q stop_app");
                        run_cmd("rabbitmqctl -q start_app");
                        run_cmd("rabbitmqctl -q await_startup");
                        // The restart may have put the configured values back.
                        if let Some(b) = broker_timeout {
                            let before = b.reapply();
                            eprintln!(
                                "consumer_timeout after the broker restart: {before}; set to {} ms again",
                                b.timeout_ms
                            );
                        }
                    })
                    .await
                    .unwrap();
                    chaos.broker += 1;
                }
                if let Some((stop, start)) = plan.mongo_stop_start.clone()
                    && chaos.mongo == 0
                    && (progress > 0.6 || load_done.load(Ordering::Relaxed))
                {
                    tokio::task::spawn_blocking(move || {
                        let outage = crate::MongoOutage::begin(&stop, &start);
                        std::thread::sleep(Duration::from_secs(2));
                        outage.end();
                    })
                    .await
                    .unwrap();
                    chaos.mongo += 1;
                }
            }
            chaos
        }
    };
    let stalls = {
        let fleet = fleet.clone();
        let plan = plan.clone();
        let settings = env.settings.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(plan.seed.wrapping_add(1));
            let mut kinds: Vec<WorkerKind> =
                std::iter::repeat_n(WorkerKind::Ingest, plan.ingest_stalls)
                    .chain(std::iter::repeat_n(
                        WorkerKind::Archive,
                        plan.archive_stalls,
                    ))
                    .collect();
            kinds.shuffle(&mut rng);
            let leases = LeaseReader::connect(&settings).await;
            let mut chaos = Chaos::default();
            for kind in kinds {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2_000))).await;
                chaos
                    .stalls
                    .push(stall(&fleet, kind, &plan, &leases, &mut rng).await);
            }
            chaos
        }
    };
    let kills = tokio::spawn(kills);
    let stalls = tokio::spawn(stalls);
    let mut expected_by_producer: Vec<HashMap<String, Vec<SentLog>>> = Vec::new();
    for p in producers {
        expected_by_producer.push(p.await.expect("producer task"));
    }
    load_done.store(true, Ordering::Relaxed);
    let kills = kills.await.expect("kill task");
    let stalls = stalls.await.expect("stall task");
    report.ingest_kills = kills.ingest_kills;
    report.archive_kills = kills.archive_kills;
    report.kills = kills.ingest_kills + kills.archive_kills;
    report.worker_restarts = kills.restarts;
    report.broker_restarts = kills.broker;
    report.mongo_restarts = kills.mongo;
    report.messages_published = published.load(Ordering::Relaxed);
    report.duplicate_publishes = duplicates.load(Ordering::Relaxed);
    report.publish_retries = retries.load(Ordering::Relaxed);

    // The faults have stopped. Idle: every log counted and written, and archiving finished:
    // every episode at or over its threshold has its chunks, no lock held; queues drained.
    let mut expected: HashMap<String, Vec<SentLog>> = HashMap::new();
    for per in &expected_by_producer {
        for (ep, logs) in per {
            expected
                .entry(ep.clone())
                .or_default()
                .extend(logs.iter().cloned());
        }
    }
    for ep in &episodes {
        let n = expected.get(ep).map_or(0, Vec::len);
        let chunks = plan.chunks_for(n);
        report.chunks_expected += chunks;
        wait_settled(env, ep, n as i64, chunks as i32, &episodes, &log_dir).await;
    }
    for q in env.topology.partition_queues.clone() {
        env.wait_for(&format!("{q} drained"), || async {
            env.queue_depth(&q).await == 0
        })
        .await;
    }

    // Stop the fleet, then check from MongoDB and S3 alone. A worker gets its drain deadline
    // and half a minute more to exit after SIGTERM; one that hangs is killed and named.
    let grace = Duration::from_secs(env.settings.ingest.drain_deadline_secs + 30);
    for s in fleet.lock().await.slots.iter_mut() {
        if let Some(c) = s.child.take()
            && !terminate_within(c, grace).await
        {
            report.shutdown_hangs.push(s.log.display().to_string());
        }
    }
    if let Some(b) = broker_timeout {
        let b = Arc::into_inner(b).expect("the chaos is over: nobody else holds the guard");
        let answer = tokio::task::spawn_blocking(move || b.restore())
            .await
            .expect("consumer timeout restored");
        eprintln!("the broker's consumer timeout put back: {answer}");
    }
    count_in_logs(&log_dir, &stalls.stalls, &mut report);
    // What the checks below look at, kept for a look when one fails.
    dump_metadata(&env.settings, &log_dir.join("metadata-final.txt")).await;
    for ep in &episodes {
        let snap = env.snapshot(ep).await;
        let want = expected.get(ep).cloned().unwrap_or_default();
        let stored: Vec<SentLog> = snap.all_logs().into_iter().map(|l| l.log).collect();
        let (lost, duplicated) = multiset_difference(&want, &stored);
        report.lost += lost;
        report.duplicated += duplicated;
        for (p, per) in expected_by_producer.iter().enumerate() {
            let mine: Vec<&SentLog> = stored
                .iter()
                .filter(|l| l.message.starts_with(&format!("p{p}-")))
                .collect();
            let sent: Vec<&SentLog> = per.get(ep).map(|v| v.iter().collect()).unwrap_or_default();
            if mine != sent {
                report.out_of_order += 1;
                let seq_of: HashMap<String, i64> = snap
                    .all_logs()
                    .into_iter()
                    .map(|l| (l.log.message, l.sequence_number))
                    .collect();
                report
                    .order_violations
                    .push(first_order_violation(ep, p, &sent, &seq_of));
                dump_episode(&log_dir, &snap);
            }
        }
        report.logs_checked += stored.len();
        report.chunks_checked += snap.chunks.len();
        if lost == 0 && duplicated == 0 {
            // Every other invariant: gapless 0..n-1, counters equal a recount, chunks match
            // their objects, no lock held.
            snap.assert_exact(&want);
        }
    }
    report.dead_letters = env.queue_depth(&env.topology.dead_letter_queue).await;
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Waits, as [`TestEnv::wait_for_episode`] does, until the episode counts `total` logs and
/// `chunks` chunks, unlocked, every hot log written. If that never comes, writes what every
/// episode holds to the log directory before failing as stuck.
async fn wait_settled(
    env: &TestEnv,
    ep: &str,
    total: i64,
    chunks: i32,
    episodes: &[String],
    dir: &Path,
) {
    let deadline = tokio::time::Instant::now() + crate::STUCK_AFTER;
    loop {
        if let Some(m) = env.metadata(ep).await
            && m.total_logs == total
            && m.total_chunks == chunks
            && !m.is_archiving
            && m.current_logs + m.archived_logs == total
            && env
                .store
                .count_entries_from(&m.episode_id, m.archived_logs)
                .await
                .is_ok_and(|n| n as i64 == m.current_logs)
        {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let mut state = String::new();
            for e in episodes {
                let m = env.metadata(e).await;
                state.push_str(&format!("{e}: {m:?}\n"));
                if m.is_some() {
                    dump_episode(dir, &env.snapshot(e).await);
                }
            }
            let _ = std::fs::write(dir.join("metadata-when-stuck.txt"), state);
            panic!(
                "stuck waiting for: {ep}: {total} logs, {chunks} chunks, unlocked, all written (what was stored: {})",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where producer `p`'s logs in `ep` first go out of publish order: the first log (in publish
/// order) whose sequence number is below its predecessor's, or a log not stored.
fn first_order_violation(
    ep: &str,
    p: usize,
    sent: &[&SentLog],
    seq_of: &HashMap<String, i64>,
) -> String {
    let seqs: Vec<Option<i64>> = sent
        .iter()
        .map(|l| seq_of.get(&l.message).copied())
        .collect();
    for i in 0..sent.len() {
        match (i.checked_sub(1).map(|j| seqs[j]), seqs[i]) {
            (_, None) => return format!("{ep} p{p}: {:?} is not stored", sent[i].message),
            (Some(Some(before)), Some(now)) if now < before => {
                return format!(
                    "{ep} p{p}: {:?} at sequence {now}, after {:?} at sequence {before} (publish order)",
                    sent[i].message,
                    sent[i - 1].message
                );
            }
            _ => {}
        }
    }
    format!("{ep} p{p}: stored in publish order, but more logs of it are stored than were sent")
}

/// Writes every stored log of an episode (sequence number, tier, message) to the log
/// directory, for a look at what went wrong.
fn dump_episode(dir: &Path, snap: &crate::EpisodeSnapshot) {
    let hot_from = snap.metadata.archived_logs;
    let text: String = snap
        .all_logs()
        .iter()
        .map(|l| {
            let tier = if l.sequence_number >= hot_from {
                "hot"
            } else {
                "s3"
            };
            format!("{} {tier} {}\n", l.sequence_number, l.log.message)
        })
        .collect();
    let _ = std::fs::write(
        dir.join(format!("stored-{}.txt", snap.episode.as_str())),
        text,
    );
}

/// Writes every LogMetadata document, as stored, to `path`.
async fn dump_metadata(settings: &logfleet::config::Settings, path: &Path) {
    let read = async {
        let client = mongodb::Client::with_uri_str(&settings.mongo.uri).await?;
        client
            .database(&settings.mongo.database)
            .collection::<bson::Document>(&settings.mongo.log_metadata_collection)
            .find(bson::doc! {})
            .await?
            .try_collect::<Vec<_>>()
            .await
    };
    let text = match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(Ok(docs)) => docs.iter().map(|d| format!("{d}\n")).collect::<String>(),
        Ok(Err(e)) => format!("cannot read LogMetadata: {e}\n"),
        Err(_) => "cannot read LogMetadata: timed out\n".to_owned(),
    };
    let _ = std::fs::write(path, text);
}

/// SIGTERM, then waits up to `grace` for the process to exit; kills it if it does not.
/// Whether it exited by itself.
async fn terminate_within(mut child: Child, grace: Duration) -> bool {
    let _ = std::process::Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Reads who holds archive leases, straight from LogMetadata.
struct LeaseReader {
    metadata: Option<mongodb::Collection<LogMetadata>>,
}

impl LeaseReader {
    async fn connect(settings: &logfleet::config::Settings) -> Self {
        let metadata = mongodb::Client::with_uri_str(&settings.mongo.uri)
            .await
            .ok()
            .map(|c| {
                c.database(&settings.mongo.database)
                    .collection(&settings.mongo.log_metadata_collection)
            });
        Self { metadata }
    }

    /// Owners of the live leases now (none when MongoDB does not answer).
    async fn owners(&self) -> Vec<String> {
        let Some(coll) = &self.metadata else {
            return Vec::new();
        };
        let now = bson::DateTime::now();
        let read = async {
            coll.find(bson::doc! {"isArchiving": true})
                .await?
                .try_collect::<Vec<LogMetadata>>()
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(all)) => all
                .into_iter()
                .filter_map(|m| m.archive_lease)
                .filter(|l| l.expires_at > now)
                .map(|l| l.owner)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One stall of a worker of `kind`: waits (a while at most) for one holding work (an ingest
/// batch, an archive lease), stops it (SIGSTOP) for longer than the consumer timeout or the
/// lease, then continues it (SIGCONT).
async fn stall(
    fleet: &Mutex<Fleet>,
    kind: WorkerKind,
    plan: &CrashPlan,
    leases: &LeaseReader,
    rng: &mut StdRng,
) -> StallRecord {
    let give_up = Instant::now() + Duration::from_secs(10);
    let (victim, mut record) = loop {
        // The workers of this kind running now: (slot, life, endpoints, instance).
        let running: Vec<(usize, usize, Option<std::net::SocketAddr>, Option<String>)> = {
            let mut guard = fleet.lock().await;
            guard
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| s.kind == kind && s.child.is_some() && !s.stalled)
                .map(|(i, s)| {
                    s.learn();
                    (i, s.lives, s.addr, s.instance.clone())
                })
                .collect()
        };
        let busy: Vec<(usize, usize)> = match kind {
            WorkerKind::Ingest => {
                let mut busy = Vec::new();
                for (i, life, addr, _) in &running {
                    if let Some(addr) = addr
                        && let Some(text) = metrics_of(*addr).await
                        && crate::metric_value(&text, "logfleet_ingest_prefetch_in_use")
                            .is_some_and(|v| v > 0.0)
                    {
                        busy.push((*i, *life));
                    }
                }
                busy
            }
            WorkerKind::Archive => {
                let owners = leases.owners().await;
                running
                    .iter()
                    .filter(|(_, _, _, instance)| {
                        instance.as_ref().is_some_and(|n| owners.contains(n))
                    })
                    .map(|(i, life, _, _)| (*i, *life))
                    .collect()
            }
        };
        let chosen = if !busy.is_empty() {
            Some((busy[rng.gen_range(0..busy.len())], true))
        } else if Instant::now() > give_up && !running.is_empty() {
            let (i, life, _, _) = running[rng.gen_range(0..running.len())];
            Some(((i, life), false))
        } else {
            None
        };
        if let Some(((i, life), holding)) = chosen {
            let mut guard = fleet.lock().await;
            let slot = &mut guard.slots[i];
            // Unless it was killed (and restarted) since it was looked at.
            if slot.lives == life && slot.child.is_some() && !slot.stalled {
                slot.signal("STOP");
                slot.stalled = true;
                break (
                    i,
                    StallRecord {
                        kind,
                        holding,
                        log: slot.log.clone(),
                        instance: slot.instance.clone(),
                        stopped: chrono::Utc::now(),
                        continued: chrono::Utc::now(),
                    },
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let past = match kind {
        WorkerKind::Ingest => Duration::from_millis(plan.consumer_timeout_ms + CHANNEL_TICK_MS),
        WorkerKind::Archive => Duration::from_secs(plan.lease_secs),
    };
    tokio::time::sleep(past + Duration::from_millis(rng.gen_range(1_000..4_000))).await;
    let mut guard = fleet.lock().await;
    let slot = &mut guard.slots[victim];
    // Kills leave a stalled process alone: it is the one stopped.
    record.continued = chrono::Utc::now();
    slot.signal("CONT");
    slot.stalled = false;
    record
}

/// A worker's `/metrics`, or `None` when it does not answer within a second.
async fn metrics_of(addr: std::net::SocketAddr) -> Option<String> {
    tokio::time::timeout(
        Duration::from_secs(1),
        crate::try_http_get(addr, "/metrics"),
    )
    .await
    .ok()
    .flatten()
    .map(|(_, body)| body)
}

/// Counts, in the worker processes' logs, what the stalls caused.
fn count_in_logs(dir: &Path, stalls: &[StallRecord], report: &mut CrashReport) {
    // Per log file: its events (timestamp, message, the whole line).
    let mut logs: Vec<(PathBuf, Vec<LogEvent>)> = Vec::new();
    if let Ok(files) = std::fs::read_dir(dir) {
        for file in files.flatten() {
            let Ok(text) = std::fs::read_to_string(file.path()) else {
                continue;
            };
            logs.push((
                file.path(),
                text.lines().filter_map(LogEvent::parse).collect(),
            ));
        }
    }
    let is_ingest = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(WorkerKind::Ingest.name()))
    };
    for (path, events) in &logs {
        let count = |message: &str| events.iter().filter(|e| e.message == message).count();
        let timeouts = events.iter().filter(|e| e.is_consumer_timeout()).count();
        if is_ingest(path) {
            report.ingest_consumer_timeouts += timeouts;
            report.batches_left_channel_gone += count(
                "delivery channel closed: the batch is left unwritten, it returns to the queue",
            );
            report.ingest_reconnects += count("RabbitMQ session ended; reconnecting");
        } else {
            report.archive_consumer_timeouts += timeouts;
            report.lease_takeovers += count("took over an expired archive lock");
            report.stale_archive_runs_stopped +=
                count("the archive lock was taken over; stopping this run");
        }
    }
    for s in stalls {
        match s.kind {
            WorkerKind::Ingest => {
                report.ingest_stalls += 1;
                report.ingest_stalls_holding_batch += usize::from(s.holding);
                // The close arrived while the process was stopped; it reads it on waking.
                let woke_to_close = logs.iter().filter(|(p, _)| *p == s.log).any(|(_, ev)| {
                    ev.iter().any(|e| {
                        e.is_consumer_timeout()
                            && e.at >= s.stopped
                            && e.at <= s.continued + chrono::Duration::seconds(5)
                    })
                });
                report.ingest_stalls_channel_closed += usize::from(woke_to_close);
            }
            WorkerKind::Archive => {
                report.archive_stalls += 1;
                report.archive_stalls_holding_lease += usize::from(s.holding);
                let taken_over = s.instance.as_ref().is_some_and(|me| {
                    logs.iter().flat_map(|(_, ev)| ev).any(|e| {
                        e.message == "took over an expired archive lock"
                            && e.fields["previous_owner"].as_str() == Some(me)
                            && e.at >= s.stopped
                            && e.at <= s.continued
                    })
                });
                report.archive_stalls_lease_taken_over += usize::from(taken_over);
            }
        }
    }
}

/// One line of a worker's JSON log.
struct LogEvent {
    at: chrono::DateTime<chrono::Utc>,
    message: String,
    fields: serde_json::Value,
}

impl LogEvent {
    fn parse(line: &str) -> Option<Self> {
        let fields: serde_json::Value = serde_json::from_str(line).ok()?;
        let at = chrono::DateTime::parse_from_rfc3339(fields["timestamp"].as_str()?)
            .ok()?
            .with_timezone(&chrono::Utc);
        let message = fields["message"].as_str()?.to_owned();
        Some(Self {
            at,
            message,
            fields,
        })
    }

    /// The client library's report of a channel the broker closed because a delivery was
    /// not acked within the consumer timeout.
    fn is_consumer_timeout(&self) -> bool {
        self.message == "Channel closed"
            && self
                .fields
                .to_string()
                .contains("PRECONDITION_FAILED - delivery acknowledgement")
    }
}

fn spawn_with(binary: &str, vars: &[(String, String)], log: &Path) -> Child {
    let log_file = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    std::process::Command::new(binary)
        .envs(vars.iter().cloned())
        .env_remove("LOGFLEET_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"))
}

/// Counts of `want` missing from `got`, and of `got` beyond `want` (as multisets).
fn multiset_difference(want: &[SentLog], got: &[SentLog]) -> (usize, usize) {
    let key = |l: &SentLog| format!("{l:?}");
    let mut counts: HashMap<String, i64> = HashMap::new();
    for l in want {
        *counts.entry(key(l)).or_default() += 1;
    }
    for l in got {
        *counts.entry(key(l)).or_default() -= 1;
    }
    let lost = counts
        .values()
        .filter(|c| **c > 0)
        .map(|c| *c as usize)
        .sum();
    let duplicated = counts
        .values()
        .filter(|c| **c < 0)
        .map(|c| (-*c) as usize)
        .sum();
    (lost, duplicated)
}

/// A test environment shaped for the crash suite.
pub async fn crash_env(name: &str, plan: &CrashPlan) -> TestEnv {
    let lease = plan.lease_secs;
    TestEnv::with_chunks_of(name, plan.chunk_size, move |s| {
        s.ingest.prefetch = 50;
        s.ingest.standby_poll_ms = 200;
        s.archive.lease_secs = lease;
        s.archive.sweep_interval_secs = 1;
        s.amqp.partitions = 4;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_due_once_archiving_caught_up() {
        let plan = CrashPlan {
            chunk_size: 500,
            ..CrashPlan::short()
        };
        assert_eq!(plan.chunks_for(0), 0);
        assert_eq!(plan.chunks_for(499), 0);
        assert_eq!(plan.chunks_for(500), 1);
        assert_eq!(plan.chunks_for(1_999), 3);
        assert_eq!(plan.chunks_for(2_000), 4);
    }

    #[test]
    fn erlang_binaries_are_read() {
        assert_eq!(
            erlang_binaries("[<<\"vm:12\">>,<<\"vm:345\">>]"),
            vec!["vm:12".to_owned(), "vm:345".to_owned()]
        );
        assert!(erlang_binaries("[]").is_empty());
    }
}
