//! The chunk codec: JSONL.gz encoding of archived logs, and the S3 key scheme.
//!
//! A chunk is gzip-compressed JSON Lines, one LogEntry per line in sequence order (a large chunk
//! is several gzip members, compressed in parallel; any gunzip reads them as one stream):
//!
//! ```text
//! {"id":"65f0c0ffee...","episodeId":"ep-1","timestamp":"2026-11-27T18:00:00.000Z","level":"info","message":"...","metadata":{...},"sequenceNumber":0,"createdAt":"2026-11-27T18:00:01.234Z"}
//! ```
//!
//! `id` is the 24-hex ObjectId, datetimes are RFC 3339 UTC with milliseconds, `metadata` keeps
//! the key order the producer sent and is
//! omitted when the log had none. Keys: `{key_prefix}/{episodeId}/chunk-{chunkNumber:010}.jsonl.gz`.

use std::io::{Read, Write};

use bson::{DateTime, Document};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::domain::{EpisodeId, LogLevel};
use crate::model::LogEntry;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("log {got} does not follow log {expected_after} in the chunk")]
    NotContiguous { expected_after: i64, got: i64 },
    #[error("an empty chunk cannot be written")]
    Empty,
    #[error("chunk encoding: {0}")]
    Io(#[from] std::io::Error),
    #[error("chunk line {line}: {source}")]
    Line {
        line: usize,
        source: serde_json::Error,
    },
}

/// The S3 key of chunk `chunk_number` of `episode`. Deterministic, so a retry overwrites.
pub fn chunk_key(key_prefix: &str, episode: &EpisodeId, chunk_number: i32) -> String {
    let prefix = key_prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{episode}/chunk-{chunk_number:010}.jsonl.gz")
    } else {
        format!("{prefix}/{episode}/chunk-{chunk_number:010}.jsonl.gz")
    }
}

/// Metadata as plain JSON (what the producer sent): numbers stay numbers.
pub fn metadata_to_json(doc: &Document) -> serde_json::Value {
    bson::Bson::Document(doc.clone()).into_relaxed_extjson()
}

/// Length of the compact JSON of metadata, without building it: metadata only ever holds what
/// JSON can (objects, arrays, strings, numbers, booleans, null), which serializes straight from
/// BSON to the same bytes as [`metadata_to_json`] (a unit test checks it).
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

/// One line of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkLine {
    pub id: String,
    pub episode_id: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub sequence_number: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Serializes datetimes as `2026-11-27T18:00:00.000Z`.
fn rfc3339_ms(dt: DateTime) -> String {
    dt.to_chrono()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineOut<'a> {
    id: String,
    episode_id: &'a str,
    timestamp: String,
    level: LogLevel,
    message: &'a str,
    /// Serialized straight from BSON (see [`metadata_json_len`]): no copy per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Document>,
    sequence_number: i64,
    created_at: String,
}

/// A finished chunk, ready to upload, with what its LogChunk record needs.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    pub bytes: Vec<u8>,
    pub log_count: i64,
    pub start_sequence: i64,
    pub end_sequence: i64,
    /// Earliest `timestamp` in the chunk.
    pub start_time: DateTime,
    /// Latest `timestamp` in the chunk.
    pub end_time: DateTime,
    /// Sum of [`crate::model::entry_size`] over the chunk's logs.
    pub logical_bytes: i64,
    /// Length of the uncompressed JSONL.
    pub uncompressed_bytes: u64,
}

/// Below this much JSONL a chunk is compressed as one gzip member on the calling thread.
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Encodes LogEntries, in sequence order, into gzip-compressed JSONL.
///
/// Lines are serialized into one buffer; `finish` compresses it in as many parts as the machine
/// has cores (at most 4), in parallel, each part a complete gzip member, and concatenates them
/// (RFC 1952 allows several members in a file, as `pigz` writes; `gunzip`, `zcat` and
/// [`decode_chunk`] read them as one stream).
pub struct ChunkWriter {
    /// The uncompressed JSON Lines so far.
    jsonl: Vec<u8>,
    /// Offset where each line starts, to split the buffer at line boundaries.
    line_starts: Vec<usize>,
    gzip_level: u32,
    count: i64,
    start_sequence: i64,
    end_sequence: i64,
    start_time: DateTime,
    end_time: DateTime,
    logical_bytes: i64,
    uncompressed_bytes: u64,
}

impl ChunkWriter {
    pub fn new(gzip_level: u32) -> Self {
        Self {
            jsonl: Vec::with_capacity(1 << 20),
            line_starts: Vec::new(),
            gzip_level,
            count: 0,
            start_sequence: 0,
            end_sequence: -1,
            start_time: DateTime::MAX,
            end_time: DateTime::MIN,
            logical_bytes: 0,
            uncompressed_bytes: 0,
        }
    }

    /// Appends the next entry; it must carry the next sequence number.
    pub fn push(&mut self, e: &LogEntry) -> Result<(), ChunkError> {
        if self.count == 0 {
            self.start_sequence = e.sequence_number;
        } else if e.sequence_number != self.end_sequence + 1 {
            return Err(ChunkError::NotContiguous {
                expected_after: self.end_sequence,
                got: e.sequence_number,
            });
        }
        let start = self.jsonl.len();
        self.line_starts.push(start);
        let out = LineOut {
            id: e.id.to_hex(),
            episode_id: e.episode_id.as_str(),
            timestamp: rfc3339_ms(e.timestamp),
            level: e.level,
            message: &e.message,
            metadata: e.metadata.as_ref(),
            sequence_number: e.sequence_number,
            created_at: rfc3339_ms(e.created_at),
        };
        serde_json::to_writer(&mut self.jsonl, &out).map_err(std::io::Error::other)?;
        self.jsonl.push(b'\n');
        self.uncompressed_bytes += (self.jsonl.len() - start) as u64;
        self.count += 1;
        self.end_sequence = e.sequence_number;
        self.start_time = self.start_time.min(e.timestamp);
        self.end_time = self.end_time.max(e.timestamp);
        self.logical_bytes += e.size();
        Ok(())
    }

    pub fn len(&self) -> i64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(self) -> Result<EncodedChunk, ChunkError> {
        if self.count == 0 {
            return Err(ChunkError::Empty);
        }
        let parts = if self.jsonl.len() < PARALLEL_MIN_BYTES {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 4)
        };
        // Split at line boundaries into `parts` pieces of about equal size.
        let mut cuts = vec![0];
        for k in 1..parts {
            let target = self.jsonl.len() * k / parts;
            let at = self.line_starts.partition_point(|&s| s < target);
            if let Some(&cut) = self.line_starts.get(at) {
                if cut > *cuts.last().expect("starts with 0") {
                    cuts.push(cut);
                }
            }
        }
        cuts.push(self.jsonl.len());
        let level = Compression::new(self.gzip_level);
        let compress = |piece: &[u8]| -> std::io::Result<Vec<u8>> {
            let mut e = GzEncoder::new(Vec::with_capacity(piece.len() / 8), level);
            e.write_all(piece)?;
            e.finish()
        };
        let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &self.jsonl[w[0]..w[1]]).collect();
        let members: Vec<Vec<u8>> = if pieces.len() == 1 {
            vec![compress(pieces[0])?]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = pieces
                    .iter()
                    .map(|p| scope.spawn(move || compress(p)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(std::io::Error::other("compression thread panicked"))
                        })
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            })?
        };
        Ok(EncodedChunk {
            bytes: members.concat(),
            log_count: self.count,
            start_sequence: self.start_sequence,
            end_sequence: self.end_sequence,
            start_time: self.start_time,
            end_time: self.end_time,
            logical_bytes: self.logical_bytes,
            uncompressed_bytes: self.uncompressed_bytes,
        })
    }
}

/// Decompresses and parses a whole chunk.
pub fn decode_chunk(gz: &[u8]) -> Result<Vec<ChunkLine>, ChunkError> {
    let mut text = String::new();
    MultiGzDecoder::new(gz).read_to_string(&mut text)?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| ChunkError::Line {
                line: i + 1,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use bson::oid::ObjectId;

    fn entry(seq: i64, ts: i64, meta: Option<Document>) -> LogEntry {
        LogEntry {
            id: ObjectId::new(),
            episode_id: EpisodeId::parse("ep-1").unwrap(),
            timestamp: DateTime::from_millis(ts),
            level: LogLevel::Warn,
            message: format!("line {seq} \"quoted\" ünïcode"),
            metadata: meta,
            sequence_number: seq,
            created_at: DateTime::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn round_trip_keeps_every_field_and_tracks_ranges() {
        let entries = vec![
            entry(
                10,
                5_000,
                Some(doc! {"k": 1_i64, "f": 1.5, "nested": {"a": [1_i64, "x"]}}),
            ),
            entry(11, 4_000, None),
            entry(12, 6_000, None),
        ];
        let mut w = ChunkWriter::new(6);
        for e in &entries {
            w.push(e).unwrap();
        }
        let c = w.finish().unwrap();
        assert_eq!((c.log_count, c.start_sequence, c.end_sequence), (3, 10, 12));
        assert_eq!(
            (c.start_time, c.end_time),
            (DateTime::from_millis(4_000), DateTime::from_millis(6_000))
        );
        assert_eq!(
            c.logical_bytes,
            entries.iter().map(LogEntry::size).sum::<i64>()
        );
        let lines = decode_chunk(&c.bytes).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].id, entries[0].id.to_hex());
        assert_eq!(
            lines[0].metadata,
            Some(serde_json::json!({"k": 1, "f": 1.5, "nested": {"a": [1, "x"]}}))
        );
        assert_eq!(lines[1].metadata, None);
        assert_eq!(lines[2].sequence_number, 12);
        assert_eq!(lines[2].timestamp.timestamp_millis(), 6_000);
        assert_eq!(lines[0].message, entries[0].message);
        assert_eq!(lines[0].created_at.timestamp_millis(), 1_700_000_000_123);
    }

    #[test]
    fn metadata_serializes_from_bson_as_the_producer_sent_it() {
        let d = doc! {"i": 5_i64, "small": 3_i32, "f": 5.0, "g": 0.1, "s": "x\"y\u{e9}", "b": true, "n": null,
        "a": [1_i64, "two", {"deep": [2.5, false]}], "o": {"k": -7_i64}};
        let direct = serde_json::to_vec(&d).unwrap();
        let via_json = serde_json::to_vec(&metadata_to_json(&d)).unwrap();
        assert_eq!(
            String::from_utf8(direct.clone()).unwrap(),
            String::from_utf8(via_json).unwrap()
        );
        assert_eq!(metadata_json_len(&d), direct.len());
    }

    #[test]
    fn line_format_is_stable() {
        let mut e = entry(0, 0, Some(doc! {"b": 2_i64, "a": "x"}));
        e.id = ObjectId::parse_str("65f000000000000000000001").unwrap();
        e.message = "m".into();
        let mut w = ChunkWriter::new(1);
        w.push(&e).unwrap();
        let c = w.finish().unwrap();
        let mut text = String::new();
        MultiGzDecoder::new(&c.bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            "{\"id\":\"65f000000000000000000001\",\"episodeId\":\"ep-1\",\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"level\":\"warn\",\"message\":\"m\",\"metadata\":{\"b\":2,\"a\":\"x\"},\"sequenceNumber\":0,\"createdAt\":\"2023-11-14T22:13:20.123Z\"}\n"
        );
    }

    #[test]
    fn large_chunks_are_several_gzip_members_read_back_as_one_stream() {
        let entries: Vec<_> = (0..20_000)
            .map(|i| entry(i, i, (i % 5 == 0).then(|| doc! {"i": i})))
            .collect();
        let mut w = ChunkWriter::new(3);
        for e in &entries {
            w.push(e).unwrap();
        }
        let c = w.finish().unwrap();
        assert!(c.uncompressed_bytes as usize > PARALLEL_MIN_BYTES);
        let members = c
            .bytes
            .windows(3)
            .filter(|w| *w == [0x1f, 0x8b, 0x08])
            .count();
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        assert!(members >= cores, "{members} gzip members for {cores} cores");
        let lines = decode_chunk(&c.bytes).unwrap();
        assert_eq!(lines.len(), 20_000);
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| l.sequence_number == i as i64)
        );
        let mut text = Vec::new();
        MultiGzDecoder::new(&c.bytes[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text.len() as u64, c.uncompressed_bytes);
    }

    #[test]
    fn gaps_and_empty_chunks_are_refused() {
        let mut w = ChunkWriter::new(1);
        w.push(&entry(0, 0, None)).unwrap();
        assert!(matches!(
            w.push(&entry(2, 0, None)),
            Err(ChunkError::NotContiguous {
                expected_after: 0,
                got: 2
            })
        ));
        assert!(matches!(
            ChunkWriter::new(1).finish(),
            Err(ChunkError::Empty)
        ));
    }

    #[test]
    fn keys_are_deterministic_and_stay_under_their_prefix() {
        let ep = EpisodeId::parse("run.7:a").unwrap();
        assert_eq!(
            chunk_key("logs", &ep, 3),
            "logs/run.7:a/chunk-0000000003.jsonl.gz"
        );
        assert_eq!(
            chunk_key("/logs/", &ep, 3),
            "logs/run.7:a/chunk-0000000003.jsonl.gz"
        );
        assert_eq!(chunk_key("", &ep, 0), "run.7:a/chunk-0000000000.jsonl.gz");
    }
}
