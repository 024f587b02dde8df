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
    /// An index of the schema clashes with one that exists: fix the index by hand (drop or
    /// rename it, or remove the duplicate rows), then start again.
    #[error(
        "MongoDB index {index:?} of collection {collection:?} conflicts with what exists: {detail}"
    )]
    IndexConflict {
        collection: String,
        index: String,
        detail: String,
    },
}

impl MongoError {
    /// Whether retrying may help (an outage), as opposed to a state that needs an operator.
    pub fn is_fatal(&self) -> bool {
        matches!(self, MongoError::IndexConflict { .. })
    }
}

/// MongoDB's NamespaceNotFound error code (listIndexes of a collection that does not exist).
pub const NAMESPACE_NOT_FOUND: i32 = 26;

/// One index of the schema: its name, keys and whether it is unique.
#[derive(Debug, Clone)]
struct IndexSpec {
    name: &'static str,
    keys: Document,
    unique: bool,
}

/// How a wanted index compares with what a collection has.
#[derive(Debug, PartialEq)]
enum IndexState {
    Present,
    Missing,
    Conflict(String),
}

impl IndexSpec {
    fn new(name: &'static str, keys: Document, unique: bool) -> Self {
        Self { name, keys, unique }
    }

    fn model(&self) -> IndexModel {
        let o = IndexOptions::builder()
            .name(self.name.to_owned())
            .unique(self.unique.then_some(true))
            .build();
        IndexModel::builder()
            .keys(self.keys.clone())
            .options(o)
            .build()
    }

    /// Compares with the indexes a collection has: the same name and keys and uniqueness is
    /// present; the same name with other keys or uniqueness, or the same keys under another
    /// name, is a conflict.
    fn compare(&self, existing: &[IndexModel]) -> IndexState {
        for idx in existing {
            let name = idx.options.as_ref().and_then(|o| o.name.as_deref());
            let unique = idx.options.as_ref().and_then(|o| o.unique) == Some(true);
            let same_keys = same_index_keys(&idx.keys, &self.keys);
            if name == Some(self.name) {
                return if same_keys && unique == self.unique {
                    IndexState::Present
                } else {
                    IndexState::Conflict(format!(
                        "an index of that name exists with keys {} (unique: {unique}); wanted keys {} (unique: {})",
                        idx.keys, self.keys, self.unique
                    ))
                };
            }
            if same_keys {
                return IndexState::Conflict(format!(
                    "the keys {} are indexed already under the name {:?} (unique: {unique})",
                    self.keys,
                    name.unwrap_or("?")
                ));
            }
        }
        IndexState::Missing
    }
}

/// Whether two index key documents name the same fields in the same order and directions,
/// whatever numeric type each direction was stored with (1, 1i64, 1.0).
fn same_index_keys(a: &Document, b: &Document) -> bool {
    fn dir(v: &bson::Bson) -> Option<f64> {
        match v {
            bson::Bson::Int32(n) => Some(f64::from(*n)),
            bson::Bson::Int64(n) => Some(*n as f64),
            bson::Bson::Double(n) => Some(*n),
            _ => None,
        }
    }
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && dir(va).is_some() && dir(va) == dir(vb))
}

/// The server's error code of a command or write error, if the error is one.
fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(ce) => Some(ce.code),
        ErrorKind::Write(WriteFailure::WriteError(we)) => Some(we.code),
        _ => None,
    }
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

    /// The indexes of the schema, per collection (`_id` aside).
    fn wanted_indexes(&self) -> [(&str, Vec<IndexSpec>); 3] {
        [
            (
                self.entries.name(),
                vec![
                    IndexSpec::new(
                        "episodeId_sequenceNumber",
                        doc! {"episodeId": 1, "sequenceNumber": 1},
                        true,
                    ),
                    IndexSpec::new(
                        "episodeId_timestamp",
                        doc! {"episodeId": 1, "timestamp": 1},
                        false,
                    ),
                    IndexSpec::new("episodeId_level", doc! {"episodeId": 1, "level": 1}, false),
                    IndexSpec::new(
                        "episodeId_createdAt",
                        doc! {"episodeId": 1, "createdAt": 1},
                        false,
                    ),
                ],
            ),
            (
                self.chunks.name(),
                vec![
                    IndexSpec::new(
                        "episodeId_chunkNumber",
                        doc! {"episodeId": 1, "chunkNumber": 1},
                        true,
                    ),
                    IndexSpec::new("episodeId", doc! {"episodeId": 1}, false),
                    IndexSpec::new(
                        "startTime_endTime",
                        doc! {"startTime": 1, "endTime": 1},
                        false,
                    ),
                ],
            ),
            (
                self.metadata.name(),
                vec![
                    IndexSpec::new("episodeId", doc! {"episodeId": 1}, true),
                    IndexSpec::new("currentLogs", doc! {"currentLogs": 1}, false),
                    // The episode list by latest log (query-api's viewer).
                    IndexSpec::new(
                        "lastLogAt_episodeId",
                        doc! {"lastLogAt": -1, "episodeId": 1},
                        false,
                    ),
                ],
            ),
        ]
    }

    /// Creates every index of the schema that is missing. Idempotent.
    ///
    /// It lists each collection's indexes first and creates the missing ones one per
    /// `createIndexes` command. An index that exists under the same name with other keys or
    /// options, or with the same keys under another name, is a [`MongoError::IndexConflict`]
    /// naming it: a start-up error that retrying cannot mend. (FerretDB 1.24 also panics on a
    /// `createIndexes` that repeats three or more existing indexes in one command, so asking
    /// again for all of them at every start is not an option there.)
    pub async fn ensure_indexes(&self) -> Result<(), MongoError> {
        let db = self.client.database(self.entries.namespace().db.as_str());
        for (collection, wanted) in self.wanted_indexes() {
            let coll = db.collection::<Document>(collection);
            let existing: Vec<IndexModel> = match coll.list_indexes().await {
                Ok(cursor) => cursor.try_collect().await?,
                // The collection does not exist yet: it has no index.
                Err(e) if command_code(&e) == Some(NAMESPACE_NOT_FOUND) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            for spec in wanted {
                match spec.compare(&existing) {
                    IndexState::Present => {}
                    IndexState::Conflict(detail) => {
                        return Err(MongoError::IndexConflict {
                            collection: collection.to_owned(),
                            index: spec.name.to_owned(),
                            detail,
                        });
                    }
                    IndexState::Missing => {
                        if let Err(e) = coll.create_index(spec.model()).await {
                            // A server error (options conflict, duplicate rows under a unique
                            // index being built, ...) is no outage: name the index and stop.
                            if let Some(code) = command_code(&e) {
                                return Err(MongoError::IndexConflict {
                                    collection: collection.to_owned(),
                                    index: spec.name.to_owned(),
                                    detail: format!("createIndexes failed with code {code}: {e}"),
                                });
                            }
                            return Err(e.into());
                        }
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(name: &str, keys: Document, unique: bool) -> IndexModel {
        IndexSpec {
            name: Box::leak(name.to_owned().into_boxed_str()),
            keys,
            unique,
        }
        .model()
    }

    #[test]
    fn index_specs_compare_by_name_keys_and_uniqueness() {
        let want = IndexSpec::new(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": 1},
            true,
        );
        assert_eq!(want.compare(&[]), IndexState::Missing);
        // The server may store the directions as Int64 or Double.
        let same = existing(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1_i64, "sequenceNumber": 1.0},
            true,
        );
        assert_eq!(want.compare(&[same]), IndexState::Present);
        let other = existing("other", doc! {"episodeId": 1, "level": 1}, false);
        assert_eq!(want.compare(&[other]), IndexState::Missing);
        // Same name, not unique.
        let not_unique = existing(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": 1},
            false,
        );
        assert!(
            matches!(want.compare(&[not_unique]), IndexState::Conflict(d) if d.contains("unique: false"))
        );
        // Same name, other keys.
        let other_keys = existing(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": -1},
            true,
        );
        assert!(matches!(
            want.compare(&[other_keys]),
            IndexState::Conflict(_)
        ));
        // Same keys under another name.
        let renamed = existing("by_seq", doc! {"episodeId": 1, "sequenceNumber": 1}, true);
        assert!(
            matches!(want.compare(&[renamed]), IndexState::Conflict(d) if d.contains("by_seq"))
        );
        // Key order matters.
        assert!(!same_index_keys(
            &doc! {"a": 1, "b": 1},
            &doc! {"b": 1, "a": 1}
        ));
        assert!(!same_index_keys(&doc! {"a": "text"}, &doc! {"a": "text"}));
    }
}
