//! MongoDB adapter: the schema's three collections (and the added MessageLedger, IngestEpoch
//! and write-lock ones) behind named operations.
//!
//! Layout:
//! - this file: [`MongoStore`] (one client, private collections), start-up (`ensure_indexes`),
//!   readiness, and what the server can do;
//! - [`entries`]: LogEntry: insert a batch, the range an archive run reads, the hot page of a
//!   read, deletes of archived entries and of a range being numbered again;
//! - [`messages`]: what the store knows of incoming messages (first entries, archived
//!   messages' dedup records in MessageLedger), and those records' expiry;
//! - [`epochs`]: the ingest ownership epochs (IngestEpoch);
//! - [`chunks`]: LogChunk: record a chunk, committed chunks, the chunks a read opens, touch;
//! - [`metadata`]: LogMetadata: read, create, [`MongoStore::update_metadata`] (the one
//!   compare-and-set loop), the episode list and the sweep's query;
//! - `episode_list`: LogMetadata read for the episode list by id range or latest log (query-api's
//!   viewer);
//! - [`lease`]: the archive lock (`isArchiving` + `archiveLease`): acquire, renew, release,
//!   describe;
//! - [`indexes`]: the schema's indexes and how they compare with what exists;
//! - `retention`: the retention pass's indexed candidate queries and its deletes.
//!
//! Only operations that MongoDB, DocumentDB, FerretDB and the test stand-in all implement alike
//! are used: full-document inserts (no upsert with `$setOnInsert`), `insertMany` whose
//! duplicate-key errors are absorbed by unique indexes, range reads and deletes, and
//! compare-and-set replacement of a LogMetadata document (`findOneAndReplace` filtered on
//! `version`). Where a server differs, `docs/mongodb-servers.md` says how this module copes.

mod chunks;
mod entries;
mod episode_list;
mod epochs;
mod indexes;
pub mod lease;
mod messages;
mod metadata;
mod retention;

use std::sync::Arc;

use bson::{Document, doc};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, CollectionOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use tokio::sync::OnceCell;

use crate::config::MongoSettings;
use crate::model::{ArchivedMessage, LogChunk, LogEntry, LogMetadata};
use crate::retry::TimedOut;

pub use chunks::{ChunkRange, RecordedChunk};
pub use entries::{HotRange, InsertOutcome, Refused};
pub use episode_list::IdRange;
pub use metadata::{Decision, Updated};

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's NamespaceNotFound error code (listIndexes of a collection that does not exist).
pub const NAMESPACE_NOT_FOUND: i32 = 26;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("MongoDB: {0}")]
    Driver(#[from] mongodb::error::Error),
    #[error("MongoDB returned a document that does not decode: {0}")]
    Decode(#[from] bson::de::Error),
    /// A document that must exist is gone (deleted by someone else meanwhile).
    #[error("MongoDB: {0}")]
    Missing(String),
    /// A call took longer than `mongo.op_timeout_secs` and was abandoned.
    #[error("MongoDB: {0}")]
    TimedOut(#[from] TimedOut),
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
    /// Whether retrying cannot help: the state needs an operator, not a reconnection.
    pub fn is_fatal(&self) -> bool {
        matches!(self, MongoError::IndexConflict { .. })
    }

    /// Whether the error is an outage that retrying can outlast (the server or the network is
    /// down, slow or failing over), as opposed to the server refusing what was sent.
    pub fn is_transient(&self) -> bool {
        match self {
            MongoError::TimedOut(_) | MongoError::Missing(_) => true,
            MongoError::Decode(_) | MongoError::IndexConflict { .. } => false,
            MongoError::Driver(e) => is_transient_driver_error(e),
        }
    }
}

/// Server error codes that mean "not now" rather than "not this": failovers, shutdowns,
/// network trouble, time limits (MongoDB's `error_codes.yml`).
const TRANSIENT_CODES: [i32; 16] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 134, 112,
];

/// The driver's error: I/O, server selection, pool and write-concern trouble and the codes
/// above are transient; the rest (a document refused, a bad command) are not.
pub fn is_transient_driver_error(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};
    if e.contains_label(RETRYABLE_WRITE_ERROR) || e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Internal { .. } => true,
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::Write(WriteFailure::WriteError(we)) => TRANSIENT_CODES.contains(&we.code),
        ErrorKind::Command(ce) => TRANSIENT_CODES.contains(&ce.code),
        ErrorKind::InsertMany(ime) => {
            ime.write_concern_error.is_some()
                || ime
                    .write_errors
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|w| TRANSIENT_CODES.contains(&w.code))
        }
        _ => false,
    }
}

/// The longest an index build at start-up is waited for before the start-up tries again.
const INDEX_BUILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The three collections on one client (one connection pool). Cheap to clone.
#[derive(Clone, Debug)]
pub struct MongoStore {
    client: Client,
    /// Database holding the collections.
    database: String,
    entries: Collection<LogEntry>,
    chunks: Collection<LogChunk>,
    metadata: Collection<LogMetadata>,
    /// Per-episode write locks, used only where a filtered update is not atomic.
    write_locks: Collection<Document>,
    /// Dedup records of archived messages.
    messages: Collection<ArchivedMessage>,
    /// Ingest ownership epochs.
    epochs: Collection<Document>,
    /// Longest any one call may take.
    op_timeout: std::time::Duration,
    /// `mongo.atomic_updates`: `auto`, `true` or `false`.
    atomic_setting: String,
    /// Whether filtered updates are atomic here, settled on first use.
    atomic: Arc<OnceCell<bool>>,
}

impl MongoStore {
    /// A client for the configured server. Connects lazily: a server that is down makes the
    /// first operation fail, not this call.
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
            write_locks: db.collection_with_options(&s.write_lock_collection, with_wc()),
            messages: db.collection_with_options(&s.message_ledger_collection, with_wc()),
            epochs: db.collection_with_options(&s.ingest_epoch_collection, with_wc()),
            op_timeout: s.op_timeout(),
            database: s.database.clone(),
            atomic_setting: s.atomic_updates.clone(),
            atomic: Arc::new(OnceCell::new()),
            client,
        })
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
        let db = self.client.database(&self.database);
        for (collection, wanted) in [
            (self.entries.name(), indexes::log_entry()),
            (self.chunks.name(), indexes::log_chunk()),
            (self.metadata.name(), indexes::log_metadata()),
            (self.messages.name(), indexes::message_ledger()),
            (self.epochs.name(), indexes::ingest_epoch()),
        ] {
            let coll = db.collection::<Document>(collection);
            let listed = crate::retry::within("list indexes", self.op_timeout, async {
                coll.list_indexes()
                    .await?
                    .try_collect::<Vec<IndexModel>>()
                    .await
            })
            .await?;
            let existing: Vec<IndexModel> = match listed {
                Ok(existing) => existing,
                // The collection does not exist yet: it has no index.
                Err(e) if command_code(&e) == Some(NAMESPACE_NOT_FOUND) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            for spec in wanted {
                let conflict = |detail: String| MongoError::IndexConflict {
                    collection: collection.to_owned(),
                    index: spec.name.to_owned(),
                    detail,
                };
                match spec.compare(&existing) {
                    indexes::IndexState::Present => {}
                    indexes::IndexState::Conflict(detail) => return Err(conflict(detail)),
                    indexes::IndexState::Missing => {
                        // Building an index over existing documents can take long: bounded
                        // all the same, past which the start-up retries (the server goes on
                        // building it meanwhile).
                        let created = crate::retry::within(
                            "create an index",
                            self.op_timeout.max(INDEX_BUILD_LIMIT),
                            std::future::IntoFuture::into_future(coll.create_index(spec.model())),
                        )
                        .await?;
                        if let Err(e) = created {
                            // An outage is retried by the start-up. Anything else the server
                            // answered (options conflict, duplicate rows under a unique index
                            // being built, a refusal without a code) is no outage: name the
                            // index, give the server's words, and stop.
                            if is_transient_driver_error(&e) {
                                return Err(e.into());
                            }
                            let said = e
                                .server_response()
                                .and_then(|r| r.get_str("errmsg").ok())
                                .map(|m| format!(": the server says \"{m}\""))
                                .unwrap_or_default();
                            return Err(conflict(match command_code(&e) {
                                Some(code) => {
                                    format!("createIndexes failed with code {code}{said}: {e}")
                                }
                                None => format!("createIndexes failed{said}: {e}"),
                            }));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs one call with the store's time limit (`mongo.op_timeout_secs`).
    async fn timed<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, mongodb::error::Error>>,
    ) -> Result<T, MongoError> {
        Ok(crate::retry::within(what, self.op_timeout, call).await??)
    }

    /// Opens a cursor within the store's time limit; each later batch it reads is bounded by
    /// the same limit (see [`TimedCursor`]). `what` names the read in a timeout's error.
    async fn open_cursor<T>(
        &self,
        what: &'static str,
        open: impl std::future::Future<Output = Result<mongodb::Cursor<T>, mongodb::error::Error>>,
    ) -> Result<TimedCursor<T>, MongoError> {
        Ok(TimedCursor {
            inner: self.timed(what, open).await?,
            limit: self.op_timeout,
            what,
        })
    }

    /// Round trip to the server, within the store's time limit; used by readiness checks and
    /// reconnection loops.
    pub async fn ping(&self) -> Result<(), MongoError> {
        self.timed("ping", async {
            let admin = self.client.database("admin");
            admin.run_command(doc! {"ping": 1}).await
        })
        .await?;
        Ok(())
    }

    /// Drops the whole database (tests and benches clean up their fresh databases with it).
    pub async fn drop_database(&self) -> Result<(), MongoError> {
        self.timed(
            "drop the database",
            self.client.database(&self.database).drop().into_future(),
        )
        .await
    }

    /// Longest any one call may take (`mongo.op_timeout_secs`).
    pub fn op_timeout(&self) -> std::time::Duration {
        self.op_timeout
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Whether the server applies a filtered update atomically (settled once per store).
    ///
    /// MongoDB and DocumentDB do: a `findOneAndReplace` filtered on `version` is a
    /// compare-and-set. FerretDB 1.x reads the matching document and writes it back by `_id`
    /// in two steps, so two writers can both "win" (seen here: up to 4 of 16 concurrent
    /// writers). `auto` asks `buildInfo`: a `ferretdbVersion` field means FerretDB.
    async fn atomic_updates(&self) -> Result<bool, MongoError> {
        let v = self
            .atomic
            .get_or_try_init(|| async {
                Ok::<_, MongoError>(match self.atomic_setting.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        let info = self
                            .client
                            .database("admin")
                            .run_command(doc! {"buildInfo": 1})
                            .await?;
                        let ferretdb = info.contains_key("ferretdbVersion");
                        tracing::info!(
                            ferretdb,
                            version = info.get_str("version").unwrap_or("?"),
                            "MongoDB-protocol server identified"
                        );
                        !ferretdb
                    }
                })
            })
            .await?;
        Ok(*v)
    }
}

/// Whether a driver error is a duplicate-key refusal of a single write.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    command_code(e) == Some(DUPLICATE_KEY)
}

/// The server's error code of a command or write error, if the error is one.
fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(ce) => Some(ce.code),
        ErrorKind::Write(WriteFailure::WriteError(we)) => Some(we.code),
        _ => None,
    }
}

/// A server cursor read one document at a time, each round trip to the server (the first
/// batch, every `getMore`) within the store's time limit: a server that stalls mid-read fails
/// the read with [`MongoError::TimedOut`] instead of holding it forever. The driver's cursor
/// stays inside this module.
pub struct TimedCursor<T> {
    /// The driver's cursor.
    inner: mongodb::Cursor<T>,
    /// Longest one round trip may take (`mongo.op_timeout_secs`).
    limit: std::time::Duration,
    /// What is being read, for the timeout's error.
    what: &'static str,
}

impl<T> TimedCursor<T>
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    /// The next document, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<T>, MongoError> {
        Ok(crate::retry::within(self.what, self.limit, self.inner.try_next()).await??)
    }

    /// Every remaining document.
    pub async fn collect(mut self) -> Result<Vec<T>, MongoError> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await? {
            out.push(d);
        }
        Ok(out)
    }
}
