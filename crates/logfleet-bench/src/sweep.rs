//! Figure 9: the archive sweep's cost. Many LogMetadata documents, a few
//! of them due (`sweepDue: true`); the sweep's query (`MongoStore::episodes_due`) timed beside
//! a full scan of the collection and the former sweep's filter (`currentLogs >= 1`), in one
//! run, interleaved.

use std::time::{Duration, Instant};

use bson::{DateTime, doc};
use futures::TryStreamExt;
use logfleet::domain::EpisodeId;
use logfleet::model::LogMetadata;

use crate::Sizes;
use crate::common::{self, median, progress, thousands};
use crate::report::Figure;

/// Timed repetitions of each query (the median is printed).
const REPS: usize = 5;

pub async fn run(sizes: &Sizes) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("9. Sweep cost (LogMetadata read by the archive sweep)");
    let (n, due_every) = (sizes.sweep_episodes, 1_000);
    let env = common::env("sweep", |_| {}).await;
    let threshold = env.settings.ingest.archive_threshold;
    let chunk = env.settings.ingest.chunk_size;
    let client = mongodb::Client::with_uri_str(&env.settings.mongo.uri).await?;
    let coll = client
        .database(&env.settings.mongo.database)
        .collection::<LogMetadata>(&env.settings.mongo.log_metadata_collection);

    // Every episode holds hot logs under its threshold, except one in `due_every`, over it.
    progress(format!(
        "sweep: loading {} LogMetadata",
        thousands(n as u64)
    ));
    let t = Instant::now();
    let now = DateTime::now().timestamp_millis();
    let mut due_count = 0;
    for part in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut docs = Vec::with_capacity(part.len());
        for &i in part {
            let ep = EpisodeId::parse(&format!("bench-sweep-{i:07}"))?;
            let mut m = LogMetadata::new(ep, threshold, chunk, DateTime::from_millis(now));
            let due = i % due_every == 0;
            due_count += usize::from(due);
            let logs = if due {
                i64::from(threshold) + 100
            } else {
                1 + (i as i64 * 7919) % (i64::from(threshold) - 1)
            };
            m.total_logs = logs;
            m.current_logs = logs;
            m.next_sequence_number = logs;
            m.current_mongo_bytes = logs * 250;
            m.first_log_at = Some(DateTime::from_millis(now - 3_600_000));
            m.last_log_at = Some(DateTime::from_millis(now - (i as i64 % 3_600) * 1_000));
            m.level_counts = Some(doc! {"info": logs - logs / 10, "warn": logs / 10});
            m.version = 1 + logs / 500;
            m.sweep_due = due;
            docs.push(m);
        }
        coll.insert_many(docs).ordered(false).await?;
    }
    let load = t.elapsed();
    let sample = coll
        .clone_with_type::<bson::RawDocumentBuf>()
        .find_one(doc! {})
        .await?
        .map_or(0, |d| d.as_bytes().len());

    let (mut due_t, mut scan_t, mut former_t) = (vec![], vec![], vec![]);
    let (mut due_n, mut scan_n, mut former_n) = (0, 0, 0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in 0..REPS {
        progress(format!("sweep: round {}", r + 1));
        let t = Instant::now();
        due_n = env.store.episodes_due().await?.len();
        due_t.push(ms(t.elapsed()));
        let t = Instant::now();
        let all: Vec<LogMetadata> = coll.find(doc! {}).await?.try_collect().await?;
        scan_t.push(ms(t.elapsed()));
        scan_n = all.len();
        let t = Instant::now();
        let former: Vec<LogMetadata> = coll
            .find(doc! {"currentLogs": {"$gte": 1}})
            .await?
            .try_collect()
            .await?;
        former_t.push(ms(t.elapsed()));
        former_n = former.len();
    }
    let plan = |f| {
        common::explain_find(
            &client,
            &env.settings.mongo.database,
            &env.settings.mongo.log_metadata_collection,
            f,
        )
    };
    let due_plan = plan(doc! {"sweepDue": true}).await;
    env.cleanup().await;
    anyhow::ensure!(
        due_n == due_count,
        "episodes_due returned {due_n} documents, {due_count} are due"
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    fig.line(format!(
        "collection: {} LogMetadata documents (about {sample} bytes BSON each, every one with hot logs), {due_count} of them due (sweepDue: true, over their threshold); schema indexes (sweepDue, currentLogs, ...); loaded in {:.1} s",
        thousands(n as u64),
        load.as_secs_f64()
    ));
    fig.line(format!(
        "each query run {REPS} times, interleaved, decoded into LogMetadata as the sweep does; median (all runs in ms)"
    ));
    let (d, s, f) = (median(&due_t), median(&scan_t), median(&former_t));
    fig.line(format!(
        "sweep's query, MongoStore::episodes_due (find sweepDue: true): {due_n} documents in {d:.1} ms ({})",
        fmt(&due_t)
    ));
    fig.line(format!(
        "full scan, find({{}}): {} documents in {s:.1} ms ({})",
        thousands(scan_n as u64),
        fmt(&scan_t)
    ));
    fig.line(format!(
        "the former sweep's filter, find(currentLogs >= 1): {} documents in {f:.1} ms ({})",
        thousands(former_n as u64),
        fmt(&former_t)
    ));
    fig.line(format!(
        "server's plan for the sweep's query (explain): {due_plan}"
    ));
    fig.line(format!(
        "full scan / sweep's query: {:.1}x the time for {:.2}% of the documents",
        s / d,
        100.0 * due_n as f64 / scan_n.max(1) as f64
    ));
    Ok(fig)
}
