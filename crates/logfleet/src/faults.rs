//! Fault hooks: named points in the workers and the read path where a test can crash a worker
//! (as if its process died there) or hold it (as if it froze: a paused VM, a stalled call).
//!
//! Production code calls [`Faults::at`] at each [`FaultPoint`]. Without the `testing` cargo
//! feature [`Faults`] is empty and every call is a no-op the compiler removes; with it, a test
//! installs [`FaultHooks`] (ready-made: [`CrashAt`], [`PauseAt`], or a closure through
//! [`HookFn`]) and decides what happens at each point.

use std::fmt;

/// A place in the code where a test may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Ingest: a batch is numbered; nothing is written yet.
    IngestAfterPlan,
    /// Ingest: a batch's entries are written; nothing is counted.
    IngestAfterInsert,
    /// Ingest: a batch is counted in LogMetadata; it is not acked.
    IngestAfterCount,
    /// Ingest: a worker removing another owner's uncounted entries has fenced the episode and
    /// checked that its partition is still its own; nothing is deleted yet.
    IngestBeforeReclaimDelete,
    /// Archive: a run holds the lock and finished what a run before left; it has not looked
    /// for orphan objects yet.
    ArchiveBeforeCleanup,
    /// Archive: the chunk is built, not uploaded.
    ArchiveAfterBuild,
    /// Archive: the chunk object is uploaded, nothing recorded.
    ArchiveAfterUpload,
    /// Archive: LogMetadata is committed (the chunk named in `pendingChunk`), its LogChunk
    /// record not yet written.
    ArchiveAfterMetadata,
    /// Archive: the LogChunk record is written; archived entries not deleted, `pendingChunk`
    /// not cleared.
    ArchiveAfterLogChunk,
    /// Archive: the background task that keeps the lease alive is about to renew it (a
    /// frozen process renews nothing: see [`Freeze`]).
    ArchiveLeaseRenewal,
    /// Read path: between a page's first LogMetadata read and its hot read.
    QueryBeforeHotRead,
    /// Retention: the episode's `expiring` marker is written; nothing deleted yet.
    RetentionAfterMark,
    /// Retention: the chunk objects are deleted; their LogChunk records not yet.
    RetentionAfterObjects,
    /// Retention: the LogChunk records are deleted; the entries and dedup records not yet.
    RetentionAfterChunkRecords,
    /// Retention: the entries and dedup records are deleted; LogMetadata's counters not yet.
    RetentionAfterEntries,
    /// Retention: LogMetadata is final (marker cleared); the lock is not released.
    RetentionAfterMetadata,
}

/// What a worker does at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Go on.
    Continue,
    /// Stop at once, leaving everything as a crash there would (nothing acked, no lock
    /// released).
    Crash,
}

/// A worker stopped by a hook at a point (see [`FaultAction::Crash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped by a fault hook at {0:?}")]
pub struct InjectedFault(pub FaultPoint);

/// Decides what happens at each point; may take its time (a pause).
#[cfg(feature = "testing")]
pub trait FaultHooks: Send + Sync {
    fn at(&self, point: FaultPoint) -> futures::future::BoxFuture<'_, FaultAction>;
}

/// The hooks a worker consults: none in production.
#[derive(Clone, Default)]
pub struct Faults {
    #[cfg(feature = "testing")]
    hooks: Option<std::sync::Arc<dyn FaultHooks>>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Faults")
    }
}

impl Faults {
    /// Installs hooks (tests only).
    #[cfg(feature = "testing")]
    pub fn new(hooks: impl FaultHooks + 'static) -> Self {
        Self {
            hooks: Some(std::sync::Arc::new(hooks)),
        }
    }

    /// Reaches `point`: returns at once without hooks; with them, after they decide, and
    /// [`InjectedFault`] when they say crash.
    #[inline]
    pub async fn at(&self, point: FaultPoint) -> Result<(), InjectedFault> {
        #[cfg(feature = "testing")]
        if let Some(h) = &self.hooks
            && h.at(point).await == FaultAction::Crash
        {
            tracing::warn!(?point, "fault hook: crashing here");
            return Err(InjectedFault(point));
        }
        let _ = point;
        Ok(())
    }
}

#[cfg(feature = "testing")]
pub use hooks::{CrashAt, Freeze, HookFn, PauseAt};

#[cfg(feature = "testing")]
mod hooks {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use futures::future::BoxFuture;
    use tokio::sync::{Notify, Semaphore};

    use super::{FaultAction, FaultHooks, FaultPoint};

    /// Crashes the `nth` time (1-based) `point` is reached; continues otherwise.
    pub struct CrashAt {
        /// Where.
        pub point: FaultPoint,
        /// Which time.
        pub nth: usize,
        /// How many times it was reached so far.
        hits: AtomicUsize,
    }

    impl CrashAt {
        pub fn new(point: FaultPoint, nth: usize) -> Self {
            Self {
                point,
                nth,
                hits: AtomicUsize::new(0),
            }
        }
    }

    impl FaultHooks for CrashAt {
        fn at(&self, point: FaultPoint) -> BoxFuture<'_, FaultAction> {
            let action = if point == self.point
                && self.hits.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
            {
                FaultAction::Crash
            } else {
                FaultAction::Continue
            };
            futures::future::ready(action).boxed()
        }
    }

    /// Holds whoever reaches `point` the `nth` time, until the test calls [`PauseAt::release`];
    /// [`PauseAt::reached`] waits until someone is held. Other arrivals pass.
    #[derive(Clone)]
    pub struct PauseAt {
        inner: Arc<PauseInner>,
    }

    struct PauseInner {
        point: FaultPoint,
        nth: usize,
        hits: AtomicUsize,
        /// A permit is added when the held one reached the point.
        reached: Semaphore,
        /// Wakes the held one.
        release: Notify,
        /// What the held one does once released.
        then: FaultAction,
    }

    impl PauseAt {
        /// Holds the `nth` arrival at `point`; once released it does `then`.
        pub fn new(point: FaultPoint, nth: usize, then: FaultAction) -> Self {
            Self {
                inner: Arc::new(PauseInner {
                    point,
                    nth,
                    hits: AtomicUsize::new(0),
                    reached: Semaphore::new(0),
                    release: Notify::new(),
                    then,
                }),
            }
        }

        /// Waits until the `nth` arrival is held.
        pub async fn reached(&self) {
            self.inner
                .reached
                .acquire()
                .await
                .expect("never closed")
                .forget();
        }

        /// Lets the held one go on.
        pub fn release(&self) {
            self.inner.release.notify_one();
        }
    }

    impl FaultHooks for PauseAt {
        fn at(&self, point: FaultPoint) -> BoxFuture<'_, FaultAction> {
            let i = &self.inner;
            if point != i.point || i.hits.fetch_add(1, Ordering::SeqCst) + 1 != i.nth {
                return futures::future::ready(FaultAction::Continue).boxed();
            }
            async move {
                tracing::warn!(?point, "fault hook: holding here until released");
                let released = i.release.notified();
                i.reached.add_permits(1);
                released.await;
                i.then
            }
            .boxed()
        }
    }

    /// A whole worker frozen, as by SIGSTOP or a paused VM: the `nth` arrival at `point`
    /// freezes it, and until [`Freeze::thaw`] every arrival at any point (its background lease
    /// renewals too) waits. Then all go on.
    #[derive(Clone)]
    pub struct Freeze {
        inner: Arc<FreezeInner>,
    }

    struct FreezeInner {
        point: FaultPoint,
        nth: usize,
        hits: AtomicUsize,
        /// `true` while frozen.
        frozen: tokio::sync::watch::Sender<bool>,
        /// A permit is added when the freeze begins.
        began: Semaphore,
    }

    impl Freeze {
        pub fn new(point: FaultPoint, nth: usize) -> Self {
            Self {
                inner: Arc::new(FreezeInner {
                    point,
                    nth,
                    hits: AtomicUsize::new(0),
                    frozen: tokio::sync::watch::Sender::new(false),
                    began: Semaphore::new(0),
                }),
            }
        }

        /// Waits until the worker is frozen.
        pub async fn frozen(&self) {
            self.inner
                .began
                .acquire()
                .await
                .expect("never closed")
                .forget();
        }

        /// Lets everything go on.
        pub fn thaw(&self) {
            self.inner.frozen.send_replace(false);
        }
    }

    impl FaultHooks for Freeze {
        fn at(&self, point: FaultPoint) -> BoxFuture<'_, FaultAction> {
            let i = &self.inner;
            if point == i.point && i.hits.fetch_add(1, Ordering::SeqCst) + 1 == i.nth {
                tracing::warn!(?point, "fault hook: the worker freezes here");
                i.frozen.send_replace(true);
                i.began.add_permits(1);
            }
            let mut rx = i.frozen.subscribe();
            async move {
                let _ = rx.wait_for(|frozen| !frozen).await;
                FaultAction::Continue
            }
            .boxed()
        }
    }

    /// Hooks from a closure: `f(point)` returns the future that decides.
    pub struct HookFn<F>(pub F);

    impl<F> FaultHooks for HookFn<F>
    where
        F: Fn(FaultPoint) -> BoxFuture<'static, FaultAction> + Send + Sync,
    {
        fn at(&self, point: FaultPoint) -> BoxFuture<'_, FaultAction> {
            (self.0)(point)
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn crash_at_fires_once_on_the_nth_arrival() {
        let f = Faults::new(CrashAt::new(FaultPoint::IngestAfterInsert, 2));
        assert!(f.at(FaultPoint::IngestAfterPlan).await.is_ok());
        assert!(f.at(FaultPoint::IngestAfterInsert).await.is_ok());
        assert_eq!(
            f.at(FaultPoint::IngestAfterInsert).await,
            Err(InjectedFault(FaultPoint::IngestAfterInsert))
        );
        assert!(f.at(FaultPoint::IngestAfterInsert).await.is_ok());
    }

    #[tokio::test]
    async fn pause_at_holds_until_released() {
        let pause = PauseAt::new(FaultPoint::ArchiveAfterBuild, 1, FaultAction::Continue);
        let f = Faults::new(pause.clone());
        let held = tokio::spawn(async move { f.at(FaultPoint::ArchiveAfterBuild).await });
        pause.reached().await;
        assert!(!held.is_finished(), "held while not released");
        pause.release();
        assert_eq!(held.await.unwrap(), Ok(()));
    }
}
