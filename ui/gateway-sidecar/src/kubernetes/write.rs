//! Writing views and their workloads. Every write is idempotent so replicas
//! never coordinate: names are deterministic, and the API server — not a
//! local cache — decides who created an object first.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use views_types::ViewRequest;

use super::health::ApiHealth;
use crate::config::Config;
use crate::view;
use crate::workload::{self, Failure};

const FIELD_MANAGER: &str = "views-gateway";

/// One request not answered within this counts as a failure to reach the
/// API server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A request that fails in a way that passes (no connection, 5xx, 429, or
/// 403 while the API server's authorizer warms up after a restart) is tried
/// again after pauses from this, doubling…
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// …while they fit in this.
const RETRY_FOR: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("view `{0}` already exists with a different spec")]
    Conflict(String),
    #[error("view `{0}` is being deleted; try again shortly")]
    BeingDeleted(String),
    #[error("view `{0}` does not exist")]
    NotFound(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("Kubernetes refused the change ({code}): {message}")]
    Refused { code: u16, message: String },
    #[error("Kubernetes is unavailable: {0}")]
    Unavailable(String),
}

/// The result of a create: a view was made, or an identical one was there.
pub enum Created {
    New(Service),
    Existing(Service),
}

impl Created {
    pub fn service(&self) -> &Service {
        match self {
            Created::New(s) | Created::Existing(s) => s,
        }
    }
}

#[derive(Clone)]
pub struct Writer {
    services: Api<Service>,
    jobs: Api<Job>,
    secrets: Api<Secret>,
    config: std::sync::Arc<Config>,
    health: ApiHealth,
}

impl Writer {
    pub fn new(client: kube::Client, config: std::sync::Arc<Config>, health: ApiHealth) -> Self {
        Self {
            services: Api::namespaced(client.clone(), &config.namespace),
            jobs: Api::namespaced(client.clone(), &config.namespace),
            secrets: Api::namespaced(client, &config.namespace),
            config,
            health,
        }
    }

    /// The API server's state as last probed.
    pub fn health(&self) -> &ApiHealth {
        &self.health
    }

    /// Send a request, again after short pauses while it fails in a way that
    /// passes; at once an error while the API server cannot be reached. Every
    /// request of the writer is safe to repeat after an answer was lost: its
    /// names are deterministic, creates count AlreadyExists as done, patches
    /// merge, and the spec patch and the view delete are preconditioned (a
    /// repeat is refused, never applied twice).
    async fn send<T, F>(&self, request: impl Fn() -> F) -> Result<T, kube::Error>
    where
        F: Future<Output = Result<T, kube::Error>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut pause = RETRY_FIRST;
        loop {
            if let super::health::ApiServer::Unreachable { since, message } = self.health.get() {
                return Err(transport_error(
                    std::io::ErrorKind::NotConnected,
                    format!("the API server cannot be reached since {since}: {message}"),
                ));
            }
            let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, request()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(transport_error(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer from the API server within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                )),
            };
            match outcome {
                Err(error) if passing(&error) && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(%error, retry_in = ?pause, "Kubernetes request failed");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                outcome => return outcome,
            }
        }
    }

    /// The view's Service as the API server has it now (None: deleted).
    pub async fn service(&self, name: &str) -> Result<Option<Service>, WriteError> {
        let service_name = view::service_name(name);
        let service = self
            .send(|| self.services.get_opt(&service_name))
            .await
            .map_err(|e| map(e, name))?;
        Ok(service.filter(|s| s.metadata.deletion_timestamp.is_none()))
    }

    /// Create an activation's Job; one that exists already (another replica
    /// won the race) is returned instead.
    pub async fn create_job(&self, job: &Job) -> Result<Job, WriteError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let params = post_params();
        match self.send(|| self.jobs.create(&params, job)).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(status)) if status.code == 409 => self
                .send(|| self.jobs.get_opt(&name))
                .await
                .map_err(|e| map(e, &name))?
                .ok_or(WriteError::BeingDeleted(name)),
            Err(error) => Err(map(error, &name)),
        }
    }

    /// Create an activation's credentials Secret unless it exists (its
    /// content is deterministic, so whoever wrote it wrote the same).
    pub async fn ensure_secret(&self, secret: &Secret) -> Result<(), WriteError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let params = post_params();
        match self.send(|| self.secrets.create(&params, secret)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(map(error, &name)),
        }
    }

    /// Create the credentials master key Secret with a random version 1
    /// unless it exists (another replica, or the operator, made it: the
    /// watch brings whichever it is).
    pub async fn ensure_master_key(&self) -> Result<(), WriteError> {
        let name = &self.config.credentials.master_key_secret;
        let secret = super::master_key::new_secret(name)?;
        let params = post_params();
        match self.send(|| self.secrets.create(&params, &secret)).await {
            Ok(_) => {
                tracing::info!(secret = name, "created the credentials master key (v1)");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(map(error, name)),
        }
    }

    /// Delete a Job and what it owns; one already gone is success.
    pub async fn delete_job(&self, name: &str) -> Result<(), WriteError> {
        let params = DeleteParams::background();
        match self.send(|| self.jobs.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(map(error, name)),
        }
    }

    /// A Job as the API server has it now (None: gone).
    pub async fn job(&self, name: &str) -> Result<Option<Job>, WriteError> {
        self.send(|| self.jobs.get_opt(name))
            .await
            .map_err(|e| map(e, name))
    }

    /// Set a running Job's `activeDeadlineSeconds` (the Job controller ends
    /// it that long after its start), preconditioned on the resourceVersion
    /// it was read at: a concurrent change is a [`WriteError::Conflict`],
    /// never a lost update, and a repeat after a lost answer is refused.
    pub async fn set_job_deadline(
        &self,
        name: &str,
        resource_version: &str,
        seconds: i64,
    ) -> Result<Job, WriteError> {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": resource_version},
            "spec": {"activeDeadlineSeconds": seconds},
        });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        self.send(|| self.jobs.patch(name, &params, &patch))
            .await
            .map_err(|e| map(e, name))
    }

    /// Record on the view's Service when this replica last saw it used.
    pub async fn record_activity(
        &self,
        view_name: &str,
        at: jiff::Timestamp,
    ) -> Result<(), WriteError> {
        self.annotate(view_name, crate::idle::ACTIVITY_ANNOTATION, &at.to_string())
            .await
    }

    async fn annotate(&self, view_name: &str, key: &str, value: &str) -> Result<(), WriteError> {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        let (service_name, params, patch) = (
            view::service_name(view_name),
            PatchParams::default(),
            Patch::Merge(&patch),
        );
        self.send(|| self.services.patch(&service_name, &params, &patch))
            .await
            .map(|_| ())
            .map_err(|e| map(e, view_name))
    }

    /// Record on the view's Service that the API stopped run `job` (its
    /// number is not taken again).
    pub async fn record_stopped_run(&self, view_name: &str, job: &str) -> Result<(), WriteError> {
        self.annotate(view_name, workload::STOPPED_RUN_ANNOTATION, job)
            .await
    }

    /// Record on the view's Service why its last start failed (the API shows
    /// it after the Job is gone).
    pub async fn record_failure(
        &self,
        view_name: &str,
        failure: &Failure,
    ) -> Result<(), WriteError> {
        let failure = serde_json::to_string(failure).expect("a Failure serializes");
        self.annotate(view_name, workload::FAILURE_ANNOTATION, &failure)
            .await
    }

    /// Create the view's Service; an existing identical view is success.
    pub async fn create(&self, spec: &ViewRequest) -> Result<Created, WriteError> {
        let service = view::to_service(spec, &self.config);
        let (params, service_name) = (post_params(), view::service_name(spec.name.as_str()));
        match self.send(|| self.services.create(&params, &service)).await {
            Ok(created) => Ok(Created::New(created)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let name = spec.name.to_string();
                let existing = self
                    .send(|| self.services.get_opt(&service_name))
                    .await
                    .map_err(|e| map(e, &name))?
                    // Deleted between our create and get: let the client retry.
                    .ok_or_else(|| WriteError::BeingDeleted(name.clone()))?;
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(WriteError::BeingDeleted(name));
                }
                match view::from_service(&existing) {
                    Ok(existing_spec) if existing_spec == *spec => Ok(Created::Existing(existing)),
                    _ => Err(WriteError::Conflict(name)),
                }
            }
            Err(error) => Err(map(error, spec.name.as_str())),
        }
    }

    /// Change the spec of a view that `allowed` says the caller may change
    /// (to anyone else it does not exist). `change` may refuse (its error
    /// comes back, nothing written). The patch is preconditioned on the
    /// Service's resourceVersion, so a concurrent change is a 409, never a
    /// lost update. Returns the Service's uid and the stored spec.
    pub async fn update_spec<E>(
        &self,
        name: &str,
        allowed: impl Fn(&ViewRequest) -> bool,
        change: impl FnOnce(ViewRequest) -> Result<ViewRequest, E>,
    ) -> Result<Result<(String, ViewRequest), E>, WriteError> {
        let service_name = view::service_name(name);
        let service = self
            .send(|| self.services.get_opt(&service_name))
            .await
            .map_err(|e| map(e, name))?
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .ok_or_else(|| WriteError::NotFound(name.into()))?;
        let spec = view::from_service(&service)
            .ok()
            .filter(|spec| allowed(spec))
            .ok_or_else(|| WriteError::NotFound(name.into()))?;
        let changed = match change(spec) {
            Ok(changed) => changed,
            Err(refused) => return Ok(Err(refused)),
        };
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": service.metadata.resource_version,
            "annotations": {view::SPEC_ANNOTATION: serde_json::to_string(&changed).expect("a ViewRequest serializes")},
        }});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let updated = self
            .send(|| self.services.patch(&service_name, &params, &patch))
            .await
            .map_err(|e| map(e, name))?;
        Ok(Ok((updated.metadata.uid.unwrap_or_default(), changed)))
    }

    /// Delete the view's Service if `allowed` says so of its spec, or of
    /// `None` when the spec cannot be read (a view the caller may not delete
    /// is, to them, one that does not exist); Kubernetes' garbage collector
    /// removes what it owns (Jobs, pods, Secrets). Returns the deleted
    /// Service's uid. The delete is preconditioned on that uid, so a view
    /// re-created meanwhile is kept.
    pub async fn delete(
        &self,
        name: &str,
        allowed: impl Fn(Option<&ViewRequest>) -> bool,
    ) -> Result<Option<String>, WriteError> {
        let service_name = view::service_name(name);
        let uid = self
            .send(|| self.services.get_opt(&service_name))
            .await
            .map_err(|e| map(e, name))?
            .filter(|s| allowed(view::from_service(s).ok().as_ref()))
            .ok_or_else(|| WriteError::NotFound(name.into()))?
            .metadata
            .uid;
        let params = DeleteParams {
            preconditions: uid.clone().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.send(|| self.services.delete(&service_name, &params))
            .await
            .map_err(|e| map(e, name))?;
        Ok(uid)
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// A failure to reach the API server, as kube reports its own.
fn transport_error(kind: std::io::ErrorKind, message: String) -> kube::Error {
    kube::Error::Service(Box::new(std::io::Error::new(kind, message)))
}

/// A failure that passes by itself: no answer, the API server overloaded or
/// failing, or refusing while its authorizer warms up after a restart (a 403
/// that lasts is refused again after [`RETRY_FOR`]).
fn passing(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            matches!(status.code, 429 | 500..=599)
                || (status.code == 403 && !status.message.contains("exceeded quota"))
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) => true,
        _ => false,
    }
}

/// Map a Kubernetes error to what it means for a view write.
pub(super) fn map(error: kube::Error, view: &str) -> WriteError {
    match error {
        kube::Error::Api(status) => match status.code {
            404 => WriteError::NotFound(view.into()),
            409 => WriteError::Conflict(view.into()),
            403 if status.message.contains("exceeded quota") => {
                WriteError::QuotaExceeded(status.message)
            }
            429 | 500..=599 => WriteError::Unavailable(status.message),
            code => WriteError::Refused {
                code,
                message: status.message,
            },
        },
        other => WriteError::Unavailable(other.to_string()),
    }
}
