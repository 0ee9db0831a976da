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
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use tokio::sync::watch;
use views_types::ViewRequest;

use crate::kubernetes::Change;
use crate::view;

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
}

impl ViewState {
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

/// The index's private state: what each watch currently holds.
#[derive(Default)]
struct State {
    /// Service name → view (None when the Service carries the label but is unreadable).
    services: HashMap<String, Option<Arc<ViewState>>>,
    /// EndpointSlice name → (view name, its endpoints).
    slices: HashMap<String, (String, Vec<Endpoint>)>,
    /// Relisting after (re)connecting: objects seen so far in this list.
    relisting_services: Option<HashMap<String, Option<Arc<ViewState>>>>,
    relisting_slices: Option<HashMap<String, (String, Vec<Endpoint>)>>,
    services_synced: bool,
    slices_synced: bool,
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
        match change {
            Change::Failed(error) => {
                tracing::warn!(%error, "watching views failed; retrying");
                self.reachable = false;
            }
            Change::Service(event) => {
                self.reachable = true;
                match *event {
                    Event::Init => self.relisting_services = Some(HashMap::new()),
                    Event::InitApply(service) => {
                        if let Some(list) = self.relisting_services.as_mut() {
                            list.insert(name_of(&service.metadata.name), read_view(&service));
                        }
                    }
                    Event::InitDone => {
                        self.services = self.relisting_services.take().unwrap_or_default();
                        self.services_synced = true;
                    }
                    Event::Apply(service) => {
                        self.services
                            .insert(name_of(&service.metadata.name), read_view(&service));
                    }
                    Event::Delete(service) => {
                        self.services.remove(&name_of(&service.metadata.name));
                    }
                }
            }
            Change::Slice(event) => {
                self.reachable = true;
                match *event {
                    Event::Init => self.relisting_slices = Some(HashMap::new()),
                    Event::InitApply(slice) => {
                        if let Some(list) = self.relisting_slices.as_mut() {
                            list.insert(name_of(&slice.metadata.name), read_slice(&slice));
                        }
                    }
                    Event::InitDone => {
                        self.slices = self.relisting_slices.take().unwrap_or_default();
                        self.slices_synced = true;
                    }
                    Event::Apply(slice) => {
                        self.slices
                            .insert(name_of(&slice.metadata.name), read_slice(&slice));
                    }
                    Event::Delete(slice) => {
                        self.slices.remove(&name_of(&slice.metadata.name));
                    }
                }
            }
        }
    }

    fn snapshot(&self, generation: u64) -> Snapshot {
        let mut endpoints: HashMap<&str, Vec<Endpoint>> = HashMap::new();
        for (view, slice_endpoints) in self.slices.values() {
            endpoints
                .entry(view)
                .or_default()
                .extend(slice_endpoints.iter().cloned());
        }
        let views = self
            .services
            .values()
            .flatten()
            .map(|view| {
                let name = view.spec.name.to_string();
                let mut view = view.clone();
                if let Some(found) = endpoints.remove(name.as_str()) {
                    Arc::make_mut(&mut view).endpoints = found;
                }
                (name, view)
            })
            .collect();
        Snapshot {
            views,
            synced: self.services_synced && self.slices_synced,
            kubernetes_reachable: self.reachable,
            generation,
        }
    }
}

fn name_of(name: &Option<String>) -> String {
    name.clone().unwrap_or_default()
}

fn read_view(service: &Service) -> Option<Arc<ViewState>> {
    match view::from_service(service) {
        Ok(spec) => Some(Arc::new(ViewState {
            spec,
            uid: service.metadata.uid.clone().unwrap_or_default(),
            created_at: service.metadata.creation_timestamp.as_ref().map(|t| t.0),
            annotations: service.metadata.annotations.clone().unwrap_or_default(),
            endpoints: Vec::new(),
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
