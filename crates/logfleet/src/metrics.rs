//! Prometheus metrics of the workers.
//!
//! Each worker owns one registry holding its metric families; the health server renders it on
//! `/metrics`. Labels stay bounded: dead-letter reasons are labelled by their kind
//! (`RejectReason::kind`), archive runs by their outcome; the one label that carries an
//! episodeId, `stuck_episode`, names at most `archive::STUCK_LABELS` stuck episodes.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// Seconds, from 1 ms to about 30 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets")
}

/// Metrics of one ingest-worker.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    pub registry: Registry,
    /// Deliveries received from the partition queues.
    pub messages_consumed: IntCounter,
    /// Logs in the valid messages received.
    pub logs_consumed: IntCounter,
    /// Messages acked after their writes were durable.
    pub messages_acked: IntCounter,
    /// Deliveries the broker flagged as redelivered.
    pub messages_redelivered: IntCounter,
    /// Messages sent to the dead-letter queue, by reason kind.
    pub messages_dead_lettered: IntCounterVec,
    /// Logs written for the first time.
    pub logs_inserted: IntCounter,
    /// Logs refused by the unique index as written by an earlier try.
    pub logs_duplicate: IntCounter,
    /// Duration of one insertMany.
    pub insert_seconds: Histogram,
    /// Threshold events published to the archive exchange.
    pub threshold_events: IntCounter,
    /// Deliveries held unacked by this worker right now (prefetch in use).
    pub prefetch_in_use: IntGauge,
    /// Partition queues this worker consumes (the others it stands by for).
    pub partitions_owned: IntGauge,
    /// Logs added to the statistics (counted once, by whichever worker counts them).
    pub logs_counted: IntCounter,
    /// What those logs added to the episodes' `currentMongoBytes`: the hot tier's growth, which
    /// the archive-workers' `hot_bytes_archived_total` and retention's mongo bytes take back.
    pub hot_bytes_added: IntCounter,
    /// Batch writes retried after an outage or a conflict.
    pub batch_retries: IntCounter,
    /// Uncounted entries a dead or paused owner left where this worker numbers, removed.
    pub uncounted_reclaimed: IntCounter,
    /// Batches given up because the partition moved to a newer owner (fenced) or the delivery
    /// channel closed: the messages go back to the queue for the owner.
    pub batches_abandoned: IntCounterVec,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        let r = Registry::new_custom(Some("logfleet_ingest".into()), None).expect("valid prefix");
        Self {
            messages_consumed: counter(
                &r,
                "messages_consumed_total",
                "Deliveries received from the partition queues",
            ),
            logs_consumed: counter(
                &r,
                "logs_consumed_total",
                "Logs in the valid messages received",
            ),
            messages_acked: counter(
                &r,
                "messages_acked_total",
                "Messages acked after their writes were durable",
            ),
            messages_redelivered: counter(
                &r,
                "messages_redelivered_total",
                "Deliveries flagged as redelivered",
            ),
            messages_dead_lettered: counter_vec(
                &r,
                "messages_dead_lettered_total",
                "Messages dead-lettered, by reason kind",
                "reason",
            ),
            logs_inserted: counter(&r, "logs_inserted_total", "Logs written for the first time"),
            logs_duplicate: counter(
                &r,
                "logs_duplicate_total",
                "Logs already written by an earlier try",
            ),
            insert_seconds: histogram(
                &r,
                "insert_seconds",
                "Duration of one insertMany",
                latency_buckets(),
            ),
            threshold_events: counter(&r, "threshold_events_total", "Threshold events published"),
            prefetch_in_use: gauge(&r, "prefetch_in_use", "Deliveries held unacked right now"),
            partitions_owned: gauge(
                &r,
                "partitions_owned",
                "Partition queues this worker consumes",
            ),
            logs_counted: counter(
                &r,
                "logs_counted_total",
                "Logs added to the episodes' statistics",
            ),
            hot_bytes_added: counter(
                &r,
                "hot_bytes_added_total",
                "Size measure (currentMongoBytes) of the logs counted into the hot tier",
            ),
            batch_retries: counter(
                &r,
                "batch_retries_total",
                "Batch writes retried after an outage or a conflict",
            ),
            uncounted_reclaimed: counter(
                &r,
                "uncounted_entries_reclaimed_total",
                "Uncounted entries another owner left where this worker numbers, removed before numbering again",
            ),
            batches_abandoned: counter_vec(
                &r,
                "batches_abandoned_total",
                "Batches left unwritten for the partition's next owner, by why (fenced, channel_gone, shutdown)",
                "why",
            ),
            registry: r,
        }
    }
}

/// Metrics of one archive-worker.
#[derive(Clone, Debug)]
pub struct ArchiveMetrics {
    pub registry: Registry,
    /// Archive runs by outcome: done, busy, gap, unknown, error, stopped.
    pub runs: IntCounterVec,
    /// Chunks committed.
    pub chunks_written: IntCounter,
    /// Logs moved to S3.
    pub logs_archived: IntCounter,
    /// What those logs took off the episodes' `currentMongoBytes` (the hot tier's size measure).
    pub hot_bytes_archived: IntCounter,
    /// Time to read a chunk's logs from MongoDB and encode them.
    pub chunk_build_seconds: Histogram,
    /// Time to upload and verify a chunk.
    pub chunk_upload_seconds: Histogram,
    /// Compressed size of the chunks written.
    pub chunk_bytes: Histogram,
    /// Expired archive locks taken over from another worker.
    pub lock_takeovers: IntCounter,
    /// Archive requests (threshold events, flushes) received.
    pub requests_consumed: IntCounter,
    /// Chunk objects of uncommitted attempts removed.
    pub orphans_removed: IntCounter,
    /// Episodes whose archive runs failed three times or more in a row.
    pub stuck_episodes: IntGauge,
    /// 1 for each stuck episode, by name (at most 100 at once).
    pub stuck_episode: IntGaugeVec,
    /// The retention pass's figures (`logfleet_archive_retention_*`).
    pub retention: RetentionMetrics,
}

impl Default for ArchiveMetrics {
    fn default() -> Self {
        let r = Registry::new_custom(Some("logfleet_archive".into()), None).expect("valid prefix");
        Self {
            runs: counter_vec(&r, "runs_total", "Archive runs by outcome", "outcome"),
            chunks_written: counter(&r, "chunks_written_total", "Chunks committed"),
            logs_archived: counter(&r, "logs_archived_total", "Logs moved to S3"),
            hot_bytes_archived: counter(
                &r,
                "hot_bytes_archived_total",
                "Size measure (currentMongoBytes) of the logs moved from the hot tier to S3",
            ),
            chunk_build_seconds: histogram(
                &r,
                "chunk_build_seconds",
                "Reading and encoding one chunk",
                latency_buckets(),
            ),
            chunk_upload_seconds: histogram(
                &r,
                "chunk_upload_seconds",
                "Uploading and verifying one chunk",
                latency_buckets(),
            ),
            chunk_bytes: histogram(
                &r,
                "chunk_bytes",
                "Compressed size of a chunk",
                prometheus::exponential_buckets(1024.0, 4.0, 10).expect("valid buckets"),
            ),
            lock_takeovers: counter(
                &r,
                "lock_takeovers_total",
                "Expired archive locks taken over",
            ),
            requests_consumed: counter(&r, "requests_consumed_total", "Archive requests received"),
            orphans_removed: counter(
                &r,
                "orphans_removed_total",
                "Chunk objects of uncommitted attempts removed",
            ),
            stuck_episodes: gauge(
                &r,
                "stuck_episodes",
                "Episodes whose archive runs failed three times or more in a row",
            ),
            stuck_episode: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "stuck_episode",
                        "1 for each episode whose archive runs keep failing (at most 100)",
                    ),
                    &["episode"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            retention: RetentionMetrics::new(&r),
            registry: r,
        }
    }
}

/// Metrics of the retention pass, in the archive-worker's registry.
#[derive(Clone, Debug)]
pub struct RetentionMetrics {
    /// Whole episodes expired.
    pub episodes_expired: IntCounter,
    /// Chunks expired (objects and records removed).
    pub chunks_expired: IntCounter,
    /// Logs expired, archived or hot.
    pub logs_expired: IntCounter,
    /// Bytes expired, by tier: `s3` (compressed chunk bytes), `mongo` (size measure of hot logs).
    pub bytes_expired: IntCounterVec,
    /// When the last pass ended, in seconds since the epoch.
    pub last_pass_timestamp: prometheus::Gauge,
    /// How long the last pass took, in seconds.
    pub last_pass_seconds: prometheus::Gauge,
    /// Expiries of one episode by outcome: done, busy (lease held elsewhere), nothing, error.
    pub runs: IntCounterVec,
}

impl RetentionMetrics {
    fn new(r: &Registry) -> Self {
        let gauge_f = |name: &str, help: &str| {
            let g = prometheus::Gauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        Self {
            episodes_expired: counter(
                r,
                "retention_episodes_expired_total",
                "Whole episodes expired by retention",
            ),
            chunks_expired: counter(
                r,
                "retention_chunks_expired_total",
                "Chunks expired by retention",
            ),
            logs_expired: counter(
                r,
                "retention_logs_expired_total",
                "Logs expired by retention, archived or hot",
            ),
            bytes_expired: counter_vec(
                r,
                "retention_bytes_expired_total",
                "Bytes expired by retention, by tier (s3, mongo)",
                "tier",
            ),
            last_pass_timestamp: gauge_f(
                "retention_last_pass_timestamp_seconds",
                "When the last retention pass ended (seconds since the epoch)",
            ),
            last_pass_seconds: gauge_f(
                "retention_last_pass_seconds",
                "Duration of the last retention pass",
            ),
            runs: counter_vec(
                r,
                "retention_runs_total",
                "Expiries of one episode by outcome (done, busy, nothing, error)",
                "outcome",
            ),
        }
    }
}

/// Metrics of one query-api.
#[derive(Clone, Debug)]
pub struct QueryMetrics {
    pub registry: Registry,
    /// Requests by route template (never the episodeId itself) and status code.
    pub requests: IntCounterVec,
    /// Time to the response head, by route template.
    pub request_seconds: prometheus::HistogramVec,
    /// Chunk cache figures, copied from [`crate::query::CacheStats`] at each scrape.
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    /// Chunk objects fetched from S3.
    pub chunk_objects_fetched: IntCounter,
    /// Chunk gzip members inflated.
    pub chunk_members_inflated: IntCounter,
    /// Serializes scrapes, so counters advance by exact differences.
    scrape: std::sync::Arc<std::sync::Mutex<()>>,
}

impl QueryMetrics {
    /// Brings the cache figures up to `s` (counters only ever move forward).
    pub fn observe_cache(&self, s: &crate::query::CacheStats) {
        let _one = self.scrape.lock().expect("not poisoned");
        self.cache_bytes.set(s.bytes as i64);
        self.cache_entries.set(s.entries as i64);
        for (c, v) in [
            (&self.cache_hits, s.hits),
            (&self.cache_misses, s.misses),
            (&self.cache_evictions, s.evictions),
            (&self.chunk_objects_fetched, s.object_loads),
            (&self.chunk_members_inflated, s.member_loads),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
    }
}

impl Default for QueryMetrics {
    fn default() -> Self {
        let r = Registry::new_custom(Some("logfleet_query".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        r.register(Box::new(requests.clone()))
            .expect("unique metric");
        let request_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new("request_seconds", "Time to the response head, by route")
                .buckets(latency_buckets()),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        Self {
            cache_bytes: gauge(&r, "cache_bytes", "Bytes held by the chunk cache"),
            cache_entries: gauge(
                &r,
                "cache_entries",
                "Chunk objects and inflated members held by the cache",
            ),
            cache_hits: counter(&r, "cache_hits_total", "Chunk cache lookups that hit"),
            cache_misses: counter(&r, "cache_misses_total", "Chunk cache lookups that missed"),
            cache_evictions: counter(
                &r,
                "cache_evictions_total",
                "Entries evicted to stay within query.cache_bytes",
            ),
            chunk_objects_fetched: counter(
                &r,
                "chunk_objects_fetched_total",
                "Chunk objects fetched from S3",
            ),
            chunk_members_inflated: counter(
                &r,
                "chunk_members_inflated_total",
                "Chunk gzip members inflated",
            ),
            scrape: Default::default(),
            registry: r,
            requests,
            request_seconds,
        }
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding never fails");
    String::from_utf8(out).expect("the text format is UTF-8")
}
