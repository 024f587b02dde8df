//! LogChunk: the records of archived chunks.
//!
//! A record with `chunkNumber < LogMetadata.totalChunks` is committed; one at or above it was
//! written by an archive run that has not committed (yet, or ever).

use bson::{DateTime, doc};
use futures::TryStreamExt;

use super::{MongoError, MongoStore, is_duplicate_key};
use crate::domain::EpisodeId;
use crate::model::LogChunk;

/// What [`MongoStore::record_chunk`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedChunk {
    /// The record is new.
    Inserted,
    /// A record of that chunk number exists already; here it is.
    Exists(LogChunk),
}

/// The chunks a read opens: committed ones (`chunkNumber < committed`) holding logs in
/// `[lo, hi)`, optionally overlapping a time range, in chunk order.
#[derive(Debug, Clone, Default)]
pub struct ChunkRange {
    /// `LogMetadata.totalChunks` as read.
    pub committed: i32,
    /// First sequence number wanted.
    pub lo: i64,
    /// First sequence number not wanted.
    pub hi: i64,
    /// Chunks ending before this are skipped.
    pub time_start: Option<DateTime>,
    /// Chunks starting at or after this are skipped.
    pub time_end: Option<DateTime>,
    /// Highest chunk number first.
    pub descending: bool,
}

impl MongoStore {
    /// Inserts a chunk's record, or returns the record of that number that exists already.
    pub async fn record_chunk(&self, record: &LogChunk) -> Result<RecordedChunk, MongoError> {
        match crate::retry::within(
            "insert a LogChunk",
            self.op_timeout,
            self.chunks.insert_one(record).into_future(),
        )
        .await?
        {
            Ok(_) => Ok(RecordedChunk::Inserted),
            Err(e) if is_duplicate_key(&e) => {
                let existing = self
                    .chunk_of(&record.episode_id, record.chunk_number)
                    .await?
                    .ok_or(e)?;
                Ok(RecordedChunk::Exists(existing))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the record `existing` (same `_id`) with `record`. Only for a record that is
    /// not committed: committed records never change but for `lastAccessed`.
    pub async fn replace_uncommitted_chunk(
        &self,
        existing: &LogChunk,
        record: &LogChunk,
    ) -> Result<(), MongoError> {
        let replacement = LogChunk {
            id: existing.id,
            ..record.clone()
        };
        self.timed(
            "replace a LogChunk",
            self.chunks
                .replace_one(doc! {"_id": existing.id}, &replacement)
                .into_future(),
        )
        .await?;
        Ok(())
    }

    pub async fn chunk_of(
        &self,
        ep: &EpisodeId,
        chunk_number: i32,
    ) -> Result<Option<LogChunk>, MongoError> {
        self.timed(
            "read a LogChunk",
            self.chunks
                .find_one(doc! {"episodeId": ep.as_str(), "chunkNumber": chunk_number})
                .into_future(),
        )
        .await
    }

    /// Every record of an episode, committed or not, by chunk number.
    pub async fn chunks_of(&self, ep: &EpisodeId) -> Result<Vec<LogChunk>, MongoError> {
        self.timed("read an episode's LogChunks", async {
            self.chunks
                .find(doc! {"episodeId": ep.as_str()})
                .sort(doc! {"chunkNumber": 1})
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// Committed records from chunk number `from` on, at most `limit`.
    pub async fn committed_chunks(
        &self,
        ep: &EpisodeId,
        from: i32,
        committed: i32,
        limit: usize,
    ) -> Result<Vec<LogChunk>, MongoError> {
        self.timed("read committed LogChunks", async {
            self.chunks
                .find(doc! {
                    "episodeId": ep.as_str(),
                    "chunkNumber": {"$gte": from, "$lt": committed},
                })
                .sort(doc! {"chunkNumber": 1})
                .limit(limit as i64)
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// The committed chunks a read opens (see [`ChunkRange`]).
    pub async fn chunks_for_read(
        &self,
        ep: &EpisodeId,
        r: &ChunkRange,
    ) -> Result<Vec<LogChunk>, MongoError> {
        let mut filter = doc! {
            "episodeId": ep.as_str(),
            "chunkNumber": {"$lt": r.committed},
            "endSequence": {"$gte": r.lo},
            "startSequence": {"$lt": r.hi},
        };
        if let Some(s) = r.time_start {
            filter.insert("endTime", doc! {"$gte": s});
        }
        if let Some(e) = r.time_end {
            filter.insert("startTime", doc! {"$lt": e});
        }
        let dir = if r.descending { -1 } else { 1 };
        self.timed("read the LogChunks of a page", async {
            self.chunks
                .find(filter)
                .sort(doc! {"chunkNumber": dir})
                .batch_size(64)
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// Writes `lastAccessed = at` on a record. A full replacement, the portable way to write a
    /// datetime; committed records never change otherwise, so it cannot undo another writer.
    pub async fn touch_chunk(&self, c: &LogChunk, at: DateTime) -> Result<(), MongoError> {
        let record = LogChunk {
            last_accessed: at,
            ..c.clone()
        };
        self.timed(
            "touch a LogChunk",
            self.chunks
                .replace_one(
                    doc! {"_id": c.id, "episodeId": c.episode_id.as_str(), "chunkNumber": c.chunk_number},
                    &record,
                )
                .into_future(),
        )
        .await?;
        Ok(())
    }
}
