//! Hostile input: every kind of malformed or adversarial message in the corpus is
//! refused with a clear reason, by the decoder and through a real ingest-worker, which keeps
//! running and keeps ingesting good messages.

use std::collections::HashSet;

use logfleet::amqp::REASON_HEADER;
use logfleet::config::LimitsSettings;
use logfleet::contract::{MessageProperties, decode};
use logfleet::ingest::IngestOptions;
use logfleet_testkit::hostile::corpus;
use logfleet_testkit::{TestEnv, batch_body, make_logs};

#[test]
fn the_corpus_has_over_30_kinds_each_refused_by_the_decoder_with_its_reason() {
    let cases = corpus();
    assert!(cases.len() >= 30, "{} kinds", cases.len());
    let names: HashSet<_> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "names are unique");
    let limits = LimitsSettings::default();
    for c in &cases {
        let props = MessageProperties {
            message_id: c.message_id.as_deref(),
            routing_key: None,
            content_type: c.content_type,
            content_encoding: c.content_encoding,
        };
        match decode(&c.body, props, &limits) {
            Ok(m) => panic!("{}: accepted as {} logs", c.name, m.logs.len()),
            Err(reason) => {
                let text = reason.to_string();
                assert!(
                    text.contains(c.reason_contains),
                    "{}: reason {text:?} lacks {:?}",
                    c.name,
                    c.reason_contains
                );
                assert!(text.len() <= 1_024, "{}: reason is bounded", c.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_dead_letters_the_whole_corpus_and_keeps_ingesting() {
    let env = TestEnv::new("hostile", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    let cases = corpus();
    let good = make_logs("hostile-good", 500, 1_765_000_000_000);
    let mut good_parts = good.chunks(10).enumerate();
    for c in &cases {
        env.publish_raw("hostile", &c.body, c.properties()).await;
        if let Some((i, part)) = good_parts.next() {
            env.publish(
                "hostile",
                &batch_body("hostile", part),
                Some(&format!("good-{i}")),
            )
            .await;
        }
    }
    for (i, part) in good_parts {
        env.publish(
            "hostile",
            &batch_body("hostile", part),
            Some(&format!("good-{i}")),
        )
        .await;
    }
    env.wait_for_episode("hostile", 500, 0).await;
    env.wait_for_dead_letters("the whole corpus dead-lettered", cases.len())
        .await;
    let dead = env.drain_dead_letters().await;
    assert_eq!(dead.len(), cases.len());
    for c in &cases {
        let (headers, _) = dead
            .iter()
            .find(|(_, body)| *body == c.body)
            .unwrap_or_else(|| panic!("{} is not in the dead-letter queue", c.name));
        let reason = &headers[REASON_HEADER];
        assert!(
            reason.contains(c.reason_contains),
            "{}: reason {reason:?} lacks {:?}",
            c.name,
            c.reason_contains
        );
    }
    assert!(!ingest.is_finished(), "the worker is still running");
    env.snapshot("hostile").await.assert_exact(&good);
    ingest.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[test]
fn corpus_bodies_are_distinct_so_each_dead_letter_is_identified() {
    let cases = corpus();
    let bodies: HashSet<_> = cases.iter().map(|c| c.body.clone()).collect();
    assert_eq!(bodies.len(), cases.len());
}
