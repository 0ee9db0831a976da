//! One pod's life on the process node, from first sight until it is gone from
//! the API: address, process, probes, restarts, status, graceful deletion.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;

use super::images::Images;
use super::ipam::{self, Ipam};
use super::probe::Prober;
use super::process::{self, Records, Spawner};
use super::status::{self, Phase, State, Status, Terminated};
use super::{Error, env};

/// A pod's grace period is capped so a test or `cluster down` never waits
/// minutes for a process that ignores SIGTERM.
const MAX_GRACE: Duration = Duration::from_secs(30);
/// The runner itself shutting down gives its pods less time still.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A container that ran this long before exiting restarts without backoff
/// history, as the kubelet forgets a container's crashes after a while.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
const START_RETRY_MAX: Duration = Duration::from_secs(10);
const PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// What the runner holds for every worker.
pub struct Shared {
    pub client: Client,
    pub images_path: PathBuf,
    pub repo_root: PathBuf,
    pub pod_logs: PathBuf,
    pub records: Records,
    pub ipam: Ipam,
    pub spawner: Spawner,
    pub recorder: Recorder,
}

/// The latest word from the watch about a pod.
#[derive(Clone)]
pub enum Update {
    Pod(Box<Pod>),
    /// Deleted from the API (the final object).
    Gone(Box<Pod>),
}

enum Interrupt {
    /// `deletionTimestamp` is set: the kubelet's part of graceful deletion.
    Deleting,
    /// The pod vanished without us (force deletion, or after our own delete).
    Gone,
    /// The runner is stopping.
    Shutdown,
}

enum Outcome {
    Exited(Terminated),
    Interrupted(Interrupt),
}

pub struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    uid: String,
    api: Api<Pod>,
    updates: watch::Receiver<Update>,
    shutdown: watch::Receiver<bool>,
    gone: bool,
    shutting_down: bool,
    status: Status,
    ip: Option<Ipv4Addr>,
    published: Option<serde_json::Value>,
    publish_retry: Option<Instant>,
    last_event: Option<String>,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        pod: Pod,
        updates: watch::Receiver<Update>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let api = Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
        Self {
            api,
            uid: pod.uid().unwrap_or_default(),
            status: Status::new(&pod),
            pod,
            shared,
            updates,
            shutdown,
            gone: false,
            shutting_down: false,
            ip: None,
            published: None,
            publish_retry: None,
            last_event: None,
        }
    }

    pub async fn run(mut self) {
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.clone());
        // An address this pod held under an earlier runner stays its own.
        self.ip = self.shared.ipam.owned_by(&self.uid);
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            self.release_ip().await;
            return self.linger().await;
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            return self.handle(Interrupt::Deleting, None).await;
        }
        if started_by_an_earlier_runner(&self.pod) {
            // Its process died with that runner (see process.rs): say so
            // rather than pretend it still runs.
            tracing::warn!("pod was running under an earlier pod runner; marking it Failed");
            self.status.set_pod_ip(self.ip);
            self.status.state = State::Terminated(Terminated {
                exit_code: 137,
                signal: None,
                reason: "ContainerStatusUnknown".into(),
                message: Some("the pod runner restarted; the process was stopped".into()),
                started_at: previous_start(&self.pod),
                finished_at: status::now(),
            });
            self.status.finish(
                Phase::Failed,
                Some("PodRunnerRestarted".into()),
                Some("the pod runner restarted while this pod was running".into()),
            );
            self.publish().await;
            self.release_ip().await;
            return self.linger().await;
        }
        let container = match single_container(&self.pod) {
            Ok(container) => container,
            Err(message) => {
                tracing::warn!(message, "pod cannot run as a process");
                self.event(EventType::Warning, "Failed", "Validate", message.clone())
                    .await;
                self.status.finish(
                    Phase::Failed,
                    Some("UnsupportedPodSpec".into()),
                    Some(message),
                );
                self.publish().await;
                return self.linger().await;
            }
        };
        self.status.restart_count = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map_or(0, |c| c.restart_count);
        self.run_container(&container).await;
    }

    async fn run_container(&mut self, container: &Container) {
        let restart_policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            let mut child = match self.start(container).await {
                Ok(child) => child,
                Err(interrupt) => return self.handle(interrupt, None).await,
            };
            let ran_from = Instant::now();
            // Known only until the child is reaped.
            let pgid = child.id();
            let terminated = match self.supervise(container, &mut child).await {
                Outcome::Interrupted(interrupt) => {
                    return self.handle(interrupt, Some(child)).await;
                }
                Outcome::Exited(terminated) => terminated,
            };
            let mut terminated = terminated;
            if terminated.exit_code != 0
                && container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
            {
                terminated.message = log_tail(&self.log_path(container));
            }
            if let Some(pgid) = pgid {
                // What the process forked dies with it, as with a container.
                process::signal_group(pgid, Signal::SIGKILL);
                self.shared.records.remove(pgid);
            }
            tracing::info!(exit_code = terminated.exit_code, "process exited");
            let restart = match restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => terminated.exit_code != 0,
                _ => true,
            };
            if !restart {
                let phase = if terminated.exit_code == 0 {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                self.status.state = State::Terminated(terminated);
                self.status.finish(phase, None, None);
                self.publish().await;
                self.release_ip().await;
                return self.linger().await;
            }
            if ran_from.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = RESTART_BACKOFF_MIN;
            }
            let message = format!(
                "back-off {}s restarting failed container={}",
                backoff.as_secs(),
                container.name
            );
            self.event(EventType::Warning, "BackOff", "Restart", message.clone())
                .await;
            self.status.last_state = Some(terminated);
            self.status.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(message),
            };
            self.status.set_container_ready(false);
            self.publish().await;
            if let Some(interrupt) = self.wait(Some(Instant::now() + backoff)).await {
                return self.handle(interrupt, None).await;
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            self.status.restart_count = self.status.restart_count.saturating_add(1);
        }
    }

    /// Get the process running, retrying (as the kubelet's sync loop does)
    /// while something it needs is missing.
    async fn start(&mut self, container: &Container) -> Result<Child, Interrupt> {
        let mut retry = Duration::from_secs(1);
        loop {
            match self.try_start(container).await {
                Ok(child) => {
                    self.last_event = None;
                    return Ok(child);
                }
                Err(error) => {
                    let (reason, message) = match error {
                        Error::Container { reason, message } => (reason, message),
                        Error::ImagesFile { .. } => ("ErrImagePull", error.to_string()),
                        other => ("ContainerCreating", other.to_string()),
                    };
                    if self.last_event.as_deref() != Some(message.as_str()) {
                        tracing::warn!(reason, message, "cannot start the process yet");
                        self.event(
                            EventType::Warning,
                            "Failed",
                            "Start",
                            format!("{reason}: {message}"),
                        )
                        .await;
                        self.last_event = Some(message.clone());
                    }
                    self.status.state = State::Waiting {
                        reason: reason.into(),
                        message: Some(message),
                    };
                    self.publish().await;
                    if let Some(interrupt) = self.wait(Some(Instant::now() + retry)).await {
                        return Err(interrupt);
                    }
                    retry = (retry * 2).min(START_RETRY_MAX);
                }
            }
        }
    }

    async fn try_start(&mut self, container: &Container) -> Result<Child, Error> {
        let ip = match self.ip {
            Some(ip) => ip,
            None => {
                let ip = self.shared.ipam.allocate(&self.uid)?;
                self.ip = Some(ip);
                ip
            }
        };
        ipam::add_address(ip).await?;
        if self.status.phase == Phase::Pending {
            self.status.set_pod_ip(Some(ip));
        }
        let images = Images::load(&self.shared.images_path, &self.shared.repo_root)?;
        let image = images.resolve(container.image.as_deref().unwrap_or_default())?;
        let env = env::resolve(&self.shared.client, &self.pod, container, ip).await?;
        let args = env::command_line(container, &image, &env)?;
        let working_dir = container
            .working_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("/");
        let log = self.log_path(container);
        let child = self
            .shared
            .spawner
            .spawn(&process::Spec {
                binary: &image.binary,
                args: &args,
                env: &env,
                working_dir: Path::new(working_dir),
                log: &log,
            })
            .await?;
        let pid = child.id().unwrap_or_default();
        self.shared.records.add(
            pid,
            &format!(
                "{}/{}",
                self.pod.namespace().unwrap_or_default(),
                self.pod.name_any()
            ),
        );
        tracing::info!(pid, %ip, binary = %image.binary.display(), ?args, "started process");
        self.status.container_id = Some(format!("process://{pid}"));
        self.status.image_id = Some(format!("process://{}", image.binary.display()));
        self.status.state = State::Running {
            started_at: status::now(),
        };
        self.status.phase = Phase::Running;
        self.status.set_container_ready(false);
        self.publish().await;
        self.event(
            EventType::Normal,
            "Started",
            "Start",
            format!("Started container {} (pid {pid}, {ip})", container.name),
        )
        .await;
        Ok(child)
    }

    /// Watch the running process: probes, exit, deletion.
    async fn supervise(&mut self, container: &Container, child: &mut Child) -> Outcome {
        let started_at = match &self.status.state {
            State::Running { started_at } => Some(started_at.clone()),
            _ => None,
        };
        let ip = self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut prober = container
            .readiness_probe
            .as_ref()
            .map(|probe| Prober::new(probe, container, ip));
        match &prober {
            None => {
                self.status.set_container_ready(true);
                self.publish().await;
            }
            Some(p) => {
                if let Some(why) = p.unsupported() {
                    let why = why.to_owned();
                    tracing::warn!(why, "readiness probe can never pass");
                    self.event(
                        EventType::Warning,
                        "Unhealthy",
                        "Probe",
                        format!("Readiness probe errored: {why}"),
                    )
                    .await;
                }
            }
        }
        // `sim.views.dev/ready-after` means for a process pod what it means
        // for a kwok-simulated one: not ready before that delay.
        let simulated = simulated_ready_after(&self.pod);
        let mut next_probe = Instant::now()
            + prober
                .as_ref()
                .map_or(Duration::ZERO, |p| p.initial_delay)
                .max(simulated);
        loop {
            let probe_due = async {
                match &prober {
                    Some(p) if p.unsupported().is_none() => {
                        tokio::time::sleep_until(next_probe).await;
                        p.probe().await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                exit = child.wait() => {
                    return Outcome::Exited(terminated(exit, started_at));
                }
                result = probe_due => {
                    let Some(p) = prober.as_mut() else { continue };
                    // Probes run every period from when the last one was due,
                    // not from when it finished.
                    next_probe += p.period;
                    if next_probe < Instant::now() {
                        next_probe = Instant::now() + p.period;
                    }
                    if let Err(message) = &result {
                        tracing::debug!(message, "readiness probe failed");
                        self.event(EventType::Warning, "Unhealthy", "Probe", format!("Readiness probe failed: {message}")).await;
                    }
                    if let Some(ready) = p.record(result.is_ok()) {
                        tracing::info!(ready, "readiness changed");
                        self.status.set_container_ready(ready);
                        self.publish().await;
                    }
                }
                interrupt = self.interrupted() => return Outcome::Interrupted(interrupt),
            }
        }
    }

    /// Act on deletion, disappearance or shutdown, stopping `child` if any.
    async fn handle(&mut self, interrupt: Interrupt, child: Option<Child>) {
        let grace = match interrupt {
            Interrupt::Shutdown => self.grace().min(SHUTDOWN_GRACE),
            _ => self.grace(),
        };
        if let Some(mut child) = child {
            let pgid = child.id();
            if matches!(interrupt, Interrupt::Deleting) {
                let name = self.status_container_name();
                self.event(
                    EventType::Normal,
                    "Killing",
                    "Kill",
                    format!("Stopping container {name}"),
                )
                .await;
            }
            tracing::info!(?pgid, ?grace, "stopping process");
            process::stop(&mut child, grace).await;
            if let Some(pgid) = pgid {
                self.shared.records.remove(pgid);
            }
        }
        self.release_ip().await;
        match interrupt {
            Interrupt::Deleting => {
                self.delete().await;
                self.wait_gone().await;
            }
            Interrupt::Gone | Interrupt::Shutdown => {}
        }
    }

    fn log_path(&self, container: &Container) -> PathBuf {
        self.shared.pod_logs.join(format!(
            "{}_{}_{}.log",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any(),
            container.name
        ))
    }

    fn status_container_name(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    /// The grace period for stopping the process: the deletion's own, else
    /// the pod's, capped.
    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE)
    }

    /// Finish graceful deletion: the process is gone, so the object may go.
    async fn delete(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        loop {
            match self.api.delete(&self.pod.name_any(), &params).await {
                Ok(_) => return,
                // Already gone, or a new pod took the name: ours is gone.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(e) => tracing::warn!(error = %e, "deleting pod; retrying"),
            }
            // Not `wait`: the deletion that brought us here would end it at once.
            let retry_at = Instant::now() + PUBLISH_RETRY;
            if tokio::time::timeout_at(retry_at, self.wait_gone())
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// Keep the (finished) pod's status current until it is deleted.
    async fn linger(&mut self) {
        match self.wait(None).await {
            Some(Interrupt::Deleting) => {
                self.delete().await;
                self.wait_gone().await;
            }
            Some(Interrupt::Gone | Interrupt::Shutdown) | None => {}
        }
    }

    async fn wait_gone(&mut self) {
        while !self.gone && !self.shutting_down {
            self.next_update().await;
        }
    }

    /// Wait until `deadline` (None: forever) unless interrupted first.
    async fn wait(&mut self, deadline: Option<Instant>) -> Option<Interrupt> {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => None,
            interrupt = self.interrupted() => Some(interrupt),
        }
    }

    /// Resolves once the pod is being deleted, is gone, or the runner stops;
    /// meanwhile takes in pod updates and retries a failed status patch.
    async fn interrupted(&mut self) -> Interrupt {
        loop {
            if self.gone {
                return Interrupt::Gone;
            }
            if self.shutting_down {
                return Interrupt::Shutdown;
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                return Interrupt::Deleting;
            }
            self.next_update().await;
        }
    }

    async fn next_update(&mut self) {
        let retry = self.publish_retry;
        let retry_due = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.updates.changed() => match changed {
                Ok(()) => match self.updates.borrow_and_update().clone() {
                    Update::Pod(pod) => self.pod = *pod,
                    Update::Gone(pod) => {
                        self.pod = *pod;
                        self.gone = true;
                    }
                },
                // The runner dropped us: nothing will ever tell us more.
                Err(_) => self.gone = true,
            },
            changed = self.shutdown.changed() => {
                if changed.is_err() || *self.shutdown.borrow() {
                    self.shutting_down = true;
                }
            }
            () = retry_due => self.publish().await,
        }
    }

    /// Patch the status if it changed since the last successful patch. The
    /// pod's UID rides along so that a new pod of the same name is never
    /// written to by this (older) pod's worker.
    async fn publish(&mut self) {
        if self.gone {
            return;
        }
        let value = match self.status.to_patch() {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "rendering pod status");
                return;
            }
        };
        if self.published.as_ref() == Some(&value) {
            self.publish_retry = None;
            return;
        }
        let patch = serde_json::json!({
            "metadata": { "uid": self.uid },
            "status": value,
        });
        match self
            .api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {
                self.published = Some(value);
                self.publish_retry = None;
            }
            // A 422 about the UID means the name now belongs to a new pod.
            Err(kube::Error::Api(s))
                if s.code == 404 || (s.code == 422 && s.message.contains("metadata.uid")) =>
            {
                self.gone = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "patching pod status; will retry");
                self.publish_retry = Some(Instant::now() + PUBLISH_RETRY);
            }
        }
    }

    async fn release_ip(&mut self) {
        let Some(ip) = self.ip.take() else { return };
        if let Err(e) = ipam::remove_address(ip).await {
            tracing::warn!(%ip, error = %e, "removing pod address");
        }
        self.shared.ipam.release(ip);
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self
            .shared
            .recorder
            .publish(&event, &self.pod.object_ref(&()))
            .await
        {
            tracing::debug!(error = %e, reason, "publishing event");
        }
    }
}

/// The end of a log, as `terminationMessagePolicy: FallbackToLogsOnError`
/// reports it: at most the last 80 lines and 2048 bytes.
fn log_tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(2048))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// The one container a process pod may have, or why it cannot run.
fn single_container(pod: &Pod) -> Result<Container, String> {
    let Some(spec) = &pod.spec else {
        return Err("pod has no spec".into());
    };
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err("init containers are not supported by the process runtime".into());
    }
    match spec.containers.as_slice() {
        [container] => Ok(container.clone()),
        containers => Err(format!(
            "the process runtime runs exactly one container per pod; this pod has {}",
            containers.len()
        )),
    }
}

/// Whether the pod's status says a process ran for it under a runner that
/// is no longer here (this runner only sees a pod once).
fn started_by_an_earlier_runner(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        || status
            .container_statuses
            .iter()
            .flatten()
            .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// When the container recorded in the pod's status started running.
fn previous_start(pod: &Pod) -> Option<Time> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let running = statuses.first()?.state.as_ref()?.running.as_ref()?;
    running.started_at.clone()
}

fn terminated(exit: std::io::Result<ExitStatus>, started_at: Option<Time>) -> Terminated {
    let (exit_code, signal, message) = match exit {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None, None),
            (None, Some(signal)) => (128 + signal, Some(signal), None),
            (None, None) => (-1, None, None),
        },
        Err(e) => (-1, None, Some(format!("waiting for the process: {e}"))),
    };
    Terminated {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started_at,
        finished_at: status::now(),
    }
}

/// The pod's `sim.views.dev/ready-after` annotation (`500ms`, `2s`, `1m`).
fn simulated_ready_after(pod: &Pod) -> Duration {
    let Some(text) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sim.views.dev/ready-after"))
    else {
        return Duration::ZERO;
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(number) = number.parse::<f64>() else {
        tracing::warn!(text, "sim.views.dev/ready-after is not a duration; ignored");
        return Duration::ZERO;
    };
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        _ => {
            tracing::warn!(text, "sim.views.dev/ready-after: unknown unit; ignored");
            return Duration::ZERO;
        }
    };
    Duration::try_from_secs_f64(seconds).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus,
    };

    use super::*;

    #[test]
    fn log_tails_keep_the_last_lines() {
        let path = std::env::temp_dir().join(format!("pod-runner-tail-{}", std::process::id()));
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let tail = log_tail(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(tail.ends_with("line 99"));
        assert_eq!(tail.lines().count(), 80);
        assert!(log_tail(Path::new("/nonexistent/log")).is_none());
    }

    #[test]
    fn only_single_container_pods_run() {
        let mut pod = Pod::default();
        assert!(single_container(&pod).is_err());
        pod.spec = Some(PodSpec::default());
        assert!(single_container(&pod).is_err());
        pod.spec.as_mut().unwrap().containers = vec![Container::default()];
        assert!(single_container(&pod).is_ok());
        pod.spec.as_mut().unwrap().init_containers = Some(vec![Container::default()]);
        assert!(single_container(&pod).is_err());
    }

    #[test]
    fn running_status_means_an_earlier_runner() {
        let mut pod = Pod::default();
        assert!(!started_by_an_earlier_runner(&pod));
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        assert!(started_by_an_earlier_runner(&pod));
    }

    #[test]
    fn exit_statuses_become_kubernetes_exit_codes() {
        let killed = terminated(Ok(ExitStatus::from_raw(15)), None);
        assert_eq!(
            (killed.exit_code, killed.signal, killed.reason.as_str()),
            (143, Some(15), "Error")
        );
        let ok = terminated(Ok(ExitStatus::from_raw(0)), None);
        assert_eq!((ok.exit_code, ok.reason.as_str()), (0, "Completed"));
        let failed = terminated(Ok(ExitStatus::from_raw(2 << 8)), None);
        assert_eq!(failed.exit_code, 2);
    }
}
