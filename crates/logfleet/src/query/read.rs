//! One page: the hot/cold merge that keeps a read exact while logs move to S3, and the hot read.

use super::params::{ceil_second, floor_second};
use super::{
    LogFilter, LogPage, LogQuery, LogRecord, Order, QueryError, QueryService, TimeRange, bad,
};
use crate::domain::EpisodeId;
use crate::faults::FaultPoint;
use crate::mongo::HotRange;
use crate::object_store::ObjectStore;

impl<S: ObjectStore> QueryService<S> {
    /// One page of logs: every log matching the filter, from the cursor on, in order, at most
    /// `limit`, each exactly once even while the episode is being archived. A range removed by
    /// retention is skipped, or answered [`QueryError::Expired`] when nothing else was asked for.
    pub async fn read_page(&self, q: &LogQuery) -> Result<LogPage, QueryError> {
        let r = self.read_page_unchecked(q).await;
        self.expired_during(q, r).await
    }

    async fn read_page_unchecked(&self, q: &LogQuery) -> Result<LogPage, QueryError> {
        if q.limit == 0 {
            return Err(bad("limit must be at least 1"));
        }
        let ep = &q.episode;
        let f = &q.filter;
        let mut lo = f.seq.start.unwrap_or(0).max(0);
        let mut hi = f.seq.end.unwrap_or(i64::MAX);
        match (q.order, q.cursor) {
            (Order::Asc, Some(c)) => lo = lo.max(c),
            (Order::Desc, Some(c)) => hi = hi.min(c.saturating_add(1)),
            (_, None) => {}
        }
        let meta = self.meta(ep).await?;
        lo = super::retention::skip_expired(&meta, lo, hi)?;
        let a = meta.archived_logs;
        // Only counted logs are read: an entry past `nextSequenceNumber` is written but not
        // counted, and may still be numbered again (its batch renumbers around a message the
        // store refused) or belong to a batch that died. `hi` stays as asked for the cursor.
        let counted_hi = hi.min(meta.next_sequence_number);
        let mut out: Vec<LogRecord> = Vec::new();
        if lo < counted_hi {
            let hi = counted_hi;
            match q.order {
                Order::Asc => {
                    if lo < a {
                        self.read_cold(&meta, lo, hi.min(a), f, Order::Asc, q.limit, &mut out)
                            .await?;
                    }
                    if out.len() < q.limit && hi > a {
                        let want = q.limit - out.len();
                        let from = lo.max(a);
                        let hot = self.read_hot(ep, from, hi, f, Order::Asc, want).await?;
                        let meta2 = self.meta(ep).await?;
                        let a2 = meta2.archived_logs;
                        if a2 > a {
                            tracing::debug!(episode = %ep, from = a, to = a2, "logs archived during the read; reading them from chunks");
                            let moved_hi = hi.min(a2);
                            if from < moved_hi {
                                self.read_cold(
                                    &meta2,
                                    from,
                                    moved_hi,
                                    f,
                                    Order::Asc,
                                    want,
                                    &mut out,
                                )
                                .await?;
                            }
                            out.extend(hot.into_iter().filter(|r| r.sequence_number >= a2));
                        } else {
                            out.extend(hot);
                        }
                        out.truncate(q.limit);
                    }
                }
                Order::Desc => {
                    let mut cold_meta = meta;
                    let mut cold_hi = hi.min(a);
                    if hi > a {
                        let hot = self
                            .read_hot(ep, lo.max(a), hi, f, Order::Desc, q.limit)
                            .await?;
                        let meta2 = self.meta(ep).await?;
                        let a2 = meta2.archived_logs;
                        if a2 > a {
                            tracing::debug!(episode = %ep, from = a, to = a2, "logs archived during the read; reading them from chunks");
                            out.extend(hot.into_iter().filter(|r| r.sequence_number >= a2));
                            cold_hi = hi.min(a2);
                            cold_meta = meta2;
                        } else {
                            out.extend(hot);
                        }
                    }
                    if out.len() < q.limit && lo < cold_hi {
                        let want = q.limit - out.len();
                        self.read_cold(&cold_meta, lo, cold_hi, f, Order::Desc, want, &mut out)
                            .await?;
                    }
                }
            }
        }
        let next_cursor = match (out.len() == q.limit, out.last(), q.order) {
            (true, Some(last), Order::Asc) => Some(last.sequence_number + 1).filter(|n| *n < hi),
            (true, Some(last), Order::Desc) => Some(last.sequence_number - 1).filter(|n| *n >= lo),
            _ => None,
        };
        Ok(LogPage {
            episode_id: ep.to_string(),
            order: q.order,
            logs: out,
            next_cursor,
        })
    }

    /// Hot entries in `[lo, hi)` matching `f`, in `order`, at most `want`.
    pub(super) async fn read_hot(
        &self,
        ep: &EpisodeId,
        lo: i64,
        hi: i64,
        f: &LogFilter,
        order: Order,
        want: usize,
    ) -> Result<Vec<LogRecord>, QueryError> {
        self.faults.at(FaultPoint::QueryBeforeHotRead).await?;
        // The time range goes to the server widened to whole seconds (exact bounds are checked
        // here): a server comparing datetimes at second precision, as the test stand-in does,
        // then still returns every match, and MongoDB returns at most a second more.
        let exact_on_server = f.contains.is_none() && f.time == TimeRange::default();
        let range = HotRange {
            lo,
            hi,
            time_start: f.time.start.map(floor_second),
            time_end: f.time.end.map(ceil_second),
            levels: f.levels.clone(),
            descending: order == Order::Desc,
            limit: exact_on_server.then_some(want as i64),
            batch_size: want.clamp(16, 5_000) as u32,
        };
        let mut cursor = self.store.hot_entries(ep, &range).await?;
        let mut out = Vec::with_capacity(want.min(10_000));
        while let Some(e) = cursor.next().await? {
            let r = LogRecord::from(e);
            if !f.matches_record(&r) {
                continue;
            }
            out.push(r);
            if out.len() >= want {
                break;
            }
        }
        Ok(out)
    }
}
