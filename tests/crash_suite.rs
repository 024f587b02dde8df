//! Issue 5, crash suite, short version (CI): the real worker binaries, SIGKILLed at random
//! moments at least 20 times, the broker restarted and MongoDB stopped and started once; then
//! every published log is present exactly once, in order, with exact counters and chunks.
//! The long version: `scripts/crash-suite.sh`.

use logfleet_testkit::crash::{self, CrashPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_survives_kills_and_restarts_without_loss_or_duplicates() {
    let plan = CrashPlan::short();
    let env = crash::crash_env("crash", &plan).await;
    let report = crash::run(&env, &plan).await;
    eprintln!("crash suite report:\n{report}");
    assert!(report.kills >= 20, "{} kills", report.kills);
    assert_eq!(report.broker_restarts, usize::from(plan.restart_broker));
    if plan.mongo_stop_start.is_some() {
        assert_eq!(report.mongo_restarts, 1);
    } else {
        eprintln!("SKIPPED the MongoDB stop/start: MONGO_STOP_CMD / MONGO_START_CMD are not set");
    }
    assert!(report.duplicate_publishes > 0, "duplicates were mixed in");
    assert_eq!(
        report.logs_checked,
        plan.logs / (plan.episodes * plan.producers) * plan.episodes * plan.producers
    );
    assert_eq!(
        (report.lost, report.duplicated, report.out_of_order),
        (0, 0, 0)
    );
    assert_eq!(report.dead_letters, 0, "the DLQ is empty");
    assert!(report.chunks_checked > 0);
    env.cleanup().await;
}
