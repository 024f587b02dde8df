//! The producer library (`logfleet-client`) against the real fleet: batches within the
//! published limits, linger, confirms, exactly-once ingest and order; retries with the same
//! message ids after the broker drops the connection or refuses publishes; a clear error once
//! the retries run out, with nothing dropped.

use std::time::Duration;

use lapin::options::ExchangeDeleteOptions;
use logfleet::domain::EpisodeId;
use logfleet::ingest::IngestOptions;
use logfleet_client::{ClientError, Log, Producer, ProducerConfig};
use logfleet_testkit::{SentLog, TestEnv, make_logs};

fn to_log(l: &SentLog) -> Log {
    Log {
        timestamp_ms: l.timestamp_ms,
        level: l.level,
        message: l.message.clone(),
        metadata: l.metadata.as_ref().and_then(|m| m.as_object().cloned()),
    }
}

fn config(env: &TestEnv) -> ProducerConfig {
    let s = &env.settings;
    let mut c = ProducerConfig::for_fleet(&s.amqp.url, &s.amqp.prefix, s.limits.clone());
    c.connection_name = format!("test-producer-{}", env.settings.amqp.prefix);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_batches_within_the_limits_and_ingest_is_exactly_once_and_ordered() {
    // Tight limits: a batch that broke them would be dead-lettered.
    let env = TestEnv::new("producer", |s| {
        s.limits.max_logs_per_message = 40;
        s.limits.max_message_bytes = 6 * 1024;
    })
    .await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let mut cfg = config(&env);
    cfg.max_batch_logs = 1_000;
    cfg.linger = Some(Duration::from_millis(20));
    let producer = Producer::connect(cfg).await.expect("producer connects");

    // Linger alone publishes a batch that never fills up.
    let (c, c_logs) = (
        EpisodeId::parse("prod-c").unwrap(),
        make_logs("c", 7, 1_764_000_000_000),
    );
    for l in &c_logs {
        producer.send(&c, to_log(l)).await.unwrap();
    }
    env.wait_for_episode("prod-c", 7, 0).await;

    let (a, a_logs) = (
        EpisodeId::parse("prod-a").unwrap(),
        make_logs("a", 1_000, 1_764_100_000_000),
    );
    let (b, b_logs) = (
        EpisodeId::parse("prod-b").unwrap(),
        make_logs("b", 500, 1_764_200_000_000),
    );
    for (i, l) in a_logs.iter().enumerate() {
        producer.send(&a, to_log(l)).await.unwrap();
        if let Some(l) = b_logs.get(i) {
            producer.send(&b, to_log(l)).await.unwrap();
        }
    }
    // Refused at the edge, nothing buffered.
    let before = producer.stats();
    let bad = producer
        .send(&a, Log::new(1, logfleet::domain::LogLevel::Info, "a\0b"))
        .await;
    assert!(matches!(bad, Err(ClientError::Invalid { .. })), "{bad:?}");
    let huge = producer
        .send(
            &a,
            Log::new(1, logfleet::domain::LogLevel::Info, "x".repeat(7_000)),
        )
        .await;
    assert!(
        matches!(
            huge,
            Err(ClientError::Invalid {
                reason: logfleet::contract::RejectReason::MessageTooLarge { .. },
                ..
            })
        ),
        "{huge:?}"
    );
    assert_eq!(producer.stats().pending_logs, before.pending_logs);

    let stats = producer.flush().await.expect("flush confirmed");
    assert_eq!(stats.confirmed_logs, 1_507);
    assert_eq!(stats.pending_logs, 0);
    // At most 40 logs per message: at least ceil(1000/40) + ceil(500/40) + 1 messages.
    assert!(stats.confirmed_messages > 25 + 13, "{stats:?}");

    for (ep, logs) in [
        ("prod-a", &a_logs),
        ("prod-b", &b_logs),
        ("prod-c", &c_logs),
    ] {
        env.wait_for_episode(ep, logs.len() as i64, 0).await;
        let snap = env.snapshot(ep).await;
        snap.assert_exact(logs);
        let in_order: Vec<_> = snap.all_logs().into_iter().map(|l| l.log).collect();
        assert!(&in_order == logs, "{ep}: send order kept");
    }
    assert_eq!(
        env.queue_depth(&env.topology.dead_letter_queue).await,
        0,
        "no batch broke the published limits"
    );
    producer.close().await.expect("clean close");
    ingest.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_producer_id_and_sequence_make_the_same_batches_which_are_ingested_once() {
    let env = TestEnv::new("producer-ids", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let ep = EpisodeId::parse("prod-ids").unwrap();
    let logs = make_logs("ids", 900, 1_764_300_000_000);
    // A producer restarted with its id and sequence re-sends what was not confirmed: the
    // batches and their ids come out the same, so the second round is absorbed.
    for _ in 0..2 {
        let mut cfg = config(&env);
        cfg.producer_id = "fixed-producer".into();
        cfg.first_sequence = 1_000;
        cfg.linger = None;
        cfg.max_batch_logs = 100;
        let producer = Producer::connect(cfg).await.unwrap();
        for l in &logs {
            producer.send(&ep, to_log(l)).await.unwrap();
        }
        let stats = producer.close().await.unwrap();
        assert_eq!((stats.confirmed_messages, stats.confirmed_logs), (9, 900));
    }
    // A third, different producer after both: its logs land after all of the above.
    let tail = make_logs("tail", 10, 1_764_400_000_000);
    let producer = Producer::connect(config(&env)).await.unwrap();
    for l in &tail {
        producer.send(&ep, to_log(l)).await.unwrap();
    }
    producer.close().await.unwrap();
    let all: Vec<SentLog> = logs.iter().chain(&tail).cloned().collect();
    env.wait_for_episode("prod-ids", 910, 0).await;
    env.snapshot("prod-ids").await.assert_exact(&all);
    ingest.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_survives_a_dropped_connection_and_reports_exhausted_retries_without_dropping() {
    let env = TestEnv::new("producer-retry", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let ep = EpisodeId::parse("prod-retry").unwrap();
    let logs = make_logs("retry", 3_000, 1_764_500_000_000);
    let mut cfg = config(&env);
    cfg.linger = None;
    cfg.max_batch_logs = 50;
    cfg.backoff_initial = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    let name = cfg.connection_name.clone();
    let producer = Producer::connect(cfg).await.unwrap();
    let (first, rest) = logs.split_at(1_000);
    for l in first {
        producer.send(&ep, to_log(l)).await.unwrap();
    }
    // Drop the connection while the producer keeps publishing.
    // The closing quote makes the prefix match the exact connection name.
    let dropper = tokio::task::spawn_blocking(move || {
        logfleet_testkit::broker_drops_connections(&format!("{name}\""))
    });
    for l in rest {
        producer.send(&ep, to_log(l)).await.unwrap();
    }
    assert!(
        dropper.await.unwrap() >= 1,
        "the producer's connection was dropped"
    );
    let stats = producer
        .flush()
        .await
        .expect("confirmed after reconnecting");
    assert_eq!(stats.confirmed_logs, 3_000);
    env.wait_for_episode("prod-retry", 3_000, 0).await;
    let snap = env.snapshot("prod-retry").await;
    snap.assert_exact(&logs);
    let in_order: Vec<_> = snap.all_logs().into_iter().map(|l| l.log).collect();
    assert!(in_order == logs, "order kept across the reconnect");
    producer.close().await.unwrap();

    // The broker refuses every publish (the exchange is gone): a clear error after the bounded
    // tries, the batch kept; once the exchange is back, the next flush delivers it.
    let mut cfg = config(&env);
    cfg.linger = None;
    cfg.max_attempts = 3;
    cfg.backoff_initial = Duration::from_millis(10);
    let producer = Producer::connect(cfg).await.unwrap();
    let ch = env.conn.create_channel().await.unwrap();
    ch.exchange_delete(
        env.topology.logs_exchange.as_str().into(),
        ExchangeDeleteOptions::default(),
    )
    .await
    .unwrap();
    let more = make_logs("more", 20, 1_764_600_000_000);
    for l in &more {
        producer.send(&ep, to_log(l)).await.unwrap();
    }
    match producer.flush().await {
        Err(ClientError::Publish {
            attempts,
            pending_batches,
            pending_logs,
            ..
        }) => assert_eq!((attempts, pending_batches, pending_logs), (3, 1, 20)),
        other => panic!("expected a publish error, got {other:?}"),
    }
    assert_eq!(producer.stats().confirmed_logs, 0);
    env.topology.declare(&env.conn).await.unwrap();
    let stats = producer
        .close()
        .await
        .expect("delivered once the exchange is back");
    assert_eq!(stats.confirmed_logs, 20);
    let all: Vec<SentLog> = logs.iter().chain(&more).cloned().collect();
    env.wait_for_episode("prod-retry", 3_020, 0).await;
    env.snapshot("prod-retry").await.assert_exact(&all);

    // A producer for an exchange that does not exist is refused at connect time.
    let mut cfg = config(&env);
    cfg.exchange = format!("{}.nope", env.settings.amqp.prefix);
    assert!(matches!(
        Producer::connect(cfg).await,
        Err(ClientError::Connect(_))
    ));
    ingest.stop().await.unwrap();
    env.cleanup().await;
}
