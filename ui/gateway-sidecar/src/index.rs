//! The view index: the sidecar's picture of every view and its endpoints,
//! rebuilt from the Kubernetes watches and nothing else.
//!
//! One task owns the state ([`run`]); everyone else reads immutable
//! [`Snapshot`]s published through a `tokio::sync::watch` channel ([`Index`]).
//! Bursts of watch events are coalesced into one snapshot.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use tokio::sync::watch;
use views_types::ViewRequest;

use crate::kubernetes::Change;
use crate::view;
use crate::workload::{self, Activation};

/// One endpoint of a view: a pod address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// The pod is ready. (With `publishNotReadyAddresses` the slice's `ready`
    /// condition is always true; `serving` carries the pod's readiness.)
    pub serving: bool,
    pub terminating: bool,
}

/// One view as the index knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewState {
    pub spec: ViewRequest,
    pub uid: String,
    pub created_at: Option<jiff::Timestamp>,
    pub annotations: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
    /// The view's Jobs by activation number (finished ones until their TTL).
    pub activations: BTreeMap<u32, Activation>,
}

impl ViewState {
    /// The most recent activation, live or not.
    pub fn latest_activation(&self) -> Option<&Activation> {
        self.activations.values().next_back()
    }

    /// The activation requests should wait for: the latest, if still live.
    pub fn live_activation(&self) -> Option<&Activation> {
        self.latest_activation().filter(|a| a.phase.is_live())
    }

    /// Why the last start failed fast, unless a later activation exists.
    pub fn last_failure(&self) -> Option<workload::Failure> {
        let failure = workload::read_failure(&self.annotations)?;
        let superseded = self.latest_activation().is_some_and(|latest| {
            latest.job != failure.job
                && workload::activation_of_job_name(&failure.job)
                    .is_none_or(|failed| latest.number > failed)
        });
        (!superseded).then_some(failure)
    }

    /// The number the next activation takes: after every one seen, including
    /// the one a recorded failure names (its Job may be gone).
    pub fn next_activation_number(&self) -> u32 {
        let failed = workload::read_failure(&self.annotations)
            .and_then(|f| workload::activation_of_job_name(&f.job))
            .unwrap_or(0);
        self.activations
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(failed)
            + 1
    }

    /// Endpoints that may receive traffic.
    pub fn serving_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| e.serving && !e.terminating)
    }
}

/// Everything known at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub views: BTreeMap<String, Arc<ViewState>>,
    /// Both watches have listed everything at least once.
    pub synced: bool,
    /// The last watch request succeeded (false while the API is unreachable).
    pub kubernetes_reachable: bool,
    /// Increases with every published snapshot.
    pub generation: u64,
}

impl Snapshot {
    /// A synced snapshot holding exactly `views` (for tests and tools that
    /// build xDS without watching Kubernetes).
    pub fn of(views: &[Arc<ViewState>]) -> Self {
        Self {
            views: views
                .iter()
                .map(|v| (v.spec.name.to_string(), v.clone()))
                .collect(),
            synced: true,
            ..Snapshot::default()
        }
    }
}

/// A read handle on the index.
#[derive(Clone)]
pub struct Index {
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl Index {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    /// Wait until `condition` holds for a published snapshot, or `timeout`.
    pub async fn wait_for(&self, timeout: Duration, condition: impl Fn(&Snapshot) -> bool) -> bool {
        let mut rx = self.rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| condition(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// What one watch currently holds, by object name, and its relist in progress.
struct Store<T> {
    items: HashMap<String, T>,
    /// Relisting after (re)connecting: objects seen so far in this list.
    relisting: Option<HashMap<String, T>>,
    synced: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: HashMap::new(),
            relisting: None,
            synced: false,
        }
    }
}

impl<T> Store<T> {
    fn apply<K: kube::ResourceExt>(&mut self, event: Event<K>, read: impl Fn(&K) -> T) {
        match event {
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(list) = self.relisting.as_mut() {
                    list.insert(object.name_any(), read(&object));
                }
            }
            Event::InitDone => {
                self.items = self.relisting.take().unwrap_or_default();
                self.synced = true;
            }
            Event::Apply(object) => {
                self.items.insert(object.name_any(), read(&object));
            }
            Event::Delete(object) => {
                self.items.remove(&object.name_any());
            }
        }
    }
}

/// The index's private state: what each watch currently holds.
#[derive(Default)]
struct State {
    /// Service name → view (None when the Service carries the label but is unreadable).
    services: Store<Option<Arc<ViewState>>>,
    /// EndpointSlice name → (view name, its endpoints).
    slices: Store<(String, Vec<Endpoint>)>,
    jobs: Store<Arc<Job>>,
    pods: Store<Arc<Pod>>,
    /// `FailedCreate` events of Jobs.
    events: Store<Arc<KubeEvent>>,
    reachable: bool,
}

pub fn channel() -> (watch::Sender<Arc<Snapshot>>, Index) {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    (tx, Index { rx })
}

/// Own the index: apply every change, publish coalesced snapshots.
pub async fn run(changes: impl Stream<Item = Change>, tx: watch::Sender<Arc<Snapshot>>) {
    let mut changes = std::pin::pin!(changes);
    let mut state = State::default();
    let mut generation = 0;
    while let Some(change) = changes.next().await {
        state.apply(change);
        // Coalesce whatever else is already queued into the same snapshot.
        while let Some(Some(change)) = changes.next().now_or_never() {
            state.apply(change);
        }
        generation += 1;
        tx.send_replace(Arc::new(state.snapshot(generation)));
    }
}

impl State {
    fn apply(&mut self, change: Change) {
        if let Change::Failed(error) = &change {
            tracing::warn!(%error, "watching views failed; retrying");
            self.reachable = false;
            return;
        }
        self.reachable = true;
        match change {
            Change::Service(event) => self.services.apply(*event, read_view),
            Change::Slice(event) => self.slices.apply(*event, read_slice),
            Change::Job(event) => self.jobs.apply(*event, |job| Arc::new(job.clone())),
            Change::Pod(event) => self.pods.apply(*event, |pod| Arc::new(pod.clone())),
            Change::Event(event) => self.events.apply(*event, |e| Arc::new(e.clone())),
            Change::Failed(_) => {}
        }
    }

    fn snapshot(&self, generation: u64) -> Snapshot {
        let mut endpoints: HashMap<&str, Vec<Endpoint>> = HashMap::new();
        for (view, slice_endpoints) in self.slices.items.values() {
            endpoints
                .entry(view)
                .or_default()
                .extend(slice_endpoints.iter().cloned());
        }
        let mut activations = self.activations();
        let views = self
            .services
            .items
            .values()
            .flatten()
            .map(|view| {
                let name = view.spec.name.to_string();
                let mut view = view.clone();
                if let Some(found) = endpoints.remove(name.as_str()) {
                    Arc::make_mut(&mut view).endpoints = found;
                }
                if let Some(found) = activations.remove(name.as_str()) {
                    Arc::make_mut(&mut view).activations = found;
                }
                (name, view)
            })
            .collect();
        Snapshot {
            views,
            synced: self.services.synced
                && self.slices.synced
                && self.jobs.synced
                && self.pods.synced
                && self.events.synced,
            kubernetes_reachable: self.reachable,
            generation,
        }
    }

    /// View name → its activations, read from the Jobs with their pods and events.
    fn activations(&self) -> HashMap<String, BTreeMap<u32, Activation>> {
        let mut pods: HashMap<(String, u32), Vec<&Pod>> = HashMap::new();
        for pod in self.pods.items.values() {
            if let Some(key) = workload::activation_of(&pod.metadata) {
                pods.entry(key).or_default().push(pod);
            }
        }
        let mut events: HashMap<&str, Vec<&KubeEvent>> = HashMap::new();
        for event in self.events.items.values() {
            if let Some(job) = event.involved_object.name.as_deref() {
                events.entry(job).or_default().push(event);
            }
        }
        let mut activations: HashMap<String, BTreeMap<u32, Activation>> = HashMap::new();
        for job in self.jobs.items.values() {
            let Some(key) = workload::activation_of(&job.metadata) else {
                continue;
            };
            let job_pods = pods.get(&key).map(Vec::as_slice).unwrap_or_default();
            let job_events = events
                .get(job.metadata.name.as_deref().unwrap_or_default())
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Some(activation) = workload::read_activation(job, job_pods, job_events) {
                activations
                    .entry(key.0)
                    .or_default()
                    .insert(activation.number, activation);
            }
        }
        activations
    }
}

fn read_view(service: &Service) -> Option<Arc<ViewState>> {
    match view::from_service(service) {
        Ok(spec) => Some(Arc::new(ViewState {
            spec,
            uid: service.metadata.uid.clone().unwrap_or_default(),
            created_at: service.metadata.creation_timestamp.as_ref().map(|t| t.0),
            annotations: service.metadata.annotations.clone().unwrap_or_default(),
            endpoints: Vec::new(),
            activations: BTreeMap::new(),
        })),
        Err(error) => {
            tracing::warn!(
                service = service.metadata.name.as_deref().unwrap_or_default(),
                %error,
                "ignoring a view Service that cannot be read"
            );
            None
        }
    }
}

fn read_slice(slice: &EndpointSlice) -> (String, Vec<Endpoint>) {
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    let view = labels.get(view::VIEW_LABEL).cloned().unwrap_or_default();
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| slice.ports.iter().flatten().next())
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok());
    let Some(port) = port else {
        return (view, Vec::new());
    };
    let endpoints = slice
        .endpoints
        .iter()
        .flat_map(|endpoint| {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Unset conditions mean "unknown" and are to be read as ready.
            let serving = conditions.serving.or(conditions.ready).unwrap_or(true);
            let terminating = conditions.terminating.unwrap_or(false);
            endpoint.addresses.iter().filter_map(move |address| {
                Some(Endpoint {
                    ip: address.parse().ok()?,
                    port,
                    serving,
                    terminating,
                })
            })
        })
        .collect();
    (view, endpoints)
}
