//! The chunk format: the S3 key scheme, one log per line ([`LogRecord`]), and the member
//! index each gzip member's header carries.

use bson::{DateTime, Document};
use serde::{Deserialize, Serialize};

use crate::domain::{EpisodeId, LogLevel};
use crate::model::LogEntry;

/// The S3 key of chunk `chunk_number` of `episode`, as written by attempt `attempt`.
///
/// `attempt` names the archive run that wrote it (8 hex digits): every attempt at a chunk writes
/// its own object, so a run that lost its lock can never overwrite the object a committed
/// record points at. The committed one is the record's `src`; the others are removed by the
/// run that holds the lock next.
pub fn chunk_key(
    key_prefix: &str,
    episode: &EpisodeId,
    chunk_number: i32,
    attempt: &str,
) -> String {
    format!(
        "{}chunk-{chunk_number:010}-{attempt}.jsonl.gz",
        episode_key_prefix(key_prefix, episode)
    )
}

/// The prefix under which every object of `episode` lives, ending in `/`.
pub fn episode_key_prefix(key_prefix: &str, episode: &EpisodeId) -> String {
    let prefix = key_prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{episode}/")
    } else {
        format!("{prefix}/{episode}/")
    }
}

/// The chunk number a key of [`chunk_key`]'s form names (also the older form without the
/// attempt, `chunk-{n:010}.jsonl.gz`); `None` for any other key.
pub fn chunk_number_of_key(key: &str) -> Option<i32> {
    let name = key.rsplit('/').next()?;
    let rest = name.strip_prefix("chunk-")?.strip_suffix(".jsonl.gz")?;
    let digits = rest.split_once('-').map_or(rest, |(n, _)| n);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A new attempt id for [`chunk_key`].
pub fn new_attempt() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Metadata as plain JSON (what the producer sent): numbers stay numbers.
pub fn metadata_to_json(doc: &Document) -> serde_json::Value {
    bson::Bson::Document(doc.clone()).into_relaxed_extjson()
}

/// One log as archived in a chunk line, and as the read path returns it from either tier.
///
/// ```text
/// {"id":"65f0c0ffee...","episodeId":"ep-1","timestamp":"2026-11-27T18:00:00.000Z","level":"info","message":"...","metadata":{...},"sequenceNumber":0,"createdAt":"2026-11-27T18:00:01.234Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogRecord {
    /// The LogEntry's ObjectId, 24 hex digits.
    pub id: String,
    /// The episode.
    pub episode_id: String,
    /// When the log was created, per its producer.
    #[serde(with = "ms_format")]
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// Its level.
    pub level: LogLevel,
    /// Its message.
    pub message: String,
    /// Its metadata, when it had any, with the keys in the order the producer sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Its place in the episode.
    pub sequence_number: i64,
    /// When the ingest-worker stored it.
    #[serde(with = "ms_format")]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<LogEntry> for LogRecord {
    fn from(e: LogEntry) -> Self {
        Self {
            id: e.id.to_hex(),
            episode_id: e.episode_id.as_str().to_owned(),
            timestamp: e.timestamp.to_chrono(),
            level: e.level,
            metadata: e.metadata.as_ref().map(metadata_to_json),
            message: e.message,
            sequence_number: e.sequence_number,
            created_at: e.created_at.to_chrono(),
        }
    }
}

/// Datetimes as `2026-11-27T18:00:00.123Z` (RFC 3339, UTC, milliseconds).
mod ms_format {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

/// Formats a datetime as RFC 3339 UTC with milliseconds, `2026-11-27T18:00:00.123Z`.
pub fn rfc3339_ms(dt: DateTime) -> String {
    dt.to_chrono()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A chunk line as the writer serializes it, borrowing from the entry (no copy per line).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LineOut<'a> {
    pub id: String,
    pub episode_id: &'a str,
    pub timestamp: String,
    pub level: LogLevel,
    pub message: &'a str,
    /// Serialized straight from BSON (see `crate::model::metadata_json_len`): no copy per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Document>,
    pub sequence_number: i64,
    pub created_at: String,
}

/// Extra-field subfield id of a member index entry ("LF", logfleet), as RFC 1952 section
/// 2.3.1.1 defines subfields; readers that do not know it skip it.
pub(super) const INDEX_SUBFIELD: [u8; 2] = *b"LF";
/// Bytes of a member header: the fixed 10, XLEN, and one 16-byte subfield.
pub(super) const MEMBER_HEADER: usize = 10 + 2 + 4 + 12;

/// Where one gzip member lies in a chunk object and which of the chunk's lines it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSpan {
    /// Byte offset of the member in the object.
    pub offset: usize,
    /// Length of the member in bytes.
    pub len: usize,
    /// Index (0-based) of its first line in the chunk.
    pub first_line: usize,
    /// Lines it holds.
    pub lines: usize,
}
