//! Figure 1: ingest efficiency, the pipeline's logs/s over a raw insertMany's, same documents.

use std::time::{Duration, Instant};

use logfleet::model::LogEntry;
use logfleet::mongo::MongoStore;
use logfleet_tests::TestEnv;

use crate::Sizes;
use crate::common::{self, drain_in_process, progress, entries_of, messages, publish_all, thousands};
use crate::report::{Figure, Goal};

/// The raw baseline: one unordered insertMany of `docs` into a fresh database on the same
/// server, with the same indexes and write concern as the worker's LogEntry collection.
/// Connecting and creating the indexes are not timed.
async fn raw_insert(env: &TestEnv, docs: &[LogEntry], tag: &str) -> anyhow::Result<Duration> {
    let mut s = env.settings.mongo.clone();
    s.database = format!("{}_raw_{tag}", env.settings.mongo.database);
    let store = MongoStore::connect(&s).await?;
    store.ensure_indexes().await?;
    let t0 = Instant::now();
    store.entries.insert_many(docs).ordered(false).await?;
    let elapsed = t0.elapsed();
    store.client.database(&s.database).drop().await?;
    Ok(elapsed)
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("1. Ingest efficiency (RabbitMQ -> ingest-worker -> MongoDB)");
    fig.line(format!(
        "load: {} logs over {} episodes, amqp.partitions 8, other settings default (prefetch 500, max_batch_logs 20000, w majority + journal)",
        thousands(sizes.ingest_logs as u64),
        sizes.ingest_episodes
    ));
    fig.line("pipeline = queues filled first (publish not timed), then an in-process ingest-worker: clock from its first owned partition to the last log inserted (decode, validate, ledger compare-and-set, insertMany, ack)");
    fig.line("raw      = the same LogEntry documents, one insertMany(ordered: false), fresh database with the same indexes and write concern, run just before and just after the pipeline");
    for (label, per_msg) in [("1-log messages", 1usize), ("1,000-log batches", 1_000)] {
        let env = common::env(&format!("ingest{per_msg}"), |s| s.amqp.partitions = 8).await;
        let episodes: Vec<String> = (0..sizes.ingest_episodes)
            .map(|i| format!("bench-ep{i}"))
            .collect();
        let msgs = messages(
            &episodes,
            sizes.ingest_logs / sizes.ingest_episodes,
            per_msg,
        );
        let docs = entries_of(&msgs, &env.settings)?;
        let n = docs.len() as u64;
        progress(format!("ingest {label}: raw insertMany (before)"));
        let before = raw_insert(&env, &docs, "a").await?;
        let publish = publish_all(&env, &msgs).await?;
        progress(format!("ingest {label}: queues filled; pipeline"));
        let mut used = 0;
        for q in &env.topology.partition_queues {
            used += usize::from(env.queue_depth(q).await > 0);
        }
        let pipeline = drain_in_process(&env, n).await?;
        progress(format!("ingest {label}: raw insertMany (after)"));
        let after = raw_insert(&env, &docs, "b").await?;
        let stored = env
            .store
            .entries
            .count_documents(bson::doc! {})
            .await?;
        anyhow::ensure!(stored == n, "{label}: {stored} entries stored, {n} expected");
        let lps = |d: Duration| n as f64 / d.as_secs_f64();
        let raw = (lps(before) + lps(after)) / 2.0;
        fig.line(format!(
            "{label}: {} messages (published in {:.2} s, {used} of 8 partitions used); pipeline {:.0} logs/s ({:.2} s); raw {:.0} logs/s (before {:.0}, after {:.0})",
            thousands(msgs.len() as u64),
            publish.as_secs_f64(),
            lps(pipeline),
            pipeline.as_secs_f64(),
            raw,
            lps(before),
            lps(after)
        ));
        fig.verdict(
            &format!("{label}: pipeline / raw insertMany"),
            lps(pipeline) / raw,
            Goal::AtLeast(0.85),
        );
        env.cleanup().await;
    }
    Ok(fig)
}
