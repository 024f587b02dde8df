//! Retention: episodes and archived chunks expire on schedule, every record kept consistent.
//!
//! **The policy** (`[retention]`, off by default; `docs/retention.md`): a whole episode expires
//! `episode_max_age_secs` after its `lastLogAt`; an archived chunk expires `chunk_max_age_secs`
//! after its `endTime` (its latest log), the hot tail kept. An episode's
//! `LogMetadata.retentionOverride` replaces either limit (0: never).
//!
//! **The plan** ([`ChunkArchiver::plan_retention`]) finds its candidates through indexes only,
//! never by reading LogEntry: LogMetadata by `lastLogAt` and by the override index, LogChunk by
//! `[startTime, endTime]`, and the unfinished expiries among the `sweepDue` episodes. What goes
//! and how much is taken from LogMetadata's counters and the chunk records. Its cost grows with
//! the episodes that are candidates (old, overridden or unfinished), not with all episodes or
//! logs.
//!
//! **One episode** ([`ChunkArchiver::expire_episode`]), under the archive lock (the same lease
//! as archive runs, kept alive in the background), in this order:
//! 1. finish what an archive run left (its `pendingChunk`), so every committed chunk has its
//!    record;
//! 2. **mark**: write the `expiring` marker into LogMetadata (compare-and-set, fenced on the
//!    lock): the sequence range below `below` and the chunks below `chunksBelow` go, with the
//!    amounts to take off the counters. From here on, reads of that range answer 410 Gone;
//! 3. delete the chunks' S3 objects;
//! 4. delete their LogChunk records;
//! 5. delete the LogEntry documents below `below`, and the dedup records (MessageLedger) of the
//!    messages that start there;
//! 6. **settle** LogMetadata (compare-and-set, fenced on the lock): move the counters
//!    (`expiredLogs`, `expiredChunks`, `expiredS3Bytes`; `currentLogs`, `currentMongoBytes` and
//!    `archivedLogs` when hot logs went), note `expiredAt` and `expiryReason`, clear the marker;
//! 7. remove orphan objects; release the lock.
//!
//! Every step is idempotent and bounded by the marker, which stays until the last step: a
//! crash anywhere leaves the marker (and `sweepDue`), and whoever takes the lock next, a
//! retention pass or an archive run, finishes the same expiry before anything else. A worker
//! that froze past its lease wakes to delete only what the marker it read names, which is
//! expired whoever finishes it, and its settling write is refused (it no longer holds the lock).
//!
//! **Ingest racing an expiry** of the whole episode: the marker names the range below the
//! `nextSequenceNumber` read when marking. Logs counted after it are above it and stay, and the
//! settling write takes off only what was there when marking. LogMetadata is never deleted: a
//! fully expired episode keeps it as a tombstone (`expiredLogs = nextSequenceNumber`), which
//! reads answer 410 from, and later logs go on from its `nextSequenceNumber`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::DateTime;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::archiver::Locked;
use super::{ArchiveError, ChunkArchiver};
use crate::config::RetentionSettings;
use crate::domain::EpisodeId;
use crate::faults::FaultPoint;
use crate::model::{Expiring, LogMetadata};
use crate::mongo::Decision;
use crate::mongo::lease::{holds_lease, lease_until};
use crate::object_store::ObjectStore;

/// `Expiring.kind` of a whole-episode expiry.
pub const KIND_EPISODE: &str = "episode";
/// `Expiring.kind` of a chunks-only expiry.
pub const KIND_CHUNKS: &str = "chunks";

/// What one expiry removes (planned, or done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedExpiry {
    /// The episode.
    pub episode_id: EpisodeId,
    /// [`KIND_EPISODE`] or [`KIND_CHUNKS`].
    pub kind: String,
    /// Chunks that go (objects and records).
    pub chunks: i64,
    /// Logs that go, archived and hot.
    pub logs: i64,
    /// Hot logs among them (LogEntry documents).
    pub hot_logs: i64,
    /// Compressed bytes of the chunks that go.
    pub s3_bytes: i64,
    /// Size measure of the hot logs that go.
    pub mongo_bytes: i64,
    /// Why, in words.
    pub reason: String,
    /// An expiry already marked by an earlier pass that did not finish.
    pub unfinished: bool,
}

/// What [`ChunkArchiver::plan_retention`] found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPlan {
    /// Episodes the indexed queries returned.
    pub candidates: usize,
    /// What would go, by episode id.
    pub expiries: Vec<PlannedExpiry>,
}

impl RetentionPlan {
    /// The sums over every planned expiry: (episodes whole, chunks, logs, s3 bytes, mongo bytes).
    pub fn totals(&self) -> (usize, i64, i64, i64, i64) {
        self.expiries.iter().fold((0, 0, 0, 0, 0), |t, p| {
            (
                t.0 + usize::from(p.kind == KIND_EPISODE),
                t.1 + p.chunks,
                t.2 + p.logs,
                t.3 + p.s3_bytes,
                t.4 + p.mongo_bytes,
            )
        })
    }
}

/// What [`ChunkArchiver::expire_episode`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryOutcome {
    /// This expiry was done (maybe finishing one an earlier pass marked).
    Expired(PlannedExpiry),
    /// Nothing of the episode is due.
    Nothing,
    /// Another worker holds the lock: it, or a later pass, decides.
    Busy,
    /// No LogMetadata exists for the episode.
    Unknown,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Expiries planned.
    pub planned: usize,
    /// Expiries done.
    pub expired: Vec<PlannedExpiry>,
    /// Episodes whose lock was held elsewhere.
    pub busy: usize,
    /// Episodes whose expiry failed (retried by the next pass).
    pub failed: usize,
}

/// An age in words: `30d`, `12h`, `90m`, `45s`.
pub fn format_age(secs: i64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses an age: `N` seconds or `Ns`, `Nm`, `Nh`, `Nd`; `never` is 0.
pub fn parse_age(raw: &str) -> Result<i64, String> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(0);
    }
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        _ => (t, 's'),
    };
    let n: i64 = num
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{raw:?} is not an age: use N, Ns, Nm, Nh, Nd or never"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("{raw:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{raw:?} is too large"))
}

/// The limits that apply to one episode: (whole-episode max age, chunk max age), in seconds;
/// `None`: no limit. An override replaces the global value; 0 means never.
pub fn effective_limits(m: &LogMetadata, s: &RetentionSettings) -> (Option<i64>, Option<i64>) {
    let global = |v: u64| (v > 0).then_some(v as i64);
    let pick = |over: Option<i64>, g: Option<i64>| match over {
        Some(v) if v <= 0 => None,
        Some(v) => Some(v),
        None => g,
    };
    let o = m.retention_override.as_ref();
    (
        pick(
            o.and_then(|o| o.max_age_secs),
            global(s.episode_max_age_secs),
        ),
        pick(
            o.and_then(|o| o.chunk_max_age_secs),
            global(s.chunk_max_age_secs),
        ),
    )
}

fn minus_secs(now: DateTime, secs: i64) -> DateTime {
    DateTime::from_millis(
        now.timestamp_millis()
            .saturating_sub(secs.saturating_mul(1_000)),
    )
}

fn rfc3339(t: DateTime) -> String {
    t.try_to_rfc3339_string().unwrap_or_else(|_| t.to_string())
}

/// Whether the whole episode is due at `now`: its last log is older than its limit, and
/// something of it is left. Returns the reason.
pub fn episode_due(m: &LogMetadata, s: &RetentionSettings, now: DateTime) -> Option<String> {
    let age = effective_limits(m, s).0?;
    let last = m.last_log_at?;
    (last < minus_secs(now, age) && m.next_sequence_number > m.expired_logs).then(|| {
        format!(
            "episode retention: no log for more than {} (last log at {})",
            format_age(age),
            rfc3339(last)
        )
    })
}

/// The marker of a whole-episode expiry of `m` as it is now: everything below its
/// `nextSequenceNumber`, every committed chunk.
fn episode_marker(m: &LogMetadata, reason: String, now: DateTime) -> Expiring {
    Expiring {
        kind: KIND_EPISODE.into(),
        below: m.next_sequence_number,
        chunks_below: m.total_chunks,
        // Every counted hot log is below nextSequenceNumber.
        hot_logs: (m.next_sequence_number - m.archived_logs).max(0),
        mongo_bytes: m.current_mongo_bytes,
        s3_bytes: m.archived_s3_bytes - m.expired_s3_bytes,
        reason,
        at: now,
    }
}

/// What a marker removes from `m` (its counters as they are before the settling write).
fn planned_from_marker(m: &LogMetadata, e: &Expiring, unfinished: bool) -> PlannedExpiry {
    PlannedExpiry {
        episode_id: m.episode_id.clone(),
        kind: e.kind.clone(),
        chunks: i64::from((e.chunks_below - m.expired_chunks).max(0)),
        logs: (e.below - m.expired_logs).max(0),
        hot_logs: e.hot_logs,
        s3_bytes: e.s3_bytes,
        mongo_bytes: e.mongo_bytes,
        reason: e.reason.clone(),
        unfinished,
    }
}

impl<S: ObjectStore> ChunkArchiver<S> {
    /// The retention policy this archiver applies.
    pub fn retention_settings(&self) -> &RetentionSettings {
        &self.retention
    }

    /// Replaces the retention policy (`logctl` and tests).
    pub fn with_retention(mut self, retention: RetentionSettings) -> Self {
        self.retention = retention;
        self
    }

    /// What would expire at `now`, found through indexed queries only (see the module doc).
    pub async fn plan_retention(&self, now: DateTime) -> Result<RetentionPlan, ArchiveError> {
        let s = &self.retention;
        let mut candidates: BTreeMap<EpisodeId, LogMetadata> = BTreeMap::new();
        // Unfinished expiries keep `sweepDue` set.
        for m in self.store.episodes_due().await? {
            if m.expiring.is_some() {
                candidates.insert(m.episode_id.clone(), m);
            }
        }
        if s.episode_max_age_secs > 0 {
            let before = minus_secs(now, s.episode_max_age_secs as i64);
            for m in self.store.episodes_last_log_before(before).await? {
                candidates.entry(m.episode_id.clone()).or_insert(m);
            }
        }
        if s.chunk_max_age_secs > 0 {
            let before = minus_secs(now, s.chunk_max_age_secs as i64);
            let ids: Vec<EpisodeId> = self
                .store
                .episodes_with_chunks_ended_before(before)
                .await?
                .into_iter()
                .filter(|id| !candidates.contains_key(id))
                .collect();
            for m in self.store.metadata_of_many(&ids).await? {
                candidates.entry(m.episode_id.clone()).or_insert(m);
            }
        }
        for m in self.store.episodes_with_retention_override().await? {
            candidates.entry(m.episode_id.clone()).or_insert(m);
        }
        let mut plan = RetentionPlan {
            candidates: candidates.len(),
            expiries: Vec::new(),
        };
        for m in candidates.values() {
            if let Some(p) = self.plan_one(m, now).await? {
                plan.expiries.push(p);
            }
        }
        Ok(plan)
    }

    /// What of one episode would expire at `now`, from its LogMetadata `m` (and its chunk
    /// records, for an expiry of chunks).
    async fn plan_one(
        &self,
        m: &LogMetadata,
        now: DateTime,
    ) -> Result<Option<PlannedExpiry>, ArchiveError> {
        if let Some(e) = &m.expiring {
            return Ok(Some(planned_from_marker(m, e, true)));
        }
        if let Some(reason) = episode_due(m, &self.retention, now) {
            return Ok(Some(planned_from_marker(
                m,
                &episode_marker(m, reason, now),
                false,
            )));
        }
        Ok(self
            .chunks_marker(m, now)
            .await?
            .map(|e| planned_from_marker(m, &e, false)))
    }

    /// The marker of a chunks-only expiry of `m` at `now`: the oldest committed chunks, from
    /// the first not yet expired, as long as each ends before the cutoff.
    async fn chunks_marker(
        &self,
        m: &LogMetadata,
        now: DateTime,
    ) -> Result<Option<Expiring>, ArchiveError> {
        let Some(age) = effective_limits(m, &self.retention).1 else {
            return Ok(None);
        };
        let before = minus_secs(now, age);
        let chunks = self
            .store
            .expirable_chunks(&m.episode_id, m.expired_chunks, m.total_chunks, before)
            .await?;
        let Some(last) = chunks.last() else {
            return Ok(None);
        };
        Ok(Some(Expiring {
            kind: KIND_CHUNKS.into(),
            below: last.end_sequence + 1,
            chunks_below: last.chunk_number + 1,
            hot_logs: 0,
            mongo_bytes: 0,
            s3_bytes: chunks.iter().map(|c| c.size_bytes).sum(),
            reason: format!(
                "chunk retention: archived logs older than {} (chunks ending before {})",
                format_age(age),
                rfc3339(before)
            ),
            at: now,
        }))
    }

    /// One retention pass: plans at `now`, then expires each planned episode in turn (at most
    /// `retention.max_episodes_per_pass`); `progress` is called after each. One failing
    /// episode does not stop the others.
    pub async fn retention_pass(
        &self,
        now: DateTime,
        mut progress: impl FnMut(&PlannedExpiry, &Result<ExpiryOutcome, ArchiveError>),
    ) -> Result<RetentionReport, ArchiveError> {
        let started = Instant::now();
        let plan = self.plan_retention(now).await?;
        let mut report = RetentionReport {
            planned: plan.expiries.len(),
            ..Default::default()
        };
        for p in plan
            .expiries
            .iter()
            .take(self.retention.max_episodes_per_pass)
        {
            let r = self.expire_episode(&p.episode_id, now).await;
            progress(p, &r);
            match r {
                Ok(ExpiryOutcome::Expired(done)) => report.expired.push(done),
                Ok(ExpiryOutcome::Busy) => report.busy += 1,
                Ok(ExpiryOutcome::Nothing | ExpiryOutcome::Unknown) => {}
                Err(e @ ArchiveError::Injected(_)) => return Err(e),
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(episode = %p.episode_id, error = %e, "expiry failed; the next pass retries");
                }
            }
        }
        let rm = &self.metrics.retention;
        rm.last_pass_seconds.set(started.elapsed().as_secs_f64());
        rm.last_pass_timestamp
            .set(DateTime::now().timestamp_millis() as f64 / 1000.0);
        Ok(report)
    }

    /// Expires what of one episode is due at `now` (or finishes an expiry an earlier pass
    /// marked), under the episode's archive lock. `Busy` while another worker holds it.
    pub async fn expire_episode(
        &self,
        ep: &EpisodeId,
        now: DateTime,
    ) -> Result<ExpiryOutcome, ArchiveError> {
        let result = self
            .under_lock(ep, "retention", |meta| self.expire_locked(meta, now))
            .await
            .map(|locked| match locked {
                Locked::Unknown => ExpiryOutcome::Unknown,
                Locked::Busy => ExpiryOutcome::Busy,
                Locked::Ran(outcome) => outcome,
            });
        let outcome = match &result {
            Ok(ExpiryOutcome::Expired(_)) => "done",
            Ok(ExpiryOutcome::Busy) => "busy",
            Ok(ExpiryOutcome::Nothing | ExpiryOutcome::Unknown) => "nothing",
            Err(ArchiveError::Injected(_)) => "stopped",
            Err(_) => "error",
        };
        self.metrics
            .retention
            .runs
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn expire_locked(
        &self,
        meta: LogMetadata,
        now: DateTime,
    ) -> Result<ExpiryOutcome, ArchiveError> {
        let ep = meta.episode_id.clone();
        let mut meta = self.finish_commit(meta, None).await?;
        if meta.expiring.is_none() {
            // Decided under the lock: no archive run moves chunks meanwhile. The chunks of a
            // chunks-only expiry are read now; a whole-episode marker is taken from the
            // document the compare-and-set writes (ingest may count in between).
            let chunks = match episode_due(&meta, &self.retention, now) {
                Some(_) => None,
                None => match self.chunks_marker(&meta, now).await? {
                    Some(c) => Some(c),
                    None => return Ok(ExpiryOutcome::Nothing),
                },
            };
            let settings = self.retention.clone();
            let until = lease_until(Duration::from_secs(self.settings.lease_secs));
            let marked = self
                .store
                .update_metadata(&ep, None, |m| {
                    if !holds_lease(m, &self.owner) {
                        return Err(ArchiveError::LeaseLost(ep.clone()));
                    }
                    let marker = match (&chunks, episode_due(m, &settings, now)) {
                        (None, Some(reason)) => episode_marker(m, reason, now),
                        (Some(c), _) => c.clone(),
                        // New logs made the episode young again.
                        (None, None) => return Ok(Decision::Keep(false)),
                    };
                    m.expiring = Some(marker);
                    m.sweep_due = true;
                    if let Some(l) = m.archive_lease.as_mut() {
                        l.expires_at = until;
                    }
                    Ok(Decision::Write(true))
                })
                .await?
                .ok_or_else(|| ArchiveError::LeaseLost(ep.clone()))?;
            if !marked.value {
                return Ok(ExpiryOutcome::Nothing);
            }
            meta = marked.metadata;
            tracing::info!(episode = %ep, expiring = ?meta.expiring, "expiry marked");
            self.faults.at(FaultPoint::RetentionAfterMark).await?;
        }
        let (_, done) = self.finish_expiry(meta).await?;
        // Objects of attempts that never committed go too (an expired episode may never
        // archive again).
        self.remove_orphans(&ep).await?;
        Ok(ExpiryOutcome::Expired(done))
    }

    /// Steps 3 to 6 of an expiry whose marker `meta.expiring` holds, each idempotent; returns
    /// LogMetadata as settled and what was removed. Run under the lock, by a retention pass or
    /// by an archive run that finds a marker.
    pub(super) async fn finish_expiry(
        &self,
        meta: LogMetadata,
    ) -> Result<(LogMetadata, PlannedExpiry), ArchiveError> {
        let ep = meta.episode_id.clone();
        let Some(e) = meta.expiring.clone() else {
            let none = planned_from_marker(
                &meta,
                &Expiring {
                    kind: String::new(),
                    below: meta.expired_logs,
                    chunks_below: meta.expired_chunks,
                    hot_logs: 0,
                    mongo_bytes: 0,
                    s3_bytes: 0,
                    reason: String::new(),
                    at: DateTime::now(),
                },
                false,
            );
            return Ok((meta, none));
        };
        let planned = planned_from_marker(&meta, &e, false);
        // Objects, then records: between the two a record may name a deleted object, but its
        // range reads as expired from the marker on, so no read ever opens it.
        for c in self.store.chunks_below(&ep, e.chunks_below).await? {
            self.objects.delete(&c.src).await?;
        }
        self.faults.at(FaultPoint::RetentionAfterObjects).await?;
        self.store.delete_chunks_below(&ep, e.chunks_below).await?;
        self.faults
            .at(FaultPoint::RetentionAfterChunkRecords)
            .await?;
        self.store.delete_entries_below(&ep, e.below).await?;
        self.store
            .delete_archived_messages_below(&ep, e.below)
            .await?;
        self.faults.at(FaultPoint::RetentionAfterEntries).await?;
        let mut settled_now = false;
        let settled = self
            .update_locked(&ep, |m| {
                settled_now = false;
                let Some(x) = m.expiring.take() else {
                    return Ok(());
                };
                settled_now = true;
                m.current_logs -= x.hot_logs;
                m.current_mongo_bytes -= x.mongo_bytes;
                m.archived_logs = m.archived_logs.max(x.below);
                m.expired_logs = m.expired_logs.max(x.below);
                m.expired_chunks = m.expired_chunks.max(x.chunks_below);
                m.expired_s3_bytes += x.s3_bytes;
                m.expired_at = Some(DateTime::now());
                m.expiry_reason = Some(x.reason);
                Ok(())
            })
            .await?;
        if settled_now {
            let rm = &self.metrics.retention;
            if planned.kind == KIND_EPISODE {
                rm.episodes_expired.inc();
            }
            rm.chunks_expired.inc_by(planned.chunks as u64);
            rm.logs_expired.inc_by(planned.logs as u64);
            rm.bytes_expired
                .with_label_values(&["s3"])
                .inc_by(planned.s3_bytes as u64);
            rm.bytes_expired
                .with_label_values(&["mongo"])
                .inc_by(planned.mongo_bytes as u64);
            tracing::info!(
                episode = %ep,
                kind = %planned.kind,
                chunks = planned.chunks,
                logs = planned.logs,
                s3_bytes = planned.s3_bytes,
                mongo_bytes = planned.mongo_bytes,
                reason = %planned.reason,
                "expired"
            );
        }
        self.faults.at(FaultPoint::RetentionAfterMetadata).await?;
        Ok((settled, planned))
    }
}

/// The archive-worker's periodic retention pass, while `retention.enabled`.
pub(super) async fn retention_loop<S: ObjectStore + 'static>(
    archiver: Arc<ChunkArchiver<S>>,
    cancel: CancellationToken,
) -> Result<(), ArchiveError> {
    let s = archiver.retention.clone();
    if !s.enabled {
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs(s.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match archiver.retention_pass(DateTime::now(), |_, _| {}).await {
            Ok(r) => {
                if r.planned > 0 {
                    tracing::info!(
                        planned = r.planned,
                        expired = r.expired.len(),
                        busy = r.busy,
                        failed = r.failed,
                        "retention pass"
                    );
                }
            }
            Err(e @ ArchiveError::Injected(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "retention pass failed; the next pass retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RetentionOverride;

    fn settings(episode: u64, chunk: u64) -> RetentionSettings {
        RetentionSettings {
            enabled: true,
            interval_secs: 60,
            episode_max_age_secs: episode,
            chunk_max_age_secs: chunk,
            max_episodes_per_pass: 10,
        }
    }

    fn meta(last_ms: i64) -> LogMetadata {
        let mut m = LogMetadata::new(
            EpisodeId::parse("ep").unwrap(),
            10,
            10,
            DateTime::from_millis(0),
        );
        m.last_log_at = Some(DateTime::from_millis(last_ms));
        m.next_sequence_number = 5;
        m.total_logs = 5;
        m.current_logs = 5;
        m
    }

    #[test]
    fn ages_parse_and_print() {
        assert_eq!(parse_age("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_age("12h").unwrap(), 43_200);
        assert_eq!(parse_age("90m").unwrap(), 5_400);
        assert_eq!(parse_age("45").unwrap(), 45);
        assert_eq!(parse_age("never").unwrap(), 0);
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("3w").is_err());
        assert_eq!(format_age(30 * 86_400), "30d");
        assert_eq!(format_age(5_400), "90m");
        assert_eq!(format_age(61), "61s");
    }

    #[test]
    fn an_override_replaces_the_global_limit_and_zero_means_never() {
        let s = settings(100, 0);
        let now = DateTime::from_millis(1_000_000);
        let mut m = meta(1_000_000 - 200_000);
        assert!(
            episode_due(&m, &s, now).is_some(),
            "200 s idle, limit 100 s"
        );
        m.retention_override = Some(RetentionOverride {
            max_age_secs: Some(0),
            chunk_max_age_secs: Some(50),
            set_at: now,
        });
        assert!(episode_due(&m, &s, now).is_none(), "never");
        assert_eq!(effective_limits(&m, &s), (None, Some(50)));
        m.retention_override.as_mut().unwrap().max_age_secs = Some(500);
        assert!(episode_due(&m, &s, now).is_none(), "500 s limit");
        m.retention_override = None;
        assert!(episode_due(&m, &settings(0, 0), now).is_none(), "off");
        // A tombstone (everything expired already) is not due again.
        m.expired_logs = 5;
        assert!(episode_due(&m, &s, now).is_none());
    }

    #[test]
    fn a_whole_episode_marker_takes_everything_counted() {
        let mut m = meta(0);
        m.archived_logs = 3;
        m.current_logs = 2;
        m.total_chunks = 1;
        m.archived_s3_bytes = 70;
        m.current_mongo_bytes = 300;
        let e = episode_marker(&m, "r".into(), DateTime::from_millis(1));
        assert_eq!(
            (
                e.below,
                e.chunks_below,
                e.hot_logs,
                e.mongo_bytes,
                e.s3_bytes
            ),
            (5, 1, 2, 300, 70)
        );
        let p = planned_from_marker(&m, &e, false);
        assert_eq!((p.chunks, p.logs), (1, 5));
    }
}
