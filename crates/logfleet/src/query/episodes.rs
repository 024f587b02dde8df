//! The episode list: by id or by latest log, optionally narrowed to an id prefix.
//!
//! - By id (`EpisodeSort::Id`, the default): ascending `episodeId`; a cursor is the next page's
//!   first id.
//! - By latest log (`EpisodeSort::LastLogAt`): descending `lastLogAt`, ties by ascending
//!   `episodeId`, then the episodes without logs yet (no `lastLogAt`) by id. A cursor names the
//!   next page's first episode: `t{ms}.{id}` or, among the episodes without logs, `n.{id}`.
//!
//! A prefix is a range on `episodeId` (`[prefix, prefix with its last byte + 1)`), so both
//! orders stay index-backed (`episodeId`, and `lastLogAt_episodeId` on LogMetadata).
//!
//! Servers that compare datetimes at one-second precision (the test stand-in does) get bounds
//! widened to whole seconds; the exact order and bounds are applied here, so a page never loses
//! or repeats an episode whose `lastLogAt` shares a second with the cursor's.

use bson::DateTime;

use super::{EpisodePage, EpisodeSummary, QueryError, QueryService, bad};
use crate::domain::EpisodeId;
use crate::model::LogMetadata;
use crate::mongo::IdRange;
use crate::object_store::ObjectStore;

/// Order of the episode list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EpisodeSort {
    /// Ascending episode id.
    #[default]
    Id,
    /// Latest log first (descending `lastLogAt`, then id); episodes without logs last.
    LastLogAt,
}

impl EpisodeSort {
    /// `id` or `lastLogAt` (any letter case).
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        match raw.to_ascii_lowercase().as_str() {
            "id" | "episodeid" => Ok(Self::Id),
            "lastlogat" | "lastlog" => Ok(Self::LastLogAt),
            _ => Err(bad(format!("sort must be id or lastLogAt, not {raw:?}"))),
        }
    }
}

/// One request of the episode list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpisodeListQuery {
    /// Only episodes whose id starts with this (case-sensitive); `None` for all.
    pub prefix: Option<String>,
    /// The order.
    pub sort: EpisodeSort,
    /// A page's `nextCursor`, as returned for the same sort.
    pub cursor: Option<String>,
    /// Most episodes in the page.
    pub limit: usize,
}

/// Where a page of the latest-log order starts (included).
#[derive(Debug, Clone, PartialEq, Eq)]
enum LastLogCursor {
    /// The episode with this `lastLogAt` (epoch ms) and id.
    Dated(i64, String),
    /// Among the episodes without logs, this id.
    Undated(String),
}

impl LastLogCursor {
    fn parse(raw: &str) -> Result<Self, QueryError> {
        let invalid = || bad(format!("cursor {raw:?} is not a cursor of sort=lastLogAt"));
        let id = |s: &str| {
            EpisodeId::parse(s)
                .map(|_| s.to_owned())
                .map_err(|_| invalid())
        };
        if let Some(rest) = raw.strip_prefix("n.") {
            return Ok(Self::Undated(id(rest)?));
        }
        let (ms, rest) = raw
            .strip_prefix('t')
            .and_then(|r| r.split_once('.'))
            .ok_or_else(invalid)?;
        Ok(Self::Dated(ms.parse().map_err(|_| invalid())?, id(rest)?))
    }

    fn encode(&self) -> String {
        match self {
            Self::Dated(ms, id) => format!("t{ms}.{id}"),
            Self::Undated(id) => format!("n.{id}"),
        }
    }
}

/// Checks an id prefix: any prefix of a valid episode id (so itself a valid id).
pub fn parse_episode_prefix(raw: &str) -> Result<String, QueryError> {
    EpisodeId::parse(raw)
        .map(|_| raw.to_owned())
        .map_err(|e| bad(format!("prefix: {e}")))
}

/// The `episodeId` range of a prefix, `[prefix, upper)`: ids are ASCII, so raising the last
/// byte by one bounds every id that starts with the prefix.
fn prefix_range(prefix: &str) -> (String, String) {
    let mut upper = prefix.as_bytes().to_vec();
    if let Some(last) = upper.last_mut() {
        *last += 1;
    }
    (
        prefix.to_owned(),
        String::from_utf8(upper).expect("episode ids are ASCII"),
    )
}

/// The exact latest-log order: later `lastLogAt` first, then ascending id.
fn last_log_key(m: &LogMetadata) -> (std::cmp::Reverse<i64>, String) {
    (
        std::cmp::Reverse(m.last_log_at.map_or(i64::MIN, |t| t.timestamp_millis())),
        m.episode_id.to_string(),
    )
}

/// The ids `range` (a prefix's) holds from `from` (included) on.
fn id_range(range: Option<&(String, String)>, from: Option<&str>) -> IdRange {
    let lo = match (range.map(|r| r.0.as_str()), from) {
        (Some(p), Some(c)) => Some(p.max(c)),
        (p, c) => p.or(c),
    };
    IdRange {
        from: lo.map(str::to_owned),
        to: range.map(|r| r.1.clone()),
    }
}

impl<S: ObjectStore> QueryService<S> {
    /// A page of the episode list (see the module documentation for the orders and cursors).
    pub async fn list_episodes(&self, q: &EpisodeListQuery) -> Result<EpisodePage, QueryError> {
        if q.limit == 0 {
            return Err(bad("limit must be at least 1"));
        }
        let range = q.prefix.as_deref().map(prefix_range);
        match q.sort {
            EpisodeSort::Id => {
                if let Some(c) = q.cursor.as_deref() {
                    EpisodeId::parse(c).map_err(|e| bad(format!("cursor: {e}")))?;
                }
                let ids = id_range(range.as_ref(), q.cursor.as_deref());
                let mut metas = self.store().episodes_in(&ids, q.limit + 1).await?;
                let next_cursor = (metas.len() > q.limit)
                    .then(|| metas.pop().map(|m| m.episode_id.to_string()))
                    .flatten();
                Ok(EpisodePage {
                    episodes: metas.iter().map(EpisodeSummary::from).collect(),
                    next_cursor,
                })
            }
            EpisodeSort::LastLogAt => {
                let cursor = q.cursor.as_deref().map(LastLogCursor::parse).transpose()?;
                self.by_last_log(range, cursor, q.limit).await
            }
        }
    }

    async fn by_last_log(
        &self,
        range: Option<(String, String)>,
        cursor: Option<LastLogCursor>,
        limit: usize,
    ) -> Result<EpisodePage, QueryError> {
        let mut found: Vec<LogMetadata> = Vec::new();
        // Episodes with logs, unless the cursor is already past them.
        let start = match &cursor {
            None => Some(None),
            Some(LastLogCursor::Dated(ms, id)) => Some(Some((*ms, id.clone()))),
            Some(LastLogCursor::Undated(_)) => None,
        };
        if let Some(start) = start {
            // Widened to the end of the cursor's second; the exact bound is checked below.
            let before = start
                .as_ref()
                .map(|(ms, _)| DateTime::from_millis(ms.div_euclid(1000) * 1000 + 1000));
            let batch = (limit as u32).clamp(16, 1_000) + 1;
            let mut rows = self
                .store()
                .episodes_by_last_log(&id_range(range.as_ref(), None), before, batch)
                .await?;
            // The server's order may be exact to the second only: read on until the second of
            // the (limit + 1)-th episode (in the exact order) has been read in full.
            let mut boundary: Option<i64> = None;
            while let Some(m) = rows.next().await? {
                let Some(at) = m.last_log_at else { continue };
                let second = at.timestamp_millis().div_euclid(1000);
                if boundary.is_some_and(|b| second < b) {
                    break;
                }
                if let Some((ms, id)) = &start
                    && last_log_key(&m) < (std::cmp::Reverse(*ms), id.clone())
                {
                    continue;
                }
                found.push(m);
                if found.len() > limit {
                    found.sort_by_key(last_log_key);
                    found.truncate(limit + 1);
                    boundary = found[limit]
                        .last_log_at
                        .map(|t| t.timestamp_millis().div_euclid(1000));
                }
            }
            found.sort_by_key(last_log_key);
            found.truncate(limit + 1);
        }
        // Then the episodes without logs, by id.
        if found.len() <= limit {
            let from = match &cursor {
                Some(LastLogCursor::Undated(id)) => Some(id.as_str()),
                _ => None,
            };
            let want = limit - found.len() + 1;
            let undated = self
                .store()
                .episodes_without_logs(&id_range(range.as_ref(), from), want)
                .await?;
            found.extend(undated);
        }
        let next_cursor = (found.len() > limit)
            .then(|| found.pop())
            .flatten()
            .map(|m| match m.last_log_at {
                Some(t) => LastLogCursor::Dated(t.timestamp_millis(), m.episode_id.to_string()),
                None => LastLogCursor::Undated(m.episode_id.to_string()),
            })
            .map(|c| c.encode());
        Ok(EpisodePage {
            episodes: found.iter().map(EpisodeSummary::from).collect(),
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        for c in [
            LastLogCursor::Dated(1_764_800_000_123, "run-1.a:b".into()),
            LastLogCursor::Dated(-5, "x".into()),
            LastLogCursor::Undated("ep.2".into()),
        ] {
            assert_eq!(LastLogCursor::parse(&c.encode()).unwrap(), c);
        }
        for raw in [
            "", "t", "t12", "t12.", "tx.ep", "n.", "n.-x", "q1.ep", "t1.a..b",
        ] {
            assert!(LastLogCursor::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn prefixes_are_id_ranges() {
        assert_eq!(prefix_range("run-"), ("run-".into(), "run.".into()));
        assert_eq!(prefix_range("z"), ("z".into(), "{".into()));
        let (lo, hi) = prefix_range("ab");
        for id in ["ab", "ab.1", "abz", "ab-", "ab:x", "abZZ"] {
            assert!(lo.as_str() <= id && id < hi.as_str(), "{id}");
        }
        for id in ["aa", "ac", "b", "a"] {
            assert!(!(lo.as_str() <= id && id < hi.as_str()), "{id}");
        }
        assert!(parse_episode_prefix("run-").is_ok());
        assert!(parse_episode_prefix("-run").is_err());
        assert!(parse_episode_prefix("").is_err());
        assert_eq!(
            EpisodeSort::parse("lastLogAt").unwrap(),
            EpisodeSort::LastLogAt
        );
        assert!(EpisodeSort::parse("size").is_err());
    }
}
