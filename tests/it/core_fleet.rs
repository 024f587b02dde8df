//! Core fleet: ingest and archive with the default settings (archiveThreshold and chunkSize
//! 50,000): 130,000 logs over three episodes, through the real workers.

use logfleet::archive::ArchiveOptions;
use logfleet::ingest::IngestOptions;
use logfleet_testkit::{TestEnv, batch_body, make_logs, single_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_and_archive_130k_logs_with_default_settings() {
    let env = TestEnv::new("core", |_| {}).await;
    assert_eq!(env.settings.ingest.archive_threshold, 50_000);
    assert_eq!(env.settings.ingest.chunk_size, 50_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archive = env.spawn_archive(ArchiveOptions::default());

    let episodes = [
        ("core-a", 105_000usize),
        ("core-b", 20_000),
        ("core-c", 5_000),
    ];
    let sent: Vec<_> = episodes
        .iter()
        .enumerate()
        .map(|(k, (ep, n))| make_logs(ep, *n, 1_764_000_000_000 + k as i64 * 10_000_000))
        .collect();
    // Interleave the episodes; mostly 1,000-log batches, with some single-log messages.
    let mut cursors = vec![0usize; episodes.len()];
    let mut round = 0;
    while cursors.iter().zip(&sent).any(|(c, s)| *c < s.len()) {
        for (k, (ep, _)) in episodes.iter().enumerate() {
            let logs = &sent[k];
            let c = cursors[k];
            if c >= logs.len() {
                continue;
            }
            if round % 10 == 3 {
                for (i, log) in logs[c..(c + 5).min(logs.len())].iter().enumerate() {
                    let id = format!("{ep}-single-{}", c + i);
                    env.publish(ep, &single_body(ep, log), Some(&id)).await;
                }
                cursors[k] = (c + 5).min(logs.len());
            } else {
                let end = (c + 1_000).min(logs.len());
                env.publish(
                    ep,
                    &batch_body(ep, &logs[c..end]),
                    Some(&format!("{ep}-{c}")),
                )
                .await;
                cursors[k] = end;
            }
        }
        round += 1;
    }

    env.wait_for_episode("core-a", 105_000, 2).await;
    env.wait_for_episode("core-b", 20_000, 0).await;
    env.wait_for_episode("core-c", 5_000, 0).await;

    for (k, (ep, _)) in episodes.iter().enumerate() {
        let snap = env.snapshot(ep).await;
        snap.assert_exact(&sent[k]);
        // One producer per episode: sequence order is publish order.
        let in_order: Vec<_> = snap.all_logs().into_iter().map(|l| l.log).collect();
        assert!(
            in_order == sent[k],
            "{ep}: stored order differs from publish order"
        );
    }
    let a = env.snapshot("core-a").await;
    assert_eq!(a.chunks.len(), 2);
    for (c, (_, lines)) in a.chunks.iter().zip(&a.chunk_lines) {
        assert_eq!(
            (c.log_count, lines.len()),
            (50_000, 50_000),
            "a full chunk holds exactly chunkSize logs"
        );
    }
    assert_eq!(
        (a.chunks[0].start_sequence, a.chunks[1].end_sequence),
        (0, 99_999)
    );
    assert_eq!(a.hot.len(), 5_000, "the hot remainder stays in MongoDB");
    assert_eq!(a.hot.first().unwrap().sequence_number, 100_000);
    assert_eq!(env.snapshot("core-b").await.hot.len(), 20_000);
    assert_eq!(env.queue_depth(&env.topology.dead_letter_queue).await, 0);

    ingest.stop().await.expect("ingest-worker stops cleanly");
    archive.stop().await.expect("archive-worker stops cleanly");
    env.cleanup().await;
}
