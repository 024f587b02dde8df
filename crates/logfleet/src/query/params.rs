//! Read requests, parsed once at the edge (the HTTP API and `logctl` share these parsers).

use bson::DateTime;
use serde::{Deserialize, Serialize};

use super::{LogRecord, QueryError, bad};
use crate::domain::{EpisodeId, LogLevel};

/// Order of a read, by `sequenceNumber`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        match raw.to_ascii_lowercase().as_str() {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            _ => Err(bad(format!("order must be asc or desc, not {raw:?}"))),
        }
    }
}

/// Half-open range `[start, end)` of sequence numbers; a missing side is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqRange {
    /// First sequence number included.
    pub start: Option<i64>,
    /// First sequence number excluded.
    pub end: Option<i64>,
}

/// Half-open range `[start, end)` of `timestamp`; a missing side is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest timestamp included.
    pub start: Option<DateTime>,
    /// Earliest timestamp excluded.
    pub end: Option<DateTime>,
}

/// Parses `A..B`, `A..` or `..B` (half-open: A included, B excluded), or a single `N`.
pub fn parse_seq_range(raw: &str) -> Result<SeqRange, QueryError> {
    let num = |s: &str| -> Result<Option<i64>, QueryError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(bad(format!(
                "sequence range {raw:?}: {s:?} is not a sequence number (0 or more)"
            ))),
        }
    };
    let r = match raw.split_once("..") {
        Some((a, b)) => SeqRange {
            start: num(a)?,
            end: num(b)?,
        },
        None => {
            let n = num(raw)?.ok_or_else(|| bad("sequence range is empty"))?;
            SeqRange {
                start: Some(n),
                end: Some(n.saturating_add(1)),
            }
        }
    };
    if let (Some(a), Some(b)) = (r.start, r.end)
        && a > b
    {
        return Err(bad(format!("sequence range {raw:?} ends before it starts")));
    }
    Ok(r)
}

/// Parses one instant: RFC 3339 (`2026-11-27T18:00:00Z`) or integer epoch milliseconds.
pub fn parse_instant(raw: &str) -> Result<DateTime, QueryError> {
    let s = raw.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(DateTime::from_millis(ms));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| DateTime::from_millis(d.timestamp_millis()))
        .map_err(|_| {
            bad(format!(
                "{s:?} is not a time: use RFC 3339 (2026-11-27T18:00:00Z) or epoch milliseconds"
            ))
        })
}

/// Parses `T1..T2`, `T1..` or `..T2` (half-open), each an RFC 3339 time or epoch milliseconds.
pub fn parse_time_range(raw: &str) -> Result<TimeRange, QueryError> {
    let (a, b) = raw.split_once("..").ok_or_else(|| {
        bad(format!(
            "time range {raw:?} must be FROM..TO, FROM.. or ..TO (RFC 3339 or epoch ms)"
        ))
    })?;
    let side = |s: &str| -> Result<Option<DateTime>, QueryError> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            parse_instant(s).map(Some)
        }
    };
    let r = TimeRange {
        start: side(a)?,
        end: side(b)?,
    };
    if let (Some(a), Some(b)) = (r.start, r.end)
        && a > b
    {
        return Err(bad(format!("time range {raw:?} ends before it starts")));
    }
    Ok(r)
}

/// Parses a comma-separated list of levels, any letter case (`warn,ERROR`).
pub fn parse_levels(raw: &str) -> Result<Vec<LogLevel>, QueryError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let l = LogLevel::parse(part)?;
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.is_empty() {
        return Err(bad("level list is empty"));
    }
    Ok(out)
}

/// What a read selects; every part is optional and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// Sequence numbers.
    pub seq: SeqRange,
    /// `timestamp` range.
    pub time: TimeRange,
    /// Levels (any of them); empty means every level.
    pub levels: Vec<LogLevel>,
    /// A substring `message` must contain (case-sensitive).
    pub contains: Option<String>,
}

impl LogFilter {
    pub(super) fn matches_record(&self, r: &LogRecord) -> bool {
        let ts = r.timestamp.timestamp_millis();
        self.time.start.is_none_or(|s| ts >= s.timestamp_millis())
            && self.time.end.is_none_or(|e| ts < e.timestamp_millis())
            && (self.levels.is_empty() || self.levels.contains(&r.level))
            && self
                .contains
                .as_deref()
                .is_none_or(|c| r.message.contains(c))
    }

    /// A cheap necessary condition on a raw chunk line, to skip most non-matching lines
    /// without parsing them. The line format is fixed by the chunk writer (compact serde_json),
    /// where `"level":"x"` can only appear as the level field or inside metadata, and a substring
    /// without characters that JSON escapes appears verbatim in the escaped message.
    pub(super) fn may_match_raw(&self, raw: &str) -> bool {
        if !self.levels.is_empty() && !self.levels.iter().any(|l| raw.contains(level_pattern(*l))) {
            return false;
        }
        if let Some(c) = self.contains.as_deref() {
            let verbatim = !c.chars().any(|ch| ch == '"' || ch == '\\' || ch < ' ');
            if verbatim && !raw.contains(c) {
                return false;
            }
        }
        true
    }
}

/// `t` rounded down to a whole second.
pub(super) fn floor_second(t: DateTime) -> DateTime {
    DateTime::from_millis(t.timestamp_millis().div_euclid(1000) * 1000)
}

/// `t` rounded up to a whole second.
pub(super) fn ceil_second(t: DateTime) -> DateTime {
    let ms = t.timestamp_millis();
    DateTime::from_millis(
        ms.div_euclid(1000) * 1000 + if ms.rem_euclid(1000) == 0 { 0 } else { 1000 },
    )
}

fn level_pattern(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "\"level\":\"debug\"",
        LogLevel::Info => "\"level\":\"info\"",
        LogLevel::Warn => "\"level\":\"warn\"",
        LogLevel::Error => "\"level\":\"error\"",
        LogLevel::Fatal => "\"level\":\"fatal\"",
    }
}

/// One page request.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    /// The episode.
    pub episode: EpisodeId,
    /// What to select.
    pub filter: LogFilter,
    /// Ascending or descending `sequenceNumber`.
    pub order: Order,
    /// Where the page starts: the first sequence number to consider (ascending: at or above it;
    /// descending: at or below it). `None` starts at the beginning (or the end, descending).
    pub cursor: Option<i64>,
    /// Most logs in the page.
    pub limit: usize,
}

/// Format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON Lines, uncompressed.
    Ndjson,
    /// JSON Lines, gzip-compressed (the chunk format).
    JsonlGz,
}

impl ExportFormat {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        match raw.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "jsonl.gz" | "gz" | "gzip" => Ok(Self::JsonlGz),
            _ => Err(bad(format!(
                "format must be ndjson or jsonl.gz, not {raw:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_ranges() {
        assert_eq!(
            parse_seq_range("10..20").unwrap(),
            SeqRange {
                start: Some(10),
                end: Some(20)
            }
        );
        assert_eq!(
            parse_seq_range("..5").unwrap(),
            SeqRange {
                start: None,
                end: Some(5)
            }
        );
        assert_eq!(
            parse_seq_range("7").unwrap(),
            SeqRange {
                start: Some(7),
                end: Some(8)
            }
        );
        for badr in ["x..1", "-1..", "5..2", "", "1..2..3"] {
            assert!(parse_seq_range(badr).is_err(), "{badr:?} was accepted");
        }
    }

    #[test]
    fn time_ranges_and_levels() {
        let r = parse_time_range("2025-11-27T18:00:00Z..1764266400124").unwrap();
        assert_eq!(r.start.unwrap().timestamp_millis(), 1_764_266_400_000);
        assert_eq!(r.end.unwrap().timestamp_millis(), 1_764_266_400_124);
        assert!(parse_time_range("yesterday..").is_err());
        assert!(parse_time_range("2026-11-27T18:00:00Z").is_err());
        assert!(parse_time_range("20..10").is_err());
        assert_eq!(
            parse_levels("WARN, error,warn").unwrap(),
            vec![LogLevel::Warn, LogLevel::Error]
        );
        assert!(parse_levels("verbose").is_err());
        assert!(parse_levels(",").is_err());
    }

    #[test]
    fn raw_prefilter_is_a_necessary_condition() {
        let f = LogFilter {
            levels: vec![LogLevel::Warn],
            contains: Some("needle".into()),
            ..Default::default()
        };
        let line = r#"{"id":"x","episodeId":"e","timestamp":"1970-01-01T00:00:00.000Z","level":"warn","message":"a needle \"q\"","sequenceNumber":0,"createdAt":"1970-01-01T00:00:00.000Z"}"#;
        assert!(f.may_match_raw(line));
        assert!(!f.may_match_raw(&line.replace("warn", "info")));
        assert!(!f.may_match_raw(&line.replace("needle", "pin")));
        let quoted = LogFilter {
            contains: Some("\"q\"".into()),
            ..Default::default()
        };
        assert!(
            quoted.may_match_raw(line),
            "escaped needles are not pre-filtered"
        );
    }
}
