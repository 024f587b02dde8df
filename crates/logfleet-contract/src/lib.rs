//! logfleet-contract: what producers and the fleet agree on, and nothing else (no broker, store
//! or runtime dependency). The producer client, the workers and the fuzz target all use it.
//!
//! Layout:
//! - [`domain`]: parse-only newtypes, [`EpisodeId`] (with its justified alphabet), [`LogLevel`],
//!   [`MessageId`];
//! - [`wire`]: [`WireMessage`] / [`WireLog`], the message body, serialized by producers and
//!   deserialized by the ingest-worker (one type for both);
//! - [`decode`]: [`decode()`], a body and its AMQP properties into a validated [`LogMessage`] of
//!   plain types, or a [`RejectReason`] (the dead-letter reason);
//! - [`limits`]: [`LimitsSettings`], the published limits;
//! - [`archive`]: [`ArchiveRequest`], the body of a message on the archive exchange;
//! - [`headers`]: names of the headers logfleet adds to dead letters and replays.

pub mod archive;
pub mod decode;
pub mod domain;
pub mod headers;
pub mod limits;
pub mod wire;

pub use archive::{ArchiveKind, ArchiveRequest};
pub use decode::{
    LogMessage, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, MessageProperties, NewLog, RejectReason, decode,
};
pub use domain::{
    DomainError, EPISODE_ID_MAX_LEN, EpisodeId, LogLevel, MESSAGE_ID_MAX_LEN, MessageId,
};
pub use limits::LimitsSettings;
pub use wire::{WireLog, WireMessage};
