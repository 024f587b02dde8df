//! The archive lock: `LogMetadata.isArchiving` plus `archiveLease {owner, expiresAt}`.
//!
//! One archive run at a time per episode holds it. It is taken and given back through
//! [`MongoStore::update_metadata`] like every LogMetadata write, so it is a compare-and-set on
//! `version`; a lease that ran out (its holder died or stalled) is taken over. The archive-worker
//! and `logctl lock` both use this module.

use std::time::Duration;

use bson::DateTime;

use super::{Decision, MongoError, MongoStore};
use crate::domain::EpisodeId;
use crate::model::{ArchiveLease, LogMetadata};

/// What [`MongoStore::acquire_archive_lease`] got.
#[derive(Debug)]
pub enum LeaseGrant {
    /// The lock is ours until `metadata.archiveLease.expiresAt`.
    Granted {
        /// LogMetadata as written with the lock taken.
        metadata: Box<LogMetadata>,
        /// The owner of an expired lease that was taken over, if any.
        took_over_from: Option<String>,
    },
    /// Another owner's lease is live.
    Busy,
    /// The episode has no LogMetadata.
    Unknown,
}

/// What [`MongoStore::force_release_archive_lease`] did.
#[derive(Debug)]
pub enum ForcedRelease {
    /// The lock was released; the lock as it was, described.
    Released { before: String, version: i64 },
    /// Nothing held it.
    NotLocked { version: i64 },
    /// The episode has no LogMetadata.
    Unknown,
}

/// The instant a lease taken or renewed now runs out.
pub fn lease_until(lease: Duration) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + lease.as_millis() as i64)
}

/// Whether `owner` holds the lock in `m` (whether or not its lease has run out: a holder whose
/// lease ran out still holds the lock until someone takes it over).
pub fn holds_lease(m: &LogMetadata, owner: &str) -> bool {
    m.is_archiving && m.archive_lease.as_ref().is_some_and(|l| l.owner == owner)
}

/// The lock in words, e.g. `locked by archive-1a2b until 2026-12-01T10:00:00Z (live, expires
/// in 12.0 s)`.
pub fn describe_lease(m: &LogMetadata, now: DateTime) -> String {
    match &m.archive_lease {
        None if !m.is_archiving => "not locked".into(),
        None => "isArchiving is set without a lease (stuck)".into(),
        Some(l) => {
            let left_ms = l.expires_at.timestamp_millis() - now.timestamp_millis();
            let state = if left_ms > 0 {
                format!("live, expires in {:.1} s", left_ms as f64 / 1000.0)
            } else {
                format!("EXPIRED {:.1} s ago", -left_ms as f64 / 1000.0)
            };
            format!(
                "{} by {} until {} ({state})",
                if m.is_archiving {
                    "locked"
                } else {
                    "lease without isArchiving"
                },
                l.owner,
                l.expires_at
                    .try_to_rfc3339_string()
                    .unwrap_or_else(|_| l.expires_at.to_string()),
            )
        }
    }
}

impl MongoStore {
    /// Takes the episode's archive lock for `owner` for `lease`, taking over a lease that ran
    /// out; `Busy` while another owner's lease is live. Taking a lock `owner` holds renews it.
    pub async fn acquire_archive_lease(
        &self,
        ep: &EpisodeId,
        owner: &str,
        lease: Duration,
    ) -> Result<LeaseGrant, MongoError> {
        let updated = self
            .update_metadata(ep, None, |m| {
                let holder = m.archive_lease.as_ref().map(|l| l.owner.clone());
                if m.lock_held_at(DateTime::now()) && holder.as_deref() != Some(owner) {
                    return Ok::<_, MongoError>(Decision::Keep(None));
                }
                let took_over = holder.filter(|h| m.is_archiving && h != owner);
                m.is_archiving = true;
                // A holder that dies leaves this set: the sweep finds the expired lock.
                m.sweep_due = true;
                m.archive_lease = Some(ArchiveLease {
                    owner: owner.to_owned(),
                    expires_at: lease_until(lease),
                });
                Ok(Decision::Write(Some(took_over)))
            })
            .await?;
        Ok(match updated {
            None => LeaseGrant::Unknown,
            Some(u) => match u.value {
                None => LeaseGrant::Busy,
                Some(took_over_from) => LeaseGrant::Granted {
                    metadata: Box::new(u.metadata),
                    took_over_from,
                },
            },
        })
    }

    /// Gives the lock back if `owner` still holds it; does nothing otherwise.
    pub async fn release_archive_lease(
        &self,
        ep: &EpisodeId,
        owner: &str,
    ) -> Result<(), MongoError> {
        self.update_metadata(ep, None, |m| {
            if !holds_lease(m, owner) {
                return Ok::<_, MongoError>(Decision::Keep(()));
            }
            m.is_archiving = false;
            m.archive_lease = None;
            m.sweep_due = m.due_at_rest();
            Ok(Decision::Write(()))
        })
        .await?;
        Ok(())
    }

    /// Extends `owner`'s lease by `lease` from now. `false` when `owner` no longer holds the
    /// lock (another worker took it over).
    pub async fn renew_archive_lease(
        &self,
        ep: &EpisodeId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, MongoError> {
        let updated = self
            .update_metadata(ep, None, |m| {
                if !holds_lease(m, owner) {
                    return Ok::<_, MongoError>(Decision::Keep(false));
                }
                if let Some(l) = m.archive_lease.as_mut() {
                    l.expires_at = lease_until(lease);
                }
                Ok(Decision::Write(true))
            })
            .await?;
        Ok(updated.is_some_and(|u| u.value))
    }

    /// Releases the lock whoever holds it (`logctl lock release --force`). A run still going
    /// under it is fenced: its next write checks that it holds the lock and stops.
    pub async fn force_release_archive_lease(
        &self,
        ep: &EpisodeId,
    ) -> Result<ForcedRelease, MongoError> {
        let updated = self
            .update_metadata(ep, None, |m| {
                if !m.is_archiving && m.archive_lease.is_none() {
                    return Ok::<_, MongoError>(Decision::Keep(None));
                }
                let before = describe_lease(m, DateTime::now());
                m.is_archiving = false;
                m.archive_lease = None;
                m.sweep_due = m.due_at_rest();
                Ok(Decision::Write(Some(before)))
            })
            .await?;
        Ok(match updated {
            None => ForcedRelease::Unknown,
            Some(u) => match u.value {
                None => ForcedRelease::NotLocked {
                    version: u.metadata.version,
                },
                Some(before) => ForcedRelease::Released {
                    before,
                    version: u.metadata.version,
                },
            },
        })
    }
}
