//! Retention on the read path: a range removed by the retention policy (`docs/retention.md`)
//! is answered [`QueryError::Expired`] with the policy's reason (query-api: 410 Gone), never
//! as a missing object.
//!
//! The expired range is always a prefix of the episode, `0..LogMetadata::expired_below()`: the
//! logs below `expiredLogs`, and from the moment an expiry is marked, the range its marker
//! names. A read that starts below it starts at its end instead; a read that asks only for
//! expired logs, or any read of an episode with nothing left, is `Expired`.

use super::{LogPage, LogQuery, Order, QueryError, QueryService};
use crate::model::LogMetadata;
use crate::object_store::ObjectStore;

/// The error for a read of `m`'s expired range, with the policy's reason.
pub(super) fn expired(m: &LogMetadata) -> QueryError {
    let ep = &m.episode_id;
    let below = m.expired_below();
    let (reason, at) = match &m.expiring {
        Some(e) => (e.reason.clone(), e.at),
        None => (
            m.expiry_reason
                .clone()
                .unwrap_or_else(|| "retention policy".into()),
            m.expired_at.unwrap_or(m.updated_at),
        ),
    };
    let at = at.try_to_rfc3339_string().unwrap_or_default();
    if below >= m.next_sequence_number {
        QueryError::Expired(format!(
            "episode {ep} expired at {at}: all its {below} logs were removed ({reason})"
        ))
    } else {
        QueryError::Expired(format!(
            "episode {ep}: logs 0 to {} expired at {at} and were removed ({reason}); logs from {below} on remain",
            below - 1
        ))
    }
}

/// Where a read of `[lo, hi)` of `m` starts: `lo`, or the end of the expired range when `lo`
/// is below it. `Expired` when the read would find nothing but expired logs.
pub(super) fn skip_expired(m: &LogMetadata, lo: i64, hi: i64) -> Result<i64, QueryError> {
    let below = m.expired_below();
    if lo >= below {
        return Ok(lo);
    }
    if hi <= below || m.next_sequence_number <= below {
        return Err(expired(m));
    }
    Ok(below)
}

impl<S: ObjectStore> QueryService<S> {
    /// `Expired` when `q` would read nothing but expired logs (a stream checks this before it
    /// starts, to answer with a status); `NotFound` for an unknown episode.
    pub async fn ensure_not_expired(&self, q: &LogQuery) -> Result<(), QueryError> {
        let m = self.meta(&q.episode).await?;
        let mut lo = q.filter.seq.start.unwrap_or(0).max(0);
        let mut hi = q.filter.seq.end.unwrap_or(i64::MAX);
        match (q.order, q.cursor) {
            (Order::Asc, Some(c)) => lo = lo.max(c),
            (Order::Desc, Some(c)) => hi = hi.min(c.saturating_add(1)),
            (_, None) => {}
        }
        skip_expired(&m, lo, hi).map(|_| ())
    }

    /// A read that failed on a missing chunk object or record: when an expiry reached its range
    /// meanwhile, that is what the caller is told.
    pub(super) async fn expired_during(
        &self,
        q: &LogQuery,
        r: Result<LogPage, QueryError>,
    ) -> Result<LogPage, QueryError> {
        match r {
            Err(e @ (QueryError::Store(_) | QueryError::Inconsistent(_))) => {
                let mut lo = q.filter.seq.start.unwrap_or(0).max(0);
                if let (Order::Asc, Some(c)) = (q.order, q.cursor) {
                    lo = lo.max(c);
                }
                match self.meta(&q.episode).await {
                    Ok(m) if m.expired_below() > lo => Err(expired(&m)),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EpisodeId;
    use bson::DateTime;

    fn meta(expired: i64, next: i64) -> LogMetadata {
        let mut m = LogMetadata::new(EpisodeId::parse("ep").unwrap(), 10, 10, DateTime::now());
        m.next_sequence_number = next;
        m.expired_logs = expired;
        m.expiry_reason = Some("chunk retention: archived logs older than 30d".into());
        m
    }

    #[test]
    fn reads_skip_the_expired_prefix_or_are_told_it_expired() {
        let m = meta(50, 80);
        assert_eq!(skip_expired(&m, 60, i64::MAX).unwrap(), 60);
        assert_eq!(skip_expired(&m, 0, i64::MAX).unwrap(), 50);
        assert_eq!(skip_expired(&m, 10, 70).unwrap(), 50);
        let e = skip_expired(&m, 0, 50).unwrap_err().to_string();
        assert!(
            e.contains("logs 0 to 49") && e.contains("older than 30d"),
            "{e}"
        );
        let gone = meta(80, 80);
        let e = skip_expired(&gone, 0, i64::MAX).unwrap_err().to_string();
        assert!(e.contains("all its 80 logs"), "{e}");
        assert_eq!(skip_expired(&meta(0, 0), 0, i64::MAX).unwrap(), 0);
    }
}
