//! The read path (logfleet::query and the query-api) over data the real workers placed: some
//! archived in S3 chunks, some hot in MongoDB.
//!
//! - every filter and their combinations, both orders, small pages: exactly the expected logs;
//! - cursor walks through a whole episode: no gaps, no repeats;
//! - exports (NDJSON and JSONL.gz) and follow mode;
//! - stats, chunks, episodes, OpenAPI document, health;
//! - bad input gets a 4xx with a clear JSON message; auth on and off;
//! - reads while an archive runs (a deterministic race through the read hook, and a live
//!   archive-worker) return every log exactly once;
//! - `LogChunk.lastAccessed` is written on read, at most once per interval.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures::StreamExt;
use logfleet::archive::{ArchiveKind, ArchiveOptions};
use logfleet::config::Settings;
use logfleet::domain::{EpisodeId, LogLevel};
use logfleet::faults::{FaultAction, FaultPoint, Faults, HookFn};
use logfleet::ingest::IngestOptions;
use logfleet::object_store::ObjectStore;
use logfleet::query::{LogFilter, LogQuery, Order, QueryService};
use logfleet_testkit::api::Api;
use logfleet_testkit::{
    SentLog, StoredLog, TestEnv, batch_body, make_logs, metric_value, sequence_numbers,
};
use serde_json::Value;

async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.bytes().await.unwrap();
    assert_eq!(
        ctype.as_deref(),
        Some("application/json"),
        "{url}: JSON body expected, got {:?}",
        String::from_utf8_lossy(&body)
    );
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

/// Follows `nextCursor` from `params` to the end; returns every record, checking the pages.
async fn walk(c: &reqwest::Client, base: &str, ep: &str, params: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    let mut pages = 0;
    loop {
        let url = match cursor {
            Some(cur) => format!("{base}/v1/episodes/{ep}/logs?{params}&cursor={cur}"),
            None => format!("{base}/v1/episodes/{ep}/logs?{params}"),
        };
        let (status, page) = get(c, &url).await;
        assert_eq!(status, 200, "{url}: {page}");
        out.extend(page["logs"].as_array().unwrap().iter().cloned());
        pages += 1;
        assert!(pages < 10_000, "{url}: endless cursor");
        match page["nextCursor"].as_i64() {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
}

/// A stored log as the API renders it: (sequence, level, message, timestamp ms, metadata).
fn expected_json(_ep: &str, l: &StoredLog) -> (i64, String, String, i64, Option<Value>) {
    (
        l.sequence_number,
        l.log.level.as_str().to_owned(),
        l.log.message.clone(),
        l.log.timestamp_ms,
        l.log.metadata.clone(),
    )
}

/// A page of `episode`'s logs, unfiltered, from `cursor` on in `order`, `limit` logs at most.
fn unfiltered_page(episode: &EpisodeId, order: Order, cursor: i64, limit: usize) -> LogQuery {
    LogQuery {
        episode: episode.clone(),
        filter: LogFilter::default(),
        order,
        cursor: Some(cursor),
        limit,
    }
}

/// The records of an NDJSON body (an export), one a line.
fn ndjson_records(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn record_key(ep: &str, r: &Value) -> (i64, String, String, i64, Option<Value>) {
    assert_eq!(r["episodeId"], ep);
    assert_eq!(r["id"].as_str().map(str::len), Some(24), "{r}");
    let ts = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(r["createdAt"].as_str().is_some());
    (
        r["sequenceNumber"].as_i64().unwrap(),
        r["level"].as_str().unwrap().to_owned(),
        r["message"].as_str().unwrap().to_owned(),
        ts,
        r.get("metadata").cloned(),
    )
}

/// One filter, as query parameters and as a predicate.
struct Case {
    params: String,
    seq: (i64, i64),
    time: (i64, i64),
    levels: Vec<LogLevel>,
    contains: Option<String>,
}

impl Case {
    fn keep(&self, l: &StoredLog) -> bool {
        (self.seq.0..self.seq.1).contains(&l.sequence_number)
            && (self.time.0..self.time.1).contains(&l.log.timestamp_ms)
            && (self.levels.is_empty() || self.levels.contains(&l.log.level))
            && self
                .contains
                .as_deref()
                .is_none_or(|c| l.log.message.contains(c))
    }
}

fn cases(base_ms: i64) -> Vec<Case> {
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let all = (0, i64::MAX);
    let c = |params: String,
             seq: (i64, i64),
             time: (i64, i64),
             levels: Vec<LogLevel>,
             contains: Option<&str>| Case {
        params,
        seq,
        time,
        levels,
        contains: contains.map(str::to_owned),
    };
    use LogLevel::*;
    vec![
        c(String::new(), all, all, vec![], None),
        // Sequence ranges: inside a chunk, across chunks, across the tiers, hot only, one log.
        c("seq=10..20".into(), (10, 20), all, vec![], None),
        c("seq=950..2100".into(), (950, 2100), all, vec![], None),
        c("seq=1995..2005".into(), (1995, 2005), all, vec![], None),
        c("seq=2400..".into(), (2400, i64::MAX), all, vec![], None),
        c("seq=..3".into(), (0, 3), all, vec![], None),
        c("seq=1500".into(), (1500, 1501), all, vec![], None),
        c("seq=5000..6000".into(), (5000, 6000), all, vec![], None),
        // Time ranges, RFC 3339 and epoch ms, across tiers.
        c(
            format!("time={}..{}", iso(base_ms + 990), iso(base_ms + 2010)),
            all,
            (base_ms + 990, base_ms + 2010),
            vec![],
            None,
        ),
        c(
            format!("time={}..", base_ms + 2300),
            all,
            (base_ms + 2300, i64::MAX),
            vec![],
            None,
        ),
        c(
            format!("time=..{}", base_ms + 7),
            all,
            (0, base_ms + 7),
            vec![],
            None,
        ),
        // Levels.
        c("level=fatal".into(), all, all, vec![Fatal], None),
        c("level=WARN,error".into(), all, all, vec![Warn, Error], None),
        c(
            "level=debug&level=fatal".into(),
            all,
            all,
            vec![Debug, Fatal],
            None,
        ),
        // Message substring (case-sensitive), with characters that need care.
        c(
            "contains=line%2012".into(),
            all,
            all,
            vec![],
            Some("line 12"),
        ),
        c("contains=LINE".into(), all, all, vec![], Some("LINE")),
        // Combinations.
        c(
            "seq=900..2300&level=error".into(),
            (900, 2300),
            all,
            vec![Error],
            None,
        ),
        c(
            format!("level=info&contains=line%201&time={}..", base_ms + 1000),
            all,
            (base_ms + 1000, i64::MAX),
            vec![Info],
            Some("line 1"),
        ),
        c(
            format!(
                "seq=100..2450&time={}..{}&level=warn,debug&contains=9",
                base_ms + 50,
                base_ms + 2400
            ),
            (100, 2450),
            (base_ms + 50, base_ms + 2400),
            vec![Warn, Debug],
            Some("9"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_across_both_tiers() {
    let env = TestEnv::with_chunks_of("query-read", 1_000, |s| {
        // Small gzip members, so pages and filters cross member boundaries inside a chunk.
        s.archive.member_bytes = 16 << 10;
    })
    .await;
    let ep = "q-read-1";
    let other = "q-read-0";
    let base_ms = 1_764_800_000_000;
    let logs = make_logs(ep, 2_500, base_ms);
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archive = env.spawn_archive(ArchiveOptions::default());
    env.publish_in_batches(ep, &logs, 250, "m").await;
    let other_logs = make_logs(other, 30, base_ms);
    env.publish(other, &batch_body(other, &other_logs), Some("other-0"))
        .await;
    env.wait_for_episode(ep, 2_500, 2).await;
    env.wait_for_episode(other, 30, 0).await;
    ingest.stop().await.unwrap();
    archive.stop().await.unwrap();
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    assert_eq!(
        (snap.hot.len(), snap.chunks.len()),
        (500, 2),
        "both tiers hold logs"
    );
    let stored = snap.all_logs();
    // Each chunk is indexed gzip members, several of them (the reads below inflate only the
    // members they need).
    let mut indexes = Vec::new();
    for c in &snap.chunks {
        let bytes = env.objects.get(&c.src).await.unwrap();
        let index = logfleet::chunk::member_index(&bytes).expect("an indexed chunk");
        assert!(
            index.len() >= 5,
            "chunk {}: {} members",
            c.chunk_number,
            index.len()
        );
        indexes.push(index);
    }
    let total_members: usize = indexes.iter().map(Vec::len).sum();
    // A cold read of one log inflates one member: the cache then holds the object and that
    // member, nothing else.
    let episode = EpisodeId::parse(ep).unwrap();
    let svc = QueryService::connect(&env.settings).await.unwrap();
    let one = svc
        .read_page(&unfiltered_page(&episode, Order::Asc, 1_500, 1))
        .await
        .unwrap();
    assert_eq!(one.logs[0].sequence_number, 1_500);
    assert_eq!(one.logs[0].message, stored[1_500].log.message);
    let cached = svc.cache().stats();
    assert_eq!(cached.entries, 2, "object and one member: {cached:?}");
    // The last log of the same chunk lies in another member: one more entry, the object reused.
    let last = svc
        .read_page(&unfiltered_page(&episode, Order::Desc, 1_999, 1))
        .await
        .unwrap();
    assert_eq!(last.logs[0].message, stored[1_999].log.message);
    assert_eq!(svc.cache().stats().entries, 3, "{:?}", svc.cache().stats());
    // Eight readers missing the same page at once share one GetObject and one inflation of
    // each member the page needs.
    let fresh = Arc::new(QueryService::connect(&env.settings).await.unwrap());
    let page_q = unfiltered_page(&episode, Order::Asc, 300, 200);
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (svc, q) = (fresh.clone(), page_q.clone());
            tokio::spawn(async move { svc.read_page(&q).await.unwrap() })
        })
        .collect();
    for r in readers {
        let page = r.await.unwrap();
        let seqs: Vec<i64> = page.logs.iter().map(|l| l.sequence_number).collect();
        assert_eq!(seqs, (300..500).collect::<Vec<_>>());
    }
    let needed = indexes[0]
        .iter()
        .filter(|m| m.first_line < 500 && m.first_line + m.lines > 300)
        .count();
    let st = fresh.cache().stats();
    assert_eq!(
        (st.object_loads, st.member_loads),
        (1, needed as u64),
        "{st:?}"
    );

    let api = Api::start(&env.settings).await;
    let c = reqwest::Client::new();
    let base = api.base.clone();

    // Every filter and combination, both orders, with pages smaller than the result.
    for case in cases(base_ms) {
        let want: Vec<_> = stored
            .iter()
            .filter(|l| case.keep(l))
            .map(|l| expected_json(ep, l))
            .collect();
        for (order, limit) in [("asc", 97), ("desc", 251), ("asc", 10_000)] {
            let params = format!("order={order}&limit={limit}&{}", case.params);
            let got: Vec<_> = walk(&c, &base, ep, &params)
                .await
                .iter()
                .map(|r| record_key(ep, r))
                .collect();
            let mut want = want.clone();
            if order == "desc" {
                want.reverse();
            }
            assert!(
                got == want,
                "{params}: got {} logs, expected {} (first got {:?}, first expected {:?})",
                got.len(),
                want.len(),
                got.first().map(|g| g.0),
                want.first().map(|w| w.0)
            );
        }
    }

    // Cursor walks through the whole episode: no gaps, no repeats, either way.
    for (order, limit) in [("asc", 1), ("asc", 333), ("desc", 333), ("asc", 1000)] {
        if limit == 1 {
            // One log per page over a stretch that crosses a chunk boundary and the tiers.
            let got = walk(&c, &base, ep, "limit=1&seq=995..1005").await;
            assert_eq!(sequence_numbers(&got), (995..1005).collect::<Vec<_>>());
            let got = walk(&c, &base, ep, "limit=1&seq=1998..2003").await;
            assert_eq!(sequence_numbers(&got), (1998..2003).collect::<Vec<_>>());
            continue;
        }
        let got = walk(&c, &base, ep, &format!("order={order}&limit={limit}")).await;
        let seqs = sequence_numbers(&got);
        let mut want: Vec<i64> = (0..2_500).collect();
        if order == "desc" {
            want.reverse();
        }
        assert_eq!(seqs, want, "{order} walk with pages of {limit}");
    }

    // The default page size is 1,000 and a page says where the next one starts.
    let (s, page) = get(&c, &format!("{base}/v1/episodes/{ep}/logs")).await;
    assert_eq!(s, 200);
    assert_eq!(page["logs"].as_array().unwrap().len(), 1_000);
    assert_eq!(page["nextCursor"], 1_000);
    assert_eq!(page["order"], "asc");
    let logs_url = |params: &str| format!("{base}/v1/episodes/{ep}/logs?{params}");
    let (_, page) = get(&c, &logs_url("order=desc&limit=3")).await;
    assert_eq!(page["nextCursor"], 2_496);
    let (_, page) = get(&c, &logs_url("seq=2490..&limit=20")).await;
    assert_eq!(page["logs"].as_array().unwrap().len(), 10);
    assert!(
        page["nextCursor"].is_null(),
        "the last page says so: {page}"
    );
    // A full page cannot know it is the last: its cursor leads to an empty, final page.
    let (_, page) = get(&c, &logs_url("cursor=2490&limit=10")).await;
    assert_eq!(page["nextCursor"], 2_500);
    let (_, page) = get(&c, &logs_url("cursor=2500&limit=10")).await;
    assert_eq!(page["logs"].as_array().unwrap().len(), 0);
    assert!(page["nextCursor"].is_null());

    // Exports: NDJSON and JSONL.gz, whole and filtered.
    let want_all: Vec<_> = stored.iter().map(|l| expected_json(ep, l)).collect();
    let r = c
        .get(format!("{base}/v1/episodes/{ep}/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let ndjson = r.bytes().await.unwrap();
    let got: Vec<_> = ndjson_records(&ndjson)
        .iter()
        .map(|r| record_key(ep, r))
        .collect();
    assert!(
        got == want_all,
        "NDJSON export differs ({} lines)",
        got.len()
    );
    let r = c
        .get(format!("{base}/v1/episodes/{ep}/export?format=jsonl.gz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let gz = r.bytes().await.unwrap();
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut text)
        .unwrap();
    assert_eq!(
        text,
        ndjson.to_vec(),
        "JSONL.gz export is the NDJSON export"
    );
    let r = c
        .get(format!(
            "{base}/v1/episodes/{ep}/export?level=error&seq=500..2200&order=desc"
        ))
        .send()
        .await
        .unwrap();
    let body = r.bytes().await.unwrap();
    let got: Vec<_> = ndjson_records(&body)
        .iter()
        .map(|r| record_key(ep, r))
        .collect();
    let mut want: Vec<_> = stored
        .iter()
        .filter(|l| l.log.level == LogLevel::Error && (500..2200).contains(&l.sequence_number))
        .map(|l| expected_json(ep, l))
        .collect();
    want.reverse();
    assert!(got == want, "filtered export differs");

    // Stats, chunks, episodes.
    let (s, stats) = get(&c, &format!("{base}/v1/episodes/{ep}/stats")).await;
    assert_eq!(s, 200);
    let m = &snap.metadata;
    assert_eq!(stats["totalLogs"], 2_500);
    assert_eq!(stats["archivedLogs"], m.archived_logs);
    assert_eq!(stats["currentLogs"], m.current_logs);
    assert_eq!(stats["totalChunks"], 2);
    assert_eq!(stats["archivedS3Bytes"], m.archived_s3_bytes);
    for l in LogLevel::ALL {
        assert_eq!(stats["levelCounts"][l.as_str()], m.level_count(l), "{l}");
    }
    assert!(
        stats.get("recentMessages").is_none(),
        "the ledger is not shown"
    );
    let (_, chunks) = get(&c, &format!("{base}/v1/episodes/{ep}/chunks")).await;
    let list = chunks["chunks"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (info, rec) in list.iter().zip(&snap.chunks) {
        assert_eq!(info["chunkNumber"], rec.chunk_number);
        assert_eq!(info["startSequence"], rec.start_sequence);
        assert_eq!(info["endSequence"], rec.end_sequence);
        assert_eq!(info["sizeBytes"], rec.size_bytes);
        assert_eq!(info["src"], rec.src.as_str());
    }
    let (_, one) = get(&c, &format!("{base}/v1/episodes/{ep}/chunks?limit=1")).await;
    assert_eq!(one["nextCursor"], 1);
    let (_, rest) = get(
        &c,
        &format!("{base}/v1/episodes/{ep}/chunks?limit=1&cursor=1"),
    )
    .await;
    assert_eq!(rest["chunks"][0]["chunkNumber"], 1);
    assert!(rest["nextCursor"].is_null());
    let (_, p1) = get(&c, &format!("{base}/v1/episodes?limit=1")).await;
    assert_eq!(p1["episodes"][0]["episodeId"], other);
    assert_eq!(p1["nextCursor"], ep);
    let (_, p2) = get(&c, &format!("{base}/v1/episodes?limit=1&cursor={ep}")).await;
    assert_eq!(p2["episodes"][0]["episodeId"], ep);
    assert_eq!(p2["episodes"][0]["totalLogs"], 2_500);
    assert!(p2["nextCursor"].is_null());

    // OpenAPI, health.
    let (s, doc) = get(&c, &format!("{base}/openapi.json")).await;
    assert_eq!(s, 200);
    for path in [
        "/v1/episodes",
        "/v1/episodes/{episodeId}/logs",
        "/v1/episodes/{episodeId}/export",
        "/v1/episodes/{episodeId}/stats",
        "/v1/episodes/{episodeId}/chunks",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    assert_eq!(get(&c, &format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&c, &format!("{base}/readyz")).await.0, 200);
    // Auth is off: no token needed.
    assert_eq!(
        get(&c, &format!("{base}/v1/episodes/{ep}/stats")).await.0,
        200
    );

    // Every read above went through one cache large enough for the episode: each chunk object
    // was fetched from S3 once and each member inflated once, and /metrics says so.
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(&text, "logfleet_query_chunk_objects_fetched_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "logfleet_query_chunk_members_inflated_total"),
        Some(total_members as f64)
    );
    assert!(metric_value(&text, "logfleet_query_cache_hits_total").unwrap() > 100.0);
    assert!(metric_value(&text, "logfleet_query_cache_bytes").unwrap() > 0.0);

    // Bad input: a 4xx with a clear message.
    for (url, status, says) in [
        ("/v1/episodes/a..b/logs".to_string(), 400, "episodeId"),
        (
            format!("/v1/episodes/{}/logs", "x".repeat(129)),
            400,
            "episodeId",
        ),
        (
            "/v1/episodes/no-such-episode/logs".to_string(),
            404,
            "not found",
        ),
        (
            "/v1/episodes/no-such-episode/stats".to_string(),
            404,
            "not found",
        ),
        (format!("/v1/episodes/{ep}/logs?limit=0"), 400, "limit"),
        (format!("/v1/episodes/{ep}/logs?limit=10001"), 400, "limit"),
        (format!("/v1/episodes/{ep}/logs?limit=ten"), 400, "limit"),
        (
            format!("/v1/episodes/{ep}/logs?seq=abc"),
            400,
            "sequence range",
        ),
        (
            format!("/v1/episodes/{ep}/logs?seq=20..10"),
            400,
            "ends before",
        ),
        (
            format!("/v1/episodes/{ep}/logs?time=yesterday"),
            400,
            "time range",
        ),
        (
            format!("/v1/episodes/{ep}/logs?time=noon..later"),
            400,
            "RFC 3339",
        ),
        (
            format!("/v1/episodes/{ep}/logs?level=verbose"),
            400,
            "unknown level",
        ),
        (
            format!("/v1/episodes/{ep}/logs?order=sideways"),
            400,
            "order",
        ),
        (format!("/v1/episodes/{ep}/logs?cursor=-4"), 400, "cursor"),
        (
            format!("/v1/episodes/{ep}/logs?color=red"),
            400,
            "unknown parameter",
        ),
        (
            format!("/v1/episodes/{ep}/logs?limit=5&limit=6"),
            400,
            "more than once",
        ),
        (format!("/v1/episodes/{ep}/logs?contains="), 400, "contains"),
        (
            format!("/v1/episodes/{ep}/export?format=xml"),
            400,
            "format",
        ),
        ("/v1/episodes?limit=20000".to_string(), 400, "limit"),
        ("/v1/nothing-here".to_string(), 404, "no such route"),
    ] {
        let (s, body) = get(&c, &format!("{base}{url}")).await;
        assert_eq!(s, status, "{url}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(says),
            "{url}: message {msg:?} should mention {says:?}"
        );
        assert!(body["error"]["code"].is_string(), "{url}: {body}");
    }

    // Follow mode: the backlog, then new logs as they are ingested, in order.
    let r = c
        .get(format!(
            "{base}/v1/episodes/{ep}/logs?follow=true&backlog=5"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut stream = r.bytes_stream();
    let mut buf = Vec::new();
    let mut lines: Vec<Value> = Vec::new();
    let more = make_logs("q-follow", 300, base_ms + 10_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    let mut published = false;
    while lines.len() < 305 {
        let chunk = tokio::time::timeout(logfleet_testkit::STUCK_AFTER, stream.next())
            .await
            .expect("stuck waiting for followed logs")
            .expect("the follow stream stays open")
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
        if lines.len() >= 5 && !published {
            published = true;
            env.publish_in_batches(ep, &more, 60, "f").await;
        }
    }
    drop(stream);
    assert_eq!(
        sequence_numbers(&lines),
        (2_495..2_800).collect::<Vec<_>>(),
        "backlog then new logs, in order"
    );
    for (r, sent) in lines[5..].iter().zip(&more) {
        assert_eq!(r["message"], sent.message.as_str());
    }
    ingest.stop().await.unwrap();
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_and_last_accessed() {
    let env =
        TestEnv::with_chunks_of("query-auth", 200, |s| s.query.touch_interval_secs = 600).await;
    let ep = "q-auth";
    let logs = make_logs(ep, 450, 1_764_900_000_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archive = env.spawn_archive(ArchiveOptions::default());
    env.publish(ep, &batch_body(ep, &logs), Some("auth-0"))
        .await;
    env.wait_for_episode(ep, 450, 2).await;
    ingest.stop().await.unwrap();
    archive.stop().await.unwrap();

    // Auth on: only the right bearer token opens /v1; health stays open.
    let mut s = env.settings.clone();
    s.query.bearer_token = "t0k3n-for-this-test".into();
    let api = Api::start(&s).await;
    let c = reqwest::Client::new();
    let url = format!("{}/v1/episodes/{ep}/stats", api.base);
    let (st, body) = get(&c, &url).await;
    assert_eq!(st, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .get(&url)
        .header("authorization", "Basic dDBrM24tZm9yLXRoaXMtdGVzdA==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(&url)
        .bearer_auth("t0k3n-for-this-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/v1/episodes/{ep}/logs?seq=0..10", api.base))
        .bearer_auth("t0k3n-for-this-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&c, &format!("{}/healthz", api.base)).await.0, 200);
    assert_eq!(get(&c, &format!("{}/openapi.json", api.base)).await.0, 200);
    api.stop().await;

    // lastAccessed: back-date both records, read chunk 1 only, twice.
    let episode = EpisodeId::parse(ep).unwrap();
    let long_ago =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 3_600_000);
    for rec in env.store.chunks_of(&episode).await.unwrap() {
        env.store.touch_chunk(&rec, long_ago).await.unwrap();
    }
    let svc = QueryService::connect(&env.settings).await.unwrap();
    let q = unfiltered_page(&episode, Order::Asc, 250, 10);
    let before = bson::DateTime::now().timestamp_millis();
    let page = svc.read_page(&q).await.unwrap();
    assert_eq!(page.logs.first().map(|l| l.sequence_number), Some(250));
    let after_first = env.store.chunks_of(&episode).await.unwrap();
    assert_eq!(
        after_first[0].last_accessed, long_ago,
        "chunk 0 was not read"
    );
    let touched = after_first[1].last_accessed.timestamp_millis();
    assert!(
        touched >= before - 1_000,
        "chunk 1's lastAccessed is updated on read"
    );
    // Within the interval, further reads (cached or not, other processes too) write nothing.
    svc.read_page(&q).await.unwrap();
    svc.cache().clear();
    svc.read_page(&q).await.unwrap();
    let other = QueryService::connect(&env.settings).await.unwrap();
    other.read_page(&q).await.unwrap();
    let after = env.store.chunks_of(&episode).await.unwrap();
    assert_eq!(
        after[1].last_accessed.timestamp_millis(),
        touched,
        "no second write within the interval"
    );
    assert_eq!(after[0].last_accessed, long_ago);
    // The record is otherwise unchanged, with its BSON types (a full replacement).
    let mut expected = after_first[1].clone();
    expected.last_accessed = after[1].last_accessed;
    assert_eq!(after[1], expected);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_while_the_episode_is_archived() {
    let env =
        TestEnv::with_chunks_of("query-race", 500, |s| s.archive.member_bytes = 16 << 10).await;
    let ep = "q-race";
    let episode = EpisodeId::parse(ep).unwrap();
    let logs = make_logs(ep, 3_000, 1_765_000_000_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    env.publish_in_batches(ep, &logs, 500, "r").await;
    // No archive-worker yet: all 3,000 logs are hot, 6 chunks' worth over the threshold.
    env.wait_for_episode(ep, 3_000, 0).await;
    ingest.stop().await.unwrap();

    // 1. Deterministic race: the whole archive runs between a page's first LogMetadata read
    //    and its hot read, so the hot read finds the archived logs gone.
    let archiver = Arc::new(env.archiver("race-archiver"));
    let fired = Arc::new(AtomicBool::new(false));
    let hook = {
        let (archiver, fired, episode) = (archiver.clone(), fired.clone(), episode.clone());
        HookFn(move |point| {
            let (archiver, fired, episode) = (archiver.clone(), fired.clone(), episode.clone());
            Box::pin(async move {
                if point == FaultPoint::QueryBeforeHotRead && !fired.swap(true, Ordering::SeqCst) {
                    archiver
                        .archive_episode(&episode, ArchiveKind::Threshold)
                        .await
                        .expect("archive run");
                }
                FaultAction::Continue
            }) as futures::future::BoxFuture<'static, FaultAction>
        })
    };
    let svc = QueryService::connect(&env.settings)
        .await
        .unwrap()
        .with_faults(Faults::new(hook));
    let q = unfiltered_page(&episode, Order::Asc, 700, 1_000);
    let page = svc.read_page(&q).await.unwrap();
    assert!(
        fired.load(Ordering::SeqCst),
        "the archive ran inside the read"
    );
    let m = env.metadata(ep).await.unwrap();
    assert_eq!(
        m.archived_logs, 3_000,
        "everything was archived during the read"
    );
    let seqs: Vec<i64> = page.logs.iter().map(|l| l.sequence_number).collect();
    assert_eq!(seqs, (700..1_700).collect::<Vec<_>>(), "the page is whole");
    for l in &page.logs {
        assert_eq!(l.message, logs[l.sequence_number as usize].message);
    }

    // 2. A live archive-worker while cursor walks run (ingest adds more, the worker archives).
    let more = make_logs("q-race-more", 3_000, 1_765_000_100_000);
    let mut all = logs.clone();
    all.extend(more.iter().cloned());
    let ingest = env.spawn_ingest(IngestOptions::default());
    env.publish_in_batches(ep, &more, 500, "s").await;
    env.wait_for_episode(ep, 6_000, 6).await;
    ingest.stop().await.unwrap();
    let svc = Arc::new(QueryService::connect(&env.settings).await.unwrap());
    let archive = env.spawn_archive(ArchiveOptions::default());
    let overlapped = AtomicU32::new(0);
    let mut walks = 0;
    loop {
        let start = env.metadata(ep).await.unwrap();
        for (order, filter) in [
            (Order::Asc, LogFilter::default()),
            (Order::Desc, LogFilter::default()),
            (
                Order::Asc,
                LogFilter {
                    levels: vec![LogLevel::Warn, LogLevel::Fatal],
                    ..Default::default()
                },
            ),
        ] {
            let mut q = LogQuery {
                episode: episode.clone(),
                filter: filter.clone(),
                order,
                cursor: None,
                limit: 400,
            };
            let mut got = Vec::new();
            loop {
                let page = svc.read_page(&q).await.unwrap();
                got.extend(
                    page.logs
                        .iter()
                        .map(|l| (l.sequence_number, l.message.clone())),
                );
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            let mut want: Vec<(i64, String)> = all
                .iter()
                .enumerate()
                .filter(|(_, l): &(usize, &SentLog)| {
                    filter.levels.is_empty() || filter.levels.contains(&l.level)
                })
                .map(|(i, l)| (i as i64, l.message.clone()))
                .collect();
            if order == Order::Desc {
                want.reverse();
            }
            assert!(
                got == want,
                "walk {walks} {order:?} {:?}: {} logs, expected {}; duplicates: {}",
                filter.levels,
                got.len(),
                want.len(),
                got.len() - got.iter().map(|g| g.0).collect::<BTreeSet<_>>().len()
            );
        }
        walks += 1;
        let end = env.metadata(ep).await.unwrap();
        if end.archived_logs != start.archived_logs {
            overlapped.fetch_add(1, Ordering::Relaxed);
        }
        if start.archived_logs == 6_000 {
            break;
        }
    }
    eprintln!(
        "{walks} rounds of walks, {} overlapped an archive commit",
        overlapped.load(Ordering::Relaxed)
    );
    archive.stop().await.unwrap();
    env.snapshot(ep).await.assert_exact(&all);
    env.cleanup().await;
}

/// A query-api whose hot reads block while a gate is armed and not yet opened: the test holds
/// an export in flight across the stop.
struct GatedApi {
    api: Api,
    /// Hot reads block from when this is set...
    armed: Arc<AtomicBool>,
    /// ...until this turns true.
    open: tokio::sync::watch::Sender<bool>,
}

impl GatedApi {
    async fn start(settings: &Settings) -> Self {
        let armed = Arc::new(AtomicBool::new(false));
        let (open, opened) = tokio::sync::watch::channel(false);
        let hook = {
            let armed = armed.clone();
            HookFn(move |point| {
                let (armed, mut opened) = (armed.clone(), opened.clone());
                Box::pin(async move {
                    if point == FaultPoint::QueryBeforeHotRead && armed.load(Ordering::SeqCst) {
                        let _ = opened.wait_for(|o| *o).await;
                    }
                    FaultAction::Continue
                }) as futures::future::BoxFuture<'static, FaultAction>
            })
        };
        let svc = QueryService::connect(settings)
            .await
            .unwrap()
            .with_faults(Faults::new(hook));
        Self {
            api: Api::serve(svc).await,
            armed,
            open,
        }
    }
}

/// Reads a response body to its end: the bytes and whether it ended cleanly (its last chunk
/// came) or broke (an error from the connection).
async fn read_to_end(r: reqwest::Response) -> (Vec<u8>, Result<(), String>) {
    let mut body = Vec::new();
    let mut stream = r.bytes_stream();
    loop {
        match tokio::time::timeout(logfleet_testkit::STUCK_AFTER, stream.next())
            .await
            .expect("stuck reading a body")
        {
            Some(Ok(b)) => body.extend_from_slice(&b),
            Some(Err(e)) => return (body, Err(format!("{e:?}"))),
            None => return (body, Ok(())),
        }
    }
}

/// At SIGTERM (the shutdown future), a follow stream ends cleanly, and an export in flight runs
/// to its end within `query.drain_secs`; when that runs out first, the export's body breaks, so
/// the client cannot take a partial export for a whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_ends_follows_cleanly_and_lets_exports_finish() {
    let env = TestEnv::new("query-stop", |s| {
        s.ingest.archive_threshold = 1_000_000;
    })
    .await;
    let ep = "q-stop-1";
    // More than one export page, so the export reads again after the stop.
    let n = logfleet::query::EXPORT_PAGE + 1_000;
    let logs = make_logs(ep, n, 1_764_800_000_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    env.publish_in_batches(ep, &logs, 500, "s").await;
    env.wait_for_episode(ep, n as i64, 0).await;
    ingest.stop().await.unwrap();
    let c = reqwest::Client::new();

    // 1. Drain time enough: the export finishes after the stop, whole.
    let mut gated = GatedApi::start(&env.settings).await;
    let base = gated.api.base.clone();
    let follow = c
        .get(format!(
            "{base}/v1/episodes/{ep}/logs?follow=true&backlog=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let mut follow = follow.bytes_stream();
    let first = tokio::time::timeout(logfleet_testkit::STUCK_AFTER, follow.next())
        .await
        .expect("stuck waiting for the backlog")
        .expect("a backlog line")
        .unwrap();
    let line: Value = serde_json::from_slice(first.trim_ascii_end()).unwrap();
    assert_eq!(line["sequenceNumber"], n as i64 - 1);
    // The export's first hot read waits at the gate: it is in flight when the stop comes.
    gated.armed.store(true, Ordering::SeqCst);
    let export = c
        .get(format!("{base}/v1/episodes/{ep}/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    gated.api.begin_stop();
    // The follow stream ends with its last chunk (a clean end), not a broken connection.
    let mut rest = Vec::new();
    let end = loop {
        match tokio::time::timeout(logfleet_testkit::STUCK_AFTER, follow.next())
            .await
            .expect("the follow stream did not end at the stop")
        {
            Some(Ok(b)) => rest.extend_from_slice(&b),
            Some(Err(e)) => break Err(format!("{e:?}")),
            None => break Ok(()),
        }
    };
    assert_eq!(end, Ok(()), "the follow stream ends cleanly at the stop");
    assert!(rest.is_empty(), "no new logs were written");
    // Now the export reads on, after the server began to stop.
    gated.open.send_replace(true);
    let (body, end) = read_to_end(export).await;
    assert_eq!(end, Ok(()), "the export ends cleanly");
    let seqs = sequence_numbers(&ndjson_records(&body));
    assert_eq!(seqs, (0..n as i64).collect::<Vec<_>>(), "the whole export");
    gated.api.stop().await;

    // 2. No drain time: the export in flight is cut, and its body breaks.
    let mut settings = env.settings.clone();
    settings.query.drain_secs = 0;
    let mut gated = GatedApi::start(&settings).await;
    gated.armed.store(true, Ordering::SeqCst);
    let export = c
        .get(format!("{}/v1/episodes/{ep}/export", gated.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    gated.api.begin_stop();
    let (body, end) = read_to_end(export).await;
    assert!(end.is_err(), "a cut export must not end as if whole");
    assert!(body.is_empty(), "the export was cut at its first read");
    gated.api.stop().await;
    env.cleanup().await;
}
