//! MongoDB adapter: the three collections, their indexes, and the portable write patterns.
//!
//! Only operations that MongoDB, DocumentDB, FerretDB and the test stand-in all implement alike
//! are used: full-document inserts (no upsert with `$setOnInsert`), unordered `insertMany` whose
//! duplicate-key errors are absorbed by unique indexes, range deletes, and compare-and-set
//! replacement of a LogMetadata document (`findOneAndReplace` filtered on `version`).

use bson::{Document, doc};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, ReturnDocument, WriteConcern,
};
use mongodb::{Client, Collection, IndexModel};

use crate::config::MongoSettings;
use crate::domain::EpisodeId;
use crate::model::{LogChunk, LogEntry, LogMetadata};

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("MongoDB: {0}")]
    Driver(#[from] mongodb::error::Error),
    #[error("MongoDB returned a document that does not decode: {0}")]
    Decode(#[from] bson::de::Error),
}

/// Handles on the three collections, sharing one client (and so one connection pool).
#[derive(Clone, Debug)]
pub struct MongoStore {
    pub client: Client,
    pub entries: Collection<LogEntry>,
    pub chunks: Collection<LogChunk>,
    pub metadata: Collection<LogMetadata>,
}

/// Result of writing a batch of LogEntries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: usize,
    /// Entries refused by the unique [episodeId, sequenceNumber] index: written by an earlier try.
    pub duplicates: usize,
}

impl MongoStore {
    pub async fn connect(s: &MongoSettings) -> Result<Self, MongoError> {
        let mut opts = ClientOptions::parse(&s.uri).await?;
        opts.app_name.get_or_insert_with(|| "logfleet".into());
        let client = Client::with_options(opts)?;
        let w = match s.write_concern.as_str() {
            "majority" => Acknowledgment::Majority,
            n => Acknowledgment::Nodes(n.parse().unwrap_or(1)),
        };
        let wc = WriteConcern::builder().w(w).journal(s.journal).build();
        let db = client.database(&s.database);
        let with_wc = || {
            CollectionOptions::builder()
                .write_concern(wc.clone())
                .build()
        };
        Ok(Self {
            entries: db.collection_with_options(&s.log_entry_collection, with_wc()),
            chunks: db.collection_with_options(&s.log_chunk_collection, with_wc()),
            metadata: db.collection_with_options(&s.log_metadata_collection, with_wc()),
            client,
        })
    }

    /// Creates every index of the schema. Idempotent: creating an existing index is a no-op.
    pub async fn ensure_indexes(&self) -> Result<(), MongoError> {
        fn idx(keys: Document, name: &str, unique: bool) -> IndexModel {
            let o = IndexOptions::builder()
                .name(name.to_owned())
                .unique(unique.then_some(true))
                .build();
            IndexModel::builder().keys(keys).options(o).build()
        }
        self.entries
            .create_indexes([
                idx(
                    doc! {"episodeId": 1, "sequenceNumber": 1},
                    "episodeId_sequenceNumber",
                    true,
                ),
                idx(
                    doc! {"episodeId": 1, "timestamp": 1},
                    "episodeId_timestamp",
                    false,
                ),
                idx(doc! {"episodeId": 1, "level": 1}, "episodeId_level", false),
                idx(
                    doc! {"episodeId": 1, "createdAt": 1},
                    "episodeId_createdAt",
                    false,
                ),
            ])
            .await?;
        self.chunks
            .create_indexes([
                idx(
                    doc! {"episodeId": 1, "chunkNumber": 1},
                    "episodeId_chunkNumber",
                    true,
                ),
                idx(doc! {"episodeId": 1}, "episodeId", false),
                idx(
                    doc! {"startTime": 1, "endTime": 1},
                    "startTime_endTime",
                    false,
                ),
            ])
            .await?;
        self.metadata
            .create_indexes([
                idx(doc! {"episodeId": 1}, "episodeId", true),
                idx(doc! {"currentLogs": 1}, "currentLogs", false),
                // The episode list by latest log (query-api's viewer).
                idx(
                    doc! {"lastLogAt": -1, "episodeId": 1},
                    "lastLogAt_episodeId",
                    false,
                ),
            ])
            .await?;
        Ok(())
    }

    /// Round trip to the server; used by readiness checks and reconnection loops.
    pub async fn ping(&self) -> Result<(), MongoError> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        Ok(())
    }

    pub async fn metadata_of(&self, ep: &EpisodeId) -> Result<Option<LogMetadata>, MongoError> {
        Ok(self
            .metadata
            .find_one(doc! {"episodeId": ep.as_str()})
            .await?)
    }

    /// The episode's LogMetadata, inserting one with the schema's defaults if it has none yet.
    pub async fn metadata_or_create(
        &self,
        ep: &EpisodeId,
        archive_threshold: i32,
        chunk_size: i32,
    ) -> Result<LogMetadata, MongoError> {
        if let Some(m) = self.metadata_of(ep).await? {
            return Ok(m);
        }
        let fresh = LogMetadata::new(
            ep.clone(),
            archive_threshold,
            chunk_size,
            bson::DateTime::now(),
        );
        match self.metadata.insert_one(&fresh).await {
            Ok(_) => Ok(fresh),
            // Another worker created it first: use theirs.
            Err(e) if is_duplicate_key(&e) => Ok(self.metadata_of(ep).await?.ok_or(e)?),
            Err(e) => Err(e.into()),
        }
    }

    /// Compare-and-set: replaces the episode's LogMetadata with `new` only if its `version` is
    /// still `expected_version`. Returns false when another writer got there first.
    pub async fn replace_metadata(
        &self,
        expected_version: i64,
        new: &LogMetadata,
    ) -> Result<bool, MongoError> {
        let replaced = self
            .metadata
            .find_one_and_replace(
                doc! {"episodeId": new.episode_id.as_str(), "version": expected_version},
                new,
            )
            .return_document(ReturnDocument::After)
            .await?;
        Ok(replaced.is_some())
    }

    /// Writes entries with one unordered insertMany. Duplicates of (episodeId, sequenceNumber),
    /// left by an earlier try of the same message, are counted, not failed.
    pub async fn insert_entries(&self, entries: &[LogEntry]) -> Result<InsertOutcome, MongoError> {
        if entries.is_empty() {
            return Ok(InsertOutcome::default());
        }
        match self.entries.insert_many(entries).ordered(false).await {
            Ok(r) => Ok(InsertOutcome {
                inserted: r.inserted_ids.len(),
                duplicates: 0,
            }),
            Err(e) => {
                if let ErrorKind::InsertMany(ime) = e.kind.as_ref() {
                    let wes = ime.write_errors.as_deref().unwrap_or_default();
                    if ime.write_concern_error.is_none()
                        && !wes.is_empty()
                        && wes.iter().all(|w| w.code == DUPLICATE_KEY)
                    {
                        return Ok(InsertOutcome {
                            inserted: entries.len() - wes.len(),
                            duplicates: wes.len(),
                        });
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Entries of one episode with `start <= sequenceNumber < end`, in sequence order.
    pub async fn entries_in_range(
        &self,
        ep: &EpisodeId,
        start: i64,
        end: i64,
    ) -> Result<mongodb::Cursor<LogEntry>, MongoError> {
        Ok(self
            .entries
            .find(doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$gte": start, "$lt": end}})
            .sort(doc! {"sequenceNumber": 1})
            .batch_size(5_000)
            .await?)
    }

    /// Deletes the entries of one episode with `sequenceNumber < below` (archived ones).
    pub async fn delete_entries_below(
        &self,
        ep: &EpisodeId,
        below: i64,
    ) -> Result<u64, MongoError> {
        let r = self
            .entries
            .delete_many(doc! {"episodeId": ep.as_str(), "sequenceNumber": {"$lt": below}})
            .await?;
        Ok(r.deleted_count)
    }

    pub async fn chunk_of(
        &self,
        ep: &EpisodeId,
        chunk_number: i32,
    ) -> Result<Option<LogChunk>, MongoError> {
        Ok(self
            .chunks
            .find_one(doc! {"episodeId": ep.as_str(), "chunkNumber": chunk_number})
            .await?)
    }

    pub async fn chunks_of(&self, ep: &EpisodeId) -> Result<Vec<LogChunk>, MongoError> {
        Ok(self
            .chunks
            .find(doc! {"episodeId": ep.as_str()})
            .sort(doc! {"chunkNumber": 1})
            .await?
            .try_collect()
            .await?)
    }
}

/// Whether a driver error is a duplicate-key refusal of a single write.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == DUPLICATE_KEY,
        ErrorKind::Command(ce) => ce.code == DUPLICATE_KEY,
        _ => false,
    }
}
