//! The schema's indexes, and how they are compared with what a collection has.

use bson::{Bson, Document, doc};
use mongodb::IndexModel;
use mongodb::options::IndexOptions;

/// One index of the schema: its name, keys and whether it is unique.
#[derive(Debug, Clone)]
pub(super) struct IndexSpec {
    /// The index name, as `listIndexes` reports it.
    pub name: &'static str,
    /// Fields and directions, in order.
    pub keys: Document,
    /// Whether the index refuses duplicate keys.
    pub unique: bool,
}

/// How a wanted index compares with what a collection has.
#[derive(Debug, PartialEq)]
pub(super) enum IndexState {
    Present,
    Missing,
    /// What clashes, in words.
    Conflict(String),
}

impl IndexSpec {
    fn new(name: &'static str, keys: Document, unique: bool) -> Self {
        Self { name, keys, unique }
    }

    pub fn model(&self) -> IndexModel {
        let o = IndexOptions::builder()
            .name(self.name.to_owned())
            .unique(self.unique.then_some(true))
            .build();
        IndexModel::builder()
            .keys(self.keys.clone())
            .options(o)
            .build()
    }

    /// Compares with the indexes a collection has. The same keys with the same uniqueness is
    /// present, whatever its name (an equivalent index made by hand serves as well, and the
    /// test stand-in renames every index). The same name with other keys or uniqueness, or
    /// the same keys with other uniqueness (a unique index that is not, or the reverse), is a
    /// conflict: the server would refuse to create ours, or ours would not hold.
    pub fn compare(&self, existing: &[IndexModel]) -> IndexState {
        for idx in existing {
            let name = idx.options.as_ref().and_then(|o| o.name.as_deref());
            let unique = idx.options.as_ref().and_then(|o| o.unique) == Some(true);
            let same_keys = same_index_keys(&idx.keys, &self.keys);
            if same_keys && unique == self.unique {
                return IndexState::Present;
            }
            if name == Some(self.name) {
                return IndexState::Conflict(format!(
                    "an index of that name exists with keys {} (unique: {unique}); wanted keys {} (unique: {})",
                    idx.keys, self.keys, self.unique
                ));
            }
            if same_keys {
                return IndexState::Conflict(format!(
                    "the keys {} are indexed already, under the name {:?}, with unique: {unique}; wanted unique: {}",
                    self.keys,
                    name.unwrap_or("?"),
                    self.unique
                ));
            }
        }
        IndexState::Missing
    }
}

/// The indexes of the schema (`_id` aside): LogEntry's, LogChunk's and LogMetadata's.
pub(super) fn log_entry() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": 1},
            true,
        ),
        IndexSpec::new(
            "episodeId_timestamp",
            doc! {"episodeId": 1, "timestamp": 1},
            false,
        ),
        IndexSpec::new("episodeId_level", doc! {"episodeId": 1, "level": 1}, false),
        IndexSpec::new(
            "episodeId_createdAt",
            doc! {"episodeId": 1, "createdAt": 1},
            false,
        ),
    ]
}

pub(super) fn log_chunk() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new(
            "episodeId_chunkNumber",
            doc! {"episodeId": 1, "chunkNumber": 1},
            true,
        ),
        IndexSpec::new("episodeId", doc! {"episodeId": 1}, false),
        IndexSpec::new(
            "startTime_endTime",
            doc! {"startTime": 1, "endTime": 1},
            false,
        ),
    ]
}

pub(super) fn log_metadata() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new("episodeId", doc! {"episodeId": 1}, true),
        IndexSpec::new("currentLogs", doc! {"currentLogs": 1}, false),
        // The archive sweep reads only the episodes flagged for it.
        IndexSpec::new("sweepDue", doc! {"sweepDue": 1}, false),
        // The episode list by latest log (query-api's viewer).
        IndexSpec::new(
            "lastLogAt_episodeId",
            doc! {"lastLogAt": -1, "episodeId": 1},
            false,
        ),
        // The retention pass finds the episodes with an override of their own.
        IndexSpec::new(
            "retentionOverride_setAt",
            doc! {"retentionOverride.setAt": 1},
            false,
        ),
    ]
}

/// MessageLedger: expired records go by `archivedAt`; an episode's go with it.
pub(super) fn message_ledger() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new("archivedAt", doc! {"archivedAt": 1}, false),
        IndexSpec::new("episodeId", doc! {"episodeId": 1}, false),
    ]
}

/// IngestEpoch: the latest claim is found by `epoch`, not by `_id` (nx-27017 sorts `_id` as
/// text: 9 after 10; docs/mongodb-servers.md N10).
pub(super) fn ingest_epoch() -> Vec<IndexSpec> {
    vec![IndexSpec::new("epoch", doc! {"epoch": -1}, false)]
}

/// Whether two index key documents name the same fields in the same order and directions,
/// whatever numeric type each direction was stored with (1, 1i64, 1.0).
fn same_index_keys(a: &Document, b: &Document) -> bool {
    fn dir(v: &Bson) -> Option<f64> {
        match v {
            Bson::Int32(n) => Some(f64::from(*n)),
            Bson::Int64(n) => Some(*n as f64),
            Bson::Double(n) => Some(*n),
            _ => None,
        }
    }
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && dir(va).is_some() && dir(va) == dir(vb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(name: &'static str, keys: Document, unique: bool) -> IndexModel {
        IndexSpec::new(name, keys, unique).model()
    }

    #[test]
    fn index_specs_compare_by_name_keys_and_uniqueness() {
        let want = IndexSpec::new(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": 1},
            true,
        );
        assert_eq!(want.compare(&[]), IndexState::Missing);
        // The server may store the directions as Int64 or Double.
        let same = existing(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1_i64, "sequenceNumber": 1.0},
            true,
        );
        assert_eq!(want.compare(&[same]), IndexState::Present);
        let other = existing("other", doc! {"episodeId": 1, "level": 1}, false);
        assert_eq!(want.compare(&[other]), IndexState::Missing);
        // Same name, not unique.
        let not_unique = existing(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": 1},
            false,
        );
        assert!(
            matches!(want.compare(&[not_unique]), IndexState::Conflict(d) if d.contains("unique: false"))
        );
        // Same name, other keys.
        let other_keys = existing(
            "episodeId_sequenceNumber",
            doc! {"episodeId": 1, "sequenceNumber": -1},
            true,
        );
        assert!(matches!(
            want.compare(&[other_keys]),
            IndexState::Conflict(_)
        ));
        // Same keys and uniqueness under another name: an equivalent index.
        let renamed = existing("by_seq", doc! {"episodeId": 1, "sequenceNumber": 1}, true);
        assert_eq!(want.compare(&[renamed]), IndexState::Present);
        // Same keys, not unique, under another name: ours would not hold.
        let weaker = existing("by_seq", doc! {"episodeId": 1, "sequenceNumber": 1}, false);
        assert!(matches!(want.compare(&[weaker]), IndexState::Conflict(d) if d.contains("by_seq")));
        // Key order matters; non-numeric directions are never "the same".
        assert!(!same_index_keys(
            &doc! {"a": 1, "b": 1},
            &doc! {"b": 1, "a": 1}
        ));
        assert!(!same_index_keys(&doc! {"a": "text"}, &doc! {"a": "text"}));
    }
}
