//! The per-episode sequence ledger: pure logic that numbers a batch of messages and counts
//! them.
//!
//! Numbering is a function of two things only: the episode's counted prefix
//! (`LogMetadata.nextSequenceNumber`: every log below it is written and counted) and what the
//! store already holds of each message (its first entry, found by its deterministic `_id`, or
//! the dedup record of an archived message). Walking the batch's messages in delivery order
//! from the counted prefix:
//!
//! - a message the store holds below the prefix was counted before (a broker redelivery, a
//!   producer's retry): nothing to write, nothing to count;
//! - a message the store holds at the cursor was written but not counted (the worker died, or
//!   stalled, between its insert and its count): its entries are written again (the missing
//!   ones land, the others are refused as duplicates) and it is counted now;
//! - a new message gets the next range;
//! - a message whose id the store holds for other content is refused (`message_id_reused`).
//!
//! Any worker that numbers the same delivery order from the same store state gets the same
//! ranges, so a worker that lost its partition while holding a batch (a zombie) and its
//! successor agree on every number: whichever writes an entry first, the other's copy is the
//! same entry and is refused as a duplicate. Counting is a separate step ([`count`]), after the
//! entries are written: it advances the counted prefix over a range and adds exactly the logs
//! in it, fenced by the ingest ownership epoch; a range counted by another worker first is not
//! counted again.

use std::collections::HashMap;

use bson::DateTime;
use bson::oid::ObjectId;

use crate::contract::LogMessage;
use crate::model::{LogMetadata, MessageKey, entry_size};

/// A message of a batch, with what its entries and dedup record are keyed by.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    /// The decoded message.
    pub message: &'a LogMessage,
    /// Episode and message id.
    pub key: MessageKey,
    /// The `_id` of its first entry.
    pub first_id: ObjectId,
    /// [`crate::model::message_digest`] of its logs.
    pub digest: i64,
}

/// What the store holds of a message already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The sequence number of its first log.
    pub first_sequence: i64,
    /// How many logs it has.
    pub log_count: i64,
    /// Its digest.
    pub digest: i64,
}

/// What to do with one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Written and counted before: nothing to do but ack it.
    Done,
    /// Write its entries from `first` on (and count them in [`count`]).
    Write { first: i64 },
    /// The same message earlier in this batch: its first copy is written.
    Repeat,
    /// The store holds this id for other content: dead-letter it (`message_id_reused`).
    Reused(Known),
}

/// A batch's numbering for one episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One per message, in the order given.
    pub actions: Vec<Action>,
    /// The counted prefix the plan started from.
    pub counted_from: i64,
    /// Where the counted prefix ends once this batch is counted.
    pub count_to: i64,
}

/// The store's state contradicts the numbering rule: a message it holds is neither counted nor
/// where the next range starts. Retried from a fresh read; it does not happen unless someone
/// wrote outside the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "message {message_id} is stored at sequence {stored} but the numbering is at {cursor} (counted up to {counted})"
)]
pub struct Inconsistent {
    pub message_id: String,
    pub stored: i64,
    pub cursor: i64,
    pub counted: i64,
}

/// Numbers messages against the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct SequenceLedger;

impl SequenceLedger {
    /// Numbers `incoming` (one episode's messages, in delivery order) from the counted prefix
    /// `counted`, given what the store holds of them (`known`, by first-entry `_id`).
    pub fn plan(
        &self,
        counted: i64,
        incoming: &[Incoming<'_>],
        known: &HashMap<ObjectId, Known>,
    ) -> Result<Plan, Inconsistent> {
        let mut cursor = counted;
        let mut seen: HashMap<ObjectId, usize> = HashMap::new();
        let mut actions = Vec::with_capacity(incoming.len());
        for (i, m) in incoming.iter().enumerate() {
            let n = m.message.logs.len() as i64;
            if let Some(&earlier) = seen.get(&m.first_id) {
                // The same id twice in one batch: a retry right behind its first try.
                let same = incoming[earlier].digest == m.digest;
                actions.push(if same {
                    Action::Repeat
                } else {
                    Action::Reused(Known {
                        first_sequence: -1,
                        log_count: incoming[earlier].message.logs.len() as i64,
                        digest: incoming[earlier].digest,
                    })
                });
                continue;
            }
            seen.insert(m.first_id, i);
            let action = match known.get(&m.first_id) {
                Some(k) if k.digest != m.digest || k.log_count != n => Action::Reused(*k),
                Some(k) if k.first_sequence + k.log_count <= counted => Action::Done,
                Some(k) if k.first_sequence == cursor => {
                    cursor += n;
                    Action::Write {
                        first: k.first_sequence,
                    }
                }
                Some(k) => {
                    return Err(Inconsistent {
                        message_id: m.key.message_id.clone(),
                        stored: k.first_sequence,
                        cursor,
                        counted,
                    });
                }
                None => {
                    let first = cursor;
                    cursor += n;
                    Action::Write { first }
                }
            };
            actions.push(action);
        }
        Ok(Plan {
            actions,
            counted_from: counted,
            count_to: cursor,
        })
    }
}

/// What [`count`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Logs added to the statistics now (0 when another worker counted the range first).
    pub logs: i64,
    /// What those logs added to `currentMongoBytes` (the hot tier's size measure).
    pub bytes: i64,
    /// `currentLogs` went from below `archiveThreshold` to at or above it.
    pub crossed_threshold: bool,
}

/// A worker whose ownership epoch is older than the one that last counted here: it lost its
/// partition, and must not count (nor write) the batch it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fenced: ingest epoch {mine} is older than {current}, which counted here last")]
pub struct Fenced {
    pub mine: i64,
    pub current: i64,
}

/// Why [`count`] cannot count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error(transparent)]
    Fenced(#[from] Fenced),
    #[error("the counted prefix moved back from {planned} to {found}: read again")]
    MovedBack { planned: i64, found: i64 },
}

/// Counts the planned range into `m` (a fresh copy of the episode's LogMetadata): advances
/// `nextSequenceNumber` to the plan's end and adds every log in the part of
/// `[plan.counted_from, plan.count_to)` that `m` has not counted yet, under ownership `epoch`.
pub fn count(
    m: &mut LogMetadata,
    plan: &Plan,
    incoming: &[Incoming<'_>],
    epoch: i64,
) -> Result<Counted, CountError> {
    if m.ingest_epoch > epoch {
        return Err(Fenced {
            mine: epoch,
            current: m.ingest_epoch,
        }
        .into());
    }
    if m.next_sequence_number < plan.counted_from {
        return Err(CountError::MovedBack {
            planned: plan.counted_from,
            found: m.next_sequence_number,
        });
    }
    m.ingest_epoch = epoch;
    m.normalize_level_counts();
    let from = m.next_sequence_number;
    let threshold = i64::from(m.archive_threshold);
    let before = m.current_logs;
    let mut logs = 0;
    let mut bytes = 0;
    for (msg, action) in incoming.iter().zip(&plan.actions) {
        let Action::Write { first } = *action else {
            continue;
        };
        for (k, log) in msg.message.logs.iter().enumerate() {
            let seq = first + k as i64;
            if seq < from || seq >= plan.count_to {
                continue;
            }
            let ts = DateTime::from_millis(log.timestamp_ms);
            logs += 1;
            m.add_level_count(log.level, 1);
            bytes += entry_size(
                msg.key.episode_id.as_str(),
                log.level,
                &log.message,
                log.metadata_json_len,
            );
            m.first_log_at = Some(m.first_log_at.map_or(ts, |t| t.min(ts)));
            m.last_log_at = Some(m.last_log_at.map_or(ts, |t| t.max(ts)));
        }
    }
    m.next_sequence_number = m.next_sequence_number.max(plan.count_to);
    m.total_logs += logs;
    m.current_logs += logs;
    m.current_mongo_bytes += bytes;
    if m.current_logs >= threshold {
        m.sweep_due = true;
    }
    Ok(Counted {
        logs,
        bytes,
        crossed_threshold: before < threshold && m.current_logs >= threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{LogLevel, MessageId, NewLog};
    use crate::domain::EpisodeId;

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

    fn incoming(m: &LogMessage, digest: i64) -> Incoming<'_> {
        let key = MessageKey::new(&m.episode_id, m.message_id.as_str());
        Incoming {
            first_id: key.entry_id(0),
            key,
            message: m,
            digest,
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
    fn new_messages_get_contiguous_ranges_and_exact_statistics() {
        use LogLevel::*;
        let (a, b) = (
            msg("a", &[Info, Warn], 100),
            msg("b", &[Info, Info, Error], 50),
        );
        let inc = [incoming(&a, 1), incoming(&b, 2)];
        let plan = SequenceLedger.plan(0, &inc, &HashMap::new()).unwrap();
        assert_eq!(
            plan.actions,
            [Action::Write { first: 0 }, Action::Write { first: 2 }]
        );
        assert_eq!((plan.counted_from, plan.count_to), (0, 5));
        let mut m = meta(1000);
        let c = count(&mut m, &plan, &inc, 7).unwrap();
        assert_eq!(c.logs, 5);
        assert_eq!(
            (m.total_logs, m.current_logs, m.next_sequence_number),
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
        assert_eq!(
            c.bytes, sizes,
            "what the metric adds is what the episode gained"
        );
        assert_eq!(m.first_log_at, Some(DateTime::from_millis(50)));
        assert_eq!(m.last_log_at, Some(DateTime::from_millis(101)));
        assert_eq!(m.ingest_epoch, 7);
        assert!(!c.crossed_threshold && !m.sweep_due);
    }

    #[test]
    fn counted_messages_are_done_uncounted_ones_are_written_again_at_their_place() {
        use LogLevel::*;
        let (a, b, c) = (
            msg("a", &[Info, Info], 1),
            msg("b", &[Warn], 2),
            msg("c", &[Error], 3),
        );
        let inc = [incoming(&a, 1), incoming(&b, 2), incoming(&c, 3)];
        // a was counted (0..2); b was written at 2 but its worker died before counting.
        let known = HashMap::from([
            (
                inc[0].first_id,
                Known {
                    first_sequence: 0,
                    log_count: 2,
                    digest: 1,
                },
            ),
            (
                inc[1].first_id,
                Known {
                    first_sequence: 2,
                    log_count: 1,
                    digest: 2,
                },
            ),
        ]);
        let plan = SequenceLedger.plan(2, &inc, &known).unwrap();
        assert_eq!(
            plan.actions,
            [
                Action::Done,
                Action::Write { first: 2 },
                Action::Write { first: 3 }
            ]
        );
        let mut m = meta(1000);
        m.next_sequence_number = 2;
        m.total_logs = 2;
        m.current_logs = 2;
        let counted = count(&mut m, &plan, &inc, 1).unwrap();
        assert_eq!(counted.logs, 2);
        assert_eq!((m.next_sequence_number, m.total_logs), (4, 4));
    }

    #[test]
    fn a_range_counted_by_another_worker_is_not_counted_again() {
        use LogLevel::*;
        let (a, b) = (msg("a", &[Info, Info], 1), msg("b", &[Warn, Warn], 2));
        let inc = [incoming(&a, 1), incoming(&b, 2)];
        let plan = SequenceLedger.plan(10, &inc, &HashMap::new()).unwrap();
        // The stalled worker that held the same messages counted a's range meanwhile.
        let mut m = meta(1000);
        m.next_sequence_number = 12;
        m.total_logs = 12;
        m.current_logs = 12;
        let c = count(&mut m, &plan, &inc, 2).unwrap();
        assert_eq!(c.logs, 2, "only b's range");
        assert_eq!((m.next_sequence_number, m.total_logs), (14, 14));
        // All of it counted already: nothing.
        let c = count(&mut m, &plan, &inc, 2).unwrap();
        assert_eq!((c.logs, c.bytes), (0, 0));
        assert_eq!(m.total_logs, 14);
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_prefix_that_moved_back_is_refused() {
        let a = msg("a", &[LogLevel::Info], 1);
        let inc = [incoming(&a, 1)];
        let plan = SequenceLedger.plan(5, &inc, &HashMap::new()).unwrap();
        let mut m = meta(1000);
        m.next_sequence_number = 5;
        m.ingest_epoch = 9;
        assert_eq!(
            count(&mut m, &plan, &inc, 8),
            Err(CountError::Fenced(Fenced {
                mine: 8,
                current: 9
            }))
        );
        assert_eq!(m.next_sequence_number, 5, "nothing changed");
        m.next_sequence_number = 3;
        assert!(matches!(
            count(&mut m, &plan, &inc, 9),
            Err(CountError::MovedBack { .. })
        ));
    }

    #[test]
    fn reused_ids_and_repeats_within_a_batch() {
        use LogLevel::*;
        let a = msg("a", &[Info], 1);
        let a_again = msg("a", &[Info], 1);
        let a_other = msg("a", &[Info], 1);
        let inc = [
            incoming(&a, 1),
            incoming(&a_again, 1),
            incoming(&a_other, 99),
        ];
        let plan = SequenceLedger.plan(0, &inc, &HashMap::new()).unwrap();
        assert_eq!(plan.actions[0], Action::Write { first: 0 });
        assert_eq!(plan.actions[1], Action::Repeat);
        assert!(matches!(plan.actions[2], Action::Reused(_)));
        assert_eq!(plan.count_to, 1);
        // Stored with another digest, or another count: reused.
        let b = msg("b", &[Info, Info], 5);
        let inc = [incoming(&b, 7)];
        for k in [
            Known {
                first_sequence: 0,
                log_count: 2,
                digest: 8,
            },
            Known {
                first_sequence: 0,
                log_count: 3,
                digest: 7,
            },
        ] {
            let known = HashMap::from([(inc[0].first_id, k)]);
            let plan = SequenceLedger.plan(4, &inc, &known).unwrap();
            assert_eq!(plan.actions, [Action::Reused(k)]);
            assert_eq!(plan.count_to, 4);
        }
    }

    #[test]
    fn a_stored_message_away_from_the_numbering_is_inconsistent() {
        let a = msg("a", &[LogLevel::Info, LogLevel::Info], 1);
        let inc = [incoming(&a, 1)];
        let known = HashMap::from([(
            inc[0].first_id,
            Known {
                first_sequence: 9,
                log_count: 2,
                digest: 1,
            },
        )]);
        assert!(SequenceLedger.plan(5, &inc, &known).is_err());
    }

    #[test]
    fn crossing_the_threshold_is_reported_once_and_marks_the_sweep() {
        let logs: Vec<_> = (0..3).map(|_| LogLevel::Info).collect();
        let a = msg("a", &logs, 1);
        let inc = [incoming(&a, 1)];
        let mut m = meta(4);
        m.next_sequence_number = 2;
        m.current_logs = 2;
        let plan = SequenceLedger.plan(2, &inc, &HashMap::new()).unwrap();
        let c = count(&mut m, &plan, &inc, 1).unwrap();
        assert!(c.crossed_threshold && m.sweep_due);
        let b = msg("b", &logs, 9);
        let inc = [incoming(&b, 2)];
        let plan = SequenceLedger.plan(5, &inc, &HashMap::new()).unwrap();
        let c = count(&mut m, &plan, &inc, 1).unwrap();
        assert!(!c.crossed_threshold, "already over");
    }
}
