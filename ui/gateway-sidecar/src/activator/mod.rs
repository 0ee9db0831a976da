//! Scale from zero: a request for a view without a ready workload starts one
//! and is held until this replica's Envoy can route it.
//!
//! ```text
//! Envoy ──ext_authz Check (cold routes only)──► ExtAuthz ──► Activator::hold(view, budget)
//!                                                              │ one driver task per view
//!                                                              │ (all held requests share it)
//!   index snapshots ─┐                                          ▼
//!   Envoy ACK status ─┴──► driver: Job exists? else create view-<name>-<n> (AlreadyExists:
//!                          another replica won) → credentials Secret → Progress on a
//!                          watch channel: Creating → Pending → Scheduled → Starting →
//!                          Routing (pod ready, Envoy not yet) → Ready | Failed | Gone
//! ```
//!
//! The driver reads Kubernetes only through the index (data flows one way),
//! and declares Ready only when every Envoy connected to this sidecar has
//! ACKed the view's cluster with a serving endpoint: a released request
//! never meets "no healthy upstream". Starts that cannot succeed (image pull
//! errors, unschedulable, quota refusals, a failed Job) end every held
//! request at once with the reason, which is also recorded on the view's
//! Service for the API, and their Job is deleted.

mod ext_authz;
mod metrics;
pub mod page;

pub use ext_authz::ExtAuthz;
pub use metrics::{CheckLabel, Metrics};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Config;
use crate::credentials::{self, Broker};
use crate::drain::Blockers;
use crate::index::{Index, Snapshot, ViewState};
use crate::kubernetes::{WriteError, Writer};
use crate::workload::{self, Activation, Failure, Phase, ServiceRef};
use crate::xds::{EnvoyStatus, EnvoysWatch, resources::cluster_name};

/// How soon a client told 503 (still starting, or Kubernetes unavailable)
/// should try again, in seconds: the API server's return is noticed within
/// a second or two, and a start is followed on by whoever asks next.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// Where a view's start stands, as its held requests see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// On its way: the stage it is in.
    Starting(Stage),
    /// Every Envoy of this replica routes to a serving endpoint.
    Ready,
    /// The start cannot succeed.
    Failed(Failure),
    /// The view was deleted.
    Gone,
    /// Kubernetes refused or could not be reached while starting it.
    Unavailable(String),
}

/// The steps of a start, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Creating the Job.
    Creating,
    /// The Job exists; its pod is not scheduled yet.
    Pending,
    /// The pod is bound to a node.
    Scheduled,
    /// The pod runs, not ready yet.
    Starting,
    /// The pod is ready; Envoy is being configured to route to it.
    Routing,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Creating => "creating",
            Stage::Pending => "pending",
            Stage::Scheduled => "scheduled",
            Stage::Starting => "starting",
            Stage::Routing => "routing",
        }
    }
}

impl Progress {
    fn is_final(&self) -> bool {
        !matches!(self, Progress::Starting(_))
    }
}

/// How a held request ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    Ready,
    Failed(Failure),
    Gone,
    Unavailable(String),
    /// The budget passed; the start goes on.
    StillStarting(Stage),
}

#[derive(Clone)]
pub struct Activator {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    index: Index,
    envoys: EnvoysWatch,
    writer: Writer,
    /// Mints the lake credentials of each activation (None: no S3 endpoint configured).
    broker: Option<Arc<Broker>>,
    metrics: Metrics,
    /// Each held request blocks the drain until it is answered.
    blockers: Blockers,
    /// View name → the progress of its driver, while one runs.
    drivers: Mutex<HashMap<String, watch::Receiver<Progress>>>,
}

impl Activator {
    pub fn new(
        config: Arc<Config>,
        index: Index,
        envoys: EnvoysWatch,
        writer: Writer,
        broker: Option<Arc<Broker>>,
        blockers: Blockers,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                index,
                envoys,
                writer,
                broker,
                metrics: Metrics::default(),
                blockers,
                drivers: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Follow the view's start, starting it if nothing runs: every caller
    /// for the same view shares one driver.
    pub fn activate(&self, view: &str) -> watch::Receiver<Progress> {
        let mut drivers = self.inner.drivers.lock().expect("drivers lock");
        if let Some(progress) = drivers.get(view)
            // A finished driver's channel is closed; a new request starts afresh.
            && progress.has_changed().is_ok()
        {
            return progress.clone();
        }
        let (tx, rx) = watch::channel(Progress::Starting(Stage::Creating));
        drivers.insert(view.to_owned(), rx.clone());
        let inner = self.inner.clone();
        let view = view.to_owned();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = inner.drive(&view, &tx).await;
            inner.metrics.record_activation(&outcome, started.elapsed());
            // Publish the outcome last, after the driver is removed: whoever
            // sees a final state and asks again gets a fresh driver.
            inner
                .drivers
                .lock()
                .expect("drivers lock")
                .retain(|_, rx| !rx.same_channel(&tx.subscribe()));
            tx.send_replace(outcome);
        });
        rx
    }

    /// Whether a request for `view` would be routed to a serving endpoint by
    /// every Envoy of this replica right now.
    pub fn ready_now(&self, view: &str) -> bool {
        let snapshot = self.inner.index.snapshot();
        progress(
            view,
            None,
            &snapshot,
            &self.inner.envoys.borrow(),
            &mut false,
        ) == Progress::Ready
    }

    /// Hold a request until the view is ready, fails, is deleted, or `budget` passes.
    pub async fn hold(&self, view: &str, budget: Duration) -> Held {
        let mut progress = self.activate(view);
        let _held = (self.inner.metrics.hold(), self.inner.blockers.block());
        // Past the budget (or if the driver ended without a final state),
        // whatever was reached last is the answer.
        let _ = tokio::time::timeout(budget, progress.wait_for(Progress::is_final)).await;
        let last = progress.borrow().clone();
        match last {
            Progress::Ready => Held::Ready,
            Progress::Failed(failure) => Held::Failed(failure),
            Progress::Gone => Held::Gone,
            Progress::Unavailable(message) => Held::Unavailable(message),
            Progress::Starting(stage) => Held::StillStarting(stage),
        }
    }
}

impl Inner {
    /// Drive one start of `view` to a final state, publishing progress.
    /// Ends early (the start goes on in Kubernetes) once nobody follows it.
    async fn drive(&self, view: &str, tx: &watch::Sender<Progress>) -> Progress {
        let mut timeline = Timeline::new();
        let mut snapshots = self.index.subscribe();
        let mut envoys = self.envoys.clone();
        let snapshot = snapshots.borrow_and_update().clone();
        let Some(state) = snapshot.views.get(view) else {
            return Progress::Gone;
        };
        let target = if state.serving_endpoints().next().is_some() {
            // Serving already (this Envoy just lags): nothing to start.
            None
        } else {
            match self.target_activation(state).await {
                Ok(activation) => Some(activation),
                Err(progress) => return progress,
            }
        };
        let mut seen_in_index = false;
        loop {
            let progress = {
                let snapshot = snapshots.borrow_and_update().clone();
                // Read in place: the map holds every cluster of every Envoy,
                // too much to copy on each of its changes in each driver.
                let envoys = envoys.borrow_and_update();
                let progress = progress(
                    view,
                    target.as_ref(),
                    &snapshot,
                    &envoys,
                    &mut seen_in_index,
                );
                timeline.mark(&progress, snapshot.views.get(view).map(Arc::as_ref));
                progress
            };
            if let Progress::Failed(failure) = &progress {
                self.end_failed_start(view, failure).await;
            }
            if progress == Progress::Ready {
                timeline.log_ready(view);
            }
            if progress.is_final() {
                return progress;
            }
            tx.send_if_modified(|current| {
                let changed = *current != progress;
                *current = progress.clone();
                changed
            });
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return Progress::Unavailable("the index stopped".into()) },
                changed = envoys.changed() => if changed.is_err() { return Progress::Unavailable("xDS stopped".into()) },
                () = tx.closed() => return progress,
            }
        }
    }

    /// The activation to wait for: the live one, or a new one created now.
    async fn target_activation(&self, state: &ViewState) -> Result<Activation, Progress> {
        let view = state.spec.name.to_string();
        let activation = match state.live_activation() {
            Some(live) => live.clone(),
            None => {
                let number = state.next_activation_number();
                let owner = ServiceRef {
                    name: crate::view::service_name(&view),
                    uid: state.uid.clone(),
                };
                let job = workload::job(
                    &state.spec,
                    &owner,
                    number,
                    self.broker.is_some(),
                    &self.config,
                );
                let created = self.writer.create_job(&job).await.map_err(unavailable)?;
                let activation =
                    workload::read_activation(&created, &[], &[]).ok_or_else(|| {
                        Progress::Unavailable("the created Job has no activation label".into())
                    })?;
                tracing::info!(view, job = activation.job, "activating view");
                self.metrics.activations_started.inc();
                activation
            }
        };
        self.ensure_credentials(&view, &activation).await?;
        Ok(activation)
    }

    /// Mint the activation's lake credentials into its Secret (deterministic,
    /// so every replica writes the same; the first one wins).
    async fn ensure_credentials(
        &self,
        view: &str,
        activation: &Activation,
    ) -> Result<(), Progress> {
        let Some(broker) = &self.broker else {
            return Ok(());
        };
        // As late as the run's deadline may be extended: keys of a run that
        // ended are refused anyway (only the live activation's are good).
        let expires_at = activation
            .keys_expire_at()
            .ok_or_else(|| Progress::Unavailable("the Job has no deadline".into()))?;
        if broker.keys().ring().current().is_none() {
            // No master key (first start, or its Secret was deleted): create
            // it unless another replica has, and mint with whichever the
            // watch brings.
            self.writer.ensure_master_key().await.map_err(unavailable)?;
            broker
                .keys()
                .wait_for(credentials::UNKNOWN_VERSION_WAIT, &|ring| {
                    ring.current().is_some()
                })
                .await;
        }
        let credentials = broker
            .mint(view, &activation.uid, expires_at)
            .map_err(|e| Progress::Unavailable(format!("minting credentials: {e}")))?;
        let secret = workload::secret(
            view,
            activation,
            &credentials.access_key_id,
            &credentials.secret_access_key,
            &self.config,
        );
        self.writer
            .ensure_secret(&secret)
            .await
            .map_err(unavailable)
    }

    /// A start that cannot succeed: say why on the view's Service and remove
    /// its Job, so nothing keeps pulling or waiting and the next request
    /// starts afresh.
    async fn end_failed_start(&self, view: &str, failure: &Failure) {
        tracing::warn!(
            view,
            job = failure.job,
            reason = failure.reason,
            message = failure.message,
            "view start failed"
        );
        if let Err(error) = self.writer.record_failure(view, failure).await {
            tracing::warn!(view, %error, "could not record the failure on the view");
        }
        if let Err(error) = self.writer.delete_job(&failure.job).await {
            tracing::warn!(view, job = failure.job, %error, "could not delete the failed Job");
        }
    }
}

/// When a driver first saw each step of the end of a start, for the line
/// that logs it: where a slow start spent its time after its pod was ready
/// (`bench cold` reads it too).
struct Timeline {
    started: Instant,
    /// The index had the pod ready (by its status or a serving endpoint).
    pod_ready: Option<Duration>,
    /// The index had a serving endpoint: what xDS sends Envoy.
    serving: Option<Duration>,
}

impl Timeline {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            pod_ready: None,
            serving: None,
        }
    }

    fn mark(&mut self, progress: &Progress, state: Option<&ViewState>) {
        let now = self.started.elapsed();
        let serving = state.is_some_and(|s| s.serving_endpoints().next().is_some());
        if serving {
            self.serving.get_or_insert(now);
        }
        if serving || *progress == Progress::Starting(Stage::Routing) {
            self.pod_ready.get_or_insert(now);
        }
    }

    fn log_ready(&self, view: &str) {
        let ready = self.started.elapsed();
        let ms = |at: Option<Duration>| (at.unwrap_or(ready).as_secs_f64() * 1e4).round() / 10.0;
        tracing::info!(
            view,
            pod_ready_ms = ms(self.pod_ready),
            serving_ms = ms(self.serving),
            ready_ms = ms(Some(ready)),
            "view ready: every Envoy routes to it (times since its start was taken up)"
        );
    }
}

fn unavailable(error: WriteError) -> Progress {
    match error {
        // The view's Service went away between the index and the write.
        WriteError::NotFound(_) | WriteError::BeingDeleted(_) => Progress::Gone,
        WriteError::QuotaExceeded(message) => Progress::Failed(Failure {
            job: String::new(),
            reason: "QuotaExceeded".into(),
            message,
        }),
        other => Progress::Unavailable(other.to_string()),
    }
}

/// Where the start of `view` (waiting for `target`) stands in this snapshot.
fn progress(
    view: &str,
    target: Option<&Activation>,
    snapshot: &Snapshot,
    envoys: &std::collections::BTreeMap<String, EnvoyStatus>,
    seen_in_index: &mut bool,
) -> Progress {
    let Some(state) = snapshot.views.get(view) else {
        return Progress::Gone;
    };
    if state.serving_endpoints().next().is_some() {
        let cluster = cluster_name(view);
        // No Envoy connected (this sidecar has just started, and its Envoy
        // not yet reconnected) is not "every Envoy routes it": the Envoy
        // asking still has its old configuration, without the view's
        // cluster, and would answer 503 without a word.
        return if !envoys.is_empty()
            && envoys
                .values()
                .all(|e| e.clusters_with_endpoints.contains(&cluster))
        {
            Progress::Ready
        } else {
            Progress::Starting(Stage::Routing)
        };
    }
    let Some(target) = target else {
        // It was serving when the driver started and stopped since.
        return Progress::Starting(Stage::Pending);
    };
    let Some(activation) = state.activations.get(&target.number) else {
        if *seen_in_index {
            return Progress::Failed(Failure {
                job: target.job.clone(),
                reason: "Deleted".into(),
                message: format!("the view's Job {} was deleted while starting", target.job),
            });
        }
        return Progress::Starting(Stage::Pending);
    };
    *seen_in_index = true;
    match &activation.phase {
        Phase::Pending => Progress::Starting(Stage::Pending),
        Phase::Scheduled => Progress::Starting(Stage::Scheduled),
        Phase::Starting => Progress::Starting(Stage::Starting),
        // Ready pod, endpoints not (yet) serving in the index.
        Phase::Ready => Progress::Starting(Stage::Routing),
        Phase::Failed(failure) => Progress::Failed(failure.clone()),
        Phase::Ended { reason } => Progress::Failed(Failure {
            job: activation.job.clone(),
            reason: reason.clone(),
            message: format!("the view's Job ended ({reason}) before it became ready"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use googletest::prelude::*;

    use super::*;
    use crate::index::Endpoint;

    /// A snapshot where view `sales` has a serving endpoint.
    fn serving() -> Snapshot {
        let view = ViewState {
            spec: serde_json::from_value(serde_json::json!({
                "name": "sales",
                "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}],
            }))
            .expect("spec"),
            uid: "uid-1".into(),
            created_at: None,
            annotations: BTreeMap::new(),
            endpoints: vec![Endpoint {
                ip: "10.233.1.2".parse().unwrap(),
                port: 8080,
                serving: true,
                terminating: false,
            }],
            activations: BTreeMap::new(),
        };
        Snapshot::of(&[Arc::new(view)])
    }

    fn envoy(clusters: &[&str]) -> EnvoyStatus {
        EnvoyStatus {
            clusters_with_endpoints: clusters
                .iter()
                .map(|c| c.to_string())
                .collect::<BTreeSet<_>>(),
            ..EnvoyStatus::default()
        }
    }

    #[gtest]
    fn a_serving_view_is_ready_only_once_every_connected_envoy_routes_it() {
        let at = |envoys: BTreeMap<String, EnvoyStatus>| {
            progress("sales", None, &serving(), &envoys, &mut false)
        };
        // Just restarted: no Envoy has reconnected yet.
        expect_that!(at(BTreeMap::new()), eq(&Progress::Starting(Stage::Routing)));
        expect_that!(
            at(BTreeMap::from([
                ("a".to_string(), envoy(&["view-sales"])),
                ("b".to_string(), envoy(&[])),
            ])),
            eq(&Progress::Starting(Stage::Routing))
        );
        expect_that!(
            at(BTreeMap::from([("a".to_string(), envoy(&["view-sales"]))])),
            eq(&Progress::Ready)
        );
    }
}
