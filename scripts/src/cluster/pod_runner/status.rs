//! The pod status the runner reports, kept as state and rendered as one
//! strategic-merge patch of the status subresource.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{Timestamp, Unit};

use crate::cluster::network;

/// Now, at the API's one-second resolution.
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(now.round(Unit::Second).unwrap_or(now))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Time,
}

#[derive(Clone, Debug)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated(Terminated),
}

#[derive(Clone, Debug)]
struct Condition {
    status: bool,
    reason: Option<String>,
    message: Option<String>,
    since: Time,
}

impl Condition {
    fn new(status: bool) -> Self {
        Self {
            status,
            reason: None,
            message: None,
            since: now(),
        }
    }

    /// Only a change of `status` moves lastTransitionTime.
    fn set(&mut self, status: bool, reason: Option<String>, message: Option<String>) {
        if self.status != status {
            self.since = now();
        }
        self.status = status;
        self.reason = reason;
        self.message = message;
    }

    fn render(&self, kind: &str) -> PodCondition {
        PodCondition {
            type_: kind.into(),
            status: if self.status { "True" } else { "False" }.into(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            last_transition_time: Some(self.since.clone()),
            ..PodCondition::default()
        }
    }
}

pub struct Status {
    pub phase: Phase,
    reason: Option<String>,
    message: Option<String>,
    pod_ip: Option<Ipv4Addr>,
    start_time: Time,
    initialized: Condition,
    sandbox: Condition,
    ready: Condition,
    container_name: String,
    image: String,
    pub state: State,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    pub container_id: Option<String>,
    pub image_id: Option<String>,
    container_ready: bool,
}

impl Status {
    /// A fresh status for a pod the runner has just taken on, keeping the
    /// start time the pod may already carry.
    pub fn new(pod: &Pod) -> Self {
        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .unwrap_or_else(now);
        let mut status = Self {
            phase: Phase::Pending,
            reason: None,
            message: None,
            pod_ip: None,
            start_time,
            initialized: Condition::new(true),
            sandbox: Condition::new(false),
            ready: Condition::new(false),
            container_name: container.map(|c| c.name.clone()).unwrap_or_default(),
            image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            container_id: None,
            image_id: None,
            container_ready: false,
        };
        status.update_ready();
        status
    }

    pub fn set_pod_ip(&mut self, ip: Option<Ipv4Addr>) {
        self.pod_ip = ip;
        self.sandbox.set(ip.is_some(), None, None);
    }

    pub fn set_container_ready(&mut self, ready: bool) {
        self.container_ready = ready;
        self.update_ready();
    }

    /// End the pod: a terminal phase, never to change again.
    pub fn finish(&mut self, phase: Phase, reason: Option<String>, message: Option<String>) {
        self.phase = phase;
        self.reason = reason;
        self.message = message;
        self.container_ready = false;
        self.sandbox.set(false, None, None);
        self.update_ready();
    }

    fn update_ready(&mut self) {
        let (reason, message) = match (self.phase, self.container_ready) {
            (_, true) => (None, None),
            (Phase::Succeeded, _) => (Some("PodCompleted".to_owned()), None),
            (Phase::Failed, _) => (Some("PodFailed".to_owned()), None),
            _ => (
                Some("ContainersNotReady".to_owned()),
                Some(format!(
                    "containers with unready status: [{}]",
                    self.container_name
                )),
            ),
        };
        self.ready.set(self.container_ready, reason, message);
    }

    /// [`render`](Self::render) as the body of a strategic-merge patch.
    /// Conditions merge by type, field by field, so a reason or message that
    /// no longer applies must be cleared with an explicit null.
    pub fn to_patch(&self) -> serde_json::Result<serde_json::Value> {
        let mut value = serde_json::to_value(self.render())?;
        let conditions = value
            .get_mut("conditions")
            .and_then(|c| c.as_array_mut())
            .into_iter()
            .flatten();
        for condition in conditions {
            if let Some(condition) = condition.as_object_mut() {
                for key in ["reason", "message"] {
                    condition.entry(key).or_insert(serde_json::Value::Null);
                }
            }
        }
        Ok(value)
    }

    /// The whole status this runner owns. Conditions merge by type, so the
    /// scheduler's PodScheduled (and anyone else's) is left alone; the
    /// container status list is replaced whole.
    pub fn render(&self) -> PodStatus {
        let started = matches!(self.state, State::Running { .. });
        let container = ContainerStatus {
            name: self.container_name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone().unwrap_or_default(),
            container_id: self.container_id.clone(),
            ready: self.container_ready,
            started: Some(started),
            restart_count: self.restart_count,
            state: Some(render_state(&self.state)),
            last_state: Some(
                self.last_state
                    .clone()
                    .map(|t| render_state(&State::Terminated(t)))
                    .unwrap_or_default(),
            ),
            ..ContainerStatus::default()
        };
        PodStatus {
            phase: Some(self.phase.as_str().into()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            host_ip: Some(network::HOST_IP.to_string()),
            host_ips: Some(vec![HostIP {
                ip: network::HOST_IP.to_string(),
            }]),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            pod_ips: self.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
            start_time: Some(self.start_time.clone()),
            conditions: Some(vec![
                self.initialized.render("Initialized"),
                self.sandbox.render("PodReadyToStartContainers"),
                self.ready.render("ContainersReady"),
                self.ready.render("Ready"),
            ]),
            container_statuses: Some(vec![container]),
            ..PodStatus::default()
        }
    }
}

fn render_state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: t.started_at.clone(),
                finished_at: Some(t.finished_at.clone()),
                container_id: None,
            }),
            ..ContainerState::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(status: &'a PodStatus, kind: &str) -> &'a PodCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn ready_conditions_follow_the_container_and_the_phase() {
        let mut status = Status::new(&Pod::default());
        status.set_pod_ip(Some(Ipv4Addr::new(10, 233, 1, 1)));
        let rendered = status.render();
        assert_eq!(condition(&rendered, "Ready").status, "False");
        assert_eq!(
            condition(&rendered, "PodReadyToStartContainers").status,
            "True"
        );
        status.set_container_ready(true);
        let rendered = status.render();
        assert_eq!(condition(&rendered, "Ready").status, "True");
        assert_eq!(condition(&rendered, "ContainersReady").reason, None);
        status.finish(Phase::Succeeded, None, None);
        let rendered = status.render();
        assert_eq!(
            condition(&rendered, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
        assert_eq!(rendered.phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn patches_clear_condition_reasons_that_no_longer_apply() {
        let mut status = Status::new(&Pod::default());
        status.set_container_ready(true);
        let patch = status.to_patch().unwrap();
        let ready = patch["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["reason"], serde_json::Value::Null);
        assert!(ready.as_object().unwrap().contains_key("message"));
    }
}
