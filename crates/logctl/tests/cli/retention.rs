//! `logctl retention plan|run|set|clear` against the real services: what a plan shows is what
//! a run expires, an episode's own limit replaces the global one, bad ages are refused.

use crate::common;

use logfleet::archive::ArchiveOptions;
use logfleet::domain::EpisodeId;
use logfleet::ingest::IngestOptions;
use logfleet::object_store::ObjectStore;
use logfleet_testkit::{TestEnv, batch_body, make_logs};
use serde_json::Value;

/// Timestamps of an "old" episode (2025-11-25), as `make_logs` gives them.
const OLD_MS: i64 = 1_764_100_000_000;

fn planned(stdout: &str) -> Vec<(String, i64, i64)> {
    let plan: Value = serde_json::from_str(stdout).expect("the plan is JSON");
    plan["expiries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["episodeId"].as_str().unwrap().to_owned(),
                p["chunks"].as_i64().unwrap(),
                p["logs"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_plan_run_and_overrides_through_the_binary() {
    let env = TestEnv::with_chunks_of("logctl-retention", 25, |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archive = env.spawn_archive(ArchiveOptions::default());
    let old = make_logs("old", 60, OLD_MS);
    env.publish_in_batches("old", &old, 20, "o").await;
    let young = make_logs("young", 10, bson::DateTime::now().timestamp_millis());
    env.publish("young", &batch_body("young", &young), Some("y-0"))
        .await;
    env.wait_for_episode("old", 60, 2).await;
    env.wait_for_episode("young", 10, 0).await;
    archive.stop().await.expect("clean stop");
    ingest.stop().await.expect("clean stop");

    let plan_30d = ["retention", "plan", "--episode-max-age", "30d", "--json"];
    let (out, stdout, _) = common::run(&env, &plan_30d, None).await;
    assert!(out.status.success());
    assert_eq!(planned(&stdout), vec![("old".to_owned(), 2, 60)]);
    // The settings have no limit: nothing is due.
    let (out, stdout, _) = common::run(&env, &["retention", "plan", "--json"], None).await;
    assert!(out.status.success());
    assert!(planned(&stdout).is_empty(), "{stdout}");
    let (out, stdout, _) = common::run(
        &env,
        &["retention", "plan", "--episode-max-age", "30d"],
        None,
    )
    .await;
    assert!(out.status.success());
    assert!(
        stdout.contains("would expire: 1 episodes (1 whole), 2 chunks, 60 logs"),
        "{stdout}"
    );

    // Its own limit replaces the global one: kept forever, then the global limit again.
    let (out, stdout, _) = common::run(
        &env,
        &["retention", "set", "old", "--max-age", "never"],
        None,
    )
    .await;
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("episode max age never"), "{stdout}");
    let (_, stdout, _) = common::run(&env, &plan_30d, None).await;
    assert!(planned(&stdout).is_empty(), "{stdout}");
    let (out, _, _) = common::run(&env, &["retention", "clear", "old"], None).await;
    assert!(out.status.success());
    assert!(
        env.metadata("old")
            .await
            .unwrap()
            .retention_override
            .is_none()
    );

    // Bad input is refused with the reason, and changes nothing.
    let (out, _, stderr) =
        common::run(&env, &["retention", "run", "--episode-max-age", "3w"], None).await;
    assert!(!out.status.success());
    assert!(stderr.contains("unknown unit"), "{stderr}");
    let (out, _, stderr) = common::run(
        &env,
        &["retention", "set", "no-such-episode", "--max-age", "1d"],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr.contains("no LogMetadata for no-such-episode"),
        "{stderr}"
    );
    assert_eq!(env.metadata("old").await.unwrap().expired_logs, 0);

    let (out, stdout, _) = common::run(
        &env,
        &["retention", "run", "--episode-max-age", "30d", "--quiet"],
        None,
    )
    .await;
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("expired 1 of 1 planned: 1 whole episodes, 2 chunks, 60 logs"),
        "{stdout}"
    );
    let m = env.metadata("old").await.unwrap();
    assert_eq!(
        (m.expired_logs, m.expired_chunks, m.current_logs),
        (60, 2, 0)
    );
    let episode = EpisodeId::parse("old").unwrap();
    assert_eq!(env.store.count_entries_from(&episode, 0).await.unwrap(), 0);
    assert!(env.store.chunks_of(&episode).await.unwrap().is_empty());
    assert!(env.objects.list("logs/old/").await.unwrap().is_empty());
    env.snapshot("young").await.assert_exact(&young);
    let (_, stdout, _) = common::run(&env, &plan_30d, None).await;
    assert!(planned(&stdout).is_empty(), "nothing left: {stdout}");
    env.cleanup().await;
}
