//! Retention. Episodes and archived chunks expire on schedule and every record stays
//! consistent while they do.
//!
//! - a whole episode expires (its chunks, objects, hot logs and dedup records go; LogMetadata
//!   stays as a tombstone); reads answer 410 Gone with the reason; a young episode is untouched;
//! - chunks only expire (the oldest, the hot tail kept); chunk numbers go on after them;
//! - a per-episode override, both ways (shorter than the global limit, and never);
//! - a crash after each step, then a rerun (a retention pass, or an archive run of another
//!   worker) that finishes cleanly; a pass frozen past its lease while another worker finishes,
//!   then woken: it changes nothing;
//! - an expiry racing ingest of the same episode: the new logs are kept;
//! - an expiry racing an archive run: the lease decides, both ways;
//! - the archive-worker's periodic pass, with its metrics;
//! - a plan over 10,000 episodes, from indexed LogMetadata queries (no LogEntry is read): the
//!   figure is printed, not asserted.

use std::sync::Arc;
use std::time::Instant;

use bson::DateTime;
use logfleet::archive::{
    ArchiveError, ArchiveKind, ArchiveOptions, ArchiveOutcome, ChunkArchiver, ExpiryOutcome,
    KIND_CHUNKS, KIND_EPISODE, RetentionReport,
};
use logfleet::config::{RetentionSettings, Settings};
use logfleet::domain::EpisodeId;
use logfleet::faults::{CrashAt, FaultAction, FaultPoint, Faults, Freeze, InjectedFault, PauseAt};
use logfleet::ingest::IngestOptions;
use logfleet::metrics::ArchiveMetrics;
use logfleet::model::{LogEntry, LogMetadata, RetentionOverride};
use logfleet::object_store::{ObjectStore, S3ObjectStore};
use logfleet::query::{LogFilter, LogQuery, Order, QueryError, QueryService, SeqRange};
use logfleet_testkit::{SentLog, TestEnv, make_logs, spawn_archive_run};
use serde_json::Value;
use tokio::task::JoinHandle;

/// The logs' timestamps of an "old" episode (2025-11-25), as `make_logs` gives them.
const OLD_MS: i64 = 1_764_100_000_000;
const DAY: u64 = 86_400;

fn policy(episode_days: u64, chunk_secs: u64) -> RetentionSettings {
    RetentionSettings {
        enabled: false,
        interval_secs: 3_600,
        episode_max_age_secs: episode_days * DAY,
        chunk_max_age_secs: chunk_secs,
        max_episodes_per_pass: 1_000,
    }
}

async fn env(name: &str) -> TestEnv {
    TestEnv::with_chunks_of(name, 25, |s| s.archive.lease_secs = 2).await
}

fn archiver(
    env: &TestEnv,
    owner: &str,
    faults: Faults,
    p: RetentionSettings,
) -> ChunkArchiver<S3ObjectStore> {
    env.archiver(owner).with_faults(faults).with_retention(p)
}

/// Starts `r`'s expiry of `episode` (due as of when it starts) in a task of its own, for a test
/// that holds or freezes it at a fault point meanwhile.
fn spawn_expiry(
    r: &Arc<ChunkArchiver<S3ObjectStore>>,
    episode: &EpisodeId,
) -> JoinHandle<Result<ExpiryOutcome, ArchiveError>> {
    let (r, episode) = (r.clone(), episode.clone());
    tokio::spawn(async move { r.expire_episode(&episode, DateTime::now()).await })
}

/// Starts `owner`'s expiry of `episode` (episodes over 30 days old) in a task of its own and
/// returns once it is held right after its mark: the archiver, the pause that holds it (release
/// it to go on) and the task.
async fn expiry_held_after_its_mark(
    env: &TestEnv,
    owner: &str,
    episode: &EpisodeId,
) -> (
    Arc<ChunkArchiver<S3ObjectStore>>,
    PauseAt,
    JoinHandle<Result<ExpiryOutcome, ArchiveError>>,
) {
    let pause = PauseAt::new(FaultPoint::RetentionAfterMark, 1, FaultAction::Continue);
    let r = Arc::new(archiver(
        env,
        owner,
        Faults::new(pause.clone()),
        policy(30, 0),
    ));
    let held = spawn_expiry(&r, episode);
    pause.reached().await;
    (r, pause, held)
}

/// The ids of the episodes a retention pass expired, in its order.
fn expired_ids(report: &RetentionReport) -> Vec<&str> {
    report
        .expired
        .iter()
        .map(|p| p.episode_id.as_str())
        .collect()
}

/// Publishes `logs` to `ep` in messages of 25 with ids `{tag}-{i}`, runs an ingest-worker
/// until the episode counts `total` logs, and stops it.
async fn ingest(env: &TestEnv, ep: &str, logs: &[SentLog], tag: &str, total: i64) {
    let w = env.spawn_ingest(IngestOptions::default());
    env.publish_in_batches(ep, logs, 25, tag).await;
    env.wait_for(&format!("{ep}: {total} logs counted"), || async {
        env.metadata(ep)
            .await
            .is_some_and(|m| m.total_logs == total)
    })
    .await;
    w.stop().await.expect("ingest-worker stops cleanly");
}

/// Archives what is over the threshold (no flush: a hot tail stays).
async fn archive(env: &TestEnv, ep: &str) {
    let a = archiver(env, "archiver", Faults::default(), policy(0, 0));
    let out = a
        .archive_episode(&EpisodeId::parse(ep).unwrap(), ArchiveKind::Threshold)
        .await
        .unwrap();
    assert!(matches!(out, ArchiveOutcome::Done { .. }), "{out:?}");
}

/// Every invariant of an idle episode with retention: records and objects one to one for the
/// live chunks, counters that add up with the expired ones, the hot tail complete, nothing left
/// below the expired range, no marker, no lock. Returns LogMetadata.
async fn assert_consistent(env: &TestEnv, ep: &str) -> LogMetadata {
    let snap = env.snapshot(ep).await;
    let m = &snap.metadata;
    assert!(m.expiring.is_none(), "{ep}: marker left: {:?}", m.expiring);
    assert!(
        !m.is_archiving && m.archive_lease.is_none(),
        "{ep}: lock left"
    );
    assert_eq!(
        (m.total_logs, m.next_sequence_number),
        (m.archived_logs + m.current_logs, m.total_logs),
        "{ep}: totalLogs = nextSequenceNumber = archivedLogs + currentLogs"
    );
    assert!(m.expired_logs <= m.archived_logs && m.expired_chunks <= m.total_chunks);
    // Live chunks: numbers expiredChunks..totalChunks, covering expiredLogs..archivedLogs.
    let numbers: Vec<i32> = snap.chunks.iter().map(|c| c.chunk_number).collect();
    assert_eq!(
        numbers,
        (m.expired_chunks..m.total_chunks).collect::<Vec<_>>(),
        "{ep}: live chunk records"
    );
    let mut next = m.expired_logs;
    for (c, (size, lines)) in snap.chunks.iter().zip(&snap.chunk_lines) {
        assert_eq!(
            c.start_sequence, next,
            "{ep}: chunk {} start",
            c.chunk_number
        );
        assert_eq!(c.size_bytes, *size as i64);
        assert_eq!(lines.len() as i32, c.log_count);
        assert_eq!(lines.first().unwrap().sequence_number, c.start_sequence);
        next = c.end_sequence + 1;
    }
    assert_eq!(
        next,
        m.archived_logs.max(m.expired_logs),
        "{ep}: chunks end"
    );
    let live_logs: i64 = snap.chunks.iter().map(|c| i64::from(c.log_count)).sum();
    assert_eq!(
        live_logs,
        m.archived_logs - m.expired_logs,
        "{ep}: live archived logs"
    );
    let live_bytes: i64 = snap.chunks.iter().map(|c| c.size_bytes).sum();
    assert_eq!(
        live_bytes,
        m.archived_s3_bytes - m.expired_s3_bytes,
        "{ep}: live S3 bytes"
    );
    let mut srcs: Vec<String> = snap.chunks.iter().map(|c| c.src.clone()).collect();
    srcs.sort();
    assert_eq!(
        snap.keys, srcs,
        "{ep}: S3 objects differ from the live records"
    );
    // The hot tail: exactly archivedLogs..nextSequenceNumber.
    let seqs: Vec<i64> = snap.hot.iter().map(|e| e.sequence_number).collect();
    assert_eq!(
        seqs,
        (m.archived_logs..m.next_sequence_number).collect::<Vec<_>>(),
        "{ep}: hot entries"
    );
    let hot_bytes: i64 = snap.hot.iter().map(LogEntry::size).sum();
    assert_eq!(hot_bytes, m.current_mongo_bytes, "{ep}: currentMongoBytes");
    snap.metadata.clone()
}

fn read(ep: &str, seq: SeqRange) -> LogQuery {
    LogQuery {
        episode: EpisodeId::parse(ep).unwrap(),
        filter: LogFilter {
            seq,
            ..Default::default()
        },
        order: Order::Asc,
        cursor: None,
        limit: 1_000,
    }
}

fn query_service(env: &TestEnv) -> QueryService {
    QueryService::new(
        env.store.clone(),
        env.objects.clone(),
        env.settings.query.clone(),
    )
}

async fn http_get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}"))
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// A query-api on a free port; returns its base URL and the sender that stops it.
async fn start_api(settings: &Settings) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = settings.clone();
    tokio::spawn(async move {
        query_api::run(s, listener, async {
            let _ = rx.await;
        })
        .await
    });
    (base, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_episode_expires_and_reads_answer_410() {
    let env = env("ret-episode").await;
    let old = make_logs("old", 110, OLD_MS);
    ingest(&env, "old", &old, "old", 110).await;
    archive(&env, "old").await;
    let young = make_logs("young", 30, DateTime::now().timestamp_millis());
    ingest(&env, "young", &young, "young", 30).await;
    let before = assert_consistent(&env, "old").await;
    assert_eq!((before.total_chunks, before.current_logs), (4, 10));
    let episode = EpisodeId::parse("old").unwrap();
    assert!(
        env.store
            .count_archived_messages_of(&episode)
            .await
            .unwrap()
            > 0
    );

    let r = archiver(&env, "retention", Faults::default(), policy(30, 0));
    let now = DateTime::now();
    let plan = r.plan_retention(now).await.unwrap();
    assert_eq!(plan.expiries.len(), 1, "{plan:?}");
    let p = &plan.expiries[0];
    assert_eq!(
        (
            p.episode_id.as_str(),
            p.kind.as_str(),
            p.chunks,
            p.logs,
            p.hot_logs
        ),
        ("old", KIND_EPISODE, 4, 110, 10)
    );
    assert_eq!(
        (p.s3_bytes, p.mongo_bytes),
        (before.archived_s3_bytes, before.current_mongo_bytes)
    );
    let report = r.retention_pass(now, |_, _| {}).await.unwrap();
    assert_eq!((report.planned, report.expired.len()), (1, 1));

    let m = assert_consistent(&env, "old").await;
    assert_eq!(
        (
            m.expired_logs,
            m.archived_logs,
            m.current_logs,
            m.current_mongo_bytes
        ),
        (110, 110, 0, 0)
    );
    assert_eq!((m.expired_chunks, m.total_chunks), (4, 4));
    assert_eq!(m.expired_s3_bytes, before.archived_s3_bytes);
    assert!(m.expired_at.is_some());
    assert!(
        m.expiry_reason
            .as_deref()
            .unwrap()
            .contains("episode retention")
    );
    assert_eq!(env.store.count_entries_from(&episode, 0).await.unwrap(), 0);
    assert_eq!(
        env.store
            .count_archived_messages_of(&episode)
            .await
            .unwrap(),
        0
    );
    // The young episode is untouched.
    env.snapshot("young").await.assert_exact(&young);

    let rm = &r.metrics.retention;
    assert_eq!(
        (
            rm.episodes_expired.get(),
            rm.chunks_expired.get(),
            rm.logs_expired.get()
        ),
        (1, 4, 110)
    );
    assert_eq!(
        rm.bytes_expired.with_label_values(&["s3"]).get() as i64,
        before.archived_s3_bytes
    );
    assert_eq!(
        rm.bytes_expired.with_label_values(&["mongo"]).get() as i64,
        before.current_mongo_bytes
    );
    assert!(rm.last_pass_timestamp.get() > 0.0);

    // Reads: the library says Expired, the query-api 410 Gone with the reason.
    let svc = query_service(&env);
    let e = svc
        .read_page(&read("old", SeqRange::default()))
        .await
        .unwrap_err();
    assert!(matches!(e, QueryError::Expired(_)), "{e:?}");
    let (base, stop) = start_api(&env.settings).await;
    let (status, body) = http_get(&base, "/v1/episodes/old/logs").await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "expired");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("all its 110 logs") && msg.contains("episode retention"),
        "{msg}"
    );
    let (status, body) = http_get(&base, "/v1/episodes/old/export").await;
    assert_eq!(status, 410, "{body}");
    let (status, stats) = http_get(&base, "/v1/episodes/old/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["expiredBelow"], 110);
    assert_eq!(stats["expiredChunks"], 4);
    let (status, chunks) = http_get(&base, "/v1/episodes/old/chunks").await;
    assert_eq!(status, 200);
    assert_eq!(chunks["chunks"].as_array().unwrap().len(), 0);
    let (status, _) = http_get(&base, "/v1/episodes/young/logs").await;
    assert_eq!(status, 200);
    let _ = stop.send(());

    // Nothing more is due: the tombstone stays as it is.
    let again = r.plan_retention(DateTime::now()).await.unwrap();
    assert!(again.expiries.is_empty(), "{again:?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_only_expire_and_the_hot_tail_stays() {
    let env = env("ret-chunks").await;
    let ep = "chunky";
    let logs = make_logs(ep, 110, OLD_MS);
    ingest(&env, ep, &logs, "a", 110).await;
    archive(&env, ep).await;
    let episode = EpisodeId::parse(ep).unwrap();
    let chunks = env.store.chunks_of(&episode).await.unwrap();
    assert_eq!(chunks.len(), 4);
    // One second of age, measured at a `now` just past chunk 1's last log: chunks 0 and 1 go.
    let now = DateTime::from_millis(chunks[1].end_time.timestamp_millis() + 1_001);
    let r = archiver(&env, "retention", Faults::default(), policy(0, 1));
    let plan = r.plan_retention(now).await.unwrap();
    assert_eq!(plan.expiries.len(), 1, "{plan:?}");
    let p = &plan.expiries[0];
    assert_eq!(
        (p.kind.as_str(), p.chunks, p.logs, p.hot_logs, p.mongo_bytes),
        (KIND_CHUNKS, 2, 50, 0, 0)
    );
    assert_eq!(p.s3_bytes, chunks[0].size_bytes + chunks[1].size_bytes);
    let out = r.expire_episode(&episode, now).await.unwrap();
    assert!(matches!(out, ExpiryOutcome::Expired(_)), "{out:?}");

    let m = assert_consistent(&env, ep).await;
    assert_eq!(
        (
            m.expired_logs,
            m.expired_chunks,
            m.archived_logs,
            m.current_logs
        ),
        (50, 2, 100, 10)
    );
    assert!(
        m.expiry_reason
            .as_deref()
            .unwrap()
            .contains("chunk retention")
    );
    let snap = env.snapshot(ep).await;
    let kept: Vec<SentLog> = snap.all_logs().into_iter().map(|l| l.log).collect();
    assert!(kept == logs[50..], "logs 50.. kept as they were");

    // Reads: from the start begins at 50; a range only below 50 is Expired; one across it
    // starts at 50.
    let svc = query_service(&env);
    let page = svc.read_page(&read(ep, SeqRange::default())).await.unwrap();
    assert_eq!(page.logs.first().unwrap().sequence_number, 50);
    assert_eq!(page.logs.len(), 60);
    let e = svc
        .read_page(&read(
            ep,
            SeqRange {
                start: Some(0),
                end: Some(50),
            },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, QueryError::Expired(m) if m.contains("logs 0 to 49") && m.contains("remain")),
        "{e:?}"
    );
    let across = svc
        .read_page(&read(
            ep,
            SeqRange {
                start: Some(40),
                end: Some(60),
            },
        ))
        .await
        .unwrap();
    let seqs: Vec<i64> = across.logs.iter().map(|l| l.sequence_number).collect();
    assert_eq!(seqs, (50..60).collect::<Vec<_>>());
    let listed = svc.chunks(&episode, None, 100).await.unwrap();
    assert_eq!(
        listed
            .chunks
            .iter()
            .map(|c| c.chunk_number)
            .collect::<Vec<_>>(),
        [2, 3]
    );

    // Archiving goes on with the next chunk number: numbers are never reused.
    let more = make_logs(ep, 20, OLD_MS + 1_000);
    ingest(&env, ep, &more, "b", 130).await;
    archive(&env, ep).await;
    let m = assert_consistent(&env, ep).await;
    assert_eq!(
        (m.total_chunks, m.expired_chunks, m.archived_logs),
        (5, 2, 125)
    );
    // Nothing more is due at that `now`.
    assert!(r.plan_retention(now).await.unwrap().expiries.is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_episode_override_replaces_the_global_limit() {
    let env = env("ret-override").await;
    for ep in ["short", "plain", "forever"] {
        ingest(&env, ep, &make_logs(ep, 30, OLD_MS), ep, 30).await;
    }
    let set = |ep: &str, max_age: Option<i64>| {
        let store = env.store.clone();
        let ep = EpisodeId::parse(ep).unwrap();
        async move {
            store
                .set_retention_override(
                    &ep,
                    Some(RetentionOverride {
                        max_age_secs: max_age,
                        chunk_max_age_secs: None,
                        set_at: DateTime::now(),
                    }),
                )
                .await
                .unwrap()
                .unwrap()
        }
    };
    set("short", Some(30 * DAY as i64)).await;
    set("forever", Some(0)).await;
    // Global limit 3 years: only the episode with a 30-day override is due.
    let r = archiver(&env, "retention", Faults::default(), policy(3 * 365, 0));
    let report = r.retention_pass(DateTime::now(), |_, _| {}).await.unwrap();
    assert_eq!(expired_ids(&report), ["short"]);
    assert!(report.expired[0].reason.contains("30d"), "{report:?}");
    // Global limit 30 days: the plain episode goes too; the one set to never stays.
    let r = archiver(&env, "retention", Faults::default(), policy(30, 0));
    let report = r.retention_pass(DateTime::now(), |_, _| {}).await.unwrap();
    assert_eq!(expired_ids(&report), ["plain"]);
    for ep in ["short", "plain", "forever"] {
        let m = assert_consistent(&env, ep).await;
        let want = if ep == "forever" { 0 } else { 30 };
        assert_eq!(m.expired_logs, want, "{ep}");
    }
    // With no global limit at all, an override alone still expires its episode.
    ingest(&env, "alone", &make_logs("alone", 30, OLD_MS), "alone", 30).await;
    set("alone", Some(DAY as i64)).await;
    let r = archiver(&env, "retention", Faults::default(), policy(0, 0));
    let report = r.retention_pass(DateTime::now(), |_, _| {}).await.unwrap();
    assert_eq!(report.expired.len(), 1);
    assert_eq!(assert_consistent(&env, "alone").await.expired_logs, 30);
    env.cleanup().await;
}

/// The state a crash at `step` leaves, and the check that the expired range reads as expired
/// (never as a missing object) meanwhile.
async fn crashed_at(env: &TestEnv, ep: &str, step: FaultPoint, owner: &str) {
    let episode = EpisodeId::parse(ep).unwrap();
    let r = archiver(
        env,
        owner,
        Faults::new(CrashAt::new(step, 1)),
        policy(30, 0),
    );
    let out = r.expire_episode(&episode, DateTime::now()).await;
    assert!(
        matches!(out, Err(ArchiveError::Injected(InjectedFault(s))) if s == step),
        "{out:?}"
    );
    let m = env.metadata(ep).await.unwrap();
    assert!(m.is_archiving, "a crash leaves the lock held");
    let objects = env.objects.list(&format!("logs/{ep}/")).await.unwrap();
    let records = env.store.chunks_of(&episode).await.unwrap();
    let hot = env.store.count_entries_from(&episode, 0).await.unwrap();
    let shape = (objects.len(), records.len(), hot, m.expiring.is_some());
    let want = match step {
        FaultPoint::RetentionAfterMark => (4, 4, 10, true),
        FaultPoint::RetentionAfterObjects => (0, 4, 10, true),
        FaultPoint::RetentionAfterChunkRecords => (0, 0, 10, true),
        FaultPoint::RetentionAfterEntries => (0, 0, 0, true),
        FaultPoint::RetentionAfterMetadata => (0, 0, 0, false),
        other => panic!("not a retention step: {other:?}"),
    };
    assert_eq!(shape, want, "{ep} after {step:?}");
    assert!(m.sweep_due, "the sweep finds the episode");
    // Reads: 410, not an error about a missing object.
    let e = query_service(env)
        .read_page(&read(ep, SeqRange::default()))
        .await
        .unwrap_err();
    assert!(matches!(e, QueryError::Expired(_)), "{step:?}: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_each_step_is_finished_by_the_next_pass() {
    let env = env("ret-crash").await;
    let steps = [
        FaultPoint::RetentionAfterMark,
        FaultPoint::RetentionAfterObjects,
        FaultPoint::RetentionAfterChunkRecords,
        FaultPoint::RetentionAfterEntries,
        FaultPoint::RetentionAfterMetadata,
    ];
    let mut sizes = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let ep = format!("crash-{i}");
        ingest(&env, &ep, &make_logs(&ep, 110, OLD_MS), &ep, 110).await;
        archive(&env, &ep).await;
        sizes.push(env.metadata(&ep).await.unwrap().archived_s3_bytes);
        crashed_at(&env, &ep, *step, &format!("crasher-{i}")).await;
    }
    // The next pass of the same instances (restarted, same id) finishes each one; the
    // episodes with a marker are candidates even under a policy that would not pick them.
    let mut done = 0;
    for i in 0..steps.len() {
        let r = archiver(
            &env,
            &format!("crasher-{i}"),
            Faults::default(),
            policy(30, 0),
        );
        let report = r.retention_pass(DateTime::now(), |_, _| {}).await.unwrap();
        done += report.expired.len();
        assert_eq!(report.failed, 0);
    }
    // Four unfinished expiries were finished (the fifth had settled before its crash), each
    // by the pass of its own instance or an earlier one in this loop.
    assert_eq!(done, 4);
    // The one that crashed after settling left only its lock: the sweep's archive run (here,
    // of the same instance) releases it, with nothing to do.
    for i in 0..steps.len() {
        let ep = EpisodeId::parse(&format!("crash-{i}")).unwrap();
        let a = archiver(
            &env,
            &format!("crasher-{i}"),
            Faults::default(),
            policy(30, 0),
        );
        assert_eq!(
            a.archive_episode(&ep, ArchiveKind::Threshold)
                .await
                .unwrap(),
            ArchiveOutcome::Done { chunks: 0, logs: 0 }
        );
    }
    for (i, s3) in sizes.iter().enumerate() {
        let ep = format!("crash-{i}");
        let m = assert_consistent(&env, &ep).await;
        assert_eq!(
            (
                m.expired_logs,
                m.expired_chunks,
                m.expired_s3_bytes,
                m.current_logs
            ),
            (110, 4, *s3, 0),
            "{ep}: counted once"
        );
        assert_eq!(
            env.store
                .count_archived_messages_of(&EpisodeId::parse(&ep).unwrap())
                .await
                .unwrap(),
            0
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_run_of_another_worker_finishes_a_crashed_expiry() {
    let env = env("ret-crash-arch").await;
    let ep = "crash-arch";
    ingest(&env, ep, &make_logs(ep, 110, OLD_MS), "a", 110).await;
    archive(&env, ep).await;
    crashed_at(&env, ep, FaultPoint::RetentionAfterObjects, "crasher").await;
    // An archive-worker's sweep takes the expired lease over and finishes the expiry first.
    let metrics = Arc::new(ArchiveMetrics::default());
    let w = env.spawn_archive(ArchiveOptions {
        instance: Some("sweeper".into()),
        metrics: metrics.clone(),
        ..Default::default()
    });
    env.wait_for("the sweep finished the expiry", || async {
        env.metadata(ep)
            .await
            .is_some_and(|m| m.expiring.is_none() && !m.is_archiving)
    })
    .await;
    w.stop().await.expect("clean stop");
    let m = assert_consistent(&env, ep).await;
    assert_eq!((m.expired_logs, m.expired_chunks), (110, 4));
    assert_eq!(metrics.retention.episodes_expired.get(), 1);
    assert_eq!(metrics.lock_takeovers.get(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_frozen_past_its_lease_changes_nothing_when_it_wakes() {
    let env = env("ret-freeze").await;
    let ep = "frozen";
    ingest(&env, ep, &make_logs(ep, 110, OLD_MS), "a", 110).await;
    archive(&env, ep).await;
    let s3 = env.metadata(ep).await.unwrap().archived_s3_bytes;
    let episode = EpisodeId::parse(ep).unwrap();
    // Worker A freezes (lease renewals too) right after deleting the objects.
    let freeze = Freeze::new(FaultPoint::RetentionAfterObjects, 1);
    let a = Arc::new(archiver(
        &env,
        "worker-a",
        Faults::new(freeze.clone()),
        policy(30, 0),
    ));
    let frozen = spawn_expiry(&a, &episode);
    freeze.frozen().await;
    // Worker B is turned away while A's lease lives, then takes it over and finishes.
    let b = archiver(&env, "worker-b", Faults::default(), policy(30, 0));
    let deadline = Instant::now() + logfleet_testkit::STUCK_AFTER;
    let finished = loop {
        match b.expire_episode(&episode, DateTime::now()).await.unwrap() {
            ExpiryOutcome::Busy => {
                assert!(Instant::now() < deadline, "stuck: A's lease never ran out");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => break other,
        }
    };
    assert!(
        matches!(&finished, ExpiryOutcome::Expired(p) if p.logs == 110 && p.chunks == 4),
        "{finished:?}"
    );
    let settled = assert_consistent(&env, ep).await;
    // A wakes: whatever it deletes is expired already, and its settling write is refused.
    freeze.thaw();
    let woke = frozen.await.unwrap();
    assert!(matches!(woke, Err(ArchiveError::LeaseLost(_))), "{woke:?}");
    let m = assert_consistent(&env, ep).await;
    assert_eq!(
        (m.expired_logs, m.expired_chunks, m.expired_s3_bytes),
        (110, 4, s3)
    );
    assert_eq!(m.version, settled.version, "A wrote nothing after waking");
    assert_eq!(a.metrics.retention.logs_expired.get(), 0);
    assert_eq!(b.metrics.retention.logs_expired.get(), 110);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expiry_racing_ingest_keeps_the_new_logs() {
    let env = TestEnv::new("ret-ingest", |s| s.archive.lease_secs = 5).await;
    let ep = "racing";
    ingest(&env, ep, &make_logs(ep, 60, OLD_MS), "old", 60).await;
    let episode = EpisodeId::parse(ep).unwrap();
    // The expiry is marked (everything below 60), then held there.
    let (r, pause, held) = expiry_held_after_its_mark(&env, "retention", &episode).await;
    assert_eq!(env.metadata(ep).await.unwrap().expiring.unwrap().below, 60);
    // New logs of the same episode arrive meanwhile and are counted above the marker.
    let fresh = make_logs("fresh", 40, DateTime::now().timestamp_millis());
    ingest(&env, ep, &fresh, "new", 100).await;
    pause.release();
    let out = held.await.unwrap().unwrap();
    assert!(
        matches!(&out, ExpiryOutcome::Expired(p) if p.logs == 60 && p.hot_logs == 60),
        "{out:?}"
    );
    let m = assert_consistent(&env, ep).await;
    assert_eq!(
        (
            m.expired_logs,
            m.archived_logs,
            m.current_logs,
            m.total_logs
        ),
        (60, 60, 40, 100)
    );
    let snap = env.snapshot(ep).await;
    let kept: Vec<SentLog> = snap.all_logs().into_iter().map(|l| l.log).collect();
    assert!(kept == fresh, "the new logs are kept, as sent");
    let page = query_service(&env)
        .read_page(&read(ep, SeqRange::default()))
        .await
        .unwrap();
    assert_eq!(page.logs.len(), 40);
    assert_eq!(page.logs[0].sequence_number, 60);
    // The episode is young again: nothing more is due.
    assert!(
        r.plan_retention(DateTime::now())
            .await
            .unwrap()
            .expiries
            .is_empty()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expiry_racing_archiving_is_decided_by_the_lease() {
    let env = TestEnv::with_chunks_of("ret-archive", 25, |s| s.archive.lease_secs = 5).await;
    let ep = "contended";
    ingest(&env, ep, &make_logs(ep, 110, OLD_MS), "a", 110).await;
    let episode = EpisodeId::parse(ep).unwrap();
    // An archive run holds the lease (held after its first upload): the expiry is turned away
    // and changes nothing.
    let pause = PauseAt::new(FaultPoint::ArchiveAfterUpload, 1, FaultAction::Continue);
    let x = Arc::new(archiver(
        &env,
        "archiver",
        Faults::new(pause.clone()),
        policy(0, 0),
    ));
    let run = spawn_archive_run(&x, &episode);
    pause.reached().await;
    let r = archiver(&env, "retention", Faults::default(), policy(30, 0));
    let before = env.metadata(ep).await.unwrap();
    assert_eq!(
        r.expire_episode(&episode, DateTime::now()).await.unwrap(),
        ExpiryOutcome::Busy
    );
    let after = env.metadata(ep).await.unwrap();
    assert!(after.expiring.is_none() && after.expired_logs == 0);
    assert_eq!(after.archived_logs, before.archived_logs);
    pause.release();
    assert!(matches!(
        run.await.unwrap().unwrap(),
        ArchiveOutcome::Done { chunks: 4, .. }
    ));
    // Now the expiry gets the lease: every chunk the run committed goes, and the hot tail.
    let out = r.expire_episode(&episode, DateTime::now()).await.unwrap();
    assert!(
        matches!(&out, ExpiryOutcome::Expired(p) if p.chunks == 4 && p.logs == 110 && p.hot_logs == 10),
        "{out:?}"
    );
    assert_consistent(&env, ep).await;

    // The other way: an expiry holds the lease (after its mark); an archive run is turned away.
    let ep2 = "contended-2";
    ingest(&env, ep2, &make_logs(ep2, 60, OLD_MS), "b", 60).await;
    let episode2 = EpisodeId::parse(ep2).unwrap();
    let (_, pause, held) = expiry_held_after_its_mark(&env, "retention-2", &episode2).await;
    let y = archiver(&env, "archiver-y", Faults::default(), policy(0, 0));
    assert_eq!(
        y.archive_episode(&episode2, ArchiveKind::Threshold)
            .await
            .unwrap(),
        ArchiveOutcome::Busy
    );
    pause.release();
    assert!(matches!(
        held.await.unwrap().unwrap(),
        ExpiryOutcome::Expired(_)
    ));
    // The archive run that comes after finds nothing to archive.
    assert_eq!(
        y.archive_episode(&episode2, ArchiveKind::Threshold)
            .await
            .unwrap(),
        ArchiveOutcome::Done { chunks: 0, logs: 0 }
    );
    let m = assert_consistent(&env, ep2).await;
    assert_eq!((m.expired_logs, m.total_chunks), (60, 0));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_archive_worker_runs_the_pass_periodically() {
    let env = TestEnv::new("ret-worker", |s| {
        s.retention.enabled = true;
        s.retention.interval_secs = 1;
        s.retention.episode_max_age_secs = 30 * DAY;
    })
    .await;
    let ep = "periodic";
    ingest(&env, ep, &make_logs(ep, 40, OLD_MS), "a", 40).await;
    let metrics = Arc::new(ArchiveMetrics::default());
    let w = env.spawn_archive(ArchiveOptions {
        metrics: metrics.clone(),
        ..Default::default()
    });
    env.wait_for("the periodic pass expired the episode", || async {
        env.metadata(ep)
            .await
            .is_some_and(|m| m.expired_logs == 40 && !m.is_archiving)
    })
    .await;
    w.stop().await.expect("clean stop");
    assert_consistent(&env, ep).await;
    let rm = &metrics.retention;
    assert_eq!((rm.episodes_expired.get(), rm.logs_expired.get()), (1, 40));
    assert!(rm.last_pass_timestamp.get() > 0.0);
    let text = logfleet::metrics::render(&metrics.registry);
    for name in [
        "logfleet_archive_retention_episodes_expired_total 1",
        "logfleet_archive_retention_logs_expired_total 40",
        "logfleet_archive_retention_last_pass_seconds",
        "logfleet_archive_retention_bytes_expired_total{tier=\"mongo\"}",
    ] {
        assert!(text.contains(name), "{name} in /metrics");
    }
    env.cleanup().await;
}

/// The plan over 10,000 episodes reads LogMetadata through its indexes (no LogEntry exists
/// here: what it reports comes from the counters). Prints how long it took; asserts only what
/// it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_over_ten_thousand_episodes_reads_only_metadata() {
    let env = TestEnv::new("ret-plan", |_| {}).await;
    let now = DateTime::now();
    let young_ms = now.timestamp_millis() - 3_600_000;
    let docs: Vec<LogMetadata> = (0..10_000)
        .map(|i| {
            let mut m = LogMetadata::new(
                EpisodeId::parse(&format!("ep-{i:05}")).unwrap(),
                50_000,
                50_000,
                now,
            );
            let last = if i % 4 == 0 { OLD_MS } else { young_ms };
            m.first_log_at = Some(DateTime::from_millis(last - 1_000));
            m.last_log_at = Some(DateTime::from_millis(last));
            m.total_logs = 100;
            m.next_sequence_number = 100;
            m.current_logs = 100;
            m.current_mongo_bytes = 100 * 200;
            m
        })
        .collect();
    let t = Instant::now();
    env.store.insert_metadata_many(&docs).await.unwrap();
    let insert = t.elapsed();
    let r = archiver(&env, "planner", Faults::default(), policy(30, 0));
    let t = Instant::now();
    let plan = r.plan_retention(now).await.unwrap();
    let took = t.elapsed();
    assert_eq!(plan.expiries.len(), 2_500);
    assert_eq!(plan.candidates, 2_500);
    let (episodes, _, logs, _, mongo) = plan.totals();
    assert_eq!((episodes, logs, mongo), (2_500, 250_000, 2_500 * 20_000));
    assert_eq!(env.store.count_all_entries().await.unwrap(), 0);
    println!(
        "retention plan over 10,000 episodes ({} candidates, {} due) on {}: {:.0} ms (inserting the 10,000 LogMetadata documents took {:.0} ms)",
        plan.candidates,
        plan.expiries.len(),
        env.settings.mongo.uri,
        took.as_secs_f64() * 1000.0,
        insert.as_secs_f64() * 1000.0
    );
    env.cleanup().await;
}
