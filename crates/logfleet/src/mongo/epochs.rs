//! Ingest ownership epochs: every time an ingest-worker becomes the consumer of a partition it
//! claims the next epoch, a number higher than any claimed before, by inserting it (an insert
//! against the unique `_id` is atomic on every server). A worker counts logs only with an epoch
//! at least the one that last counted the episode, so one that lost its partition while it
//! stalled is refused once its successor has written.

use bson::{DateTime, Document, doc};

use super::{MongoError, MongoStore, is_duplicate_key};

/// Claims kept: older epochs are deleted by the next claim (they fence nothing any more).
const KEEP_EPOCHS: i64 = 10_000;

impl MongoStore {
    /// Claims the next ingest epoch for `queue`, owned by `owner`.
    pub async fn claim_ingest_epoch(&self, queue: &str, owner: &str) -> Result<i64, MongoError> {
        // The latest claim, by the indexed `epoch` field (the same number as `_id`; sorting on
        // `_id` is not portable: nx-27017 orders it as text).
        let top: Option<Document> = self
            .timed(
                "find the latest ingest epoch",
                self.epochs
                    .find_one(doc! {})
                    .sort(doc! {"epoch": -1})
                    .into_future(),
            )
            .await?;
        let last = top
            .and_then(|d| match d.get("epoch") {
                Some(bson::Bson::Int64(v)) => Some(*v),
                Some(bson::Bson::Int32(v)) => Some(i64::from(*v)),
                _ => None,
            })
            .unwrap_or(0);
        let mut next = last + 1;
        loop {
            let claim = doc! {
                "_id": next,
                "epoch": next,
                "queue": queue,
                "owner": owner,
                "at": DateTime::now(),
            };
            match self
                .timed(
                    "claim an ingest epoch",
                    self.epochs.insert_one(claim).into_future(),
                )
                .await
            {
                Ok(_) => {
                    if next % 100 == 0 {
                        let _ = self
                            .timed(
                                "prune ingest epochs",
                                self.epochs
                                    .delete_many(doc! {"epoch": {"$lt": next - KEEP_EPOCHS}})
                                    .into_future(),
                            )
                            .await;
                    }
                    return Ok(next);
                }
                // Another worker claimed it first: the one after is still above every claim
                // made before this one was read.
                Err(MongoError::Driver(e)) if is_duplicate_key(&e) => next += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The latest epoch claimed for `queue`: a worker whose own epoch is lower has lost the
    /// partition to a newer owner.
    pub async fn latest_ingest_epoch_of(&self, queue: &str) -> Result<i64, MongoError> {
        let top: Option<Document> = self
            .timed(
                "find a queue's latest ingest epoch",
                self.epochs
                    .find_one(doc! {"queue": queue})
                    .sort(doc! {"epoch": -1})
                    .into_future(),
            )
            .await?;
        Ok(top
            .and_then(|d| match d.get("epoch") {
                Some(bson::Bson::Int64(v)) => Some(*v),
                Some(bson::Bson::Int32(v)) => Some(i64::from(*v)),
                _ => None,
            })
            .unwrap_or(0))
    }
}
