//! The three stored models of the schema (`docs/log-schema.md`), as they are encoded in BSON.
//!
//! Field names are the schema's, with `id` stored as `_id`. BigInt is Int64, Int is Int32,
//! DateTime a BSON datetime, Json an embedded document. LogEntry and LogMetadata also carry
//! fields the schema lacks (the message key fields of a message's first entry; the archive
//! lease, the ingest epoch, `pendingChunk` and `sweepDue`); they are extra fields, not renamed
//! ones, so the schema's fields stay exactly as specified. `MessageLedger` and `IngestEpoch`
//! are added collections.

use bson::oid::ObjectId;
use bson::{DateTime, Document};
use serde::{Deserialize, Serialize};

use crate::domain::{EpisodeId, LogLevel};

/// Default of `LogMetadata.archiveThreshold`.
pub const DEFAULT_ARCHIVE_THRESHOLD: i32 = 50_000;
/// Default of `LogMetadata.chunkSize`.
pub const DEFAULT_CHUNK_SIZE: i32 = 50_000;

/// Fixed part of [`entry_size`]: `_id`, the two datetimes, `sequenceNumber`, field names, type
/// tags and length prefixes of a LogEntry's BSON encoding.
pub const ENTRY_FIXED_BYTES: i64 = 128;

/// The size measure behind `currentMongoBytes`: the logical size of one stored LogEntry.
///
/// It is `128 + len(episodeId) + len(level) + len(message) + len(metadata as compact JSON)`,
/// which tracks the entry's BSON size within a few percent. It depends only on the content a
/// producer sent, so the ingest-worker (which adds it) and the archive-worker (which subtracts it
/// from what it reads back) always agree, whatever integer widths the server returns.
pub fn entry_size(
    episode_id: &str,
    level: LogLevel,
    message: &str,
    metadata_json_len: usize,
) -> i64 {
    ENTRY_FIXED_BYTES
        + episode_id.len() as i64
        + level.as_str().len() as i64
        + message.len() as i64
        + metadata_json_len as i64
}

/// Length of the compact JSON of metadata, without building it: metadata only ever holds what
/// JSON can (objects, arrays, strings, numbers, booleans, null), which serializes straight from
/// BSON to the same bytes as `crate::chunk::metadata_to_json` (a unit test checks it).
pub fn metadata_json_len(doc: &Document) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, doc)
        .map(|()| c.0)
        .unwrap_or(0)
}

/// A producer's metadata (a JSON object, keys in the order sent) as the BSON document a
/// LogEntry stores; [`crate::chunk::metadata_to_json`] turns it back into the same JSON.
pub fn metadata_to_bson(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Document, bson::ser::Error> {
    bson::to_document(map)
}

/// A message's identity within its episode: what its entries' `_id`s and its dedup record are
/// derived from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    /// The episode.
    pub episode_id: EpisodeId,
    /// The producer's `message_id`.
    pub message_id: String,
}

impl MessageKey {
    pub fn new(episode_id: &EpisodeId, message_id: &str) -> Self {
        Self {
            episode_id: episode_id.clone(),
            message_id: message_id.to_owned(),
        }
    }

    /// The `_id` of log `index` of this message: the first 12 bytes of a SHA-256 of the
    /// episode, the message id and the index, as an ObjectId. It depends on nothing else: a
    /// retried insert of the same log is refused as a duplicate whatever sequence number it
    /// carries, and a message that reuses an id for other content is found by its first
    /// entry's `_id` (whose `messageDigest` then differs).
    pub fn entry_id(&self, index: usize) -> ObjectId {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.episode_id.as_str().as_bytes());
        h.update([0]);
        h.update(self.message_id.as_bytes());
        h.update([0]);
        h.update((index as u64).to_le_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 12];
        bytes.copy_from_slice(&digest[..12]);
        ObjectId::from_bytes(bytes)
    }
}

/// A digest of a message's logs (timestamps, levels, messages, metadata as compact JSON), the
/// first 8 bytes of a SHA-256 as an Int64: the same for every retry of a message, different for
/// another message that reuses its id.
pub fn message_digest<'a>(logs: impl IntoIterator<Item = DigestInput<'a>>) -> i64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for l in logs {
        h.update(l.timestamp_ms.to_le_bytes());
        h.update(l.level.as_str().as_bytes());
        h.update([0]);
        h.update((l.message.len() as u64).to_le_bytes());
        h.update(l.message.as_bytes());
        h.update((l.metadata_json.len() as u64).to_le_bytes());
        h.update(l.metadata_json);
    }
    let d = h.finalize();
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// [`message_digest`] of a decoded message's logs.
pub fn digest_of_message(m: &crate::contract::LogMessage) -> i64 {
    let jsons: Vec<Vec<u8>> = m
        .logs
        .iter()
        .map(|l| {
            l.metadata
                .as_ref()
                .map(|md| serde_json::to_vec(md).unwrap_or_default())
                .unwrap_or_default()
        })
        .collect();
    message_digest(m.logs.iter().zip(&jsons).map(|(l, j)| DigestInput {
        timestamp_ms: l.timestamp_ms,
        level: l.level,
        message: &l.message,
        metadata_json: j,
    }))
}

/// The entries an ingest-worker writes for a message numbered from `first`: `_id`s from its
/// key, stamped with the writer's ownership `epoch`, and on the first entry the message's log
/// count and `digest`.
pub fn message_entries(
    key: &MessageKey,
    digest: i64,
    m: &crate::contract::LogMessage,
    first: i64,
    now: DateTime,
    epoch: i64,
) -> Result<Vec<LogEntry>, bson::ser::Error> {
    let mut out = Vec::with_capacity(m.logs.len());
    for (k, log) in m.logs.iter().enumerate() {
        let mut e = LogEntry::from_new_log(key, k, log, first + k as i64, now)?;
        e.ingest_epoch = Some(epoch);
        if k == 0 {
            e.message_logs = Some(m.logs.len() as i32);
            e.message_digest = Some(digest);
        }
        out.push(e);
    }
    Ok(out)
}

/// One log as [`message_digest`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    pub timestamp_ms: i64,
    pub level: LogLevel,
    pub message: &'a str,
    /// Metadata as compact JSON, keys in the order sent; empty without metadata.
    pub metadata_json: &'a [u8],
}

/// The dedup record of an archived message (collection `MessageLedger`): its entries are gone
/// from LogEntry, and this keeps a retry of it from being ingested again for
/// `ingest.dedup_horizon_secs` after archiving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedMessage {
    /// The `_id` its first entry had.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub episode_id: EpisodeId,
    pub first_sequence: i64,
    pub log_count: i32,
    /// [`message_digest`] of its logs.
    pub digest: i64,
    /// When its chunk was committed; the record expires a horizon after.
    pub archived_at: DateTime,
}

impl ArchivedMessage {
    /// The record of the message whose first entry is `e` (`None`: not a first entry).
    pub fn of_first_entry(e: &LogEntry, archived_at: DateTime) -> Option<Self> {
        Some(Self {
            id: e.id,
            episode_id: e.episode_id.clone(),
            first_sequence: e.sequence_number,
            log_count: e.message_logs?,
            digest: e.message_digest?,
            archived_at,
        })
    }
}

/// One log line in MongoDB (collection `LogEntry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub episode_id: EpisodeId,
    pub timestamp: DateTime,
    pub level: LogLevel,
    pub message: String,
    /// Absent when the producer sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
    pub sequence_number: i64,
    pub created_at: DateTime,
    /// On the first entry of each message only: how many logs the message holds (logfleet's
    /// field, for the dedup ledger of archived messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_logs: Option<i32>,
    /// On the first entry of each message only: [`message_digest`] of the message's logs, which
    /// tells a producer's retry from another message reusing its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_digest: Option<i64>,
    /// The ownership epoch of the ingest-worker that wrote (or, finding it there, adopted) the
    /// entry. Removing another owner's uncounted entries only removes those of an epoch up to
    /// the remover's own, so a worker that pauses in the middle of that cannot remove what a
    /// newer owner wrote and counted meanwhile. Absent on entries not written by ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_epoch: Option<i64>,
}

impl LogEntry {
    /// The entry an ingest-worker stores for log `index` of a message, given its sequence
    /// number. Its `_id` is [`entry_id`] of the message's key and the index, so a retry of the
    /// same message writes the same `_id`s.
    pub fn from_new_log(
        key: &MessageKey,
        index: usize,
        log: &crate::contract::NewLog,
        sequence_number: i64,
        created_at: DateTime,
    ) -> Result<Self, bson::ser::Error> {
        Ok(Self {
            id: key.entry_id(index),
            episode_id: key.episode_id.clone(),
            timestamp: DateTime::from_millis(log.timestamp_ms),
            level: log.level,
            message: log.message.clone(),
            metadata: log.metadata.as_ref().map(metadata_to_bson).transpose()?,
            sequence_number,
            created_at,
            message_logs: None,
            message_digest: None,
            ingest_epoch: None,
        })
    }

    /// [`entry_size`] of this entry.
    pub fn size(&self) -> i64 {
        let meta_len = self.metadata.as_ref().map_or(0, metadata_json_len);
        entry_size(
            self.episode_id.as_str(),
            self.level,
            &self.message,
            meta_len,
        )
    }
}

/// One archived chunk in S3 (collection `LogChunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub episode_id: EpisodeId,
    pub chunk_number: i32,
    pub start_sequence: i64,
    pub end_sequence: i64,
    pub start_time: DateTime,
    pub end_time: DateTime,
    pub log_count: i32,
    /// The S3 key of the chunk object.
    pub src: String,
    pub size_bytes: i64,
    pub created_at: DateTime,
    pub last_accessed: DateTime,
}

/// The archive lock's lease: who holds `isArchiving`, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveLease {
    /// Instance id of the archive-worker that holds the lock.
    pub owner: String,
    /// After this instant another archive-worker may take the lock over.
    pub expires_at: DateTime,
}

/// Per-episode statistics and archival state (collection `LogMetadata`).
///
/// Besides the schema's fields it carries these of its own (`docs/log-schema.md`):
/// - `version`: bumped by every write. Every writer replaces the document only if the version it
///   read is still there (compare-and-set), so concurrent writers never lose each other's changes.
/// - `archiveLease`: owner and expiry of the lock that `isArchiving` flags.
/// - `ingestEpoch`: the ownership epoch of the last ingest-worker that counted logs here; a
///   worker with an older epoch (it lost its partition) is refused.
/// - `pendingChunk`: the LogChunk record of the chunk committed last, until that record is
///   written.
/// - `sweepDue`: whether the archive sweep must look at the episode.
/// - retention (`docs/retention.md`): `retentionOverride`, the `expiring` marker, and the
///   `expiredLogs` / `expiredChunks` / `expiredS3Bytes` counters with `expiredAt` and
///   `expiryReason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogMetadata {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub episode_id: EpisodeId,
    pub total_logs: i64,
    pub current_logs: i64,
    pub archived_logs: i64,
    pub total_chunks: i32,
    pub next_sequence_number: i64,
    pub first_log_at: Option<DateTime>,
    pub last_log_at: Option<DateTime>,
    pub current_mongo_bytes: i64,
    pub archived_s3_bytes: i64,
    /// Count per level, as Int64, for every level seen so far.
    pub level_counts: Option<Document>,
    pub archive_threshold: i32,
    pub chunk_size: i32,
    pub is_archiving: bool,
    pub last_archived_at: Option<DateTime>,
    pub updated_at: DateTime,
    /// Bumped by every write (compare-and-set).
    #[serde(default)]
    pub version: i64,
    /// Owner and expiry of the archive lock.
    #[serde(default)]
    pub archive_lease: Option<ArchiveLease>,
    /// Ownership epoch of the last ingest-worker that counted logs here (fencing).
    #[serde(default)]
    pub ingest_epoch: i64,
    /// The chunk committed last, until its LogChunk record is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_chunk: Option<LogChunk>,
    /// Whether the archive sweep must look at this episode: over its threshold, locked, or with
    /// work left from a commit. The sweep reads only such episodes (an indexed field).
    #[serde(default)]
    pub sweep_due: bool,
    /// Retention: this episode's own limits instead of the global `[retention]` ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_override: Option<RetentionOverride>,
    /// Retention: the range being expired now, until every step of its expiry is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiring: Option<Expiring>,
    /// Retention: logs expired, always the prefix `0..expiredLogs` of the sequence.
    #[serde(default)]
    pub expired_logs: i64,
    /// Retention: chunks expired, always the chunk numbers `0..expiredChunks`.
    #[serde(default)]
    pub expired_chunks: i32,
    /// Retention: compressed bytes of the expired chunks.
    #[serde(default)]
    pub expired_s3_bytes: i64,
    /// Retention: when the last expiry of this episode finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<DateTime>,
    /// Retention: why the last expiry happened, in words (what a read of the range is told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_reason: Option<String>,
}

/// An episode's own retention limits (`LogMetadata.retentionOverride`), set with
/// `logctl retention set`. A limit left out follows the global setting; 0 means never.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionOverride {
    /// Seconds after its `lastLogAt` the whole episode expires (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<i64>,
    /// Seconds after a chunk's `endTime` an archived chunk expires (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_max_age_secs: Option<i64>,
    /// When the override was set (the override index's key).
    pub set_at: DateTime,
}

/// What an expiry in progress removes (`LogMetadata.expiring`): the marker written first, under
/// the archive lock, and cleared by the last step. Everything below `below` reads as expired
/// from the moment it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expiring {
    /// `episode` (everything below `below`, hot logs included) or `chunks` (archived chunks
    /// only, the hot tail kept).
    pub kind: String,
    /// Logs with a sequence number below this go.
    pub below: i64,
    /// Chunks with a number below this go.
    pub chunks_below: i32,
    /// Hot logs (not archived) among them: subtracted from `currentLogs`.
    pub hot_logs: i64,
    /// Size measure of those hot logs: subtracted from `currentMongoBytes`.
    pub mongo_bytes: i64,
    /// Compressed bytes of the chunks that go: added to `expiredS3Bytes`.
    pub s3_bytes: i64,
    /// Why, in words.
    pub reason: String,
    /// When the expiry was decided.
    pub at: DateTime,
}

impl LogMetadata {
    /// A new episode's document, with every default of the schema.
    pub fn new(
        episode_id: EpisodeId,
        archive_threshold: i32,
        chunk_size: i32,
        now: DateTime,
    ) -> Self {
        Self {
            id: ObjectId::new(),
            episode_id,
            total_logs: 0,
            current_logs: 0,
            archived_logs: 0,
            total_chunks: 0,
            next_sequence_number: 0,
            first_log_at: None,
            last_log_at: None,
            current_mongo_bytes: 0,
            archived_s3_bytes: 0,
            level_counts: None,
            archive_threshold,
            chunk_size,
            is_archiving: false,
            last_archived_at: None,
            updated_at: now,
            version: 0,
            archive_lease: None,
            ingest_epoch: 0,
            pending_chunk: None,
            sweep_due: false,
            retention_override: None,
            expiring: None,
            expired_logs: 0,
            expired_chunks: 0,
            expired_s3_bytes: 0,
            expired_at: None,
            expiry_reason: None,
        }
    }

    /// Logs below this sequence number are expired, or being expired (retention).
    pub fn expired_below(&self) -> i64 {
        self.expiring
            .as_ref()
            .map_or(self.expired_logs, |e| e.below.max(self.expired_logs))
    }

    /// Chunks below this number are expired, or being expired (retention).
    pub fn expired_chunks_below(&self) -> i32 {
        self.expiring.as_ref().map_or(self.expired_chunks, |e| {
            e.chunks_below.max(self.expired_chunks)
        })
    }

    /// Whether the sweep must come back to this episode once its lock is released: over its
    /// threshold, a commit's follow-up steps or an expiry not finished.
    pub fn due_at_rest(&self) -> bool {
        self.current_logs >= i64::from(self.archive_threshold)
            || self.pending_chunk.is_some()
            || self.expiring.is_some()
    }

    /// Count of one level in `levelCounts`, whatever integer width the server returned.
    pub fn level_count(&self, level: LogLevel) -> i64 {
        self.level_counts
            .as_ref()
            .and_then(|d| d.get(level.as_str()))
            .and_then(|b| match b {
                bson::Bson::Int64(v) => Some(*v),
                bson::Bson::Int32(v) => Some(i64::from(*v)),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Adds `n` to one level's count, stored as Int64.
    pub fn add_level_count(&mut self, level: LogLevel, n: i64) {
        let current = self.level_count(level);
        self.level_counts
            .get_or_insert_with(Document::new)
            .insert(level.as_str(), current + n);
    }

    /// Re-encodes every level count as Int64 (a server may hand small ones back as Int32).
    pub fn normalize_level_counts(&mut self) {
        if let Some(doc) = self.level_counts.take() {
            let mut out = Document::new();
            for level in LogLevel::ALL {
                if doc.contains_key(level.as_str()) {
                    let v = match doc.get(level.as_str()) {
                        Some(bson::Bson::Int64(v)) => *v,
                        Some(bson::Bson::Int32(v)) => i64::from(*v),
                        _ => 0,
                    };
                    out.insert(level.as_str(), v);
                }
            }
            self.level_counts = Some(out);
        }
    }

    /// Whether the archive lock is held by someone whose lease has not run out at `now`.
    pub fn lock_held_at(&self, now: DateTime) -> bool {
        self.is_archiving
            && self
                .archive_lease
                .as_ref()
                .is_some_and(|l| l.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Bson, doc};

    fn ep() -> EpisodeId {
        EpisodeId::parse("ep-1").unwrap()
    }

    fn type_of(d: &Document, k: &str) -> bson::spec::ElementType {
        d.get(k)
            .unwrap_or_else(|| panic!("missing field {k}"))
            .element_type()
    }

    #[test]
    fn message_entries_carry_the_writers_epoch_as_int64_on_every_entry() {
        use bson::spec::ElementType as T;
        let log = |m: &str| crate::contract::NewLog {
            timestamp_ms: 1,
            level: LogLevel::Info,
            message: m.into(),
            metadata: None,
            metadata_json_len: 0,
        };
        let msg = crate::contract::LogMessage {
            episode_id: ep(),
            message_id: crate::domain::MessageId::parse("m-1").unwrap(),
            logs: vec![log("a"), log("b")],
        };
        let key = MessageKey::new(&ep(), "m-1");
        let entries = message_entries(&key, 7, &msg, 10, DateTime::now(), 5).unwrap();
        assert_eq!(entries.len(), 2);
        for (i, e) in entries.iter().enumerate() {
            let d = bson::to_document(e).unwrap();
            assert_eq!(type_of(&d, "ingestEpoch"), T::Int64);
            assert_eq!(d.get_i64("ingestEpoch").unwrap(), 5);
            assert_eq!(d.get_i64("sequenceNumber").unwrap(), 10 + i as i64);
        }
        assert_eq!(entries[0].message_logs, Some(2));
        assert_eq!(entries[1].message_logs, None);
    }

    #[test]
    fn log_entry_bson_types() {
        use bson::spec::ElementType as T;
        let e = LogEntry {
            id: ObjectId::new(),
            episode_id: ep(),
            timestamp: DateTime::from_millis(1),
            level: LogLevel::Info,
            message: "m".into(),
            metadata: Some(doc! {"k": 1_i64}),
            sequence_number: 3,
            created_at: DateTime::now(),
            message_logs: None,
            message_digest: None,
            ingest_epoch: None,
        };
        let d = bson::to_document(&e).unwrap();
        let keys: Vec<_> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "episodeId",
                "timestamp",
                "level",
                "message",
                "metadata",
                "sequenceNumber",
                "createdAt"
            ]
        );
        assert_eq!(type_of(&d, "_id"), T::ObjectId);
        assert_eq!(type_of(&d, "episodeId"), T::String);
        assert_eq!(type_of(&d, "timestamp"), T::DateTime);
        assert_eq!(type_of(&d, "level"), T::String);
        assert_eq!(d.get_str("level").unwrap(), "info");
        assert_eq!(type_of(&d, "message"), T::String);
        assert_eq!(type_of(&d, "metadata"), T::EmbeddedDocument);
        assert_eq!(type_of(&d, "sequenceNumber"), T::Int64);
        assert_eq!(type_of(&d, "createdAt"), T::DateTime);
        let back: LogEntry = bson::from_document(d).unwrap();
        assert_eq!(back, e);
        let no_meta = LogEntry {
            metadata: None,
            ..e
        };
        assert!(
            !bson::to_document(&no_meta)
                .unwrap()
                .contains_key("metadata")
        );
    }

    #[test]
    fn log_chunk_bson_types() {
        use bson::spec::ElementType as T;
        let c = LogChunk {
            id: ObjectId::new(),
            episode_id: ep(),
            chunk_number: 2,
            start_sequence: 100,
            end_sequence: 149,
            start_time: DateTime::from_millis(5),
            end_time: DateTime::from_millis(9),
            log_count: 50,
            src: "logs/ep-1/chunk-0000000002.jsonl.gz".into(),
            size_bytes: 1234,
            created_at: DateTime::now(),
            last_accessed: DateTime::now(),
        };
        let d = bson::to_document(&c).unwrap();
        for (k, t) in [
            ("_id", T::ObjectId),
            ("episodeId", T::String),
            ("chunkNumber", T::Int32),
            ("startSequence", T::Int64),
            ("endSequence", T::Int64),
            ("startTime", T::DateTime),
            ("endTime", T::DateTime),
            ("logCount", T::Int32),
            ("src", T::String),
            ("sizeBytes", T::Int64),
            ("createdAt", T::DateTime),
            ("lastAccessed", T::DateTime),
        ] {
            assert_eq!(type_of(&d, k), t, "{k}");
        }
        assert_eq!(d.len(), 12);
    }

    #[test]
    fn log_metadata_defaults_and_bson_types() {
        use bson::spec::ElementType as T;
        let mut m = LogMetadata::new(
            ep(),
            DEFAULT_ARCHIVE_THRESHOLD,
            DEFAULT_CHUNK_SIZE,
            DateTime::now(),
        );
        let d = bson::to_document(&m).unwrap();
        for (k, t) in [
            ("_id", T::ObjectId),
            ("episodeId", T::String),
            ("totalLogs", T::Int64),
            ("currentLogs", T::Int64),
            ("archivedLogs", T::Int64),
            ("totalChunks", T::Int32),
            ("nextSequenceNumber", T::Int64),
            ("firstLogAt", T::Null),
            ("lastLogAt", T::Null),
            ("currentMongoBytes", T::Int64),
            ("archivedS3Bytes", T::Int64),
            ("levelCounts", T::Null),
            ("archiveThreshold", T::Int32),
            ("chunkSize", T::Int32),
            ("isArchiving", T::Boolean),
            ("lastArchivedAt", T::Null),
            ("updatedAt", T::DateTime),
            ("version", T::Int64),
        ] {
            assert_eq!(type_of(&d, k), t, "{k}");
        }
        assert_eq!(d.get_i32("archiveThreshold").unwrap(), 50_000);
        assert_eq!(d.get_i32("chunkSize").unwrap(), 50_000);
        assert_eq!(d.get_i64("totalLogs").unwrap(), 0);
        assert!(!d.get_bool("isArchiving").unwrap());

        m.first_log_at = Some(DateTime::from_millis(1));
        m.add_level_count(LogLevel::Info, 2);
        m.add_level_count(LogLevel::Info, 3);
        let d = bson::to_document(&m).unwrap();
        assert_eq!(type_of(&d, "firstLogAt"), T::DateTime);
        assert_eq!(
            d.get_document("levelCounts").unwrap(),
            &doc! {"info": 5_i64}
        );
        assert_eq!(
            type_of(d.get_document("levelCounts").unwrap(), "info"),
            T::Int64
        );
    }

    #[test]
    fn retention_fields_bson_types() {
        use bson::spec::ElementType as T;
        let mut m = LogMetadata::new(ep(), 10, 10, DateTime::now());
        let d = bson::to_document(&m).unwrap();
        for (k, t) in [
            ("expiredLogs", T::Int64),
            ("expiredChunks", T::Int32),
            ("expiredS3Bytes", T::Int64),
        ] {
            assert_eq!(type_of(&d, k), t, "{k}");
        }
        for k in ["retentionOverride", "expiring", "expiredAt", "expiryReason"] {
            assert!(!d.contains_key(k), "{k} absent by default");
        }
        m.retention_override = Some(RetentionOverride {
            max_age_secs: Some(86_400),
            chunk_max_age_secs: None,
            set_at: DateTime::now(),
        });
        m.expiring = Some(Expiring {
            kind: "chunks".into(),
            below: 100,
            chunks_below: 2,
            hot_logs: 0,
            mongo_bytes: 0,
            s3_bytes: 5,
            reason: "r".into(),
            at: DateTime::now(),
        });
        m.expired_at = Some(DateTime::now());
        m.expiry_reason = Some("r".into());
        let d = bson::to_document(&m).unwrap();
        let o = d.get_document("retentionOverride").unwrap();
        assert_eq!(type_of(o, "maxAgeSecs"), T::Int64);
        assert!(!o.contains_key("chunkMaxAgeSecs"));
        assert_eq!(type_of(o, "setAt"), T::DateTime);
        let e = d.get_document("expiring").unwrap();
        for (k, t) in [
            ("kind", T::String),
            ("below", T::Int64),
            ("chunksBelow", T::Int32),
            ("hotLogs", T::Int64),
            ("mongoBytes", T::Int64),
            ("s3Bytes", T::Int64),
            ("reason", T::String),
            ("at", T::DateTime),
        ] {
            assert_eq!(type_of(e, k), t, "expiring.{k}");
        }
        assert_eq!(type_of(&d, "expiredAt"), T::DateTime);
        assert_eq!(type_of(&d, "expiryReason"), T::String);
        assert_eq!((m.expired_below(), m.expired_chunks_below()), (100, 2));
        assert!(m.due_at_rest());
        let back: LogMetadata = bson::from_document(d).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn metadata_reads_int32_counters_from_a_server_that_narrows_them() {
        let m = LogMetadata::new(ep(), 10, 10, DateTime::now());
        let mut d = bson::to_document(&m).unwrap();
        d.insert("totalLogs", Bson::Int32(7));
        d.insert("levelCounts", doc! {"warn": 3_i32});
        let mut back: LogMetadata = bson::from_document(d).unwrap();
        assert_eq!(back.total_logs, 7);
        assert_eq!(back.level_count(LogLevel::Warn), 3);
        back.normalize_level_counts();
        assert_eq!(
            back.level_counts.unwrap().get("warn"),
            Some(&Bson::Int64(3))
        );
    }

    #[test]
    fn entry_size_is_the_documented_formula() {
        assert_eq!(
            entry_size("ep", LogLevel::Info, "hello", 0),
            128 + 2 + 4 + 5
        );
        assert_eq!(entry_size("ep", LogLevel::Debug, "", 7), 128 + 2 + 5 + 7);
    }
}
