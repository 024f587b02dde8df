//! Reading chunks: the member index, one member inflated ([`DecodedMember`]), a whole chunk
//! ([`decode_chunk`]), and [`ChunkObject`], an object as fetched with its index.
//!
//!
//! A chunk object is a series of gzip members with a member index in their headers
//! ([`crate::chunk::member_index`]). A [`ChunkObject`] is the object as fetched plus that index;
//! a [`DecodedMember`] is one member inflated, with the offset of every line. A read inflates
//! only the members that hold the lines it wants (a page of 1,000 logs: one or two members of a
//! 50,000-log chunk), and parses only the lines it returns. An object without an index (written
//! before it existed, or by another tool) is one member spanning the whole chunk.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::ChunkError;
use super::format::{INDEX_SUBFIELD, LogRecord, MEMBER_HEADER, MemberSpan};

fn invalid(msg: String) -> ChunkError {
    ChunkError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
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
pub fn decode_chunk(gz: &[u8]) -> Result<Vec<LogRecord>, ChunkError> {
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

/// A chunk object as fetched, with where its members lie.
#[derive(Debug)]
pub struct ChunkObject {
    /// The compressed object.
    bytes: Vec<u8>,
    /// Its members in order; one spanning everything when the object has no index.
    members: Vec<MemberSpan>,
    /// Whether `members` came from the object's own index (else one stream of unknown members).
    indexed: bool,
}

impl ChunkObject {
    /// Reads the member index of `bytes`, a chunk whose record says it holds `lines` lines. An
    /// index that disagrees with the record is an error; no index means one stream.
    pub fn new(bytes: Vec<u8>, lines: usize) -> Result<Self, ChunkError> {
        match member_index(&bytes) {
            Some(members) => {
                let total: usize = members.iter().map(|m| m.lines).sum();
                if total != lines {
                    return Err(invalid(format!(
                        "the chunk's member index holds {total} lines, its record {lines}"
                    )));
                }
                Ok(Self {
                    bytes,
                    members,
                    indexed: true,
                })
            }
            None => Ok(Self {
                members: vec![MemberSpan {
                    offset: 0,
                    len: bytes.len(),
                    first_line: 0,
                    lines,
                }],
                bytes,
                indexed: false,
            }),
        }
    }

    /// The members, in line order.
    pub fn members(&self) -> &[MemberSpan] {
        &self.members
    }

    /// Whether the object carries its own member index.
    pub fn is_indexed(&self) -> bool {
        self.indexed
    }

    /// Numbers of the members holding any of lines `first..end`, in line order.
    pub fn members_for(&self, first: usize, end: usize) -> std::ops::Range<usize> {
        if first >= end {
            return 0..0;
        }
        let a = self
            .members
            .partition_point(|m| m.first_line + m.lines <= first);
        let b = self.members.partition_point(|m| m.first_line < end);
        a..b.max(a)
    }

    /// Inflates member `k` and indexes its lines; its line count must be the index's.
    pub fn decode_member(&self, k: usize) -> Result<DecodedMember, ChunkError> {
        let m = self.members[k];
        let piece = &self.bytes[m.offset..m.offset + m.len];
        let bytes = if self.indexed {
            inflate_member(piece)?
        } else {
            let mut out = Vec::with_capacity(piece.len() * 8);
            MultiGzDecoder::new(piece).read_to_end(&mut out)?;
            out
        };
        let d = DecodedMember::index(bytes, m.first_line)?;
        if d.line_count() != m.lines {
            return Err(invalid(format!(
                "member {k} of the chunk holds {} lines; it should hold {}",
                d.line_count(),
                m.lines
            )));
        }
        Ok(d)
    }

    /// Bytes this object holds in memory (what the cache counts).
    pub fn weight(&self) -> u64 {
        self.bytes.capacity() as u64
            + (self.members.capacity() * std::mem::size_of::<MemberSpan>()) as u64
    }
}

/// One member of a chunk, inflated and split into lines.
#[derive(Debug)]
pub struct DecodedMember {
    /// Index in the chunk of the member's first line.
    first_line: usize,
    /// The member's JSON Lines text.
    text: String,
    /// Start offset of each line in `text`, plus one final entry: the end of the text.
    offsets: Vec<u32>,
}

impl DecodedMember {
    /// Indexes the lines of inflated text whose first line is line `first_line` of its chunk.
    pub fn index(bytes: Vec<u8>, first_line: usize) -> Result<Self, ChunkError> {
        let text = String::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
        if u32::try_from(text.len()).is_err() {
            return Err(invalid("chunk member larger than 4 GiB".into()));
        }
        let mut offsets = Vec::with_capacity(text.len() / 128 + 2);
        offsets.push(0u32);
        offsets.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i as u32 + 1));
        if offsets.last().copied() != Some(text.len() as u32) {
            // Text without a final newline: its last line still ends at the end of the text.
            offsets.push(text.len() as u32);
        }
        Ok(Self {
            first_line,
            text,
            offsets,
        })
    }

    /// Index in the chunk of the first line.
    pub fn first_line(&self) -> usize {
        self.first_line
    }

    /// Number of lines (logs) in this member.
    pub fn line_count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The chunk's lines this member holds.
    pub fn lines(&self) -> std::ops::Range<usize> {
        self.first_line..self.first_line + self.line_count()
    }

    /// The raw text of chunk line `i` (without its newline); `i` must be in [`Self::lines`].
    pub fn raw_line(&self, i: usize) -> &str {
        let j = i - self.first_line;
        let (a, b) = (self.offsets[j] as usize, self.offsets[j + 1] as usize);
        self.text[a..b].trim_end_matches('\n')
    }

    /// Parses chunk line `i`.
    pub fn line(&self, i: usize) -> Result<LogRecord, ChunkError> {
        serde_json::from_str(self.raw_line(i)).map_err(|source| ChunkError::Line {
            line: i + 1,
            source,
        })
    }

    /// Bytes this member holds in memory (what the cache counts).
    pub fn weight(&self) -> u64 {
        self.text.capacity() as u64 + self.offsets.capacity() as u64 * 4
    }
}
