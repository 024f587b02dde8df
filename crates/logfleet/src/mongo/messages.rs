//! MessageLedger: the dedup records of archived messages, and the lookup of what the store
//! holds of a batch's messages (hot first entries, then archived records).

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::error::ErrorKind;

use super::{DUPLICATE_KEY, MongoError, MongoStore};
use crate::domain::EpisodeId;
use crate::ledger::Known;
use crate::model::ArchivedMessage;

/// An integer as stored, whatever width the server hands back.
fn int_of(d: &Document, key: &str) -> Option<i64> {
    match d.get(key) {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        _ => None,
    }
}

impl MongoStore {
    /// What the store holds of the messages whose first-entry `_id`s are `first_ids`: a hot
    /// first entry (its sequence number, count and digest), else an archived message's record.
    /// Two queries at most, whatever the number of episodes.
    pub async fn known_messages(
        &self,
        first_ids: &[ObjectId],
    ) -> Result<HashMap<ObjectId, Known>, MongoError> {
        let mut known = HashMap::new();
        if first_ids.is_empty() {
            return Ok(known);
        }
        let raw = self.entries.clone_with_type::<Document>();
        let hot: Vec<Document> = self
            .timed("find first entries", async {
                raw.find(doc! {"_id": {"$in": first_ids}})
                    .projection(doc! {"sequenceNumber": 1, "messageLogs": 1, "messageDigest": 1})
                    .batch_size(first_ids.len().clamp(1, 10_000) as u32)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        for d in hot {
            if let (Ok(id), Some(first), Some(n), Some(digest)) = (
                d.get_object_id("_id"),
                int_of(&d, "sequenceNumber"),
                int_of(&d, "messageLogs"),
                int_of(&d, "messageDigest"),
            ) {
                known.insert(
                    id,
                    Known {
                        first_sequence: first,
                        log_count: n,
                        digest,
                    },
                );
            }
        }
        let rest: Vec<ObjectId> = first_ids
            .iter()
            .filter(|id| !known.contains_key(id))
            .copied()
            .collect();
        if rest.is_empty() {
            return Ok(known);
        }
        let archived: Vec<ArchivedMessage> = self
            .timed("find archived messages", async {
                self.messages
                    .find(doc! {"_id": {"$in": &rest}})
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        for a in archived {
            known.insert(
                a.id,
                Known {
                    first_sequence: a.first_sequence,
                    log_count: i64::from(a.log_count),
                    digest: a.digest,
                },
            );
        }
        Ok(known)
    }

    /// Records archived messages (idempotent: a record that exists is left as it is).
    pub async fn record_archived_messages(
        &self,
        records: &[ArchivedMessage],
    ) -> Result<(), MongoError> {
        for part in records.chunks(10_000) {
            match self
                .timed(
                    "insert archived messages",
                    self.messages.insert_many(part).ordered(false).into_future(),
                )
                .await
            {
                Ok(_) => {}
                Err(MongoError::Driver(e))
                    if matches!(e.kind.as_ref(), ErrorKind::InsertMany(ime)
                        if ime.write_concern_error.is_none()
                            && ime.write_errors.as_deref().unwrap_or_default().iter().all(|w| w.code == DUPLICATE_KEY)) =>
                    {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes the records of messages archived before `before` (past the dedup horizon).
    pub async fn expire_archived_messages(&self, before: DateTime) -> Result<u64, MongoError> {
        Ok(self
            .timed(
                "expire archived messages",
                self.messages
                    .delete_many(doc! {"archivedAt": {"$lt": before}})
                    .into_future(),
            )
            .await?
            .deleted_count)
    }

    /// Deletes every record of one episode's archived messages.
    pub async fn delete_archived_messages_of(&self, ep: &EpisodeId) -> Result<u64, MongoError> {
        Ok(self
            .timed(
                "delete archived messages",
                self.messages
                    .delete_many(doc! {"episodeId": ep.as_str()})
                    .into_future(),
            )
            .await?
            .deleted_count)
    }

    /// The dedup records of the messages whose first entry is below `below` and still in
    /// LogEntry (a chunk committed by a run that died before recording them).
    pub async fn archived_message_records(
        &self,
        ep: &EpisodeId,
        below: i64,
    ) -> Result<Vec<ArchivedMessage>, MongoError> {
        let entries: Vec<crate::model::LogEntry> = self
            .timed("find archived first entries", async {
                self.entries
                    .find(doc! {
                        "episodeId": ep.as_str(),
                        "sequenceNumber": {"$lt": below},
                        "messageLogs": {"$exists": true},
                    })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let now = DateTime::now();
        Ok(entries
            .iter()
            .filter_map(|e| ArchivedMessage::of_first_entry(e, now))
            .collect())
    }
}
