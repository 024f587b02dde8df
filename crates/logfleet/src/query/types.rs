//! What reads answer: pages of logs, statistics, chunk lists, the episode list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{LogRecord, Order};
use crate::chunk::rfc3339_ms;
use crate::domain::LogLevel;
use crate::model::{LogChunk, LogMetadata};

/// One page of logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    /// The episode.
    pub episode_id: String,
    /// The order of `logs`.
    pub order: Order,
    /// The logs, in `order`.
    pub logs: Vec<LogRecord>,
    /// The cursor of the next page; absent when this page ended the selection.
    pub next_cursor: Option<i64>,
}

/// `levelCounts` as a map, in level order, only the levels seen: one rule for the statistics
/// and the episode list, so both show an episode's levels alike.
fn level_counts(m: &LogMetadata) -> BTreeMap<String, i64> {
    LogLevel::ALL
        .into_iter()
        .filter(|l| {
            m.level_counts
                .as_ref()
                .is_some_and(|d| d.contains_key(l.as_str()))
        })
        .map(|l| (l.as_str().to_owned(), m.level_count(l)))
        .collect()
}

/// An episode's statistics, from its LogMetadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeStats {
    /// The episode.
    pub episode_id: String,
    /// Logs ever ingested.
    pub total_logs: i64,
    /// Logs in MongoDB.
    pub current_logs: i64,
    /// Logs in S3 chunks.
    pub archived_logs: i64,
    /// Committed chunks.
    pub total_chunks: i32,
    /// Next sequence number to be given.
    pub next_sequence_number: i64,
    /// Earliest log timestamp.
    pub first_log_at: Option<String>,
    /// Latest log timestamp.
    pub last_log_at: Option<String>,
    /// Size measure of the hot logs.
    pub current_mongo_bytes: i64,
    /// Compressed size of the chunks.
    pub archived_s3_bytes: i64,
    /// Logs per level.
    pub level_counts: BTreeMap<String, i64>,
    /// Hot logs that trigger archiving.
    pub archive_threshold: i32,
    /// Logs per chunk.
    pub chunk_size: i32,
    /// Whether an archive run holds the lock.
    pub is_archiving: bool,
    /// When a chunk was last committed.
    pub last_archived_at: Option<String>,
    /// When LogMetadata last changed.
    pub updated_at: String,
    /// Retention: logs removed, the prefix `0..expiredBelow` (and being removed, when an
    /// expiry is under way); reads of it answer 410 Gone.
    #[serde(default)]
    pub expired_below: i64,
    /// Retention: chunks removed (chunk numbers below this).
    #[serde(default)]
    pub expired_chunks: i32,
    /// Retention: compressed bytes of the removed chunks.
    #[serde(default)]
    pub expired_s3_bytes: i64,
    /// Retention: when the last expiry finished.
    #[serde(default)]
    pub expired_at: Option<String>,
    /// Retention: why the last expiry happened.
    #[serde(default)]
    pub expiry_reason: Option<String>,
}

impl From<&LogMetadata> for EpisodeStats {
    fn from(m: &LogMetadata) -> Self {
        Self {
            episode_id: m.episode_id.to_string(),
            total_logs: m.total_logs,
            current_logs: m.current_logs,
            archived_logs: m.archived_logs,
            total_chunks: m.total_chunks,
            next_sequence_number: m.next_sequence_number,
            first_log_at: m.first_log_at.map(rfc3339_ms),
            last_log_at: m.last_log_at.map(rfc3339_ms),
            current_mongo_bytes: m.current_mongo_bytes,
            archived_s3_bytes: m.archived_s3_bytes,
            level_counts: level_counts(m),
            archive_threshold: m.archive_threshold,
            chunk_size: m.chunk_size,
            is_archiving: m.is_archiving,
            last_archived_at: m.last_archived_at.map(rfc3339_ms),
            updated_at: rfc3339_ms(m.updated_at),
            expired_below: m.expired_below(),
            expired_chunks: m.expired_chunks,
            expired_s3_bytes: m.expired_s3_bytes,
            expired_at: m.expired_at.map(rfc3339_ms),
            expiry_reason: m.expiry_reason.clone(),
        }
    }
}

/// One committed chunk, from its LogChunk record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkInfo {
    /// Its number, 0, 1, 2, ...
    pub chunk_number: i32,
    /// First sequence number in it.
    pub start_sequence: i64,
    /// Last sequence number in it.
    pub end_sequence: i64,
    /// Earliest timestamp in it.
    pub start_time: String,
    /// Latest timestamp in it.
    pub end_time: String,
    /// Logs in it.
    pub log_count: i32,
    /// Its S3 key.
    pub src: String,
    /// Its compressed size.
    pub size_bytes: i64,
    /// When it was written.
    pub created_at: String,
    /// When it was last read (updated at most once per `query.touch_interval_secs`).
    pub last_accessed: String,
}

impl From<&LogChunk> for ChunkInfo {
    fn from(c: &LogChunk) -> Self {
        Self {
            chunk_number: c.chunk_number,
            start_sequence: c.start_sequence,
            end_sequence: c.end_sequence,
            start_time: rfc3339_ms(c.start_time),
            end_time: rfc3339_ms(c.end_time),
            log_count: c.log_count,
            src: c.src.clone(),
            size_bytes: c.size_bytes,
            created_at: rfc3339_ms(c.created_at),
            last_accessed: rfc3339_ms(c.last_accessed),
        }
    }
}

/// A page of an episode's chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkPage {
    /// The episode.
    pub episode_id: String,
    /// Committed chunks, by chunk number.
    pub chunks: Vec<ChunkInfo>,
    /// The chunk number the next page starts at; absent at the end.
    pub next_cursor: Option<i32>,
}

/// One episode in the episode list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeSummary {
    /// The episode.
    pub episode_id: String,
    /// Logs ever ingested.
    pub total_logs: i64,
    /// Logs in MongoDB.
    pub current_logs: i64,
    /// Logs in S3 chunks.
    pub archived_logs: i64,
    /// Committed chunks.
    pub total_chunks: i32,
    /// Earliest log timestamp.
    pub first_log_at: Option<String>,
    /// Latest log timestamp.
    pub last_log_at: Option<String>,
    /// Logs per level (only the levels seen).
    #[serde(default)]
    pub level_counts: BTreeMap<String, i64>,
}

/// The same summary whichever read lists the episode: the episode list and
/// [`QueryService::episodes`](super::QueryService::episodes) (`logctl`'s page by id).
impl From<&LogMetadata> for EpisodeSummary {
    fn from(m: &LogMetadata) -> Self {
        Self {
            episode_id: m.episode_id.to_string(),
            total_logs: m.total_logs,
            current_logs: m.current_logs,
            archived_logs: m.archived_logs,
            total_chunks: m.total_chunks,
            first_log_at: m.first_log_at.map(rfc3339_ms),
            last_log_at: m.last_log_at.map(rfc3339_ms),
            level_counts: level_counts(m),
        }
    }
}

/// A page of the episode list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodePage {
    /// Episodes, in the order asked for (by id unless said otherwise).
    pub episodes: Vec<EpisodeSummary>,
    /// Where the next page starts (for the order by id: its first episode id); absent at the end.
    pub next_cursor: Option<String>,
}

/// A piece of an export stream.
#[derive(Debug)]
pub struct ExportPiece {
    /// Bytes to append to the output.
    pub bytes: Vec<u8>,
    /// Logs these bytes complete.
    pub logs: u64,
}
