//! The episode viewer: plain HTML, CSS and ES modules from `crates/query-api/viewer/`, compiled
//! into the binary (`include_bytes!`), so the page needs nothing but query-api: no CDN, no build
//! step, works offline.
//!
//! - `GET /`: `index.html`; `GET /assets/{file}`: a script, the stylesheet or the icon.
//! - Never behind auth: the page holds no data. Its API calls carry the bearer token the reader
//!   types in (kept in `sessionStorage`).
//! - `ETag` (a hash of the content) with `Cache-Control: no-cache`: a browser revalidates and
//!   gets `304 Not Modified` until the binary changes.
//! - A strict Content-Security-Policy: only this origin's scripts, styles and API.
//!
//! See `docs/viewer.md` for the page itself.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
pub struct Asset {
    /// Its name under `/assets/` (`index.html` is served at `/`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ctype:expr) => {
        Asset {
            name: $name,
            content_type: $ctype,
            body: include_bytes!(concat!("../viewer/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the viewer.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("util.js", JS),
    asset!("episodes.js", JS),
    asset!("episode.js", JS),
    asset!("loglist.js", JS),
];

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The viewer's routes (no state, no auth).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { serve("index.html", &headers) }),
        )
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                if file == "index.html" {
                    return crate::error(StatusCode::NOT_FOUND, "not_found", "no such asset");
                }
                serve(&file, &headers)
            }),
        )
}

/// FNV-1a 64 of every asset, computed once: the `ETag`s.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let h = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("\"{h:016x}\"")
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::error(StatusCode::NOT_FOUND, "not_found", "no such asset");
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, v);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if name == "index.html" {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    (out, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        let resp = router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_type_and_revalidates() {
        let (status, headers, body) = get("/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        let html = String::from_utf8(body).unwrap();
        assert!(html.contains(r#"<script type="module" src="assets/app.js">"#));
        for a in ASSETS.iter().filter(|a| a.name != "index.html") {
            let (status, headers, body) = get(&format!("/assets/{}", a.name), None).await;
            assert_eq!(status, StatusCode::OK, "{}", a.name);
            assert_eq!(headers[header::CONTENT_TYPE], a.content_type, "{}", a.name);
            assert_eq!(body, a.body, "{}", a.name);
            let etag = headers[header::ETAG].to_str().unwrap().to_owned();
            let (status, _, body) = get(&format!("/assets/{}", a.name), Some(&etag)).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{}", a.name);
            assert!(body.is_empty());
        }
        for missing in [
            "/assets/nope.js",
            "/assets/index.html",
            "/assets/..%2Fsrc%2Flib.rs",
        ] {
            assert_eq!(
                get(missing, None).await.0,
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
    }

    /// Every module the page imports is embedded, and nothing comes from another origin.
    #[test]
    fn assets_are_self_contained_and_small() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(
            total < 200_000,
            "the viewer's files add up to {total} bytes"
        );
        for a in ASSETS {
            // The SVG namespace is a name, not a fetch.
            let text = std::str::from_utf8(a.body)
                .unwrap()
                .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{} refers to another origin",
                a.name
            );
            for (i, _) in text.match_indices("from './") {
                let rest = &text[i + 8..];
                let name = &rest[..rest.find('\'').unwrap()];
                assert!(
                    ASSETS.iter().any(|b| b.name == name),
                    "{} imports {name}, which is not embedded",
                    a.name
                );
            }
        }
    }
}
