//! A view's current run, beyond what a request starts and the idle reaper
//! stops: restart it, and extend its deadline within the operator's cap
//! (`MAX_RUN_SECONDS`). Both answer in the API (`/_api/views/<name>/…`) and,
//! for the banner of the workspace, on the view's own host
//! (`/_gateway/view`, `/_gateway/view/extend`).
//!
//! ```text
//! restart  Job n ready ──delete──► index: n gone, no serving pod ──► activator.activate
//!          (a run still starting is already fresh: the call joins it)   └─► Job n+1 (202)
//! extend   Job n ──get──► activeDeadlineSeconds + s ≤ its views.dev/max-run-seconds?
//!          ──merge patch, preconditioned on its resourceVersion──► index: new deadline (200)
//! ```
//!
//! Writers go through Kubernetes and answer once this replica's index shows
//! the effect; the index stays the source of truth. A restart races safely
//! with the activator and the idle reaper: Job names are deterministic, so
//! whoever creates run n+1 first wins and the others follow it; the reaper
//! counts a run from its start. Restart is the owner's or an admin's, like
//! stop (it ends everyone's queries); extending is for everyone who may use
//! the view (a share's activity keeps it running anyway), within the cap.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use views_types::{ApiErrorCode, DeadlineExtension, ResourceRequests};

use crate::activator::{Progress, Stage, page};
use crate::api::{
    AppState, Failure, error, error_with_details, index_lagging, indexed, may_manage, not_found,
    parse_name, parse_valid, to_api, write_error,
};
use crate::auth::Caller;
use crate::index::ViewState;
use crate::kubernetes::WriteError;
use crate::workload::{self, MAX_RUN_ANNOTATION, Phase};

/// On a view's host: the view's run as the banner needs it (GET).
pub const IN_VIEW_PATH: &str = "/_gateway/view";
/// On a view's host: extend the run's deadline (POST a [`DeadlineExtension`]).
pub const IN_VIEW_EXTEND_PATH: &str = "/_gateway/view/extend";

/// How often an extension that met a concurrent change is tried again.
const EXTEND_ATTEMPTS: usize = 3;

/// The API's routes (behind its authentication) and the in-view ones.
pub fn router(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/_api/views/{name}/restart", post(restart))
        .route("/_api/views/{name}/extend", post(extend))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::api::authenticate,
        ));
    api.route(IN_VIEW_PATH, get(in_view))
        .route(IN_VIEW_EXTEND_PATH, post(in_view_extend))
}

/// `POST /_api/views/<name>/restart`: end the running run and start a fresh
/// one at once (202 once its Job exists). A view not running is started; a
/// run still starting is joined (a double click restarts once).
async fn restart(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    parse_name(&name)?;
    let view = usable(&state, &caller, &name)?;
    may_manage(&state, &caller, &name, "restart")?;
    startable_by(&state, &caller, &view)?;
    let replaced = match view.live_activation() {
        Some(live) if live.phase != Phase::Ready => {
            return Ok((StatusCode::ACCEPTED, Json(to_api(&view, &state.config))).into_response());
        }
        Some(live) => Some(live.job.clone()),
        None => None,
    };
    let wait = Duration::from_millis(state.config.index_wait_ms);
    if let Some(job) = &replaced {
        state
            .writer
            .record_stopped_run(&name, job)
            .await
            .map_err(write_error)?;
        state.writer.delete_job(job).await.map_err(write_error)?;
        // Until its pod stops serving, the activator would take the view
        // for running and start nothing.
        let gone = state
            .index
            .wait_for(wait, |s| {
                s.views.get(&name).is_none_or(|v| {
                    workload::read_stopped_run(&v.annotations)
                        >= workload::activation_of_job_name(job)
                        && v.live_activation().is_none_or(|a| &a.job != job)
                        && v.serving_endpoints().next().is_none()
                })
            })
            .await;
        if !gone {
            return Err(index_lagging("the view's run was stopped"));
        }
    }
    let mut progress = state.activator.activate(&name);
    // The driver ended without a word, or Kubernetes is slow: whatever it
    // reached is the answer.
    let _ = tokio::time::timeout(
        wait,
        progress.wait_for(|p| *p != Progress::Starting(Stage::Creating)),
    )
    .await;
    let outcome = progress.borrow().clone();
    match outcome {
        Progress::Gone => return Err(not_found(&name)),
        Progress::Unavailable(message) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::KubernetesUnavailable,
                format!("the view could not be started: {message}"),
            ));
        }
        Progress::Failed(failure) => {
            return Err(error_with_details(
                StatusCode::BAD_GATEWAY,
                ApiErrorCode::ViewFailed,
                format!("the view could not start: {}", failure.message),
                serde_json::json!({"reason": failure.reason}),
            ));
        }
        Progress::Starting(_) | Progress::Ready => {}
    }
    // Follow the start to its end, as a held request would: its driver
    // then records a start that cannot succeed (and removes its Job).
    let budget = state.config.cold_start_budget();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            budget,
            progress.wait_for(|p| !matches!(p, Progress::Starting(_))),
        )
        .await;
    });
    tracing::info!(target: "audit", user = caller.name(), view = name, replaced = ?replaced, "view restarted");
    let view = indexed(&state, &name, "the view was restarted", |v| {
        v.serving_endpoints().next().is_some()
            || v.live_activation()
                .is_some_and(|a| Some(&a.job) != replaced.as_ref())
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(to_api(&view, &state.config))).into_response())
}

/// `POST /_api/views/<name>/extend`.
async fn extend(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    parse_name(&name)?;
    let extension = parse_extension(&headers, body)?;
    let view = extend_run(&state, &caller, &name, extension.seconds).await?;
    Ok(Json(to_api(&view, &state.config)).into_response())
}

/// `GET /_gateway/view` on a view's host: the view (its run's deadline,
/// idle time and cap), the banner's warning window, and whether the caller
/// may extend it.
async fn in_view(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Failure> {
    let (caller, name) = in_view_caller(&state, &headers)?;
    let view = usable(&state, &caller, &name)?;
    Ok(in_view_answer(&state, &view))
}

/// `POST /_gateway/view/extend` on a view's host: as the API's extend.
async fn in_view_extend(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let (caller, name) = in_view_caller(&state, &headers)?;
    let extension = parse_extension(&headers, body)?;
    let view = extend_run(&state, &caller, &name, extension.seconds).await?;
    tracing::info!(target: "audit", user = caller.name(), view = name, seconds = extension.seconds, "run extended from the view");
    Ok(in_view_answer(&state, &view))
}

fn in_view_answer(state: &AppState, view: &ViewState) -> Response {
    let body = serde_json::json!({
        "view": to_api(view, &state.config),
        "warningSeconds": state.config.workload.stop_warning_seconds,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Who calls, on which view's host (Envoy has verified the caller and let
/// only the view's owner and shares through to its host).
fn in_view_caller(state: &AppState, headers: &HeaderMap) -> Result<(Caller, String), Failure> {
    let caller = state.auth.caller(headers).map_err(|refused| {
        error(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthenticated,
            refused.to_string(),
        )
    })?;
    let name = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| page::view_of_host(host, &state.config.gateway_hostname))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                ApiErrorCode::NotFound,
                "no such view",
            )
        })?;
    Ok((caller, name))
}

/// The view, if the caller may use it (to anyone else it does not exist).
fn usable(state: &AppState, caller: &Caller, name: &str) -> Result<Arc<ViewState>, Failure> {
    state
        .index
        .snapshot()
        .views
        .get(name)
        .filter(|v| caller.may_use(&v.spec))
        .cloned()
        .ok_or_else(|| not_found(name))
}

/// A restart is a start: whoever asks must be entitled to the view's data
/// now, as for a start by request (an admin too: without grants of their
/// own they stop the view, and its owner's next visit starts it).
fn startable_by(state: &AppState, caller: &Caller, view: &ViewState) -> Result<(), Failure> {
    let Some(identity) = caller.identity() else {
        return Ok(());
    };
    let entitlements = state.index.snapshot().entitlements.clone();
    let checked = entitlements.check(identity, &view.spec.subsets);
    checked.map_err(|refused| {
        error_with_details(
            StatusCode::FORBIDDEN,
            ApiErrorCode::NotEntitled,
            format!("view {} cannot start: {refused}", view.spec.name.as_str()),
            refused.details(),
        )
    })
}

fn parse_extension(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<DeadlineExtension, Failure> {
    static SCHEMA: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
        let schema: serde_json::Value = serde_json::from_str(DeadlineExtension::JSON_SCHEMA)
            .expect("the exported schema is JSON");
        jsonschema::validator_for(&schema).expect("the exported schema compiles")
    });
    parse_valid(
        headers,
        body,
        &SCHEMA,
        "the body is not a DeadlineExtension ({\"seconds\": 60 to 86400})",
    )
}

fn not_running(name: &str) -> Failure {
    error(
        StatusCode::CONFLICT,
        ApiErrorCode::Conflict,
        format!(
            "view `{name}` is not running: there is no run to extend (its next start gets its full deadline)"
        ),
    )
}

/// Move the live run's deadline `seconds` later, within the cap its Job
/// was created with; answers once this replica's index has the new deadline.
async fn extend_run(
    state: &AppState,
    caller: &Caller,
    name: &str,
    seconds: i64,
) -> Result<Arc<ViewState>, Failure> {
    let view = usable(state, caller, name)?;
    let job_name = view
        .live_activation()
        .map(|a| a.job.clone())
        .ok_or_else(|| not_running(name))?;
    for _ in 0..EXTEND_ATTEMPTS {
        let job = state
            .writer
            .job(&job_name)
            .await
            .map_err(write_error)?
            .ok_or_else(|| not_running(name))?;
        let run = workload::read_activation(&job, &[], &[])
            .filter(|run| run.phase.is_live())
            .ok_or_else(|| not_running(name))?;
        let current = job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or_default();
        // Jobs from before the cap existed may not be extended.
        let cap = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MAX_RUN_ANNOTATION)?.parse::<i64>().ok())
            .unwrap_or(current)
            .max(current);
        let wanted = current.saturating_add(seconds);
        if wanted > cap {
            let allowed = cap - current;
            return Err(error_with_details(
                StatusCode::UNPROCESSABLE_ENTITY,
                ApiErrorCode::OverCap,
                format!(
                    "one run of a view may last at most {cap} s on this gateway: this one may be extended by {allowed} s more, not {seconds} s"
                ),
                serde_json::json!({
                    "capSeconds": cap,
                    "allowedSeconds": allowed,
                    "maxDeadline": run.max_deadline.map(|t| t.to_string()),
                }),
            ));
        }
        let resource_version = job.metadata.resource_version.clone().unwrap_or_default();
        match state
            .writer
            .set_job_deadline(&job_name, &resource_version, wanted)
            .await
        {
            Ok(patched) => {
                let deadline =
                    workload::read_activation(&patched, &[], &[]).and_then(|a| a.deadline);
                tracing::info!(target: "audit", user = caller.name(), view = name, job = job_name, deadline_seconds = wanted, "run extended");
                return indexed(state, name, "the run was extended", |v| {
                    v.activations
                        .values()
                        .find(|a| a.job == job_name)
                        .is_none_or(|a| a.deadline == deadline || !a.phase.is_live())
                })
                .await;
            }
            // Someone else extended (or the Job controller wrote) meanwhile:
            // read it again.
            Err(WriteError::Conflict(_)) => continue,
            Err(WriteError::NotFound(_)) => return Err(not_running(name)),
            Err(other) => return Err(write_error(other)),
        }
    }
    Err(error(
        StatusCode::CONFLICT,
        ApiErrorCode::Conflict,
        format!("the run of `{name}` kept changing meanwhile; try again"),
    ))
}

/// A run's requests as the API shows them (quantities Kubernetes accepted
/// fit the schema; anything else is left out rather than failing the view).
pub fn requests(requests: &workload::Requests) -> ResourceRequests {
    ResourceRequests {
        cpu: requests.cpu.as_deref().and_then(|q| q.try_into().ok()),
        memory: requests.memory.as_deref().and_then(|q| q.try_into().ok()),
    }
}
