//! Removing another owner's uncounted entries under hostile timing: a worker paused between
//! its checks and its delete wakes after a newer owner wrote and counted there.

use std::sync::Arc;

use bson::DateTime;
use logfleet::domain::{EpisodeId, LogLevel};
use logfleet::faults::{FaultAction, FaultPoint, PauseAt};
use logfleet::ingest::IngestOptions;
use logfleet::metrics::IngestMetrics;
use logfleet::model::{LogEntry, MessageKey};
use logfleet_testkit::{HandOver, TestEnv, batch_body, make_logs};

/// Another message's entry at sequence number 0 of `episode`, uncounted, from no ingest-worker's
/// epoch: what a dead owner leaves.
fn ghost(episode: &EpisodeId) -> LogEntry {
    let now = DateTime::now();
    LogEntry {
        id: MessageKey::new(episode, "ghost-0").entry_id(0),
        episode_id: episode.clone(),
        timestamp: now,
        level: LogLevel::Info,
        message: "left uncounted by a dead owner".into(),
        metadata: None,
        sequence_number: 0,
        created_at: now,
        message_logs: Some(1),
        message_digest: Some(0),
        ingest_epoch: None,
    }
}

/// A batch over several episodes that each hold another owner's leftovers cleans them all up
/// before it goes again, so one retry serves them all. (A retry per episode, each a round of
/// fencing, deleting and writing, made a batch on a slow store outlast the broker's consumer
/// timeout; the next owner then started over, and so on: the crash suite stalled on FerretDB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_retry_cleans_up_every_episode_of_a_batch() {
    // One partition, and a batch that is written when its 3 messages are in (full prefetch).
    let env = TestEnv::new("reclaim-all", |s| {
        s.amqp.partitions = 1;
        s.ingest.prefetch = 3;
        s.ingest.batch_linger_ms = 60_000;
        s.ingest.batch_max_wait_ms = 60_000;
    })
    .await;
    let eps = ["left-a", "left-b", "left-c"];
    for ep in eps {
        let episode = EpisodeId::parse(ep).unwrap();
        env.store.insert_entries(&[ghost(&episode)]).await.unwrap();
    }
    let mut sent = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let logs = make_logs(ep, 5, 1_764_700_000_000 + i as i64 * 1_000);
        env.publish(ep, &batch_body(ep, &logs), Some(&format!("{ep}-0")))
            .await;
        sent.push(logs);
    }
    let metrics = Arc::new(IngestMetrics::default());
    let w = env.spawn_ingest(IngestOptions {
        metrics: metrics.clone(),
        ..Default::default()
    });
    for ep in eps {
        env.wait_for_episode(ep, 5, 0).await;
    }
    // Per episode: the leftover at 0 and the 4 entries the first try wrote after it (1..5).
    assert_eq!(
        metrics.uncounted_reclaimed.get(),
        15,
        "each episode's uncounted entries removed once"
    );
    assert_eq!(
        metrics.batch_retries.get(),
        1,
        "one retry after cleaning up all three episodes"
    );
    assert_eq!(metrics.logs_counted.get(), 15);
    for (ep, logs) in eps.iter().zip(&sent) {
        env.snapshot(ep).await.assert_exact(logs);
    }
    w.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// Worker A finds another message's uncounted entry where it numbers its batch (one a dead
/// owner left; here written straight into the store), so it removes the episode's uncounted
/// entries. It fences the episode, checks that its partition is still its own, and is held
/// right there, before its delete, while the broker drops its connection (a consumer timeout
/// would). B takes the partition, cleans up itself, and writes and counts all 50 logs. When A
/// wakes, its delete must not remove them: it removes only entries of its epoch or older.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_up_paused_before_its_delete_leaves_a_newer_owners_entries() {
    let env = TestEnv::new("reclaim", |s| s.ingest.batch_linger_ms = 2).await;
    let ep = "reclaim";
    let episode = EpisodeId::parse(ep).unwrap();
    // Another message's entry at sequence number 0, uncounted, from no ingest-worker's epoch.
    env.store.insert_entries(&[ghost(&episode)]).await.unwrap();

    let pause = PauseAt::new(
        FaultPoint::IngestBeforeReclaimDelete,
        1,
        FaultAction::Continue,
    );
    let HandOver {
        a,
        b,
        a_metrics: ma,
        b_metrics: mb,
        logs,
    } = env
        .hand_over_under_a_pause(ep, &pause, 1_764_700_000_000)
        .await;
    assert!(
        mb.uncounted_reclaimed.get() >= 1,
        "B removed the uncounted entries itself"
    );
    let counted_by_b = env.metadata(ep).await.unwrap().ingest_epoch;

    pause.release();
    // Its clean-up done, A goes back to numbering the batch (a retry).
    env.wait_for("A's delete and its retry", || async {
        ma.batch_retries.get() >= 1
    })
    .await;
    assert_eq!(
        ma.uncounted_reclaimed.get(),
        0,
        "A's delete found nothing of its epoch or older"
    );
    assert_eq!(ma.logs_counted.get(), 0, "A counted nothing");
    assert_eq!(mb.logs_counted.get(), 50);
    let meta = env.metadata(ep).await.unwrap();
    assert_eq!(meta.ingest_epoch, counted_by_b);
    assert_eq!(env.store.count_entries_from(&episode, 0).await.unwrap(), 50);
    env.snapshot(ep).await.assert_exact(&logs);
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
    env.cleanup().await;
}
