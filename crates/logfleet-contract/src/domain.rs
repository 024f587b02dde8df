//! Parse-only newtypes for the values that cross the system's edges.
//!
//! Every value that comes from a producer, an operator or a config file is parsed into one of
//! these types once, at the edge; past that point the code can rely on the invariants they hold.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted episode id, in bytes. Keeps S3 keys, metric labels and index keys short.
pub const EPISODE_ID_MAX_LEN: usize = 128;
/// Longest accepted AMQP `message_id`, in bytes.
pub const MESSAGE_ID_MAX_LEN: usize = 256;

/// Why a value was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("episodeId is empty")]
    EmptyEpisodeId,
    #[error("episodeId is {0} bytes long; the limit is {EPISODE_ID_MAX_LEN}")]
    EpisodeIdTooLong(usize),
    #[error(
        "episodeId contains {0:?}; allowed are ASCII letters, digits and '.', '_', ':', '-', starting with a letter or digit, without '..'"
    )]
    EpisodeIdCharacter(char),
    #[error("episodeId contains '..'")]
    EpisodeIdDotDot,
    #[error("unknown level {0:?}; expected one of info, warn, error, debug, fatal")]
    UnknownLevel(String),
    #[error(
        "message_id is empty or longer than {MESSAGE_ID_MAX_LEN} bytes, or has non-printable characters"
    )]
    BadMessageId,
}

/// The id of an episode: 1 to 128 ASCII characters from `[A-Za-z0-9._:-]`, starting with a letter
/// or a digit, never containing `..`.
///
/// That alphabet is safe everywhere the id goes: as an S3 key segment (no `/`, no `..`), as a
/// MongoDB value (it can never start with `$`), as a RabbitMQ routing key and as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EpisodeId(String);

impl EpisodeId {
    /// Parses and validates an episode id.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError::EmptyEpisodeId);
        }
        if raw.len() > EPISODE_ID_MAX_LEN {
            return Err(DomainError::EpisodeIdTooLong(raw.len()));
        }
        for (i, c) in raw.chars().enumerate() {
            let ok = c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | ':' | '-'));
            if !ok {
                return Err(DomainError::EpisodeIdCharacter(c));
            }
        }
        if raw.contains("..") {
            return Err(DomainError::EpisodeIdDotDot);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EpisodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        EpisodeId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EpisodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Severity of a log line. Producers may send any letter case; it is stored lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Fatal,
    ];

    /// Parses a level, ignoring ASCII case.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| DomainError::UnknownLevel(raw.chars().take(32).collect()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The idempotency key of one published message: the AMQP `message_id` when the producer set one,
/// otherwise `sha256:` and the hex SHA-256 digest of the body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// Parses a producer-supplied `message_id`: 1..=256 bytes of printable ASCII.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= MESSAGE_ID_MAX_LEN
            && raw.bytes().all(|b| (0x20..0x7f).contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::BadMessageId)
        }
    }

    /// The idempotency key of a message published without `message_id`.
    pub fn digest_of(body: &[u8]) -> Self {
        use sha2::Digest;
        Self(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(body))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_ids_that_are_accepted() {
        for ok in ["a", "ep-1", "run.2026.11:shard_3", "A9", &"x".repeat(128)] {
            assert_eq!(EpisodeId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn episode_ids_that_could_escape_a_key_or_act_as_an_operator_are_refused() {
        for bad in [
            "",
            "../etc",
            "a/../b",
            "a/b",
            "$gt",
            "a$b",
            ".hidden",
            "a..b",
            "-x",
            "a b",
            "ép",
            "a\u{0}b",
            "a\u{202e}b",
            "ａ",
        ] {
            assert!(EpisodeId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            EpisodeId::parse(&"x".repeat(129)),
            Err(DomainError::EpisodeIdTooLong(129))
        );
    }

    #[test]
    fn episode_id_deserialization_validates() {
        assert!(serde_json::from_str::<EpisodeId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<EpisodeId>("\"../x\"").is_err());
    }

    #[test]
    fn levels_parse_case_insensitively_and_print_lowercase() {
        assert_eq!(LogLevel::parse("WARN").unwrap(), LogLevel::Warn);
        assert_eq!(LogLevel::parse("Fatal").unwrap().as_str(), "fatal");
        assert!(matches!(
            LogLevel::parse("verbose"),
            Err(DomainError::UnknownLevel(_))
        ));
        assert!(LogLevel::parse("warning").is_err());
    }

    #[test]
    fn message_ids() {
        assert!(MessageId::parse("abc-123").is_ok());
        assert!(MessageId::parse("").is_err());
        assert!(MessageId::parse("a\nb").is_err());
        assert!(MessageId::parse(&"m".repeat(257)).is_err());
        let d = MessageId::digest_of(b"{}");
        assert!(d.as_str().starts_with("sha256:") && d.as_str().len() == 7 + 64);
        assert_eq!(d, MessageId::digest_of(b"{}"));
    }
}
