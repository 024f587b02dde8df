//! LogMetadata reads of the episode list (`logfleet::query::episodes`, for query-api's viewer):
//! a range of ids, by id or by latest log.

use bson::{DateTime, Document, doc};
use futures::TryStreamExt;

use super::{MongoError, MongoStore, TimedCursor};
use crate::model::LogMetadata;

/// Episode ids `[from, to)`; either side may be open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRange {
    /// First id included.
    pub from: Option<String>,
    /// First id excluded.
    pub to: Option<String>,
}

impl IdRange {
    fn filter(&self) -> Document {
        let mut id = Document::new();
        if let Some(f) = &self.from {
            id.insert("$gte", f.as_str());
        }
        if let Some(t) = &self.to {
            id.insert("$lt", t.as_str());
        }
        if id.is_empty() {
            doc! {}
        } else {
            doc! {"episodeId": id}
        }
    }
}

impl MongoStore {
    /// Episodes with ids in `ids`, by id, at most `limit`.
    pub async fn episodes_in(
        &self,
        ids: &IdRange,
        limit: usize,
    ) -> Result<Vec<LogMetadata>, MongoError> {
        self.episodes_by_id("list episodes", ids.filter(), limit)
            .await
    }

    /// The LogMetadata matching `filter`, by id, at most `limit`: the one read behind every
    /// page of episodes by id (the episode list's, its episodes without logs, `logctl`'s).
    /// `what` names the read in a timeout's error.
    pub(super) async fn episodes_by_id(
        &self,
        what: &'static str,
        filter: Document,
        limit: usize,
    ) -> Result<Vec<LogMetadata>, MongoError> {
        self.timed(what, async {
            self.metadata
                .find(filter)
                .sort(doc! {"episodeId": 1})
                .limit(limit as i64)
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// Episodes with ids in `ids` and, when `before` is given, a `lastLogAt` before it; latest
    /// log first, then by id (through the `lastLogAt_episodeId` index). Episodes without logs
    /// may come last or not at all, depending on the server: callers skip them.
    pub async fn episodes_by_last_log(
        &self,
        ids: &IdRange,
        before: Option<DateTime>,
        batch_size: u32,
    ) -> Result<TimedCursor<LogMetadata>, MongoError> {
        let mut filter = ids.filter();
        if let Some(b) = before {
            filter.insert("lastLogAt", doc! {"$lt": b});
        }
        self.open_cursor(
            "read episodes by their latest log",
            self.metadata
                .find(filter)
                .sort(doc! {"lastLogAt": -1, "episodeId": 1})
                .batch_size(batch_size.max(1))
                .into_future(),
        )
        .await
    }

    /// Episodes with ids in `ids` and no `lastLogAt` (no logs yet), by id, at most `limit`.
    pub async fn episodes_without_logs(
        &self,
        ids: &IdRange,
        limit: usize,
    ) -> Result<Vec<LogMetadata>, MongoError> {
        let mut filter = ids.filter();
        filter.insert("lastLogAt", bson::Bson::Null);
        let mut found = self
            .episodes_by_id("list episodes without logs", filter, limit)
            .await?;
        found.retain(|m| m.last_log_at.is_none());
        Ok(found)
    }
}
