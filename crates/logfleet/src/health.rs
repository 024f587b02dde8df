//! The workers' HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process is alive) and
//! `/readyz` (the services the worker needs answer: RabbitMQ, MongoDB, and S3 for the
//! archive-worker). `/readyz` answers 503 with the failing checks named while any is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::mongo::MongoStore;
use crate::object_store::S3ObjectStore;

/// Longest a readiness probe waits for one service.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` checks.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Set while the worker holds a working RabbitMQ connection.
    pub amqp_connected: AtomicBool,
    /// Pinged on every probe.
    pub mongo: Option<MongoStore>,
    /// Its bucket is checked on every probe (archive-worker only); down until the worker has
    /// connected once.
    pub s3: Option<std::sync::OnceLock<S3ObjectStore>>,
}

impl Readiness {
    pub fn set_amqp_connected(&self, up: bool) {
        self.amqp_connected.store(up, Ordering::Relaxed);
    }

    /// Each check's name and whether it passed.
    pub async fn check(&self) -> Vec<(&'static str, bool)> {
        let mut checks = vec![("rabbitmq", self.amqp_connected.load(Ordering::Relaxed))];
        if let Some(m) = &self.mongo {
            let ok = matches!(
                tokio::time::timeout(CHECK_TIMEOUT, m.ping()).await,
                Ok(Ok(()))
            );
            checks.push(("mongodb", ok));
        }
        if let Some(cell) = &self.s3 {
            let ok = match cell.get() {
                Some(s) => matches!(
                    tokio::time::timeout(CHECK_TIMEOUT, s.ping()).await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            checks.push(("s3", ok));
        }
        checks
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Arc<Readiness>,
}

/// The router of the worker endpoints.
pub fn router(registry: Registry, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AppState {
            registry,
            readiness,
        })
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&s.registry),
    )
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let checks = s.readiness.check().await;
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body = serde_json::json!({
        "ready": ready,
        "checks": checks.iter().map(|(n, ok)| (n.to_string(), serde_json::json!(if *ok { "ok" } else { "down" }))).collect::<serde_json::Map<_, _>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Where the endpoints listen: a listener the caller bound (tests bind port 0), or an address.
#[derive(Debug, Default)]
pub enum HttpListen {
    /// No HTTP endpoints.
    #[default]
    Disabled,
    Address(String),
    Listener(std::net::TcpListener),
}

impl HttpListen {
    /// From a settings value: empty disables.
    pub fn from_setting(addr: &str) -> Self {
        if addr.is_empty() {
            Self::Disabled
        } else {
            Self::Address(addr.to_owned())
        }
    }
}

/// What a worker does at start-up: serves its endpoints at `listen`, or else at the address its
/// settings name (empty: none), until the returned guard is dropped.
pub async fn start(
    listen: Option<HttpListen>,
    setting: &str,
    registry: Registry,
    readiness: Arc<Readiness>,
) -> std::io::Result<tokio_util::sync::DropGuard> {
    let stop = CancellationToken::new();
    let listen = listen.unwrap_or_else(|| HttpListen::from_setting(setting));
    spawn(listen, registry, readiness, stop.clone()).await?;
    Ok(stop.drop_guard())
}

/// Binds and serves the endpoints until `stop` fires. Returns the bound address, or None when
/// disabled.
pub async fn spawn(
    listen: HttpListen,
    registry: Registry,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) -> std::io::Result<Option<std::net::SocketAddr>> {
    let listener = match listen {
        HttpListen::Disabled => return Ok(None),
        HttpListen::Address(a) => tokio::net::TcpListener::bind(&a).await?,
        HttpListen::Listener(l) => {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)?
        }
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let app = router(registry, readiness);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "health server stopped");
        }
    });
    Ok(Some(addr))
}
