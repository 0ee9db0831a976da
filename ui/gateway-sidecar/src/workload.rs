//! What a running view is in Kubernetes terms: one Job per activation, its
//! pod, and a Secret with the activation's lake credentials. Pure mapping
//! (objects to write, and the activation state read back from what the
//! watches see), shared by the activator (writes) and the index (reads).
//!
//! ```text
//! Service view-<name>                         (the view)
//!   └─ owns Job view-<name>-<n>               n = 1 + the highest activation seen
//!        labels: managed-by, views.dev/view=<name>, views.dev/activation=<n>
//!        activeDeadlineSeconds = the view's deadline, ttlSecondsAfterFinished
//!        ├─ owns Pod (labels as the Job: the Service selects it by views.dev/view)
//!        └─ owns Secret view-<name>-<n>-s3    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
//! Service annotation views.dev/last-failure   why the last start failed (kept after
//!                                             its Job is deleted, for the API status)
//! ```
//!
//! Names are deterministic per activation, so replicas that race to start a
//! view collide on AlreadyExists instead of starting two.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, Event,
    HTTPGetAction, ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use views_types::ViewRequest;

use crate::config::Config;
use crate::view::{MANAGED_BY, MANAGED_BY_LABEL, VIEW_LABEL, service_name};

/// On a view's Job and pods: the activation number.
pub const ACTIVATION_LABEL: &str = "views.dev/activation";
/// On the view's Service: the last start that failed fast (JSON [`Failure`]).
pub const FAILURE_ANNOTATION: &str = "views.dev/last-failure";
/// On the view's Service: the Job of the last run the API stopped (stop,
/// restart). Deleted Jobs leave the index at once, so without it the next
/// start would take the same name, and find the old run's credentials
/// Secret (deleted later by the garbage collector) in its way.
pub const STOPPED_RUN_ANNOTATION: &str = "views.dev/stopped-run";
/// On a view's Job: the operator's cap on one run (`MAX_RUN_SECONDS`) when
/// it was created. Its deadline may be extended up to its start plus this,
/// and its lake keys expire then.
pub const MAX_RUN_ANNOTATION: &str = "views.dev/max-run-seconds";
const CONTAINER: &str = "view";
const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

pub fn job_name(view: &str, activation: u32) -> String {
    format!("{}-{activation}", service_name(view))
}

pub fn secret_name(job: &str) -> String {
    format!("{job}-s3")
}

/// Why a start cannot succeed (or did not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The Job that failed.
    pub job: String,
    /// A short machine-readable reason (Kubernetes' own where it has one:
    /// `ErrImagePull`, `Unschedulable`, `FailedCreate`, `BackoffLimitExceeded`…).
    pub reason: String,
    pub message: String,
}

/// Where one activation stands, as the watches see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// The Job exists; no pod yet.
    Pending,
    /// A pod is bound to a node.
    Scheduled,
    /// The pod runs but is not ready.
    Starting,
    /// The pod is ready.
    Ready,
    /// It cannot start (or stopped) for this reason.
    Failed(Failure),
    /// The Job finished (deadline reached, completed) or is being deleted.
    Ended { reason: String },
}

impl Phase {
    /// Still on its way up or up: a request should wait for it rather than
    /// start another.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Phase::Pending | Phase::Scheduled | Phase::Starting | Phase::Ready
        )
    }
}

/// One activation of a view: its Job, and what its pod and events say.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub number: u32,
    pub job: String,
    pub uid: String,
    pub created_at: Option<jiff::Timestamp>,
    /// When `activeDeadlineSeconds` ends it.
    pub deadline: Option<jiff::Timestamp>,
    /// The latest its deadline may be extended to (its start plus
    /// [`MAX_RUN_ANNOTATION`]; never before `deadline`).
    pub max_deadline: Option<jiff::Timestamp>,
    /// What its pod requests (from the Job's pod template).
    pub requests: Requests,
    pub phase: Phase,
}

/// CPU and memory a run's pod requests, as Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl Activation {
    /// When its lake keys expire: as late as its deadline can ever be.
    pub fn keys_expire_at(&self) -> Option<jiff::Timestamp> {
        self.max_deadline.or(self.deadline)
    }
}

/// The view's Job for activation `number`, owned by its Service.
pub fn job(
    spec: &ViewRequest,
    service: &ServiceRef,
    number: u32,
    credentials: bool,
    config: &Config,
) -> Job {
    let view = spec.name.to_string();
    let name = job_name(&view, number);
    let labels = labels(&view, number);
    let workload = &config.workload;
    let annotations: BTreeMap<String, String> =
        workload.view_pod_annotations.iter().cloned().collect();
    let deadline = spec
        .deadline_seconds
        .as_ref()
        .map_or(config.default_deadline_seconds, |d| d.0);
    let subsets = serde_json::to_string(&spec.subsets).expect("subsets serialize");
    let mut env = vec![
        field_env("POD_IP", "status.podIP"),
        plain_env("VIEW_NAME", &view),
        plain_env("VIEW_LISTEN", &format!("$(POD_IP):{}", config.view_port)),
        plain_env("VIEW_SUBSETS", &subsets),
        // Who a request's verified identity names: each person sharing the
        // view sees and cancels only their own queries.
        plain_env("VIEW_USER_CLAIM", &config.identity.oidc_user_claim),
    ];
    if credentials {
        let secret = secret_name(&name);
        env.extend([
            secret_env(ACCESS_KEY_ID, &secret),
            secret_env(SECRET_ACCESS_KEY, &secret),
            plain_env("AWS_REGION", &config.credentials.lake_region),
        ]);
        if let Some(url) = &config.credentials.credentials_endpoint_url {
            env.push(plain_env("AWS_ENDPOINT_URL_S3", url));
        }
    }
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(workload.view_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(config.view_port),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("http".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(
                &workload.view_cpu_request,
                &workload.view_memory_request,
            )),
            limits: Some(quantities(
                &workload.view_cpu_limit,
                &workload.view_memory_limit,
            )),
            ..ResourceRequirements::default()
        }),
        // The root filesystem is read-only; scratch space is this emptyDir.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                MAX_RUN_ANNOTATION.to_string(),
                workload.max_run_seconds.max(deadline).to_string(),
            )])),
            owner_references: Some(vec![service.owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(deadline),
            backoff_limit: Some(2),
            ttl_seconds_after_finished: Some(workload.finished_job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("1Gi".into())),
                            ..EmptyDirVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    // The process restarts in place; the Job's backoff limit
                    // ends a view that keeps crashing.
                    restart_policy: Some("OnFailure".into()),
                    runtime_class_name: workload
                        .view_runtime_class
                        .clone()
                        .filter(|c| !c.is_empty()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(10),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The labels of an activation's Job, pods and Secret.
fn labels(view: &str, number: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (VIEW_LABEL.to_string(), view.to_string()),
        (ACTIVATION_LABEL.to_string(), number.to_string()),
    ])
}

/// The activation's lake credentials, owned by its Job (deleted with it).
pub fn secret(
    view: &str,
    activation: &Activation,
    access_key_id: &str,
    secret_access_key: &str,
    config: &Config,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&activation.job)),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels(view, activation.number)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: activation.job.clone(),
                uid: activation.uid.clone(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            (ACCESS_KEY_ID.to_string(), access_key_id.to_string()),
            (SECRET_ACCESS_KEY.to_string(), secret_access_key.to_string()),
        ])),
        immutable: Some(true),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// What a Job needs to name its owner.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub name: String,
    pub uid: String,
}

impl ServiceRef {
    pub fn of(service: &Service) -> Self {
        Self {
            name: service.metadata.name.clone().unwrap_or_default(),
            uid: service.metadata.uid.clone().unwrap_or_default(),
        }
    }

    fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            // Not blockOwnerDeletion: that needs update rights on the
            // Service's finalizers, and nothing waits on it.
            ..OwnerReference::default()
        }
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: name.into(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The view and activation number a Job or pod belongs to, from its labels.
pub fn activation_of(meta: &ObjectMeta) -> Option<(String, u32)> {
    let labels = meta.labels.as_ref()?;
    let view = labels.get(VIEW_LABEL)?.clone();
    let number = labels.get(ACTIVATION_LABEL)?.parse().ok()?;
    Some((view, number))
}

/// Container waiting reasons after which a pod will not start by itself.
const HOPELESS_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerError",
];

/// Read one activation from its Job, the Job's pods and `FailedCreate` events.
pub fn read_activation(job: &Job, pods: &[&Pod], events: &[&Event]) -> Option<Activation> {
    let (_, number) = activation_of(&job.metadata)?;
    let name = job.metadata.name.clone()?;
    let created_at = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .zip(created_at)
        .and_then(|(seconds, created)| {
            created
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .ok()
        });
    let max_deadline = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAX_RUN_ANNOTATION)?.parse::<i64>().ok())
        .zip(created_at)
        .and_then(|(seconds, created)| {
            created
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .ok()
        })
        .map(|limit| deadline.map_or(limit, |d| d.max(limit)));
    let requests = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first()?.resources.as_ref()?.requests.as_ref())
        .map(|r| Requests {
            cpu: r.get("cpu").map(|q| q.0.clone()),
            memory: r.get("memory").map(|q| q.0.clone()),
        })
        .unwrap_or_default();
    let failure = |reason: &str, message: &str| {
        Phase::Failed(Failure {
            job: name.clone(),
            reason: reason.into(),
            message: message.into(),
        })
    };
    let phase = if job.metadata.deletion_timestamp.is_some() {
        Phase::Ended {
            reason: "Deleted".into(),
        }
    } else if let Some(finished) = finished_condition(job) {
        match finished {
            ("Failed", reason, _) if reason == "DeadlineExceeded" => Phase::Ended { reason },
            ("Failed", reason, message) => failure(&reason, &message),
            (_, reason, _) => Phase::Ended { reason },
        }
    } else if let Some((reason, message)) = pods.iter().find_map(|pod| hopeless(pod)) {
        failure(&reason, &message)
    } else if let Some(event) = events.iter().find(|e| {
        e.message
            .as_deref()
            .is_some_and(|m| m.contains("forbidden") || m.contains("exceeded quota"))
    }) {
        let message = event.message.clone().unwrap_or_default();
        let reason = if message.contains("exceeded quota") {
            "QuotaExceeded"
        } else {
            "FailedCreate"
        };
        failure(reason, &message)
    } else {
        pods.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|pod| pod_phase(pod))
            .max_by_key(phase_rank)
            .unwrap_or(Phase::Pending)
    };
    Some(Activation {
        number,
        job: name,
        uid: job.metadata.uid.clone().unwrap_or_default(),
        created_at,
        deadline,
        max_deadline,
        requests,
        phase,
    })
}

fn phase_rank(phase: &Phase) -> u8 {
    match phase {
        Phase::Pending => 0,
        Phase::Scheduled => 1,
        Phase::Starting => 2,
        Phase::Ready => 3,
        Phase::Failed(_) | Phase::Ended { .. } => 4,
    }
}

/// The Job's terminal condition: (type, reason, message).
fn finished_condition(job: &Job) -> Option<(&'static str, String, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| {
            let kind = match c.type_.as_str() {
                "Failed" => "Failed",
                "Complete" => "Complete",
                _ => return None,
            };
            Some((
                kind,
                c.reason.clone().unwrap_or_else(|| kind.to_string()),
                c.message.clone().unwrap_or_default(),
            ))
        })
}

/// A reason this pod will never become ready on its own.
fn hopeless(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        return Some((
            "Unschedulable".into(),
            condition.message.clone().unwrap_or_default(),
        ));
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| HOPELESS_WAITING.contains(&r))
        })
        .map(|w| {
            (
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default(),
            )
        })
}

fn pod_phase(pod: &Pod) -> Phase {
    let Some(status) = pod.status.as_ref() else {
        return Phase::Pending;
    };
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    if condition("Ready") {
        Phase::Ready
    } else if status.phase.as_deref() == Some("Running") || status.pod_ip.is_some() {
        Phase::Starting
    } else if condition("PodScheduled") || pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
    {
        Phase::Scheduled
    } else {
        Phase::Pending
    }
}

/// The last fast failure recorded on the view's Service.
pub fn read_failure(annotations: &BTreeMap<String, String>) -> Option<Failure> {
    serde_json::from_str(annotations.get(FAILURE_ANNOTATION)?).ok()
}

/// The number of the last run the API stopped (see [`STOPPED_RUN_ANNOTATION`]).
pub fn read_stopped_run(annotations: &BTreeMap<String, String>) -> Option<u32> {
    activation_of_job_name(annotations.get(STOPPED_RUN_ANNOTATION)?)
}

/// The activation number in a Job name (`view-<name>-<n>`).
pub fn activation_of_job_name(job: &str) -> Option<u32> {
    job.rsplit_once('-')?.1.parse().ok()
}

/// The view in a Job name (`view-<name>-<n>`).
pub fn view_of_job_name(job: &str) -> Option<&str> {
    let (service, number) = job.rsplit_once('-')?;
    number.parse::<u32>().ok()?;
    service
        .strip_prefix("view-")
        .filter(|view| !view.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use googletest::prelude::*;
    use serde_json::json;

    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("gateway-sidecar").chain(args.iter().copied()))
    }

    fn spec() -> ViewRequest {
        serde_json::from_value(json!({
            "name": "sales", "deadlineSeconds": 600,
            "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}],
        }))
        .expect("spec")
    }

    fn owner() -> ServiceRef {
        ServiceRef {
            name: "view-sales".into(),
            uid: "uid-1".into(),
        }
    }

    fn a_job() -> Job {
        let mut job = job(&spec(), &owner(), 3, true, &config(&[]));
        job.metadata.uid = Some("job-uid".into());
        job.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        job
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {VIEW_LABEL: "sales", ACTIVATION_LABEL: "3"}},
            "status": status,
        }))
        .expect("pod")
    }

    #[gtest]
    fn a_run_may_be_extended_up_to_its_start_plus_the_cap_and_says_what_it_requests() {
        let run = read_activation(&a_job(), &[], &[]).expect("an activation");
        let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        expect_that!(
            run.deadline,
            some(eq(start + jiff::SignedDuration::from_secs(600)))
        );
        // MAX_RUN_SECONDS' default: 8 h from the start; keys live that long.
        let cap = start + jiff::SignedDuration::from_hours(8);
        expect_that!(run.max_deadline, some(eq(cap)));
        expect_that!(run.keys_expire_at(), some(eq(cap)));
        expect_that!(run.requests.cpu.as_deref(), some(eq("250m")));
        expect_that!(run.requests.memory.as_deref(), some(eq("512Mi")));
        // A view whose own deadline is past the cap keeps its deadline.
        let mut long = a_job();
        long.metadata
            .annotations
            .get_or_insert_default()
            .insert(MAX_RUN_ANNOTATION.into(), "300".into());
        let run = read_activation(&long, &[], &[]).expect("an activation");
        expect_that!(run.max_deadline, eq(run.deadline));
        // A Job from before the cap: no extension, keys until its deadline.
        let mut old = a_job();
        old.metadata.annotations = None;
        let run = read_activation(&old, &[], &[]).expect("an activation");
        expect_that!(run.max_deadline, none());
        expect_that!(run.keys_expire_at(), eq(run.deadline));
    }

    #[gtest]
    fn the_job_is_owned_by_the_view_deadlined_hardened_and_selected_by_the_service() {
        let job = a_job();
        expect_that!(job.metadata.name.as_deref(), some(eq("view-sales-3")));
        let owners = job.metadata.owner_references.clone().unwrap_or_default();
        expect_that!(owners.len(), eq(1));
        expect_that!(owners[0].kind, eq("Service"));
        expect_that!(owners[0].uid, eq("uid-1"));
        let spec = job.spec.expect("spec");
        expect_that!(spec.active_deadline_seconds, some(eq(600)));
        let template = spec.template;
        let labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
        expect_that!(
            labels.get(VIEW_LABEL).map(String::as_str),
            some(eq("sales"))
        );
        let pod = template.spec.expect("pod spec");
        let pod_security = pod.security_context.expect("pod security context");
        expect_that!(pod_security.run_as_non_root, some(eq(true)));
        expect_that!(
            pod_security.seccomp_profile.map(|p| p.type_),
            some(eq("RuntimeDefault"))
        );
        expect_that!(pod.automount_service_account_token, some(eq(false)));
        let container = &pod.containers[0];
        let security = container
            .security_context
            .clone()
            .expect("security context");
        expect_that!(security.allow_privilege_escalation, some(eq(false)));
        expect_that!(security.read_only_root_filesystem, some(eq(true)));
        expect_that!(
            security.capabilities.and_then(|c| c.drop),
            some(elements_are![eq("ALL")])
        );
        let resources = container.resources.clone().expect("resources");
        expect_that!(resources.limits.map(|l| l.len()), some(eq(2)));
        expect_that!(
            container.image.as_deref(),
            some(eq("ghcr.io/views-gateway/duckdb-view:0.1.0"))
        );
        // Credentials come from the activation's Secret, never inline.
        let env = container.env.clone().unwrap_or_default();
        let key = env
            .iter()
            .find(|e| e.name == "AWS_SECRET_ACCESS_KEY")
            .expect("key env");
        expect_that!(key.value, none());
        expect_that!(
            key.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| s.name.as_str()),
            some(eq("view-sales-3-s3"))
        );
    }

    #[gtest]
    fn an_unpinned_image_is_refused_at_start_up() {
        expect_that!(
            config(&["--view-image", "registry.example/duckdb-view"]).validate(),
            err(anything())
        );
        expect_that!(
            config(&["--view-image", "registry.example:5000/duckdb-view"]).validate(),
            err(anything())
        );
        expect_that!(
            config(&["--view-image", "registry.example:5000/duckdb-view:1.2.0"]).validate(),
            ok(anything())
        );
        expect_that!(
            config(&["--view-image", "duckdb-view@sha256:abc"]).validate(),
            ok(anything())
        );
    }

    #[gtest]
    fn phases_follow_the_pod_and_hopeless_pods_fail_with_kubernetes_reason() {
        let job = a_job();
        let read = |pods: &[Pod]| {
            let pods: Vec<&Pod> = pods.iter().collect();
            read_activation(&job, &pods, &[]).expect("activation").phase
        };
        expect_that!(read(&[]), eq(&Phase::Pending));
        expect_that!(
            read(&[pod(
                json!({"conditions": [{"type": "PodScheduled", "status": "True"}]})
            )]),
            eq(&Phase::Scheduled)
        );
        expect_that!(
            read(&[pod(json!({"phase": "Running", "podIP": "10.0.0.1"}))]),
            eq(&Phase::Starting)
        );
        expect_that!(
            read(&[pod(
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
            )]),
            eq(&Phase::Ready)
        );
        let pulling = pod(json!({"containerStatuses": [{
            "name": "view", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}},
        }]}));
        expect_that!(
            read(&[pulling]),
            matches_pattern!(Phase::Failed(matches_pattern!(Failure {
                reason: eq("ErrImagePull"),
                message: eq("no such image"),
                job: eq("view-sales-3"),
            })))
        );
        let unschedulable = pod(json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available",
        }]}));
        expect_that!(
            read(&[unschedulable]),
            matches_pattern!(Phase::Failed(matches_pattern!(Failure {
                reason: eq("Unschedulable"),
                ..
            })))
        );
    }

    #[gtest]
    fn quota_refusals_fail_the_start_and_a_deadline_only_ends_it() {
        let job = a_job();
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Job", "name": "view-sales-3"},
            "reason": "FailedCreate",
            "message": "Error creating: pods \"view-sales-3-x\" is forbidden: exceeded quota: views, requested: pods=1",
        }))
        .expect("event");
        expect_that!(
            read_activation(&job, &[], &[&event]).map(|a| a.phase),
            some(matches_pattern!(Phase::Failed(matches_pattern!(Failure {
                reason: eq("QuotaExceeded"),
                ..
            }))))
        );
        let mut ended = job.clone();
        ended.status = Some(
            serde_json::from_value(json!({"conditions": [{
                "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            }]}))
            .expect("status"),
        );
        let activation = read_activation(&ended, &[], &[]).expect("activation");
        expect_that!(activation.phase.is_live(), eq(false));
        expect_that!(activation.phase, matches_pattern!(Phase::Ended { .. }));
        expect_that!(
            activation.deadline.map(|d| d.to_string()),
            some(eq("2026-01-01T00:10:00Z"))
        );
    }

    #[gtest]
    fn job_names_give_back_their_view_and_activation() {
        let job = job_name("sales-eu", 12);
        expect_that!(view_of_job_name(&job), some(eq("sales-eu")));
        expect_that!(activation_of_job_name(&job), some(eq(12)));
        expect_that!(view_of_job_name("view-sales"), none());
        expect_that!(view_of_job_name("other-sales-1"), none());
        expect_that!(view_of_job_name("view--1"), none());
    }
}
