//! Dead letters: bad messages are dead-lettered with a reason while good ones keep flowing.

use lapin::BasicProperties;
use logfleet::amqp::{REASON_HEADER, ROUTING_KEY_HEADER};
use logfleet::ingest::IngestOptions;
use logfleet_testkit::{TestEnv, batch_body, make_logs};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_messages_are_dead_lettered_with_a_reason_and_good_ones_flow() {
    let env = TestEnv::new("dlq", |s| {
        s.limits.max_message_bytes = 64 * 1024;
        s.limits.max_logs_per_message = 50;
    })
    .await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let json_props = |id: &str| {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(id.into())
    };
    let good_log = json!({"timestamp": 1_764_000_000_000_i64, "level": "info", "message": "x"});
    // (message id, routing key, body, properties, expected words of the reason)
    let bad: Vec<(&str, &str, Vec<u8>, BasicProperties, &str)> = vec![
        ("bad-json", "dlq-ep", b"{\"episodeId\": \"dlq-ep\", ".to_vec(), json_props("bad-json"), "invalid JSON"),
        ("bad-type", "dlq-ep", br#"{"episodeId":"dlq-ep","timestamp":1,"level":"info","message":5}"#.to_vec(), json_props("bad-type"), "expected a string"),
        ("bad-level", "dlq-ep", br#"{"episodeId":"dlq-ep","timestamp":1,"level":"verbose","message":"m"}"#.to_vec(), json_props("bad-level"), "unknown level"),
        ("bad-size", "dlq-ep", serde_json::to_vec(&json!({"episodeId": "dlq-ep", "timestamp": 1, "level": "info", "message": "m".repeat(70_000)})).unwrap(), json_props("bad-size"), "the limit is 65536"),
        ("bad-count", "dlq-ep", serde_json::to_vec(&json!({"episodeId": "dlq-ep", "logs": vec![good_log.clone(); 51]})).unwrap(), json_props("bad-count"), "51 logs; the limit is 50"),
        ("bad-episode", "x", br#"{"episodeId":"../etc","timestamp":1,"level":"info","message":"m"}"#.to_vec(), json_props("bad-episode"), "episodeId"),
        ("bad-operator", "x", br#"{"episodeId":{"$gt":""},"timestamp":1,"level":"info","message":"m"}"#.to_vec(), json_props("bad-operator"), "invalid JSON"),
        ("bad-ctype", "dlq-ep", br#"{"episodeId":"dlq-ep","timestamp":1,"level":"info","message":"m"}"#.to_vec(), BasicProperties::default().with_content_type("text/plain".into()).with_message_id("bad-ctype".into()), "content_type"),
        ("bad-utf8", "dlq-ep", b"{\"episodeId\":\"dlq-ep\",\"message\":\"\xff\"}".to_vec(), json_props("bad-utf8"), "UTF-8"),
        ("bad-missing", "dlq-ep", br#"{"episodeId":"dlq-ep","level":"info","message":"m"}"#.to_vec(), json_props("bad-missing"), "timestamp"),
        // Another episode's routing key: through another partition, its order would be lost.
        ("bad-routing", "other-ep", br#"{"episodeId":"dlq-ep","timestamp":1,"level":"info","message":"routed elsewhere"}"#.to_vec(), json_props("bad-routing"), "is not the body's episodeId"),
        ("bad-no-id", "dlq-ep", br#"{"episodeId":"dlq-ep","timestamp":2,"level":"info","message":"no id"}"#.to_vec(), BasicProperties::default().with_content_type("application/json".into()), "message_id is missing"),
        ("bad-dotted-key", "dlq-ep", br#"{"episodeId":"dlq-ep","timestamp":3,"level":"info","message":"m","metadata":{"lr.base":0.1}}"#.to_vec(), json_props("bad-dotted-key"), "'.'"),
    ];
    let bodies: std::collections::HashSet<_> = bad.iter().map(|b| &b.2).collect();
    assert_eq!(
        bodies.len(),
        bad.len(),
        "each bad body is told apart by its bytes"
    );
    let good = make_logs("dlq-good", 300, 1_764_200_000_000);
    for (i, part) in good.chunks(20).enumerate() {
        env.publish(
            "dlq-ep",
            &batch_body("dlq-ep", part),
            Some(&format!("good-{i}")),
        )
        .await;
        if let Some((_, rk, body, props, _)) = bad.get(i) {
            env.publish_raw(rk, body, props.clone()).await;
        }
    }
    assert!(
        good.chunks(20).len() >= bad.len(),
        "every bad message is published"
    );
    env.wait_for_episode("dlq-ep", 300, 0).await;
    env.wait_for_dead_letters("all bad messages dead-lettered", bad.len())
        .await;
    let dead = env.drain_dead_letters().await;
    assert_eq!(dead.len(), bad.len());
    for (id, rk, body, _, words) in &bad {
        let (headers, dead_body) = dead
            .iter()
            .find(|(_, b)| b == body)
            .unwrap_or_else(|| panic!("{id} is not in the dead-letter queue"));
        let reason = headers
            .get(REASON_HEADER)
            .unwrap_or_else(|| panic!("{id} has no reason"));
        assert!(
            reason.contains(words),
            "{id}: reason {reason:?} lacks {words:?}"
        );
        assert_eq!(
            headers.get(ROUTING_KEY_HEADER).map(String::as_str),
            Some(*rk),
            "{id}: routing key kept for replay"
        );
        assert_eq!(dead_body, body, "{id}: body kept as sent");
    }
    env.snapshot("dlq-ep").await.assert_exact(&good);
    // The worker is still alive and consuming.
    assert!(!ingest.is_finished());
    env.publish(
        "dlq-ep",
        &batch_body("dlq-ep", &make_logs("after", 1, 1_764_300_000_000)),
        Some("after"),
    )
    .await;
    env.wait_for_episode("dlq-ep", 301, 0).await;
    ingest.stop().await.expect("clean stop");
    env.cleanup().await;
}
