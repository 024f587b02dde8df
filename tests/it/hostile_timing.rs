//! Exactly once under hostile timing. Each test pins one defect with fault hooks
//! (a worker held or frozen at a named point) and real services, never with sleeps: a frozen
//! archiver that wakes after its lease moved on, a lease kept alive through a slow chunk, an
//! ingest-worker that lost its channel or its epoch while it held a batch, a document the store
//! refuses, a reused message id, a replay after archiving, a failing episode among healthy
//! ones, and a sweep that reads only what is due.

use std::sync::Arc;

use bson::{DateTime, doc};
use logfleet::amqp::REASON_HEADER;
use logfleet::archive::ArchiveOptions;
use logfleet::archive::{ArchiveError, ArchiveKind, ArchiveOutcome};
use logfleet::domain::EpisodeId;
use logfleet::faults::{CrashAt, FaultAction, FaultPoint, Faults, Freeze, InjectedFault, PauseAt};
use logfleet::ingest::{IngestError, IngestOptions};
use logfleet::metrics::{ArchiveMetrics, IngestMetrics};
use logfleet::mongo::{Decision, MongoError};
use logfleet::object_store::ObjectStore;
use logfleet_testkit::{
    HandOver, TestEnv, batch_body, broker_drops_connections, make_logs, spawn_archive_run,
};

/// Every object under the episode's prefix with its bytes.
async fn objects_of(env: &TestEnv, ep: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in env.objects.list(&format!("logs/{ep}/")).await.unwrap() {
        let body = env.objects.get(&key).await.unwrap();
        out.push((key, body));
    }
    out
}

/// Waits until the lease on `ep` has run out: its holder is frozen, renewing nothing.
async fn wait_for_the_frozen_lease_to_run_out(env: &TestEnv, ep: &str) {
    env.wait_for(
        &format!("the lease on {ep} ran out while its holder was frozen"),
        || async {
            env.metadata(ep)
                .await
                .unwrap()
                .archive_lease
                .is_some_and(|l| l.expires_at < DateTime::now())
        },
    )
    .await;
}

/// Item 1: archiver A freezes (SIGSTOP-like: its lease renewals stop too) at `point`; its
/// lease runs out, B takes over and commits. When A wakes, nothing it does changes what B
/// committed: no object replaced, no record replaced, no log lost or doubled.
async fn frozen_archiver_wakes_after_a_takeover(point: FaultPoint, name: &str) {
    let env = TestEnv::with_chunks_of(name, 100, |s| s.archive.lease_secs = 1).await;
    let ep = "frozen";
    let logs = env.ingest_with_worker(ep, 250).await;
    let episode = EpisodeId::parse(ep).unwrap();

    let freeze = Freeze::new(point, 1);
    let a = Arc::new(
        env.archiver("archiver-a")
            .with_faults(Faults::new(freeze.clone())),
    );
    let a_run = spawn_archive_run(&a, &episode);
    freeze.frozen().await;
    let a_uploads = env.objects.list(&format!("logs/{ep}/")).await.unwrap();
    assert_eq!(
        a_uploads.len(),
        1,
        "A uploaded its first chunk before freezing"
    );
    wait_for_the_frozen_lease_to_run_out(&env, ep).await;

    let b = env.archiver("archiver-b");
    let outcome = b
        .archive_episode(&episode, ArchiveKind::Threshold)
        .await
        .unwrap();
    assert_eq!(b.metrics.lock_takeovers.get(), 1);
    match point {
        // A's upload was never committed: B removes it and archives both chunks.
        FaultPoint::ArchiveAfterUpload => {
            assert_eq!(
                outcome,
                ArchiveOutcome::Done {
                    chunks: 2,
                    logs: 200
                }
            );
            assert_eq!(b.metrics.orphans_removed.get(), 1);
        }
        // A committed chunk 0: B finishes that commit and archives chunk 1.
        FaultPoint::ArchiveAfterMetadata => {
            assert_eq!(
                outcome,
                ArchiveOutcome::Done {
                    chunks: 1,
                    logs: 100
                }
            );
            assert_eq!(b.metrics.orphans_removed.get(), 0);
        }
        other => panic!("not a freeze point of this test: {other:?}"),
    }
    let committed = env.snapshot(ep).await;
    committed.assert_exact(&logs);
    assert_eq!((committed.chunks.len(), committed.hot.len()), (2, 50));
    let objects = objects_of(&env, ep).await;
    let srcs: Vec<&str> = committed.chunks.iter().map(|c| c.src.as_str()).collect();
    assert_eq!(
        objects.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        srcs,
        "exactly the committed chunks' objects"
    );

    // A wakes up and carries on from where it froze.
    freeze.thaw();
    let woke = a_run.await.unwrap();
    assert!(
        matches!(woke, Err(ArchiveError::LeaseLost(_))),
        "A finds its lease gone: {woke:?}"
    );
    let after = env.snapshot(ep).await;
    after.assert_exact(&logs);
    assert_eq!(after.chunks, committed.chunks, "no LogChunk record changed");
    assert_eq!(
        objects_of(&env, ep).await,
        objects,
        "no object changed or added"
    );
    if point == FaultPoint::ArchiveAfterUpload {
        assert!(
            !srcs.contains(&a_uploads[0].as_str()),
            "A's upload is nobody's chunk"
        );
    }
    let m = env.metadata(ep).await.unwrap();
    assert!(!m.is_archiving && m.pending_chunk.is_none());
    assert_eq!(
        (m.archived_logs, m.current_logs, m.total_chunks),
        (200, 50, 2)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archiver_frozen_after_its_upload_cannot_touch_its_successors_chunks() {
    frozen_archiver_wakes_after_a_takeover(FaultPoint::ArchiveAfterUpload, "freeze-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archiver_frozen_after_its_commit_cannot_touch_its_successors_chunks() {
    frozen_archiver_wakes_after_a_takeover(FaultPoint::ArchiveAfterMetadata, "freeze-commit").await;
}

/// Item 1: archiver A freezes just before it looks for orphan objects; B takes over and
/// uploads its chunk but has not committed it when A wakes. A's clean-up lists B's upload, yet
/// keeps it (its chunk number is not committed yet), and B's commit then points at an object
/// that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_archiver_waking_in_its_cleanup_keeps_a_live_upload() {
    let env = TestEnv::with_chunks_of("freeze-cleanup", 100, |s| s.archive.lease_secs = 1).await;
    let ep = "cleanup";
    let logs = env.ingest_with_worker(ep, 150).await;
    let episode = EpisodeId::parse(ep).unwrap();
    let freeze = Freeze::new(FaultPoint::ArchiveBeforeCleanup, 1);
    let a = Arc::new(
        env.archiver("archiver-a")
            .with_faults(Faults::new(freeze.clone())),
    );
    let a_run = spawn_archive_run(&a, &episode);
    freeze.frozen().await;
    wait_for_the_frozen_lease_to_run_out(&env, ep).await;
    let held = PauseAt::new(FaultPoint::ArchiveAfterUpload, 1, FaultAction::Continue);
    let b = Arc::new(
        env.archiver("archiver-b")
            .with_faults(Faults::new(held.clone())),
    );
    let b_run = spawn_archive_run(&b, &episode);
    held.reached().await;
    let b_upload = env.objects.list(&format!("logs/{ep}/")).await.unwrap();
    assert_eq!(b_upload.len(), 1);

    freeze.thaw();
    let woke = a_run.await.unwrap();
    assert!(matches!(woke, Err(ArchiveError::LeaseLost(_))), "{woke:?}");
    assert_eq!(a.metrics.orphans_removed.get(), 0, "A removed nothing");
    let left = env.objects.list(&format!("logs/{ep}/")).await.unwrap();
    assert!(left.contains(&b_upload[0]), "B's upload is still there");

    held.release();
    let done = b_run.await.unwrap().unwrap();
    assert_eq!(
        done,
        ArchiveOutcome::Done {
            chunks: 1,
            logs: 100
        }
    );
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!(snap.chunks.len(), 1);
    assert_eq!(snap.chunks[0].src, b_upload[0]);
    env.cleanup().await;
}

/// Item 1: a run that is slow but alive keeps its lease however short it is: the lease is
/// renewed in the background while the chunk is built, and nobody takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_chunk_keeps_its_lease_alive() {
    let env = TestEnv::with_chunks_of("slow-chunk", 100, |s| s.archive.lease_secs = 1).await;
    let ep = "slow";
    let logs = env.ingest_with_worker(ep, 250).await;
    let episode = EpisodeId::parse(ep).unwrap();
    let pause = PauseAt::new(FaultPoint::ArchiveAfterBuild, 1, FaultAction::Continue);
    let a = Arc::new(
        env.archiver("archiver-a")
            .with_faults(Faults::new(pause.clone())),
    );
    let a_run = spawn_archive_run(&a, &episode);
    pause.reached().await;
    let first = env
        .metadata(ep)
        .await
        .unwrap()
        .archive_lease
        .unwrap()
        .expires_at;
    env.wait_for("the lease renewed well past its first expiry", || async {
        env.metadata(ep)
            .await
            .unwrap()
            .archive_lease
            .is_some_and(|l| l.expires_at.timestamp_millis() > first.timestamp_millis() + 3_000)
    })
    .await;
    // Three lease lengths later, the lock is still A's.
    let b = env.archiver("archiver-b");
    let tried = b
        .archive_episode(&episode, ArchiveKind::Threshold)
        .await
        .unwrap();
    assert!(matches!(tried, ArchiveOutcome::Busy), "{tried:?}");
    pause.release();
    let done = a_run.await.unwrap().unwrap();
    assert_eq!(
        done,
        ArchiveOutcome::Done {
            chunks: 2,
            logs: 200
        }
    );
    assert_eq!(
        a.metrics.lock_takeovers.get() + b.metrics.lock_takeovers.get(),
        0
    );
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!(snap.chunks.len(), 2);
    env.cleanup().await;
}

/// Item 2: worker A holds a numbered batch when the broker drops its connection (as a
/// consumer timeout or a network partition would). B takes the partition and ingests
/// everything, the redelivered message included. When A goes on, it finds its channel closed
/// and writes nothing of the batch it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingest_worker_that_lost_its_channel_writes_nothing() {
    let env = TestEnv::new("zombie", |s| s.ingest.batch_linger_ms = 2).await;
    let ep = "zombie";
    let pause = PauseAt::new(FaultPoint::IngestAfterPlan, 1, FaultAction::Continue);
    let HandOver {
        a,
        b,
        a_metrics: ma,
        b_metrics: mb,
        logs,
    } = env
        .hand_over_under_a_pause(ep, &pause, 1_764_500_000_000)
        .await;
    pause.release();
    env.wait_for("A abandons the batch it held", || async {
        ma.batches_abandoned
            .with_label_values(&["channel_gone"])
            .get()
            == 1
    })
    .await;
    assert_eq!(ma.logs_inserted.get(), 0, "A wrote no entry");
    assert_eq!(ma.logs_counted.get(), 0, "A counted nothing");
    assert_eq!(mb.logs_counted.get(), 50);
    env.snapshot(ep).await.assert_exact(&logs);
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// After its count, before its ack: worker A is paused there (and the broker drops its
/// connection, as a consumer timeout would), or crashes there (an injected crash ends the
/// worker and its connection in-process; the crash suite SIGKILLs real processes). The batch
/// goes back to the queue; B takes the partition, finds the batch counted, and acks it without
/// writing or counting it again. A, woken, acks on a closed channel and counts nothing more.
async fn stopped_after_its_count(kill: bool) {
    let name = if kill { "count-crash" } else { "count-pause" };
    let env = TestEnv::new(name, |s| s.ingest.batch_linger_ms = 2).await;
    let ep = name;
    let a_name = format!("{name}-a-{}", env.settings.mongo.database);
    let pause = PauseAt::new(FaultPoint::IngestAfterCount, 1, FaultAction::Continue);
    let faults = if kill {
        Faults::new(CrashAt::new(FaultPoint::IngestAfterCount, 1))
    } else {
        Faults::new(pause.clone())
    };
    let (ma, mb) = (
        Arc::new(IngestMetrics::default()),
        Arc::new(IngestMetrics::default()),
    );
    let a = env.spawn_ingest(IngestOptions {
        instance: Some(a_name.clone()),
        faults,
        metrics: ma.clone(),
        http: None,
    });
    let logs = make_logs(name, 50, 1_764_800_000_000);
    env.publish(ep, &batch_body(ep, &logs[..10]), Some(&format!("{name}-0")))
        .await;
    let a = if kill {
        let stopped = a.join.await.unwrap();
        assert!(
            matches!(
                stopped,
                Err(IngestError::Injected(InjectedFault(
                    FaultPoint::IngestAfterCount
                )))
            ),
            "A crashed after its count: {stopped:?}"
        );
        None
    } else {
        pause.reached().await;
        Some(a)
    };
    assert_eq!(ma.logs_counted.get(), 10, "A counted its batch");
    let b = env.spawn_ingest(IngestOptions {
        instance: Some(format!("{name}-b-{}", env.settings.mongo.database)),
        metrics: mb.clone(),
        ..Default::default()
    });
    if !kill {
        assert_eq!(broker_drops_connections(&a_name), 1, "A was connected");
    }
    for (i, part) in logs[10..].chunks(10).enumerate() {
        env.publish(
            ep,
            &batch_body(ep, part),
            Some(&format!("{name}-{}", i + 1)),
        )
        .await;
    }
    env.wait_for_episode(ep, 50, 0).await;
    pause.release();
    if let Some(a) = a {
        // A finishes the batch it held (its ack meets a closed channel) and stops.
        a.stop().await.expect("clean stop");
    }
    assert_eq!(ma.logs_counted.get(), 10, "A counted nothing more");
    assert_eq!(mb.logs_counted.get(), 40, "B counted only what A had not");
    let meta = env.metadata(ep).await.unwrap();
    assert_eq!((meta.total_logs, meta.next_sequence_number), (50, 50));
    env.snapshot(ep).await.assert_exact(&logs);
    b.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_paused_after_its_count_is_not_counted_twice() {
    stopped_after_its_count(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_crashed_after_its_count_is_not_counted_twice() {
    stopped_after_its_count(true).await;
}

/// Item 2: a worker whose channel still looks open, but whose partition a newer owner already
/// counted in (a newer ownership epoch in LogMetadata), is fenced: its count is refused, it
/// drops the partition and the batch goes back; taken again, it is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingest_worker_behind_a_newer_epoch_is_fenced() {
    let env = TestEnv::new("fenced", |s| s.ingest.batch_linger_ms = 2).await;
    let ep = "fenced";
    let episode = EpisodeId::parse(ep).unwrap();
    let pause = PauseAt::new(FaultPoint::IngestAfterInsert, 1, FaultAction::Continue);
    let m = Arc::new(IngestMetrics::default());
    let a = env.spawn_ingest(IngestOptions {
        faults: Faults::new(pause.clone()),
        metrics: m.clone(),
        ..Default::default()
    });
    let logs = make_logs("fenced", 10, 1_764_600_000_000);
    env.publish(ep, &batch_body(ep, &logs), Some("fenced-0"))
        .await;
    pause.reached().await;
    // A newer owner of the partition counted in this episode meanwhile.
    let newer = env
        .store
        .claim_ingest_epoch("elsewhere", "newer-owner")
        .await
        .unwrap();
    env.store
        .update_metadata(&episode, None, |m| {
            m.ingest_epoch = newer;
            Ok::<_, MongoError>(Decision::Write(()))
        })
        .await
        .unwrap()
        .expect("the batch created the episode");
    pause.release();
    env.wait_for_episode(ep, 10, 0).await;
    assert_eq!(
        m.batches_abandoned.with_label_values(&["fenced"]).get(),
        1,
        "the first count was refused"
    );
    let meta = env.metadata(ep).await.unwrap();
    assert!(meta.ingest_epoch > newer, "counted under a later ownership");
    env.snapshot(ep).await.assert_exact(&logs);
    a.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// Item 3: a message whose document the store refuses for good (over MongoDB's 16 MiB
/// document limit, with the contract's limits raised to let it through) is dead-lettered with
/// the server's reason; the messages around it, in the same batch, are stored gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_the_store_refuses_is_dead_lettered_and_the_rest_renumbered() {
    let env = TestEnv::new("refused", |s| {
        s.limits.max_message_bytes = 40 << 20;
        s.limits.max_log_message_bytes = 20 << 20;
        s.ingest.max_batch_bytes = 64 << 20;
        s.ingest.batch_linger_ms = 500;
    })
    .await;
    let ep = "refused";
    let before = make_logs("before", 5, 1_764_700_000_000);
    let after = make_logs("after", 5, 1_764_700_100_000);
    let mut huge = make_logs("huge", 1, 1_764_700_050_000);
    huge[0].message = "x".repeat(17_000_000);
    // All three wait in the queue, so the worker takes them in one batch.
    env.publish(ep, &batch_body(ep, &before), Some("refused-0"))
        .await;
    env.publish(ep, &batch_body(ep, &huge), Some("refused-1"))
        .await;
    env.publish(ep, &batch_body(ep, &after), Some("refused-2"))
        .await;
    let m = Arc::new(IngestMetrics::default());
    let w = env.spawn_ingest(IngestOptions {
        metrics: m.clone(),
        ..Default::default()
    });
    env.wait_for_episode(ep, 10, 0).await;
    env.wait_for_dead_letters("the refused message is dead-lettered", 1)
        .await;
    let dead = env.drain_dead_letters().await;
    let reason = &dead[0].0[REASON_HEADER];
    assert!(
        reason.starts_with("the store refused this message"),
        "{reason}"
    );
    assert!(dead[0].1.len() > 17_000_000, "the body is kept as sent");
    assert_eq!(
        m.messages_dead_lettered
            .with_label_values(&["store_refused"])
            .get(),
        1
    );
    let expected: Vec<_> = before.iter().chain(&after).cloned().collect();
    env.snapshot(ep).await.assert_exact(&expected);
    // The partition flows on.
    let later = make_logs("later", 3, 1_764_700_200_000);
    env.publish(ep, &batch_body(ep, &later), Some("refused-3"))
        .await;
    env.wait_for_episode(ep, 13, 0).await;
    w.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// Item 4: a message id used again for other content, in the same batch or later, is
/// dead-lettered as `message_id_reused` and never written; the first use stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_message_id_with_other_content_is_dead_lettered() {
    let env = TestEnv::new("reused", |s| s.ingest.batch_linger_ms = 500).await;
    let ep = "reused";
    let first = make_logs("first", 5, 1_764_800_000_000);
    let same_batch = make_logs("same-batch", 3, 1_764_800_001_000);
    let later = make_logs("later", 2, 1_764_800_002_000);
    let next = make_logs("next", 4, 1_764_800_003_000);
    // Both wait in the queue: one batch.
    env.publish(ep, &batch_body(ep, &first), Some("reuse-0"))
        .await;
    env.publish(ep, &batch_body(ep, &same_batch), Some("reuse-0"))
        .await;
    let m = Arc::new(IngestMetrics::default());
    let w = env.spawn_ingest(IngestOptions {
        metrics: m.clone(),
        ..Default::default()
    });
    env.wait_for_episode(ep, 5, 0).await;
    env.publish(ep, &batch_body(ep, &later), Some("reuse-0"))
        .await;
    env.publish(ep, &batch_body(ep, &next), Some("reuse-1"))
        .await;
    env.wait_for_episode(ep, 9, 0).await;
    env.wait_for_dead_letters("both reuses dead-lettered", 2)
        .await;
    let dead = env.drain_dead_letters().await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|(h, _)| h[REASON_HEADER].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("was reused in this batch for other content")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(
            |r| r.contains("was used before for other content (5 logs stored from sequence 0)")
        ),
        "{reasons:?}"
    );
    assert_eq!(
        m.messages_dead_lettered
            .with_label_values(&["message_id_reused"])
            .get(),
        2
    );
    let expected: Vec<_> = first.iter().chain(&next).cloned().collect();
    env.snapshot(ep).await.assert_exact(&expected);
    w.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// Items 5 and 7: after its logs were archived and deleted from the hot tier, a replay of every
/// message (a DLQ replay hours later, a producer retry) by a newly started worker is
/// recognised from the archived messages' records and stored nothing. The records expire by
/// time (`ingest.dedup_horizon_secs`), not by count; LogMetadata stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_after_archiving_is_not_ingested_again() {
    let env = TestEnv::with_chunks_of("replay", 100, |_| {}).await;
    let ep = "replay";
    let logs = env.ingest_with_worker(ep, 250).await;
    let episode = EpisodeId::parse(ep).unwrap();
    let a = env.archiver("archiver-a");
    let done = a
        .archive_episode(&episode, ArchiveKind::Threshold)
        .await
        .unwrap();
    assert_eq!(
        done,
        ArchiveOutcome::Done {
            chunks: 2,
            logs: 200
        }
    );
    assert_eq!(env.store.count_entries_from(&episode, 0).await.unwrap(), 50);

    let m = Arc::new(IngestMetrics::default());
    let w = env.spawn_ingest(IngestOptions {
        metrics: m.clone(),
        ..Default::default()
    });
    env.publish_in_batches(ep, &logs, 25, ep).await;
    env.wait_for("every replayed message acked", || async {
        m.messages_acked.get() == 10
    })
    .await;
    assert_eq!(m.logs_inserted.get(), 0, "nothing stored again");
    assert_eq!(m.logs_counted.get(), 0);
    assert_eq!(env.queue_depth(&env.topology.dead_letter_queue).await, 0);
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    let meta = env.metadata(ep).await.unwrap();
    assert_eq!((meta.total_logs, meta.archived_logs), (250, 200));
    let size = bson::to_vec(&meta).unwrap().len();
    assert!(size <= 4_096, "LogMetadata is {size} bytes");
    w.stop().await.expect("clean stop");
    // The records of the 8 archived messages go once they are older than the horizon.
    let now = DateTime::now().timestamp_millis();
    assert_eq!(
        env.store
            .expire_archived_messages(DateTime::from_millis(now - 3_600_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        env.store
            .expire_archived_messages(DateTime::from_millis(now + 3_600_000))
            .await
            .unwrap(),
        8
    );
    env.cleanup().await;
}

/// Item 8: an episode whose archive runs keep failing (one of its entries no longer decodes)
/// does not hold the others up; after three failures it is named in the stuck-episode metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_episode_does_not_stop_the_others_and_is_named() {
    let env = TestEnv::with_chunks_of("isolated", 100, |s| s.archive.sweep_interval_secs = 1).await;
    let broken_logs = env.ingest_with_worker("a-broken", 150).await;
    let fine_1 = env.ingest_with_worker("b-fine", 150).await;
    let fine_2 = env.ingest_with_worker("c-fine", 150).await;
    // Break one entry of a-broken: its level is no longer a level.
    let client = mongodb::Client::with_uri_str(&env.settings.mongo.uri)
        .await
        .unwrap();
    let entries = client
        .database(&env.settings.mongo.database)
        .collection::<bson::Document>(&env.settings.mongo.log_entry_collection);
    let changed = entries
        .update_one(
            doc! {"episodeId": "a-broken", "sequenceNumber": 5_i64},
            doc! {"$set": {"level": 5}},
        )
        .await
        .unwrap();
    assert_eq!(changed.modified_count, 1);

    let am = Arc::new(ArchiveMetrics::default());
    let w = env.spawn_archive(ArchiveOptions {
        metrics: am.clone(),
        ..Default::default()
    });
    env.wait_for_episode("b-fine", 150, 1).await;
    env.wait_for_episode("c-fine", 150, 1).await;
    env.wait_for("a-broken is named stuck", || async {
        am.stuck_episode.with_label_values(&["a-broken"]).get() == 1
    })
    .await;
    assert_eq!(am.stuck_episodes.get(), 1);
    let m = env.metadata("a-broken").await.unwrap();
    assert_eq!((m.total_chunks, m.current_logs), (0, 150));
    env.snapshot("b-fine").await.assert_exact(&fine_1);
    env.snapshot("c-fine").await.assert_exact(&fine_2);
    assert_eq!(broken_logs.len(), 150);
    w.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// Item 14: the sweep reads only the episodes flagged due, however many others exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_reads_only_due_episodes() {
    let env = TestEnv::with_chunks_of("due-only", 100, |_| {}).await;
    for i in 0..300 {
        let ep = EpisodeId::parse(&format!("idle-{i:03}")).unwrap();
        env.store.metadata_or_create(&ep, 100, 100).await.unwrap();
    }
    env.ingest_with_worker("due-1", 120).await;
    env.ingest_with_worker("due-2", 130).await;
    env.ingest_with_worker("under", 50).await;
    let mut due: Vec<String> = env
        .store
        .episodes_due()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.episode_id.to_string())
        .collect();
    due.sort();
    assert_eq!(due, ["due-1", "due-2"]);
    let a = env.archiver("archiver-a");
    let report = a.sweep().await.unwrap();
    assert_eq!((report.due, report.chunks, report.failed), (2, 2, 0));
    assert!(env.store.episodes_due().await.unwrap().is_empty());
    env.cleanup().await;
}

/// A batch that died after writing its entries, before counting them, leaves entries past
/// `nextSequenceNumber`; they may yet be numbered again. Reads and follow stop at the counted
/// frontier, so no reader ever sees them until a worker counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_stop_at_the_counted_frontier() {
    use logfleet::query::{LogQuery, Order, QueryService};
    let env = TestEnv::new("counted-frontier", |s| s.ingest.batch_linger_ms = 2).await;
    let ep = "uncounted";
    let episode = EpisodeId::parse(ep).unwrap();
    let w = env.spawn_ingest(IngestOptions {
        faults: Faults::new(logfleet::faults::CrashAt::new(
            FaultPoint::IngestAfterInsert,
            1,
        )),
        ..Default::default()
    });
    let logs = make_logs("uncounted", 10, 1_764_900_000_000);
    env.publish(ep, &batch_body(ep, &logs), Some("uncounted-0"))
        .await;
    assert!(
        w.join.await.unwrap().is_err(),
        "the worker died after its insert"
    );
    assert_eq!(env.store.count_entries_from(&episode, 0).await.unwrap(), 10);
    assert_eq!(env.metadata(ep).await.unwrap().next_sequence_number, 0);

    let q = QueryService::connect(&env.settings).await.unwrap();
    let all = |order| LogQuery {
        episode: episode.clone(),
        filter: Default::default(),
        order,
        cursor: None,
        limit: 100,
    };
    for order in [Order::Asc, Order::Desc] {
        let page = q.read_page(&all(order)).await.unwrap();
        assert!(
            page.logs.is_empty(),
            "{order:?}: {} uncounted logs shown",
            page.logs.len()
        );
    }
    assert_eq!(q.counted_frontier(&episode).await.unwrap(), 0);

    let w = env.spawn_ingest(IngestOptions::default());
    env.wait_for_episode(ep, 10, 0).await;
    let page = q.read_page(&all(Order::Asc)).await.unwrap();
    assert_eq!(page.logs.len(), 10);
    assert_eq!(q.counted_frontier(&episode).await.unwrap(), 10);
    w.stop().await.expect("clean stop");
    env.cleanup().await;
}
