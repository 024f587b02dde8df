//! logfleet: a RabbitMQ → MongoDB → S3 worker fleet for per-episode logs.
//!
//! Layout of this crate:
//! - [`domain`]: parse-only newtypes (`EpisodeId`, `LogLevel`, `MessageId`).
//! - [`message`]: the producer contract: decoding and validating a message body.
//! - [`model`]: the stored documents LogEntry, LogChunk, LogMetadata and the size measure.
//! - [`ledger`]: `SequenceLedger`, the pure numbering of a batch against an episode's ledger.
//! - [`chunk`]: the JSONL.gz chunk codec and the S3 key scheme.
//! - Adapters, one per service: [`amqp`], [`mongo`], [`s3`].
//! - Workers: [`ingest`] (RabbitMQ → MongoDB) and [`archive`] (MongoDB → S3).
//! - Read path: [`query`] (both tiers, pages, export, follow) and [`chunk_cache`].
//! - [`config`] and [`telemetry`]: layered settings and tracing set-up.
//! - [`metrics`] and [`health`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz`
//!   endpoints of the workers.
//!
//! Both workers expose `run(settings, shutdown)`: the binaries are thin wrappers, and tests stop
//! a worker deterministically by resolving the `shutdown` future.

pub mod amqp;
pub mod archive;
pub mod chunk;
pub mod chunk_cache;
pub mod config;
pub mod domain;
pub mod health;
pub mod ingest;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod model;
pub mod mongo;
pub mod query;
pub mod s3;
pub mod telemetry;

/// Runs a worker's `main` future until it ends by itself, or until `shutdown` resolves; then
/// cancels `cancel` (the worker stops taking work) and gives `main` at most `drain` to finish
/// what it holds. Whatever is unfinished after the deadline is dropped: unacked messages return
/// to their queues, held locks expire with their leases.
pub(crate) async fn run_until_drained<E>(
    main: impl std::future::Future<Output = Result<(), E>>,
    shutdown: impl std::future::Future<Output = ()>,
    cancel: &tokio_util::sync::CancellationToken,
    drain: std::time::Duration,
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
