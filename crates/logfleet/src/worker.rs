//! The skeleton both workers share: start-up against MongoDB, a RabbitMQ session that is
//! re-established whenever it ends, and shutdown with a drain deadline.
//!
//! A worker's `run(settings, shutdown)` is [`run_until_drained`] around a main future built
//! from [`ensure_schema`] and [`reconnecting`]; the binaries pass [`shutdown_signal`] as
//! `shutdown`, tests pass a future they resolve themselves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::amqp;
use crate::config::AmqpSettings;
use crate::health::Readiness;
use crate::mongo::{MongoError, MongoStore};
use crate::retry::Backoff;

/// Creates the schema's indexes, retrying while MongoDB is unreachable. Returns `Ok(false)`
/// when `cancel` fired first, and an error that retrying cannot mend (an index conflict).
pub(crate) async fn ensure_schema(
    store: &MongoStore,
    amqp: &AmqpSettings,
    cancel: &CancellationToken,
) -> Result<bool, MongoError> {
    let backoff = Backoff::new(amqp.reconnect_initial(), amqp.reconnect_max());
    let verdict = |e: &MongoError| {
        if e.is_fatal() {
            tracing::error!(error = %e, "cannot start: an index of the schema conflicts with an existing one");
            crate::retry::Verdict::GiveUp
        } else {
            crate::retry::Verdict::Retry
        }
    };
    let done = crate::retry::retry(
        "MongoDB start-up (indexes)",
        backoff,
        cancel,
        verdict,
        || store.ensure_indexes(),
    )
    .await?;
    Ok(done.is_some())
}

/// Runs `session` on a RabbitMQ connection named `instance`, again on a new connection
/// whenever it ends with an error (after a backoff), until it ends cleanly, an error is
/// `fatal`, or `cancel` fires. `readiness` says whether a connection is up.
pub(crate) async fn reconnecting<E, F, Fut>(
    amqp_settings: &AmqpSettings,
    instance: &str,
    readiness: &Readiness,
    cancel: &CancellationToken,
    fatal: impl Fn(&E) -> bool,
    mut session: F,
) -> Result<(), E>
where
    E: std::fmt::Display,
    F: FnMut(Arc<Connection>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut backoff = Backoff::new(
        amqp_settings.reconnect_initial(),
        amqp_settings.reconnect_max(),
    );
    loop {
        let Some(conn) = amqp::connect_with_retry(amqp_settings, instance, cancel).await else {
            return Ok(());
        };
        let conn = Arc::new(conn);
        tracing::info!(instance, "connected to RabbitMQ");
        readiness.set_amqp_connected(true);
        let result = session(conn.clone()).await;
        readiness.set_amqp_connected(false);
        let _ = conn.close(200, "bye".into()).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "RabbitMQ session ended; reconnecting");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Runs a worker's `main` future until it ends by itself, or until `shutdown` resolves; then
/// cancels `cancel` (the worker stops taking work) and gives `main` at most `drain` to finish
/// what it holds. Whatever is unfinished after the deadline is dropped: unacked messages return
/// to their queues, held locks expire with their leases.
pub(crate) async fn run_until_drained<E>(
    main: impl Future<Output = Result<(), E>>,
    shutdown: impl Future<Output = ()>,
    cancel: &CancellationToken,
    drain: Duration,
    worker: &'static str,
) -> Result<(), E> {
    tokio::pin!(main);
    tokio::select! {
        r = &mut main => return r,
        _ = shutdown => {
            tracing::info!(worker, drain_deadline_secs = drain.as_secs(), "shutdown requested: stopped taking work, draining");
            cancel.cancel();
        }
    }
    match tokio::time::timeout(drain, main).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                worker,
                "drain deadline passed; unfinished work is left to the next worker"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C: the shutdown future the worker binaries pass to `run`.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
