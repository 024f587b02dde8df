//! The long crash suite: `scripts/crash-suite.sh [--logs N] [--episodes N] [--kills N] ...`.
//! Prints the figures (kills, stalls, restarts, logs checked, lost, duplicated) and exits
//! non-zero if anything was lost, duplicated or reordered, or archiving did not finish.

use logfleet_testkit::crash::{self, CrashPlan};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = CrashPlan {
        logs: arg("--logs", 300_000),
        episodes: arg("--episodes", 20),
        producers: arg("--producers", 4),
        ingest_workers: arg("--ingest-workers", 3),
        archive_workers: arg("--archive-workers", 2),
        kills: arg("--kills", 40),
        ingest_stalls: arg("--ingest-stalls", 6),
        archive_stalls: arg("--archive-stalls", 6),
        lease_secs: arg("--lease-secs", 3) as u64,
        consumer_timeout_ms: arg("--consumer-timeout-ms", 30_000) as u64,
        chunk_size: arg("--chunk-size", 1_000) as i32,
        duplicate_percent: arg("--duplicate-percent", 5) as u32,
        restart_broker: arg("--restart-broker", 1) == 1,
        mongo_stop_start: crash::mongo_commands_from_env(),
        seed: arg("--seed", 42) as u64,
    };
    println!("crash suite plan: {plan:?}");
    let env = crash::crash_env("crash-long", &plan).await;
    let report = crash::run(&env, &plan).await;
    println!("{report}");
    env.cleanup().await;
    anyhow::ensure!(
        report.lost == 0
            && report.duplicated == 0
            && report.out_of_order == 0
            && report.dead_letters == 0
            && report.chunks_checked == report.chunks_expected,
        "the crash suite found problems"
    );
    println!("OK: nothing lost, duplicated or reordered; archiving finished");
    Ok(())
}
