//! What every figure shares: the load (deterministic logs as producer messages), a pipelined
//! publisher, the same documents as the ingest-worker would store them, worker processes and
//! their `/metrics` and `/proc` readings.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bson::DateTime;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use logfleet::config::Settings;
use logfleet::contract::{self, MessageProperties};
use logfleet::ingest::IngestOptions;
use logfleet::metrics::IngestMetrics;
use logfleet::model::{LogEntry, MessageKey, digest_of_message, message_entries};
use logfleet_testkit::{TestEnv, batch_body, make_logs, single_body};

/// When the run started, for [`progress`].
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress note on stderr, with the seconds since the run started (the figures go to stdout).
pub fn progress(what: impl std::fmt::Display) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:>6.1} s] {what}");
}

/// Longest any wait of the bench may take before it gives up as stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(300);

/// Publisher confirms outstanding at once when pre-filling queues.
const CONFIRM_WINDOW: usize = 1_000;

/// One producer message, serialized before any timing starts.
pub struct Msg {
    /// Routing key: the episodeId.
    pub routing_key: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The AMQP `message_id` (the idempotency key).
    pub id: String,
    /// Logs in the body.
    pub logs: usize,
}

/// `logs_per_episode` logs for each episode, in messages of `logs_per_msg` logs (1 means the
/// single-log form). Episodes are interleaved message by message, as concurrent producers would
/// publish them; each episode's messages stay in order.
pub fn messages(episodes: &[String], logs_per_episode: usize, logs_per_msg: usize) -> Vec<Msg> {
    let per_episode: Vec<Vec<Msg>> = episodes
        .iter()
        .map(|ep| {
            let logs = make_logs(ep, logs_per_episode, 1_767_225_600_000);
            logs.chunks(logs_per_msg)
                .enumerate()
                .map(|(i, part)| {
                    let body = if logs_per_msg == 1 {
                        single_body(ep, &part[0])
                    } else {
                        batch_body(ep, part)
                    };
                    Msg {
                        routing_key: ep.clone(),
                        body: serde_json::to_vec(&body).expect("JSON"),
                        id: format!("{ep}-m{i}"),
                        logs: part.len(),
                    }
                })
                .collect()
        })
        .collect();
    let rounds = per_episode.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = per_episode.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    for _ in 0..rounds {
        for it in &mut iters {
            out.extend(it.next());
        }
    }
    out
}

/// The LogEntries an ingest-worker stores for `msgs`: decoded by the worker's own decoder and
/// numbered per episode in publish order (`createdAt` now).
pub fn entries_of(msgs: &[Msg], settings: &Settings) -> anyhow::Result<Vec<LogEntry>> {
    let now = DateTime::now();
    let mut next_seq: std::collections::HashMap<String, i64> = Default::default();
    let mut out = Vec::new();
    for m in msgs {
        let decoded = contract::decode(
            &m.body,
            MessageProperties {
                message_id: Some(&m.id),
                routing_key: Some(&m.routing_key),
                content_type: Some("application/json"),
                content_encoding: None,
            },
            &settings.limits,
        )
        .map_err(|e| anyhow!("bench message refused: {e}"))?;
        let seq = next_seq.entry(m.routing_key.clone()).or_default();
        // Built by the function the ingest-worker builds its entries with.
        let key = MessageKey::new(&decoded.episode_id, decoded.message_id.as_str());
        let digest = digest_of_message(&decoded);
        // Epoch 1: the stamp is an Int64 whatever the ownership epoch.
        out.extend(message_entries(&key, digest, &decoded, *seq, now, 1)?);
        *seq += decoded.logs.len() as i64;
    }
    Ok(out)
}

/// Publishes every message to the logs exchange, persistent, with publisher confirms kept
/// [`CONFIRM_WINDOW`] deep. Returns once the broker confirmed them all.
pub async fn publish_all(env: &TestEnv, msgs: &[Msg]) -> anyhow::Result<Duration> {
    let ch = env.publisher.channel();
    let exchange = env.topology.logs_exchange.as_str();
    let mut window = VecDeque::with_capacity(CONFIRM_WINDOW);
    let t0 = Instant::now();
    let check = |c: Confirmation| match c {
        Confirmation::Nack(_) => Err(anyhow!("broker nacked a bench message")),
        _ => Ok(()),
    };
    for m in msgs {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(m.id.as_str().into())
            .with_delivery_mode(2);
        let confirm = ch
            .basic_publish(
                exchange.into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &m.body,
                props,
            )
            .await?;
        window.push_back(confirm);
        if window.len() >= CONFIRM_WINDOW {
            check(window.pop_front().expect("non-empty").await?)?;
        }
    }
    for c in window {
        check(c.await?)?;
    }
    Ok(t0.elapsed())
}

/// Runs an in-process ingest-worker over queues that are already filled: returns the time from
/// its first owned partition (start-up excluded) until `total_logs` logs are inserted, then
/// stops it.
pub async fn drain_in_process(env: &TestEnv, total_logs: u64) -> anyhow::Result<Duration> {
    let metrics = Arc::new(IngestMetrics::default());
    let worker = env.spawn_ingest(IngestOptions {
        metrics: metrics.clone(),
        ..Default::default()
    });
    let deadline = Instant::now() + STUCK_AFTER;
    while metrics.partitions_owned.get() == 0 {
        if worker.is_finished() || Instant::now() > deadline {
            bail!("ingest-worker never took a partition");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let t0 = Instant::now();
    while metrics.logs_inserted.get() < total_logs {
        if worker.is_finished() || Instant::now() > deadline {
            bail!(
                "stuck: {} of {total_logs} logs inserted ({} messages consumed, {} acked)",
                metrics.logs_inserted.get(),
                metrics.messages_consumed.get(),
                metrics.messages_acked.get()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t0.elapsed();
    worker.stop().await.context("ingest-worker")?;
    Ok(elapsed)
}

/// Waits until `f` says done, polling every `every`; fails after [`STUCK_AFTER`] naming `what`.
pub async fn wait_until<F, Fut>(what: &str, every: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + STUCK_AFTER;
    while !f().await? {
        if Instant::now() > deadline {
            bail!("stuck waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// A fresh environment for one figure: `TestEnv` names, services from the environment.
pub async fn env(name: &str, tweak: impl FnOnce(&mut Settings)) -> TestEnv {
    TestEnv::new(&format!("bench-{name}"), tweak).await
}

/// The workspace's release binaries.
pub fn release_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release").join(name)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the worker binaries in release mode (a no-op when they are up to date).
pub fn build_workers() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "ingest-worker",
            "-p",
            "archive-worker",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p ingest-worker -p archive-worker failed");
    }
    Ok(())
}

/// A worker binary running as a child process with the environment's `LOGFLEET__*` settings.
pub struct WorkerProc {
    pub child: Child,
    /// Where its `/metrics`, `/healthz`, `/readyz` listen.
    pub http: SocketAddr,
}

impl WorkerProc {
    /// Starts `bin` with `env`'s settings, then `extra` settings; output goes to `log`.
    pub fn spawn(
        env: &TestEnv,
        bin: &Path,
        extra: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let http = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin)
            .envs(env.worker_env())
            .env_remove("LOGFLEET_CONFIG")
            .env_remove("RUST_LOG")
            .env("LOGFLEET__INGEST__HTTP_LISTEN", http.to_string())
            .env("LOGFLEET__ARCHIVE__HTTP_LISTEN", http.to_string())
            .env("LOGFLEET__TELEMETRY__FILTER", "warn")
            .envs(extra.iter().map(|(k, v)| (format!("LOGFLEET__{k}"), v.clone())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it: cargo build --release -p ingest-worker -p archive-worker)",
                    bin.display()
                )
            })?;
        Ok(Self { child, http })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of a sample on `/metrics`; None while the endpoint does not answer.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics_text().await?;
        logfleet_testkit::metric_value(&text, sample)
    }

    /// The whole `/metrics` text; None while the endpoint does not answer.
    pub async fn metrics_text(&self) -> Option<String> {
        http_body(self.http, "/metrics").await
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        proc_status_kb(self.pid(), "VmHWM:").map(|kb| kb * 1024)
    }

    /// SIGTERM, then waits for the exit (the workers drain and exit 0).
    pub async fn terminate(self) -> anyhow::Result<()> {
        let code = logfleet_testkit::terminate(self.child).await;
        if code != Some(0) {
            bail!("worker exited with {code:?} after SIGTERM");
        }
        Ok(())
    }
}

/// A GET on loopback that returns None instead of failing when nothing answers yet.
async fn http_body(addr: SocketAddr, path: &str) -> Option<String> {
    let raw = logfleet_testkit::raw_http_get(addr, path).await?;
    raw.starts_with("HTTP/1.")
        .then(|| raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
        .flatten()
}

/// A `kB` line of `/proc/PID/status`, such as `VmHWM:`.
pub fn proc_status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// Median of a non-empty sample.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `1234567` as `1,234,567`.
pub use logfleet_testkit::thousands;

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The connection string for `--mongo`: `ferretdb` and `nx` name the servers that
/// `scripts/services.sh` starts; anything else is taken as a connection string.
pub fn mongo_uri(arg: &str) -> String {
    match arg {
        "ferretdb" => "mongodb://127.0.0.1:27018/?directConnection=true".into(),
        "nx" => "mongodb://127.0.0.1:27017/?directConnection=true".into(),
        uri => uri.into(),
    }
}

/// A name for the server behind a connection string, for the header.
pub fn server_name(uri: &str) -> &'static str {
    if uri.contains(":27018") {
        "FerretDB 1.24 (SQLite backend)"
    } else if uri.contains(":27017") && uri.contains("127.0.0.1") {
        "nx-27017 0.8.1 (or another server on 127.0.0.1:27017)"
    } else {
        "as given"
    }
}

/// A server's own raw insertMany rate, the yardstick for every throughput figure.
pub struct RawRate {
    /// Median logs/s over the runs.
    pub median: f64,
    /// insertMany calls measured.
    pub runs: usize,
    /// Documents per insertMany.
    pub docs: usize,
}

/// Times `runs` unordered insertMany calls of 10,000 LogEntry documents each (the bench's
/// usual log shape) into a fresh database with the schema's indexes.
pub async fn raw_insert_rate() -> anyhow::Result<RawRate> {
    let (runs, n) = (3, 10_000);
    let env = env("rawrate", |_| {}).await;
    let msgs = messages(&["raw-ep".to_owned()], n * runs, 1_000);
    let docs = entries_of(&msgs, &env.settings)?;
    let mut rates = Vec::new();
    for part in docs.chunks(n) {
        let t = Instant::now();
        env.store.insert_entries(part).await?;
        rates.push(part.len() as f64 / t.elapsed().as_secs_f64());
    }
    env.cleanup().await;
    Ok(RawRate {
        median: median(&rates),
        runs,
        docs: n,
    })
}

/// CPU time a process has used so far, user + system, all its threads (`/proc/PID/stat`).
pub fn proc_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i - 3)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14)? + ticks(15)?) / hz)
}

/// One ingest-worker process draining queues filled beforehand.
pub struct Drained {
    /// From its first owned partition to its last ack.
    pub wall: Duration,
    /// Its CPU time over the same span.
    pub cpu_secs: f64,
    /// Its CPU time before the first owned partition (start-up: connect, indexes, topology).
    pub startup_cpu_secs: f64,
    /// Partitions it owned at most.
    pub partitions: u32,
}

/// Waits until the worker process `w` has acked `messages` messages: the clock and its CPU time
/// run from its first owned partition. `/metrics` is read every 10 ms until then (start-up),
/// then once every `poll` (one GET each time): the worker serves those reads with its own CPU.
pub async fn drain_process(
    w: &WorkerProc,
    messages: u64,
    poll: Duration,
) -> anyhow::Result<Drained> {
    let deadline = Instant::now() + STUCK_AFTER;
    let (mut t0, mut cpu0, mut owned_max) = (None, 0.0, 0.0f64);
    loop {
        let text = w.metrics_text().await.unwrap_or_default();
        let value = |name: &str| logfleet_testkit::metric_value(&text, name).unwrap_or(0.0);
        let owned = value("logfleet_ingest_partitions_owned");
        owned_max = owned_max.max(owned);
        if t0.is_none() && owned > 0.0 {
            cpu0 = proc_cpu_secs(w.pid())?;
            t0 = Some(Instant::now());
        }
        let acked = value("logfleet_ingest_messages_acked_total");
        if acked >= messages as f64 {
            let wall = t0.expect("a partition was owned").elapsed();
            let cpu1 = proc_cpu_secs(w.pid())?;
            return Ok(Drained {
                wall,
                cpu_secs: cpu1 - cpu0,
                startup_cpu_secs: cpu0,
                partitions: owned_max as u32,
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "stuck: {acked} of {messages} messages acked"
        );
        let wait = if t0.is_some() {
            poll
        } else {
            Duration::from_millis(10)
        };
        tokio::time::sleep(wait).await;
    }
}

/// The server's plan for `find(filter)` on a collection, from `explain`, in a few words: the
/// stages, index names and details it names (MongoDB: `winningPlan` stages; FerretDB: its
/// SQLite plan and whether the filter was pushed down; nx-27017: its SQLite plan).
pub async fn explain_find(
    client: &mongodb::Client,
    database: &str,
    collection: &str,
    filter: bson::Document,
) -> String {
    let cmd = bson::doc! {"explain": {"find": collection, "filter": filter}};
    let e = match client.database(database).run_command(cmd).await {
        Ok(e) => e,
        Err(e) => return format!("explain failed: {e}"),
    };
    fn walk(b: &bson::Bson, out: &mut Vec<String>) {
        match b {
            bson::Bson::Document(d) => {
                for (k, v) in d {
                    match (k.as_str(), v) {
                        ("stage" | "detail" | "indexName", bson::Bson::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            bson::Bson::Array(a) => {
                for v in a {
                    match v {
                        bson::Bson::String(s) => out.push(s.clone()),
                        v => walk(v, out),
                    }
                }
            }
            _ => {}
        }
    }
    let mut parts = Vec::new();
    if let Ok(qp) = e.get_document("queryPlanner") {
        let plan = qp.get("winningPlan").or_else(|| qp.get("Plan"));
        if let Some(p) = plan {
            walk(p, &mut parts);
        }
    }
    let mut s = if parts.is_empty() {
        "no plan in the explain output".to_owned()
    } else {
        parts.join(" <- ")
    };
    if let Ok(p) = e.get_bool("filterPushdown") {
        s.push_str(&format!("; filterPushdown {p}"));
    }
    s
}
