//! The archive-worker binary archives on threshold events, and on SIGTERM exits 0 without
//! leaving a lock held.

use logfleet::ingest::IngestOptions;
use logfleet_testkit::{TestEnv, make_logs, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_then_exits_cleanly_on_sigterm() {
    let env = TestEnv::with_chunks_of("sigterm-archive", 100, |_| {}).await;
    let ep = "sigterm-archive";
    let logs = make_logs(ep, 450, 1_764_800_000_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archiver = env.spawn_binary(env!("CARGO_BIN_EXE_archive-worker"));
    env.publish_in_batches(ep, &logs, 30, "m").await;
    env.wait_for_episode(ep, 450, 4).await;
    assert_eq!(terminate(archiver).await, Some(0), "the worker exits 0");
    let m = env.metadata(ep).await.unwrap();
    assert!(
        !m.is_archiving && m.archive_lease.is_none(),
        "no lock left held"
    );
    env.snapshot(ep).await.assert_exact(&logs);
    ingest.stop().await.expect("clean stop");
    env.cleanup().await;
}
