//! Property tests of the producer contract (the stable-toolchain stand-in for fuzzing; the
//! cargo-fuzz target in `fuzz/` runs the same decoder for those with nightly):
//! - the decoder never panics, whatever the bytes or JSON shapes;
//! - every valid message decodes to exactly what was sent, metadata keys in their order;
//! - an accepted episodeId is never a path, a MongoDB operator, or anything a metric label or a
//!   routing key mangles.

use logfleet_contract::{EpisodeId, LimitsSettings, LogLevel, MessageProperties, decode};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$._\\x00]{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Metadata that the contract accepts: nested objects and arrays of plain values, keys without
/// a leading `$` or NUL.
fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "[^\\x00]{0,16}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z][a-z0-9_.]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z][a-z0-9_.]{0,6}", value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn episode_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_:-]{0,20}(\\.[A-Za-z0-9_:-]{1,8}){0,3}"
}

fn level_text() -> impl Strategy<Value = (LogLevel, String)> {
    (prop::sample::select(LogLevel::ALL.to_vec()), any::<u8>()).prop_map(|(l, mask)| {
        let text: String = l
            .as_str()
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 8) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        (l, text)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&body, MessageProperties::default(), &LimitsSettings::default());
    }

    #[test]
    fn decoding_arbitrary_json_never_panics(v in json_value(), ep in prop::option::of(".{0,10}")) {
        let mut body = v;
        if let (Some(ep), Value::Object(m)) = (ep, &mut body) {
            m.insert("episodeId".into(), json!(ep));
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let _ = decode(&bytes, MessageProperties::default(), &LimitsSettings::default());
    }

    #[test]
    fn valid_messages_decode_to_what_was_sent(
        ep in episode_id(),
        logs in prop::collection::vec((0i64..4_102_444_800_000, level_text(), "[^\\x00]{0,40}", prop::option::of(metadata())), 1..20),
        message_id in prop::option::of("[ -~]{1,64}"),
    ) {
        let body = json!({
            "episodeId": ep,
            "logs": logs.iter().map(|(ts, (_, level), msg, meta)| {
                let mut l = json!({"timestamp": ts, "level": level, "message": msg});
                if let Some(m) = meta { l["metadata"] = Value::Object(m.clone()); }
                l
            }).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let props = MessageProperties { message_id: message_id.as_deref(), ..Default::default() };
        let m = decode(&bytes, props, &LimitsSettings::default()).unwrap();
        prop_assert_eq!(m.episode_id.as_str(), ep.as_str());
        prop_assert_eq!(m.logs.len(), logs.len());
        if let Some(id) = &message_id { prop_assert_eq!(m.message_id.as_str(), id.as_str()); }
        for (got, (ts, (level, _), msg, meta)) in m.logs.iter().zip(&logs) {
            prop_assert_eq!(got.timestamp_ms, *ts);
            prop_assert_eq!(got.level, *level);
            prop_assert_eq!(&got.message, msg);
            prop_assert_eq!(&got.metadata, meta);
            let json_len = meta.as_ref().map_or(0, |m| serde_json::to_vec(m).unwrap().len());
            prop_assert_eq!(got.metadata_json_len, json_len);
        }
    }

    #[test]
    fn accepted_episode_ids_are_never_paths_or_operators(raw in ".{0,40}|[A-Za-z0-9./$:_-]{1,40}") {
        if let Ok(ep) = EpisodeId::parse(&raw) {
            prop_assert_eq!(ep.as_str(), raw.as_str());
            prop_assert!(!raw.contains('/') && !raw.contains("..") && !raw.starts_with('.'));
            prop_assert!(!raw.starts_with('$') && !raw.contains('$'));
            prop_assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)));
            prop_assert!(!raw.is_empty() && raw.len() <= 128);
        }
    }
}
