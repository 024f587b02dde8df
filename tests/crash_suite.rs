//! Crash suite, short version (CI): the real worker binaries, SIGKILLed at
//! random moments at least 20 times; ingest-workers stalled (SIGSTOP, then SIGCONT) past the
//! broker's consumer timeout, and archive-workers past their lease, a few times each; the broker
//! restarted and MongoDB stopped and started once. Then archiving finishes (every episode at or
//! over its threshold gets its chunks) and every published log is present exactly once, in
//! order, with exact counters and chunks.
//! The long version: `scripts/crash-suite.sh`.

use logfleet_testkit::crash::{self, CrashPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_survives_kills_stalls_and_restarts_without_loss_or_duplicates() {
    let plan = CrashPlan::short();
    assert!(
        plan.archive_workers >= 2 && plan.lease_secs <= 5,
        "two or more archive-workers, a short lease"
    );
    let env = crash::crash_env("crash", &plan).await;
    let report = crash::run(&env, &plan).await;
    eprintln!("crash suite report:\n{report}");
    assert!(report.kills >= 20, "{} kills", report.kills);
    assert_eq!(
        (report.ingest_stalls, report.archive_stalls),
        (plan.ingest_stalls, plan.archive_stalls),
        "stalls of each kind"
    );
    assert!(
        report.archive_stalls > 0,
        "archive-workers were stalled past their lease"
    );
    assert_eq!(report.broker_restarts, usize::from(plan.restart_broker));
    if plan.mongo_stop_start.is_some() {
        assert_eq!(report.mongo_restarts, 1);
    } else {
        // A fault half skipped in silence under CI would hide a broken setup.
        assert!(
            std::env::var_os("CI").is_none() || std::env::var_os("CRASH_SKIP_DISRUPTION").is_some(),
            "CI is set but MONGO_STOP_CMD / MONGO_START_CMD are not: the MongoDB stop/start must run"
        );
        eprintln!("SKIPPED the MongoDB stop/start: MONGO_STOP_CMD / MONGO_START_CMD are not set");
    }
    assert!(report.duplicate_publishes > 0, "duplicates were mixed in");
    assert_eq!(
        report.logs_checked,
        plan.logs_per_pair() * plan.episodes * plan.producers
    );
    assert_eq!(
        (report.lost, report.duplicated, report.out_of_order),
        (0, 0, 0)
    );
    assert_eq!(report.dead_letters, 0, "the DLQ is empty");
    assert!(report.chunks_checked > 0);
    assert_eq!(
        report.chunks_checked, report.chunks_expected,
        "archiving finished: every episode at or over its threshold has its chunks"
    );
    env.cleanup().await;
}
