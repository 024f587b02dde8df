//! `logctl lock show|release`, `logctl archive flush` (and its alias `flush`) and
//! `logctl topology [--check]` against the real services.

use crate::common;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use logfleet::amqp::Topology;
use logfleet::archive::ArchiveOptions;
use logfleet::ingest::IngestOptions;
use logfleet::model::ArchiveLease;
use logfleet_testkit::{SentLog, TestEnv, batch_body, make_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_lock_is_shown_released_by_force_then_the_episode_flushes() {
    let env = TestEnv::new("logctl-lock", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let ep = "lock-ep";
    let first = make_logs("lock", 30, 1_764_000_000_000);
    env.publish(ep, &batch_body(ep, &first), Some("l-1")).await;
    env.wait_for_episode(ep, 30, 0).await;

    // A crashed worker's lock with an hour left on its lease.
    let episode = logfleet::domain::EpisodeId::parse(ep).unwrap();
    let stuck = env
        .store
        .update_metadata(&episode, None, |m| {
            m.is_archiving = true;
            m.archive_lease = Some(ArchiveLease {
                owner: "crashed-worker".into(),
                expires_at: bson::DateTime::from_millis(
                    bson::DateTime::now().timestamp_millis() + 3_600_000,
                ),
            });
            Ok::<_, logfleet::mongo::MongoError>(logfleet::mongo::Decision::Write(()))
        })
        .await
        .unwrap()
        .expect("episode exists");
    assert!(stuck.written);
    let stuck = stuck.metadata;

    let (out, stdout, _) = common::run(&env, &["lock", "show", ep], None).await;
    assert!(out.status.success());
    assert!(stdout.contains("owner:        crashed-worker"), "{stdout}");
    assert!(stdout.contains("expired:      no"), "{stdout}");
    assert!(stdout.contains("live, expires in"), "{stdout}");

    let (out, _, _) = common::run(&env, &["lock", "release", ep], None).await;
    assert!(!out.status.success(), "release needs --force");
    assert!(env.metadata(ep).await.unwrap().is_archiving);

    let (out, stdout, _) = common::run(&env, &["lock", "release", ep, "--force"], None).await;
    assert!(out.status.success());
    assert!(
        stdout.contains("released the archive lock") && stdout.contains("crashed-worker"),
        "{stdout}"
    );
    let after = env.metadata(ep).await.unwrap();
    assert!(!after.is_archiving && after.archive_lease.is_none());
    assert_eq!(
        after.version,
        stuck.version + 1,
        "one compare-and-set write"
    );
    assert_eq!(after.total_logs, 30, "nothing else changed");
    let (out, stdout, _) = common::run(&env, &["lock", "release", ep, "--force"], None).await;
    assert!(out.status.success());
    assert!(stdout.contains("not locked"), "{stdout}");
    assert_eq!(env.metadata(ep).await.unwrap().version, after.version);

    // The finished episode's partial chunk, through `archive flush`, twice; the old alias
    // `logctl flush` is gone (one command for one job).
    let archive = env.spawn_archive(ArchiveOptions::default());
    let (out, _, _) = common::run(&env, &["archive", "flush", ep], None).await;
    assert!(out.status.success());
    env.wait_for_episode(ep, 30, 1).await;
    env.snapshot(ep).await.assert_exact(&first);
    let second = make_logs("lock-2", 12, 1_764_100_000_000);
    env.publish(ep, &batch_body(ep, &second), Some("l-2")).await;
    env.wait_for_episode(ep, 42, 1).await;
    let (out, _, _) = common::run(&env, &["flush", ep], None).await;
    assert!(!out.status.success(), "`logctl flush` is no command");
    let (out, _, _) = common::run(&env, &["archive", "flush", ep], None).await;
    assert!(out.status.success());
    env.wait_for_episode(ep, 42, 2).await;
    let all: Vec<SentLog> = first.iter().chain(&second).cloned().collect();
    env.snapshot(ep).await.assert_exact(&all);
    archive.stop().await.unwrap();
    ingest.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topology_check_reports_missing_names_and_declare_is_idempotent() {
    let env = TestEnv::new("logctl-topology", |_| {}).await;
    let (out, stdout, _) = common::run(&env, &["topology", "--check"], None).await;
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("topology complete"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "ok       queue {}",
            env.topology.dead_letter_queue
        )),
        "{stdout}"
    );

    // A prefix nobody declared: --check fails and declares nothing.
    let prefix = format!("{}.fresh", env.settings.amqp.prefix);
    let with_prefix = |args: &[&str]| {
        let mut c = common::logctl(&env, args);
        c.env("LOGFLEET__AMQP__PREFIX", &prefix);
        c
    };
    let out = with_prefix(&["topology", "--check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(
        stdout.contains(&format!("MISSING  exchange {prefix}.logs")),
        "{stdout}"
    );
    let out = with_prefix(&["topology", "--check"]).output().unwrap();
    assert!(!out.status.success(), "the check declared nothing");
    for _ in 0..2 {
        let out = with_prefix(&["topology"]).output().unwrap();
        assert!(out.status.success(), "declaring twice is fine");
    }
    let out = with_prefix(&["topology", "--check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("MISSING"), "{stdout}");
    assert!(
        stdout.contains(&format!("ok       exchange {prefix}.logs (x-modulus-hash)")),
        "{stdout}"
    );

    let mut s = env.settings.amqp.clone();
    s.prefix = prefix.clone();
    let t = Topology::new(&s);
    let ch = env.conn.create_channel().await.unwrap();
    // A logs exchange of another type (an earlier logfleet's) is named as wrong.
    ch.exchange_delete(
        t.logs_exchange.as_str().into(),
        ExchangeDeleteOptions::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        t.logs_exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let out = with_prefix(&["topology", "--check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("WRONG    exchange {prefix}.logs")),
        "{stdout}"
    );

    // Remove the fresh names.
    for q in t.partition_queues.iter().chain([
        &t.dead_letter_queue,
        &t.archive_queue,
        &t.archive_dead_letter_queue,
    ]) {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for e in [
        &t.logs_exchange,
        &t.dead_letter_exchange,
        &t.archive_exchange,
        &t.archive_dead_letter_exchange,
    ] {
        ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    env.cleanup().await;
}
