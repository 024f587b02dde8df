//! Figure 5: ingest logs/s with 1, 2 and 4 ingest-worker processes over 16 episodes.

use std::time::{Duration, Instant};

use crate::Sizes;
use crate::common::{self, WorkerProc, messages, progress, publish_all, release_bin, thousands};
use crate::report::Figure;

const PARTITIONS: u16 = 8;
const EPISODES: usize = 16;

pub async fn run(sizes: &Sizes, log_dir: &std::path::Path) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("5. Scaling (ingest-worker processes)");
    let per_ep = sizes.scaling_logs_per_episode;
    let per_msg = per_ep.min(1_000);
    let total = (per_ep * EPISODES) as u64;
    fig.line(format!(
        "load: {} logs = {EPISODES} episodes x {} in {}-log messages; amqp.partitions {PARTITIONS} (one exclusive consumer each); queues filled first, then the workers started together",
        thousands(total),
        thousands(per_ep as u64),
        thousands(per_msg as u64)
    ));
    fig.line("clock: from the first partition owned by any worker to the last log inserted (polled on /metrics every 25 ms)");
    let bin = release_bin("ingest-worker");
    let mut base = None;
    for k in [1usize, 2, 4] {
        let env = common::env(&format!("scale{k}"), |s| {
            s.amqp.partitions = PARTITIONS;
            s.ingest.drain_deadline_secs = 5;
        })
        .await;
        let episodes: Vec<String> = (0..EPISODES).map(|i| format!("bench-ep{i:02}")).collect();
        publish_all(&env, &messages(&episodes, per_ep, per_msg)).await?;
        let mut used = 0;
        for q in &env.topology.partition_queues {
            used += usize::from(env.queue_depth(q).await > 0);
        }
        progress(format!("scaling: {k} worker(s) starting"));
        let log = log_dir.join(format!("scaling-{k}.log"));
        let workers = (0..k)
            .map(|_| WorkerProc::spawn(&env, &bin, &[], &log))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut owned_max = vec![0.0f64; k];
        let mut owned_now = vec![0.0f64; k];
        let mut t0 = None;
        let deadline = Instant::now() + common::STUCK_AFTER;
        let elapsed = loop {
            let mut inserted = 0.0;
            for (i, w) in workers.iter().enumerate() {
                let owned = w
                    .metric("logfleet_ingest_partitions_owned")
                    .await
                    .unwrap_or(0.0);
                owned_max[i] = owned_max[i].max(owned);
                owned_now[i] = owned;
                inserted += w
                    .metric("logfleet_ingest_logs_inserted_total")
                    .await
                    .unwrap_or(0.0);
            }
            if t0.is_none() && owned_max.iter().any(|&o| o > 0.0) {
                t0 = Some(Instant::now());
            }
            if inserted >= total as f64 {
                break t0.expect("a partition was owned").elapsed();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "stuck: {inserted} of {total} logs inserted"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        for w in workers {
            w.terminate().await?;
        }
        env.cleanup().await;
        let lps = total as f64 / elapsed.as_secs_f64();
        let base_lps = *base.get_or_insert(lps);
        fig.line(format!(
            "{k} worker{}: {lps:.0} logs/s ({:.2} s), {:.2}x of 1 worker; partitions owned per worker: at most {:?}, at the end {:?} ({used} of {PARTITIONS} partitions had messages)",
            if k == 1 { " " } else { "s" },
            elapsed.as_secs_f64(),
            lps / base_lps,
            owned_max.iter().map(|&o| o as u32).collect::<Vec<_>>(),
            owned_now.iter().map(|&o| o as u32).collect::<Vec<_>>()
        ));
    }
    Ok(fig)
}
