//! The hub: the home page people see at the gateway's own hostname (`/`),
//! listing their views with live status, and its "New view" form (built
//! from what the person may read, through the lake browser). It owns the
//! page's files (compiled in: no external assets) and their security headers; everything the page
//! shows comes from the views API (`/_api`), called with the browser's
//! session as any other client would, through a client built on the API's
//! OpenAPI document.
//!
//! Envoy routes the gateway host's `/` here after its own sign-in (a browser
//! without a session is sent to the provider first), so the page is never
//! served to a stranger when sign-in is on; its data needs an identity anyway.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");
const RUNS_JS: &str = include_str!("runs.js");
const CREATE_JS: &str = include_str!("create.js");
const CREATE_CSS: &str = include_str!("create.css");

/// Only our own files and our own API; no framing, no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/` and `/_hub/*`, merged into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/_hub/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/_hub/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/_hub/runs.js",
            get(|| async { asset("text/javascript; charset=utf-8", RUNS_JS) }),
        )
        .route(
            "/_hub/create.js",
            get(|| async { asset("text/javascript; charset=utf-8", CREATE_JS) }),
        )
        .route(
            "/_hub/create.css",
            get(|| async { asset("text/css; charset=utf-8", CREATE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Small, and changed with every release: always revalidated.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
