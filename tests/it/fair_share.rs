//! Fair share: an ingest-worker added to a running fleet takes its share of the partitions
//! (`ceil(partitions / live workers)`), and a departing worker's partitions are taken over by
//! the rest. Logs published all along, while partitions change hands at batch boundaries, are
//! stored exactly once and in publish order.

use std::sync::Arc;

use logfleet::ingest::IngestOptions;
use logfleet::metrics::IngestMetrics;
use logfleet_testkit::{SentLog, TestEnv, batch_body, make_logs};

const EPISODES: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn added_workers_take_their_share_and_departed_ones_are_covered() {
    let env = TestEnv::with_chunks_of("fair-share", 1_000_000, |s| {
        s.amqp.partitions = 8;
        s.ingest.standby_poll_ms = 100;
        s.ingest.prefetch = 20;
    })
    .await;
    let spawn = |name: &str| {
        let m = Arc::new(IngestMetrics::default());
        let h = env.spawn_ingest(IngestOptions {
            instance: Some(name.into()),
            metrics: m.clone(),
            ..Default::default()
        });
        (h, m)
    };
    let owned = |ms: &[&Arc<IngestMetrics>]| -> Vec<i64> {
        ms.iter().map(|m| m.partitions_owned.get()).collect()
    };
    let episodes: Vec<String> = (0..EPISODES).map(|i| format!("fs-{i}")).collect();
    let mut sent: Vec<Vec<SentLog>> = vec![Vec::new(); EPISODES];
    let mut round = 0usize;
    let mut publish_rounds = async |n: usize, sent: &mut Vec<Vec<SentLog>>| {
        for _ in 0..n {
            for (i, ep) in episodes.iter().enumerate() {
                let logs = make_logs(&format!("{ep}-r{round}"), 5, 1_764_000_000_000);
                env.publish(ep, &batch_body(ep, &logs), Some(&format!("{ep}-{round}")))
                    .await;
                sent[i].extend(logs);
            }
            round += 1;
        }
    };

    // Alone, A owns every partition.
    let (a, am) = spawn("fs-a");
    env.wait_for("A owns all 8 partitions", || async { owned(&[&am]) == [8] })
        .await;
    publish_rounds(10, &mut sent).await;

    // B joins: A hands 4 over at batch boundaries while logs keep coming.
    let (b, bm) = spawn("fs-b");
    publish_rounds(10, &mut sent).await;
    env.wait_for("A and B own 4 each", || async {
        owned(&[&am, &bm]) == [4, 4]
    })
    .await;

    // C joins: at most ceil(8 / 3) = 3 each, every partition owned.
    let (c, cm) = spawn("fs-c");
    publish_rounds(10, &mut sent).await;
    env.wait_for(
        "A, B and C share the 8 partitions, at most 3 each",
        || async {
            let o = owned(&[&am, &bm, &cm]);
            o.iter().sum::<i64>() == 8 && o.iter().all(|&n| (2..=3).contains(&n))
        },
    )
    .await;

    // B leaves: A and C take its partitions over, 4 each.
    b.stop().await.unwrap();
    publish_rounds(10, &mut sent).await;
    env.wait_for("A and C own 4 each", || async {
        owned(&[&am, &cm]) == [4, 4]
    })
    .await;
    publish_rounds(5, &mut sent).await;

    for (i, ep) in episodes.iter().enumerate() {
        env.wait_for_episode(ep, sent[i].len() as i64, 0).await;
    }
    for q in env.topology.partition_queues.clone() {
        env.wait_for(&format!("{q} drained"), || async {
            env.queue_depth(&q).await == 0
        })
        .await;
    }
    for (i, ep) in episodes.iter().enumerate() {
        let snap = env.snapshot(ep).await;
        snap.assert_exact(&sent[i]);
        // One producer per episode: stored in exactly the order it published.
        let logs = snap.all_logs();
        let stored: Vec<&str> = logs.iter().map(|l| l.log.message.as_str()).collect();
        let published: Vec<&str> = sent[i].iter().map(|l| l.message.as_str()).collect();
        assert!(stored == published, "{ep}: stored out of publish order");
    }
    a.stop().await.unwrap();
    c.stop().await.unwrap();
    env.cleanup().await;
}
