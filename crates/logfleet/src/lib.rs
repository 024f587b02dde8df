//! logfleet: a RabbitMQ → MongoDB → S3 worker fleet for per-episode logs.
//!
//! Layout of this crate:
//! - The producer contract lives in its own crate, re-exported as [`contract`] (and its
//!   parse-only newtypes as [`domain`]: `EpisodeId`, `LogLevel`, `MessageId`).
//! - [`model`]: the stored documents LogEntry, LogChunk, LogMetadata, and the size measure.
//! - [`ledger`]: `SequenceLedger`, the pure numbering of a batch against an episode's ledger.
//! - [`chunk`]: the chunk format (key scheme, line format, member index), its writer and reader.
//! - Adapters, one per service: [`amqp`] (topology, publisher, dead letters), [`mongo`] (named
//!   operations; the one LogMetadata compare-and-set; the archive lease), [`object_store`]
//!   (the `ObjectStore` trait, S3 and in-memory).
//! - Workers: [`ingest`] (RabbitMQ → MongoDB: `batch`, `partition`) and [`archive`] (MongoDB →
//!   S3: `archiver`, `requests`, `sweep`), both on the skeleton of [`worker`] with [`retry`].
//! - Read path: [`query`] (params, types, the hot/cold read, follow, export, the chunk cache).
//! - [`config`] and [`telemetry`]: layered settings and tracing set-up.
//! - [`metrics`] and [`health`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz`
//!   endpoints of the workers.
//! - [`faults`]: named fault points where tests crash or hold a worker (no-ops unless the
//!   `testing` feature is on).
//!
//! Both workers expose `run(settings, shutdown)`: the binaries are thin wrappers, and tests stop
//! a worker deterministically by resolving the `shutdown` future.

pub mod amqp;
pub mod archive;
pub mod chunk;
pub mod config;
pub mod faults;
pub mod health;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod mongo;
pub mod object_store;
pub mod query;
pub mod retry;
pub mod telemetry;
pub mod worker;

pub use logfleet_contract as contract;
pub use logfleet_contract::domain;
pub use worker::shutdown_signal;
