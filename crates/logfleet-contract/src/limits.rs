//! The published limits of the producer contract; a message over any of them is dead-lettered.

use serde::Deserialize;

/// Limits of one message, settable under `[limits]` in the fleet's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Largest message body, in bytes.
    pub max_message_bytes: usize,
    /// Most logs in one batch message.
    pub max_logs_per_message: usize,
    /// Longest `message` of one log, in bytes.
    pub max_log_message_bytes: usize,
    /// Deepest nesting of `metadata` (an object directly in `metadata` is level 2).
    pub max_metadata_depth: usize,
    /// Largest `metadata` of one log, in bytes of compact JSON.
    pub max_metadata_bytes: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_logs_per_message: 10_000,
            max_log_message_bytes: 64 * 1024,
            max_metadata_depth: 8,
            max_metadata_bytes: 16 * 1024,
        }
    }
}
