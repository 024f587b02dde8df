//! [`ChunkWriter`]: LogEntries in, a gzip-compressed chunk of indexed members out.

use std::io::Write;

use bson::DateTime;
use flate2::Compression;

use super::ChunkError;
use super::format::{INDEX_SUBFIELD, LineOut, MEMBER_HEADER, rfc3339_ms};
use crate::model::LogEntry;

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

/// Compresses `piece` (whole lines `first..first + lines` of the chunk) as one gzip member whose
/// extra field holds the member's own length in bytes, its first line and its line count
/// (little-endian u32 each), so a reader can find any line's member without inflating.
pub(super) fn gzip_member(
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
