//! The per-episode sequence ledger: pure logic that numbers a batch of messages.
//!
//! Given the episode's LogMetadata as read, [`SequenceLedger::plan`] gives every message its
//! first sequence number and computes the LogMetadata to write back by compare-and-set. A message
//! whose id is in the ledger (a redelivery, or a producer's re-publish) gets the range it got the
//! first time and changes no counter; a new one gets the next free range and is counted in every
//! statistic. Because the reservation and the statistics are written in one replacement of one
//! document, they can never disagree, whatever crashes afterwards.

use std::collections::HashMap;

use bson::DateTime;

use crate::contract::LogMessage;
use crate::model::{LedgerEntry, LogMetadata, entry_size};

/// The sequence range of one message in a planned batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Sequence number of the message's first log; its logs follow contiguously.
    pub first_sequence: i64,
    /// False when the range comes from the ledger (the message was numbered before).
    pub fresh: bool,
}

/// The outcome of numbering one episode's messages.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One per message, in the order given.
    pub assignments: Vec<Assignment>,
    /// The LogMetadata to write back (its `version` already bumped).
    pub updated: LogMetadata,
    /// `currentLogs` went from below `archiveThreshold` to at or above it.
    pub crossed_threshold: bool,
}

impl Plan {
    /// Whether any message was numbered before (a redelivery or a duplicate publish).
    pub fn has_replays(&self) -> bool {
        self.assignments.iter().any(|a| !a.fresh)
    }
}

/// Numbers messages against an episode's ledger, remembering the last `window` message ids.
#[derive(Debug, Clone, Copy)]
pub struct SequenceLedger {
    pub window: usize,
}

impl SequenceLedger {
    /// Numbers `messages` (all of one episode, in delivery order) against `current`.
    pub fn plan(&self, current: &LogMetadata, messages: &[&LogMessage], now: DateTime) -> Plan {
        let mut m = current.clone();
        m.normalize_level_counts();
        let mut known: HashMap<&str, i64> = current
            .recent_messages
            .iter()
            .map(|e| (e.message_id.as_str(), e.first_sequence))
            .collect();
        let mut assignments = Vec::with_capacity(messages.len());
        for msg in messages {
            if let Some(&first) = known.get(msg.message_id.as_str()) {
                assignments.push(Assignment {
                    first_sequence: first,
                    fresh: false,
                });
                continue;
            }
            let first = m.next_sequence_number;
            let n = msg.logs.len() as i64;
            m.next_sequence_number += n;
            m.total_logs += n;
            m.current_logs += n;
            for log in &msg.logs {
                let ts = DateTime::from_millis(log.timestamp_ms);
                m.add_level_count(log.level, 1);
                m.current_mongo_bytes += entry_size(
                    msg.episode_id.as_str(),
                    log.level,
                    &log.message,
                    log.metadata_json_len,
                );
                m.first_log_at = Some(m.first_log_at.map_or(ts, |t| t.min(ts)));
                m.last_log_at = Some(m.last_log_at.map_or(ts, |t| t.max(ts)));
            }
            m.recent_messages.push(LedgerEntry {
                message_id: msg.message_id.as_str().to_owned(),
                first_sequence: first,
                log_count: n,
            });
            known.insert(msg.message_id.as_str(), first);
            assignments.push(Assignment {
                first_sequence: first,
                fresh: true,
            });
        }
        let excess = m.recent_messages.len().saturating_sub(self.window);
        m.recent_messages.drain(..excess);
        m.version += 1;
        m.updated_at = now;
        let threshold = i64::from(m.archive_threshold);
        let crossed_threshold = current.current_logs < threshold && m.current_logs >= threshold;
        Plan {
            assignments,
            updated: m,
            crossed_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::NewLog;
    use crate::domain::{EpisodeId, LogLevel, MessageId};

    fn msg(id: &str, levels: &[LogLevel], ts: i64) -> LogMessage {
        LogMessage {
            episode_id: EpisodeId::parse("ep").unwrap(),
            message_id: MessageId::parse(id).unwrap(),
            logs: levels
                .iter()
                .enumerate()
                .map(|(i, &level)| NewLog {
                    timestamp_ms: ts + i as i64,
                    level,
                    message: "x".into(),
                    metadata: None,
                    metadata_json_len: 0,
                })
                .collect(),
        }
    }

    fn meta(threshold: i32) -> LogMetadata {
        LogMetadata::new(
            EpisodeId::parse("ep").unwrap(),
            threshold,
            threshold,
            DateTime::from_millis(0),
        )
    }

    #[test]
    fn fresh_messages_get_contiguous_ranges_and_exact_statistics() {
        use LogLevel::*;
        let l = SequenceLedger { window: 10 };
        let (a, b) = (
            msg("a", &[Info, Warn], 100),
            msg("b", &[Info, Info, Error], 50),
        );
        let p = l.plan(&meta(100), &[&a, &b], DateTime::from_millis(9));
        assert_eq!(
            p.assignments,
            vec![
                Assignment {
                    first_sequence: 0,
                    fresh: true
                },
                Assignment {
                    first_sequence: 2,
                    fresh: true
                },
            ]
        );
        let m = &p.updated;
        assert_eq!(
            (m.next_sequence_number, m.total_logs, m.current_logs),
            (5, 5, 5)
        );
        assert_eq!(
            (
                m.level_count(Info),
                m.level_count(Warn),
                m.level_count(Error)
            ),
            (3, 1, 1)
        );
        // entry_size of each log: 128 + "ep" + its level + "x".
        let sizes: i64 = [Info, Warn, Info, Info, Error]
            .iter()
            .map(|l| 128 + 2 + l.as_str().len() as i64 + 1)
            .sum();
        assert_eq!(m.current_mongo_bytes, sizes);
        assert_eq!(m.first_log_at, Some(DateTime::from_millis(50)));
        assert_eq!(m.last_log_at, Some(DateTime::from_millis(101)));
        assert_eq!(m.version, 1);
        assert_eq!(m.recent_messages.len(), 2);
        assert!(!p.crossed_threshold);
    }

    #[test]
    fn a_replayed_message_reuses_its_range_and_counts_nothing() {
        use LogLevel::*;
        let l = SequenceLedger { window: 10 };
        let (a, b) = (msg("a", &[Info, Warn], 1), msg("b", &[Debug], 1));
        let first = l.plan(&meta(100), &[&a], DateTime::from_millis(1)).updated;
        let p = l.plan(&first, &[&a, &b, &b], DateTime::from_millis(2));
        assert_eq!(
            p.assignments,
            vec![
                Assignment {
                    first_sequence: 0,
                    fresh: false
                },
                Assignment {
                    first_sequence: 2,
                    fresh: true
                },
                Assignment {
                    first_sequence: 2,
                    fresh: false
                },
            ]
        );
        assert!(p.has_replays());
        assert_eq!(
            (p.updated.total_logs, p.updated.next_sequence_number),
            (3, 3)
        );
        assert_eq!(p.updated.level_count(Debug), 1);
    }

    #[test]
    fn the_window_keeps_the_most_recent_ids() {
        let l = SequenceLedger { window: 2 };
        let ms: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| msg(id, &[LogLevel::Info], 0))
            .collect();
        let p = l.plan(
            &meta(100),
            &ms.iter().collect::<Vec<_>>(),
            DateTime::from_millis(0),
        );
        let ids: Vec<_> = p
            .updated
            .recent_messages
            .iter()
            .map(|e| e.message_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn crossing_the_threshold_is_reported_once() {
        let l = SequenceLedger { window: 10 };
        let m1 = msg("a", &[LogLevel::Info; 2], 0);
        let m2 = msg("b", &[LogLevel::Info; 2], 0);
        let m3 = msg("c", &[LogLevel::Info; 2], 0);
        let p1 = l.plan(&meta(3), &[&m1], DateTime::from_millis(0));
        assert!(!p1.crossed_threshold);
        let p2 = l.plan(&p1.updated, &[&m2], DateTime::from_millis(0));
        assert!(p2.crossed_threshold);
        let p3 = l.plan(&p2.updated, &[&m3], DateTime::from_millis(0));
        assert!(!p3.crossed_threshold);
    }
}
