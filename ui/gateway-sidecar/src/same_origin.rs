//! Cross-site request forgery: a browser's write to the sidecar (the API's
//! `POST`, `PUT`, `DELETE`, and the in-view extend) must come from a page of
//! the very host it is sent to.
//!
//! Session cookies are `SameSite=Lax`, which keeps them off requests from
//! other *sites*; but every view host is the same site as the gateway's
//! (`sales.views.example.com` and `views.example.com`), so a page on one
//! host could otherwise post, with the browser's session, to another. A
//! browser says where a request comes from: `Sec-Fetch-Site` (all current
//! browsers) must be `same-origin`, and failing that `Origin` must name the
//! request's own host. Requests with neither are not a browser's (programs
//! send bearer tokens, which no other page can make a browser send) and
//! pass. Refusals are `403 forbidden` in the API's format.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use views_types::ApiErrorCode;

/// Refuse a browser's write that another page (another host) sent.
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if is_safe(request.method()) || same_origin(request.headers()) {
        return next.run(request).await;
    }
    crate::api::error(
        StatusCode::FORBIDDEN,
        ApiErrorCode::Forbidden,
        "a page of another site or host may not send this request (cross-site request refused)",
    )
    .into_response()
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser says the request comes from a page of its own host
/// (or it is no browser's at all).
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .zip(host)
        .is_some_and(|((_, authority), host)| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[gtest]
    fn a_page_of_the_same_host_may_write() {
        expect_that!(
            same_origin(&headers(&[("sec-fetch-site", "same-origin")])),
            eq(true)
        );
        expect_that!(
            same_origin(&headers(&[
                ("origin", "http://sales.localhost:8080"),
                ("host", "sales.localhost:8080"),
            ])),
            eq(true)
        );
    }

    #[gtest]
    fn another_host_of_the_same_site_may_not() {
        expect_that!(
            same_origin(&headers(&[("sec-fetch-site", "same-site")])),
            eq(false)
        );
        expect_that!(
            same_origin(&headers(&[("sec-fetch-site", "cross-site")])),
            eq(false)
        );
        expect_that!(
            same_origin(&headers(&[
                ("origin", "http://evil.localhost:8080"),
                ("host", "sales.localhost:8080"),
            ])),
            eq(false)
        );
        expect_that!(
            same_origin(&headers(&[("origin", "null"), ("host", "localhost")])),
            eq(false)
        );
        // Origin checked even when it looks the same but the Fetch site says no.
        expect_that!(
            same_origin(&headers(&[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://sales.localhost:8080"),
                ("host", "sales.localhost:8080"),
            ])),
            eq(false)
        );
    }

    #[gtest]
    fn programs_without_browser_headers_pass() {
        expect_that!(same_origin(&headers(&[("host", "localhost")])), eq(true));
        expect_that!(is_safe(&Method::GET), eq(true));
        expect_that!(is_safe(&Method::POST), eq(false));
    }
}
