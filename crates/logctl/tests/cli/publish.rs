//! `logctl publish`: NDJSON from a file and from standard input, through the producer library,
//! ingested exactly once and in order; invalid lines skipped and reported, or with `--strict`
//! nothing published at all.

use crate::common;

use logfleet::ingest::IngestOptions;
use logfleet_testkit::{SentLog, TestEnv, batch_body, make_logs, single_body};

fn ndjson(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logctl_publish_from_a_file_and_from_stdin_is_exactly_once() {
    let env = TestEnv::new("logctl-publish", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let a = make_logs("file-a", 600, 1_764_000_000_000);
    let b = make_logs("file-b", 410, 1_764_100_000_000);
    // Single-log lines for both episodes, interleaved, one batch line, a blank line and an
    // invalid one (line 5).
    let mut lines: Vec<String> = Vec::new();
    for i in 0..a.len() {
        lines.push(single_body("pub-a", &a[i]).to_string());
        if i < 400 {
            lines.push(single_body("pub-b", &b[i]).to_string());
        }
    }
    lines.insert(
        4,
        r#"{"episodeId":"pub-a","timestamp":1,"level":"verbose","message":"x"}"#.into(),
    );
    lines.insert(9, String::new());
    lines.push(batch_body("pub-b", &b[400..]).to_string());
    let path = std::env::temp_dir().join(format!("{}.ndjson", env.settings.amqp.prefix));
    std::fs::write(&path, ndjson(&lines)).unwrap();

    let (out, stdout, stderr) = common::run(
        &env,
        &[
            "publish",
            path.to_str().unwrap(),
            "--batch-logs",
            "64",
            "--quiet",
        ],
        None,
    )
    .await;
    assert!(
        !out.status.success(),
        "a skipped line makes the exit status 1"
    );
    assert!(stderr.contains("line 5: log 0: unknown level"), "{stderr}");
    assert!(
        stdout.contains("logs (producer id") && stdout.contains(", 1010 logs"),
        "{stdout}"
    );
    assert!(stdout.contains("1 invalid skipped"), "{stdout}");
    for (ep, logs) in [("pub-a", &a), ("pub-b", &b)] {
        env.wait_for_episode(ep, logs.len() as i64, 0).await;
        let snap = env.snapshot(ep).await;
        snap.assert_exact(logs);
        let in_order: Vec<_> = snap.all_logs().into_iter().map(|l| l.log).collect();
        assert!(&in_order == logs, "{ep}: line order kept");
    }
    std::fs::remove_file(&path).unwrap();

    // --strict with an invalid line publishes nothing, then a valid run from stdin.
    let leaked = make_logs("strict-leak", 30, 1_764_200_000_000);
    let mut bad: Vec<String> = leaked
        .iter()
        .map(|l| single_body("pub-c", l).to_string())
        .collect();
    bad.push("{not json".into());
    let (out, _, stderr) = common::run(
        &env,
        &["publish", "--strict", "--quiet"],
        Some(&ndjson(&bad)),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 31") && stderr.contains("nothing was published"),
        "{stderr}"
    );
    let good = make_logs("stdin", 250, 1_764_300_000_000);
    let lines: Vec<String> = good
        .iter()
        .map(|l| single_body("pub-c", l).to_string())
        .collect();
    let (out, stdout, _) = common::run(
        &env,
        &["publish", "-", "--strict", "--quiet", "--linger-ms", "0"],
        Some(&ndjson(&lines)),
    )
    .await;
    assert!(out.status.success());
    assert!(stdout.contains(", 250 logs"), "{stdout}");
    env.wait_for("pub-c ingested", || async {
        env.metadata("pub-c")
            .await
            .is_some_and(|m| m.total_logs >= 250)
    })
    .await;
    // Had the strict run leaked anything, it would be here too.
    let snap = env.snapshot("pub-c").await;
    snap.assert_exact(&good);
    let in_order: Vec<SentLog> = snap.all_logs().into_iter().map(|l| l.log).collect();
    assert!(in_order == good, "stdin order kept");
    ingest.stop().await.unwrap();
    env.cleanup().await;
}
