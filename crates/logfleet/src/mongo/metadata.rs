//! LogMetadata: reads, creation, and the one compare-and-set loop every writer goes through.

use std::time::Duration;

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;

use super::{MongoError, MongoStore, is_duplicate_key};
use crate::domain::EpisodeId;
use crate::model::LogMetadata;

/// How long a per-episode write lock lasts if its holder never releases it (it dies, or pauses
/// for longer). A write under the lock takes milliseconds.
const WRITE_LOCK_LEASE: Duration = Duration::from_secs(10);

/// What an update function decided.
#[derive(Debug)]
pub enum Decision<T> {
    /// Write the changed document (version bumped, `updatedAt` set), then return `T`.
    Write(T),
    /// Write nothing; return `T`.
    Keep(T),
}

/// The outcome of [`MongoStore::update_metadata`].
#[derive(Debug)]
pub struct Updated<T> {
    /// The document as written (or as read, when nothing was written).
    pub metadata: LogMetadata,
    /// What the update function returned.
    pub value: T,
    /// Whether a new version was written.
    pub written: bool,
}

impl MongoStore {
    /// The episode's LogMetadata, whole.
    pub async fn metadata_of(&self, ep: &EpisodeId) -> Result<Option<LogMetadata>, MongoError> {
        self.timed(
            "read LogMetadata",
            self.metadata
                .find_one(doc! {"episodeId": ep.as_str()})
                .into_future(),
        )
        .await
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
        let fresh = LogMetadata::new(ep.clone(), archive_threshold, chunk_size, DateTime::now());
        match crate::retry::within(
            "create LogMetadata",
            self.op_timeout,
            self.metadata.insert_one(&fresh).into_future(),
        )
        .await?
        {
            Ok(_) => Ok(fresh),
            // Another worker created it first: use theirs.
            Err(e) if is_duplicate_key(&e) => Ok(self.metadata_of(ep).await?.ok_or(e)?),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to the episode's LogMetadata by compare-and-set on `version`, and
    /// retries from a fresh read whenever another writer got there first. This is the only
    /// way LogMetadata is written after its creation.
    ///
    /// `change` sees a copy of the current document; when it returns [`Decision::Write`], the
    /// copy is written with `version` bumped and `updatedAt` set to now. `start`, when given,
    /// is used as the current document for the first try (a writer's cached copy; a stale one
    /// costs one conflict). Returns `None` when the episode has no LogMetadata.
    pub async fn update_metadata<T, E: From<MongoError>>(
        &self,
        ep: &EpisodeId,
        start: Option<LogMetadata>,
        mut change: impl FnMut(&mut LogMetadata) -> Result<Decision<T>, E>,
    ) -> Result<Option<Updated<T>>, E> {
        let mut current = start;
        loop {
            let read = match current.take() {
                Some(m) => m,
                None => match self.metadata_of(ep).await? {
                    Some(m) => m,
                    None => return Ok(None),
                },
            };
            let mut next = read.clone();
            let value = match change(&mut next)? {
                Decision::Keep(value) => {
                    return Ok(Some(Updated {
                        metadata: read,
                        value,
                        written: false,
                    }));
                }
                Decision::Write(value) => value,
            };
            next.version = read.version + 1;
            next.updated_at = DateTime::now();
            if self.compare_and_set(read.version, &next).await? {
                return Ok(Some(Updated {
                    metadata: next,
                    value,
                    written: true,
                }));
            }
            tracing::debug!(episode = %ep, "LogMetadata changed under us; re-reading");
        }
    }

    /// Replaces the episode's LogMetadata with `new` only if its `version` is still
    /// `expected_version`. Returns false when another writer got there first.
    ///
    /// Where the server does not apply a filtered update atomically (FerretDB 1.x), the
    /// replacement runs under the episode's write lock, so two writers never interleave inside
    /// the server's read-then-write; the version filter still turns away a writer whose read
    /// is stale, however long it paused.
    async fn compare_and_set(
        &self,
        expected_version: i64,
        new: &LogMetadata,
    ) -> Result<bool, MongoError> {
        let replace = || async {
            let replaced = self
                .timed(
                    "compare-and-set LogMetadata",
                    self.metadata
                        .find_one_and_replace(
                            doc! {"episodeId": new.episode_id.as_str(), "version": expected_version},
                            new,
                        )
                        .return_document(ReturnDocument::After)
                        .into_future(),
                )
                .await?;
            Ok::<_, MongoError>(replaced.is_some())
        };
        if self.atomic_updates().await? {
            return replace().await;
        }
        let token = self.lock_episode(&new.episode_id).await?;
        let result = replace().await;
        self.unlock_episode(&new.episode_id, &token).await;
        result
    }

    /// Takes the episode's write lock: inserts `{_id: episodeId, token, expiresAt}` (an insert
    /// against the unique `_id` is atomic on every server), waiting while another writer holds
    /// it and removing a lock whose lease ran out. Returns the token that releases it.
    async fn lock_episode(&self, ep: &EpisodeId) -> Result<String, MongoError> {
        let token = ObjectId::new().to_hex();
        let mut wait = Duration::from_millis(1);
        loop {
            let expires_at = DateTime::from_millis(
                DateTime::now().timestamp_millis() + WRITE_LOCK_LEASE.as_millis() as i64,
            );
            let lock = doc! {"_id": ep.as_str(), "token": &token, "expiresAt": expires_at};
            match crate::retry::within(
                "take a LogMetadata write lock",
                self.op_timeout,
                self.write_locks.insert_one(lock).into_future(),
            )
            .await?
            {
                Ok(_) => return Ok(token),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let held = self
                .timed(
                    "read a LogMetadata write lock",
                    self.write_locks
                        .find_one(doc! {"_id": ep.as_str()})
                        .into_future(),
                )
                .await?;
            if let Some(held) = held {
                let expired = held
                    .get_datetime("expiresAt")
                    .is_ok_and(|t| *t < DateTime::now());
                if expired && let Ok(theirs) = held.get_str("token") {
                    tracing::warn!(episode = %ep, "removing an expired LogMetadata write lock");
                    self.timed(
                        "remove an expired write lock",
                        self.write_locks
                            .delete_one(doc! {"_id": ep.as_str(), "token": theirs})
                            .into_future(),
                    )
                    .await?;
                    continue;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }

    /// Releases a write lock this store took. A failure leaves it to expire with its lease.
    async fn unlock_episode(&self, ep: &EpisodeId, token: &str) {
        if let Err(e) = self
            .timed(
                "release a LogMetadata write lock",
                self.write_locks
                    .delete_one(doc! {"_id": ep.as_str(), "token": token})
                    .into_future(),
            )
            .await
        {
            tracing::warn!(episode = %ep, error = %e, "releasing a LogMetadata write lock failed; it expires with its lease");
        }
    }

    /// Episodes by id from `from` (included), at most `limit`.
    pub async fn episodes_page(
        &self,
        from: Option<&EpisodeId>,
        limit: usize,
    ) -> Result<Vec<LogMetadata>, MongoError> {
        let filter = match from {
            Some(c) => doc! {"episodeId": {"$gte": c.as_str()}},
            None => doc! {},
        };
        self.episodes_by_id("read a page of LogMetadata", filter, limit)
            .await
    }

    /// The episodes flagged for the archive sweep (`sweepDue`: over their threshold, locked,
    /// or with work left from a commit), through the `sweepDue` index: the sweep reads what is
    /// due, not every episode.
    pub async fn episodes_due(&self) -> Result<Vec<LogMetadata>, MongoError> {
        self.timed("find due episodes", async {
            self.metadata
                .find(doc! {"sweepDue": true})
                .await?
                .try_collect()
                .await
        })
        .await
    }
}
