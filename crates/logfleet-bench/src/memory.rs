//! Figure 4: peak RSS of the worker binaries, against the chunk's uncompressed size.

use std::io::Read;
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use logfleet::object_store::ObjectStore;

use crate::Sizes;
use crate::common::{
    self, WorkerProc, drain_in_process, messages, mib, progress, publish_all, release_bin,
    thousands, wait_until,
};
use crate::report::Figure;

pub async fn run(sizes: &Sizes, log_dir: &std::path::Path) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("4. Memory (peak RSS = VmHWM of the worker binary)");
    let c = sizes.archive_chunk;

    // --- archive-worker building one chunk -------------------------------------------------
    let env = common::env("mem-archive", |s| {
        s.ingest.archive_threshold = c as i32;
        s.ingest.chunk_size = c as i32;
        s.ingest.drain_deadline_secs = 2;
    })
    .await;
    let w = WorkerProc::spawn(
        &env,
        &release_bin("archive-worker"),
        &[],
        &log_dir.join("archive-worker.log"),
    )?;
    wait_until(
        "the archive-worker's /metrics",
        Duration::from_millis(20),
        || async {
            Ok(w.metric("logfleet_archive_chunks_written_total")
                .await
                .is_some())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = w.peak_rss()?;
    progress("memory: archive-worker idle; loading the chunk");
    let ep = "bench-mem-archive";
    publish_all(&env, &messages(&[ep.to_owned()], c, 1_000)).await?;
    drain_in_process(&env, c as u64).await?;
    progress("memory: chunk loaded; waiting for the archive-worker");
    wait_until("the chunk", Duration::from_millis(100), || async {
        Ok(env
            .metadata(ep)
            .await
            .is_some_and(|m| m.total_chunks == 1 && !m.is_archiving))
    })
    .await?;
    let peak = w.peak_rss()?;
    w.terminate().await?;
    let chunk = env
        .store
        .chunks_of(&logfleet::domain::EpisodeId::parse(ep)?)
        .await?;
    let gz = env.objects.get(&chunk[0].src).await?;
    let mut jsonl = Vec::new();
    MultiGzDecoder::new(&gz[..]).read_to_end(&mut jsonl)?;
    let chunk_bytes = jsonl.len() as u64;
    env.cleanup().await;
    fig.line(format!(
        "chunk: {} logs = {} of JSONL uncompressed ({} gzip)",
        thousands(c as u64),
        mib(chunk_bytes),
        mib(gz.len() as u64)
    ));
    fig.line(format!(
        "archive-worker building it: peak {} ({:.2}x the chunk); idle before {} (peak - idle = {:.2}x the chunk)",
        mib(peak),
        peak as f64 / chunk_bytes as f64,
        mib(idle),
        (peak.saturating_sub(idle)) as f64 / chunk_bytes as f64
    ));

    // --- ingest-worker at full prefetch ----------------------------------------------------
    let prefetch = sizes.mem_prefetch;
    let env = common::env("mem-ingest", |s| {
        s.amqp.partitions = 1;
        s.ingest.prefetch = prefetch as u16;
        s.ingest.drain_deadline_secs = 2;
    })
    .await;
    let bin = release_bin("ingest-worker");
    let log = log_dir.join("ingest-worker.log");
    let owned = "logfleet_ingest_partitions_owned";
    let w = WorkerProc::spawn(&env, &bin, &[], &log)?;
    wait_until(
        "the ingest-worker's partition",
        Duration::from_millis(20),
        || async { Ok(w.metric(owned).await == Some(1.0)) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = w.peak_rss()?;
    w.terminate().await?;
    progress("memory: ingest-worker idle measured; filling its partition");
    // Fill the one partition with more than a prefetch of 1,000-log messages, then start.
    let msgs = messages(&["bench-mem-ingest".to_owned()], prefetch * 1_000, 1_000);
    let body_bytes: usize = msgs.iter().map(|m| m.body.len()).sum();
    publish_all(&env, &msgs).await?;
    progress("memory: partition filled; starting the ingest-worker");
    let w = WorkerProc::spawn(&env, &bin, &[], &log)?;
    // The prefetch arrives as one batch (or nearly: what came within the linger); every entry of
    // it is built before its first insertMany of max_batch_logs logs, so once that slice is
    // written the batch has been decoded, built and serialized: the peak is behind us.
    let target = env.settings.ingest.max_batch_logs.min(prefetch * 1_000) as f64;
    let Watched { held_max, .. } = watch_until_inserted(&w, target).await?;
    let peak = w.peak_rss()?;
    progress("memory: ingest-worker peak read; stopping it");
    w.terminate().await?;
    env.cleanup().await;
    let avg_body = body_bytes as f64 / msgs.len() as f64;
    // The queue held more than a prefetch, so the broker delivered `prefetch` messages unacked;
    // those the first batch did not take wait in the consumer's buffer, in memory too.
    let held_bytes = (prefetch as f64 * avg_body) as u64;
    fig.line(format!(
        "ingest-worker at full prefetch: ingest.prefetch {prefetch} on 1 partition, {} 1,000-log messages of {:.0} KiB queued; held unacked: {prefetch} messages = {} logs = {} of bodies ({held_max:.0} of them in the first batch)",
        msgs.len(),
        avg_body / 1024.0,
        thousands(prefetch as u64 * 1_000),
        mib(held_bytes)
    ));
    fig.line(format!(
        "ingest-worker: peak {} ({:.2}x the chunk; {:.2}x the bodies held); idle {} (peak - idle = {:.2}x the bodies held)",
        mib(peak),
        peak as f64 / chunk_bytes as f64,
        peak as f64 / held_bytes.max(1) as f64,
        mib(idle),
        (peak.saturating_sub(idle)) as f64 / held_bytes.max(1) as f64
    ));
    failover(&mut fig, log_dir, idle).await?;
    Ok(fig)
}

/// Partitions of the failover case: the default `amqp.partitions`.
const PARTITIONS: u16 = 8;

/// The failover case `docs/deployment.md` sizes the ingest-worker for: one replica owning all
/// 8 partitions, each queue holding more than a prefetch. Prints the peak beside the sizing
/// formula's `M` for the same settings and message size.
async fn failover(fig: &mut Figure, log_dir: &std::path::Path, idle: u64) -> anyhow::Result<()> {
    // The prefetch k8s/base ships (LOGFLEET__INGEST__PREFETCH).
    let prefetch = 16;
    let env = common::env("mem-failover", |s| {
        s.amqp.partitions = PARTITIONS;
        s.ingest.prefetch = prefetch as u16;
        s.ingest.drain_deadline_secs = 2;
    })
    .await;
    let episodes = one_episode_per_partition(&env).await?;
    // Each partition's episode: a prefetch and a half of 1,000-log messages.
    let per_episode = prefetch * 3 / 2 * 1_000;
    let msgs = messages(&episodes, per_episode, 1_000);
    let largest = msgs.iter().map(|m| m.body.len()).max().unwrap_or(0) as u64;
    publish_all(&env, &msgs).await?;
    progress("memory: 8 partitions filled; starting one ingest-worker for all of them");
    let bin = release_bin("ingest-worker");
    let w = WorkerProc::spawn(&env, &bin, &[], &log_dir.join("ingest-worker-failover.log"))?;
    let total = (episodes.len() * per_episode) as f64;
    let Watched {
        held_max,
        owned_max,
    } = watch_until_inserted(&w, total).await?;
    // VmHWM: the most the process ever held, whenever during the drain that was.
    let peak = w.peak_rss()?;
    w.terminate().await?;
    let b = env.settings.ingest.max_batch_bytes as u64;
    env.cleanup().await;
    // docs/deployment.md: M = M_idle + P x (p x S + E x min(p x S, B + S)), M_idle 32 MiB, E 20.
    let p = prefetch as u64;
    let held = p * largest;
    let formula = (32 << 20) + u64::from(PARTITIONS) * (held + 20 * held.min(b + largest));
    fig.line(format!(
        "ingest-worker owning all {PARTITIONS} partitions (a failover): ingest.prefetch {prefetch}, each queue holding {} 1,000-log messages of at most {:.0} KiB; owned at most {owned_max:.0}, held unacked at most {held_max:.0} messages",
        prefetch * 3 / 2,
        largest as f64 / 1024.0,
    ));
    fig.line(format!(
        "ingest-worker failover: peak {} (idle {}); the sizing formula's M for these settings {} (peak / M = {:.2})",
        mib(peak),
        mib(idle),
        mib(formula),
        peak as f64 / formula as f64
    ));
    Ok(())
}

/// One episode name per partition queue, in queue order. The broker's hash places them, so ask
/// it: a probe per candidate name through the logs exchange, read back from every queue.
async fn one_episode_per_partition(env: &logfleet_testkit::TestEnv) -> anyhow::Result<Vec<String>> {
    let probes: Vec<common::Msg> = (0..256)
        .map(|i| common::Msg {
            routing_key: format!("bench-mem-p{i}"),
            body: b"{}".to_vec(),
            id: format!("probe-{i}"),
            logs: 0,
        })
        .collect();
    publish_all(env, &probes).await?;
    let ch = env.conn.create_channel().await?;
    let mut picked = Vec::new();
    for q in &env.topology.partition_queues {
        let mut first = None;
        while let Some(m) = ch
            .basic_get(
                q.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await?
        {
            first.get_or_insert_with(|| m.delivery.routing_key.to_string());
        }
        picked.push(first.ok_or_else(|| anyhow::anyhow!("no probe reached {q}"))?);
    }
    logfleet::amqp::close_channel(&ch, "probes read").await;
    Ok(picked)
}

/// The most an ingest-worker showed on `/metrics` while it worked.
struct Watched {
    /// Deliveries held unacked at once (`prefetch_in_use`).
    held_max: f64,
    /// Partitions owned at once.
    owned_max: f64,
}

/// Polls the worker's `/metrics` every 10 ms until it has inserted `target` logs.
async fn watch_until_inserted(w: &WorkerProc, target: f64) -> anyhow::Result<Watched> {
    let mut seen = Watched {
        held_max: 0.0,
        owned_max: 0.0,
    };
    let deadline = tokio::time::Instant::now() + common::STUCK_AFTER;
    loop {
        if let Some(h) = w.metric("logfleet_ingest_prefetch_in_use").await {
            seen.held_max = seen.held_max.max(h);
        }
        if let Some(o) = w.metric("logfleet_ingest_partitions_owned").await {
            seen.owned_max = seen.owned_max.max(o);
        }
        if w.metric("logfleet_ingest_logs_inserted_total").await >= Some(target) {
            return Ok(seen);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "stuck waiting for the ingest-worker to insert {target} logs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
