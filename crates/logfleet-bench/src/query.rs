//! Figure 6: the read path against the real services (`--only query`).
//!
//! It places one episode with the real workers (51,000 logs, `chunkSize` 50,000: one chunk in S3
//! and 1,000 hot logs) in a fresh database and bucket, then, in one run:
//! - floor: a plain GetObject of the chunk plus gunzip;
//! - cold: a page of 1,000 logs from the middle of that chunk with an empty cache (metadata,
//!   LogChunk lookup, GetObject, member index, inflating the members that hold the page, parse
//!   of the page's lines), and its ratio to the floor;
//! - warm: the same page with the chunk cached;
//! - hot: a page of 1,000 logs from MongoDB, and a filtered cold page, for reference.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logfleet::domain::EpisodeId;
use logfleet::object_store::ObjectStore;
use logfleet::query::{LogFilter, LogQuery, Order, QueryService};
use serde_json::json;

use crate::Sizes;
use crate::common::{self, progress};
use crate::report::{Figure, Goal};

const TOTAL: usize = 51_000;
const CHUNK: i32 = 50_000;
const PAGE: usize = 1_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Places one episode with the real workers, then measures the read path's pages.
pub async fn run(_sizes: &Sizes) -> anyhow::Result<Figure> {
    let mut fig = Figure::new("6. Read path (query API library): cold, warm and hot pages");
    let env = common::env("query", |s| {
        s.amqp.partitions = 2;
        s.ingest.archive_threshold = CHUNK;
        s.ingest.chunk_size = CHUNK;
        s.archive.sweep_interval_secs = 1;
    })
    .await;
    let s = env.settings.clone();
    let id = &s.mongo.database;
    // Place the data with the real workers.
    let topology = &env.topology;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let ingest = tokio::spawn(logfleet::ingest::run(s.clone(), stopped(stop_rx.clone())));
    let archive = tokio::spawn(logfleet::archive::run(s.clone(), stopped(stop_rx.clone())));
    let publisher = &env.publisher;
    let ep = EpisodeId::parse(&format!("bench-{}", &id[id.len() - 10..]))?;
    let levels = ["info", "debug", "warn", "info", "error"];
    let base = 1_764_700_000_000i64;
    progress(format!(
        "query: placing {TOTAL} logs with the real workers (chunkSize {CHUNK})"
    ));
    let t = Instant::now();
    for b in 0..TOTAL / 1000 {
        let logs: Vec<_> = (b * 1000..(b + 1) * 1000)
            .map(|i| {
                let mut l = json!({"timestamp": base + i as i64, "level": levels[i % 5],
                    "message": format!("step {i} of the benchmark episode, loss={:.4}", 1.0 / (i as f64 + 1.0))});
                if i % 3 == 0 {
                    l["metadata"] = json!({"step": i, "tag": "bench", "nested": {"ok": true}});
                }
                l
            })
            .collect();
        let body = serde_json::to_vec(&json!({"episodeId": ep.as_str(), "logs": logs}))?;
        publisher
            .publish_json(
                &topology.logs_exchange,
                ep.as_str(),
                &body,
                Some(&format!("b-{b}")),
            )
            .await?;
    }
    let store = &env.store;
    loop {
        if let Some(m) = store.metadata_of(&ep).await?
            && m.total_logs == TOTAL as i64
            && m.total_chunks == 1
            && !m.is_archiving
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(900) {
            bail!("the workers did not place the data within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    fig.line(format!("placed {TOTAL} logs with the real workers (chunkSize {CHUNK}: one chunk and 1,000 hot logs) in {:.1} s", t.elapsed().as_secs_f64()));
    let _ = stop_tx.send(true);
    let _ = ingest.await;
    let _ = archive.await;

    let svc = QueryService::connect(&s).await?;
    let chunk = store.chunk_of(&ep, 0).await?.context("chunk 0 recorded")?;
    let objects = logfleet::object_store::S3ObjectStore::connect(&s.s3).await?;
    let runs = 41;

    let q = LogQuery {
        episode: ep.clone(),
        filter: LogFilter::default(),
        order: Order::Asc,
        cursor: Some(20_000),
        limit: PAGE,
    };
    // Floor (GetObject + gunzip) and cold page (empty cache), alternating, so both see the
    // same machine; a warm-up round of each first.
    let mut floor = Vec::new();
    let mut floor_get = Vec::new();
    let mut cold = Vec::new();
    let mut ratios = Vec::new();
    let mut text_len = 0;
    for round in 0..=runs {
        let t = Instant::now();
        let gz = objects.get(&chunk.src).await?;
        let g = t.elapsed();
        let mut text = Vec::with_capacity(gz.len() * 8);
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut text)?;
        let f = t.elapsed();
        text_len = text.len();
        drop(text);
        svc.cache().clear();
        let t = Instant::now();
        let page = svc.read_page(&q).await?;
        let c = t.elapsed();
        if page.logs.len() != PAGE || page.logs[0].sequence_number != 20_000 {
            bail!("cold page is wrong: {} logs", page.logs.len());
        }
        if round > 0 {
            floor.push(f);
            floor_get.push(g);
            cold.push(c);
            ratios.push(c.as_secs_f64() / f.as_secs_f64());
        }
    }
    ratios.sort_by(f64::total_cmp);
    // Warm: the chunk stays cached.
    svc.read_page(&q).await?;
    let mut warm = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let page = svc.read_page(&q).await?;
        warm.push(t.elapsed());
        if page.logs.len() != PAGE {
            bail!("warm page is wrong");
        }
    }
    // For reference: a filtered cold page, and a hot page from MongoDB.
    let filtered_q = LogQuery {
        filter: LogFilter {
            levels: vec![logfleet::domain::LogLevel::Error],
            contains: Some("loss=".into()),
            ..Default::default()
        },
        cursor: Some(0),
        ..q.clone()
    };
    let mut filtered = Vec::new();
    for _ in 0..runs {
        svc.cache().clear();
        let t = Instant::now();
        let page = svc.read_page(&filtered_q).await?;
        filtered.push(t.elapsed());
        if page.logs.len() != PAGE {
            bail!("filtered page is wrong");
        }
    }
    let hot_q = LogQuery {
        cursor: Some(CHUNK as i64),
        ..q.clone()
    };
    let mut hot = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let page = svc.read_page(&hot_q).await?;
        hot.push(t.elapsed());
        if page.logs.len() != PAGE {
            bail!("hot page is wrong");
        }
    }

    // The MongoDB lookups every page makes (LogMetadata, then LogChunk), for the breakdown.
    let mut lookups = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        svc.chunks(&ep, Some(0), 1).await?;
        lookups.push(t.elapsed());
    }
    let mut decode = Vec::new();
    let gz = objects.get(&chunk.src).await?;
    let mut members_read = 0;
    let mut members_total = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let o = logfleet::chunk::ChunkObject::new(gz.clone(), chunk.log_count as usize)?;
        let ks = o.members_for(20_000, 20_000 + PAGE);
        members_read = ks.len();
        members_total = o.members().len();
        for k in ks {
            let m = o.decode_member(k)?;
            for i in m.lines().filter(|i| (20_000..20_000 + PAGE).contains(i)) {
                m.line(i)?;
            }
        }
        decode.push(t.elapsed());
    }
    let (f, c, w) = (
        median(floor.clone()),
        median(cold.clone()),
        median(warm.clone()),
    );
    fig.line(format!(
        "chunk 0: {} logs, {} bytes compressed, {} bytes of JSON Lines",
        chunk.log_count, chunk.size_bytes, text_len
    ));
    fig.line(format!(
        "floor  GetObject + gunzip of the chunk          median {:7.2} ms  (n={runs})",
        ms(f)
    ));
    fig.line(format!(
        "  of which: GetObject                         median {:7.2} ms  (min {:.2} ms, max {:.2} ms)",
        ms(median(floor_get.clone())),
        ms(pct(floor_get.clone(), 0.0)),
        ms(pct(floor_get, 1.0))
    ));
    fig.line(format!(
        "cold   page of {PAGE} from the chunk, cache empty  median {:7.2} ms  ratio {:.2}x of the floor (goal <= 1.5x); median of paired ratios {:.2}x",
        ms(c),
        c.as_secs_f64() / f.as_secs_f64(),
        ratios[ratios.len() / 2]
    ));
    fig.line(format!(
        "warm   same page, chunk cached                 median {:7.2} ms  p95 {:.2} ms (goal < 5 ms, n=200)",
        ms(w),
        ms(pct(warm, 0.95))
    ));
    fig.line(format!(
        "  of which: LogMetadata + LogChunk lookups     median {:7.2} ms; member index + inflate {members_read} of {members_total} members + parse of {PAGE} lines {:.2} ms",
        ms(median(lookups)),
        ms(median(decode))
    ));
    fig.line(format!(
        "cold   page of {PAGE} level=error contains=loss=  median {:7.2} ms  (scans {} lines)",
        ms(median(filtered)),
        PAGE * 5
    ));
    fig.line(format!(
        "hot    page of {PAGE} from MongoDB (this server)     median {:7.2} ms",
        ms(median(hot))
    ));
    fig.verdict(
        "cold page / floor (GetObject + gunzip)",
        c.as_secs_f64() / f.as_secs_f64(),
        Goal::AtMost(1.5),
    );
    env.cleanup().await;
    Ok(fig)
}
