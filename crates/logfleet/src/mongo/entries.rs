//! LogEntry: the hot tier.

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::error::ErrorKind;

use super::{DUPLICATE_KEY, MongoError, MongoStore, TimedCursor};
use crate::domain::{EpisodeId, LogLevel};
use crate::model::LogEntry;

/// Most entries one delete removes: FerretDB on SQLite deletes the matching `_id`s with one
/// `IN (...)` list and refuses more than 32,766 of them ("too many SQL variables").
const DELETE_WINDOW: i64 = 10_000;

/// Result of writing a batch of LogEntries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Entries written now.
    pub inserted: usize,
    /// Entries refused as duplicates (their `_id` or their [episodeId, sequenceNumber]): written
    /// by an earlier try.
    pub duplicates: usize,
    /// Entries the server refused for good (not a duplicate, not an outage).
    pub refused: Vec<Refused>,
}

/// One entry the server refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its position in the slice given.
    pub index: usize,
    /// The server's error code.
    pub code: i32,
    /// The server's reason.
    pub message: String,
}

/// What a read asks of the hot tier: `lo <= sequenceNumber < hi`, optionally a time range
/// (`start <= timestamp < end`) and levels, in sequence order.
#[derive(Debug, Clone, Default)]
pub struct HotRange {
    /// First sequence number included.
    pub lo: i64,
    /// First sequence number excluded.
    pub hi: i64,
    /// Earliest timestamp included, if any.
    pub time_start: Option<DateTime>,
    /// Earliest timestamp excluded, if any.
    pub time_end: Option<DateTime>,
    /// Levels wanted; empty means all.
    pub levels: Vec<LogLevel>,
    /// Newest first.
    pub descending: bool,
    /// Most entries the server returns, when the caller needs no more.
    pub limit: Option<i64>,
    /// Entries per server round trip.
    pub batch_size: u32,
}

/// A sequence number as stored, whatever integer width the server hands back.
fn seq_of(d: &Document) -> Option<i64> {
    match d.get("sequenceNumber") {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        _ => None,
    }
}

impl MongoStore {
    /// Writes entries with one unordered insertMany. Duplicates, left by an earlier try of the
    /// same message, are counted, not failed; entries the server refuses for good are listed
    /// (the others are written). An outage, or a refusal of the whole call, is an error.
    pub async fn insert_entries(&self, entries: &[LogEntry]) -> Result<InsertOutcome, MongoError> {
        if entries.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let r = self
            .timed(
                "insert entries",
                self.entries
                    .insert_many(entries)
                    .ordered(false)
                    .into_future(),
            )
            .await;
        match r {
            Ok(r) => Ok(InsertOutcome {
                inserted: r.inserted_ids.len(),
                ..Default::default()
            }),
            Err(MongoError::Driver(e)) => {
                if let ErrorKind::InsertMany(ime) = e.kind.as_ref()
                    && ime.write_concern_error.is_none()
                    && !super::is_transient_driver_error(&e)
                {
                    let wes = ime.write_errors.as_deref().unwrap_or_default();
                    if !wes.is_empty() {
                        let duplicates = wes.iter().filter(|w| w.code == DUPLICATE_KEY).count();
                        let refused: Vec<Refused> = wes
                            .iter()
                            .filter(|w| w.code != DUPLICATE_KEY)
                            .map(|w| Refused {
                                index: w.index,
                                code: w.code,
                                message: w.message.clone(),
                            })
                            .collect();
                        return Ok(InsertOutcome {
                            inserted: entries.len() - wes.len(),
                            duplicates,
                            refused,
                        });
                    }
                }
                Err(e.into())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes one episode's uncounted entries with `lo <= sequenceNumber < hi` (a range a
    /// batch is renumbering, or another owner's leftovers) that an owner of at most `epoch`
    /// wrote, or no ingest-worker at all. A newer owner's entries stay: a worker that paused
    /// before this delete cannot remove what its successor wrote and counted meanwhile.
    /// (Two deletes, not one `$or`: the portable subset of the servers, `docs/mongodb-servers.md`.)
    /// A failed owner's batch can leave hundreds of thousands, so the range is deleted a window
    /// of [`DELETE_WINDOW`] sequence numbers at a time: no delete matches more than FerretDB
    /// takes (F4), and no find is needed, which costs a scan there. An open range (`hi` =
    /// `i64::MAX`, another owner's leftovers from the frontier up) ends at the first window
    /// that was not full: leftovers are numbered up from the frontier, and any left beyond a
    /// gap are found and removed by the batch that numbers over them, as every batch checks
    /// its range after a duplicate. Most clean-ups thus take one window: two deletes.
    pub async fn delete_uncounted_entries(
        &self,
        ep: &EpisodeId,
        lo: i64,
        hi: i64,
        epoch: i64,
    ) -> Result<u64, MongoError> {
        let mut deleted = 0;
        let mut start = lo;
        while start < hi {
            let end = hi.min(start.saturating_add(DELETE_WINDOW));
            let range =
                doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$gte": start, "$lt": end}};
            let before = deleted;
            for writer in [
                doc! {"ingestEpoch": {"$lte": epoch}},
                doc! {"ingestEpoch": {"$exists": false}},
            ] {
                let mut filter = range.clone();
                filter.extend(writer);
                deleted += self
                    .timed(
                        "delete uncounted entries",
                        self.entries.delete_many(filter).into_future(),
                    )
                    .await?
                    .deleted_count;
            }
            if hi == i64::MAX && deleted - before < DELETE_WINDOW as u64 {
                break;
            }
            start = end;
        }
        Ok(deleted)
    }

    /// The `_id` and the writer's epoch (`ingestEpoch`, absent: none) of every entry of one
    /// episode with `start <= sequenceNumber < end`, by sequence number: what a batch checks
    /// its range holds before counting it.
    pub async fn entry_ids_in(
        &self,
        ep: &EpisodeId,
        start: i64,
        end: i64,
    ) -> Result<std::collections::HashMap<i64, (ObjectId, Option<i64>)>, MongoError> {
        let raw = self.entries.clone_with_type::<Document>();
        let docs: Vec<Document> = self
            .timed("read a range's entry ids", async {
                raw.find(
                    doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$gte": start, "$lt": end}},
                )
                .projection(doc! {"_id": 1, "sequenceNumber": 1, "ingestEpoch": 1})
                .batch_size(10_000)
                .await?
                .try_collect()
                .await
            })
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let epoch = match d.get("ingestEpoch") {
                    Some(Bson::Int64(v)) => Some(*v),
                    Some(Bson::Int32(v)) => Some(i64::from(*v)),
                    _ => None,
                };
                Some((seq_of(d)?, (d.get_object_id("_id").ok()?, epoch)))
            })
            .collect())
    }

    /// Entries of one episode with `start <= sequenceNumber < end`, in sequence order (what an
    /// archive run reads into a chunk).
    pub async fn entries_in_range(
        &self,
        ep: &EpisodeId,
        start: i64,
        end: i64,
    ) -> Result<TimedCursor<LogEntry>, MongoError> {
        self.open_cursor(
            "read a range of entries",
            self.entries
                .find(
                    doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$gte": start, "$lt": end}},
                )
                .sort(doc! {"sequenceNumber": 1})
                .batch_size(5_000)
                .into_future(),
        )
        .await
    }

    /// The hot entries a read asks for (see [`HotRange`]).
    pub async fn hot_entries(
        &self,
        ep: &EpisodeId,
        r: &HotRange,
    ) -> Result<TimedCursor<LogEntry>, MongoError> {
        let mut filter = doc! {
            "episodeId": ep.as_str(),
            "sequenceNumber": {"$gte": r.lo, "$lt": r.hi},
        };
        let mut time = Document::new();
        if let Some(s) = r.time_start {
            time.insert("$gte", s);
        }
        if let Some(e) = r.time_end {
            time.insert("$lt", e);
        }
        if !time.is_empty() {
            filter.insert("timestamp", time);
        }
        if !r.levels.is_empty() {
            let levels: Vec<&str> = r.levels.iter().map(|l| l.as_str()).collect();
            filter.insert("level", doc! {"$in": levels});
        }
        let dir = if r.descending { -1 } else { 1 };
        let mut find = self
            .entries
            .find(filter)
            .sort(doc! {"sequenceNumber": dir})
            .batch_size(r.batch_size.max(1));
        if let Some(limit) = r.limit {
            find = find.limit(limit);
        }
        self.open_cursor("read hot entries", find.into_future())
            .await
    }

    /// Deletes the entries of one episode with `sequenceNumber < below` (archived ones), at most
    /// [`DELETE_WINDOW`] sequence numbers per delete.
    pub async fn delete_entries_below(
        &self,
        ep: &EpisodeId,
        below: i64,
    ) -> Result<u64, MongoError> {
        let raw = self.entries.clone_with_type::<Document>();
        let mut deleted = 0;
        loop {
            let lowest = self
                .timed(
                    "find the lowest archived entry",
                    raw.find_one(doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$lt": below}})
                        .sort(doc! {"sequenceNumber": 1})
                        .projection(doc! {"sequenceNumber": 1, "_id": 0})
                        .into_future(),
                )
                .await?;
            let Some(lo) = lowest.as_ref().and_then(seq_of) else {
                return Ok(deleted);
            };
            let hi = below.min(lo.saturating_add(DELETE_WINDOW));
            deleted += self
                .timed(
                    "delete archived entries",
                    self.entries
                        .delete_many(
                            doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$gte": lo, "$lt": hi}},
                        )
                        .into_future(),
                )
                .await?
                .deleted_count;
        }
    }

    /// Every hot entry of one episode, archived or not yet deleted, in sequence order (tests
    /// and checks that look at storage from the outside).
    pub async fn all_entries(&self, ep: &EpisodeId) -> Result<Vec<LogEntry>, MongoError> {
        Ok(self
            .entries
            .find(doc! {"episodeId": ep.as_str()})
            .sort(doc! {"sequenceNumber": 1})
            .await?
            .try_collect()
            .await?)
    }

    /// How many entries of one episode have `sequenceNumber >= from`.
    pub async fn count_entries_from(&self, ep: &EpisodeId, from: i64) -> Result<u64, MongoError> {
        self.timed(
            "count entries",
            self.entries
                .count_documents(doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$gte": from}})
                .into_future(),
        )
        .await
    }

    /// How many entries the collection holds, all episodes together.
    pub async fn count_all_entries(&self) -> Result<u64, MongoError> {
        self.timed(
            "count all entries",
            self.entries.count_documents(doc! {}).into_future(),
        )
        .await
    }
}
