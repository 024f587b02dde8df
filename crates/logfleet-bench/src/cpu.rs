//! Figure 8: ingest-worker CPU time per ingested log, from the worker
//! process's own CPU time (`/proc/PID/stat` utime + stime of `target/release/ingest-worker`),
//! for 1-log and 1,000-log messages. The publisher is the bench process, so it is not counted.

use std::time::{Duration, Instant};

use crate::Sizes;
use crate::common::{
    self, WorkerProc, drain_process, messages, proc_cpu_secs, progress, publish_all, release_bin,
    thousands,
};
use crate::report::{Figure, Goal};

const EPISODES: usize = 16;
const PARTITIONS: u16 = 8;
/// How often the bench reads the worker's `/metrics` while it drains.
const POLL: Duration = Duration::from_millis(250);
/// How long the worker is watched idle after the drain.
const IDLE: Duration = Duration::from_secs(4);

pub async fn run(sizes: &Sizes, log_dir: &std::path::Path) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("8. Ingest-worker CPU time per log");
    fig.line(format!(
        "load per case: {EPISODES} episodes, amqp.partitions {PARTITIONS}, other settings default; all messages queued first, then target/release/ingest-worker started (the publisher is the bench process, not counted)"
    ));
    fig.line(format!("CPU = utime + stime of the worker process (/proc/PID/stat, all threads) from its first owned partition to its last ack, over the logs ingested; start-up (connect, indexes, topology) shown apart; the bench reads /metrics once every {} ms (its cost is the worker's: the idle figure is measured with the same reads)",
        POLL.as_millis()
    ));
    let bin = release_bin("ingest-worker");
    for (label, per_msg, logs) in [
        ("1-log messages", 1usize, sizes.cpu_single_logs),
        ("1,000-log messages", 1_000, sizes.cpu_batch_logs),
    ] {
        let env = common::env(&format!("cpu{per_msg}"), |s| {
            s.amqp.partitions = PARTITIONS;
            s.ingest.drain_deadline_secs = 5;
        })
        .await;
        let episodes: Vec<String> = (0..EPISODES).map(|i| format!("bench-ep{i:02}")).collect();
        let msgs = messages(&episodes, logs / EPISODES, per_msg);
        let total: u64 = msgs.iter().map(|m| m.logs as u64).sum();
        let body_bytes: usize = msgs.iter().map(|m| m.body.len()).sum();
        progress(format!("cpu {label}: publishing {} logs", thousands(total)));
        publish_all(&env, &msgs).await?;
        progress(format!("cpu {label}: ingest-worker draining"));
        let w = WorkerProc::spawn(&env, &bin, &[], &log_dir.join(format!("cpu-{per_msg}.log")))?;
        let run = drain_process(&w, msgs.len() as u64, POLL).await;
        // Idle: what the worker burns with nothing to do (standby polls, heartbeats), with
        // /metrics read as often as during the drain.
        let idle = match &run {
            Ok(_) => {
                let (c0, t0) = (proc_cpu_secs(w.pid())?, Instant::now());
                while t0.elapsed() < IDLE {
                    w.metrics_text().await;
                    tokio::time::sleep(POLL).await;
                }
                Some((proc_cpu_secs(w.pid())? - c0) / t0.elapsed().as_secs_f64())
            }
            Err(_) => None,
        };
        w.terminate().await?;
        let run = run?;
        let stored = env.store.count_all_entries().await?;
        env.cleanup().await;
        anyhow::ensure!(
            stored == total,
            "{label}: {stored} entries stored, {total} expected"
        );
        let us_per_log = run.cpu_secs * 1e6 / total as f64;
        fig.line(format!(
            "{label}: {} logs in {} messages ({:.0} bytes of JSON per log); drained in {:.2} s = {:.0} logs/s; worker CPU {:.2} s = {:.0}% of one core over the drain; {:.2} µs per log; start-up {:.2} s; idle afterwards (/metrics still read) {:.1} ms of CPU per s",
            thousands(total),
            thousands(msgs.len() as u64),
            body_bytes as f64 / total as f64,
            run.wall.as_secs_f64(),
            total as f64 / run.wall.as_secs_f64(),
            run.cpu_secs,
            100.0 * run.cpu_secs / run.wall.as_secs_f64(),
            us_per_log,
            run.startup_cpu_secs,
            idle.unwrap_or(f64::NAN) * 1e3
        ));
        // The goal is for 1,000-log messages; 1-log messages are shown without one.
        if per_msg == 1_000 {
            fig.value_verdict(
                &format!("CPU µs per log, {label}"),
                us_per_log,
                Goal::AtMost(5.0),
            );
        }
    }
    Ok(fig)
}
