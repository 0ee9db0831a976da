//! The HTTP side of the sidecar: the views API under `/_api/` (Envoy routes
//! the gateway hostname's `/_api/` here) and, on a separate listener never
//! routed by Envoy, the health, readiness, metrics and debug endpoints.
//!
//! Every error is JSON `{error, message}` (the `ApiError` type of
//! `ui/types`) with a fitting status; bad input changes nothing.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use views_types::{
    ApiError, ApiErrorCode, InvalidView, Me, Shares, View, ViewEndpoint, ViewList, ViewName,
    ViewPhase, ViewRequest, ViewStatus,
};

use crate::activator::{Activator, RETRY_AFTER_SECONDS, page};
use crate::auth::{Auth, Caller};
use crate::config::Config;
use crate::entitlements::{Entitlements, Principal, Refused};
use crate::index::{Index, ViewState, Views};
use crate::kubernetes::health::ApiServer;
use crate::kubernetes::{WriteError, Writer};
use crate::view::{self, Invalid};
use crate::workload;
use crate::xds::EnvoysWatch;

/// Largest accepted request body: a view spec is a few kilobytes at most.
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub method: String,
    pub status: u16,
}

/// The API's metrics, and the view counts it reads from the index on each scrape.
#[derive(Default)]
pub struct Metrics {
    views: Gauge,
    views_serving: Gauge,
    requests: Family<ApiLabel, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("views", "Views in the index", self.views.clone());
        registry.register(
            "views_serving",
            "Views with at least one serving endpoint",
            self.views_serving.clone(),
        );
        registry.sub_registry_with_prefix("api").register(
            "requests",
            "/_api requests, by method and status",
            self.requests.clone(),
        );
    }
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub index: Index,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    /// Every module's metrics, for `/metrics`.
    pub registry: Arc<Registry>,
    pub envoys: EnvoysWatch,
    pub activator: Activator,
    pub drain: crate::drain::DrainWatch,
    pub auth: Auth,
    /// The cluster's ServiceAccount token keys, for Envoy (when accepted).
    pub service_account_keys: Option<crate::kubernetes::service_accounts::Keys>,
    /// The lake browser (`/_api/lake…`).
    pub lake: Arc<crate::lake::Lake>,
}

/// `/_api/…`, served on `HTTP_LISTEN` (localhost; reached through Envoy).
/// `/_api/readyz` lets Envoy's readiness probe check the whole path.
pub fn router(state: AppState) -> Router {
    let views = Router::new()
        .route("/_api/views", get(list).post(create))
        .route("/_api/views/{name}", get(show).delete(remove))
        .route("/_api/views/{name}/shares", axum::routing::put(share))
        .route("/_api/views/{name}/stop", axum::routing::post(stop))
        .route("/_api/me", get(me))
        .route("/_api/openapi.json", get(openapi))
        .merge(crate::lake::router(state.lake.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .merge(views)
        .merge(crate::hub::router())
        .merge(crate::runs::router(state.clone()))
        .route("/_api/readyz", get(readyz))
        .route(SERVICE_ACCOUNT_KEYS_PATH, get(service_account_keys))
        .route(page::STATUS_PATH, get(status_stream))
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                ApiErrorCode::MethodNotAllowed,
                "method not allowed here",
            )
        })
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                ApiErrorCode::NotFound,
                "no such endpoint",
            )
        })
        .layer(axum::middleware::from_fn(
            crate::same_origin::refuse_cross_site,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Health, readiness, metrics and debug, served on `OPS_LISTEN` (the pod IP,
/// for probes and Prometheus; never routed by Envoy).
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/envoys", get(envoys))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                ApiErrorCode::NotFound,
                "no such endpoint",
            )
        })
        .with_state(state)
}

/// A failed request: answered as JSON in the shared `ApiError` shape.
pub struct Failure {
    status: StatusCode,
    body: ApiError,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let mut body = self.body;
            body.details
                .entry("retryAfterSeconds")
                .or_insert(RETRY_AFTER_SECONDS.into());
            let retry_after = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())];
            return (self.status, retry_after, Json(body)).into_response();
        }
        (self.status, Json(self.body)).into_response()
    }
}

pub(crate) fn error(status: StatusCode, code: ApiErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        status,
        body: ApiError {
            error: code,
            message: message.into(),
            details: Default::default(),
        },
    }
}

pub(crate) fn error_with_details(
    status: StatusCode,
    code: ApiErrorCode,
    message: impl Into<String>,
    details: serde_json::Value,
) -> Failure {
    let mut failure = error(status, code, message);
    failure.body.details = details.as_object().cloned().unwrap_or_default();
    failure
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&ApiLabel {
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Who calls (401 without an identity Envoy verified, when sign-in is on);
/// writes are logged with their caller under the `audit` target.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match state.auth.caller(request.headers()) {
        Ok(caller) => caller,
        Err(refused) => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                ApiErrorCode::Unauthenticated,
                refused.to_string(),
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    };
    request.extensions_mut().insert(caller.clone());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    if method != axum::http::Method::GET {
        tracing::info!(
            target: "audit",
            user = caller.name(),
            %method,
            path,
            status = response.status().as_u16(),
            "views API write"
        );
    }
    response
}

/// A view that is neither the caller's nor shared with them is, to this
/// caller, a view that does not exist.
fn visible(caller: &Caller, view: &ViewState) -> bool {
    caller.may_use(&view.spec)
}

/// The view `name` if the caller may see it; else what an unknown view gets.
fn visible_view<'a>(
    views: &'a Views,
    caller: &Caller,
    name: &str,
) -> Result<&'a Arc<ViewState>, Failure> {
    views
        .get(name)
        .filter(|view| visible(caller, view))
        .ok_or_else(|| not_found(name))
}

pub(crate) fn not_found(name: &str) -> Failure {
    error(
        StatusCode::NOT_FOUND,
        ApiErrorCode::NotFound,
        format!("view `{name}` does not exist"),
    )
}

pub(crate) fn not_entitled(refused: Refused) -> Failure {
    error_with_details(
        StatusCode::FORBIDDEN,
        ApiErrorCode::NotEntitled,
        refused.to_string(),
        refused.details(),
    )
}

/// A refusal of the request's `field` (a JSON Pointer), for a form.
fn not_entitled_at(refused: Refused, field: String) -> Failure {
    let mut failure = not_entitled(refused);
    failure.body.details.insert("field".into(), field.into());
    failure
}

/// With sign-in on: the owner may read (or write) every subset of the view,
/// and so may everyone it is shared with, by grants that name them.
fn check_entitlements(
    caller: &Caller,
    entitlements: &Entitlements,
    spec: &ViewRequest,
) -> Result<(), Failure> {
    let Some(identity) = caller.identity() else {
        return Ok(());
    };
    let owner = spec.owner.as_deref().map(String::as_str);
    if owner.is_none_or(|owner| owner == identity.user) {
        entitlements.check(identity, &spec.subsets)
    } else {
        // An admin creating a view for someone else: their groups are not
        // known here, so only grants naming them count.
        entitlements.check_target(
            &Principal::User(owner.unwrap_or_default().to_string()),
            &spec.subsets,
        )
    }
    .map_err(|refused| {
        let field = format!("/subsets/{}/prefixes", refused.subset.unwrap_or(0));
        not_entitled_at(refused, field)
    })?;
    for target in share_targets(spec.shared_with.as_ref()) {
        entitlements
            .check_target(&target, &spec.subsets)
            .map_err(|refused| {
                let field = match target {
                    Principal::User(_) => "/sharedWith/users",
                    Principal::Group(_) => "/sharedWith/groups",
                };
                not_entitled_at(refused, field.into())
            })?;
    }
    Ok(())
}

fn share_targets(shares: Option<&Shares>) -> impl Iterator<Item = Principal> + '_ {
    let users = shares.and_then(|s| s.users.as_deref()).unwrap_or_default();
    let groups = shares.and_then(|s| s.groups.as_deref()).unwrap_or_default();
    users
        .iter()
        .map(|u| Principal::User(u.to_string()))
        .chain(groups.iter().map(|g| Principal::Group(g.to_string())))
}

static REQUEST_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: serde_json::Value =
        serde_json::from_str(ViewRequest::JSON_SCHEMA).expect("the exported schema is JSON");
    jsonschema::validator_for(&schema).expect("the exported schema compiles")
});

/// A JSON body (415 for another content type, 413 past [`BODY_LIMIT`]).
fn parse_json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, Failure> {
    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_content {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiErrorCode::UnsupportedMediaType,
            "send JSON with Content-Type: application/json",
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiErrorCode::PayloadTooLarge,
                format!("a request body is at most {BODY_LIMIT} bytes"),
            )
        } else {
            error(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                rejection.body_text(),
            )
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// Where `value` breaks `schema`, as `{path, problem}` (JSON Pointer, text).
fn schema_problems(
    schema: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Vec<serde_json::Value> {
    schema
        .iter_errors(value)
        .map(|e| serde_json::json!({"path": e.instance_path().to_string(), "problem": e.to_string()}))
        .collect()
}

/// A JSON body valid by `schema`, read as `T`; otherwise 400
/// `invalid_request` with `message` and the schema's problems.
pub(crate) fn parse_valid<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    schema: &jsonschema::Validator,
    message: &str,
) -> Result<T, Failure> {
    let value = parse_json(headers, body)?;
    let problems = schema_problems(schema, &value);
    if !problems.is_empty() {
        return Err(error_with_details(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            message,
            serde_json::json!({"problems": problems}),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            e.to_string(),
        )
    })
}

/// A create request's body, as the API reads it: JSON, valid by the
/// schema, normalised (also the entry of the `view_request` fuzz target).
pub fn parse_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ViewRequest, Failure> {
    let value = parse_json(headers, body)?;
    let problems = schema_problems(&REQUEST_SCHEMA, &value);
    if !problems.is_empty() {
        let name_problem = problems.iter().any(|p| p["path"] == "/name");
        let (code, message) = if name_problem {
            (
                ApiErrorCode::InvalidName,
                "a view name is a DNS label of 3 to 8 characters: lowercase letters, digits and '-', starting with a letter",
            )
        } else {
            (
                ApiErrorCode::InvalidRequest,
                "the view spec does not match the ViewRequest schema",
            )
        };
        // The first problem's field, for a form to show the error beside.
        let field = problems[0]["path"].clone();
        return Err(error_with_details(
            StatusCode::BAD_REQUEST,
            code,
            message,
            serde_json::json!({"field": field, "problems": problems}),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            e.to_string(),
        )
    })
}

pub(crate) fn write_error(error_value: WriteError) -> Failure {
    let message = error_value.to_string();
    match error_value {
        WriteError::Conflict(_) | WriteError::BeingDeleted(_) => {
            error(StatusCode::CONFLICT, ApiErrorCode::Conflict, message)
        }
        WriteError::NotFound(_) => error(StatusCode::NOT_FOUND, ApiErrorCode::NotFound, message),
        WriteError::QuotaExceeded(_) => error(
            StatusCode::TOO_MANY_REQUESTS,
            ApiErrorCode::QuotaExceeded,
            message,
        ),
        WriteError::Refused { code: 422, .. } => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorCode::Unprocessable,
            message,
        ),
        WriteError::Refused { .. } => {
            tracing::error!(%message, "Kubernetes refused a view write");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiErrorCode::Internal,
                message,
            )
        }
        WriteError::Unavailable(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::KubernetesUnavailable,
            message,
        ),
    }
}

/// The view `name` once this replica's index shows it as `done` says (a
/// write's effect comes back through the watches); 503 if it lags.
pub(crate) async fn indexed(
    state: &AppState,
    name: &str,
    what: &str,
    done: impl Fn(&ViewState) -> bool,
) -> Result<Arc<ViewState>, Failure> {
    let wait = Duration::from_millis(state.config.index_wait_ms);
    let seen = state
        .index
        .wait_for(wait, |s| s.views.get(name).is_some_and(|v| done(v)))
        .await;
    state
        .index
        .snapshot()
        .views
        .get(name)
        .filter(|_| seen)
        .cloned()
        .ok_or_else(|| index_lagging(what))
}

pub(crate) fn index_lagging(what: &str) -> Failure {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::KubernetesUnavailable,
        format!(
            "{what}, but this gateway has not seen the change yet (Kubernetes watch lagging); retry shortly"
        ),
    )
}

async fn create(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let mut request = parse_request(&headers, body)?;
    if let Caller::User { identity, admin } = &caller {
        match request.owner.as_deref().map(String::as_str) {
            Some(owner) if owner != identity.user && !admin => {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    ApiErrorCode::Forbidden,
                    format!("`{}` may not create views for `{owner}`", identity.user),
                ));
            }
            Some(_) => {}
            None => {
                request.owner = Some(identity.user.as_str().try_into().map_err(|_| {
                    error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ApiErrorCode::Unprocessable,
                        "the user id cannot be a view owner",
                    )
                })?);
            }
        }
    }
    request.shared_with = normalize_shares(request.shared_with);
    check_entitlements(&caller, &state.index.snapshot().entitlements, &request)?;
    let spec = view::normalize(request, &state.config).map_err(|invalid| {
        let code = match invalid {
            Invalid::ReservedName(_) => ApiErrorCode::ReservedName,
            _ => ApiErrorCode::Unprocessable,
        };
        let field = serde_json::json!({"field": invalid.field()});
        error_with_details(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            invalid.to_string(),
            field,
        )
    })?;
    let created = state.writer.create(&spec).await.map_err(|e| {
        // A view of that name exists: the name is at fault.
        let mut failure = write_error(e);
        if failure.status == StatusCode::CONFLICT {
            failure.body.details.insert("field".into(), "/name".into());
        }
        failure
    })?;
    // Answer only once this sidecar's own index (and so its xDS) has the
    // view: a client can use it as soon as it has the 201.
    let uid = created.service().metadata.uid.clone().unwrap_or_default();
    let name = spec.name.to_string();
    let wait = Duration::from_millis(state.config.index_wait_ms);
    let view = indexed(&state, &name, "the view was created", |v| v.uid == uid).await?;
    let host = crate::xds::resources::cluster_name(&name);
    if !wait_for_envoys(&state, wait, |routed| routed.contains(&host)).await {
        return Err(envoy_lagging("the view was created"));
    }
    Ok((StatusCode::CREATED, Json(to_api(&view, &state.config))).into_response())
}

/// The progress page's event stream, on the view's own host.
async fn status_stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let view = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| page::view_of_host(host, &state.config.gateway_hostname))
        .filter(|view| state.index.snapshot().views.contains_key(view));
    match view {
        Some(view) => page::events(&state.activator, &view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            ApiErrorCode::NotFound,
            "no such view",
        )
        .into_response(),
    }
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    let snapshot = state.index.snapshot();
    let views: Vec<View> = snapshot
        .views
        .values()
        .filter(|v| visible(&caller, v))
        .map(|v| to_api(v, &state.config))
        .collect();
    // Admins also see what is left of views whose Service cannot be read.
    let invalid = if caller.is_admin() {
        snapshot
            .unreadable
            .iter()
            .map(|(name, problem)| InvalidView {
                name: name.clone(),
                problem: problem.to_string(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Json(ViewList { views, invalid }).into_response()
}

/// The API's own description (the hub's client is built on it).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        views_types::OPENAPI,
    )
        .into_response()
}

/// A view whose Service cannot be read, to an admin: what is wrong, and how
/// to remove it.
fn unreadable(name: &str, problem: &str) -> Failure {
    error_with_details(
        StatusCode::UNPROCESSABLE_ENTITY,
        ApiErrorCode::Unprocessable,
        format!(
            "the Service of view `{name}` cannot be read ({problem}): it gets no routes; DELETE /_api/views/{name} removes it"
        ),
        serde_json::json!({"problem": problem}),
    )
}

pub(crate) fn parse_name(name: &str) -> Result<ViewName, Failure> {
    ViewName::try_from(name).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidName,
            format!("`{name}` is not a valid view name"),
        )
    })
}

async fn show(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    parse_name(&name)?;
    let snapshot = state.index.snapshot();
    if let Some(problem) = snapshot.unreadable.get(&name)
        && caller.is_admin()
    {
        return Err(unreadable(&name, problem));
    }
    let view = visible_view(&snapshot.views, &caller, &name)?;
    Ok(Json(to_api(view, &state.config)).into_response())
}

/// End a view's current run now: its Job goes (with its pods and keys),
/// the view stays and starts again on its next request. Idempotent: a view
/// that is not running answers the same. Its owner's or an admin's.
async fn stop(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    parse_name(&name)?;
    let snapshot = state.index.snapshot();
    let view = visible_view(&snapshot.views, &caller, &name)?;
    may_manage(&state, &caller, &name, "stop")?;
    let Some(job) = view.live_activation().map(|a| a.job.clone()) else {
        return Ok(Json(to_api(view, &state.config)).into_response());
    };
    state
        .writer
        .record_stopped_run(&name, &job)
        .await
        .map_err(write_error)?;
    state.writer.delete_job(&job).await.map_err(write_error)?;
    let wait = Duration::from_millis(state.config.index_wait_ms);
    let stopped = state
        .index
        .wait_for(wait, |s| {
            s.views
                .get(&name)
                .is_none_or(|v| v.live_activation().is_none_or(|a| a.job != job))
        })
        .await;
    if !stopped {
        return Err(index_lagging("the view's run was stopped"));
    }
    match state.index.snapshot().views.get(&name) {
        Some(view) => Ok(Json(to_api(view, &state.config)).into_response()),
        None => Err(not_found(&name)),
    }
}

async fn remove(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    parse_name(&name)?;
    may_manage(&state, &caller, &name, "delete")?;
    let uid = state
        .writer
        .delete(&name, |spec| match spec {
            Some(spec) => caller.may_manage(spec),
            // Whose it was cannot be read: an admin's to remove.
            None => caller.is_admin(),
        })
        .await
        .map_err(write_error)?;
    let wait = Duration::from_millis(state.config.index_wait_ms);
    let gone = state
        .index
        .wait_for(wait, |s| {
            s.views
                .get(&name)
                .is_none_or(|v| Some(&v.uid) != uid.as_ref())
        })
        .await;
    if !gone {
        return Err(index_lagging("the view was deleted"));
    }
    let host = crate::xds::resources::cluster_name(&name);
    if !wait_for_envoys(&state, wait, |routed| !routed.contains(&host)).await {
        return Err(envoy_lagging("the view was deleted"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Someone the view is shared with knows it exists (403); anyone else does
/// not (404).
pub(crate) fn may_manage(
    state: &AppState,
    caller: &Caller,
    name: &str,
    what: &str,
) -> Result<(), Failure> {
    let snapshot = state.index.snapshot();
    match snapshot.views.get(name) {
        Some(view) if caller.may_manage(&view.spec) => Ok(()),
        Some(view) if caller.may_use(&view.spec) => Err(error(
            StatusCode::FORBIDDEN,
            ApiErrorCode::Forbidden,
            format!("only the owner of `{name}` (or an admin) may {what} it"),
        )),
        // Not in this replica's index yet, or not visible: Kubernetes decides.
        _ => Ok(()),
    }
}

/// Sorted, without repeats, and absent when empty: equal shares store equally.
fn normalize_shares(shares: Option<Shares>) -> Option<Shares> {
    fn sorted<T: Ord>(mut items: Vec<T>) -> Option<Vec<T>> {
        items.sort();
        items.dedup();
        (!items.is_empty()).then_some(items)
    }
    let shares = shares?;
    let users = shares.users.and_then(sorted);
    let groups = shares.groups.and_then(sorted);
    (users.is_some() || groups.is_some()).then_some(Shares { users, groups })
}

static SHARES_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let mut schema: serde_json::Value =
        serde_json::from_str(ViewRequest::JSON_SCHEMA).expect("the exported schema is JSON");
    schema["$ref"] = "#/$defs/Shares".into();
    for keyword in ["required", "properties", "additionalProperties", "type"] {
        schema.as_object_mut().expect("an object").remove(keyword);
    }
    jsonschema::validator_for(&schema).expect("the exported schema compiles")
});

/// `PUT /_api/views/<name>/shares`: replace whom the view is shared with.
async fn share(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    parse_name(&name)?;
    let shares: Shares = parse_valid(
        &headers,
        body,
        &SHARES_SCHEMA,
        "the body does not match the Shares schema ({\"users\": [...], \"groups\": [...]})",
    )?;
    may_manage(&state, &caller, &name, "share")?;
    let shares = normalize_shares(Some(shares));
    // Checked against the stored spec inside the update, so the subsets
    // checked are the ones shared; a refusal writes nothing.
    let entitlements = state.index.snapshot().entitlements.clone();
    let (uid, _) = state
        .writer
        .update_spec(
            &name,
            |spec| caller.may_manage(spec),
            |mut spec| {
                spec.shared_with = shares.clone();
                check_entitlements(&caller, &entitlements, &spec).map(|()| spec)
            },
        )
        .await
        .map_err(write_error)??;
    let view = indexed(&state, &name, "the shares were changed", |v| {
        v.uid == uid && v.spec.shared_with == shares
    })
    .await?;
    Ok(Json(to_api(&view, &state.config)).into_response())
}

/// `GET /_api/me`: who the caller is and what they may read.
async fn me(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, Failure> {
    let Caller::User { identity, admin } = &caller else {
        return Err(error(
            StatusCode::NOT_FOUND,
            ApiErrorCode::NotFound,
            "sign-in is off on this gateway: there is no \"me\"",
        ));
    };
    let user = identity.user.as_str().try_into().map_err(|_| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorCode::Unprocessable,
            "the user id is not printable text",
        )
    })?;
    let me = Me {
        user,
        groups: identity
            .groups
            .iter()
            .filter_map(|g| g.as_str().try_into().ok())
            .collect(),
        admin: *admin,
        grants: state.index.snapshot().entitlements.readable(identity),
    };
    Ok(Json(me).into_response())
}

/// Wait until every Envoy connected to this sidecar has ACKed routes whose
/// virtual hosts satisfy `condition`: the answer to a create or delete then
/// holds on this replica's data path too. No Envoy connected: nothing to wait for.
async fn wait_for_envoys(
    state: &AppState,
    timeout: Duration,
    condition: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> bool {
    let mut envoys = state.envoys.clone();
    tokio::time::timeout(
        timeout,
        envoys.wait_for(|all| all.values().all(|e| condition(&e.routed_hosts))),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

fn envoy_lagging(what: &str) -> Failure {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::Internal,
        format!("{what}, but Envoy has not accepted the new routes yet; retry shortly"),
    )
}

/// The API's view of a view.
pub fn to_api(view: &ViewState, config: &Config) -> View {
    let endpoints: Vec<ViewEndpoint> = view
        .endpoints
        .iter()
        .map(|e| ViewEndpoint {
            ip: e.ip,
            ready: e.serving && !e.terminating,
        })
        .collect();
    let live = view.live_activation();
    let failure = view.last_failure();
    let (phase, reason, message) = if endpoints.iter().any(|e| e.ready) {
        (ViewPhase::Ready, None, None)
    } else if let Some(activation) = live {
        let stage = match activation.phase {
            workload::Phase::Pending => "waiting for the pod to be scheduled",
            workload::Phase::Scheduled => "the pod is scheduled",
            workload::Phase::Starting => "the workload is starting",
            _ => "the workload is ready; routing to it",
        };
        (ViewPhase::Starting, None, Some(stage.to_string()))
    } else if let Some(failure) = failure {
        (
            ViewPhase::Failed,
            Some(failure.reason),
            Some(failure.message),
        )
    } else if view.endpoints.iter().any(|e| !e.terminating) {
        // A pod of no Job the gateway knows (started by hand): starting.
        (ViewPhase::Starting, None, None)
    } else {
        (ViewPhase::Cold, None, None)
    };
    let name = view.spec.name.to_string();
    View {
        hostname: config
            .view_hostname(&name)
            .try_into()
            .expect("a valid name under the gateway hostname is a valid hostname"),
        name: view.spec.name.clone(),
        subsets: view.spec.subsets.clone(),
        owner: view.spec.owner.clone(),
        shared_with: view.spec.shared_with.clone(),
        created_at: view.created_at.unwrap_or_default(),
        deadline_seconds: view.spec.deadline_seconds.clone().unwrap_or(
            views_types::DeadlineSeconds(config.default_deadline_seconds),
        ),
        idle_timeout_seconds: view.spec.idle_timeout_seconds.clone().unwrap_or(
            views_types::IdleTimeoutSeconds(config.default_idle_timeout_seconds),
        ),
        status: ViewStatus {
            phase,
            endpoints,
            deadline: live.and_then(|a| a.deadline),
            started_at: live.and_then(|a| a.created_at),
            max_deadline: live.and_then(|a| a.max_deadline),
            requests: live.map(|a| crate::runs::requests(&a.requests)),
            last_activity: crate::idle::recorded_activity(view),
            message,
            reason,
        },
    }
}

/// Where Envoy's `jwt_authn` reads the ServiceAccount issuer's keys (never
/// routed by Envoy: only Envoy itself reaches the sidecar's HTTP port).
pub const SERVICE_ACCOUNT_KEYS_PATH: &str = "/service-account-keys";

async fn service_account_keys(State(state): State<AppState>) -> Response {
    match state
        .service_account_keys
        .as_ref()
        .and_then(|k| k.borrow().clone())
    {
        Some(jwks) => (
            [(header::CONTENT_TYPE, "application/json")],
            jwks.to_string(),
        )
            .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::KubernetesUnavailable,
            "the ServiceAccount issuer's keys have not been read (yet)",
        )
        .into_response(),
    }
}

/// Ready means able to serve: the index has been synced once (so xDS
/// describes every view) and the replica is not draining. What is degraded
/// is reported, not failed on: without the Kubernetes API server warm views
/// keep serving from the index and Envoy, and only what needs it (creates,
/// deletes, starts) is refused with 503; invalid entitlements refuse creates
/// and starts with a clear error. Failing readiness for those would take
/// every replica out of its Service at once: a total outage of views that
/// work.
async fn readyz(State(state): State<AppState>) -> Response {
    let snapshot = state.index.snapshot();
    let api_server = state.writer.health().get();
    let entitlements_invalid = snapshot.entitlements.invalid().map(ToString::to_string);
    let mut degraded = Vec::new();
    if !matches!(api_server, ApiServer::Ready | ApiServer::Unknown) {
        degraded.push("kubernetes");
    }
    if entitlements_invalid.is_some() {
        degraded.push("entitlements");
    }
    let (since, problem) = match &api_server {
        ApiServer::NotReady { since, message } | ApiServer::Unreachable { since, message } => {
            (Some(since.to_string()), Some(message.clone()))
        }
        ApiServer::Ready | ApiServer::Unknown => (None, None),
    };
    let draining = state.drain.is_draining();
    let body = serde_json::json!({
        "indexSynced": snapshot.synced,
        "draining": draining,
        "degraded": degraded,
        "kubernetes": {
            "state": api_server.as_str(),
            "since": since,
            "message": problem,
        },
        "kubernetesReachable": api_server.reachable(),
        "views": snapshot.views.len(),
        "envoys": state.envoys.borrow().len(),
        "entitlementsInvalid": entitlements_invalid,
    });
    let status = if snapshot.synced && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.index.snapshot();
    state.metrics.views.set(snapshot.views.len() as i64);
    state.metrics.views_serving.set(
        snapshot
            .views
            .values()
            .filter(|v| v.serving_endpoints().next().is_some())
            .count() as i64,
    );
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            e.to_string(),
        )
        .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn envoys(State(state): State<AppState>) -> Response {
    Json(state.envoys.borrow().clone()).into_response()
}
