//! Retrying with backoff: one [`Backoff`] for every reconnect and transient failure, and
//! [`retry`], the loop every worker uses around an operation that may fail for a while.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter, for reconnects and transient failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay, and the one after [`Backoff::reset`].
    initial: Duration,
    /// The longest delay.
    max: Duration,
    /// The next delay before jitter.
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay: the current one within ±12.5% (so retrying workers spread out), then
    /// doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        let d = self.current.mul_f64(jitter);
        self.current = (self.current * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Waits the next delay, or until `cancel` fires: then false.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// What [`retry`] does with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worth another try after a backoff (an outage, a timeout).
    Retry,
    /// Retrying cannot help: return the error.
    GiveUp,
}

/// Runs `op` until it succeeds, backing off between tries; logs each failure as `what`.
///
/// Returns `Ok(None)` when `cancel` fires first, `Err` when `verdict` says an error is final.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    mut backoff: Backoff,
    cancel: &CancellationToken,
    verdict: impl Fn(&E) -> Verdict,
    mut op: F,
) -> Result<Option<T>, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        match op().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if verdict(&e) == Verdict::GiveUp => return Err(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// An error a call may end with when it takes longer than allowed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{what} took longer than {secs:.1} s")]
pub struct TimedOut {
    /// The call that was abandoned.
    pub what: &'static str,
    /// Its time limit, in seconds.
    pub secs: f64,
}

/// Runs `fut` for at most `limit`; after that it is dropped (cancelled) and [`TimedOut`] is
/// returned. Every call to a remote service goes through a limit like this one, so a worker
/// never waits forever on a server that stopped answering.
pub async fn within<T>(
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, TimedOut> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| TimedOut {
            what,
            secs: limit.as_secs_f64(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let ds: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(ds[0] <= Duration::from_millis(113));
        assert!(ds[4] >= Duration::from_millis(349) && ds[4] <= Duration::from_millis(450));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(113));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_retries_until_success_and_gives_up_on_final_errors() {
        let cancel = CancellationToken::new();
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let mut tries = 0;
        let r: Result<Option<u32>, String> = retry(
            "op",
            backoff.clone(),
            &cancel,
            |_| Verdict::Retry,
            || {
                tries += 1;
                let t = tries;
                async move {
                    if t < 3 {
                        Err(format!("try {t}"))
                    } else {
                        Ok(t)
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(Some(3)));
        let r: Result<Option<u32>, String> = retry(
            "op",
            backoff.clone(),
            &cancel,
            |e: &String| {
                if e == "fatal" {
                    Verdict::GiveUp
                } else {
                    Verdict::Retry
                }
            },
            || async { Err("fatal".to_owned()) },
        )
        .await;
        assert_eq!(r, Err("fatal".to_owned()));
        cancel.cancel();
        let r: Result<Option<u32>, String> = retry(
            "op",
            backoff,
            &cancel,
            |_| Verdict::Retry,
            || async { Err("down".to_owned()) },
        )
        .await;
        assert_eq!(r, Ok(None), "cancelled: no value, no error");
    }

    #[tokio::test(start_paused = true)]
    async fn within_cancels_a_call_that_takes_too_long() {
        let r = within("slow call", Duration::from_secs(1), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "slow call took longer than 1.0 s"
        );
        assert_eq!(
            within("quick call", Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
    }
}
