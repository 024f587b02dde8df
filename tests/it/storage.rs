//! The storage contract on the server under test (`MONGODB_URI`): what every other test relies
//! on, checked directly.
//!
//! - Concurrent LogMetadata writers never lose each other's changes: `update_metadata` is a
//!   compare-and-set on every server, including FerretDB 1.x, whose filtered updates are not
//!   atomic (there a per-episode write lock serializes them).
//! - An index that clashes with the schema's is a fatal start-up error naming it, not an
//!   outage retried forever.
//! - Archived entries are deleted however many there are (FerretDB on SQLite refuses a delete
//!   of more than 32,766 documents at once).

use std::sync::Arc;

use bson::oid::ObjectId;
use logfleet::domain::{EpisodeId, LogLevel};
use logfleet::ingest::IngestOptions;
use logfleet::model::LogEntry;
use logfleet::mongo::{Decision, MongoError};
use logfleet_testkit::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_metadata_writers_lose_nothing() {
    let env = TestEnv::new("storage-cas", |_| {}).await;
    let ep = EpisodeId::parse("cas-ep").unwrap();
    env.store.metadata_or_create(&ep, 100, 100).await.unwrap();
    let store = Arc::new(env.store.clone());
    let writers = 24;
    let rounds = 5;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, ep) = (store.clone(), ep.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                store
                    .update_metadata(&ep, None, |m| {
                        m.total_logs += 1;
                        Ok::<_, MongoError>(Decision::Write(()))
                    })
                    .await
                    .unwrap()
                    .expect("episode exists");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = env.metadata("cas-ep").await.unwrap();
    assert_eq!(
        m.total_logs,
        (writers * rounds) as i64,
        "every increment counted once"
    );
    assert_eq!(
        m.version,
        (writers * rounds) as i64,
        "one version per write"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_index_is_a_fatal_start_up_error() {
    let env = TestEnv::new("storage-index", |_| {}).await;
    // Someone made the LogEntry index by hand, under another name and without uniqueness:
    // the unique index the fleet relies on cannot be created beside it.
    let mut s = env.settings.mongo.clone();
    s.log_entry_collection = "LogEntryByHand".into();
    let other = logfleet::mongo::MongoStore::connect(&s).await.unwrap();
    let client = mongodb::Client::with_uri_str(&s.uri).await.unwrap();
    client
        .database(&s.database)
        .collection::<bson::Document>("LogEntryByHand")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(bson::doc! {"episodeId": 1, "sequenceNumber": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("by_hand".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let err = other.ensure_indexes().await.unwrap_err();
    assert!(err.is_fatal(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("episodeId_sequenceNumber") && text.contains("unique: false"),
        "names the index and what is wrong: {text}"
    );
    // A worker with those settings stops with that error instead of retrying forever.
    let mut settings = env.settings.clone();
    settings.mongo = s;
    let r = logfleet::ingest::run_with(settings, IngestOptions::default(), std::future::pending())
        .await;
    let e = r.expect_err("the worker refuses to start");
    assert!(e.to_string().contains("episodeId_sequenceNumber"), "{e}");
    // The schema's own indexes, asked for again, are no conflict.
    env.store.ensure_indexes().await.unwrap();
    env.store.ensure_indexes().await.unwrap();
    env.cleanup().await;
}

/// Rows that break a unique index the fleet needs (two entries with one episode and sequence
/// number, written before the index existed): the index build fails on the server, and the
/// start-up stops with the index's name and the server's reason instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_rows_under_a_unique_index_are_a_fatal_start_up_error() {
    let env = TestEnv::new("storage-dups", |_| {}).await;
    let mut s = env.settings.mongo.clone();
    s.log_entry_collection = "LogEntryWithDuplicates".into();
    let client = mongodb::Client::with_uri_str(&s.uri).await.unwrap();
    let raw = client
        .database(&s.database)
        .collection::<bson::Document>("LogEntryWithDuplicates");
    for message in ["first", "second"] {
        raw.insert_one(
            bson::doc! {"episodeId": "dup", "sequenceNumber": 0_i64, "message": message},
        )
        .await
        .unwrap();
    }
    let store = logfleet::mongo::MongoStore::connect(&s).await.unwrap();
    let err = store.ensure_indexes().await.unwrap_err();
    assert!(err.is_fatal(), "not retried as an outage: {err}");
    let text = err.to_string();
    assert!(
        text.contains("LogEntryWithDuplicates") && text.contains("episodeId_sequenceNumber"),
        "names the collection and the index: {text}"
    );
    // The server's reason, in its words: MongoDB's E11000 duplicate key error, or the
    // UNIQUE constraint of the SQLite under FerretDB and nx-27017 (docs/mongodb-servers.md).
    assert!(
        text.contains("E11000") || text.contains("UNIQUE constraint failed"),
        "gives the server's reason (duplicate keys): {text}"
    );
    env.cleanup().await;
}

/// A one-log message's entry at `seq`, written under `epoch` (`None`: by no ingest-worker).
fn entry(ep: &EpisodeId, seq: i64, now: bson::DateTime, epoch: Option<i64>) -> LogEntry {
    LogEntry {
        id: ObjectId::new(),
        episode_id: ep.clone(),
        timestamp: now,
        level: LogLevel::Info,
        message: format!("line {seq}"),
        metadata: None,
        sequence_number: seq,
        created_at: now,
        message_logs: Some(1),
        message_digest: Some(0),
        ingest_epoch: epoch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_entries_are_deleted_however_many() {
    let env = TestEnv::new("storage-delete", |_| {}).await;
    let ep = EpisodeId::parse("many").unwrap();
    let now = bson::DateTime::now();
    let n = 40_000;
    let entries: Vec<LogEntry> = (0..n).map(|i| entry(&ep, i, now, None)).collect();
    for part in entries.chunks(10_000) {
        env.store.insert_entries(part).await.unwrap();
    }
    let deleted = env.store.delete_entries_below(&ep, 35_000).await.unwrap();
    assert_eq!(deleted, 35_000);
    assert_eq!(env.store.count_entries_from(&ep, 0).await.unwrap(), 5_000);
    assert_eq!(
        env.store.count_entries_from(&ep, 35_000).await.unwrap(),
        (n - 35_000) as u64
    );
    env.cleanup().await;
}

/// Uncounted entries a failed owner left can number hundreds of thousands (a whole prefetch of
/// 1,000-log messages): removing them must not hit FerretDB's limit per delete (F4), and must
/// leave a newer owner's entries and those below the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncounted_entries_are_deleted_however_many() {
    let env = TestEnv::new("storage-uncounted", |_| {}).await;
    let ep = EpisodeId::parse("uncounted-many").unwrap();
    let now = bson::DateTime::now();
    // 0..1,000 below the range; then 40,000 of epoch 2 and 20,000 of no ingest-worker (a
    // failed owner's and older leftovers); then 10,000 of epoch 5, a newer owner's.
    let epoch_of = |i: i64| match i {
        0..41_000 => Some(2),
        41_000..61_000 => None,
        _ => Some(5),
    };
    let entries: Vec<LogEntry> = (0..71_000)
        .map(|i| entry(&ep, i, now, epoch_of(i)))
        .collect();
    for part in entries.chunks(10_000) {
        env.store.insert_entries(part).await.unwrap();
    }
    let left = |from: i64| {
        let store = env.store.clone();
        let ep = ep.clone();
        async move {
            store
                .all_entries(&ep)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.sequence_number >= from)
                .map(|e| (e.sequence_number, e.ingest_epoch))
                .collect::<Vec<_>>()
        }
    };
    // Epoch 3 cleans up from 1,000 on: the 60,000 of epoch 2 and of none go, epoch 5's stay.
    let deleted = env
        .store
        .delete_uncounted_entries(&ep, 1_000, i64::MAX, 3)
        .await
        .unwrap();
    assert_eq!(deleted, 60_000);
    let want: Vec<(i64, Option<i64>)> = (0..1_000)
        .chain(61_000..71_000)
        .map(|i| (i, epoch_of(i)))
        .collect();
    assert!(
        left(0).await == want,
        "only entries below 1,000 and epoch 5's stay"
    );
    // A closed range: all of it that epoch 4 may remove, and nothing of epoch 5.
    assert_eq!(
        env.store
            .delete_uncounted_entries(&ep, 0, 1_000, 4)
            .await
            .unwrap(),
        1_000
    );
    assert_eq!(
        env.store
            .delete_uncounted_entries(&ep, 61_000, 71_000, 4)
            .await
            .unwrap(),
        0
    );
    assert_eq!(left(0).await.len(), 10_000);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_object_store_keeps_the_contract() {
    let env = TestEnv::new("storage-s3", |_| {}).await;
    logfleet::object_store::contract::check(&env.objects, "contract/").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_body_that_does_not_match_its_md5() {
    use logfleet::object_store::{ObjectStore, content_md5};
    let env = TestEnv::new("storage-md5", |_| {}).await;
    let body = b"what was sent".to_vec();
    let wrong = content_md5(b"something else");
    let err = env
        .objects
        .put_with_content_md5("md5/bad", body.clone(), &wrong)
        .await
        .expect_err("a Content-MD5 mismatch is refused");
    assert!(err.to_string().contains("BadDigest"), "{err}");
    // (AWS S3 stores nothing then; s3s-fs 0.14 leaves the body it refused under the key. The
    // archive-worker never records a refused upload, and its keys are unique per attempt.)
    env.objects.put("md5/good", body.clone()).await.unwrap();
    assert_eq!(env.objects.get("md5/good").await.unwrap(), body);
    env.cleanup().await;
}
