//! Layered configuration: `config/default.toml`, then an optional file named by
//! `LOGFLEET_CONFIG`, then environment variables such as `LOGFLEET__MONGO__URI`
//! (prefix `LOGFLEET`, sections separated by `__`).
//!
//! Secrets (passwords in the AMQP and MongoDB URIs, S3 keys) come from the environment only.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Built-in defaults: the same text as `config/default.toml`, compiled in so a binary runs
/// from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Everything a worker needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub s3: S3Settings,
    pub ingest: IngestSettings,
    pub archive: ArchiveSettings,
    pub limits: LimitsSettings,
    pub telemetry: TelemetrySettings,
    /// The read path: query-api and `logctl` reads (see [`crate::query`]).
    pub query: QuerySettings,
    /// Retention: when episodes and chunks expire (`docs/retention.md`).
    pub retention: RetentionSettings,
}

/// The retention policy (`[retention]`). Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Whether the archive-workers run a retention pass every `interval_secs`.
    pub enabled: bool,
    /// Seconds between two retention passes of an archive-worker.
    pub interval_secs: u64,
    /// Seconds after its `lastLogAt` a whole episode expires; 0: no global limit.
    pub episode_max_age_secs: u64,
    /// Seconds after its `endTime` an archived chunk expires (the hot tail kept); 0: no global
    /// limit.
    pub chunk_max_age_secs: u64,
    /// Most episodes one pass expires; the rest wait for the next pass.
    pub max_episodes_per_pass: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// Broker URL, `amqp://user:pass@host:port/vhost` (vhost `/` is `%2f`).
    pub url: String,
    /// Prefix of every exchange and queue name: `{prefix}.logs`, `{prefix}.logs.dlq`, ...
    pub prefix: String,
    /// Number of partition queues behind the modulus-hash exchange `{prefix}.logs`.
    pub partitions: u16,
    /// Type of the partition queues: `classic` (default) or `quorum`. Classic queues put the
    /// messages a dead consumer held back at their original positions, so publish order survives
    /// crashes; RabbitMQ 3.10 quorum queues can requeue some of them behind newer messages (seen
    /// in tests), trading strict order under crashes for replication and `x-delivery-limit`.
    pub partition_queue_type: String,
    /// `x-delivery-limit` of the quorum queues: a message redelivered this often is dead-lettered.
    pub delivery_limit: u32,
    /// Seconds between reconnection attempts at first; doubles up to `reconnect_max_secs`.
    pub reconnect_initial_secs: f64,
    /// Longest wait between reconnection attempts, in seconds.
    pub reconnect_max_secs: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    /// Connection string, e.g. `mongodb://127.0.0.1:27017/?directConnection=true`.
    pub uri: String,
    /// Database holding the three collections.
    pub database: String,
    /// Collection of LogEntry documents.
    pub log_entry_collection: String,
    /// Collection of LogChunk documents.
    pub log_chunk_collection: String,
    /// Collection of LogMetadata documents.
    pub log_metadata_collection: String,
    /// Write concern `w`: `"majority"` or a number of nodes such as `"1"`.
    pub write_concern: String,
    /// Whether writes wait for the on-disk journal.
    pub journal: bool,
    /// Whether the server applies a filtered update (`findOneAndReplace` on `version`)
    /// atomically: `auto` (yes, unless `buildInfo` names FerretDB, whose 1.x releases read and
    /// write such an update in two steps), `true` or `false`. Where it does not, every
    /// LogMetadata write also holds a per-episode write lock (see `docs/mongodb-servers.md`).
    pub atomic_updates: String,
    /// Collection of the per-episode write locks taken when `atomic_updates` is off.
    pub write_lock_collection: String,
    /// Collection of the dedup records of archived messages.
    pub message_ledger_collection: String,
    /// Collection of the ingest ownership epochs.
    pub ingest_epoch_collection: String,
    /// Seconds any one MongoDB call may take before it is abandoned (and retried as an outage).
    pub op_timeout_secs: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL of an S3-compatible server; empty for AWS S3 itself.
    pub endpoint: String,
    /// Region name (any value for most S3-compatible servers).
    pub region: String,
    /// Bucket holding the chunks.
    pub bucket: String,
    /// Key prefix: chunks live at
    /// `{key_prefix}/{episodeId}/chunk-{chunkNumber:010}-{attempt}.jsonl.gz` (`attempt`: 8 hex
    /// digits, new for every upload).
    pub key_prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO and most local servers.
    pub force_path_style: bool,
    /// Create the bucket at start-up when it is missing.
    pub create_bucket: bool,
    /// Seconds any one S3 call may take (an upload of a whole chunk included) before it is
    /// abandoned and retried.
    pub op_timeout_secs: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Unacknowledged messages the broker may hand each partition consumer at once.
    pub prefetch: u16,
    /// Most logs written in one insertMany (a bigger batch is written in several).
    pub max_batch_logs: usize,
    /// A batch of deliveries stops growing once their bodies reach this many bytes, which
    /// bounds the memory of decoding one batch (the prefetch buffer is bounded by `prefetch`).
    pub max_batch_bytes: usize,
    /// Milliseconds without a new delivery after which a batch that is not full is written.
    pub batch_linger_ms: u64,
    /// Most milliseconds a batch waits for deliveries after its first one, however steadily
    /// they come: what a backlog adds to a log's latency at most.
    pub batch_max_wait_ms: u64,
    /// Seconds a message id is remembered after its logs are archived: a retry or replay of the
    /// message within it is recognized and not ingested again (while its logs are hot, it is
    /// recognized anyway).
    pub dedup_horizon_secs: u64,
    /// `archiveThreshold` given to a new episode's LogMetadata.
    pub archive_threshold: i32,
    /// `chunkSize` given to a new episode's LogMetadata.
    pub chunk_size: i32,
    /// Seconds allowed for in-flight work after a shutdown signal.
    pub drain_deadline_secs: u64,
    /// Milliseconds between a standby worker's attempts to take over a partition owned by
    /// another worker (the failover delay after a crash).
    pub standby_poll_ms: u64,
    /// Each worker owns at most `ceil(partitions / live workers)` partitions and hands the rest
    /// over, so added workers share the load; `false`: first come, first served.
    pub fair_share: bool,
    /// Address of `/metrics`, `/healthz`, `/readyz`; empty disables them.
    pub http_listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// Seconds an archive lock lasts unless renewed; a crashed worker's lock is taken over after.
    pub lease_secs: u64,
    /// Seconds between sweeps of LogMetadata for episodes at or over their threshold.
    pub sweep_interval_secs: u64,
    /// Episodes archived at the same time by one worker.
    pub concurrency: usize,
    /// gzip level of the chunks, 0-9.
    pub gzip_level: u32,
    /// Uncompressed JSONL per gzip member of a chunk (4 KiB - 256 MiB): a reader inflates only
    /// the members holding the lines it wants.
    pub member_bytes: usize,
    /// Seconds a flush waits for in-flight logs (a gap in the sequence) before it is dead-lettered.
    pub flush_wait_secs: u64,
    /// Address of `/metrics`, `/healthz`, `/readyz`; empty disables them.
    pub http_listen: String,
}

/// Published limits of the producer contract (`[limits]`).
pub use logfleet_contract::LimitsSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `logfleet=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
}

/// The read path (query-api, `logctl logs|tail|export|...`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    /// Address the query-api listens on, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// Upper bound, in bytes, of the cache of decompressed chunks (0 disables it).
    pub cache_bytes: u64,
    /// Page size when a request names none.
    pub default_page_size: usize,
    /// Largest page size a request may ask for.
    pub max_page_size: usize,
    /// Bearer token required by the query-api; empty disables auth. Set it through the
    /// environment (`LOGFLEET__QUERY__BEARER_TOKEN`), never in a committed file.
    pub bearer_token: String,
    /// Seconds between two writes of one chunk's `LogChunk.lastAccessed`.
    pub touch_interval_secs: u64,
    /// Milliseconds between two polls of follow mode when nothing new arrived.
    pub follow_poll_ms: u64,
    /// Seconds an export still in flight at shutdown may run on before it is cut. Keep it under
    /// the pod's grace period less its preStop delay, so the export ends before SIGKILL.
    pub drain_secs: u64,
}

impl std::fmt::Debug for QuerySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySettings")
            .field("listen", &self.listen)
            .field("cache_bytes", &self.cache_bytes)
            .field("default_page_size", &self.default_page_size)
            .field("max_page_size", &self.max_page_size)
            .field(
                "bearer_token",
                &if self.bearer_token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("touch_interval_secs", &self.touch_interval_secs)
            .field("follow_poll_ms", &self.follow_poll_ms)
            .field("drain_secs", &self.drain_secs)
            .finish()
    }
}

impl MongoSettings {
    pub fn op_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.op_timeout_secs)
    }
}

impl S3Settings {
    pub fn op_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.op_timeout_secs)
    }
}

impl Settings {
    /// Loads the defaults, `LOGFLEET_CONFIG` (a TOML file) if set, then `LOGFLEET__*` variables.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("LOGFLEET_CONFIG").ok();
        Self::load_from(file.as_deref().map(Path::new))
    }

    pub fn load_from(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_layers(file, None)
    }

    /// The layers, with the environment taken from `env` instead of the process's when given
    /// (tests).
    fn load_layers(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        }
        // No `try_parsing`: an environment value stays the text it is, and serde turns it into
        // the setting's type. With it, `LOGFLEET__QUERY__BEARER_TOKEN=000123` became "123" and a
        // 25-digit token a float; a number-looking bucket, database or prefix was rewritten too.
        let settings: Settings = b
            .add_source(
                config::Environment::with_prefix("LOGFLEET")
                    .prefix_separator("__")
                    .separator("__")
                    .source(env),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.amqp.partitions == 0 {
            return bad("amqp.partitions must be at least 1");
        }
        if !matches!(
            self.amqp.partition_queue_type.as_str(),
            "classic" | "quorum"
        ) {
            return bad("amqp.partition_queue_type must be classic or quorum");
        }
        if self.amqp.prefix.is_empty() || self.amqp.prefix.contains(char::is_whitespace) {
            return bad("amqp.prefix must be non-empty without spaces");
        }
        if self.ingest.prefetch == 0
            || self.ingest.max_batch_logs == 0
            || self.ingest.max_batch_bytes == 0
        {
            return bad(
                "ingest.prefetch, ingest.max_batch_logs and ingest.max_batch_bytes must be at least 1",
            );
        }
        if self.ingest.archive_threshold < 1 || self.ingest.chunk_size < 1 {
            return bad("ingest.archive_threshold and ingest.chunk_size must be at least 1");
        }
        if self.mongo.op_timeout_secs <= 0.0 || self.s3.op_timeout_secs <= 0.0 {
            return bad("mongo.op_timeout_secs and s3.op_timeout_secs must be above 0");
        }
        if self.archive.gzip_level > 9 {
            return bad("archive.gzip_level must be 0-9");
        }
        if !(4 << 10..=256 << 20).contains(&self.archive.member_bytes) {
            return bad("archive.member_bytes must be 4096-268435456");
        }
        if self.archive.lease_secs == 0 || self.archive.concurrency == 0 {
            return bad("archive.lease_secs and archive.concurrency must be at least 1");
        }
        if !matches!(self.telemetry.format.as_str(), "human" | "json") {
            return bad("telemetry.format must be human or json");
        }
        if self.mongo.write_concern != "majority"
            && self.mongo.write_concern.parse::<u32>().is_err()
        {
            return bad("mongo.write_concern must be \"majority\" or a number");
        }
        if !matches!(
            self.mongo.atomic_updates.as_str(),
            "auto" | "true" | "false"
        ) {
            return bad("mongo.atomic_updates must be auto, true or false");
        }
        if self.query.max_page_size == 0
            || self.query.default_page_size == 0
            || self.query.default_page_size > self.query.max_page_size
        {
            return bad("query.default_page_size must be 1..=query.max_page_size");
        }
        if self.query.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("query.listen must be an address such as 127.0.0.1:8080");
        }
        if self.query.follow_poll_ms == 0 {
            return bad("query.follow_poll_ms must be at least 1");
        }
        if self.retention.interval_secs == 0 || self.retention.max_episodes_per_pass == 0 {
            return bad(
                "retention.interval_secs and retention.max_episodes_per_pass must be at least 1",
            );
        }
        Ok(())
    }
}

impl AmqpSettings {
    pub fn reconnect_initial(&self) -> Duration {
        Duration::from_secs_f64(self.reconnect_initial_secs.max(0.01))
    }
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_secs_f64(
            self.reconnect_max_secs
                .max(self.reconnect_initial_secs)
                .max(0.01),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_the_schema_defaults() {
        let s = Settings::load_from(None).unwrap();
        assert_eq!(
            s.ingest.archive_threshold,
            crate::model::DEFAULT_ARCHIVE_THRESHOLD
        );
        assert_eq!(s.ingest.chunk_size, crate::model::DEFAULT_CHUNK_SIZE);
        assert_eq!(s.amqp.prefix, "logfleet");
        assert_eq!(s.mongo.log_entry_collection, "LogEntry");
        assert_eq!(s.limits, LimitsSettings::default());
        assert!(!s.retention.enabled, "retention is off by default");
        assert_eq!(
            (
                s.retention.episode_max_age_secs,
                s.retention.chunk_max_age_secs
            ),
            (0, 0)
        );
    }

    #[test]
    fn environment_values_are_taken_verbatim_and_typed_by_the_setting() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let s = Settings::load_layers(
            None,
            Some(env(&[
                ("LOGFLEET__QUERY__BEARER_TOKEN", "000123"),
                ("LOGFLEET__S3__BUCKET", "0042"),
                ("LOGFLEET__MONGO__DATABASE", "1e5"),
                ("LOGFLEET__AMQP__PREFIX", "007"),
                ("LOGFLEET__AMQP__PARTITIONS", "12"),
                ("LOGFLEET__INGEST__FAIR_SHARE", "false"),
                ("LOGFLEET__AMQP__RECONNECT_MAX_SECS", "2.5"),
            ])),
        )
        .unwrap();
        assert_eq!(s.query.bearer_token, "000123");
        assert_eq!(s.s3.bucket, "0042");
        assert_eq!(s.mongo.database, "1e5");
        assert_eq!(s.amqp.prefix, "007");
        assert_eq!(s.amqp.partitions, 12);
        assert!(!s.ingest.fair_share);
        assert_eq!(s.amqp.reconnect_max_secs, 2.5);
        let long = "1234567890123456789012345";
        let s = Settings::load_layers(None, Some(env(&[("LOGFLEET__QUERY__BEARER_TOKEN", long)])))
            .unwrap();
        assert_eq!(s.query.bearer_token, long, "a 25-digit token stays text");
        let e = Settings::load_layers(None, Some(env(&[("LOGFLEET__AMQP__PARTITIONS", "eight")])))
            .unwrap_err();
        assert!(e.to_string().contains("partitions"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("logfleet-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("extra.toml");
        std::fs::write(&f, "[mongo]\nurl = \"typo\"\n").unwrap();
        let e = Settings::load_from(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
