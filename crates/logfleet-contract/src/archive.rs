//! Archive requests: the messages on `{prefix}.archive` that ask the archive-workers to archive
//! an episode (threshold events from the ingest-workers, flushes from operators).

use serde::{Deserialize, Serialize};

use crate::domain::EpisodeId;

/// What an archive request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// Archive full chunks while `currentLogs >= archiveThreshold`.
    Threshold,
    /// The episode is finished: archive every full chunk, then the final partial one.
    Flush,
}

/// Body of a message on `{prefix}.archive`: `{"episodeId": "...", "kind": "threshold"|"flush"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveRequest {
    /// The episode to archive.
    pub episode_id: EpisodeId,
    /// What to archive of it.
    pub kind: ArchiveKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_refuse_what_they_do_not_know() {
        let r = ArchiveRequest {
            episode_id: EpisodeId::parse("ep-1").unwrap(),
            kind: ArchiveKind::Flush,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"episodeId":"ep-1","kind":"flush"}"#);
        assert_eq!(serde_json::from_str::<ArchiveRequest>(&text).unwrap(), r);
        assert!(
            serde_json::from_str::<ArchiveRequest>(r#"{"episodeId":"../x","kind":"flush"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<ArchiveRequest>(r#"{"episodeId":"e","kind":"now"}"#).is_err()
        );
    }
}
