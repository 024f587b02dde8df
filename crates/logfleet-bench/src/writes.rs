//! Figure 7: write amplification. 1-log messages over 1,000 episodes, queued
//! before the ingest-worker starts (so every batch is as full as the prefetch allows); every
//! command the worker sends to MongoDB is counted by a wire proxy in front of the server
//! ([`crate::wire`]), per ingested log, against the BSON size of a LogEntry as stored. Then the
//! largest LogMetadata document.

use std::time::Duration;

use futures::TryStreamExt;

use crate::Sizes;
use crate::common::{
    self, WorkerProc, drain_process, entries_of, messages, progress, publish_all, release_bin,
    thousands,
};
use crate::report::{Figure, Goal};
use crate::wire::{self, MongoProxy};

const EPISODES: usize = 1_000;
const PARTITIONS: u16 = 8;

/// The prefetch of the steady case: the one `docs/deployment.md` advises for 1-log messages, so
/// that a batch holds several logs of each episode.
const STEADY_PREFETCH: u16 = 2_000;

pub async fn run(sizes: &Sizes, log_dir: &std::path::Path) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("7. Write amplification (bytes sent to MongoDB per ingested log)");
    fig.line("worst case: every episode new (its LogMetadata created within the count), the default prefetch");
    measure(&mut fig, sizes.writes_logs_per_episode, None, log_dir, true).await?;
    fig.line(format!(
        "steady case: the same load into episodes that exist already (a first round of one log each, not counted, created them), ingest.prefetch {STEADY_PREFETCH}"
    ));
    measure(
        &mut fig,
        sizes.writes_logs_per_episode,
        Some(STEADY_PREFETCH),
        log_dir,
        false,
    )
    .await?;
    Ok(fig)
}

/// One case: `per_ep` 1-log messages for each of the 1,000 episodes through the proxy, with
/// `prefetch` (the default when `None`); `fresh`: the episodes are new, otherwise a first round
/// of one log per episode creates them before the counted one. Adds its lines and verdicts.
async fn measure(
    fig: &mut Figure,
    per_ep: usize,
    prefetch: Option<u16>,
    log_dir: &std::path::Path,
    fresh: bool,
) -> anyhow::Result<()> {
    let env = common::env("writes", |s| {
        s.amqp.partitions = PARTITIONS;
        s.ingest.drain_deadline_secs = 5;
        if let Some(p) = prefetch {
            s.ingest.prefetch = p;
        }
    })
    .await;
    let episodes: Vec<String> = (0..EPISODES).map(|i| format!("bench-w{i:04}")).collect();
    let mut earlier = 0u64;
    if !fresh {
        // The first round: the episodes then have their LogMetadata (and one log each).
        let first = messages(&episodes, 1, 1);
        earlier = first.len() as u64;
        progress("writes: a first round creates the episodes (not counted)");
        publish_all(&env, &first).await?;
        let w = WorkerProc::spawn(
            &env,
            &release_bin("ingest-worker"),
            &[],
            &log_dir.join("writes-ingest-worker-first.log"),
        )?;
        let r = drain_process(&w, earlier, Duration::from_millis(25)).await;
        w.terminate().await?;
        r?;
    }
    let msgs: Vec<_> = messages_from(&episodes, per_ep, earlier as usize / EPISODES);
    let total_logs = msgs.len() as u64;
    let docs = entries_of(&msgs, &env.settings)?;
    let raw_docs = docs
        .iter()
        .map(bson::to_raw_document_buf)
        .collect::<Result<Vec<_>, _>>()?;
    let entry_sizes: Vec<u64> = raw_docs.iter().map(|d| d.as_bytes().len() as u64).collect();
    let entry_mean = entry_sizes.iter().sum::<u64>() as f64 / entry_sizes.len() as f64;
    let (entry_min, entry_max) = (
        *entry_sizes.iter().min().unwrap_or(&0),
        *entry_sizes.iter().max().unwrap_or(&0),
    );

    // The proxy counts what command monitoring would report: shown on a client that has both.
    progress("writes: proxy checked against command monitoring");
    let check_docs = &raw_docs[..raw_docs.len().min(2_000)];
    let (by_handler, by_proxy) = wire::check_against_monitoring(
        &env.settings.mongo.uri,
        &format!("{}_wirecheck", env.settings.mongo.database),
        check_docs,
    )
    .await?;

    progress(format!(
        "writes: publishing {} 1-log messages over {EPISODES} episodes",
        thousands(total_logs)
    ));
    let published = publish_all(&env, &msgs).await?;
    let proxy = MongoProxy::start(&env.settings.mongo.uri).await?;
    let via_proxy = proxy.uri(&env.settings.mongo.uri)?;
    progress("writes: ingest-worker draining through the proxy");
    let w = WorkerProc::spawn(
        &env,
        &release_bin("ingest-worker"),
        &[("MONGO__URI", via_proxy)],
        &log_dir.join("writes-ingest-worker.log"),
    )?;
    let run = drain_process(&w, msgs.len() as u64, Duration::from_millis(25)).await;
    // Counted before the worker's shutdown (its endSessions is no ingest work).
    let sent = proxy.totals();
    let inserted = w
        .metric("logfleet_ingest_logs_inserted_total")
        .await
        .unwrap_or(0.0) as u64;
    w.terminate().await?;
    let run = run?;
    let stored = env.store.count_all_entries().await?;
    anyhow::ensure!(
        stored == earlier + total_logs && inserted == total_logs,
        "{stored} entries stored, {inserted} inserted by the worker, {total_logs} (+ {earlier} before) expected"
    );

    // LogMetadata as stored, raw.
    let client = mongodb::Client::with_uri_str(&env.settings.mongo.uri).await?;
    let metas: Vec<bson::RawDocumentBuf> = client
        .database(&env.settings.mongo.database)
        .collection::<bson::RawDocumentBuf>(&env.settings.mongo.log_metadata_collection)
        .find(bson::doc! {})
        .await?
        .try_collect()
        .await?;
    let meta_sizes: Vec<u64> = metas.iter().map(|d| d.as_bytes().len() as u64).collect();
    let lookup_plan = common::explain_find(
        &client,
        &env.settings.mongo.database,
        &env.settings.mongo.log_metadata_collection,
        bson::doc! {"episodeId": &episodes[0], "version": 1i64},
    )
    .await;
    let meta_max = meta_sizes.iter().copied().max().unwrap_or(0);
    let meta_mean = meta_sizes.iter().sum::<u64>() as f64 / meta_sizes.len().max(1) as f64;
    let inserts = sent
        .by_command
        .get(&format!(
            "insert {}",
            env.settings.mongo.log_entry_collection
        ))
        .map_or(0, |s| s.count);
    let prefetch = env.settings.ingest.prefetch;
    env.cleanup().await;

    let all = sent.all();
    let per_log = |b: u64| b as f64 / total_logs as f64;
    fig.line(format!(
        "load: {} logs = {EPISODES} episodes x {per_ep} logs in 1-log messages, interleaved; amqp.partitions {PARTITIONS}, prefetch {} (other settings default); all published before the worker starts ({:.2} s), so every batch takes a full prefetch",
        thousands(total_logs),
        prefetch,
        published.as_secs_f64()
    ));
    fig.line("worker: target/release/ingest-worker, its mongo.uri pointed at a wire proxy in the bench that counts each command it sends (command document as command monitoring reports it, i.e. bson::to_vec(&CommandStartedEvent::command).len(), and whole message on the wire), from its start to its last ack; hello/isMaster handshakes and heartbeats apart");
    fig.line(format!(
        "proxy check: one insertMany of {} of these LogEntry documents by a client with a command event handler, through the proxy: handler {} bytes, proxy {} bytes",
        thousands(check_docs.len() as u64),
        thousands(by_handler),
        thousands(by_proxy)
    ));
    fig.line(format!(
        "LogEntry as stored (BSON, 1-log messages: every entry is its message's first, with messageLogs and messageDigest; every entry has ingestEpoch): mean {entry_mean:.1} bytes (min {entry_min}, max {entry_max})"
    ));
    fig.line(format!(
        "drained in {:.2} s ({:.0} logs/s from the first owned partition; {} partitions owned); {} logs inserted in {} insertMany = {:.1} logs per insertMany",
        run.wall.as_secs_f64(),
        total_logs as f64 / run.wall.as_secs_f64(),
        run.partitions,
        thousands(total_logs),
        thousands(inserts),
        total_logs as f64 / inserts.max(1) as f64
    ));
    fig.line("commands sent, by command and collection (count, command document bytes, bytes per ingested log):");
    let mut rows: Vec<_> = sent.by_command.iter().collect();
    rows.sort_by_key(|(_, s)| std::cmp::Reverse(s.command_bytes));
    for (name, s) in rows {
        fig.line(format!(
            "  {name:<42} {:>8} commands {:>13} bytes {:>8.1} bytes/log",
            thousands(s.count),
            thousands(s.command_bytes),
            per_log(s.command_bytes)
        ));
    }
    fig.line(format!(
        "  {:<42} {:>8} commands {:>13} bytes {:>8.1} bytes/log = {:.2}x the LogEntry",
        "all",
        thousands(all.count),
        thousands(all.command_bytes),
        per_log(all.command_bytes),
        per_log(all.command_bytes) / entry_mean
    ));
    fig.line(format!(
        "on the wire: {} bytes ({:.1} bytes/log) in OP_MSG messages; handshakes and heartbeats {} messages, {} bytes; replies {} bytes ({:.1} bytes/log)",
        thousands(all.wire_bytes),
        per_log(all.wire_bytes),
        sent.handshakes.count,
        thousands(sent.handshakes.wire_bytes),
        thousands(sent.reply_bytes),
        per_log(sent.reply_bytes)
    ));
    fig.line(format!(
        "LogMetadata after the run: {} documents, largest {} bytes BSON, mean {meta_mean:.0} bytes",
        meta_sizes.len(),
        thousands(meta_max)
    ));
    fig.line(format!(
        "server's plan for the LogMetadata compare-and-set filter {{episodeId, version}} (explain): {lookup_plan}"
    ));
    fig.line(format!(
        "ingest-worker CPU over the drain (through the proxy): {:.2} s = {:.1} µs per log",
        run.cpu_secs,
        run.cpu_secs * 1e6 / total_logs as f64
    ));
    let case = if fresh { "worst case" } else { "steady case" };
    fig.verdict(
        &format!("bytes sent per log / LogEntry BSON size, {case}"),
        per_log(all.command_bytes) / entry_mean,
        Goal::AtMost(1.5),
    );
    fig.value_verdict(
        &format!("largest LogMetadata BSON size, KB, {case}"),
        meta_max as f64 / 1024.0,
        Goal::AtMost(4.0),
    );
    Ok(())
}

/// [`messages`] numbered from the `skip`-th log of each episode on: the logs and message ids
/// that follow a first round of `skip` logs per episode.
fn messages_from(episodes: &[String], per_ep: usize, skip: usize) -> Vec<common::Msg> {
    if skip == 0 {
        return messages(episodes, per_ep, 1);
    }
    let all = messages(episodes, skip + per_ep, 1);
    // `messages` interleaves episode by episode, round by round: the first `skip` rounds are
    // the first round's messages.
    all.into_iter().skip(skip * episodes.len()).collect()
}
