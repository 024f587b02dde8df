//! The read path: an episode's logs from both tiers, hot (MongoDB) and archived (S3 chunks).
//!
//! Layout of this module:
//! - Request types, parsed at the edge: [`LogFilter`] (sequence range, time range, levels,
//!   message substring), [`LogQuery`] (filter + order + cursor + page size), and the parsers
//!   [`parse_seq_range`], [`parse_time_range`], [`parse_levels`].
//! - Response types: [`LogRecord`] (one log, the chunk line format), [`LogPage`],
//!   [`EpisodeStats`], [`ChunkInfo`], [`EpisodeSummary`] and their pages.
//! - [`QueryService`]: pages ([`QueryService::read_page`]), whole-episode export
//!   ([`QueryService::export`]), follow mode ([`QueryService::follow`]), statistics, chunks and
//!   the episode list.
//! - `episodes` (`query/episodes.rs`): the episode list by id or by latest log, with an id
//!   prefix ([`QueryService::list_episodes`]).
//!
//! **Consistency across tiers.** `LogMetadata.archivedLogs` (A) is the committed prefix
//! `0..A` of the episode, all in committed chunks (chunk numbers below `totalChunks`; a record
//! above that is an unfinished archive run and is ignored). The archive-worker deletes hot
//! entries below A only after committing the new A. So a read takes A, reads the hot entries at
//! or above A, takes A again (A2): whatever matched in `[A, A2)` may have been deleted during the
//! read, so that range is read from the chunks instead, and only hot results at or above A2 are
//! kept. Every matching log comes back exactly once, whatever the archiver does meanwhile.
//!
//! **Indexes.** Hot reads always filter on `episodeId` and a `sequenceNumber` range, sorted by
//! `sequenceNumber`, with the time range and levels pushed down as well, so MongoDB serves them
//! from `[episodeId, sequenceNumber]`, `[episodeId, timestamp]` or `[episodeId, level]`. The
//! message substring is matched here (the portable subset has no `$regex`). Chunks are chosen
//! through LogChunk (`[episodeId, chunkNumber]`, sequence bounds, `startTime`/`endTime`), so only
//! chunks that can match are opened; decoded chunks are kept in a byte-bounded
//! [`ChunkCache`], and `LogChunk.lastAccessed` is written at most once per
//! `query.touch_interval_secs` per chunk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chunk::{ChunkError, ChunkLine, metadata_to_json};
use crate::chunk_cache::{ChunkCache, ChunkObject, DecodedMember};
use crate::config::{QuerySettings, Settings};
use crate::domain::{DomainError, EpisodeId, LogLevel};
use crate::model::{LogChunk, LogEntry, LogMetadata};
use crate::mongo::{ChunkRange, HotRange, MongoError, MongoStore};
use crate::s3::{ObjectStore, S3ObjectStore, StoreError};

mod episodes;
pub use episodes::{EpisodeListQuery, EpisodeSort, parse_episode_prefix};

/// Logs per page of an export.
pub const EXPORT_PAGE: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed; the message says how (safe to show to the caller).
    #[error("{0}")]
    BadRequest(String),
    /// No such episode (or chunk).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Stored state contradicts itself (a committed chunk missing or not matching its record).
    #[error("inconsistent storage: {0}")]
    Inconsistent(String),
}

impl From<DomainError> for QueryError {
    fn from(e: DomainError) -> Self {
        QueryError::BadRequest(e.to_string())
    }
}

impl From<mongodb::error::Error> for QueryError {
    fn from(e: mongodb::error::Error) -> Self {
        QueryError::Mongo(MongoError::Driver(e))
    }
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadRequest(msg.into())
}

/// Order of a read, by `sequenceNumber`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        match raw.to_ascii_lowercase().as_str() {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            _ => Err(bad(format!("order must be asc or desc, not {raw:?}"))),
        }
    }
}

/// Half-open range `[start, end)` of sequence numbers; a missing side is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqRange {
    /// First sequence number included.
    pub start: Option<i64>,
    /// First sequence number excluded.
    pub end: Option<i64>,
}

/// Half-open range `[start, end)` of `timestamp`; a missing side is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest timestamp included.
    pub start: Option<DateTime>,
    /// Earliest timestamp excluded.
    pub end: Option<DateTime>,
}

/// Parses `A..B`, `A..` or `..B` (half-open: A included, B excluded), or a single `N`.
pub fn parse_seq_range(raw: &str) -> Result<SeqRange, QueryError> {
    let num = |s: &str| -> Result<Option<i64>, QueryError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(bad(format!(
                "sequence range {raw:?}: {s:?} is not a sequence number (0 or more)"
            ))),
        }
    };
    let r = match raw.split_once("..") {
        Some((a, b)) => SeqRange {
            start: num(a)?,
            end: num(b)?,
        },
        None => {
            let n = num(raw)?.ok_or_else(|| bad("sequence range is empty"))?;
            SeqRange {
                start: Some(n),
                end: Some(n.saturating_add(1)),
            }
        }
    };
    if let (Some(a), Some(b)) = (r.start, r.end)
        && a > b
    {
        return Err(bad(format!("sequence range {raw:?} ends before it starts")));
    }
    Ok(r)
}

/// Parses one instant: RFC 3339 (`2026-11-27T18:00:00Z`) or integer epoch milliseconds.
pub fn parse_instant(raw: &str) -> Result<DateTime, QueryError> {
    let s = raw.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(DateTime::from_millis(ms));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| DateTime::from_millis(d.timestamp_millis()))
        .map_err(|_| {
            bad(format!(
                "{s:?} is not a time: use RFC 3339 (2026-11-27T18:00:00Z) or epoch milliseconds"
            ))
        })
}

/// Parses `T1..T2`, `T1..` or `..T2` (half-open), each an RFC 3339 time or epoch milliseconds.
pub fn parse_time_range(raw: &str) -> Result<TimeRange, QueryError> {
    let (a, b) = raw.split_once("..").ok_or_else(|| {
        bad(format!(
            "time range {raw:?} must be FROM..TO, FROM.. or ..TO (RFC 3339 or epoch ms)"
        ))
    })?;
    let side = |s: &str| -> Result<Option<DateTime>, QueryError> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            parse_instant(s).map(Some)
        }
    };
    let r = TimeRange {
        start: side(a)?,
        end: side(b)?,
    };
    if let (Some(a), Some(b)) = (r.start, r.end)
        && a > b
    {
        return Err(bad(format!("time range {raw:?} ends before it starts")));
    }
    Ok(r)
}

/// Parses a comma-separated list of levels, any letter case (`warn,ERROR`).
pub fn parse_levels(raw: &str) -> Result<Vec<LogLevel>, QueryError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let l = LogLevel::parse(part)?;
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.is_empty() {
        return Err(bad("level list is empty"));
    }
    Ok(out)
}

/// What a read selects; every part is optional and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// Sequence numbers.
    pub seq: SeqRange,
    /// `timestamp` range.
    pub time: TimeRange,
    /// Levels (any of them); empty means every level.
    pub levels: Vec<LogLevel>,
    /// A substring `message` must contain (case-sensitive).
    pub contains: Option<String>,
}

impl LogFilter {
    fn matches_record(&self, r: &LogRecord) -> bool {
        let ts = r.timestamp.timestamp_millis();
        self.time.start.is_none_or(|s| ts >= s.timestamp_millis())
            && self.time.end.is_none_or(|e| ts < e.timestamp_millis())
            && (self.levels.is_empty() || self.levels.contains(&r.level))
            && self
                .contains
                .as_deref()
                .is_none_or(|c| r.message.contains(c))
    }

    /// A cheap necessary condition on a raw chunk line, to skip most non-matching lines
    /// without parsing them. The line format is fixed by the chunk writer (compact serde_json),
    /// where `"level":"x"` can only appear as the level field or inside metadata, and a substring
    /// without characters that JSON escapes appears verbatim in the escaped message.
    fn may_match_raw(&self, raw: &str) -> bool {
        if !self.levels.is_empty() && !self.levels.iter().any(|l| raw.contains(level_pattern(*l))) {
            return false;
        }
        if let Some(c) = self.contains.as_deref() {
            let verbatim = !c.chars().any(|ch| ch == '"' || ch == '\\' || ch < ' ');
            if verbatim && !raw.contains(c) {
                return false;
            }
        }
        true
    }
}

/// `t` rounded down to a whole second.
fn floor_second(t: DateTime) -> DateTime {
    DateTime::from_millis(t.timestamp_millis().div_euclid(1000) * 1000)
}

/// `t` rounded up to a whole second.
fn ceil_second(t: DateTime) -> DateTime {
    let ms = t.timestamp_millis();
    DateTime::from_millis(
        ms.div_euclid(1000) * 1000 + if ms.rem_euclid(1000) == 0 { 0 } else { 1000 },
    )
}

fn level_pattern(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "\"level\":\"debug\"",
        LogLevel::Info => "\"level\":\"info\"",
        LogLevel::Warn => "\"level\":\"warn\"",
        LogLevel::Error => "\"level\":\"error\"",
        LogLevel::Fatal => "\"level\":\"fatal\"",
    }
}

/// One page request.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    /// The episode.
    pub episode: EpisodeId,
    /// What to select.
    pub filter: LogFilter,
    /// Ascending or descending `sequenceNumber`.
    pub order: Order,
    /// Where the page starts: the first sequence number to consider (ascending: at or above it;
    /// descending: at or below it). `None` starts at the beginning (or the end, descending).
    pub cursor: Option<i64>,
    /// Most logs in the page.
    pub limit: usize,
}

/// Formats a datetime as RFC 3339 UTC with milliseconds, `2026-11-27T18:00:00.123Z`.
pub fn rfc3339_ms(dt: DateTime) -> String {
    dt.to_chrono()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

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

/// One log as the read path returns it: the chunk line format, whichever tier it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Its metadata, when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Its place in the episode.
    pub sequence_number: i64,
    /// When the ingest-worker stored it.
    #[serde(with = "ms_format")]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<ChunkLine> for LogRecord {
    fn from(l: ChunkLine) -> Self {
        Self {
            id: l.id,
            episode_id: l.episode_id,
            timestamp: l.timestamp,
            level: l.level,
            message: l.message,
            metadata: l.metadata,
            sequence_number: l.sequence_number,
            created_at: l.created_at,
        }
    }
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
            level_counts: LogLevel::ALL
                .into_iter()
                .filter(|l| {
                    m.level_counts
                        .as_ref()
                        .is_some_and(|d| d.contains_key(l.as_str()))
                })
                .map(|l| (l.as_str().to_owned(), m.level_count(l)))
                .collect(),
            archive_threshold: m.archive_threshold,
            chunk_size: m.chunk_size,
            is_archiving: m.is_archiving,
            last_archived_at: m.last_archived_at.map(rfc3339_ms),
            updated_at: rfc3339_ms(m.updated_at),
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

/// A page of the episode list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodePage {
    /// Episodes, in the order asked for (by id unless said otherwise).
    pub episodes: Vec<EpisodeSummary>,
    /// Where the next page starts (for the order by id: its first episode id); absent at the end.
    pub next_cursor: Option<String>,
}

/// Format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON Lines, uncompressed.
    Ndjson,
    /// JSON Lines, gzip-compressed (the chunk format).
    JsonlGz,
}

impl ExportFormat {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        match raw.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "jsonl.gz" | "gz" | "gzip" => Ok(Self::JsonlGz),
            _ => Err(bad(format!(
                "format must be ndjson or jsonl.gz, not {raw:?}"
            ))),
        }
    }
}

/// A piece of an export stream.
#[derive(Debug)]
pub struct ExportPiece {
    /// Bytes to append to the output.
    pub bytes: Vec<u8>,
    /// Logs these bytes complete.
    pub logs: u64,
}

/// A hook run between a page's first LogMetadata read and its hot read (tests use it to archive
/// at exactly that moment).
pub type ReadHook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The read path over both tiers. Share one per process (it owns the chunk cache).
pub struct QueryService<S: ObjectStore = S3ObjectStore> {
    /// Test hook, see [`ReadHook`].
    before_hot_read: Option<ReadHook>,
    store: MongoStore,
    objects: S,
    cache: ChunkCache,
    /// When this process last wrote each chunk's `lastAccessed`.
    touched: Mutex<HashMap<ObjectId, Instant>>,
    settings: QuerySettings,
}

impl QueryService<S3ObjectStore> {
    /// Connects to MongoDB and S3 as configured (the bucket is not created).
    pub async fn connect(settings: &Settings) -> Result<Self, QueryError> {
        let store = MongoStore::connect(&settings.mongo).await?;
        let mut s3 = settings.s3.clone();
        s3.create_bucket = false;
        let objects = S3ObjectStore::connect(&s3).await?;
        Ok(Self::new(store, objects, settings.query.clone()))
    }
}

impl<S: ObjectStore> QueryService<S> {
    pub fn new(store: MongoStore, objects: S, settings: QuerySettings) -> Self {
        Self {
            before_hot_read: None,
            store,
            objects,
            cache: ChunkCache::new(settings.cache_bytes),
            touched: Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// Installs a [`ReadHook`] (for tests of reads racing the archiver).
    pub fn set_before_hot_read(&mut self, hook: Option<ReadHook>) {
        self.before_hot_read = hook;
    }

    pub fn settings(&self) -> &QuerySettings {
        &self.settings
    }

    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    pub fn store(&self) -> &MongoStore {
        &self.store
    }

    /// The page size of a request: the default when absent, refused outside 1..=max.
    pub fn page_size(&self, requested: Option<usize>) -> Result<usize, QueryError> {
        match requested {
            None => Ok(self.settings.default_page_size),
            Some(n) if n >= 1 && n <= self.settings.max_page_size => Ok(n),
            Some(n) => Err(bad(format!(
                "limit {n} is out of range: 1 to {}",
                self.settings.max_page_size
            ))),
        }
    }

    /// Readiness: MongoDB answers.
    pub async fn ready(&self) -> Result<(), QueryError> {
        Ok(self.store.ping().await?)
    }

    /// The episode's LogMetadata without its ledger (which reads never need).
    async fn meta(&self, ep: &EpisodeId) -> Result<LogMetadata, QueryError> {
        self.store
            .metadata_summary(ep)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("episode {ep} not found")))
    }

    pub async fn stats(&self, ep: &EpisodeId) -> Result<EpisodeStats, QueryError> {
        Ok(EpisodeStats::from(&self.meta(ep).await?))
    }

    /// Committed chunks of an episode, from chunk number `cursor` on.
    pub async fn chunks(
        &self,
        ep: &EpisodeId,
        cursor: Option<i32>,
        limit: usize,
    ) -> Result<ChunkPage, QueryError> {
        let meta = self.meta(ep).await?;
        let from = cursor.unwrap_or(0).max(0);
        let chunks = self
            .store
            .committed_chunks(ep, from, meta.total_chunks, limit)
            .await?;
        let next_cursor = match chunks.last() {
            Some(c) if chunks.len() == limit && c.chunk_number + 1 < meta.total_chunks => {
                Some(c.chunk_number + 1)
            }
            _ => None,
        };
        Ok(ChunkPage {
            episode_id: ep.to_string(),
            chunks: chunks.iter().map(ChunkInfo::from).collect(),
            next_cursor,
        })
    }

    /// Episodes by id, from `cursor` (an episode id, included) on.
    pub async fn episodes(
        &self,
        cursor: Option<&EpisodeId>,
        limit: usize,
    ) -> Result<EpisodePage, QueryError> {
        let mut metas = self.store.episodes_page(cursor, limit + 1).await?;
        let next_cursor = if metas.len() > limit {
            metas.pop().map(|m| m.episode_id.to_string())
        } else {
            None
        };
        Ok(EpisodePage {
            episodes: metas
                .iter()
                .map(|m| EpisodeSummary {
                    episode_id: m.episode_id.to_string(),
                    total_logs: m.total_logs,
                    current_logs: m.current_logs,
                    archived_logs: m.archived_logs,
                    total_chunks: m.total_chunks,
                    first_log_at: m.first_log_at.map(rfc3339_ms),
                    last_log_at: m.last_log_at.map(rfc3339_ms),
                    level_counts: episodes::level_counts(m),
                })
                .collect(),
            next_cursor,
        })
    }

    /// One page of logs: every log matching the filter, from the cursor on, in order, at most
    /// `limit`, each exactly once even while the episode is being archived.
    pub async fn read_page(&self, q: &LogQuery) -> Result<LogPage, QueryError> {
        if q.limit == 0 {
            return Err(bad("limit must be at least 1"));
        }
        let ep = &q.episode;
        let f = &q.filter;
        let mut lo = f.seq.start.unwrap_or(0).max(0);
        let mut hi = f.seq.end.unwrap_or(i64::MAX);
        match (q.order, q.cursor) {
            (Order::Asc, Some(c)) => lo = lo.max(c),
            (Order::Desc, Some(c)) => hi = hi.min(c.saturating_add(1)),
            (_, None) => {}
        }
        let meta = self.meta(ep).await?;
        let a = meta.archived_logs;
        let mut out: Vec<LogRecord> = Vec::new();
        if lo < hi {
            match q.order {
                Order::Asc => {
                    if lo < a {
                        self.read_cold(&meta, lo, hi.min(a), f, Order::Asc, q.limit, &mut out)
                            .await?;
                    }
                    if out.len() < q.limit && hi > a {
                        let want = q.limit - out.len();
                        let from = lo.max(a);
                        let hot = self.read_hot(ep, from, hi, f, Order::Asc, want).await?;
                        let meta2 = self.meta(ep).await?;
                        let a2 = meta2.archived_logs;
                        if a2 > a {
                            tracing::debug!(episode = %ep, from = a, to = a2, "logs archived during the read; reading them from chunks");
                            let moved_hi = hi.min(a2);
                            if from < moved_hi {
                                self.read_cold(
                                    &meta2,
                                    from,
                                    moved_hi,
                                    f,
                                    Order::Asc,
                                    want,
                                    &mut out,
                                )
                                .await?;
                            }
                            out.extend(hot.into_iter().filter(|r| r.sequence_number >= a2));
                        } else {
                            out.extend(hot);
                        }
                        out.truncate(q.limit);
                    }
                }
                Order::Desc => {
                    let mut cold_meta = meta;
                    let mut cold_hi = hi.min(a);
                    if hi > a {
                        let hot = self
                            .read_hot(ep, lo.max(a), hi, f, Order::Desc, q.limit)
                            .await?;
                        let meta2 = self.meta(ep).await?;
                        let a2 = meta2.archived_logs;
                        if a2 > a {
                            tracing::debug!(episode = %ep, from = a, to = a2, "logs archived during the read; reading them from chunks");
                            out.extend(hot.into_iter().filter(|r| r.sequence_number >= a2));
                            cold_hi = hi.min(a2);
                            cold_meta = meta2;
                        } else {
                            out.extend(hot);
                        }
                    }
                    if out.len() < q.limit && lo < cold_hi {
                        let want = q.limit - out.len();
                        self.read_cold(&cold_meta, lo, cold_hi, f, Order::Desc, want, &mut out)
                            .await?;
                    }
                }
            }
        }
        let next_cursor = match (out.len() == q.limit, out.last(), q.order) {
            (true, Some(last), Order::Asc) => Some(last.sequence_number + 1).filter(|n| *n < hi),
            (true, Some(last), Order::Desc) => Some(last.sequence_number - 1).filter(|n| *n >= lo),
            _ => None,
        };
        Ok(LogPage {
            episode_id: ep.to_string(),
            order: q.order,
            logs: out,
            next_cursor,
        })
    }

    /// Hot entries in `[lo, hi)` matching `f`, in `order`, at most `want`.
    async fn read_hot(
        &self,
        ep: &EpisodeId,
        lo: i64,
        hi: i64,
        f: &LogFilter,
        order: Order,
        want: usize,
    ) -> Result<Vec<LogRecord>, QueryError> {
        if let Some(hook) = &self.before_hot_read {
            hook().await;
        }
        // The time range goes to the server widened to whole seconds (exact bounds are checked
        // here): a server comparing datetimes at second precision, as the test stand-in does,
        // then still returns every match, and MongoDB returns at most a second more.
        let exact_on_server = f.contains.is_none() && f.time == TimeRange::default();
        let range = HotRange {
            lo,
            hi,
            time_start: f.time.start.map(floor_second),
            time_end: f.time.end.map(ceil_second),
            levels: f.levels.clone(),
            descending: order == Order::Desc,
            limit: exact_on_server.then_some(want as i64),
            batch_size: want.clamp(16, 5_000) as u32,
        };
        let mut cursor = self.store.hot_entries(ep, &range).await?;
        let mut out = Vec::with_capacity(want.min(10_000));
        while let Some(e) = cursor.try_next().await? {
            let r = LogRecord::from(e);
            if !f.matches_record(&r) {
                continue;
            }
            out.push(r);
            if out.len() >= want {
                break;
            }
        }
        Ok(out)
    }

    /// Archived logs in `[lo, hi)` (all below `meta.archivedLogs`) matching `f`, in `order`;
    /// appends at most `want` to `out`. Opens only the committed chunks that can match.
    #[allow(clippy::too_many_arguments)]
    async fn read_cold(
        &self,
        meta: &LogMetadata,
        lo: i64,
        hi: i64,
        f: &LogFilter,
        order: Order,
        want: usize,
        out: &mut Vec<LogRecord>,
    ) -> Result<(), QueryError> {
        let ep = &meta.episode_id;
        // Widened to whole seconds like the hot read's time range; lines are checked exactly.
        let range = ChunkRange {
            committed: meta.total_chunks,
            lo,
            hi,
            time_start: f.time.start.map(floor_second),
            time_end: f.time.end.map(ceil_second),
            descending: order == Order::Desc,
        };
        let mut chunks = self.store.chunks_for_read(ep, &range).await?;
        let target = out.len() + want;
        // Without a time filter the chunks must cover the range without holes.
        let check_cover = f.time.start.is_none() && f.time.end.is_none();
        let mut expect = if order == Order::Asc { lo } else { hi - 1 };
        while let Some(c) = chunks.try_next().await? {
            if check_cover && !(c.start_sequence <= expect && expect <= c.end_sequence) {
                return Err(QueryError::Inconsistent(format!(
                    "episode {ep}: no committed chunk holds log {expect}"
                )));
            }
            expect = if order == Order::Asc {
                c.end_sequence + 1
            } else {
                c.start_sequence - 1
            };
            if c.end_sequence - c.start_sequence + 1 != i64::from(c.log_count) {
                return Err(QueryError::Inconsistent(format!(
                    "chunk {} of {ep} spans logs {}..={} but says it holds {}",
                    c.chunk_number, c.start_sequence, c.end_sequence, c.log_count
                )));
            }
            let object = self.load_object(&c).await?;
            self.touch(&c).await;
            let first = (lo.max(c.start_sequence) - c.start_sequence) as usize;
            let end = (hi.min(c.end_sequence + 1) - c.start_sequence) as usize;
            // Only the members holding lines first..end are inflated, in the order read.
            let members = object.members_for(first, end);
            let members: Vec<usize> = if order == Order::Asc {
                members.collect()
            } else {
                members.rev().collect()
            };
            for k in members {
                let m = self.load_member(&c, &object, k).await?;
                let lines = m.lines();
                let (a, b) = (first.max(lines.start), end.min(lines.end));
                let mut visit = |i: usize| -> Result<bool, QueryError> {
                    if !f.may_match_raw(m.raw_line(i)) {
                        return Ok(false);
                    }
                    let line = m.line(i)?;
                    if line.sequence_number != c.start_sequence + i as i64 {
                        return Err(QueryError::Inconsistent(format!(
                            "chunk {} of {ep}: line {} holds log {}",
                            c.chunk_number,
                            i + 1,
                            line.sequence_number
                        )));
                    }
                    let r = LogRecord::from(line);
                    if f.matches_record(&r) {
                        out.push(r);
                    }
                    Ok(out.len() >= target)
                };
                if order == Order::Asc {
                    for i in a..b {
                        if visit(i)? {
                            return Ok(());
                        }
                    }
                } else {
                    for i in (a..b).rev() {
                        if visit(i)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if check_cover && out.len() < target {
            let done = if order == Order::Asc {
                expect >= hi
            } else {
                expect < lo
            };
            if !done {
                return Err(QueryError::Inconsistent(format!(
                    "episode {ep}: no committed chunk holds log {expect}"
                )));
            }
        }
        Ok(())
    }

    /// A committed chunk's object with its member index, from the cache or from S3 (one
    /// GetObject however many readers miss it at once).
    async fn load_object(&self, c: &LogChunk) -> Result<Arc<ChunkObject>, QueryError> {
        let key = ChunkCache::key(&c.src, c.size_bytes);
        self.cache
            .get_or_load(&key, || async {
                let bytes = self.objects.get(&c.src).await?;
                if bytes.len() as i64 != c.size_bytes {
                    return Err(QueryError::Inconsistent(format!(
                        "chunk object {} is {} bytes; its record says {}",
                        c.src,
                        bytes.len(),
                        c.size_bytes
                    )));
                }
                let object = ChunkObject::new(bytes, c.log_count as usize).map_err(|e| {
                    QueryError::Inconsistent(format!("chunk object {}: {e}", c.src))
                })?;
                tracing::debug!(src = %c.src, members = object.members().len(), indexed = object.is_indexed(), "chunk object loaded");
                Ok(object)
            })
            .await
    }

    /// Member `k` of a chunk object, inflated, from the cache or inflated now (off the async
    /// threads; once however many readers miss it at once).
    async fn load_member(
        &self,
        c: &LogChunk,
        object: &Arc<ChunkObject>,
        k: usize,
    ) -> Result<Arc<DecodedMember>, QueryError> {
        let key = ChunkCache::member_key(&ChunkCache::key(&c.src, c.size_bytes), k);
        self.cache
            .get_or_load(&key, || async {
                let o = object.clone();
                let member = tokio::task::spawn_blocking(move || o.decode_member(k))
                    .await
                    .map_err(|e| ChunkError::Io(std::io::Error::other(e)))??;
                Ok::<_, QueryError>(member)
            })
            .await
    }

    /// Writes `lastAccessed = now` on a committed chunk's record, unless it (or this process)
    /// did so within the touch interval. A failure is logged, never fails the read.
    async fn touch(&self, c: &LogChunk) {
        let interval = Duration::from_secs(self.settings.touch_interval_secs);
        let now = DateTime::now();
        let age_ms = now.timestamp_millis() - c.last_accessed.timestamp_millis();
        if age_ms >= 0 && (age_ms as u128) < interval.as_millis() {
            return;
        }
        {
            let mut t = self.touched.lock().expect("not poisoned");
            if t.get(&c.id).is_some_and(|at| at.elapsed() < interval) {
                return;
            }
            if t.len() > 100_000 {
                t.retain(|_, at| at.elapsed() < interval);
            }
            t.insert(c.id, Instant::now());
        }
        match self.store.touch_chunk(c, now).await {
            Ok(_) => {
                tracing::debug!(episode = %c.episode_id, chunk_number = c.chunk_number, "lastAccessed updated")
            }
            Err(e) => {
                tracing::warn!(episode = %c.episode_id, chunk_number = c.chunk_number, error = %e, "updating lastAccessed failed")
            }
        }
    }

    /// First sequence number at or above `from` that is not written yet (hot entries are
    /// contiguous below it). Archived logs count as written.
    pub async fn written_frontier(&self, ep: &EpisodeId, from: i64) -> Result<i64, QueryError> {
        let meta = self.meta(ep).await?;
        Ok(self
            .store
            .written_frontier(ep, from.max(meta.archived_logs))
            .await?)
    }

    /// Streams every log matching the query (from its cursor on, in its order) as JSON Lines,
    /// `EXPORT_PAGE` logs at a time, to `tx`. Memory stays bounded by one page plus the chunk
    /// cache, whatever the episode's size. An ascending export stops at the logs numbered when
    /// it started. Returns the number of logs sent; stops early, without error, when the
    /// receiver goes away. An error is also sent down `tx` (as an I/O error, so a byte stream
    /// built on `tx` fails rather than ending as if complete).
    pub async fn export(
        &self,
        q: &LogQuery,
        format: ExportFormat,
        tx: &mpsc::Sender<Result<ExportPiece, std::io::Error>>,
    ) -> Result<u64, QueryError> {
        match self.export_inner(q, format, tx).await {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::warn!(episode = %q.episode, error = %e, "export failed");
                let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                Err(e)
            }
        }
    }

    async fn export_inner(
        &self,
        q: &LogQuery,
        format: ExportFormat,
        tx: &mpsc::Sender<Result<ExportPiece, std::io::Error>>,
    ) -> Result<u64, QueryError> {
        use std::io::Write;
        let mut q = q.clone();
        q.limit = EXPORT_PAGE;
        if q.order == Order::Asc {
            let meta = self.meta(&q.episode).await?;
            let end = q
                .filter
                .seq
                .end
                .unwrap_or(i64::MAX)
                .min(meta.next_sequence_number);
            q.filter.seq.end = Some(end);
        }
        let mut gz = (format == ExportFormat::JsonlGz).then(|| {
            flate2::write::GzEncoder::new(Vec::with_capacity(1 << 20), flate2::Compression::new(6))
        });
        let mut total = 0u64;
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let page = self.read_page(&q).await?;
            buf.clear();
            for r in &page.logs {
                serde_json::to_writer(&mut buf, r)
                    .map_err(std::io::Error::other)
                    .map_err(ChunkError::Io)?;
                buf.push(b'\n');
            }
            let n = page.logs.len() as u64;
            total += n;
            let bytes = match gz.as_mut() {
                Some(enc) => {
                    enc.write_all(&buf).map_err(ChunkError::Io)?;
                    std::mem::take(enc.get_mut())
                }
                None => std::mem::take(&mut buf),
            };
            if (!bytes.is_empty() || n > 0)
                && tx.send(Ok(ExportPiece { bytes, logs: n })).await.is_err()
            {
                return Ok(total);
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        if let Some(enc) = gz {
            let bytes = enc.finish().map_err(ChunkError::Io)?;
            let _ = tx.send(Ok(ExportPiece { bytes, logs: 0 })).await;
        }
        Ok(total)
    }

    /// Follow mode, like `tail -f`: sends the last `backlog` matching logs (when the query has no
    /// cursor; from the cursor otherwise), then every new matching log as it is written, in
    /// sequence order, never passing a log that is numbered but not written yet. Returns when
    /// the receiver goes away or the sequence range's end is reached.
    pub async fn follow(
        &self,
        q: &LogQuery,
        backlog: usize,
        tx: &mpsc::Sender<Vec<LogRecord>>,
    ) -> Result<(), QueryError> {
        let ep = &q.episode;
        let end = q.filter.seq.end.unwrap_or(i64::MAX);
        let poll = Duration::from_millis(self.settings.follow_poll_ms);
        let page_size = self.settings.max_page_size;
        let mut cursor = match q.cursor {
            Some(c) => c.max(q.filter.seq.start.unwrap_or(0)),
            None => {
                let f = self.written_frontier(ep, 0).await?;
                if backlog > 0 && f > 0 {
                    let mut page = self
                        .read_page(&LogQuery {
                            order: Order::Desc,
                            cursor: Some(f - 1),
                            limit: backlog.min(page_size),
                            ..q.clone()
                        })
                        .await?;
                    page.logs.reverse();
                    if !page.logs.is_empty() && tx.send(page.logs).await.is_err() {
                        return Ok(());
                    }
                }
                f.max(q.filter.seq.start.unwrap_or(0))
            }
        };
        loop {
            if cursor >= end || tx.is_closed() {
                return Ok(());
            }
            let frontier = self.written_frontier(ep, cursor).await?.min(end);
            let mut advanced = false;
            while cursor < frontier {
                let mut pq = LogQuery {
                    order: Order::Asc,
                    cursor: Some(cursor),
                    limit: page_size,
                    ..q.clone()
                };
                pq.filter.seq.end = Some(frontier);
                let page = self.read_page(&pq).await?;
                if !page.logs.is_empty() && tx.send(page.logs).await.is_err() {
                    return Ok(());
                }
                cursor = page.next_cursor.unwrap_or(frontier);
                advanced = true;
            }
            if !advanced {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = tx.closed() => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_ranges() {
        assert_eq!(
            parse_seq_range("10..20").unwrap(),
            SeqRange {
                start: Some(10),
                end: Some(20)
            }
        );
        assert_eq!(
            parse_seq_range("..5").unwrap(),
            SeqRange {
                start: None,
                end: Some(5)
            }
        );
        assert_eq!(
            parse_seq_range("7").unwrap(),
            SeqRange {
                start: Some(7),
                end: Some(8)
            }
        );
        for badr in ["x..1", "-1..", "5..2", "", "1..2..3"] {
            assert!(parse_seq_range(badr).is_err(), "{badr:?} was accepted");
        }
    }

    #[test]
    fn time_ranges_and_levels() {
        let r = parse_time_range("2025-11-27T18:00:00Z..1764266400124").unwrap();
        assert_eq!(r.start.unwrap().timestamp_millis(), 1_764_266_400_000);
        assert_eq!(r.end.unwrap().timestamp_millis(), 1_764_266_400_124);
        assert!(parse_time_range("yesterday..").is_err());
        assert!(parse_time_range("2026-11-27T18:00:00Z").is_err());
        assert!(parse_time_range("20..10").is_err());
        assert_eq!(
            parse_levels("WARN, error,warn").unwrap(),
            vec![LogLevel::Warn, LogLevel::Error]
        );
        assert!(parse_levels("verbose").is_err());
        assert!(parse_levels(",").is_err());
    }

    #[test]
    fn raw_prefilter_is_a_necessary_condition() {
        let f = LogFilter {
            levels: vec![LogLevel::Warn],
            contains: Some("needle".into()),
            ..Default::default()
        };
        let line = r#"{"id":"x","episodeId":"e","timestamp":"1970-01-01T00:00:00.000Z","level":"warn","message":"a needle \"q\"","sequenceNumber":0,"createdAt":"1970-01-01T00:00:00.000Z"}"#;
        assert!(f.may_match_raw(line));
        assert!(!f.may_match_raw(&line.replace("warn", "info")));
        assert!(!f.may_match_raw(&line.replace("needle", "pin")));
        let quoted = LogFilter {
            contains: Some("\"q\"".into()),
            ..Default::default()
        };
        assert!(
            quoted.may_match_raw(line),
            "escaped needles are not pre-filtered"
        );
    }

    #[test]
    fn records_serialize_in_the_chunk_line_format() {
        let r = LogRecord {
            id: "65f000000000000000000001".into(),
            episode_id: "ep".into(),
            timestamp: chrono::DateTime::from_timestamp_millis(0).unwrap(),
            level: LogLevel::Info,
            message: "m".into(),
            metadata: None,
            sequence_number: 3,
            created_at: chrono::DateTime::from_timestamp_millis(1_500).unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"65f000000000000000000001","episodeId":"ep","timestamp":"1970-01-01T00:00:00.000Z","level":"info","message":"m","sequenceNumber":3,"createdAt":"1970-01-01T00:00:01.500Z"}"#
        );
    }
}
