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

//!
//! Layout: [`params`] (requests, parsed at the edge), [`types`] (responses), [`read`] (a page:
//! the hot/cold merge and the hot read), [`cold`] (the archived tier: chunks, members, touch),
//! [`follow`], [`export`], [`cache`] (the byte-bounded chunk cache), and `episodes` (the episode
//! list by id or latest log, with an id prefix: [`QueryService::list_episodes`]).

pub mod cache;
mod cold;
mod episodes;
mod export;
mod follow;
pub mod params;
mod read;
mod retention;
pub mod types;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bson::oid::ObjectId;

use crate::chunk::ChunkError;
use crate::config::{QuerySettings, Settings};
use crate::domain::{DomainError, EpisodeId};
use crate::faults::{Faults, InjectedFault};
use crate::model::LogMetadata;
use crate::mongo::{MongoError, MongoStore};
use crate::object_store::{ObjectStore, S3ObjectStore, StoreError};

pub use crate::chunk::LogRecord;
pub use cache::{CacheStats, ChunkCache};
pub use episodes::{EpisodeListQuery, EpisodeSort, parse_episode_prefix};
pub use params::{
    ExportFormat, LogFilter, LogQuery, Order, SeqRange, TimeRange, parse_instant, parse_levels,
    parse_seq_range, parse_time_range,
};
pub use types::{
    ChunkInfo, ChunkPage, EpisodePage, EpisodeStats, EpisodeSummary, ExportPiece, LogPage,
};

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
    #[error(transparent)]
    Injected(#[from] InjectedFault),
    /// Stored state contradicts itself (a committed chunk missing or not matching its record).
    #[error("inconsistent storage: {0}")]
    Inconsistent(String),
    /// The logs asked for were removed by the retention policy; the message says which, when
    /// and why (safe to show to the caller; query-api answers 410 Gone).
    #[error("{0}")]
    Expired(String),
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

pub(crate) fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadRequest(msg.into())
}

/// The read path over both tiers. Share one per process (it owns the chunk cache).
pub struct QueryService<S: ObjectStore = S3ObjectStore> {
    /// Fault hooks (tests; see [`crate::faults`]).
    faults: Faults,
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
            faults: Faults::default(),
            store,
            objects,
            cache: ChunkCache::new(settings.cache_bytes),
            touched: Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// Installs fault hooks (tests of reads racing the archiver; see [`crate::faults`]).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
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

    /// The episode's LogMetadata; [`QueryError::NotFound`] when there is none.
    pub(super) async fn meta(&self, ep: &EpisodeId) -> Result<LogMetadata, QueryError> {
        self.store
            .metadata_of(ep)
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
        // Expired chunks (or chunks being expired) are not listed.
        let from = cursor.unwrap_or(0).max(0).max(meta.expired_chunks_below());
        let mut chunks = self
            .store
            .committed_chunks(ep, from, meta.total_chunks, limit)
            .await?;
        // A chunk committed a moment ago may have no record yet: LogMetadata names it.
        if let Some(p) = &meta.pending_chunk
            && p.chunk_number >= from
            && chunks.len() < limit
            && !chunks.iter().any(|c| c.chunk_number == p.chunk_number)
        {
            chunks.push(p.clone());
        }
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
            episodes: metas.iter().map(EpisodeSummary::from).collect(),
            next_cursor,
        })
    }
}
