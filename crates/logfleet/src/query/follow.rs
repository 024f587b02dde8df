//! Follow mode (`tail -f`): new logs as they are counted, in sequence order.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{LogQuery, LogRecord, Order, QueryError, QueryService};
use crate::domain::EpisodeId;
use crate::object_store::ObjectStore;

impl<S: ObjectStore> QueryService<S> {
    /// The first sequence number not counted yet: every log below it is written (an ingest
    /// batch counts only what it wrote) and keeps its number.
    pub async fn counted_frontier(&self, ep: &EpisodeId) -> Result<i64, QueryError> {
        Ok(self.meta(ep).await?.next_sequence_number)
    }

    /// Follow mode, like `tail -f`: sends the last `backlog` matching logs (when the query has no
    /// cursor; from the cursor otherwise), then every new matching log as it is counted, in
    /// sequence order. Returns when the receiver goes away or the sequence range's end is
    /// reached.
    pub async fn follow(
        &self,
        q: &LogQuery,
        backlog: usize,
        tx: &mpsc::Sender<Vec<LogRecord>>,
    ) -> Result<(), QueryError> {
        let ep = &q.episode;
        let end = q.filter.seq.end.unwrap_or(i64::MAX);
        let poll = Duration::from_millis(self.settings.follow_poll_ms);
        let page_size = self.settings.max_page_size;
        let mut cursor = match q.cursor {
            Some(c) => c.max(q.filter.seq.start.unwrap_or(0)),
            None => {
                let f = self.counted_frontier(ep).await?;
                if backlog > 0 && f > 0 {
                    let mut page = self
                        .read_page(&LogQuery {
                            order: Order::Desc,
                            cursor: Some(f - 1),
                            limit: backlog.min(page_size),
                            ..q.clone()
                        })
                        .await?;
                    page.logs.reverse();
                    if !page.logs.is_empty() && tx.send(page.logs).await.is_err() {
                        return Ok(());
                    }
                }
                f.max(q.filter.seq.start.unwrap_or(0))
            }
        };
        loop {
            if cursor >= end || tx.is_closed() {
                return Ok(());
            }
            let frontier = self.counted_frontier(ep).await?.min(end);
            let mut advanced = false;
            while cursor < frontier {
                let mut pq = LogQuery {
                    order: Order::Asc,
                    cursor: Some(cursor),
                    limit: page_size,
                    ..q.clone()
                };
                pq.filter.seq.end = Some(frontier);
                let page = self.read_page(&pq).await?;
                if !page.logs.is_empty() && tx.send(page.logs).await.is_err() {
                    return Ok(());
                }
                cursor = page.next_cursor.unwrap_or(frontier);
                advanced = true;
            }
            if !advanced {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = tx.closed() => return Ok(()),
                }
            }
        }
    }
}
