//! Property tests of what logfleet does with a decoded message:
//! - an accepted episodeId never escapes its S3 key prefix;
//! - metadata survives the BSON round trip into a chunk line unchanged (numbers stay numbers,
//!   keys keep their order).

use logfleet::chunk::{chunk_key, metadata_to_json};
use logfleet::contract::EpisodeId;
use logfleet::model::{metadata_json_len, metadata_to_bson};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Metadata that the contract accepts: nested objects and arrays of plain values, keys without
/// a leading `$`, a `.` or a NUL.
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
            prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn metadata_survives_the_bson_round_trip(meta in metadata()) {
        let doc = metadata_to_bson(&meta).unwrap();
        prop_assert_eq!(metadata_to_json(&doc), Value::Object(meta.clone()));
        prop_assert_eq!(metadata_json_len(&doc), serde_json::to_vec(&meta).unwrap().len());
    }

    #[test]
    fn accepted_episode_ids_stay_inside_their_key_prefix(raw in ".{0,40}|[A-Za-z0-9./$:_-]{1,40}", n in 0i32..1_000_000) {
        if let Ok(ep) = EpisodeId::parse(&raw) {
            let key = chunk_key("logs", &ep, n, "0badcafe");
            let parts: Vec<&str> = key.split('/').collect();
            prop_assert_eq!(parts.len(), 3, "{}", key);
            prop_assert_eq!(parts[0], "logs");
            prop_assert_eq!(parts[1], raw.as_str());
            prop_assert!(parts.iter().all(|p| *p != "." && *p != ".." && !p.is_empty()));
            // What an accepted id is otherwise (no operator, nothing a label or a routing key
            // mangles) is the contract's: logfleet-contract's properties test it.
        }
    }
}
