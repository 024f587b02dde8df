//! Archive recovery: an archive-worker stopped at each step boundary (after the upload,
//! after the LogMetadata commit, after the LogChunk record) leaves a state another worker
//! completes with nothing lost or doubled; two archive-workers on one episode archive each
//! chunk exactly once.

use std::sync::Arc;

use logfleet::archive::{ArchiveError, ArchiveKind, ArchiveOptions, ArchiveOutcome};
use logfleet::domain::EpisodeId;
use logfleet::faults::{CrashAt, FaultPoint, Faults, InjectedFault};
use logfleet::metrics::ArchiveMetrics;
use logfleet::object_store::ObjectStore;
use logfleet_testkit::TestEnv;

/// Runs an archive-worker named `instance` until the crash injected at `step` (the first time
/// it gets there) stops it.
async fn run_archive_worker_until_crash(env: &TestEnv, instance: &str, step: FaultPoint) {
    let w = env.spawn_archive(ArchiveOptions {
        instance: Some(instance.into()),
        faults: Faults::new(CrashAt::new(step, 1)),
        ..Default::default()
    });
    let stopped = w.join.await.unwrap();
    assert!(
        matches!(stopped, Err(ArchiveError::Injected(InjectedFault(s))) if s == step),
        "{instance}: {stopped:?}"
    );
}

async fn stopped_after(step: FaultPoint, name: &str) {
    let env = TestEnv::with_chunks_of(name, 100, |s| s.archive.lease_secs = 2).await;
    let ep = "recover";
    let logs = env.ingest_with_worker(ep, 250).await;

    run_archive_worker_until_crash(&env, "archiver-x", step).await;

    // The state at the boundary is what the step left, with the lock still held.
    let m = env.metadata(ep).await.unwrap();
    assert!(m.is_archiving && m.archive_lease.as_ref().unwrap().owner == "archiver-x");
    let episode = EpisodeId::parse(ep).unwrap();
    let records = env.store.chunks_of(&episode).await.unwrap();
    let objects = env.objects.list(&format!("logs/{ep}/")).await.unwrap();
    let hot = env.store.count_entries_from(&episode, 0).await.unwrap();
    match step {
        FaultPoint::ArchiveAfterUpload => {
            assert_eq!(
                (objects.len(), records.len(), m.archived_logs, hot),
                (1, 0, 0, 250)
            );
        }
        // The commit names the chunk in `pendingChunk`; its record comes after.
        FaultPoint::ArchiveAfterMetadata => {
            assert_eq!(
                (
                    objects.len(),
                    records.len(),
                    m.archived_logs,
                    m.total_chunks,
                    hot
                ),
                (1, 0, 100, 1, 250)
            );
            assert_eq!(m.pending_chunk.as_ref().unwrap().src, objects[0]);
        }
        FaultPoint::ArchiveAfterLogChunk => {
            assert_eq!(
                (
                    objects.len(),
                    records.len(),
                    m.archived_logs,
                    m.total_chunks,
                    hot
                ),
                (1, 1, 100, 1, 250)
            );
            assert!(m.pending_chunk.is_some(), "cleared only after the deletes");
        }
        other => panic!("no archive step: {other:?}"),
    }

    // Another worker takes the lock over once its lease runs out, and finishes.
    let stats = Arc::new(ArchiveMetrics::default());
    let y = env.spawn_archive(ArchiveOptions {
        instance: Some("archiver-y".into()),
        metrics: stats.clone(),
        ..Default::default()
    });
    env.wait_for_episode(ep, 250, 2).await;
    assert_eq!(stats.lock_takeovers.get(), 1);
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!(snap.hot.len(), 50);
    let in_order: Vec<_> = snap.all_logs().into_iter().map(|l| l.log).collect();
    assert!(in_order == logs, "order kept");
    y.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_stopped_after_upload_is_completed_by_another_worker() {
    stopped_after(FaultPoint::ArchiveAfterUpload, "stop-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_stopped_after_logchunk_is_completed_by_another_worker() {
    stopped_after(FaultPoint::ArchiveAfterLogChunk, "stop-logchunk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_stopped_after_metadata_is_completed_by_another_worker() {
    stopped_after(FaultPoint::ArchiveAfterMetadata, "stop-metadata").await;
}

/// A worker that dies holding the lock after it finished a commit's follow-up steps, with the
/// episode now under its threshold, leaves `sweepDue` set: the sweep takes the expired lock
/// and releases it. (Cleared with the follow-up steps, nothing ever looked at the episode
/// again and it stayed locked: the long crash suite found it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_left_under_the_threshold_is_released_by_the_sweep() {
    let env = TestEnv::with_chunks_of("left-lock", 100, |s| s.archive.lease_secs = 2).await;
    let ep = "left-lock";
    let logs = env.ingest_with_worker(ep, 150).await;
    // X commits the chunk and stops before its follow-up steps; Y takes the expired lock over,
    // finishes those steps and stops before it releases the lock.
    for (name, step) in [
        ("archiver-x", FaultPoint::ArchiveAfterLogChunk),
        ("archiver-y", FaultPoint::ArchiveBeforeCleanup),
    ] {
        run_archive_worker_until_crash(&env, name, step).await;
    }
    let m = env.metadata(ep).await.unwrap();
    assert_eq!(m.archive_lease.as_ref().unwrap().owner, "archiver-y");
    assert!(m.is_archiving && m.pending_chunk.is_none());
    assert_eq!(
        (m.current_logs, m.archived_logs),
        (50, 100),
        "under the threshold"
    );
    assert!(
        m.sweep_due,
        "a held lock keeps the episode in the sweep's list"
    );

    let z = env.spawn_archive(ArchiveOptions {
        instance: Some("archiver-z".into()),
        ..Default::default()
    });
    env.wait_for_episode(ep, 150, 1).await;
    let m = env.metadata(ep).await.unwrap();
    assert!(!m.is_archiving && m.archive_lease.is_none() && !m.sweep_due);
    env.snapshot(ep).await.assert_exact(&logs);
    z.stop().await.expect("clean stop");
    env.cleanup().await;
}

/// A worker that stops right after its commit leaves an episode under its
/// threshold (`currentLogs` 0) with archived entries still hot and an expired lock. The sweep
/// finds it all the same (`sweepDue`) and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leftovers_of_a_commit_under_the_threshold_are_swept() {
    let env = TestEnv::with_chunks_of("leftovers", 100, |s| s.archive.lease_secs = 1).await;
    let ep = "leftover";
    let logs = env.ingest_with_worker(ep, 100).await;
    let x = env.spawn_archive(ArchiveOptions {
        instance: Some("archiver-x".into()),
        faults: Faults::new(CrashAt::new(FaultPoint::ArchiveAfterMetadata, 1)),
        ..Default::default()
    });
    assert!(x.join.await.unwrap().is_err());
    let episode = EpisodeId::parse(ep).unwrap();
    let m = env.metadata(ep).await.unwrap();
    assert_eq!(
        (m.current_logs, m.archived_logs, m.total_chunks),
        (0, 100, 1)
    );
    assert!(m.is_archiving && m.pending_chunk.is_some() && m.sweep_due);
    assert_eq!(
        env.store.count_entries_from(&episode, 0).await.unwrap(),
        100
    );
    // Nothing is over the threshold now: only the sweep's flag brings the episode back.
    assert!(
        env.store
            .episodes_due()
            .await
            .unwrap()
            .iter()
            .any(|d| d.episode_id == episode)
    );
    let y = env.spawn_archive(ArchiveOptions {
        instance: Some("archiver-y".into()),
        ..Default::default()
    });
    env.wait_for("the leftovers are finished", || async {
        let m = env.metadata(ep).await.unwrap();
        !m.is_archiving && m.pending_chunk.is_none() && !m.sweep_due
    })
    .await;
    assert_eq!(env.store.count_entries_from(&episode, 0).await.unwrap(), 0);
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!((snap.chunks.len(), snap.hot.len()), (1, 0));
    assert!(env.store.episodes_due().await.unwrap().is_empty());
    y.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_archivers_racing_on_one_episode_archive_each_chunk_once() {
    let env = TestEnv::with_chunks_of("lock-race", 100, |_| {}).await;
    let ep = "contended";
    let logs = env.ingest_with_worker(ep, 1_000).await;
    let episode = EpisodeId::parse(ep).unwrap();
    // Two archivers in this process, racing directly on the lock, round after round.
    let (a, b) = (env.archiver("racer-a"), env.archiver("racer-b"));
    let mut chunks = 0;
    for _ in 0..20 {
        let (ra, rb) = tokio::join!(
            a.archive_episode(&episode, ArchiveKind::Threshold),
            b.archive_episode(&episode, ArchiveKind::Threshold)
        );
        for r in [ra.unwrap(), rb.unwrap()] {
            match r {
                ArchiveOutcome::Done { chunks: c, .. } => chunks += c,
                ArchiveOutcome::Busy => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(chunks, 10, "every chunk committed exactly once");
    assert_eq!(
        a.metrics.chunks_written.get() + b.metrics.chunks_written.get(),
        10
    );
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!(snap.chunks.len(), 10);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_archive_workers_and_live_ingest_archive_each_chunk_once() {
    let env = TestEnv::with_chunks_of("two-workers", 100, |_| {}).await;
    let ep = "shared";
    let (sa, sb) = (
        Arc::new(ArchiveMetrics::default()),
        Arc::new(ArchiveMetrics::default()),
    );
    let wa = env.spawn_archive(ArchiveOptions {
        instance: Some("archiver-a".into()),
        metrics: sa.clone(),
        ..Default::default()
    });
    let wb = env.spawn_archive(ArchiveOptions {
        instance: Some("archiver-b".into()),
        metrics: sb.clone(),
        ..Default::default()
    });
    let logs = env.ingest_with_worker(ep, 1_230).await;
    env.wait_for_episode(ep, 1_230, 12).await;
    let written = sa.chunks_written.get() + sb.chunks_written.get();
    assert_eq!(written, 12, "each chunk committed by exactly one worker");
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!(snap.hot.len(), 30);
    wa.stop().await.expect("clean stop");
    wb.stop().await.expect("clean stop");
    env.cleanup().await;
}
