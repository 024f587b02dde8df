//! Figure 1: ingest efficiency, the pipeline's logs/s over a raw insertMany's, same documents.
//!
//! The MongoDB server is shared (other work hits it too), so each case runs in rounds that
//! alternate the two sides: raw, pipeline, raw, pipeline, ..., raw. A round's ratio is its
//! pipeline rate over the mean of the raw rates just before and just after it.

use std::time::{Duration, Instant};

use logfleet::model::LogEntry;
use logfleet::mongo::MongoStore;
use logfleet_testkit::TestEnv;

use crate::Sizes;
use crate::common::{
    self, drain_in_process, entries_of, median, messages, progress, publish_all, thousands,
};
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
    store.insert_entries(docs).await?;
    let elapsed = t0.elapsed();
    store.drop_database().await?;
    Ok(elapsed)
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Figure> {
    let rounds = sizes.ingest_rounds;
    let mut fig = Figure::new("1. Ingest efficiency (RabbitMQ -> ingest-worker -> MongoDB)");
    fig.line(format!(
        "load per case: {} logs over {} episodes in {rounds} rounds of {}; amqp.partitions 8, other settings default (prefetch 500, max_batch_logs 20000, batch_linger_ms 20, batch_max_wait_ms 500, w majority + journal)",
        thousands(sizes.ingest_logs as u64),
        sizes.ingest_episodes,
        thousands((sizes.ingest_logs / rounds) as u64)
    ));
    fig.line("pipeline = a round's messages published first (not timed), then a fresh in-process ingest-worker: clock from its first owned partition to the round's last log inserted (decode, validate, ledger compare-and-set of LogMetadata, insertMany, ack)");
    fig.line("raw      = the same round's LogEntry documents, one insertMany(ordered: false) into a fresh database with the same indexes and write concern; one before the first round and one after each round");
    fig.line("ratio    = median over rounds of pipeline logs/s / mean(raw logs/s before, after)");
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
        let per_round = msgs.len().div_ceil(rounds);
        let lps = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
        let (mut raw_rates, mut pipe_rates, mut ratios) = (vec![], vec![], vec![]);
        let (mut pipe_time, mut published, mut used_max) = (Duration::ZERO, Duration::ZERO, 0);
        let mut offset = 0;
        for (r, round) in msgs.chunks(per_round).enumerate() {
            let n: usize = round.iter().map(|m| m.logs).sum();
            let round_docs = &docs[offset..offset + n];
            offset += n;
            if r == 0 {
                progress(format!("ingest {label}: raw insertMany"));
                raw_rates.push(lps(n, raw_insert(&env, round_docs, "r0").await?));
            }
            published += publish_all(&env, round).await?;
            let mut used = 0;
            for q in &env.topology.partition_queues {
                used += usize::from(env.queue_depth(q).await > 0);
            }
            used_max = used_max.max(used);
            progress(format!("ingest {label}: round {} pipeline", r + 1));
            let t = drain_in_process(&env, n as u64).await?;
            pipe_time += t;
            pipe_rates.push(lps(n, t));
            progress(format!("ingest {label}: round {} raw insertMany", r + 1));
            raw_rates.push(lps(
                n,
                raw_insert(&env, round_docs, &format!("r{}", r + 1)).await?,
            ));
            let around = (raw_rates[r] + raw_rates[r + 1]) / 2.0;
            ratios.push(pipe_rates[r] / around);
        }
        let stored = env.store.count_all_entries().await?;
        anyhow::ensure!(
            stored == docs.len() as u64,
            "{label}: {stored} entries stored, {} expected",
            docs.len()
        );
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        fig.line(format!(
            "{label}: {} messages (published in {:.2} s in all; {used_max} of 8 partitions used); pipeline {:.0} logs/s overall ({:.2} s)",
            thousands(msgs.len() as u64),
            published.as_secs_f64(),
            lps(docs.len(), pipe_time),
            pipe_time.as_secs_f64()
        ));
        fig.line(format!(
            "  per round: pipeline [{}] logs/s; raw [{}] logs/s; ratios [{}]",
            fmt(&pipe_rates),
            fmt(&raw_rates),
            ratios
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        fig.verdict(
            &format!("{label}: pipeline / raw insertMany"),
            median(&ratios),
            Goal::AtLeast(0.85),
        );
        env.cleanup().await;
    }
    Ok(fig)
}
