//! The read subcommands through the `logctl` binary: `logs` (filters, paging, table and JSON),
//! `tail` and `tail -f`, `export` (JSONL.gz), `stats`, `chunks`, `episodes`, and a bad episode id.
//! Data placed by the real workers: two chunks archived in S3 and 200 logs hot in MongoDB.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use logfleet::archive::ArchiveOptions;
use logfleet::domain::LogLevel;
use logfleet::ingest::IngestOptions;
use logfleet_testkit::{TestEnv, make_logs, sequence_numbers};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_subcommands_through_the_binary() {
    let env = TestEnv::with_chunks_of("logctl-read", 500, |_| {}).await;
    let ep = "cli-read";
    let logs = make_logs(ep, 1_200, 1_765_100_000_000);
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archive = env.spawn_archive(ArchiveOptions::default());
    env.publish_in_batches(ep, &logs, 300, "c").await;
    env.wait_for_episode(ep, 1_200, 2).await;
    archive.stop().await.unwrap();

    // logs --json --all: every page, across both tiers, in order.
    let (out, stdout, _) = common::run(
        &env,
        &["logs", ep, "--json", "--all", "--limit", "170"],
        None,
    )
    .await;
    assert!(out.status.success());
    let pages: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pages.len(), 8, "1,200 logs in pages of 170");
    let records: Vec<Value> = pages
        .iter()
        .flat_map(|p| p["logs"].as_array().unwrap().clone())
        .collect();
    assert_eq!(sequence_numbers(&records), (0..1_200).collect::<Vec<_>>());
    for (r, sent) in records.iter().zip(&logs) {
        assert_eq!(r["message"], sent.message.as_str());
        assert_eq!(r["level"], sent.level.as_str());
        assert_eq!(r.get("metadata"), sent.metadata.as_ref());
    }

    // Filters combined, descending.
    let (out, stdout, _) = common::run(
        &env,
        &[
            "logs",
            ep,
            "--json",
            "--all",
            "--seq",
            "300..1100",
            "--level",
            "error,fatal",
            "--contains",
            "line 9",
            "--order",
            "desc",
        ],
        None,
    )
    .await;
    assert!(out.status.success());
    let got: Vec<i64> = stdout
        .lines()
        .flat_map(|l| {
            let p: Value = serde_json::from_str(l).unwrap();
            sequence_numbers(p["logs"].as_array().unwrap())
        })
        .collect();
    let want: Vec<i64> = (300..1_100)
        .rev()
        .filter(|&i| {
            let l = &logs[i as usize];
            matches!(l.level, LogLevel::Error | LogLevel::Fatal) && l.message.contains("line 9")
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // The table: no colour codes when stdout is not a terminal; a hint for the next page.
    let (out, stdout, stderr) = common::run(
        &env,
        &["logs", ep, "--seq", "495..505", "--limit", "5"],
        None,
    )
    .await;
    assert!(out.status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0].trim_start().starts_with("495 "), "{}", lines[0]);
    assert!(lines[4].contains("cli-read line 499"), "{}", lines[4]);
    assert!(
        lines[0].contains("DEBUG") || lines[0].contains("INFO"),
        "{}",
        lines[0]
    );
    assert!(!stdout.contains('\x1b'), "no ANSI codes into a pipe");
    assert!(stderr.contains("--cursor 500"), "{stderr}");

    // tail -n: the latest logs, oldest first.
    let (out, stdout, _) = common::run(&env, &["tail", ep, "-n", "4", "--json"], None).await;
    assert!(out.status.success());
    let tail: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sequence_numbers(&tail), vec![1_196, 1_197, 1_198, 1_199]);

    // export to JSONL.gz: the whole episode.
    let dir = std::env::temp_dir().join(format!("logctl-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cli-read.jsonl.gz");
    let (out, _, stderr) =
        common::run(&env, &["export", ep, "--out", file.to_str().unwrap()], None).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("exported 1200 logs"), "{stderr}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(exported == records, "the export holds exactly the logs");
    std::fs::remove_dir_all(&dir).unwrap();

    // stats, chunks, episodes.
    let (out, stdout, _) = common::run(&env, &["stats", ep, "--json"], None).await;
    assert!(out.status.success());
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            stats["totalLogs"].as_i64(),
            stats["archivedLogs"].as_i64(),
            stats["currentLogs"].as_i64(),
            stats["totalChunks"].as_i64()
        ),
        (Some(1_200), Some(1_000), Some(200), Some(2))
    );
    let (out, stdout, _) = common::run(&env, &["stats", ep], None).await;
    assert!(out.status.success());
    assert!(stdout.contains("archived logs (S3)      1000"), "{stdout}");
    let (out, stdout, _) = common::run(&env, &["chunks", ep, "--json"], None).await;
    assert!(out.status.success());
    let chunks: Value = serde_json::from_str(&stdout).unwrap();
    let list = chunks["chunks"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["startSequence"], 500);
    assert_eq!(list[1]["endSequence"], 999);
    let (out, stdout, _) = common::run(&env, &["episodes", "--json"], None).await;
    assert!(out.status.success());
    let eps: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(eps["episodes"][0]["episodeId"], ep);
    assert_eq!(eps["episodes"][0]["totalLogs"], 1_200);

    // Bad input: a clear message and a failure status.
    let (out, _, stderr) = common::run(&env, &["logs", "bad..id"], None).await;
    assert!(!out.status.success());
    assert!(stderr.contains("episodeId"), "{stderr}");
    let (out, _, stderr) = common::run(&env, &["logs", ep, "--time", "soon"], None).await;
    assert!(!out.status.success());
    assert!(stderr.contains("time range"), "{stderr}");
    let (out, _, stderr) = common::run(&env, &["logs", ep, "--limit", "10001"], None).await;
    assert!(!out.status.success());
    assert!(stderr.contains("limit"), "{stderr}");

    // tail -f: new logs appear as they are ingested.
    let mut child = common::logctl(&env, &["tail", ep, "-f", "-n", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let mut followed = Vec::new();
    let more = make_logs("cli-follow", 120, 1_765_100_100_000);
    let mut published = false;
    while followed.len() < 122 {
        let v = tokio::time::timeout(logfleet_testkit::STUCK_AFTER, rx.recv())
            .await
            .expect("stuck waiting for tail -f")
            .expect("tail -f keeps running");
        followed.push(v);
        if followed.len() == 2 && !published {
            published = true;
            env.publish_in_batches(ep, &more, 40, "f").await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        sequence_numbers(&followed),
        (1_198..1_320).collect::<Vec<_>>()
    );
    for (r, sent) in followed[2..].iter().zip(&more) {
        assert_eq!(r["message"], sent.message.as_str());
    }
    ingest.stop().await.unwrap();
    env.cleanup().await;
}
