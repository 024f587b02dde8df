//! The message body on the wire, as one type that both producers serialize and the
//! ingest-worker deserializes: a batch `{"episodeId", "logs": [...]}` or a single log
//! `{"episodeId", "timestamp", "level", "message", "metadata"}`. Both forms share one struct, so
//! a body that mixes them is caught ([`crate::decode`] refuses it).
//!
//! Every field is optional here: what is missing is reported by the decoder with the field's
//! name, and unknown fields and duplicate keys are refused by serde.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A message body in either form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WireMessage {
    /// The episode; also the routing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode_id: Option<String>,
    /// The batch form's logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<WireLog>>,
    /// The single-log form's timestamp: RFC 3339 or epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Value>,
    /// The single-log form's level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The single-log form's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The single-log form's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// One log of a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLog {
    /// RFC 3339 or epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Value>,
    /// `info`, `warn`, `error`, `debug` or `fatal`, any case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The log message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Arbitrary metadata, a JSON object (`null` is the same as absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl WireMessage {
    /// A batch body.
    pub fn batch(episode_id: &str, logs: Vec<WireLog>) -> Self {
        Self {
            episode_id: Some(episode_id.to_owned()),
            logs: Some(logs),
            ..Default::default()
        }
    }
}

impl WireLog {
    /// A log with an epoch-milliseconds timestamp.
    pub fn new(
        timestamp_ms: i64,
        level: &str,
        message: &str,
        metadata: Option<Map<String, Value>>,
    ) -> Self {
        Self {
            timestamp: Some(Value::from(timestamp_ms)),
            level: Some(level.to_owned()),
            message: Some(message.to_owned()),
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_serializes_and_deserializes_both_forms() {
        let batch = WireMessage::batch("ep", vec![WireLog::new(5, "info", "m", None)]);
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(
            text,
            r#"{"episodeId":"ep","logs":[{"timestamp":5,"level":"info","message":"m"}]}"#
        );
        assert_eq!(serde_json::from_str::<WireMessage>(&text).unwrap(), batch);
        let single: WireMessage =
            serde_json::from_str(r#"{"episodeId":"e","timestamp":"2026-01-01T00:00:00Z","level":"warn","message":"x","metadata":{"b":1,"a":2}}"#).unwrap();
        assert!(single.logs.is_none());
        let keys: Vec<&String> = single.metadata.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["b", "a"], "metadata keys keep the order sent");
        assert!(serde_json::from_str::<WireMessage>(r#"{"episodeId":"e","x":1}"#).is_err());
    }
}
