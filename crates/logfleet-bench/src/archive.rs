//! Figure 3: one archive run against the sum of its parts measured alone.

use std::time::Instant;

use bson::DateTime;
use bson::oid::ObjectId;
use logfleet::archive::{ArchiveKind, ArchiveOutcome, ChunkArchiver};
use logfleet::chunk::{ChunkWriter, chunk_key};
use logfleet::domain::EpisodeId;
use logfleet::model::{LogChunk, LogEntry};
use logfleet::object_store::put_verified;

use crate::Sizes;
use crate::common::{self, drain_in_process, messages, progress, publish_all, thousands};
use crate::report::{Figure, Goal};

pub async fn run(sizes: &Sizes) -> anyhow::Result<Figure> {
    let c = sizes.archive_chunk;
    let env = common::env("archive", |s| {
        s.ingest.archive_threshold = c as i32;
        s.ingest.chunk_size = c as i32;
    })
    .await;
    let (whole_ep, parts_ep) = ("bench-whole", "bench-parts");
    // Two episodes with the same logs, loaded by the real ingest-worker.
    let msgs = messages(&[whole_ep.to_owned(), parts_ep.to_owned()], c, 1_000);
    publish_all(&env, &msgs).await?;
    drain_in_process(&env, 2 * c as u64).await?;
    progress("archive: episodes loaded; parts, then the whole run");
    let store = &env.store;
    let secs = |t: Instant| t.elapsed().as_secs_f64();

    // The parts, alone, on one episode: read, encode, upload (+ verify), record, delete.
    let ep = EpisodeId::parse(parts_ep)?;
    let t = Instant::now();
    let entries: Vec<LogEntry> = store
        .entries_in_range(&ep, 0, c as i64)
        .await?
        .collect()
        .await?;
    let read = secs(t);
    anyhow::ensure!(
        entries.len() == c,
        "parts episode holds {} logs",
        entries.len()
    );
    let t = Instant::now();
    let mut w = ChunkWriter::new(env.settings.archive.gzip_level)
        .with_member_bytes(env.settings.archive.member_bytes);
    for e in &entries {
        w.push(e)?;
    }
    let encoded = w.finish()?;
    let encode = secs(t);
    let key = chunk_key(
        &env.settings.s3.key_prefix,
        &ep,
        0,
        &logfleet::chunk::new_attempt(),
    );
    let bytes = encoded.bytes.clone();
    let t = Instant::now();
    put_verified(&env.objects, &key, bytes).await?;
    let upload = secs(t);
    let now = DateTime::now();
    let record = LogChunk {
        id: ObjectId::new(),
        episode_id: ep.clone(),
        chunk_number: 0,
        start_sequence: encoded.start_sequence,
        end_sequence: encoded.end_sequence,
        start_time: encoded.start_time,
        end_time: encoded.end_time,
        log_count: encoded.log_count as i32,
        src: key,
        size_bytes: encoded.bytes.len() as i64,
        created_at: now,
        last_accessed: now,
    };
    let t = Instant::now();
    store.record_chunk(&record).await?;
    let record_s = secs(t);
    let t = Instant::now();
    let deleted = store.delete_entries_below(&ep, c as i64).await?;
    let delete = secs(t);
    anyhow::ensure!(deleted == c as u64, "deleted {deleted} entries");
    let parts = read + encode + upload + record_s + delete;

    // The whole run, by the archive-worker's own code, on the other episode.
    let archiver = ChunkArchiver::new(
        store.clone(),
        env.objects.clone(),
        &env.settings,
        "bench-archiver".into(),
    );
    let ep = EpisodeId::parse(whole_ep)?;
    let t = Instant::now();
    let outcome = archiver
        .archive_episode(&ep, ArchiveKind::Threshold)
        .await?;
    let whole = secs(t);
    anyhow::ensure!(
        outcome
            == ArchiveOutcome::Done {
                chunks: 1,
                logs: c as i64
            },
        "archive run: {outcome:?}"
    );
    let m = &archiver.metrics;
    let (build, put) = (
        m.chunk_build_seconds.get_sample_sum(),
        m.chunk_upload_seconds.get_sample_sum(),
    );

    let mut fig = Figure::new("3. Archive run (one chunk: read, encode, upload, record, delete)");
    fig.line(format!(
        "chunk: {} logs ({} bytes gzip), two episodes with the same logs loaded by the ingest-worker; parts measured on one, then the whole run on the other",
        thousands(c as u64),
        thousands(encoded.bytes.len() as u64)
    ));
    fig.line(format!(
        "parts alone: read {read:.3} s (find by range, decode into LogEntry) + encode {encode:.3} s (ChunkWriter) + upload {upload:.3} s (PUT, HEAD, MD5 check) + record {record_s:.3} s (insert LogChunk) + delete {delete:.3} s (deleteMany) = {parts:.3} s"
    ));
    fig.line(format!(
        "whole run: {whole:.3} s = ChunkArchiver::archive_episode (lock by compare-and-set, read+encode streamed {build:.3} s, lease renewal, upload+verify {put:.3} s, LogChunk, LogMetadata commit, delete, release)"
    ));
    fig.verdict("whole run / sum of parts", whole / parts, Goal::AtMost(1.2));
    env.cleanup().await;
    Ok(fig)
}
