//! Exactly once: two ingest-workers, duplicate publishes of the same message_id, and workers
//! dying mid-stream (after reserving ranges, after inserting, before acking): the result is
//! gapless, without duplicates, and keeps each producer's publish order.

use std::collections::HashMap;
use std::sync::Arc;

use logfleet::amqp::REASON_HEADER;
use logfleet::faults::{CrashAt, FaultPoint, Faults, InjectedFault};
use logfleet::ingest::{IngestError, IngestOptions};
use logfleet::metrics::IngestMetrics;
use logfleet_testkit::{SentLog, TestEnv, batch_body, make_logs, single_body};

const PRODUCERS: usize = 3;
const EPISODES: [&str; 4] = ["eo-0", "eo-1", "eo-2", "eo-3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_duplicates_and_crashes_give_exactly_once_in_order() {
    let env = TestEnv::with_chunks_of("exactly-once", 1_000_000, |s| {
        s.ingest.prefetch = 40;
        s.ingest.batch_linger_ms = 2;
    })
    .await;
    let metrics = Arc::new(IngestMetrics::default());
    let with_fault = |instance: &str, point, nth| IngestOptions {
        instance: Some(instance.into()),
        faults: Faults::new(CrashAt::new(point, nth)),
        metrics: metrics.clone(),
        http: None,
    };
    // Worker A starts first, so it becomes the exclusive consumer of every partition; it dies
    // with reserved-but-unwritten ranges. B stands by and takes over.
    let a = env.spawn_ingest(with_fault("worker-a", FaultPoint::IngestAfterPlan, 4));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let b = env.spawn_ingest(with_fault("worker-b", FaultPoint::IngestAfterInsert, 3));

    // Each producer publishes its own numbered logs to every episode, in order, re-publishing
    // some messages with the same message_id; some bodies go out twice without a message_id,
    // which the contract refuses: they are dead-lettered, never ingested.
    let publish = |p: usize| {
        let env = &env;
        async move {
            let mut sent: HashMap<&str, Vec<SentLog>> = HashMap::new();
            for round in 0..100usize {
                for ep in EPISODES {
                    let logs = make_logs(
                        &format!("p{p}-{ep}-r{round}"),
                        1 + (round % 4) * 10,
                        1_764_000_000_000 + round as i64,
                    );
                    let id = format!("p{p}-{ep}-{round}");
                    if round % 5 == 4 {
                        let body = single_body(ep, &logs[0]);
                        env.publish(ep, &body, None).await;
                        env.publish(ep, &body, None).await;
                        continue;
                    }
                    let body = batch_body(ep, &logs);
                    env.publish(ep, &body, Some(&id)).await;
                    if round % 3 == 0 {
                        env.publish(ep, &body, Some(&id)).await;
                    }
                    sent.entry(ep).or_default().extend(logs);
                }
                if round % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            sent
        }
    };
    let published = futures::future::join_all((0..PRODUCERS).map(publish)).await;

    // A died at its fault point, B took over and died at its own; a third worker finishes.
    let a_result = a.join.await.unwrap();
    assert!(
        matches!(
            a_result,
            Err(IngestError::Injected(InjectedFault(
                FaultPoint::IngestAfterPlan
            )))
        ),
        "{a_result:?}"
    );
    let b_result = b.join.await.unwrap();
    assert!(
        matches!(
            b_result,
            Err(IngestError::Injected(InjectedFault(
                FaultPoint::IngestAfterInsert
            )))
        ),
        "{b_result:?}"
    );
    let c = env.spawn_ingest(IngestOptions {
        instance: Some("worker-c".into()),
        faults: Faults::default(),
        metrics: metrics.clone(),
        http: None,
    });

    let mut expected: HashMap<&str, Vec<SentLog>> = HashMap::new();
    for per_producer in &published {
        for (ep, logs) in per_producer {
            expected.entry(ep).or_default().extend(logs.iter().cloned());
        }
    }
    for ep in EPISODES {
        let n = expected[ep].len() as i64;
        env.wait_for_episode(ep, n, 0).await;
    }
    // Let everything drain: no message left in the partition queues.
    for q in env.topology.partition_queues.clone() {
        env.wait_for(&format!("{q} drained"), || async {
            env.queue_depth(&q).await == 0
        })
        .await;
    }
    for ep in EPISODES {
        let snap = env.snapshot(ep).await;
        snap.assert_exact(&expected[ep]);
        // Publish order per producer: each producer's logs appear in the order it sent them.
        let logs = snap.all_logs();
        for (p, per_producer) in published.iter().enumerate() {
            let mine: Vec<&SentLog> = logs
                .iter()
                .map(|l| &l.log)
                .filter(|l| l.message.starts_with(&format!("p{p}-")))
                .collect();
            let sent: Vec<&SentLog> = per_producer[ep].iter().collect();
            if mine != sent {
                let pos = mine.iter().zip(&sent).position(|(a, b)| a != b).unwrap();
                let seq_of = |m: &str| {
                    logs.iter()
                        .find(|l| l.log.message == m)
                        .map(|l| l.sequence_number)
                };
                for k in pos.saturating_sub(2)..(pos + 6).min(sent.len()) {
                    eprintln!(
                        "DIAG {k}: stored {} (seq {:?}) | sent {} (seq {:?})",
                        mine[k].message,
                        seq_of(&mine[k].message),
                        sent[k].message,
                        seq_of(&sent[k].message)
                    );
                }
            }
            assert!(
                mine == sent,
                "{ep}: producer p{p}'s logs are out of publish order"
            );
        }
    }
    assert!(
        metrics.messages_redelivered.get() > 0,
        "the test forced redeliveries"
    );
    assert!(
        metrics.logs_duplicate.get() > 0,
        "redelivered inserts were absorbed by the unique index"
    );
    // Id-less messages: 20 rounds of 3 episodes, twice each, from every producer, all refused.
    let dead = env.drain_dead_letters().await;
    assert_eq!(dead.len(), PRODUCERS * 20 * EPISODES.len() * 2);
    assert!(dead.iter().all(|(h, _)| {
        h.get(REASON_HEADER)
            .is_some_and(|r| r.contains("message_id is missing"))
    }));
    c.stop().await.expect("clean stop");
    env.cleanup().await;
}
