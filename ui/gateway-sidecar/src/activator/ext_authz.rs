//! The Envoy ext_authz gRPC service. Envoy calls it only on routes of views
//! without serving endpoints (warm routes disable the filter), so every
//! Check is a request for a cold view: browsers get the progress page at
//! once, other clients are held until the view is ready.

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HttpStatus, HttpStatusCode,
    OkHttpResponse,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, DeniedHttpResponseBuilder};
use tonic::{Request, Response, Status};
use views_types::{ApiError, ApiErrorCode};

use super::{Activator, CheckLabel, Held, RETRY_AFTER_SECONDS, page};
use crate::identity::PAYLOAD_HEADER;

pub struct ExtAuthz {
    activator: Activator,
}

impl ExtAuthz {
    pub fn new(activator: Activator) -> Self {
        Self { activator }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let config = self.activator.config();
        let view = page::view_of_host(&http.host, &config.gateway_hostname);
        let known = view
            .as_deref()
            .is_some_and(|v| self.activator.index().snapshot().views.contains_key(v));
        let (outcome, response) = match view.filter(|_| known) {
            None => (
                "unknown",
                denied_json(404, ApiErrorCode::NotFound, "no such view".into(), None),
            ),
            Some(view) => match self.refused(&view, &http.headers) {
                Some(refusal) => ("not_entitled", refusal),
                None => {
                    let wants_page = http.method == "GET"
                        && http
                            .headers
                            .get("accept")
                            .is_some_and(|accept| accept.contains("text/html"));
                    if wants_page && !self.activator.ready_now(&view) {
                        // The page follows the start itself; the start begins now.
                        drop(self.activator.activate(&view));
                        ("page", page_response(&view))
                    } else {
                        let held = self.activator.hold(&view, config.cold_start_budget()).await;
                        held_response(&view, held)
                    }
                }
            },
        };
        self.activator
            .metrics()
            .ext_authz_checks
            .get_or_create(&CheckLabel {
                outcome: outcome.into(),
            })
            .inc();
        Ok(Response::new(response))
    }
}

impl ExtAuthz {
    /// With sign-in on, whoever starts a view must be entitled, now, to every
    /// subset it reads: a removed entitlement stops the next start. (Envoy
    /// has verified the caller and checked the view's owner and shares.)
    fn refused(
        &self,
        view: &str,
        headers: &std::collections::HashMap<String, String>,
    ) -> Option<CheckResponse> {
        let config = self.activator.config();
        config.identity.oidc_issuer.as_ref()?;
        let identity = headers
            .get(PAYLOAD_HEADER)
            .ok_or(crate::identity::IdentityError::MissingClaim(
                config.identity.oidc_user_claim.clone(),
            ))
            .and_then(|payload| config.identity.identity_of(payload));
        let identity = match identity {
            Ok(identity) => identity,
            Err(error) => {
                return Some(denied_json(
                    401,
                    ApiErrorCode::Unauthenticated,
                    error.to_string(),
                    None,
                ));
            }
        };
        let snapshot = self.activator.index().snapshot();
        let spec = &snapshot.views.get(view)?.spec;
        let refused = snapshot
            .entitlements
            .check(&identity, &spec.subsets)
            .err()?;
        Some(denied_json(
            403,
            ApiErrorCode::NotEntitled,
            format!("view {view} cannot start for you: {refused}"),
            Some(refused.details()),
        ))
    }
}

fn held_response(view: &str, held: Held) -> (&'static str, CheckResponse) {
    match held {
        Held::Ready => {
            let mut response = CheckResponse::new();
            response.set_status(Status::ok(""));
            response.set_http_response(OkHttpResponse::default());
            ("ready", response)
        }
        Held::Failed(failure) => (
            "failed",
            denied_json(
                502,
                ApiErrorCode::ViewFailed,
                format!(
                    "view {view} could not start: {} ({})",
                    failure.message, failure.reason
                ),
                Some(serde_json::json!({"reason": failure.reason, "job": failure.job})),
            ),
        ),
        Held::Gone => (
            "gone",
            denied_json(
                404,
                ApiErrorCode::NotFound,
                format!("view {view} was deleted"),
                None,
            ),
        ),
        Held::Unavailable(message) => (
            "unavailable",
            denied_json(
                503,
                ApiErrorCode::KubernetesUnavailable,
                format!("view {view} cannot be started now: {message}"),
                Some(serde_json::json!({"retryAfterSeconds": RETRY_AFTER_SECONDS})),
            ),
        ),
        Held::StillStarting(stage) => (
            "budget",
            denied_json(
                503,
                ApiErrorCode::ViewStarting,
                format!(
                    "view {view} is still starting ({}); try again shortly",
                    stage.as_str()
                ),
                Some(
                    serde_json::json!({"retryAfterSeconds": RETRY_AFTER_SECONDS, "stage": stage.as_str()}),
                ),
            ),
        ),
    }
}

fn denied_json(
    status: u16,
    code: ApiErrorCode,
    message: String,
    details: Option<serde_json::Value>,
) -> CheckResponse {
    let body = ApiError {
        error: code,
        message,
        details: details
            .and_then(|d| d.as_object().cloned())
            .unwrap_or_default(),
    };
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .add_header("content-type", "application/json", None, false)
        .add_header("cache-control", "no-store", None, false)
        .set_body(serde_json::to_string(&body).expect("an ApiError serializes"));
    if status == 503 {
        denied.add_header("retry-after", RETRY_AFTER_SECONDS.to_string(), None, false);
    }
    denied_response(status, denied.build())
}

fn page_response(view: &str) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .add_header("content-type", "text/html; charset=utf-8", None, false)
        .add_header("cache-control", "no-store", None, false)
        .add_header("retry-after", "1", None, false)
        .set_body(page::html(view));
    denied_response(503, denied.build())
}

fn denied_response(status: u16, mut denied: DeniedHttpResponse) -> CheckResponse {
    let code =
        HttpStatusCode::try_from(i32::from(status)).unwrap_or(HttpStatusCode::ServiceUnavailable);
    denied.status = Some(HttpStatus { code: code.into() });
    let mut response = CheckResponse::new();
    response.set_status(Status::permission_denied(""));
    response.set_http_response(denied);
    response
}
