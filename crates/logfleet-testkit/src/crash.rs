//! The crash suite: the real worker binaries as separate processes, killed with SIGKILL at
//! random moments while a known load runs, the broker restarted and MongoDB stopped and started
//! once; then, when the fleet is idle, everything is checked from MongoDB and S3 alone.
//!
//! `tests/crash_suite.rs` runs a short plan in CI; `scripts/crash-suite.sh` runs the long one
//! (300,000 logs, 20 episodes, 40 kills) and prints the figures.

use std::collections::HashMap;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logfleet::amqp::ConfirmedPublisher;
use rand::Rng;
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
    /// Ingest-worker processes (2-3 in the issue).
    pub ingest_workers: usize,
    /// Archive-worker processes.
    pub archive_workers: usize,
    /// SIGKILLs to deliver, at random moments, to random workers (each restarted after).
    pub kills: usize,
    /// `archiveThreshold` and `chunkSize` of every episode: small, so many chunks get written.
    pub chunk_size: i32,
    /// Percent of messages published a second time with the same message_id.
    pub duplicate_percent: u32,
    /// Restart the RabbitMQ broker once, mid-load (`rabbitmqctl stop_app` / `start_app`).
    pub restart_broker: bool,
    /// Stop and start MongoDB once, mid-load, with these commands (None: skip).
    pub mongo_stop_start: Option<(String, String)>,
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
            chunk_size: 500,
            duplicate_percent: 5,
            restart_broker: disrupt,
            mongo_stop_start: mongo_commands_from_env().filter(|_| disrupt),
        }
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
    pub kills: usize,
    pub worker_restarts: usize,
    pub broker_restarts: usize,
    pub mongo_restarts: usize,
    pub messages_published: u64,
    pub duplicate_publishes: u64,
    pub publish_retries: u64,
    pub logs_checked: usize,
    pub chunks_checked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub dead_letters: u32,
    pub seconds: f64,
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kills:               {}", self.kills)?;
        writeln!(f, "worker restarts:     {}", self.worker_restarts)?;
        writeln!(f, "broker restarts:     {}", self.broker_restarts)?;
        writeln!(f, "mongodb restarts:    {}", self.mongo_restarts)?;
        writeln!(
            f,
            "messages published:  {} ({} duplicate publishes, {} retried after errors)",
            self.messages_published, self.duplicate_publishes, self.publish_retries
        )?;
        writeln!(f, "logs checked:        {}", self.logs_checked)?;
        writeln!(f, "chunks checked:      {}", self.chunks_checked)?;
        writeln!(f, "lost:                {}", self.lost)?;
        writeln!(f, "duplicated:          {}", self.duplicated)?;
        writeln!(f, "out of order:        {}", self.out_of_order)?;
        writeln!(f, "dead letters:        {}", self.dead_letters)?;
        write!(f, "wall time:           {:.1} s", self.seconds)
    }
}

/// Path of a worker binary built beside the running executable (`target/<profile>/`).
pub fn worker_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workers first (cargo build --bins)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A worker process slot: the binary and its current process.
struct Slot {
    binary: String,
    child: Option<Child>,
}

/// Publishes on its own connection, reconnecting and retrying the same message (same
/// message_id) until the broker confirms it.
struct ResilientPublisher {
    env_settings: logfleet::config::AmqpSettings,
    name: String,
    conn: Option<(lapin::Connection, ConfirmedPublisher)>,
    retries: Arc<AtomicU64>,
}

impl ResilientPublisher {
    async fn publish(&mut self, exchange: &str, routing_key: &str, body: &[u8], id: &str) {
        loop {
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
                    return;
                }
                self.conn = None;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

use crate::run_shell as run_cmd;

/// Runs the plan against the services of `env` (created with `crash_env`) and returns what it
/// found. Panics only on harness failures; the caller asserts on the report.
pub async fn run(env: &TestEnv, plan: &CrashPlan) -> CrashReport {
    let started = Instant::now();
    let mut report = CrashReport::default();
    let ingest_bin = worker_binary("ingest-worker");
    let archive_bin = worker_binary("archive-worker");
    let slots: Vec<Slot> = (0..plan.ingest_workers)
        .map(|_| Slot {
            binary: ingest_bin.clone(),
            child: None,
        })
        .chain((0..plan.archive_workers).map(|_| Slot {
            binary: archive_bin.clone(),
            child: None,
        }))
        .collect();
    let slots = Arc::new(Mutex::new(slots));
    let worker_env = env.worker_env();
    for s in slots.lock().await.iter_mut() {
        s.child = Some(spawn_with(&s.binary, &worker_env));
    }

    // The load: per producer, per episode, numbered logs; sizes of messages vary.
    let episodes: Vec<String> = (0..plan.episodes)
        .map(|i| format!("crash-{i:03}"))
        .collect();
    let per_pair = plan.logs / (plan.episodes * plan.producers);
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
        producers.push(tokio::spawn(async move {
            let mut publisher = ResilientPublisher { env_settings: amqp, name: format!("crash-producer-{p}"), conn: None, retries };
            let mut sent: HashMap<String, Vec<SentLog>> = HashMap::new();
            let mut cursor: HashMap<String, usize> = HashMap::new();
            let mut recent: Vec<(String, Vec<u8>, String)> = Vec::new();
            let mut seq = 0u64;
            let mut rng = rand::rngs::StdRng::seed_from_u64(p as u64);
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
                publisher.publish(&exchange, &ep, &body, &id).await;
                published.fetch_add(1, Ordering::Relaxed);
                sent.entry(ep.clone()).or_default().extend(logs);
                cursor.insert(ep.clone(), from + n);
                recent.push((ep, body, id));
                if recent.len() > 50 {
                    recent.remove(0);
                }
                if rng.gen_range(0..100) < dup_pct {
                    let (dep, dbody, did) = recent[rng.gen_range(0..recent.len())].clone();
                    publisher.publish(&exchange, &dep, &dbody, &did).await;
                    duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            sent
        }));
    }

    // Chaos: kills at random moments, one broker restart, one MongoDB stop/start.
    let chaos = {
        let (slots, published, load_done) = (slots.clone(), published.clone(), load_done.clone());
        let plan = plan.clone();
        let env_worker = env.worker_env();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let (mut kills, mut restarts, mut broker, mut mongo) = (0, 0, 0, 0);
            while kills < plan.kills {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1_200))).await;
                let victim = rng.gen_range(0..plan.ingest_workers + plan.archive_workers);
                let mut guard = slots.lock().await;
                let slot = &mut guard[victim];
                if let Some(mut child) = slot.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                    kills += 1;
                }
                drop(guard);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
                let mut guard = slots.lock().await;
                let slot = &mut guard[victim];
                slot.child = Some(spawn_with(&slot.binary, &env_worker));
                restarts += 1;
                drop(guard);
                let progress =
                    published.load(Ordering::Relaxed) as f64 / total_messages_estimate as f64;
                if plan.restart_broker
                    && broker == 0
                    && (progress > 0.3 || load_done.load(Ordering::Relaxed))
                {
                    tokio::task::spawn_blocking(|| {
                        run_cmd("rabbitmqctl -q stop_app");
                        run_cmd("rabbitmqctl -q start_app");
                        run_cmd("rabbitmqctl -q await_startup");
                    })
                    .await
                    .unwrap();
                    broker += 1;
                }
                if let Some((stop, start)) = plan.mongo_stop_start.clone()
                    && mongo == 0
                    && (progress > 0.6 || load_done.load(Ordering::Relaxed))
                {
                    tokio::task::spawn_blocking(move || {
                        let outage = crate::MongoOutage::begin(&stop, &start);
                        std::thread::sleep(Duration::from_secs(2));
                        outage.end();
                    })
                    .await
                    .unwrap();
                    mongo += 1;
                }
            }
            (kills, restarts, broker, mongo)
        }
    };
    let chaos = tokio::spawn(chaos);
    let mut expected_by_producer: Vec<HashMap<String, Vec<SentLog>>> = Vec::new();
    for p in producers {
        expected_by_producer.push(p.await.expect("producer task"));
    }
    load_done.store(true, Ordering::Relaxed);
    let (kills, restarts, broker, mongo) = chaos.await.expect("chaos task");
    report.kills = kills;
    report.worker_restarts = restarts;
    report.broker_restarts = broker;
    report.mongo_restarts = mongo;
    report.messages_published = published.load(Ordering::Relaxed);
    report.duplicate_publishes = duplicates.load(Ordering::Relaxed);
    report.publish_retries = retries.load(Ordering::Relaxed);

    // Idle: every log counted, queues drained, nothing due for archiving, no lock held.
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
        let n = expected.get(ep).map_or(0, Vec::len) as i64;
        env.wait_for(
            &format!("{ep}: {n} logs, archiving caught up, unlocked"),
            || async {
                env.metadata(ep).await.is_some_and(|m| {
                    m.total_logs == n
                        && !m.is_archiving
                        && m.current_logs < i64::from(m.archive_threshold)
                })
            },
        )
        .await;
    }
    for q in env.topology.partition_queues.clone() {
        env.wait_for(&format!("{q} drained"), || async {
            env.queue_depth(&q).await == 0
        })
        .await;
    }

    // Stop the fleet, then check from MongoDB and S3 alone.
    for s in slots.lock().await.iter_mut() {
        if let Some(c) = s.child.take() {
            crate::terminate(c).await;
        }
    }
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

fn spawn_with(binary: &str, vars: &[(String, String)]) -> Child {
    std::process::Command::new(binary)
        .envs(vars.iter().cloned())
        .env_remove("LOGFLEET_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
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
    let chunk = plan.chunk_size;
    TestEnv::new(name, move |s| {
        s.ingest.archive_threshold = chunk;
        s.ingest.chunk_size = chunk;
        s.ingest.prefetch = 50;
        s.ingest.standby_poll_ms = 200;
        s.archive.lease_secs = 3;
        s.archive.sweep_interval_secs = 1;
        s.amqp.partitions = 4;
    })
    .await
}

use rand::SeedableRng;
