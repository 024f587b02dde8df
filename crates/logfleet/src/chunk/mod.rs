//! Chunks: JSONL.gz archives of an episode's logs, and their S3 keys.
//!
//! Layout:
//! - [`format`]: the key scheme, the line format ([`LogRecord`]) and the member index;
//! - [`writer`]: [`ChunkWriter`], entries in, compressed members out, on its own threads;
//! - [`reader`]: the member index read back, [`ChunkObject`] and [`DecodedMember`] for the
//!   read path, [`decode_chunk`] for a whole chunk.
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
//! omitted when the log had none. Keys: `{key_prefix}/{episodeId}/chunk-{chunkNumber:010}-{attempt}.jsonl.gz`.

pub mod format;
pub mod reader;
pub mod writer;

pub use format::{
    LogRecord, MemberSpan, chunk_key, chunk_number_of_key, episode_key_prefix, metadata_to_json,
    new_attempt, rfc3339_ms,
};
pub use reader::{ChunkObject, DecodedMember, decode_chunk, inflate_member, member_index};
pub use writer::{ChunkWriter, EncodedChunk, MEMBER_BYTES};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EpisodeId, LogLevel};
    use crate::model::{LogEntry, metadata_json_len};
    use bson::oid::ObjectId;
    use bson::{DateTime, Document, doc};
    use flate2::Compression;
    use flate2::read::MultiGzDecoder;
    use flate2::write::GzEncoder;
    use std::io::{Read, Write};

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
            message_logs: None,
            message_digest: None,
            ingest_epoch: None,
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

    fn large_chunk(n: i64) -> (Vec<LogEntry>, EncodedChunk) {
        let entries: Vec<_> = (0..n)
            .map(|i| entry(i, i, (i % 5 == 0).then(|| doc! {"i": i})))
            .collect();
        let mut w = ChunkWriter::new(3);
        for e in &entries {
            w.push(e).unwrap();
        }
        (entries, w.finish().unwrap())
    }

    #[test]
    fn large_chunks_are_indexed_gzip_members_read_back_as_one_stream() {
        let (_, c) = large_chunk(20_000);
        assert!(c.uncompressed_bytes as usize > 2 * MEMBER_BYTES);
        let index = member_index(&c.bytes).expect("a chunk written here has an index");
        assert!(index.len() >= 2, "{} members", index.len());
        assert_eq!(index.iter().map(|m| m.lines).sum::<usize>(), 20_000);
        assert_eq!(index.last().map(|m| m.offset + m.len), Some(c.bytes.len()));
        // Every member inflates on its own to whole lines, the ones its entry names.
        let mut all = Vec::new();
        for m in &index {
            let text = inflate_member(&c.bytes[m.offset..m.offset + m.len]).unwrap();
            assert!(text.len() >= MEMBER_BYTES || m == index.last().unwrap());
            assert_eq!(text.last(), Some(&b'\n'));
            assert_eq!(memchr::memchr_iter(b'\n', &text).count(), m.lines);
            let first: LogRecord =
                serde_json::from_slice(text.split(|b| *b == b'\n').next().unwrap()).unwrap();
            assert_eq!(first.sequence_number, m.first_line as i64);
            all.extend_from_slice(&text);
        }
        // Any gunzip reads the members as one stream.
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
        assert_eq!(text, all);
        assert_eq!(text.len() as u64, c.uncompressed_bytes);
    }

    #[test]
    fn gzip_reads_an_indexed_chunk() {
        let (_, c) = large_chunk(12_000);
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        let mut stdin = child.stdin.take().unwrap();
        let bytes = c.bytes.clone();
        let feed = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().unwrap();
        feed.join().unwrap().unwrap();
        assert!(out.status.success());
        let mut ours = Vec::new();
        MultiGzDecoder::new(&c.bytes[..])
            .read_to_end(&mut ours)
            .unwrap();
        assert_eq!(out.stdout, ours);
    }

    #[test]
    fn many_small_members_come_back_in_order_and_an_unfinished_writer_just_drops() {
        let entries: Vec<_> = (0..3_000).map(|i| entry(i, i, None)).collect();
        let mut w = ChunkWriter::new(1).with_member_bytes(1_000);
        for e in &entries {
            w.push(e).unwrap();
        }
        let c = w.finish().unwrap();
        let index = member_index(&c.bytes).unwrap();
        assert!(index.len() > 100, "{} members", index.len());
        let lines = decode_chunk(&c.bytes).unwrap();
        assert_eq!(lines.len(), 3_000);
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| l.sequence_number == i as i64 && l.id == entries[i].id.to_hex())
        );
        // A writer dropped halfway (an archive run that failed) leaves nothing behind to wait on.
        let mut w = ChunkWriter::new(1).with_member_bytes(1_000);
        for e in &entries[..500] {
            w.push(e).unwrap();
        }
        drop(w);
    }

    #[test]
    fn small_chunks_are_one_indexed_member() {
        let mut w = ChunkWriter::new(6);
        w.push(&entry(7, 0, None)).unwrap();
        w.push(&entry(8, 0, None)).unwrap();
        let c = w.finish().unwrap();
        let index = member_index(&c.bytes).unwrap();
        assert_eq!(
            index,
            vec![MemberSpan {
                offset: 0,
                len: c.bytes.len(),
                first_line: 0,
                lines: 2
            }]
        );
    }

    #[test]
    fn an_object_without_a_whole_index_has_none() {
        let (_, c) = large_chunk(12_000);
        let index = member_index(&c.bytes).unwrap();
        // A plain gzip stream (another tool, or a chunk from before the index).
        let mut plain = GzEncoder::new(Vec::new(), Compression::new(3));
        plain.write_all(b"{}\n").unwrap();
        assert_eq!(member_index(&plain.finish().unwrap()), None);
        // Cut short, or one member's entry out of step: no index (read as one stream).
        assert_eq!(member_index(&c.bytes[..c.bytes.len() - 1]), None);
        let mut bad = c.bytes.clone();
        let at = index[1].offset + 20;
        bad[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(member_index(&bad), None);
        assert_eq!(member_index(&[]), None);
        // A member whose bytes are damaged fails its CRC check, never returns wrong lines.
        let m = index[0];
        let mut dam = c.bytes[m.offset..m.offset + m.len].to_vec();
        let mid = dam.len() / 2;
        dam[mid] ^= 0x55;
        assert!(inflate_member(&dam).is_err());
        // Trailing bytes after a member are refused.
        let mut two = c.bytes[m.offset..m.offset + m.len].to_vec();
        two.extend_from_slice(&c.bytes[index[1].offset..index[1].offset + 10]);
        assert!(inflate_member(&two).is_err());
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
    fn keys_name_the_attempt_and_stay_under_their_prefix() {
        let ep = EpisodeId::parse("run.7:a").unwrap();
        assert_eq!(
            chunk_key("logs", &ep, 3, "0badcafe"),
            "logs/run.7:a/chunk-0000000003-0badcafe.jsonl.gz"
        );
        assert_eq!(
            chunk_key("/logs/", &ep, 3, "0badcafe"),
            "logs/run.7:a/chunk-0000000003-0badcafe.jsonl.gz"
        );
        assert_eq!(
            chunk_key("", &ep, 0, "00000001"),
            "run.7:a/chunk-0000000000-00000001.jsonl.gz"
        );
        let (a, b) = (new_attempt(), new_attempt());
        assert!(a.len() == 8 && a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b, "every attempt its own key");
        assert!(chunk_key("logs", &ep, 3, &a).starts_with(&episode_key_prefix("logs", &ep)));
        // The number is read back from both key forms, and from nothing else.
        assert_eq!(chunk_number_of_key(&chunk_key("logs", &ep, 3, &a)), Some(3));
        assert_eq!(
            chunk_number_of_key("logs/run.7:a/chunk-0000000012.jsonl.gz"),
            Some(12)
        );
        for other in [
            "logs/run.7:a/chunk-.jsonl.gz",
            "logs/run.7:a/chunk-12x.jsonl.gz",
            "logs/run.7:a/notes.txt",
            "logs/run.7:a/chunk-0000000003-0badcafe.jsonl",
        ] {
            assert_eq!(chunk_number_of_key(other), None, "{other}");
        }
    }

    #[test]
    fn records_serialize_in_the_chunk_line_format() {
        let r = LogRecord {
            id: "65f000000000000000000001".into(),
            episode_id: "ep".into(),
            timestamp: chrono::DateTime::from_timestamp_millis(0).unwrap(),
            level: LogLevel::Info,
            message: "m".into(),
            metadata: None,
            sequence_number: 3,
            created_at: chrono::DateTime::from_timestamp_millis(1_500).unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"65f000000000000000000001","episodeId":"ep","timestamp":"1970-01-01T00:00:00.000Z","level":"info","message":"m","sequenceNumber":3,"createdAt":"1970-01-01T00:00:01.500Z"}"#
        );
    }
}
