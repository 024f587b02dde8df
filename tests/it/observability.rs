//! The workers' `/metrics`, `/healthz` and `/readyz`: counters move as the work happens.

use std::sync::Arc;

use lapin::BasicProperties;
use logfleet::archive::ArchiveOptions;
use logfleet::health::HttpListen;
use logfleet::ingest::IngestOptions;
use logfleet::metrics::{ArchiveMetrics, IngestMetrics};
use logfleet_testkit::{TestEnv, batch_body, free_listener, http_get, make_logs, metric_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_the_workers_did() {
    let env = TestEnv::with_chunks_of("metrics", 100, |_| {}).await;
    let (il, iaddr) = free_listener();
    let (al, aaddr) = free_listener();
    let im = Arc::new(IngestMetrics::default());
    let am = Arc::new(ArchiveMetrics::default());
    let ingest = env.spawn_ingest(IngestOptions {
        metrics: im.clone(),
        http: Some(HttpListen::Listener(il)),
        ..Default::default()
    });
    let archive = env.spawn_archive(ArchiveOptions {
        metrics: am.clone(),
        http: Some(HttpListen::Listener(al)),
        ..Default::default()
    });

    let (status, body) = http_get(iaddr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let ep = "metrics";
    let logs = make_logs(ep, 250, 1_764_900_000_000);
    env.publish_in_batches(ep, &logs, 25, "m").await;
    // One message published twice, two invalid ones.
    env.publish(ep, &batch_body(ep, &logs[..25]), Some("m-0"))
        .await;
    let json = BasicProperties::default().with_content_type("application/json".into());
    env.publish_raw(ep, b"{oops", json.clone().with_message_id("bad-1".into()))
        .await;
    env.publish_raw(
        ep,
        br#"{"episodeId":"metrics","timestamp":1,"level":"loud","message":"x"}"#,
        json.with_message_id("bad-2".into()),
    )
    .await;
    env.wait_for_episode(ep, 250, 2).await;
    env.wait_for_dead_letters("both invalid messages dead-lettered", 2)
        .await;
    env.wait_for("all 13 messages acked", || async {
        im.messages_acked.get() == 13
    })
    .await;

    let (status, text) = http_get(iaddr, "/metrics").await;
    assert_eq!(status, 200);
    let v = |name: &str| {
        metric_value(&text, name).unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(v("logfleet_ingest_messages_consumed_total"), 13.0);
    assert_eq!(v("logfleet_ingest_messages_acked_total"), 13.0);
    assert_eq!(v("logfleet_ingest_logs_inserted_total"), 250.0);
    assert_eq!(
        v("logfleet_ingest_logs_consumed_total"),
        275.0,
        "the duplicate's logs were consumed too"
    );
    assert_eq!(
        v("logfleet_ingest_messages_dead_lettered_total{reason=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(
        v("logfleet_ingest_messages_dead_lettered_total{reason=\"invalid_log\"}"),
        1.0
    );
    assert!(v("logfleet_ingest_threshold_events_total") >= 1.0);
    let hot_added = v("logfleet_ingest_hot_bytes_added_total");
    assert!(v("logfleet_ingest_insert_seconds_count") >= 1.0);
    assert_eq!(
        v("logfleet_ingest_partitions_owned"),
        4.0,
        "one worker owns all 4 partitions"
    );
    assert_eq!(
        v("logfleet_ingest_prefetch_in_use"),
        0.0,
        "nothing held when idle"
    );

    let (status, text) = http_get(aaddr, "/metrics").await;
    assert_eq!(status, 200);
    let v = |name: &str| {
        metric_value(&text, name).unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(v("logfleet_archive_chunks_written_total"), 2.0);
    assert_eq!(v("logfleet_archive_logs_archived_total"), 200.0);
    // The hot tier's size measure: what ingest added (the duplicate once) less what archiving
    // took off is what the episode holds hot, which `assert_exact` ties to its entries' sizes.
    let hot_archived = v("logfleet_archive_hot_bytes_archived_total");
    let snap = env.snapshot(ep).await;
    snap.assert_exact(&logs);
    let hot_now = snap.metadata.current_mongo_bytes as f64;
    assert!(
        hot_archived > 0.0 && hot_now > 0.0,
        "{hot_archived} {hot_now}"
    );
    assert_eq!(
        hot_added,
        hot_archived + hot_now,
        "hot bytes added = archived + held"
    );
    assert_eq!(v("logfleet_archive_chunk_upload_seconds_count"), 2.0);
    assert_eq!(v("logfleet_archive_chunk_bytes_count"), 2.0);
    assert!(v("logfleet_archive_runs_total{outcome=\"done\"}") >= 1.0);

    let (status, body) = http_get(aaddr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ready["checks"],
        serde_json::json!({"rabbitmq": "ok", "mongodb": "ok", "s3": "ok"})
    );
    let (status, _) = http_get(iaddr, "/readyz").await;
    assert_eq!(status, 200);

    ingest.stop().await.expect("clean stop");
    archive.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_query_api_counts_requests_by_route_template() {
    let env = TestEnv::new("query-metrics", |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(query_api::run(env.settings.clone(), listener, async {
        let _ = stopped.await;
    }));
    for ep in ["no-such-a", "no-such-b"] {
        let (status, _) = http_get(addr, &format!("/v1/episodes/{ep}/stats")).await;
        assert_eq!(status, 404);
    }
    let (status, _) = http_get(addr, "/v1/episodes/..%2Fx/stats").await;
    assert_eq!(status, 400);
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric_value(
            &text,
            "logfleet_query_requests_total{route=\"/v1/episodes/{episode}/stats\",status=\"404\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "logfleet_query_requests_total{route=\"/v1/episodes/{episode}/stats\",status=\"400\"}"
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("no-such-a"),
        "episode ids never become label values"
    );
    let _ = stop.send(());
    api.await.unwrap().expect("clean stop");
    env.cleanup().await;
}
