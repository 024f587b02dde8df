//! A byte-bounded LRU cache of chunk objects and their inflated members, for the read path
//! ([`crate::query`]).
//!
//! A chunk object is a series of gzip members with a member index in their headers
//! ([`crate::chunk::member_index`]). A [`ChunkObject`] is the object as fetched plus that index;
//! a [`DecodedMember`] is one member inflated, with the offset of every line. A read inflates
//! only the members that hold the lines it wants (a page of 1,000 logs: one or two members of a
//! 50,000-log chunk), and parses only the lines it returns. An object without an index (written
//! before it existed, or by another tool) is one member spanning the whole chunk.
//!
//! The cache holds only committed chunks, which never change, so an entry never goes stale:
//! objects are keyed by the chunk's S3 key and compressed size, members by that and their number.
//! The bound is on the bytes held (compressed objects, inflated text and line offsets); an
//! entry larger than the whole cache is served but not kept. Eviction is least-recently-used.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::chunk::{ChunkObject, DecodedMember};

/// What the cache has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Entries (objects and members) held now.
    pub entries: usize,
    /// Chunk objects fetched (each miss that loaded, not those that waited for another's load).
    pub object_loads: u64,
    /// Members inflated.
    pub member_loads: u64,
}

/// What the cache holds: chunk objects and inflated members.
pub(crate) trait Cached: Sized {
    fn into_entry(v: Arc<Self>) -> Entry;
    fn from_entry(e: Entry) -> Option<Arc<Self>>;
    /// Counts one load of this kind.
    fn count_load(stats: &mut CacheStats);
}

impl Cached for ChunkObject {
    fn into_entry(v: Arc<Self>) -> Entry {
        Entry::Object(v)
    }
    fn from_entry(e: Entry) -> Option<Arc<Self>> {
        match e {
            Entry::Object(o) => Some(o),
            Entry::Member(_) => None,
        }
    }
    fn count_load(stats: &mut CacheStats) {
        stats.object_loads += 1;
    }
}

impl Cached for DecodedMember {
    fn into_entry(v: Arc<Self>) -> Entry {
        Entry::Member(v)
    }
    fn from_entry(e: Entry) -> Option<Arc<Self>> {
        match e {
            Entry::Member(m) => Some(m),
            Entry::Object(_) => None,
        }
    }
    fn count_load(stats: &mut CacheStats) {
        stats.member_loads += 1;
    }
}

/// One cached thing.
#[derive(Clone)]
pub(crate) enum Entry {
    Object(Arc<ChunkObject>),
    Member(Arc<DecodedMember>),
}

impl Entry {
    fn weight(&self) -> u64 {
        match self {
            Entry::Object(o) => o.weight(),
            Entry::Member(m) => m.weight(),
        }
    }
}

struct Inner {
    /// Entry and the tick it was last used at.
    map: HashMap<String, (Entry, u64)>,
    bytes: u64,
    tick: u64,
    stats: CacheStats,
}

/// A load in progress: concurrent misses on one key wait for it instead of loading again.
type Loading = Arc<tokio::sync::OnceCell<Entry>>;

/// The byte-bounded LRU cache. Cheap to share behind an `Arc`.
pub struct ChunkCache {
    capacity: u64,
    inner: Mutex<Inner>,
    /// Loads in progress by key (one GetObject per chunk however many readers miss at once).
    loading: Mutex<HashMap<String, Loading>>,
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
            loading: Mutex::new(HashMap::new()),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The cache key of a chunk object.
    pub fn key(src: &str, size_bytes: i64) -> String {
        format!("{src}#{size_bytes}")
    }

    /// The cache key of member `k` of the object under `object_key`.
    pub fn member_key(object_key: &str, k: usize) -> String {
        format!("{object_key}#{k}")
    }

    fn get(&self, key: &str) -> Option<Entry> {
        let mut g = self.inner.lock().expect("not poisoned");
        g.tick += 1;
        let tick = g.tick;
        match g.map.get_mut(key) {
            Some((e, used)) => {
                *used = tick;
                let e = e.clone();
                g.stats.hits += 1;
                Some(e)
            }
            None => {
                g.stats.misses += 1;
                None
            }
        }
    }

    /// The object under `key`, marking it recently used.
    pub fn object(&self, key: &str) -> Option<Arc<ChunkObject>> {
        self.get(key).and_then(ChunkObject::from_entry)
    }

    /// The member under `key`, marking it recently used.
    pub fn member(&self, key: &str) -> Option<Arc<DecodedMember>> {
        self.get(key).and_then(DecodedMember::from_entry)
    }

    /// The object or member under `key`, or `load`s it: concurrent callers missing the same
    /// key share one load. A failed load is retried by the next caller.
    pub(crate) async fn get_or_load<T: Cached, E, Fut>(
        &self,
        key: &str,
        load: impl FnOnce() -> Fut,
    ) -> Result<Arc<T>, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(v) = self.get(key).and_then(T::from_entry) {
            return Ok(v);
        }
        let e = self
            .load_once(key, || async {
                let v = load().await?;
                T::count_load(&mut self.inner.lock().expect("not poisoned").stats);
                Ok(T::into_entry(Arc::new(v)))
            })
            .await?;
        Ok(T::from_entry(e).expect("a key holds one kind of value"))
    }

    /// Runs `load` for `key` unless a load of it is in progress, whose result it then shares;
    /// keeps the result in the cache.
    async fn load_once<E, Fut>(&self, key: &str, load: impl FnOnce() -> Fut) -> Result<Entry, E>
    where
        Fut: Future<Output = Result<Entry, E>>,
    {
        let cell: Loading = self
            .loading
            .lock()
            .expect("not poisoned")
            .entry(key.to_owned())
            .or_default()
            .clone();
        let out = cell
            .get_or_try_init(|| async {
                let e = load().await?;
                self.insert(key.to_owned(), e.clone());
                Ok(e)
            })
            .await
            .cloned();
        let mut loading = self.loading.lock().expect("not poisoned");
        if loading.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(key);
        }
        out
    }

    pub fn insert_object(&self, key: String, object: Arc<ChunkObject>) {
        self.insert(key, Entry::Object(object));
    }

    pub fn insert_member(&self, key: String, member: Arc<DecodedMember>) {
        self.insert(key, Entry::Member(member));
    }

    /// Keeps `entry` under `key`, evicting the least recently used entries to stay in bounds.
    fn insert(&self, key: String, entry: Entry) {
        let w = entry.weight();
        if w > self.capacity {
            return;
        }
        let mut g = self.inner.lock().expect("not poisoned");
        g.tick += 1;
        let tick = g.tick;
        if let Some((old, _)) = g.map.insert(key, (entry, tick)) {
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
            if let Some((e, _)) = g.map.remove(&victim) {
                g.bytes -= e.weight();
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
    use crate::chunk::{ChunkWriter, MEMBER_BYTES};
    use crate::domain::{EpisodeId, LogLevel};
    use crate::model::LogEntry;
    use bson::DateTime;
    use bson::oid::ObjectId;
    use flate2::read::MultiGzDecoder;
    use std::io::{Read, Write};

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
                message_logs: None,
                message_digest: None,
                ingest_epoch: None,
            })
            .unwrap();
        }
        w.finish().unwrap().bytes
    }

    fn all_lines(o: &ChunkObject) -> Vec<crate::chunk::LogRecord> {
        let mut out = Vec::new();
        for k in 0..o.members().len() {
            let m = o.decode_member(k).unwrap();
            for i in m.lines() {
                out.push(m.line(i).unwrap());
            }
        }
        out
    }

    #[test]
    fn members_read_back_every_line_of_decode_chunk() {
        // Large enough for several members.
        let n = 3 * MEMBER_BYTES as i64 / 150;
        let gz = chunk(n, 100);
        let o = ChunkObject::new(gz.clone(), n as usize).unwrap();
        assert!(o.is_indexed() && o.members().len() >= 3);
        assert_eq!(all_lines(&o), crate::chunk::decode_chunk(&gz).unwrap());
        // members_for picks exactly the members holding a range.
        let ms = o.members();
        let mid = ms[1].first_line;
        assert_eq!(o.members_for(mid, mid + 1), 1..2);
        assert_eq!(o.members_for(mid - 1, mid + 1), 0..2);
        assert_eq!(o.members_for(0, n as usize), 0..ms.len());
        assert_eq!(o.members_for(5, 5), 0..0);
        // A record that disagrees with the index is refused.
        assert!(ChunkObject::new(gz, n as usize + 1).is_err());
    }

    #[test]
    fn an_object_without_an_index_is_one_member() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(3));
        let gz = chunk(10, 0);
        let text = {
            let mut t = Vec::new();
            MultiGzDecoder::new(&gz[..]).read_to_end(&mut t).unwrap();
            t
        };
        e.write_all(&text).unwrap();
        let plain = e.finish().unwrap();
        let o = ChunkObject::new(plain.clone(), 10).unwrap();
        assert!(!o.is_indexed());
        assert_eq!(o.members().len(), 1);
        assert_eq!(all_lines(&o), crate::chunk::decode_chunk(&gz).unwrap());
        // Its line count is checked against the record when it is inflated.
        let wrong = ChunkObject::new(plain, 11).unwrap();
        assert!(wrong.decode_member(0).is_err());
    }

    #[test]
    fn cache_stays_within_its_byte_bound_and_evicts_lru() {
        let o = ChunkObject::new(chunk(100, 0), 100).unwrap();
        let a = Arc::new(o.decode_member(0).unwrap());
        let w = a.weight();
        let cache = ChunkCache::new(w * 2 + w / 2);
        cache.insert_member("a".into(), a.clone());
        cache.insert_member("b".into(), a.clone());
        assert!(cache.member("a").is_some()); // a is now more recent than b
        cache.insert_member("c".into(), a.clone());
        let s = cache.stats();
        assert!(s.bytes <= cache.capacity(), "{s:?}");
        assert_eq!((s.entries, s.evictions), (2, 1));
        assert!(
            cache.member("b").is_none(),
            "least recently used is evicted"
        );
        assert!(cache.member("a").is_some() && cache.member("c").is_some());
        assert!(cache.object("a").is_none(), "a member is not an object");
        let tiny = ChunkCache::new(w - 1);
        tiny.insert_member("a".into(), a);
        assert_eq!(
            tiny.stats().entries,
            0,
            "an entry over the bound is not kept"
        );
        // Objects count their compressed bytes.
        let o = Arc::new(o);
        let cache = ChunkCache::new(o.weight());
        cache.insert_object("o".into(), o.clone());
        assert_eq!(cache.stats().bytes, o.weight());
        assert!(cache.object("o").is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_load_and_a_failed_load_is_retried() {
        let gz = chunk(50, 0);
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let failed: Result<Arc<ChunkObject>, &str> =
            cache.get_or_load("k", || async { Err("S3 said no") }).await;
        assert_eq!(failed.unwrap_err(), "S3 said no");
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, gz, started) = (cache.clone(), gz.clone(), started.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("k", || async move {
                            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // Readers arrive while it runs (one arriving later hits the
                            // cache): either way, one load.
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            ChunkObject::new(gz, 50).map_err(|_| "bad chunk")
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().members().len(), 1);
        }
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        let st = cache.stats();
        assert_eq!((st.object_loads, st.entries), (1, 1), "{st:?}");
    }
}
