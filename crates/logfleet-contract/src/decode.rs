//! Decoding and validating one AMQP message body into plain, validated logs.
//!
//! A body is either a batch `{"episodeId", "logs": [...]}` or a single log
//! `{"episodeId", "timestamp", "level", "message", "metadata"}`. Everything a producer can get
//! wrong is reported as a [`RejectReason`], which the ingest-worker writes into the dead-letter
//! header `x-logfleet-reason`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::{DomainError, EpisodeId, LogLevel, MessageId};
use crate::limits::LimitsSettings;
use crate::wire::{WireLog, WireMessage};

/// Earliest accepted log timestamp (1970-01-01T00:00:00Z), in epoch milliseconds.
pub const MIN_TIMESTAMP_MS: i64 = 0;
/// First timestamp refused as "far in the future" (2100-01-01T00:00:00Z), in epoch milliseconds.
pub const MAX_TIMESTAMP_MS: i64 = 4_102_444_800_000;

/// Why a message cannot be ingested. Its `Display` is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    #[error("content_type {0:?} is not application/json")]
    ContentType(String),
    #[error("content_encoding {0:?} is not supported; send uncompressed JSON")]
    ContentEncoding(String),
    #[error("message is {size} bytes; the limit is {limit}")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Domain(#[from] DomainError),
    #[error("body mixes a batch (`logs`) with single-log fields")]
    MixedForms,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("batch has no logs")]
    EmptyBatch,
    #[error("batch has {count} logs; the limit is {limit}")]
    TooManyLogs { count: usize, limit: usize },
    #[error("log {index}: {reason}")]
    Log { index: usize, reason: String },
}

impl RejectReason {
    /// A short, bounded name of the reason, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::ContentType(_) => "content_type",
            RejectReason::ContentEncoding(_) => "content_encoding",
            RejectReason::MessageTooLarge { .. } => "message_too_large",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::Json(_) => "invalid_json",
            RejectReason::Domain(DomainError::UnknownLevel(_)) => "unknown_level",
            RejectReason::Domain(DomainError::BadMessageId) => "bad_message_id",
            RejectReason::Domain(_) => "bad_episode_id",
            RejectReason::MixedForms => "mixed_forms",
            RejectReason::Missing(_) => "missing_field",
            RejectReason::EmptyBatch => "empty_batch",
            RejectReason::TooManyLogs { .. } => "too_many_logs",
            RejectReason::Log { .. } => "invalid_log",
        }
    }
}

/// One validated log line, not yet numbered.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLog {
    /// When the log was created, in epoch milliseconds (within the accepted range).
    pub timestamp_ms: i64,
    pub level: LogLevel,
    pub message: String,
    /// Its metadata, keys in the order the producer sent them.
    pub metadata: Option<Map<String, Value>>,
    /// Length of `metadata` as compact JSON (0 without metadata), measured once here.
    pub metadata_json_len: usize,
}

/// One validated producer message.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMessage {
    pub episode_id: EpisodeId,
    /// Idempotency key: a redelivered or re-published message reuses the range of its first try.
    pub message_id: MessageId,
    pub logs: Vec<NewLog>,
}

/// The AMQP properties the decoder looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageProperties<'a> {
    pub message_id: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
}

/// Decodes and validates one message body against the producer contract and the limits.
pub fn decode(
    body: &[u8],
    props: MessageProperties<'_>,
    limits: &LimitsSettings,
) -> Result<LogMessage, RejectReason> {
    if let Some(ct) = props.content_type {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(RejectReason::ContentType(ct.chars().take(64).collect()));
        }
    }
    if let Some(enc) = props.content_encoding
        && !enc.is_empty()
        && !enc.eq_ignore_ascii_case("identity")
    {
        return Err(RejectReason::ContentEncoding(
            enc.chars().take(64).collect(),
        ));
    }
    if body.len() > limits.max_message_bytes {
        return Err(RejectReason::MessageTooLarge {
            size: body.len(),
            limit: limits.max_message_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| RejectReason::NotUtf8)?;
    let env: WireMessage =
        serde_json::from_str(text).map_err(|e| RejectReason::Json(e.to_string()))?;
    let message_id = match props.message_id {
        Some(id) => MessageId::parse(id)?,
        None => MessageId::digest_of(body),
    };
    let episode_id = EpisodeId::parse(&env.episode_id.ok_or(RejectReason::Missing("episodeId"))?)?;

    let single_fields = env.timestamp.is_some()
        || env.level.is_some()
        || env.message.is_some()
        || env.metadata.is_some();
    let wire_logs = match env.logs {
        Some(_) if single_fields => return Err(RejectReason::MixedForms),
        Some(logs) => logs,
        None => vec![WireLog {
            timestamp: env.timestamp,
            level: env.level,
            message: env.message,
            metadata: env.metadata,
        }],
    };
    if wire_logs.is_empty() {
        return Err(RejectReason::EmptyBatch);
    }
    if wire_logs.len() > limits.max_logs_per_message {
        return Err(RejectReason::TooManyLogs {
            count: wire_logs.len(),
            limit: limits.max_logs_per_message,
        });
    }
    let logs = wire_logs
        .into_iter()
        .enumerate()
        .map(|(index, w)| {
            validate_log(w, limits).map_err(|reason| RejectReason::Log { index, reason })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LogMessage {
        episode_id,
        message_id,
        logs,
    })
}

fn validate_log(w: WireLog, limits: &LimitsSettings) -> Result<NewLog, String> {
    let timestamp_ms = parse_timestamp(w.timestamp.as_ref().ok_or("missing field `timestamp`")?)?;
    let level =
        LogLevel::parse(&w.level.ok_or("missing field `level`")?).map_err(|e| e.to_string())?;
    let message = w.message.ok_or("missing field `message`")?;
    if message.len() > limits.max_log_message_bytes {
        return Err(format!(
            "message is {} bytes; the limit is {}",
            message.len(),
            limits.max_log_message_bytes
        ));
    }
    if message.contains('\0') {
        return Err("message contains a NUL character".into());
    }
    let (metadata, metadata_json_len) = match w.metadata {
        None => (None, 0),
        Some(map) => {
            check_metadata(&map, 1, limits.max_metadata_depth)?;
            let json_len = serde_json::to_vec(&map).map_err(|e| e.to_string())?.len();
            if json_len > limits.max_metadata_bytes {
                return Err(format!(
                    "metadata is {json_len} bytes as JSON; the limit is {}",
                    limits.max_metadata_bytes
                ));
            }
            (Some(map), json_len)
        }
    };
    Ok(NewLog {
        timestamp_ms,
        level,
        message,
        metadata,
        metadata_json_len,
    })
}

/// RFC 3339 string or integer epoch milliseconds, within [1970-01-01, 2100-01-01).
fn parse_timestamp(v: &Value) -> Result<i64, String> {
    let ms = match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("timestamp {:?} is not RFC 3339: {e}", truncate(s)))?
            .with_timezone(&Utc)
            .timestamp_millis(),
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            format!("timestamp {n} is not an integer count of epoch milliseconds")
        })?,
        other => {
            return Err(format!(
                "timestamp must be an RFC 3339 string or epoch milliseconds, not {}",
                kind(other)
            ));
        }
    };
    if !(MIN_TIMESTAMP_MS..MAX_TIMESTAMP_MS).contains(&ms) {
        return Err(format!(
            "timestamp {ms} ms is outside 1970-01-01..2100-01-01"
        ));
    }
    Ok(ms)
}

/// Depth, keys and numbers of metadata: what MongoDB and BSON can hold without surprises.
fn check_metadata(map: &Map<String, Value>, depth: usize, max_depth: usize) -> Result<(), String> {
    if depth > max_depth {
        return Err(format!("metadata nests deeper than {max_depth} levels"));
    }
    for (k, v) in map {
        if k.starts_with('$') || k.contains('\0') || k.is_empty() {
            return Err(format!(
                "metadata key {:?} is empty, starts with '$' or has a NUL",
                truncate(k)
            ));
        }
        check_value(v, depth, max_depth)?;
    }
    Ok(())
}

fn check_value(v: &Value, depth: usize, max_depth: usize) -> Result<(), String> {
    match v {
        Value::Object(m) => check_metadata(m, depth + 1, max_depth),
        Value::Array(items) => {
            if depth + 1 > max_depth {
                return Err(format!("metadata nests deeper than {max_depth} levels"));
            }
            items
                .iter()
                .try_for_each(|i| check_value(i, depth + 1, max_depth))
        }
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => Err(format!(
            "metadata number {n} does not fit a 64-bit signed integer"
        )),
        Value::String(s) if s.contains('\0') => {
            Err("metadata string contains a NUL character".into())
        }
        _ => Ok(()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsSettings {
        LimitsSettings::default()
    }

    fn ok(body: &str) -> LogMessage {
        decode(body.as_bytes(), MessageProperties::default(), &limits()).unwrap()
    }

    fn err(body: &str) -> RejectReason {
        decode(body.as_bytes(), MessageProperties::default(), &limits()).unwrap_err()
    }

    #[test]
    fn single_log_with_rfc3339_time() {
        let m = ok(
            r#"{"episodeId":"ep-1","timestamp":"2026-01-02T03:04:05.678+01:00","level":"WARN","message":"hi","metadata":{"k":1}}"#,
        );
        assert_eq!(m.episode_id.as_str(), "ep-1");
        assert_eq!(m.logs.len(), 1);
        assert_eq!(m.logs[0].level, LogLevel::Warn);
        assert_eq!(m.logs[0].timestamp_ms, 1_767_319_445_678);
        assert_eq!(m.logs[0].metadata.as_ref().unwrap()["k"], 1);
        assert_eq!(m.logs[0].metadata_json_len, r#"{"k":1}"#.len());
        assert!(m.message_id.as_str().starts_with("sha256:"));
    }

    #[test]
    fn batch_with_epoch_millis_and_message_id() {
        let body = r#"{"episodeId":"ep","logs":[{"timestamp":1000,"level":"info","message":"a"},{"timestamp":2000,"level":"debug","message":"b","metadata":null}]}"#;
        let m = decode(
            body.as_bytes(),
            MessageProperties {
                message_id: Some("m-1"),
                content_type: Some("application/json; charset=utf-8"),
                ..Default::default()
            },
            &limits(),
        )
        .unwrap();
        assert_eq!(m.message_id.as_str(), "m-1");
        assert_eq!(m.logs.len(), 2);
        assert_eq!(m.logs[1].metadata, None);
    }

    #[test]
    fn bad_bodies_get_clear_reasons() {
        assert!(matches!(err("{not json"), RejectReason::Json(_)));
        assert!(
            matches!(err(r#"{"episodeId":"e","timestamp":1,"level":"info","message":5}"#), RejectReason::Json(m) if m.contains("expected a string"))
        );
        assert!(
            err(r#"{"episodeId":"e","timestamp":1,"level":"loud","message":"x"}"#)
                .to_string()
                .contains("unknown level")
        );
        assert!(matches!(
            err(r#"{"episodeId":"../x","timestamp":1,"level":"info","message":"x"}"#),
            RejectReason::Domain(_)
        ));
        assert!(matches!(
            err(r#"{"episodeId":"e","logs":[]}"#),
            RejectReason::EmptyBatch
        ));
        assert!(matches!(
            err(r#"{"episodeId":"e","logs":[],"message":"x"}"#),
            RejectReason::MixedForms
        ));
        assert!(matches!(
            err(r#"{"timestamp":1,"level":"info","message":"x"}"#),
            RejectReason::Missing("episodeId")
        ));
        assert!(
            err(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"x","extra":1}"#)
                .to_string()
                .contains("unknown field")
        );
        assert!(
            err(r#"{"episodeId":"e","episodeId":"f","timestamp":1,"level":"info","message":"x"}"#)
                .to_string()
                .contains("duplicate field")
        );
        assert!(
            err(r#"{"episodeId":"e","timestamp":-5,"level":"info","message":"x"}"#)
                .to_string()
                .contains("outside")
        );
        assert!(err(r#"{"episodeId":"e","timestamp":"9999-01-01T00:00:00Z","level":"info","message":"x"}"#).to_string().contains("outside"));
        assert!(
            err(r#"{"episodeId":"e","timestamp":1.5,"level":"info","message":"x"}"#)
                .to_string()
                .contains("integer")
        );
        assert!(err(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"x","metadata":{"n":18446744073709551615}}"#).to_string().contains("64-bit"));
        assert!(err(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"x","metadata":{"$where":1}}"#).to_string().contains("'$'"));
        assert!(
            err(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"a\u0000b"}"#)
                .to_string()
                .contains("NUL")
        );
        assert!(matches!(
            decode(b"\xff\xfe", MessageProperties::default(), &limits()),
            Err(RejectReason::NotUtf8)
        ));
        assert!(matches!(
            decode(
                b"{}",
                MessageProperties {
                    content_type: Some("text/plain"),
                    ..Default::default()
                },
                &limits()
            ),
            Err(RejectReason::ContentType(_))
        ));
        assert!(matches!(
            decode(
                b"{}",
                MessageProperties {
                    content_encoding: Some("gzip"),
                    ..Default::default()
                },
                &limits()
            ),
            Err(RejectReason::ContentEncoding(_))
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let l = LimitsSettings {
            max_logs_per_message: 2,
            max_message_bytes: 400,
            max_log_message_bytes: 5,
            max_metadata_depth: 2,
            max_metadata_bytes: 1000,
        };
        let d = |b: &str| decode(b.as_bytes(), MessageProperties::default(), &l);
        let log = r#"{"timestamp":1,"level":"info","message":"x"}"#;
        assert!(matches!(
            d(&format!(
                r#"{{"episodeId":"e","logs":[{log},{log},{log}]}}"#
            )),
            Err(RejectReason::TooManyLogs { count: 3, limit: 2 })
        ));
        assert!(matches!(
            d(&format!(
                r#"{{"episodeId":"e","logs":[{log}],"pad":"{}"}}"#,
                "p".repeat(500)
            )),
            Err(RejectReason::MessageTooLarge { .. })
        ));
        assert!(
            d(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"toolong"}"#)
                .unwrap_err()
                .to_string()
                .contains("limit is 5")
        );
        assert!(d(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"x","metadata":{"a":{"b":1}}}"#).is_ok());
        assert!(d(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"x","metadata":{"a":{"b":{"c":1}}}}"#).unwrap_err().to_string().contains("deeper"));
        assert!(d(r#"{"episodeId":"e","timestamp":1,"level":"info","message":"x","metadata":{"a":[[1]]}}"#).unwrap_err().to_string().contains("deeper"));
    }
}
