//! logfleet: a RabbitMQ → MongoDB → S3 worker fleet for per-episode logs.
//!
//! Layout of this crate:
//! - [`domain`]: parse-only newtypes (`EpisodeId`, `LogLevel`, `MessageId`).
//! - [`message`]: the producer contract: decoding and validating a message body.
//! - [`model`]: the stored documents LogEntry, LogChunk, LogMetadata and the size measure.
//! - [`ledger`]: `SequenceLedger`, the pure numbering of a batch against an episode's ledger.
//! - [`chunk`]: the JSONL.gz chunk codec and the S3 key scheme.
//! - Adapters, one per service: [`amqp`], [`mongo`], [`s3`].
//! - Workers: [`ingest`] (RabbitMQ → MongoDB) and [`archive`] (MongoDB → S3).
//! - Read path: [`query`] (both tiers, pages, export, follow) and [`chunk_cache`].
//! - [`config`] and [`telemetry`]: layered settings and tracing set-up.
//! - [`metrics`] and [`health`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz`
//!   endpoints of the workers.
//!
//! Both workers expose `run(settings, shutdown)`: the binaries are thin wrappers, and tests stop
//! a worker deterministically by resolving the `shutdown` future.

pub mod amqp;
pub mod archive;
pub mod chunk;
pub mod chunk_cache;
pub mod config;
pub mod domain;
pub mod health;
pub mod ingest;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod model;
pub mod mongo;
pub mod query;
pub mod retry;
pub mod s3;
pub mod telemetry;
pub mod worker;

pub use worker::shutdown_signal;
