//! `logctl dlq`: after a bad deploy (an ingest-worker whose limits dead-letter valid messages)
//! list and peek consume nothing, a filtered, limited and dry-run replay move exactly what they
//! say, the data ends exact, a message that fails again returns with its history, purge asks
//! first; and a replay killed halfway and rerun loses and doubles nothing.

use crate::common;

use logfleet::config::LimitsSettings;
use logfleet::ingest::IngestOptions;
use logfleet_testkit::{SentLog, TestEnv, make_logs};
use serde_json::json;

fn bad_deploy(s: &mut logfleet::config::Settings) {
    // A deploy whose limit refuses the producers' 20-log batches.
    s.limits.max_logs_per_message = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_after_a_bad_deploy_is_exact_and_failures_keep_their_history() {
    let mut env = TestEnv::new("dlq-replay", bad_deploy).await;
    let dlq = env.topology.dead_letter_queue.clone();
    let bad_worker = env.spawn_ingest(IngestOptions::default());
    let a = make_logs("a", 600, 1_764_000_000_000);
    let b = make_logs("b", 200, 1_764_100_000_000);
    let small = make_logs("small", 5, 1_764_050_000_000);
    env.publish_in_batches("dlq-a", &small, 20, "small").await; // within the bad limit: ingested
    env.publish_in_batches("dlq-a", &a, 20, "a").await;
    env.publish_in_batches("dlq-b", &b, 20, "b").await;
    env.publish(
        "dlq-b",
        &json!({"episodeId": "dlq-b", "timestamp": 1, "level": "verbose", "message": "m"}),
        Some("really-bad"),
    )
    .await;
    env.wait_for("41 dead letters", || async {
        env.queue_depth(&dlq).await == 41
    })
    .await;
    bad_worker.stop().await.unwrap();

    // list and peek consume nothing.
    let (out, stdout, _) = common::run(&env, &["dlq", "list"], None).await;
    assert!(out.status.success());
    assert!(stdout.contains(&format!("{dlq}: 41 messages")), "{stdout}");
    assert_eq!(
        stdout.matches("batch has 20 logs; the limit is 10").count(),
        40
    );
    assert_eq!(stdout.matches("unknown level").count(), 1);
    assert_eq!(stdout.matches(" dlq-b ").count(), 11, "{stdout}");
    let (_, stdout, _) = common::run(
        &env,
        &["dlq", "list", "--since", "2100-01-01T00:00:00Z"],
        None,
    )
    .await;
    assert!(stdout.contains("0 of 41 read match the filter"), "{stdout}");
    let (out, stdout, _) = common::run(&env, &["dlq", "peek", "--episode", "dlq-b"], None).await;
    assert!(out.status.success());
    assert!(
        stdout.contains("11 of 41 read match the filter"),
        "{stdout}"
    );
    assert!(stdout.contains("message_id:   really-bad"), "{stdout}");
    assert_eq!(
        common::settled_depth(&env, &dlq, 41).await,
        41,
        "list and peek consumed nothing"
    );

    // A replay needs --all or a filter; a dry run moves nothing.
    let (out, _, _) = common::run(&env, &["dlq", "replay"], None).await;
    assert!(!out.status.success());
    let (out, stdout, _) = common::run(&env, &["dlq", "replay", "--all", "--dry-run"], None).await;
    assert!(out.status.success());
    assert!(stdout.contains("would replay 41 of 41"), "{stdout}");
    assert_eq!(common::settled_depth(&env, &dlq, 41).await, 41);

    // The fixed deploy; replay by episode and reason with a count limit, then by reason.
    env.settings.limits = LimitsSettings::default();
    let ingest = env.spawn_ingest(IngestOptions::default());
    let (out, stdout, _) = common::run(
        &env,
        &[
            "dlq",
            "replay",
            "--episode",
            "dlq-b",
            "--reason",
            "limit is 10",
            "--limit",
            "4",
            "--quiet",
        ],
        None,
    )
    .await;
    assert!(out.status.success());
    assert!(stdout.contains("replayed 4 of"), "{stdout}");
    assert_eq!(common::settled_depth(&env, &dlq, 37).await, 37);
    let (out, stdout, _) = common::run(
        &env,
        &["dlq", "replay", "--reason", "LIMIT IS 10", "--quiet"],
        None,
    )
    .await;
    assert!(out.status.success());
    assert!(stdout.contains("replayed 36 of 37"), "{stdout}");
    let all_a: Vec<SentLog> = small.iter().chain(&a).cloned().collect();
    env.wait_for_episode("dlq-a", 605, 0).await;
    env.wait_for_episode("dlq-b", 200, 0).await;
    env.snapshot("dlq-a").await.assert_exact(&all_a);
    env.snapshot("dlq-b").await.assert_exact(&b);
    assert_eq!(common::settled_depth(&env, &dlq, 1).await, 1);

    // The really bad one fails again and comes back with its history.
    let (out, stdout, _) = common::run(&env, &["dlq", "replay", "--all", "--quiet"], None).await;
    assert!(out.status.success());
    assert!(stdout.contains("replayed 1 of 1"), "{stdout}");
    env.wait_for("the failing message back in the DLQ", || async {
        env.queue_depth(&dlq).await == 1
            && env
                .metadata("dlq-b")
                .await
                .is_some_and(|m| m.total_logs == 200)
    })
    .await;
    let (_, stdout, _) = common::run(&env, &["dlq", "peek"], None).await;
    assert!(stdout.contains("message_id:   really-bad"), "{stdout}");
    assert!(stdout.contains("replays:      1"), "{stdout}");
    assert!(
        stdout.contains("history[0]:   log 0: unknown level"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reason:       log 0: unknown level"),
        "{stdout}"
    );

    // Purge asks first.
    let (out, _, stderr) = common::run(&env, &["dlq", "purge"], Some("no\n")).await;
    assert!(!out.status.success());
    assert!(stderr.contains("Type `yes` to confirm"), "{stderr}");
    assert_eq!(common::settled_depth(&env, &dlq, 1).await, 1);
    let (out, stdout, _) = common::run(&env, &["dlq", "purge"], Some("yes\n")).await;
    assert!(out.status.success());
    assert!(stdout.contains("purged 1 messages"), "{stdout}");
    assert_eq!(common::settled_depth(&env, &dlq, 0).await, 0);
    // Nothing more was ingested by the failing replay.
    env.snapshot("dlq-b").await.assert_exact(&b);
    ingest.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_killed_halfway_and_rerun_loses_and_doubles_nothing() {
    let mut env = TestEnv::new("dlq-kill", bad_deploy).await;
    let dlq = env.topology.dead_letter_queue.clone();
    let bad_worker = env.spawn_ingest(IngestOptions::default());
    let logs = make_logs("kill", 2_400, 1_764_200_000_000);
    env.publish_in_batches("dlq-kill", &logs, 20, "k").await;
    env.wait_for("120 dead letters", || async {
        env.queue_depth(&dlq).await == 120
    })
    .await;
    bad_worker.stop().await.unwrap();
    env.settings.limits = LimitsSettings::default();
    let ingest = env.spawn_ingest(IngestOptions::default());

    let mut replay = common::logctl(&env, &["dlq", "replay", "--all", "--rate", "10", "--quiet"])
        .spawn()
        .expect("logctl starts");
    env.wait_for("some messages replayed", || async {
        env.queue_depth(&dlq).await <= 105
    })
    .await;
    replay.kill().expect("SIGKILL");
    replay.wait().unwrap();
    // Its unacked message, if any, returns to the DLQ with the connection.
    common::connection_gone(&env, &format!("logctl-dlq {}", env.settings.amqp.prefix)).await;
    let left = common::settled_depth(&env, &dlq, 1).await;
    // At most the one message it held comes back.
    assert!(left > 0 && left <= 106, "killed halfway: {left} left");

    let (out, stdout, _) = common::run(&env, &["dlq", "replay", "--all", "--quiet"], None).await;
    assert!(out.status.success());
    assert!(
        stdout.contains(&format!("replayed {left} of {left}")),
        "{stdout}"
    );
    // Every message left was replayed, and nothing came back.
    assert_eq!(common::settled_depth(&env, &dlq, 0).await, 0);
    env.wait_for_episode("dlq-kill", 2_400, 0).await;
    env.snapshot("dlq-kill").await.assert_exact(&logs);
    ingest.stop().await.unwrap();
    env.cleanup().await;
}
