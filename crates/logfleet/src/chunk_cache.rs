//! A byte-bounded LRU cache of decompressed chunks, for the read path ([`crate::query`]).
//!
//! A [`DecodedChunk`] is a chunk object after gunzip: its JSON Lines text plus the offset of every
//! line. Lines are parsed on demand (a page of 1,000 logs parses 1,000 lines, not the chunk's
//! 50,000), with the same per-line decoding as [`crate::chunk::decode_chunk`]. The cache holds
//! only committed chunks, which never change, so an entry never goes stale; it is keyed by the
//! chunk's S3 key and compressed size.
//!
//! The bound is on the bytes of text and offsets held; a chunk larger than the whole cache is
//! served but not kept. Eviction is least-recently-used.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use flate2::read::MultiGzDecoder;

use crate::chunk::{ChunkError, ChunkLine};

/// One chunk, decompressed and split into lines.
#[derive(Debug)]
pub struct DecodedChunk {
    /// The uncompressed JSON Lines text.
    text: String,
    /// Start offset of each line in `text`, plus one final entry: the end of the text.
    offsets: Vec<u32>,
}

impl DecodedChunk {
    /// Decompresses a chunk object and indexes its lines.
    pub fn decode(gz: &[u8]) -> Result<Self, ChunkError> {
        // The gzip trailer holds the uncompressed size (mod 2^32): allocate once.
        let hint = gz
            .len()
            .checked_sub(4)
            .map(|i| u32::from_le_bytes([gz[i], gz[i + 1], gz[i + 2], gz[i + 3]]) as usize)
            .unwrap_or(0);
        let mut bytes = Vec::with_capacity(hint.max(gz.len() * 4) + 1);
        MultiGzDecoder::new(gz).read_to_end(&mut bytes)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ChunkError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if u32::try_from(text.len()).is_err() {
            return Err(ChunkError::Io(std::io::Error::other(
                "chunk larger than 4 GiB uncompressed",
            )));
        }
        let mut offsets = Vec::with_capacity(text.len() / 128 + 2);
        offsets.push(0u32);
        offsets.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i as u32 + 1));
        if offsets.last().copied() != Some(text.len() as u32) {
            // Text without a final newline: its last line still ends at the end of the text.
            offsets.push(text.len() as u32);
        }
        Ok(Self { text, offsets })
    }

    /// Number of lines (logs).
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw text of line `i` (without its newline).
    pub fn raw_line(&self, i: usize) -> &str {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        self.text[a..b].trim_end_matches('\n')
    }

    /// Parses line `i`.
    pub fn line(&self, i: usize) -> Result<ChunkLine, ChunkError> {
        serde_json::from_str(self.raw_line(i)).map_err(|source| ChunkError::Line {
            line: i + 1,
            source,
        })
    }

    /// Bytes this chunk holds in memory (what the cache counts).
    pub fn weight(&self) -> u64 {
        self.text.capacity() as u64 + self.offsets.capacity() as u64 * 4
    }
}

/// What the cache has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Chunks held now.
    pub entries: usize,
}

struct Inner {
    map: HashMap<String, (Arc<DecodedChunk>, u64)>,
    bytes: u64,
    tick: u64,
    stats: CacheStats,
}

/// The byte-bounded LRU cache. Cheap to share behind an `Arc`.
pub struct ChunkCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

impl ChunkCache {
    /// A cache holding at most `capacity` bytes (0 keeps nothing).
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
                stats: CacheStats::default(),
            }),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The cache key of a chunk object.
    pub fn key(src: &str, size_bytes: i64) -> String {
        format!("{src}#{size_bytes}")
    }

    /// The chunk under `key`, marking it recently used.
    pub fn get(&self, key: &str) -> Option<Arc<DecodedChunk>> {
        let mut g = self.inner.lock().expect("not poisoned");
        g.tick += 1;
        let tick = g.tick;
        match g.map.get_mut(key) {
            Some((c, used)) => {
                *used = tick;
                let c = c.clone();
                g.stats.hits += 1;
                Some(c)
            }
            None => {
                g.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `chunk` under `key`, evicting the least recently used chunks to stay in bounds.
    pub fn insert(&self, key: String, chunk: Arc<DecodedChunk>) {
        let w = chunk.weight();
        if w > self.capacity {
            return;
        }
        let mut g = self.inner.lock().expect("not poisoned");
        g.tick += 1;
        let tick = g.tick;
        if let Some((old, _)) = g.map.insert(key, (chunk, tick)) {
            g.bytes -= old.weight();
        }
        g.bytes += w;
        while g.bytes > self.capacity {
            let Some(victim) = g
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((c, _)) = g.map.remove(&victim) {
                g.bytes -= c.weight();
                g.stats.evictions += 1;
            }
        }
    }

    /// Drops every entry (the bench uses it to measure cold reads).
    pub fn clear(&self) {
        let mut g = self.inner.lock().expect("not poisoned");
        g.map.clear();
        g.bytes = 0;
    }

    pub fn stats(&self) -> CacheStats {
        let g = self.inner.lock().expect("not poisoned");
        CacheStats {
            bytes: g.bytes,
            entries: g.map.len(),
            ..g.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkWriter;
    use crate::domain::{EpisodeId, LogLevel};
    use crate::model::LogEntry;
    use bson::DateTime;
    use bson::oid::ObjectId;

    fn chunk(n: i64, start: i64) -> Vec<u8> {
        let mut w = ChunkWriter::new(1);
        for s in start..start + n {
            w.push(&LogEntry {
                id: ObjectId::new(),
                episode_id: EpisodeId::parse("ep").unwrap(),
                timestamp: DateTime::from_millis(s),
                level: LogLevel::Info,
                message: format!("m{s}"),
                metadata: None,
                sequence_number: s,
                created_at: DateTime::from_millis(0),
            })
            .unwrap();
        }
        w.finish().unwrap().bytes
    }

    #[test]
    fn decoded_lines_match_decode_chunk() {
        let gz = chunk(50, 100);
        let d = DecodedChunk::decode(&gz).unwrap();
        let all = crate::chunk::decode_chunk(&gz).unwrap();
        assert_eq!(d.len(), 50);
        for (i, l) in all.iter().enumerate() {
            assert_eq!(&d.line(i).unwrap(), l);
        }
    }

    #[test]
    fn cache_stays_within_its_byte_bound_and_evicts_lru() {
        let a = Arc::new(DecodedChunk::decode(&chunk(100, 0)).unwrap());
        let w = a.weight();
        let cache = ChunkCache::new(w * 2 + w / 2);
        cache.insert("a".into(), a.clone());
        cache.insert("b".into(), a.clone());
        assert!(cache.get("a").is_some()); // a is now more recent than b
        cache.insert("c".into(), a.clone());
        let s = cache.stats();
        assert!(s.bytes <= cache.capacity(), "{s:?}");
        assert_eq!((s.entries, s.evictions), (2, 1));
        assert!(cache.get("b").is_none(), "least recently used is evicted");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        let tiny = ChunkCache::new(w - 1);
        tiny.insert("a".into(), a);
        assert_eq!(
            tiny.stats().entries,
            0,
            "a chunk over the bound is not kept"
        );
    }
}
