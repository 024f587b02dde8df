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

/// Uncompressed JSONL per gzip member (a member ends at the first line boundary past it). A
/// reader inflates only the members that hold the lines it wants: a page of 1,000 logs touches
/// one or two members of a 50,000-log chunk, not the whole chunk. Deflate's window is 32 KiB, so
/// members this large compress as well as one stream.
pub const MEMBER_BYTES: usize = 1 << 20;

/// Encodes LogEntries, in sequence order, into gzip-compressed JSONL.
///
/// Lines are serialized into the current member's buffer; when it reaches about
/// [`MEMBER_BYTES`] (or what [`ChunkWriter::with_member_bytes`] sets) it is sealed at that line
/// boundary and handed to a small pool of compression threads (one per core, at most 4) while
/// serialization goes on, so compression overlaps serialization and at most a few members of
/// JSONL are held at once, whatever the chunk's size. `finish` compresses the last member and
/// concatenates them in order. Each member is a complete gzip member (RFC 1952 allows several in
/// a file, as `pigz` and BGZF write; `gunzip`, `zcat` and [`decode_chunk`] read them as one
/// stream) whose header carries a member index entry in its extra field (see [`member_index`]).
pub struct ChunkWriter {
    /// The uncompressed JSON Lines of the member being filled.
    current: Vec<u8>,
    /// Index in the chunk of the current member's first line.
    current_first: usize,
    /// Sealed members, compressed in order ([`Self::finish`] joins them).
    sealed: Vec<Sealed>,
    /// The compression threads, started when the first member is sealed.
    pool: Option<CompressPool>,
    gzip_level: u32,
    /// Uncompressed bytes per gzip member ([`MEMBER_BYTES`] unless set).
    member_bytes: usize,
    count: i64,
    start_sequence: i64,
    end_sequence: i64,
    start_time: DateTime,
    end_time: DateTime,
    logical_bytes: i64,
    uncompressed_bytes: u64,
}

/// A sealed member: compressed already, or on its way through the pool.
enum Sealed {
    Done(Vec<u8>),
    Pending(std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>),
}

/// One member to compress, with where to send the result.
struct Job {
    jsonl: Vec<u8>,
    first_line: u32,
    lines: u32,
    reply: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
}

/// Compression threads fed through a bounded queue: a full queue makes `push` wait, which
/// bounds the JSONL held to (threads + queue + 1) members.
struct CompressPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl CompressPool {
    fn start(threads: usize, level: Compression) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(threads);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..threads {
            let rx = rx.clone();
            // Threads end when the writer (the only sender) is finished or dropped.
            std::thread::spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let out = gzip_member(&job.jsonl, job.first_line, job.lines, level);
                    let _ = job.reply.send(out);
                }
            });
        }
        Self { jobs }
    }
}

/// Compression threads a writer uses: one per core, at most 4.
fn compress_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

impl ChunkWriter {
    pub fn new(gzip_level: u32) -> Self {
        Self {
            current: Vec::new(),
            current_first: 0,
            sealed: Vec::new(),
            pool: None,
            gzip_level,
            member_bytes: MEMBER_BYTES,
            count: 0,
            start_sequence: 0,
            end_sequence: -1,
            start_time: DateTime::MAX,
            end_time: DateTime::MIN,
            logical_bytes: 0,
            uncompressed_bytes: 0,
        }
    }

    /// Sets the uncompressed bytes per gzip member (at least 1).
    pub fn with_member_bytes(mut self, bytes: usize) -> Self {
        self.member_bytes = bytes.max(1);
        self
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
        if self.current.capacity() == 0 {
            // A member's buffer: its target plus room for the line that crosses it.
            self.current
                .reserve(self.member_bytes.min(MEMBER_BYTES * 4) + 4096);
        }
        let start = self.current.len();
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
        serde_json::to_writer(&mut self.current, &out).map_err(std::io::Error::other)?;
        self.current.push(b'\n');
        self.uncompressed_bytes += (self.current.len() - start) as u64;
        self.count += 1;
        self.end_sequence = e.sequence_number;
        self.start_time = self.start_time.min(e.timestamp);
        self.end_time = self.end_time.max(e.timestamp);
        self.logical_bytes += e.size();
        if self.current.len() >= self.member_bytes {
            self.seal()?;
        }
        Ok(())
    }

    /// Seals the current member and hands it to the compression threads.
    fn seal(&mut self) -> Result<(), ChunkError> {
        let lines = self.count as usize - self.current_first;
        let (first_line, lines) = (
            u32::try_from(self.current_first).map_err(std::io::Error::other)?,
            u32::try_from(lines).map_err(std::io::Error::other)?,
        );
        let jsonl = std::mem::take(&mut self.current);
        self.current_first = self.count as usize;
        let level = Compression::new(self.gzip_level);
        let pool = self
            .pool
            .get_or_insert_with(|| CompressPool::start(compress_threads(), level));
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        let job = Job {
            jsonl,
            first_line,
            lines,
            reply,
        };
        match pool.jobs.send(job) {
            Ok(()) => self.sealed.push(Sealed::Pending(rx)),
            // No thread left to take it (cannot happen unless one panicked): compress here.
            Err(std::sync::mpsc::SendError(job)) => self.sealed.push(Sealed::Done(gzip_member(
                &job.jsonl,
                job.first_line,
                job.lines,
                level,
            )?)),
        }
        Ok(())
    }

    pub fn len(&self) -> i64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(mut self) -> Result<EncodedChunk, ChunkError> {
        if self.count == 0 {
            return Err(ChunkError::Empty);
        }
        if !self.current.is_empty() {
            // The last member is compressed here, beside the threads' last ones.
            let lines = self.count as usize - self.current_first;
            let last = gzip_member(
                &self.current,
                u32::try_from(self.current_first).map_err(std::io::Error::other)?,
                u32::try_from(lines).map_err(std::io::Error::other)?,
                Compression::new(self.gzip_level),
            )?;
            self.sealed.push(Sealed::Done(last));
        }
        self.pool = None;
        let members = std::mem::take(&mut self.sealed)
            .into_iter()
            .map(|m| match m {
                Sealed::Done(b) => Ok(b),
                Sealed::Pending(rx) => rx.recv().unwrap_or_else(|_| {
                    Err(std::io::Error::other(
                        "a compression thread ended without its member",
                    ))
                }),
            })
            .collect::<std::io::Result<Vec<_>>>()?;
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

/// Extra-field subfield id of a member index entry ("LF", logfleet), as RFC 1952 section
/// 2.3.1.1 defines subfields; readers that do not know it skip it.
const INDEX_SUBFIELD: [u8; 2] = *b"LF";
/// Bytes of a member header: the fixed 10, XLEN, and one 16-byte subfield.
const MEMBER_HEADER: usize = 10 + 2 + 4 + 12;

/// Compresses `piece` (whole lines `first..first + lines` of the chunk) as one gzip member whose
/// extra field holds the member's own length in bytes, its first line and its line count
/// (little-endian u32 each), so a reader can find any line's member without inflating.
fn gzip_member(
    piece: &[u8],
    first: u32,
    lines: u32,
    level: Compression,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(MEMBER_HEADER + piece.len() / 6 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 255]); // FEXTRA, no mtime, OS unknown
    out.extend_from_slice(&16u16.to_le_bytes()); // XLEN
    out.extend_from_slice(&INDEX_SUBFIELD);
    out.extend_from_slice(&12u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // member length, written below
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&lines.to_le_bytes());
    let mut deflate = flate2::write::DeflateEncoder::new(out, level);
    deflate.write_all(piece)?;
    let mut out = deflate.finish()?;
    let mut crc = flate2::Crc::new();
    crc.update(piece);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(piece.len() as u32).to_le_bytes()); // ISIZE: length mod 2^32
    let len = u32::try_from(out.len()).map_err(std::io::Error::other)?;
    out[16..20].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Where one gzip member lies in a chunk object and which of the chunk's lines it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSpan {
    /// Byte offset of the member in the object.
    pub offset: usize,
    /// Length of the member in bytes.
    pub len: usize,
    /// Index (0-based) of its first line in the chunk.
    pub first_line: usize,
    /// Lines it holds.
    pub lines: usize,
}

/// The member index of a chunk object, read from its member headers (a hop from header to
/// header, nothing inflated). `None` when the object has no complete, consistent index (a chunk
/// written before the index existed, or by another tool): read it as one stream then. Whether
/// the index tells the truth is checked when a member is inflated ([`inflate_member`]).
pub fn member_index(gz: &[u8]) -> Option<Vec<MemberSpan>> {
    let mut spans = Vec::new();
    let (mut at, mut line) = (0usize, 0usize);
    while at < gz.len() {
        let h = gz.get(at..at + MEMBER_HEADER)?;
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]) as usize;
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
        if h[..4] != [0x1f, 0x8b, 8, 0x04] || u16_at(10) != 16 || h[12..14] != INDEX_SUBFIELD {
            return None;
        }
        if u16_at(14) != 12 {
            return None;
        }
        let (len, first, lines) = (u32_at(16), u32_at(20), u32_at(24));
        if first != line || len < MEMBER_HEADER + 8 || gz.len() - at < len {
            return None;
        }
        spans.push(MemberSpan {
            offset: at,
            len,
            first_line: first,
            lines,
        });
        at += len;
        line += lines;
    }
    (!spans.is_empty()).then_some(spans)
}

/// Inflates one member (`member` is exactly its bytes), checking its CRC and length.
pub fn inflate_member(member: &[u8]) -> Result<Vec<u8>, ChunkError> {
    // The trailer holds the uncompressed size (mod 2^32): allocate once.
    let hint = member
        .len()
        .checked_sub(4)
        .map(|i| {
            u32::from_le_bytes([member[i], member[i + 1], member[i + 2], member[i + 3]]) as usize
        })
        .unwrap_or(0);
    let mut out = Vec::with_capacity(hint.min(member.len().saturating_mul(64)) + 1);
    let mut d = flate2::bufread::GzDecoder::new(member);
    d.read_to_end(&mut out)?;
    // GzDecoder stops at the end of the first member: anything after it is not this member.
    if !d.into_inner().is_empty() {
        return Err(ChunkError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bytes after the end of a gzip member",
        )));
    }
    Ok(out)
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
    use flate2::write::GzEncoder;

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
            let first: ChunkLine =
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
