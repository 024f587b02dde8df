//! The queries and deletes of the retention pass (`crate::archive` retention, `docs/retention.md`).
//!
//! Candidates are found through indexes only, never by reading LogEntry: LogMetadata by
//! `lastLogAt` (`lastLogAt_episodeId`) and by `retentionOverride.setAt` (the override index),
//! LogChunk by `[startTime, endTime]`; an episode's chunks by `[episodeId, chunkNumber]`.

use std::collections::BTreeSet;

use bson::{DateTime, Document, doc};
use futures::TryStreamExt;

use super::{MongoError, MongoStore};
use crate::domain::EpisodeId;
use crate::model::{LogChunk, LogMetadata};

/// Episode ids asked for in one `$in` at most.
const IDS_PER_QUERY: usize = 1_000;

/// A time bound for the server: `t` moved up past its whole second (some servers compare
/// datetimes at one-second precision, docs/mongodb-servers.md N7); the exact bound is applied
/// to what comes back.
fn widened(t: DateTime) -> DateTime {
    DateTime::from_millis((t.timestamp_millis().div_euclid(1000) + 2) * 1000)
}

impl MongoStore {
    /// The episodes whose latest log is older than `before` (through the `lastLogAt` index).
    /// Episodes without logs have no `lastLogAt` and are never returned.
    pub async fn episodes_last_log_before(
        &self,
        before: DateTime,
    ) -> Result<Vec<LogMetadata>, MongoError> {
        let found: Vec<LogMetadata> = self
            .timed("find idle episodes", async {
                self.metadata
                    .find(doc! {"lastLogAt": {"$lt": widened(before)}})
                    .batch_size(1_000)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        Ok(found
            .into_iter()
            .filter(|m| m.last_log_at.is_some_and(|t| t < before))
            .collect())
    }

    /// The episodes with a retention override (through the `retentionOverride.setAt` index).
    pub async fn episodes_with_retention_override(&self) -> Result<Vec<LogMetadata>, MongoError> {
        self.timed("find retention overrides", async {
            self.metadata
                .find(doc! {"retentionOverride.setAt": {"$gte": DateTime::from_millis(0)}})
                .batch_size(1_000)
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// The episodes holding a chunk record whose logs all end before `before` (through the
    /// `[startTime, endTime]` index: a chunk starts no later than it ends). Records of expired
    /// chunks are gone, so only live old chunks count.
    pub async fn episodes_with_chunks_ended_before(
        &self,
        before: DateTime,
    ) -> Result<Vec<EpisodeId>, MongoError> {
        let raw = self.chunks.clone_with_type::<Document>();
        let docs: Vec<Document> = self
            .timed("find old chunks", async {
                let bound = widened(before);
                raw.find(doc! {"startTime": {"$lt": bound}, "endTime": {"$lt": bound}})
                    .projection(doc! {"episodeId": 1, "endTime": 1, "_id": 0})
                    .batch_size(10_000)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let ids: BTreeSet<EpisodeId> = docs
            .iter()
            .filter(|d| d.get_datetime("endTime").is_ok_and(|t| *t < before))
            .filter_map(|d| d.get_str("episodeId").ok())
            .filter_map(|s| EpisodeId::parse(s).ok())
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// The LogMetadata of each of `ids` that has one.
    pub async fn metadata_of_many(
        &self,
        ids: &[EpisodeId],
    ) -> Result<Vec<LogMetadata>, MongoError> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(IDS_PER_QUERY) {
            let names: Vec<&str> = part.iter().map(EpisodeId::as_str).collect();
            let found: Vec<LogMetadata> = self
                .timed("read LogMetadata by ids", async {
                    self.metadata
                        .find(doc! {"episodeId": {"$in": names}})
                        .await?
                        .try_collect()
                        .await
                })
                .await?;
            out.extend(found);
        }
        Ok(out)
    }

    /// The chunks an expiry by age takes: the records from chunk number `from` on, in order,
    /// as long as each is committed (below `committed`) and ends before `before`. Stops at the
    /// first that does not, so what expires is always a prefix of the chunks.
    pub async fn expirable_chunks(
        &self,
        ep: &EpisodeId,
        from: i32,
        committed: i32,
        before: DateTime,
    ) -> Result<Vec<LogChunk>, MongoError> {
        let mut cursor = self
            .timed(
                "open an expirable-chunk cursor",
                self.chunks
                    .find(doc! {
                        "episodeId": ep.as_str(),
                        "chunkNumber": {"$gte": from, "$lt": committed},
                    })
                    .sort(doc! {"chunkNumber": 1})
                    .batch_size(64)
                    .into_future(),
            )
            .await?;
        let mut out = Vec::new();
        let mut next = from;
        while let Some(c) =
            crate::retry::within("read expirable chunks", self.op_timeout, cursor.try_next())
                .await??
        {
            if c.chunk_number != next || c.end_time >= before {
                break;
            }
            next += 1;
            out.push(c);
        }
        Ok(out)
    }

    /// The records of one episode's chunks numbered below `below`, by number.
    pub async fn chunks_below(
        &self,
        ep: &EpisodeId,
        below: i32,
    ) -> Result<Vec<LogChunk>, MongoError> {
        self.timed("read chunks to expire", async {
            self.chunks
                .find(doc! {"episodeId": ep.as_str(), "chunkNumber": {"$lt": below}})
                .sort(doc! {"chunkNumber": 1})
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// Deletes the records of one episode's chunks numbered below `below`.
    pub async fn delete_chunks_below(&self, ep: &EpisodeId, below: i32) -> Result<u64, MongoError> {
        Ok(self
            .timed(
                "delete expired chunk records",
                self.chunks
                    .delete_many(doc! {"episodeId": ep.as_str(), "chunkNumber": {"$lt": below}})
                    .into_future(),
            )
            .await?
            .deleted_count)
    }

    /// Deletes the dedup records of one episode's messages that start below `below`.
    pub async fn delete_archived_messages_below(
        &self,
        ep: &EpisodeId,
        below: i64,
    ) -> Result<u64, MongoError> {
        Ok(self
            .timed(
                "delete expired dedup records",
                self.messages
                    .delete_many(doc! {"episodeId": ep.as_str(), "firstSequence": {"$lt": below}})
                    .into_future(),
            )
            .await?
            .deleted_count)
    }

    /// Sets (or with `None` removes) an episode's retention override, by compare-and-set.
    /// Returns the LogMetadata as written; `None` when the episode has none.
    pub async fn set_retention_override(
        &self,
        ep: &EpisodeId,
        value: Option<crate::model::RetentionOverride>,
    ) -> Result<Option<LogMetadata>, MongoError> {
        let updated = self
            .update_metadata(ep, None, |m| {
                m.retention_override = value.clone();
                Ok::<_, MongoError>(super::Decision::Write(()))
            })
            .await?;
        Ok(updated.map(|u| u.metadata))
    }

    /// How many dedup records one episode has (tests and checks).
    pub async fn count_archived_messages_of(&self, ep: &EpisodeId) -> Result<u64, MongoError> {
        self.timed(
            "count dedup records",
            self.messages
                .count_documents(doc! {"episodeId": ep.as_str()})
                .into_future(),
        )
        .await
    }

    /// Inserts LogMetadata documents as given (benches and tests that need many episodes).
    pub async fn insert_metadata_many(&self, docs: &[LogMetadata]) -> Result<(), MongoError> {
        for part in docs.chunks(1_000) {
            self.timed(
                "insert LogMetadata",
                self.metadata.insert_many(part).into_future(),
            )
            .await?;
        }
        Ok(())
    }
}
