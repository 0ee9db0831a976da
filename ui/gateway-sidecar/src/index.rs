//! The view index: the sidecar's picture of every view and its endpoints,
//! rebuilt from the Kubernetes watches and nothing else.
//!
//! ```text
//! Service view-<name> ──┐  (label views.dev/view=<name> on every object)
//! EndpointSlices ───────┤
//! Jobs view-<name>-<n> ─┼──► Store per kind, grouped by view ──► ViewState per view
//! their pods ───────────┤        (a batch of events marks          (Service + endpoints
//! FailedCreate events ──┘         the views it touches)             + activations)
//! entitlements ConfigMap ──► Entitlements (parsed once per change, shared by snapshots)
//! TLS Secret ──────────────► tls::Certificate (the last usable one)
//! master key Secret ───────► credentials::KeyRing (exactly the Secret's versions)
//! ```
//!
//! One task owns the state ([`run`]); everyone else reads immutable
//! [`Snapshot`]s published through a `tokio::sync::watch` channel ([`Index`]).
//! Bursts of watch events are coalesced into one snapshot. A snapshot costs
//! work in proportion to the views its events touched, not to the number of
//! views: only those are joined again, the view map is persistent (shared
//! with the previous snapshot but for what changed), an unchanged view keeps
//! its `Arc`, and each snapshot names the views that changed
//! ([`Snapshot::changed_since`]) so that readers need not compare the rest.
//!
//! A view's endpoints are its EndpointSlices' endpoints, overlaid with the
//! readiness of its activations' own pods: the EndpointSlice controller
//! copies a pod's Ready into the slice an API round trip later (a 1 s retry
//! when its cache lags), and a cold start waits for exactly that change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use tokio::sync::watch;
use views_types::ViewRequest;

use crate::changelog::ChangeLog;
use crate::entitlements::{Entitlements, Status};
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
    /// the one a recorded failure names and the last one the API stopped
    /// (their Jobs may be gone).
    pub fn next_activation_number(&self) -> u32 {
        let failed = workload::read_failure(&self.annotations)
            .and_then(|f| workload::activation_of_job_name(&f.job))
            .unwrap_or(0)
            .max(workload::read_stopped_run(&self.annotations).unwrap_or(0));
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

/// The views of a snapshot, by name: a persistent map, so publishing a
/// snapshot and changing one view cost O(log n), not a copy of every view.
pub type Views = imbl::OrdMap<String, Arc<ViewState>>;

/// Everything known at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub views: Views,
    /// Every watch has listed everything at least once.
    pub synced: bool,
    /// The last watch request succeeded (false while the API is unreachable,
    /// and after a resumed watch until an object changes: whether the API
    /// server can be reached is `kubernetes::health`'s to say).
    pub kubernetes_reachable: bool,
    /// Increases with every published snapshot.
    pub generation: u64,
    /// The names of the views each recent snapshot changed (added, changed
    /// or removed), so readers can touch only those.
    pub changes: ChangeLog<BTreeSet<String>>,
    /// The operator's data entitlements (grant nothing until their
    /// ConfigMap has been read, and while it is absent or invalid).
    pub entitlements: Arc<Entitlements>,
    /// The certificate Envoy serves TLS with (`TLS_SECRET`), once usable.
    pub tls: Option<Arc<crate::tls::Certificate>>,
    /// The credentials master key versions, exactly as the watched Secret
    /// has them (empty while it is absent, and without `CREDENTIALS_LISTEN`).
    pub master_keys: Arc<crate::credentials::KeyRing>,
    /// Services labelled as views whose spec cannot be read (edited by
    /// hand, or written by another version), by view name: the problem.
    /// They get no routes; the API shows them to admins, who may delete them.
    pub unreadable: BTreeMap<String, Arc<str>>,
}

impl Snapshot {
    /// A synced snapshot holding exactly `views` (for tests and tools that
    /// build xDS without watching Kubernetes). Its readers compare everything.
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

    /// The views that changed after snapshot `seen` up to this one; None when
    /// this snapshot cannot tell (compare every view then).
    pub fn changed_since(&self, seen: u64) -> Option<BTreeSet<String>> {
        if self.generation == 0 {
            return None;
        }
        Some(
            self.changes
                .since(seen, self.generation)?
                .flatten()
                .cloned()
                .collect(),
        )
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

/// Which views a batch of watch events may have changed.
#[derive(Default)]
struct Dirty {
    /// A relist replaced a whole store: look at every view.
    all: bool,
    views: BTreeSet<String>,
}

/// What one watch currently holds, by object name, grouped by the view each
/// object belongs to, and its relist in progress.
struct Store<T> {
    items: HashMap<String, (String, T)>,
    /// View name → names of its objects.
    by_view: HashMap<String, BTreeSet<String>>,
    /// Relisting after (re)connecting: objects seen so far in this list.
    relisting: Option<HashMap<String, (String, T)>>,
    synced: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: HashMap::new(),
            by_view: HashMap::new(),
            relisting: None,
            synced: false,
        }
    }
}

impl<T> Store<T> {
    /// Apply one watch event; `read` gives an object's view and what to keep
    /// of it (objects that belong to no view are not kept).
    fn apply<K: kube::ResourceExt>(
        &mut self,
        event: Event<K>,
        read: impl Fn(&K) -> Option<(String, T)>,
        dirty: &mut Dirty,
    ) {
        match event {
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (Some(list), Some(read)) = (self.relisting.as_mut(), read(&object)) {
                    list.insert(object.name_any(), read);
                }
            }
            Event::InitDone => {
                self.items = self.relisting.take().unwrap_or_default();
                self.by_view.clear();
                for (name, (view, _)) in &self.items {
                    self.by_view
                        .entry(view.clone())
                        .or_default()
                        .insert(name.clone());
                }
                self.synced = true;
                dirty.all = true;
            }
            Event::Apply(object) => {
                let name = object.name_any();
                self.remove(&name, dirty);
                if let Some((view, item)) = read(&object) {
                    self.by_view
                        .entry(view.clone())
                        .or_default()
                        .insert(name.clone());
                    dirty.views.insert(view.clone());
                    self.items.insert(name, (view, item));
                }
            }
            Event::Delete(object) => self.remove(&object.name_any(), dirty),
        }
    }

    fn remove(&mut self, name: &str, dirty: &mut Dirty) {
        let Some((view, _)) = self.items.remove(name) else {
            return;
        };
        if let Some(names) = self.by_view.get_mut(&view) {
            names.remove(name);
            if names.is_empty() {
                self.by_view.remove(&view);
            }
        }
        dirty.views.insert(view);
    }

    /// The objects of one view, in name order.
    fn of_view(&self, view: &str) -> impl Iterator<Item = &T> {
        self.by_view
            .get(view)
            .into_iter()
            .flatten()
            .filter_map(|name| self.items.get(name).map(|(_, item)| item))
    }
}

/// One object watched by name, through a relist: what it is once an event
/// settles it.
struct Named<K> {
    /// Relisting: the object seen so far in this list, if any.
    relisting: Option<Option<K>>,
}

impl<K> Default for Named<K> {
    fn default() -> Self {
        Self { relisting: None }
    }
}

impl<K> Named<K> {
    /// The object as it stands after `event`, when the event settles it (a
    /// list's end, a change, a deletion); None in the middle of a list.
    fn apply(&mut self, event: Event<K>) -> Option<Option<K>> {
        match event {
            Event::Init => {
                self.relisting = Some(None);
                None
            }
            Event::InitApply(object) => {
                if let Some(listed) = self.relisting.as_mut() {
                    *listed = Some(object);
                }
                None
            }
            Event::InitDone => Some(self.relisting.take().flatten()),
            Event::Apply(object) => Some(Some(object)),
            Event::Delete(_) => Some(None),
        }
    }
}

/// What the entitlements watch holds: the parsed ConfigMap.
#[derive(Default)]
struct EntitlementsStore {
    watch: Named<ConfigMap>,
    current: Arc<Entitlements>,
    synced: bool,
}

impl EntitlementsStore {
    fn apply(&mut self, event: Event<ConfigMap>) {
        if let Some(config_map) = self.watch.apply(event) {
            self.set(Entitlements::from_config_map(config_map.as_ref()));
        }
    }

    /// Keep `entitlements` (a new `Arc` only when they differ) and say what
    /// changed in the log; the first listing is always logged.
    fn set(&mut self, entitlements: Entitlements) {
        if self.synced && *self.current == entitlements {
            return;
        }
        self.synced = true;
        match entitlements.status() {
            Status::Absent => tracing::warn!(
                "no entitlements ConfigMap: nobody may create or share views over any data"
            ),
            Status::Valid => tracing::info!(grants = entitlements.grants(), "entitlements loaded"),
            Status::Invalid(error) => tracing::error!(
                %error,
                "the entitlements are invalid: nothing is granted until they are fixed"
            ),
        }
        self.current = Arc::new(entitlements);
    }
}

/// What the TLS Secret watch holds: the last usable certificate.
#[derive(Default)]
struct TlsStore {
    watch: Named<Secret>,
    current: Option<Arc<crate::tls::Certificate>>,
    synced: bool,
}

impl TlsStore {
    fn apply(&mut self, event: Event<Secret>) {
        let Some(secret) = self.watch.apply(event) else {
            return;
        };
        self.synced = true;
        match crate::tls::Certificate::from_secret(secret.as_ref()) {
            Ok(certificate) if self.current.as_deref() != Some(&certificate) => {
                tracing::info!("TLS certificate loaded");
                self.current = Some(Arc::new(certificate));
            }
            Ok(_) => {}
            // No Secret (or no TLS_SECRET at all) and nothing served yet:
            // the xDS builder says what the TLS listener waits for.
            Err(crate::tls::Unusable::Missing) if self.current.is_none() => {}
            Err(unusable) => tracing::error!(
                %unusable,
                serving_previous = self.current.is_some(),
                "the TLS Secret cannot be used; the certificate in use is kept"
            ),
        }
    }
}

/// What the master key Secret watch holds: the Secret's versions, and
/// nothing else. Unlike the TLS certificate, nothing is kept when the Secret
/// goes: a replica holding versions the Secret no longer has (or a restarted
/// one lacking them) would verify keys its peers refuse.
#[derive(Default)]
struct MasterKeyStore {
    watch: Named<Secret>,
    current: Arc<crate::credentials::KeyRing>,
    synced: bool,
}

impl MasterKeyStore {
    fn apply(&mut self, event: Event<Secret>) {
        let Some(secret) = self.watch.apply(event) else {
            return;
        };
        self.synced = true;
        let ring = crate::kubernetes::master_key::ring_of(secret.as_ref());
        if *self.current == ring {
            return;
        }
        match ring.current() {
            Some(current) => tracing::info!(
                versions = ?ring.versions(),
                %current,
                "credentials master key versions loaded"
            ),
            None if secret.is_some() => tracing::error!(
                "the credentials master key Secret has no usable version: no view gets lake credentials"
            ),
            None => tracing::warn!(
                "the credentials master key Secret is gone: every view key derived from it is refused; a new one is created at the next start"
            ),
        }
        self.current = Arc::new(ring);
    }
}

/// The index's private state: what each watch currently holds, and the views
/// as last published.
#[derive(Default)]
struct State {
    /// View Services (one per view name, `view-<name>`): read, or why not.
    services: Store<ServiceRead>,
    /// The views whose Service cannot be read, as last published.
    unreadable: BTreeMap<String, Arc<str>>,
    /// EndpointSlices' endpoints.
    slices: Store<Vec<Endpoint>>,
    jobs: Store<Arc<Job>>,
    pods: Store<Arc<Pod>>,
    /// `FailedCreate` events of Jobs.
    events: Store<Arc<KubeEvent>>,
    entitlements: EntitlementsStore,
    tls: TlsStore,
    master_keys: MasterKeyStore,
    reachable: bool,
    views: Views,
}

pub fn channel() -> (watch::Sender<Arc<Snapshot>>, Index) {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    (tx, Index { rx })
}

/// Own the index: apply every change, publish coalesced snapshots, each
/// costing work in proportion to the views it changed.
pub async fn run(changes: impl Stream<Item = Change>, tx: watch::Sender<Arc<Snapshot>>) {
    let mut changes = std::pin::pin!(changes);
    let mut state = State::default();
    let mut published = Snapshot::default();
    while let Some(change) = changes.next().await {
        let mut dirty = Dirty::default();
        state.apply(change, &mut dirty);
        // Coalesce whatever else is already queued into the same snapshot.
        while let Some(Some(change)) = changes.next().now_or_never() {
            state.apply(change, &mut dirty);
        }
        let changed = state.refresh(dirty);
        let synced = state.synced();
        if changed.is_empty()
            && published.generation > 0
            && published.synced == synced
            && published.kubernetes_reachable == state.reachable
            && Arc::ptr_eq(&published.entitlements, &state.entitlements.current)
            && same(&published.tls, &state.tls.current)
            && Arc::ptr_eq(&published.master_keys, &state.master_keys.current)
        {
            continue;
        }
        published.generation += 1;
        published.changes.record(published.generation, changed);
        published.views = state.views.clone();
        published.synced = synced;
        published.kubernetes_reachable = state.reachable;
        published.entitlements = state.entitlements.current.clone();
        published.tls = state.tls.current.clone();
        published.master_keys = state.master_keys.current.clone();
        published.unreadable = state.unreadable.clone();
        tx.send_replace(Arc::new(published.clone()));
    }
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl State {
    fn apply(&mut self, change: Change, dirty: &mut Dirty) {
        if let Change::Failed(error) = &change {
            // Watches retry every second at most while the API server is
            // away: say so once, not seven times a second.
            if self.reachable {
                tracing::warn!(%error, "watching views failed; retrying");
            } else {
                tracing::debug!(%error, "watching views failed; retrying");
            }
            self.reachable = false;
            return;
        }
        self.reachable = true;
        match change {
            Change::Service(event) => self.services.apply(*event, read_view, dirty),
            Change::Slice(event) => self.slices.apply(*event, read_slice, dirty),
            Change::Job(event) => self.jobs.apply(*event, owned_by_view, dirty),
            Change::Pod(event) => self.pods.apply(*event, owned_by_view, dirty),
            Change::Event(event) => self.events.apply(*event, read_event, dirty),
            Change::Entitlements(event) => self.entitlements.apply(*event),
            Change::Tls(event) => self.tls.apply(*event),
            Change::MasterKey(event) => self.master_keys.apply(*event),
            Change::Failed(_) => {}
        }
    }

    fn synced(&self) -> bool {
        self.services.synced
            && self.slices.synced
            && self.jobs.synced
            && self.pods.synced
            && self.events.synced
            && self.entitlements.synced
            && self.tls.synced
            && self.master_keys.synced
    }

    /// Bring the published views in line with the stores for every view that
    /// may have changed; the names of those that did.
    fn refresh(&mut self, dirty: Dirty) -> BTreeSet<String> {
        let candidates: BTreeSet<String> = if dirty.all {
            self.views
                .keys()
                .chain(self.unreadable.keys())
                .chain(self.services.by_view.keys())
                .cloned()
                .collect()
        } else {
            dirty.views
        };
        let mut changed = BTreeSet::new();
        for name in candidates {
            let problem = self
                .services
                .of_view(&name)
                .find_map(|service| service.as_ref().err().cloned());
            let unreadable_before = match &problem {
                Some(problem) => self.unreadable.insert(name.clone(), problem.clone()),
                None => self.unreadable.remove(&name),
            };
            if unreadable_before != problem {
                changed.insert(name.clone());
            }
            let view = self.view(&name);
            let before = self.views.get(&name);
            let same = match (before, &view) {
                (Some(before), Some(view)) => Arc::ptr_eq(before, view) || before == view,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            match view {
                Some(view) => self.views.insert(name.clone(), view),
                None => self.views.remove(&name),
            };
            changed.insert(name);
        }
        changed
    }

    /// One view as the stores have it: its Service joined with its
    /// endpoints and activations.
    fn view(&self, name: &str) -> Option<Arc<ViewState>> {
        let service = self
            .services
            .of_view(name)
            .find_map(|service| service.as_ref().ok())?;
        let mut endpoints: Vec<Endpoint> = self.slices.of_view(name).flatten().cloned().collect();
        overlay_pods(&mut endpoints, self.pods.of_view(name));
        let activations = self.activations(name);
        if endpoints.is_empty() && activations.is_empty() {
            return Some(service.clone());
        }
        let mut view = ViewState::clone(service);
        view.endpoints = endpoints;
        view.activations = activations;
        Some(Arc::new(view))
    }

    /// One view's activations, read from its Jobs with their pods and events.
    fn activations(&self, view: &str) -> BTreeMap<u32, Activation> {
        let mut activations = BTreeMap::new();
        for job in self.jobs.of_view(view) {
            let Some(key) = workload::activation_of(&job.metadata) else {
                continue;
            };
            let pods: Vec<&Pod> = self
                .pods
                .of_view(view)
                .filter(|pod| workload::activation_of(&pod.metadata).as_ref() == Some(&key))
                .map(Arc::as_ref)
                .collect();
            let events: Vec<&KubeEvent> = self
                .events
                .of_view(view)
                .filter(|e| e.involved_object.name == job.metadata.name)
                .map(Arc::as_ref)
                .collect();
            if let Some(activation) = workload::read_activation(job, &pods, &events) {
                activations.insert(activation.number, activation);
            }
        }
        activations
    }
}

/// Let each pod's own status speak for its address: the EndpointSlice
/// controller copies a pod's readiness into the slice one API round trip
/// later, and under load after a 1 s back-off ("informer cache is out of
/// date"), while a cold start waits for exactly that change.
fn overlay_pods<'a>(endpoints: &mut Vec<Endpoint>, pods: impl Iterator<Item = &'a Arc<Pod>>) {
    for pod in pods {
        let Some(status) = &pod.status else { continue };
        // A pod that has finished holds no address any more: its IP may
        // already be another pod's (the kubelet releases it, and a pod
        // lost with its node is marked Failed while its IP is reused).
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ip) = status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let mut listed = false;
        for endpoint in endpoints.iter_mut().filter(|e| e.ip == ip) {
            listed = true;
            endpoint.serving = ready;
            endpoint.terminating |= terminating;
        }
        let port = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("http"))
            .and_then(|p| u16::try_from(p.container_port).ok());
        if !listed
            && ready
            && !terminating
            && let Some(port) = port
        {
            endpoints.push(Endpoint {
                ip,
                port,
                serving: true,
                terminating: false,
            });
        }
    }
}

/// A Job or pod of a view's activation, by the view it belongs to.
fn owned_by_view<K: kube::Resource + Clone>(object: &K) -> Option<(String, Arc<K>)> {
    let (view, _) = workload::activation_of(object.meta())?;
    Some((view, Arc::new(object.clone())))
}

/// A `FailedCreate` event, by the view its Job (`view-<name>-<n>`) belongs to.
fn read_event(event: &KubeEvent) -> Option<(String, Arc<KubeEvent>)> {
    let job = event.involved_object.name.as_deref()?;
    let view = workload::view_of_job_name(job)?;
    Some((view.to_string(), Arc::new(event.clone())))
}

/// A view Service as read: the view, or why it cannot be read.
type ServiceRead = Result<Arc<ViewState>, Arc<str>>;

fn read_view(service: &Service) -> Option<(String, ServiceRead)> {
    match view::from_service(service) {
        Ok(spec) => Some((
            spec.name.to_string(),
            Ok(Arc::new(ViewState {
                spec,
                uid: service.metadata.uid.clone().unwrap_or_default(),
                created_at: service.metadata.creation_timestamp.as_ref().map(|t| t.0),
                annotations: service.metadata.annotations.clone().unwrap_or_default(),
                endpoints: Vec::new(),
                activations: BTreeMap::new(),
            })),
        )),
        Err(error) => {
            let service_name = service.metadata.name.as_deref().unwrap_or_default();
            tracing::warn!(
                service = service_name,
                %error,
                "a view Service that cannot be read: no routes; admins see it in the API"
            );
            // Its name as the API knows views: the label, else the Service's.
            let name = service
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(view::VIEW_LABEL))
                .cloned()
                .or_else(|| service_name.strip_prefix("view-").map(str::to_owned))?;
            Some((name, Err(Arc::from(error.to_string()))))
        }
    }
}

fn read_slice(slice: &EndpointSlice) -> Option<(String, Vec<Endpoint>)> {
    let view = slice
        .metadata
        .labels
        .as_ref()?
        .get(view::VIEW_LABEL)?
        .clone();
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| slice.ports.iter().flatten().next())
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok());
    let Some(port) = port else {
        return Some((view, Vec::new()));
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
    Some((view, endpoints))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use googletest::prelude::*;
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::*;
    use crate::config::Config;

    fn service(name: &str) -> Service {
        let spec = serde_json::from_value(
            json!({"name": name, "subsets": [{"bucket": "lake", "prefixes": ["p/"]}]}),
        )
        .expect("a view spec");
        let mut service = view::to_service(&spec, &Config::parse_from(["gateway-sidecar"]));
        service.metadata.uid = Some(format!("uid-{name}"));
        service
    }

    fn ready_slice(view: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("view-{view}-abcde"), "labels": {view::VIEW_LABEL: view}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true}}],
        }))
        .expect("a slice")
    }

    fn activation_pod(view: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("view-{view}-1-xyz12"),
                "labels": {view::VIEW_LABEL: view, workload::ACTIVATION_LABEL: "1"},
            },
            "spec": {"containers": [{"name": "view", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .expect("a pod")
    }

    fn serving(snapshot: &Snapshot, view: &str) -> Vec<String> {
        snapshot.views[view]
            .serving_endpoints()
            .map(|e| format!("{}:{}", e.ip, e.port))
            .collect()
    }

    #[gtest]
    fn a_run_the_api_stopped_keeps_its_number_once_its_job_is_gone() {
        let mut state = ViewState {
            spec: view::from_service(&service("sales")).expect("a spec"),
            uid: "uid-sales".into(),
            created_at: None,
            annotations: BTreeMap::new(),
            endpoints: Vec::new(),
            activations: BTreeMap::new(),
        };
        expect_that!(state.next_activation_number(), eq(1));
        state.annotations.insert(
            workload::STOPPED_RUN_ANNOTATION.into(),
            "view-sales-4".into(),
        );
        expect_that!(state.next_activation_number(), eq(5));
    }

    /// Feeds watch events to a running index.
    struct Feed {
        changes: mpsc::UnboundedSender<Change>,
        index: Index,
    }

    impl Feed {
        /// An index whose watches have listed `services` and nothing else.
        async fn listed(services: &[&str]) -> Feed {
            let (changes, rx) = mpsc::unbounded_channel();
            let (tx, index) = channel();
            tokio::spawn(run(UnboundedReceiverStream::new(rx), tx));
            let mut events: Vec<Change> = vec![Change::Service(Box::new(Event::Init))];
            events.extend(
                services
                    .iter()
                    .map(|s| Change::Service(Box::new(Event::InitApply(service(s))))),
            );
            events.push(Change::Service(Box::new(Event::InitDone)));
            events.push(Change::Slice(Box::new(Event::InitDone)));
            events.push(Change::Job(Box::new(Event::InitDone)));
            events.push(Change::Pod(Box::new(Event::InitDone)));
            events.push(Change::Event(Box::new(Event::InitDone)));
            events.push(Change::Entitlements(Box::new(Event::InitDone)));
            events.push(Change::Tls(Box::new(Event::InitDone)));
            events.push(Change::MasterKey(Box::new(Event::InitDone)));
            for event in events {
                changes.send(event).expect("the index runs");
            }
            let feed = Feed { changes, index };
            feed.wait(|s| s.synced).await;
            feed
        }

        /// Send one change and return the snapshot published for it.
        async fn send(&self, change: Change) -> Arc<Snapshot> {
            let before = self.index.snapshot().generation;
            self.changes.send(change).expect("the index runs");
            self.wait(|s| s.generation > before).await
        }

        async fn wait(&self, condition: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
            assert!(
                self.index.wait_for(Duration::from_secs(5), condition).await,
                "no such snapshot within 5 s"
            );
            self.index.snapshot()
        }
    }

    #[gtest]
    #[tokio::test]
    async fn an_unreadable_view_service_is_listed_as_such_until_fixed_or_gone() {
        let feed = Feed::listed(&["aaa"]).await;
        let mut broken = service("aaa");
        broken
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(view::SPEC_ANNOTATION.into(), "{not json".into());
        let unreadable = feed
            .send(Change::Service(Box::new(Event::Apply(broken.clone()))))
            .await;
        expect_that!(unreadable.views.get("aaa"), none());
        expect_that!(
            unreadable.unreadable.get("aaa").map(|p| p.to_string()),
            some(contains_substring("not a valid view spec"))
        );

        let fixed = feed
            .send(Change::Service(Box::new(Event::Apply(service("aaa")))))
            .await;
        expect_that!(fixed.views.get("aaa"), some(anything()));
        expect_that!(fixed.unreadable.is_empty(), eq(true));

        // Broken again, then gone while the watch was away: the relist
        // forgets it.
        feed.send(Change::Service(Box::new(Event::Apply(broken))))
            .await;
        feed.changes
            .send(Change::Service(Box::new(Event::Init)))
            .expect("the index runs");
        let relisted = feed.send(Change::Service(Box::new(Event::InitDone))).await;
        expect_that!(relisted.unreadable.is_empty(), eq(true));
        expect_that!(relisted.views.is_empty(), eq(true));
    }

    #[gtest]
    #[tokio::test]
    async fn a_snapshot_names_the_views_it_changed_and_shares_the_others() {
        let feed = Feed::listed(&["aaa", "bbb", "ccc"]).await;
        let listed = feed.index.snapshot();
        expect_that!(
            listed.views.keys().map(String::as_str).collect::<Vec<_>>(),
            elements_are![eq(&"aaa"), eq(&"bbb"), eq(&"ccc")]
        );

        let slice = ready_slice("bbb", "10.233.0.7");
        let endpoint = feed
            .send(Change::Slice(Box::new(Event::Apply(slice.clone()))))
            .await;
        expect_that!(
            endpoint.changed_since(listed.generation),
            some(elements_are![eq("bbb")])
        );
        expect_that!(endpoint.views["bbb"].serving_endpoints().count(), eq(1));
        expect_that!(
            Arc::ptr_eq(&listed.views["aaa"], &endpoint.views["aaa"]),
            eq(true)
        );

        let deleted = feed
            .send(Change::Service(Box::new(Event::Delete(service("ccc")))))
            .await;
        expect_that!(
            deleted.changed_since(endpoint.generation),
            some(elements_are![eq("ccc")])
        );
        expect_that!(
            deleted.changed_since(listed.generation),
            some(elements_are![eq("bbb"), eq("ccc")])
        );
        expect_that!(
            deleted.views.keys().map(String::as_str).collect::<Vec<_>>(),
            elements_are![eq(&"aaa"), eq(&"bbb")]
        );

        // The endpoint goes: only bbb changes again.
        let gone = feed
            .send(Change::Slice(Box::new(Event::Delete(slice))))
            .await;
        expect_that!(
            gone.changed_since(deleted.generation),
            some(elements_are![eq("bbb")])
        );
        expect_that!(gone.views["bbb"].endpoints, is_empty());
    }

    #[gtest]
    fn a_finished_pod_does_not_speak_for_an_address_another_pod_now_has() {
        // The pod of an earlier activation, lost with its node: Failed, yet
        // still holding the IP the node has since given the new pod.
        let mut lost = activation_pod("aaa", "10.0.0.7", false);
        lost.metadata.name = Some("view-aaa-1-lost1".into());
        lost.status.as_mut().unwrap().phase = Some("Failed".into());
        let new = activation_pod("aaa", "10.0.0.7", true);
        let (lost, new) = (Arc::new(lost), Arc::new(new));
        for order in [[&lost, &new], [&new, &lost]] {
            let mut endpoints = Vec::new();
            overlay_pods(&mut endpoints, order.into_iter());
            let serving: Vec<String> = endpoints
                .iter()
                .filter(|e| e.serving && !e.terminating)
                .map(|e| e.ip.to_string())
                .collect();
            expect_that!(serving, elements_are![eq("10.0.0.7")]);
        }
    }

    #[gtest]
    #[tokio::test]
    async fn a_relist_compares_every_view_and_names_only_those_that_differ() {
        let feed = Feed::listed(&["aaa", "bbb"]).await;
        let listed = feed.index.snapshot();
        for change in [
            Change::Service(Box::new(Event::Init)),
            Change::Service(Box::new(Event::InitApply(service("aaa")))),
            Change::Service(Box::new(Event::InitApply(service("ddd")))),
        ] {
            feed.changes.send(change).expect("the index runs");
        }
        let relisted = feed.send(Change::Service(Box::new(Event::InitDone))).await;
        expect_that!(
            relisted.changed_since(listed.generation),
            some(elements_are![eq("bbb"), eq("ddd")])
        );
        expect_that!(
            relisted
                .views
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            elements_are![eq(&"aaa"), eq(&"ddd")]
        );
    }

    #[gtest]
    #[tokio::test]
    async fn a_pod_s_own_readiness_counts_before_its_endpoint_slice_catches_up() {
        let feed = Feed::listed(&["aaa"]).await;
        // Ready, and no slice lists it yet: it serves.
        let ready = feed
            .send(Change::Pod(Box::new(Event::Apply(activation_pod(
                "aaa",
                "10.233.0.9",
                true,
            )))))
            .await;
        expect_that!(serving(&ready, "aaa"), elements_are![eq("10.233.0.9:8080")]);
        // The slice catches up: that changes nothing (no new snapshot).
        feed.changes
            .send(Change::Slice(Box::new(Event::Apply(ready_slice(
                "aaa",
                "10.233.0.9",
            )))))
            .expect("the index runs");
        // The pod stops being ready while the slice still says serving: it does not serve.
        let unready = feed
            .send(Change::Pod(Box::new(Event::Apply(activation_pod(
                "aaa",
                "10.233.0.9",
                false,
            )))))
            .await;
        expect_that!(serving(&unready, "aaa"), is_empty());
        expect_that!(unready.views["aaa"].endpoints, len(eq(1)));
        // Being deleted: terminating, whatever its readiness.
        let mut deleting = activation_pod("aaa", "10.233.0.9", true);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let deleting = feed
            .send(Change::Pod(Box::new(Event::Apply(deleting))))
            .await;
        expect_that!(serving(&deleting, "aaa"), is_empty());
    }

    fn entitlements(yaml: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "views-gateway-entitlements"},
            "data": {crate::entitlements::DOCUMENT_KEY: yaml},
        }))
        .expect("a ConfigMap")
    }

    fn master_key_secret(entries: &[(&str, &[u8])]) -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "views-gateway-master-key"},
            "data": entries
                .iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                .collect::<BTreeMap<_, _>>(),
        }))
        .expect("a Secret")
    }

    #[gtest]
    #[tokio::test]
    async fn the_master_keys_are_exactly_the_secret_s_versions_and_go_with_it() {
        let feed = Feed::listed(&[]).await;
        let numbers = |snapshot: &Snapshot| -> Vec<u32> {
            snapshot
                .master_keys
                .versions()
                .iter()
                .map(|v| v.number)
                .collect()
        };
        expect_that!(numbers(&feed.index.snapshot()), is_empty());
        let (a, b) = (
            b"0123456789abcdef0123456789abcdef".as_slice(),
            b"another master key, 32 bytes long".as_slice(),
        );
        let created = master_key_secret(&[("v1", a)]);
        let loaded = feed
            .send(Change::MasterKey(Box::new(Event::Apply(created.clone()))))
            .await;
        expect_that!(numbers(&loaded), eq(&vec![1]));
        let rotated = feed
            .send(Change::MasterKey(Box::new(Event::Apply(
                master_key_secret(&[("v1", a), ("v2", b)]),
            ))))
            .await;
        expect_that!(numbers(&rotated), eq(&vec![1, 2]));
        expect_that!(rotated.master_keys.current().map(|v| v.number), some(eq(2)));
        // Deleted: nothing is kept (a restarted replica would not have it).
        let deleted = feed
            .send(Change::MasterKey(Box::new(Event::Delete(created))))
            .await;
        expect_that!(numbers(&deleted), is_empty());
    }

    #[gtest]
    #[tokio::test]
    async fn the_index_is_synced_only_once_the_entitlements_are_listed() {
        let (changes, rx) = mpsc::unbounded_channel();
        let (tx, index) = channel();
        tokio::spawn(run(UnboundedReceiverStream::new(rx), tx));
        let feed = Feed { changes, index };
        for change in [
            Change::Service(Box::new(Event::InitDone)),
            Change::Slice(Box::new(Event::InitDone)),
            Change::Job(Box::new(Event::InitDone)),
            Change::Pod(Box::new(Event::InitDone)),
            Change::Event(Box::new(Event::InitDone)),
            Change::Tls(Box::new(Event::InitDone)),
            Change::MasterKey(Box::new(Event::InitDone)),
            Change::Entitlements(Box::new(Event::Init)),
            Change::Entitlements(Box::new(Event::InitApply(entitlements(
                "grants: [{users: [ana], bucket: lake, prefixes: [sales/]}]",
            )))),
        ] {
            feed.changes.send(change).expect("the index runs");
        }
        // Sent after everything above, so its snapshot has seen all of it.
        let views_listed = feed
            .send(Change::Service(Box::new(Event::Apply(service("aaa")))))
            .await;
        expect_that!(views_listed.synced, eq(false));
        expect_that!(views_listed.entitlements.status(), eq(&Status::Absent));

        let listed = feed
            .send(Change::Entitlements(Box::new(Event::InitDone)))
            .await;
        expect_that!(listed.synced, eq(true));
        expect_that!(listed.entitlements.status(), eq(&Status::Valid));
        expect_that!(listed.entitlements.grants(), eq(1));
    }

    #[gtest]
    #[tokio::test]
    async fn every_change_of_the_entitlements_publishes_a_snapshot() {
        let feed = Feed::listed(&["aaa"]).await;
        let absent = feed.index.snapshot();
        expect_that!(absent.entitlements.status(), eq(&Status::Absent));

        let valid = feed
            .send(Change::Entitlements(Box::new(Event::Apply(entitlements(
                "grants: [{groups: [analysts], bucket: lake, prefixes: [sales/, tpch/]}]",
            )))))
            .await;
        expect_that!(valid.entitlements.grants(), eq(1));
        // No view changed, and the views are shared as they were.
        expect_that!(valid.changed_since(absent.generation), some(is_empty()));
        expect_that!(
            Arc::ptr_eq(&absent.views["aaa"], &valid.views["aaa"]),
            eq(true)
        );

        let broken = feed
            .send(Change::Entitlements(Box::new(Event::Apply(entitlements(
                "grants: [{groups: [analysts], bucket: lake, prefixes: [sales]}]",
            )))))
            .await;
        expect_that!(broken.entitlements.invalid(), some(anything()));
        expect_that!(broken.entitlements.grants(), eq(0));

        let deleted = feed
            .send(Change::Entitlements(Box::new(Event::Delete(entitlements(
                "",
            )))))
            .await;
        expect_that!(deleted.entitlements.status(), eq(&Status::Absent));
    }

    #[gtest]
    fn a_hand_built_snapshot_cannot_tell_what_changed() {
        expect_that!(Snapshot::of(&[]).changed_since(0), none());
    }
}
