//! The ingest-worker binary drains on SIGTERM and exits 0, mid-stream, losing and doubling
//! nothing: what it did not finish goes back to the queue for the next worker.

use logfleet::ingest::IngestOptions;
use logfleet_testkit::{TestEnv, batch_body, make_logs, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_stream_exits_cleanly_and_loses_nothing() {
    let env = TestEnv::new("sigterm-ingest", |s| s.ingest.prefetch = 10).await;
    let ep = "sigterm-ingest";
    let logs = make_logs(ep, 6_000, 1_764_700_000_000);
    let worker = env.spawn_binary(env!("CARGO_BIN_EXE_ingest-worker"));
    let parts: Vec<_> = logs.chunks(50).collect();
    let (first, rest) = parts.split_at(40);
    for (i, part) in first.iter().enumerate() {
        env.publish(ep, &batch_body(ep, part), Some(&format!("m-{i}")))
            .await;
    }
    env.wait_for("the binary ingests", || async {
        env.metadata(ep).await.is_some_and(|m| m.total_logs > 0)
    })
    .await;
    // SIGTERM while messages are still arriving.
    let publishing = async {
        for (i, part) in rest.iter().enumerate() {
            env.publish(ep, &batch_body(ep, part), Some(&format!("m-{}", i + 40)))
                .await;
        }
    };
    let (code, ()) = tokio::join!(terminate(worker), publishing);
    assert_eq!(code, Some(0), "the worker exits 0 after draining");

    let rest_worker = env.spawn_ingest(IngestOptions::default());
    env.wait_for_episode(ep, logs.len() as i64, 0).await;
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    let in_order: Vec<_> = snap.all_logs().into_iter().map(|l| l.log).collect();
    assert!(in_order == logs, "order kept across the hand-over");
    rest_worker.stop().await.expect("clean stop");
    env.cleanup().await;
}
