//! The archived tier: the committed chunks a read opens, their members, and `lastAccessed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::DateTime;

use super::params::{ceil_second, floor_second};
use super::{ChunkCache, LogFilter, LogRecord, Order, QueryError, QueryService};
use crate::chunk::{ChunkError, ChunkObject, DecodedMember};
use crate::model::{LogChunk, LogMetadata};
use crate::mongo::ChunkRange;
use crate::object_store::ObjectStore;

impl<S: ObjectStore> QueryService<S> {
    /// Archived logs in `[lo, hi)` (all below `meta.archivedLogs`) matching `f`, in `order`;
    /// appends at most `want` to `out`. Opens only the committed chunks that can match.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn read_cold(
        &self,
        meta: &LogMetadata,
        lo: i64,
        hi: i64,
        f: &LogFilter,
        order: Order,
        want: usize,
        out: &mut Vec<LogRecord>,
    ) -> Result<(), QueryError> {
        let ep = &meta.episode_id;
        // Widened to whole seconds like the hot read's time range; lines are checked exactly.
        let range = ChunkRange {
            committed: meta.total_chunks,
            lo,
            hi,
            time_start: f.time.start.map(floor_second),
            time_end: f.time.end.map(ceil_second),
            descending: order == Order::Desc,
        };
        let mut chunks: Vec<LogChunk> = self.store.chunks_for_read(ep, &range).await?;
        // A chunk committed a moment ago may have no LogChunk record yet: LogMetadata names it.
        if let Some(p) = &meta.pending_chunk
            && p.chunk_number < meta.total_chunks
            && p.end_sequence >= lo
            && p.start_sequence < hi
            && range.time_start.is_none_or(|s| p.end_time >= s)
            && range.time_end.is_none_or(|e| p.start_time < e)
            && !chunks.iter().any(|c| c.chunk_number == p.chunk_number)
        {
            chunks.push(p.clone());
            chunks.sort_by_key(|c| c.chunk_number);
            if order == Order::Desc {
                chunks.reverse();
            }
        }
        let target = out.len() + want;
        // Without a time filter the chunks must cover the range without holes.
        let check_cover = f.time.start.is_none() && f.time.end.is_none();
        let mut expect = if order == Order::Asc { lo } else { hi - 1 };
        for c in chunks {
            if check_cover && !(c.start_sequence <= expect && expect <= c.end_sequence) {
                return Err(QueryError::Inconsistent(format!(
                    "episode {ep}: no committed chunk holds log {expect}"
                )));
            }
            expect = if order == Order::Asc {
                c.end_sequence + 1
            } else {
                c.start_sequence - 1
            };
            if c.end_sequence - c.start_sequence + 1 != i64::from(c.log_count) {
                return Err(QueryError::Inconsistent(format!(
                    "chunk {} of {ep} spans logs {}..={} but says it holds {}",
                    c.chunk_number, c.start_sequence, c.end_sequence, c.log_count
                )));
            }
            let object = self.load_object(&c).await?;
            self.touch(&c).await;
            let first = (lo.max(c.start_sequence) - c.start_sequence) as usize;
            let end = (hi.min(c.end_sequence + 1) - c.start_sequence) as usize;
            // Only the members holding lines first..end are inflated, in the order read.
            let members = object.members_for(first, end);
            let members: Vec<usize> = if order == Order::Asc {
                members.collect()
            } else {
                members.rev().collect()
            };
            for k in members {
                let m = self.load_member(&c, &object, k).await?;
                let lines = m.lines();
                let (a, b) = (first.max(lines.start), end.min(lines.end));
                let mut visit = |i: usize| -> Result<bool, QueryError> {
                    if !f.may_match_raw(m.raw_line(i)) {
                        return Ok(false);
                    }
                    let line = m.line(i)?;
                    if line.sequence_number != c.start_sequence + i as i64 {
                        return Err(QueryError::Inconsistent(format!(
                            "chunk {} of {ep}: line {} holds log {}",
                            c.chunk_number,
                            i + 1,
                            line.sequence_number
                        )));
                    }
                    if f.matches_record(&line) {
                        out.push(line);
                    }
                    Ok(out.len() >= target)
                };
                if order == Order::Asc {
                    for i in a..b {
                        if visit(i)? {
                            return Ok(());
                        }
                    }
                } else {
                    for i in (a..b).rev() {
                        if visit(i)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if check_cover && out.len() < target {
            let done = if order == Order::Asc {
                expect >= hi
            } else {
                expect < lo
            };
            if !done {
                return Err(QueryError::Inconsistent(format!(
                    "episode {ep}: no committed chunk holds log {expect}"
                )));
            }
        }
        Ok(())
    }

    /// A committed chunk's object with its member index, from the cache or from S3 (one
    /// GetObject however many readers miss it at once).
    async fn load_object(&self, c: &LogChunk) -> Result<Arc<ChunkObject>, QueryError> {
        let key = ChunkCache::key(&c.src, c.size_bytes);
        self.cache
            .get_or_load(&key, || async {
                let bytes = self.objects.get(&c.src).await?;
                if bytes.len() as i64 != c.size_bytes {
                    return Err(QueryError::Inconsistent(format!(
                        "chunk object {} is {} bytes; its record says {}",
                        c.src,
                        bytes.len(),
                        c.size_bytes
                    )));
                }
                let object = ChunkObject::new(bytes, c.log_count as usize).map_err(|e| {
                    QueryError::Inconsistent(format!("chunk object {}: {e}", c.src))
                })?;
                tracing::debug!(src = %c.src, members = object.members().len(), indexed = object.is_indexed(), "chunk object loaded");
                Ok(object)
            })
            .await
    }

    /// Member `k` of a chunk object, inflated, from the cache or inflated now (off the async
    /// threads; once however many readers miss it at once).
    async fn load_member(
        &self,
        c: &LogChunk,
        object: &Arc<ChunkObject>,
        k: usize,
    ) -> Result<Arc<DecodedMember>, QueryError> {
        let key = ChunkCache::member_key(&ChunkCache::key(&c.src, c.size_bytes), k);
        self.cache
            .get_or_load(&key, || async {
                let o = object.clone();
                let member = tokio::task::spawn_blocking(move || o.decode_member(k))
                    .await
                    .map_err(|e| ChunkError::Io(std::io::Error::other(e)))??;
                Ok::<_, QueryError>(member)
            })
            .await
    }

    /// Writes `lastAccessed = now` on a committed chunk's record, unless it (or this process)
    /// did so within the touch interval. A failure is logged, never fails the read.
    async fn touch(&self, c: &LogChunk) {
        let interval = Duration::from_secs(self.settings.touch_interval_secs);
        let now = DateTime::now();
        let age_ms = now.timestamp_millis() - c.last_accessed.timestamp_millis();
        if age_ms >= 0 && (age_ms as u128) < interval.as_millis() {
            return;
        }
        {
            let mut t = self.touched.lock().expect("not poisoned");
            if t.get(&c.id).is_some_and(|at| at.elapsed() < interval) {
                return;
            }
            if t.len() > 100_000 {
                t.retain(|_, at| at.elapsed() < interval);
            }
            t.insert(c.id, Instant::now());
        }
        match self.store.touch_chunk(c, now).await {
            Ok(_) => {
                tracing::debug!(episode = %c.episode_id, chunk_number = c.chunk_number, "lastAccessed updated")
            }
            Err(e) => {
                tracing::warn!(episode = %c.episode_id, chunk_number = c.chunk_number, error = %e, "updating lastAccessed failed")
            }
        }
    }
}
