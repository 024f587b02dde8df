//! query-api: the HTTP face of [`logfleet::query`], with axum.
//!
//! Layout:
//! - [`run`]: serves on a bound listener until `shutdown` resolves (tests bind port 0);
//!   [`serve`] does the same over a read path the caller connected (tests add fault hooks).
//! - [`router`]: the routes, over a shared [`QueryService`].
//! - `params`: query-string parsing into the library's validated types (400 on anything wrong).
//! - [`openapi`]: the OpenAPI 3.0 document served at `/openapi.json`.
//! - [`viewer`]: the episode viewer (HTML, CSS, ES modules compiled into the binary) at `/`.
//!
//! Routes (JSON unless said otherwise; every `/v1` route needs `Authorization: Bearer TOKEN`
//! when `query.bearer_token` is set):
//! - `GET /healthz`, `GET /readyz` (MongoDB answers), `GET /openapi.json`, `GET /metrics`
//!   (Prometheus: requests by route template and status, latency by route)
//! - `GET /` and `GET /assets/{file}`: the viewer, never behind auth (its API calls are)
//! - `GET /v1/episodes?prefix&sort&cursor&limit`
//! - `GET /v1/episodes/{episodeId}/stats`, `GET /v1/episodes/{episodeId}/chunks?cursor&limit`
//! - `GET /v1/episodes/{episodeId}/logs?order&cursor&limit&seq&time&level&contains`; with
//!   `follow=true` (and `backlog=N`), an NDJSON stream of new logs as they are written
//! - `GET /v1/episodes/{episodeId}/export?format=ndjson|jsonl.gz&order&seq&time&level&contains`
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with the matching status; internal
//! details are logged, never returned.

pub mod openapi;
mod params;
pub mod viewer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use logfleet::config::Settings;
use logfleet::domain::EpisodeId;
use logfleet::query::{
    EpisodeListQuery, EpisodeSort, ExportFormat, LogQuery, QueryError, QueryService,
    parse_episode_prefix,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use params::Params;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("query-api: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by every request.
pub struct AppState {
    /// The read path.
    pub svc: Arc<QueryService>,
    /// Required bearer token, when auth is on.
    pub token: Option<String>,
    /// Cancelled at shutdown: ends follow streams (cleanly: they have no natural end, and the
    /// client reconnects from its last sequence number) so the server can drain.
    pub shutdown: CancellationToken,
    /// Cancelled `query.drain_secs` after shutdown: cuts the exports still running then, as a
    /// broken body, so a client never takes a partial export for a whole one.
    pub cut_exports: CancellationToken,
    /// Served on `/metrics`.
    pub metrics: logfleet::metrics::QueryMetrics,
}

/// Serves the API on `listener` until `shutdown` resolves, then drains open requests.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    serve(QueryService::connect(&settings).await?, listener, shutdown).await
}

/// [`run`] over a read path already connected (tests give one with fault hooks). At
/// `shutdown` the listener stops, follow streams end cleanly, exports in flight get
/// `query.drain_secs` to finish (then are cut), and this returns once every response is done.
pub async fn serve(
    svc: QueryService,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let settings = svc.settings().clone();
    let svc = Arc::new(svc);
    let cancel = CancellationToken::new();
    let cut = CancellationToken::new();
    let state = Arc::new(AppState {
        svc,
        token: Some(settings.bearer_token.clone()).filter(|t| !t.is_empty()),
        shutdown: cancel.clone(),
        cut_exports: cut.clone(),
        metrics: Default::default(),
    });
    let app = router(state);
    let drain = Duration::from_secs(settings.drain_secs);
    tracing::info!(listen = %listener.local_addr()?, "query-api serving");
    // Exports get `drain` to finish once the listener stops; the server returns when the last
    // response is done, so the timer is dropped with it when every export ended in time.
    let cut_timer = tokio::spawn({
        let cancel = cancel.clone();
        let cut = cut.clone();
        async move {
            cancel.cancelled().await;
            tokio::time::sleep(drain).await;
            cut.cancel();
        }
    })
    .abort_handle();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                drain_secs = drain.as_secs(),
                "query-api stopping: follow streams end, exports get the drain time"
            );
            cancel.cancel();
        })
        .await;
    cut_timer.abort();
    served?;
    Ok(())
}

/// Every route over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/episodes", get(episodes))
        .route("/v1/episodes/{episode}/stats", get(stats))
        .route("/v1/episodes/{episode}/chunks", get(chunks))
        .route("/v1/episodes/{episode}/logs", get(logs))
        .route("/v1/episodes/{episode}/export", get(export))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .merge(v1)
        .merge(viewer::router())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is supported",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every request by its route template (bounded: never the raw path) and status.
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let timer = st
        .metrics
        .request_seconds
        .with_label_values(&[&route])
        .start_timer();
    let resp = next.run(req).await;
    timer.observe_duration();
    st.metrics
        .requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    st.metrics.observe_cache(&st.svc.cache().stats());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        logfleet::metrics::render(&st.metrics.registry),
    )
        .into_response()
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// How a library error is shown: the caller's mistakes in full, anything else as a bare status.
fn query_error(e: QueryError) -> Response {
    match e {
        QueryError::BadRequest(m) => error(StatusCode::BAD_REQUEST, "bad_request", m),
        QueryError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
        // Removed by the retention policy: the message names the range, when and why.
        QueryError::Expired(m) => error(StatusCode::GONE, "expired", m),
        QueryError::Mongo(_) | QueryError::Store(_) => {
            tracing::error!(error = %e, "storage unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is unavailable; retry later",
            )
        }
        QueryError::Chunk(_) | QueryError::Inconsistent(_) | QueryError::Injected(_) => {
            tracing::error!(error = %e, "read failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

type Res = Result<Response, Response>;

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required (Authorization: Bearer TOKEN)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.svc.ready().await {
        Ok(()) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "MongoDB does not answer",
            )
        }
    }
}

#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn episode_id(raw: &str) -> Result<EpisodeId, Response> {
    EpisodeId::parse(raw).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
}

/// The `limit` parameter as a page size (the default when absent, 400 outside 1..=max): one
/// rule for every paged route.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn page_limit(st: &AppState, p: &Params) -> Result<usize, Response> {
    st.svc
        .page_size(p.usize("limit").map_err(query_error)?)
        .map_err(query_error)
}

/// Refuses an unknown episode, or logs the retention policy removed, with a status before a
/// stream (follow, export) starts: once its body has started, the status can no longer say so.
async fn ensure_streamable(svc: &QueryService, query: &LogQuery) -> Result<(), Response> {
    svc.stats(&query.episode).await.map_err(query_error)?;
    svc.ensure_not_expired(query).await.map_err(query_error)
}

async fn episodes(State(st): State<Arc<AppState>>, Query(q): Query<Vec<(String, String)>>) -> Res {
    let p = Params::new(q, &["cursor", "limit", "prefix", "sort"]).map_err(query_error)?;
    let limit = page_limit(&st, &p)?;
    let query = EpisodeListQuery {
        prefix: p
            .one("prefix")
            .map_err(query_error)?
            .filter(|v| !v.is_empty())
            .map(parse_episode_prefix)
            .transpose()
            .map_err(query_error)?,
        sort: p
            .one("sort")
            .map_err(query_error)?
            .map(EpisodeSort::parse)
            .transpose()
            .map_err(query_error)?
            .unwrap_or_default(),
        cursor: p.one("cursor").map_err(query_error)?.map(str::to_owned),
        limit,
    };
    let page = st.svc.list_episodes(&query).await.map_err(query_error)?;
    Ok(axum::Json(page).into_response())
}

async fn stats(State(st): State<Arc<AppState>>, Path(ep): Path<String>) -> Res {
    let ep = episode_id(&ep)?;
    let s = st.svc.stats(&ep).await.map_err(query_error)?;
    Ok(axum::Json(s).into_response())
}

async fn chunks(
    State(st): State<Arc<AppState>>,
    Path(ep): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Res {
    let ep = episode_id(&ep)?;
    let p = Params::new(q, &["cursor", "limit"]).map_err(query_error)?;
    let cursor = p
        .i64("cursor")
        .map_err(query_error)?
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX));
    let limit = page_limit(&st, &p)?;
    let page = st
        .svc
        .chunks(&ep, cursor, limit)
        .await
        .map_err(query_error)?;
    Ok(axum::Json(page).into_response())
}

const NDJSON: &str = "application/x-ndjson";

async fn logs(
    State(st): State<Arc<AppState>>,
    Path(ep): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Res {
    let ep = episode_id(&ep)?;
    let p = Params::new(
        q,
        &[
            "order", "cursor", "limit", "seq", "time", "level", "contains", "follow", "backlog",
        ],
    )
    .map_err(query_error)?;
    let limit = page_limit(&st, &p)?;
    let query = p.log_query(ep, limit).map_err(query_error)?;
    let follow = p.bool("follow").map_err(query_error)?.unwrap_or(false);
    if !follow {
        if p.one("backlog").map_err(query_error)?.is_some() {
            return Err(query_error(QueryError::BadRequest(
                "backlog applies to follow=true only".into(),
            )));
        }
        let page = st.svc.read_page(&query).await.map_err(query_error)?;
        return Ok(axum::Json(page).into_response());
    }
    let backlog = p.usize("backlog").map_err(query_error)?.unwrap_or(0);
    if backlog > st.svc.settings().max_page_size {
        return Err(query_error(QueryError::BadRequest(format!(
            "backlog {backlog} is over {}",
            st.svc.settings().max_page_size
        ))));
    }
    ensure_streamable(&st.svc, &query).await?;
    let (tx, rx) = mpsc::channel::<Vec<logfleet::query::LogRecord>>(4);
    let svc = st.svc.clone();
    let cancel = st.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = svc.follow(&query, backlog, &tx) => {
                if let Err(e) = r {
                    tracing::warn!(episode = %query.episode, error = %e, "follow ended with an error");
                }
            }
            _ = cancel.cancelled() => {}
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let logs = rx.recv().await?;
        let mut buf = Vec::with_capacity(logs.len() * 256);
        for r in &logs {
            if let Err(e) = serde_json::to_writer(&mut buf, r) {
                return Some((Err(std::io::Error::other(e)), rx));
            }
            buf.push(b'\n');
        }
        Some((Ok::<_, std::io::Error>(buf), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn export(
    State(st): State<Arc<AppState>>,
    Path(ep): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Res {
    let ep = episode_id(&ep)?;
    let p = Params::new(
        q,
        &[
            "format", "order", "seq", "time", "level", "contains", "cursor",
        ],
    )
    .map_err(query_error)?;
    let format = match p.one("format").map_err(query_error)? {
        Some(f) => ExportFormat::parse(f).map_err(query_error)?,
        None => ExportFormat::Ndjson,
    };
    let query = p
        .log_query(ep.clone(), logfleet::query::EXPORT_PAGE)
        .map_err(query_error)?;
    ensure_streamable(&st.svc, &query).await?;
    let (tx, rx) = mpsc::channel(4);
    let svc = st.svc.clone();
    // Not ended by shutdown itself: an export in flight then has `query.drain_secs` to finish.
    let cut = st.cut_exports.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = svc.export(&query, format, &tx) => {
                match r {
                    Ok(n) => tracing::info!(episode = %query.episode, logs = n, "export done"),
                    Err(e) => tracing::warn!(episode = %query.episode, error = %e, "export failed"),
                }
            }
            _ = cut.cancelled() => {
                tracing::warn!(episode = %query.episode, "export cut: the server stopped and the drain time ran out");
                let _ = tx.send(Err(std::io::Error::other("server shutting down"))).await;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map(|piece| piece.bytes), rx))
    });
    let mut headers = HeaderMap::new();
    let (ctype, ext) = match format {
        ExportFormat::Ndjson => (NDJSON, "ndjson"),
        ExportFormat::JsonlGz => ("application/gzip", "jsonl.gz"),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ep}.{ext}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((headers, Body::from_stream(stream)).into_response())
}
