//! The ADS server: incremental xDS (`DeltaAggregatedResources`), one task per
//! Envoy stream, honouring the protocol.
//!
//! - Every resource has its own content version. A response carries only the
//!   resources this Envoy subscribed to whose version it does not have yet,
//!   and, for wildcard types (listeners, clusters, scopes), the names it
//!   should drop (`removed_resources`). A snapshot lists what changed since
//!   the previous one, so a change costs work and bytes in proportion to what
//!   changed, not to the number of views.
//! - Subscriptions follow `resource_names_subscribe`/`unsubscribe`; a type's
//!   first request with no names is a (legacy) wildcard, as is `*`.
//! - On (re)connect Envoy lists the versions it already has
//!   (`initial_resource_versions`): they are taken as what it holds, so a
//!   restarted sidecar sends only what differs and removes only what should
//!   go. The first request of each type is answered once (possibly with
//!   nothing), and nothing at all is sent until the index is synced.
//! - Every response has a fresh nonce and is ACKed or NACKed on its own. A
//!   NACK is logged with Envoy's message, counted, and not answered with a
//!   resend: what was sent counts as sent, so the rejected resource goes out
//!   again only once it changes (no push loop).
//! - Clusters are pushed before endpoints, listeners before scopes before
//!   routes. A cluster that ACKed routes still send requests to directly is
//!   kept until routes that no longer do are ACKed (make-before-break).
//! - What each Envoy holds is published ([`EnvoysWatch`]) so the API and the
//!   activator answer only once *this* Envoy can route.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::metrics::{Metrics, TypeLabel};
use super::resources::{
    self, CLUSTER_TYPE, ENDPOINT_TYPE, PUSH_ORDER, ROUTE_TYPE, Resource, SCOPED_ROUTE_TYPE,
    XdsSnapshot,
};
use crate::drain::Blockers;

/// What one connected Envoy holds, as it ACKed it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EnvoyStatus {
    /// Type URL → the version of everything of that type it holds
    /// ([`resources::set_version`]), once it has ACKed that type.
    pub acked_versions: BTreeMap<String, String>,
    /// Clusters for which it ACKed an assignment with at least one endpoint.
    pub clusters_with_endpoints: BTreeSet<String>,
    /// Virtual hosts (one per view, `view-<name>`) it routes: in route
    /// configurations it ACKed, loaded by scopes it ACKed.
    pub routed_hosts: BTreeSet<String>,
    pub nacks: u64,
}

/// Node id → status, for every Envoy connected now.
pub type EnvoysWatch = watch::Receiver<BTreeMap<String, EnvoyStatus>>;

#[derive(Clone)]
pub struct AdsServer {
    snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    envoys: Arc<watch::Sender<BTreeMap<String, EnvoyStatus>>>,
    /// Node id → the stream that publishes its status (the latest one).
    owners: Arc<Mutex<HashMap<String, u64>>>,
    metrics: Arc<Metrics>,
    nonces: Arc<AtomicU64>,
    streams: Arc<AtomicU64>,
    /// Each connected Envoy holds off the end of a drain: while it runs it
    /// may still be sent requests (on connections kept alive, or new ones
    /// until the endpoints' removal reaches every node) that need the API,
    /// ext_authz and xDS of this sidecar.
    drain: Option<Blockers>,
}

impl AdsServer {
    pub fn new(snapshots: watch::Receiver<Arc<XdsSnapshot>>, metrics: Arc<Metrics>) -> Self {
        Self {
            snapshots,
            envoys: Arc::new(watch::channel(BTreeMap::new()).0),
            owners: Arc::default(),
            metrics,
            nonces: Arc::new(AtomicU64::new(0)),
            streams: Arc::new(AtomicU64::new(0)),
            drain: None,
        }
    }

    /// Make every open stream a blocker of `drain`: the sidecar stops only
    /// once its Envoys have gone (in a pod: Envoy exits after its preStop
    /// sleep), or the drain's time is up.
    pub fn holding_off(mut self, drain: Blockers) -> Self {
        self.drain = Some(drain);
        self
    }

    pub fn envoys(&self) -> EnvoysWatch {
        self.envoys.subscribe()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        Err(Status::unimplemented(
            "this control plane serves incremental ADS (ads_config.api_type: DELTA_GRPC)",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let stream = EnvoyStream::new(self.clone(), tx);
        let blocker = self.drain.as_ref().map(Blockers::block);
        tokio::spawn(async move {
            stream.run(requests).await;
            drop(blocker);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A version of one resource that Envoy has (or will have once it applies
/// what was sent), with the resource itself when this process knows it.
#[derive(Debug, Clone)]
struct Held {
    version: Arc<str>,
    resource: Option<Arc<Resource>>,
}

/// Whether a held (or sent) cluster assignment has an endpoint.
fn held_has_endpoints(held: Option<&Held>) -> bool {
    held.and_then(|h| h.resource.as_ref())
        .is_some_and(|r| r.refs.has_endpoints)
}

impl Held {
    fn of(resource: &Arc<Resource>) -> Self {
        Held {
            version: resource.version.clone(),
            resource: Some(resource.clone()),
        }
    }
}

/// One type on one stream.
#[derive(Default)]
struct TypeState {
    /// Envoy asked for this type on this stream.
    requested: bool,
    /// The first request still waits for its answer.
    must_respond: bool,
    wildcard: bool,
    names: BTreeSet<Arc<str>>,
    /// What Envoy has, or will have once it applies what was sent.
    sent: BTreeMap<Arc<str>, Held>,
    /// What Envoy ACKed (or said it had when it connected).
    acked: BTreeMap<Arc<str>, Held>,
    /// [`resources::item_hash`] summed over `acked`.
    acked_sum: u64,
    ever_acked: bool,
}

impl TypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// A response not ACKed or NACKed yet.
struct Pending {
    type_url: &'static str,
    added: Vec<Held>,
    removed: Vec<Arc<str>>,
}

/// Status changes to publish, in order.
#[derive(Default)]
struct StatusChange {
    versions: Vec<(&'static str, String)>,
    hosts: Vec<(bool, String)>,
    clusters: Vec<(bool, String)>,
    nacks: u64,
}

impl StatusChange {
    fn is_empty(&self) -> bool {
        self.versions.is_empty()
            && self.hosts.is_empty()
            && self.clusters.is_empty()
            && self.nacks == 0
    }
}

/// What a route configuration contributes while Envoy routes with it.
#[derive(Default, PartialEq)]
struct Contribution {
    hosts: Vec<String>,
    clusters: Vec<Arc<str>>,
}

/// Which names of a type to compare with what Envoy has.
enum Names {
    All,
    These(Vec<Arc<str>>),
}

/// One Envoy's stream.
struct EnvoyStream {
    server: AdsServer,
    id: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    node: Option<String>,
    types: BTreeMap<&'static str, TypeState>,
    pending: HashMap<String, Pending>,
    /// The snapshot generation every type was last compared against in full
    /// or through its list of changes.
    compared: Option<u64>,
    /// Route configuration → ACKed scopes loading it.
    scope_refs: HashMap<Arc<str>, usize>,
    /// Route configuration → what it contributes (routed and loaded).
    contributions: HashMap<Arc<str>, Contribution>,
    /// Routed virtual host → route configurations contributing it.
    hosts: BTreeMap<String, usize>,
    /// Cluster → routed configurations sending requests to it directly.
    cluster_uses: HashMap<Arc<str>, usize>,
    /// Clusters with an ACKed assignment that has an endpoint.
    with_endpoints: BTreeSet<Arc<str>>,
    nacks: u64,
    /// Names to compare again because what Envoy ACKed changed.
    recheck: Vec<(&'static str, Arc<str>)>,
    change: StatusChange,
    published: bool,
}

impl EnvoyStream {
    fn new(server: AdsServer, tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>) -> Self {
        let id = server.streams.fetch_add(1, Ordering::Relaxed);
        Self {
            server,
            id,
            tx,
            node: None,
            types: BTreeMap::new(),
            pending: HashMap::new(),
            compared: None,
            scope_refs: HashMap::new(),
            contributions: HashMap::new(),
            hosts: BTreeMap::new(),
            cluster_uses: HashMap::new(),
            with_endpoints: BTreeSet::new(),
            nacks: 0,
            recheck: Vec::new(),
            change: StatusChange::default(),
            published: false,
        }
    }

    async fn run(mut self, mut requests: Streaming<DeltaDiscoveryRequest>) {
        let mut snapshots = self.server.snapshots.clone();
        self.server.metrics.streams.inc();
        loop {
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => {
                        if self.on_request(request).await.is_err() { break }
                    }
                    Some(Err(status)) => {
                        tracing::info!(node = self.node.as_deref(), %status, "xDS stream ended by Envoy");
                        break;
                    }
                    None => break,
                },
                changed = snapshots.changed() => {
                    if changed.is_err() { break }
                    let snapshot = snapshots.borrow_and_update().clone();
                    if self.on_snapshot(&snapshot).await.is_err() { break }
                }
            }
        }
        self.server.metrics.streams.dec();
        if let Some(node) = &self.node {
            let mut owners = self.server.owners.lock().expect("owners");
            if owners.get(node) == Some(&self.id) {
                owners.remove(node);
                self.server.envoys.send_modify(|envoys| {
                    envoys.remove(node);
                });
            }
        }
    }

    fn snapshot(&self) -> Arc<XdsSnapshot> {
        self.server.snapshots.borrow().clone()
    }

    /// A new snapshot: push what changed, in push order.
    async fn on_snapshot(&mut self, snapshot: &XdsSnapshot) -> Result<(), Closed> {
        if !snapshot.complete {
            return Ok(());
        }
        let changes = self
            .compared
            .and_then(|compared| snapshot.changed_since(compared));
        for type_url in PUSH_ORDER {
            let names = match &changes {
                Some(changes) => Names::These(
                    changes
                        .get(type_url)
                        .map(|n| n.iter().cloned().collect())
                        .unwrap_or_default(),
                ),
                None => Names::All,
            };
            self.push(snapshot, type_url, names).await?;
        }
        self.compared = Some(snapshot.generation);
        self.settle(snapshot).await?;
        self.flush_status();
        Ok(())
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Closed> {
        if self.node.is_none() {
            let node = request
                .node
                .as_ref()
                .map(|n| n.id.clone())
                .unwrap_or_default();
            tracing::info!(node, "Envoy connected (incremental ADS)");
            self.node = Some(node);
        }
        let Some(type_url) = PUSH_ORDER.iter().copied().find(|t| *t == request.type_url) else {
            tracing::warn!(
                type_url = request.type_url,
                "Envoy asked for a type this control plane does not serve"
            );
            return Ok(());
        };
        let snapshot = self.snapshot();
        let mut asked: Vec<Arc<str>> = Vec::new();
        let first = !self.types.get(type_url).is_some_and(|t| t.requested);
        if first {
            let state = self.types.entry(type_url).or_default();
            state.requested = true;
            state.must_respond = true;
            // A type's first request naming nothing is a wildcard (legacy form).
            state.wildcard = request.resource_names_subscribe.is_empty();
            for (name, version) in &request.initial_resource_versions {
                let held = Held {
                    version: version.as_str().into(),
                    resource: snapshot
                        .get(type_url, name)
                        .filter(|r| *r.version == **version)
                        .cloned(),
                };
                let name: Arc<str> = name.as_str().into();
                self.types
                    .entry(type_url)
                    .or_default()
                    .sent
                    .insert(name.clone(), held.clone());
                self.set_acked(type_url, &name, Some(held));
            }
        }
        for name in &request.resource_names_subscribe {
            let state = self.types.entry(type_url).or_default();
            if name == "*" {
                state.wildcard = true;
            } else {
                let name: Arc<str> = name.as_str().into();
                state.names.insert(name.clone());
                asked.push(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            let state = self.types.entry(type_url).or_default();
            if name == "*" {
                state.wildcard = false;
                continue;
            }
            state.names.remove(name.as_str());
            if !state.wildcard {
                // Envoy forgets it: so do we.
                state.sent.remove(name.as_str());
                let name: Arc<str> = name.as_str().into();
                self.set_acked(type_url, &name, None);
            }
        }
        if !request.response_nonce.is_empty()
            && let Some(pending) = self.pending.remove(&request.response_nonce)
        {
            match &request.error_detail {
                Some(error) => self.on_nack(&pending, &error.message),
                None => self.on_ack(pending),
            }
        }
        let names = if self.types[type_url].must_respond {
            Names::All
        } else {
            Names::These(asked)
        };
        self.push(&snapshot, type_url, names).await?;
        self.settle(&snapshot).await?;
        self.flush_status();
        Ok(())
    }

    fn on_ack(&mut self, pending: Pending) {
        let type_url = pending.type_url;
        tracing::debug!(
            node = self.node.as_deref(),
            type_url,
            added = pending.added.len(),
            removed = pending.removed.len(),
            "ACK"
        );
        self.server
            .metrics
            .acks
            .get_or_create(&TypeLabel::of(type_url))
            .inc();
        for name in &pending.removed {
            self.set_acked(type_url, name, None);
        }
        for held in pending.added {
            let name = held
                .resource
                .as_ref()
                .map(|r| r.name.clone())
                .expect("sent resources are known");
            // Envoy ignores what it unsubscribed from meanwhile.
            if self
                .types
                .get(type_url)
                .is_some_and(|t| t.subscribed(&name))
            {
                self.set_acked(type_url, &name, Some(held));
            }
        }
        let state = self.types.entry(type_url).or_default();
        state.ever_acked = true;
        let version = resources::format_set_version(state.acked_sum);
        self.change.versions.push((type_url, version));
    }

    fn on_nack(&mut self, pending: &Pending, message: &str) {
        self.server
            .metrics
            .nacks
            .get_or_create(&TypeLabel::of(pending.type_url))
            .inc();
        self.nacks += 1;
        self.change.nacks += 1;
        let rejected: Vec<String> = pending
            .added
            .iter()
            .filter_map(|h| h.resource.as_ref())
            .map(|r| format!("{}@{}", r.name, r.version))
            .collect();
        tracing::error!(
            node = self.node.as_deref(),
            type_url = pending.type_url,
            ?rejected,
            removed = ?pending.removed,
            message,
            "Envoy rejected configuration (NACK)"
        );
    }

    /// Whether Envoy routes to endpoints of cluster `name`, as far as this
    /// stream can tell; the change goes into the status.
    fn set_with_endpoints(&mut self, name: &Arc<str>, has: bool) {
        let changed = if has {
            self.with_endpoints.insert(name.clone())
        } else {
            self.with_endpoints.remove(name)
        };
        if changed {
            self.change.clusters.push((has, name.to_string()));
        }
    }

    /// Record what Envoy now holds of `name` and what follows from it.
    fn set_acked(&mut self, type_url: &'static str, name: &Arc<str>, held: Option<Held>) {
        let state = self.types.entry(type_url).or_default();
        let old = match &held {
            Some(held) => state.acked.insert(name.clone(), held.clone()),
            None => state.acked.remove(name),
        };
        if let Some(old) = &old {
            state.acked_sum = state
                .acked_sum
                .wrapping_sub(resources::item_hash(name, &old.version));
        }
        if let Some(new) = &held {
            state.acked_sum = state
                .acked_sum
                .wrapping_add(resources::item_hash(name, &new.version));
        }
        if state.ever_acked && old.is_some() && held.is_none() {
            // An unsubscribed resource: the type's version moves without an ACK.
            let version = resources::format_set_version(state.acked_sum);
            self.change.versions.push((type_url, version));
        }
        match type_url {
            ENDPOINT_TYPE => {
                // Only while what was sent since has endpoints too: an ACK
                // of an assignment with endpoints, arriving after one
                // without them went out, is already stale.
                let has = held_has_endpoints(held.as_ref())
                    && held_has_endpoints(self.types[type_url].sent.get(name));
                self.set_with_endpoints(name, has);
            }
            SCOPED_ROUTE_TYPE => {
                // A scope loads the route configuration of its own name
                // unless this process knows better.
                let route_of = |h: &Option<Held>| {
                    h.as_ref().map(|h| {
                        h.resource
                            .as_ref()
                            .and_then(|r| r.refs.route.clone())
                            .unwrap_or_else(|| name.clone())
                    })
                };
                let (before, after) = (route_of(&old), route_of(&held));
                if before != after {
                    if let Some(route) = &before {
                        let count = self.scope_refs.entry(route.clone()).or_default();
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            self.scope_refs.remove(route);
                        }
                    }
                    if let Some(route) = &after {
                        *self.scope_refs.entry(route.clone()).or_default() += 1;
                    }
                    for route in before.iter().chain(after.iter()) {
                        self.reconcile_route(route);
                    }
                }
            }
            ROUTE_TYPE => self.reconcile_route(name),
            _ => {}
        }
    }

    /// Bring what route configuration `route` contributes (routed hosts,
    /// clusters in direct use) in line with what Envoy holds.
    fn reconcile_route(&mut self, route: &Arc<str>) {
        let loaded = self.scope_refs.get(route).is_some_and(|n| *n > 0);
        let acked = self.types.get(ROUTE_TYPE).and_then(|t| t.acked.get(route));
        let now = match (loaded, acked) {
            (true, Some(held)) => match &held.resource {
                Some(resource) => Contribution {
                    hosts: resource.refs.virtual_hosts.clone(),
                    clusters: resource.refs.direct_clusters.clone(),
                },
                None => {
                    let (hosts, clusters) = resources::assumed_route_refs(route);
                    Contribution { hosts, clusters }
                }
            },
            _ => Contribution::default(),
        };
        let before = self.contributions.remove(route).unwrap_or_default();
        if before == now {
            if now != Contribution::default() {
                self.contributions.insert(route.clone(), now);
            }
            return;
        }
        for host in &before.hosts {
            if let Some(count) = self.hosts.get_mut(host) {
                *count -= 1;
                if *count == 0 {
                    self.hosts.remove(host);
                    self.change.hosts.push((false, host.clone()));
                }
            }
        }
        for host in &now.hosts {
            let count = self.hosts.entry(host.clone()).or_default();
            *count += 1;
            if *count == 1 {
                self.change.hosts.push((true, host.clone()));
            }
        }
        for cluster in &before.clusters {
            if let Some(count) = self.cluster_uses.get_mut(cluster) {
                *count -= 1;
                if *count == 0 {
                    self.cluster_uses.remove(cluster);
                    // Nothing Envoy routes with sends requests there now.
                    self.recheck.push((CLUSTER_TYPE, cluster.clone()));
                }
            }
        }
        for cluster in &now.clusters {
            *self.cluster_uses.entry(cluster.clone()).or_default() += 1;
        }
        if now != Contribution::default() {
            self.contributions.insert(route.clone(), now);
        }
    }

    /// What this Envoy should have of `name` (None: nothing, or keep what it has).
    fn desired(&self, snapshot: &XdsSnapshot, type_url: &str, name: &str) -> Desired {
        let resource = snapshot.get(type_url, name);
        match (type_url, resource) {
            (CLUSTER_TYPE, None) if self.cluster_uses.contains_key(name) => Desired::Keep,
            (_, Some(resource)) => Desired::Have(resource.clone()),
            (_, None) => Desired::Absent,
        }
    }

    /// Compare `names` of one type with what Envoy has and send the difference
    /// (and the first answer of a type, even if empty).
    async fn push(
        &mut self,
        snapshot: &XdsSnapshot,
        type_url: &'static str,
        names: Names,
    ) -> Result<(), Closed> {
        if !snapshot.complete || !self.types.get(type_url).is_some_and(|t| t.requested) {
            return Ok(());
        }
        let names: Vec<Arc<str>> = match names {
            Names::These(names) => names,
            Names::All => {
                let state = &self.types[type_url];
                let mut all: BTreeSet<Arc<str>> = if state.wildcard {
                    snapshot.resources(type_url).keys().cloned().collect()
                } else {
                    BTreeSet::new()
                };
                all.extend(state.names.iter().cloned());
                all.extend(state.sent.keys().cloned());
                all.into_iter().collect()
            }
        };
        let mut added: Vec<Arc<Resource>> = Vec::new();
        let mut removed: Vec<Arc<str>> = Vec::new();
        let mut learned: Vec<(Arc<str>, Arc<Resource>)> = Vec::new();
        {
            let state = &self.types[type_url];
            let mut seen = BTreeSet::new();
            for name in names {
                if !seen.insert(name.clone())
                    || !state.subscribed(&name) && !state.sent.contains_key(&name)
                {
                    continue;
                }
                let sent = state.sent.get(&name);
                match self.desired(snapshot, type_url, &name) {
                    Desired::Have(resource) if state.subscribed(&name) => match sent {
                        Some(sent) if sent.version == resource.version => {
                            if sent.resource.is_none() {
                                learned.push((name, resource));
                            }
                        }
                        _ => added.push(resource),
                    },
                    Desired::Have(_) | Desired::Keep => {}
                    Desired::Absent => {
                        // Only wildcard types are told a resource is gone:
                        // Envoy drops a named one when it unsubscribes.
                        if state.wildcard && sent.is_some() {
                            removed.push(name);
                        }
                    }
                }
            }
        }
        // Versions Envoy had when it connected, now known in full.
        for (name, resource) in learned {
            let state = self.types.get_mut(type_url).expect("requested");
            let held = Held::of(&resource);
            state.sent.insert(name.clone(), held.clone());
            if state
                .acked
                .get(&name)
                .is_some_and(|a| a.version == resource.version)
            {
                self.set_acked(type_url, &name, Some(held));
            }
        }
        let state = self.types.get_mut(type_url).expect("requested");
        if added.is_empty() && removed.is_empty() && !state.must_respond {
            return Ok(());
        }
        state.must_respond = false;
        for resource in &added {
            state.sent.insert(resource.name.clone(), Held::of(resource));
        }
        for name in &removed {
            state.sent.remove(name);
        }
        if type_url == ENDPOINT_TYPE {
            // An assignment without endpoints is on its way: from now on the
            // cluster may have none in Envoy (whatever it ACKs before).
            for resource in &added {
                if !resource.refs.has_endpoints {
                    self.set_with_endpoints(&resource.name, false);
                }
            }
        }
        let nonce = self
            .server
            .nonces
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let bytes: u64 = added.iter().map(|r| r.body.value.len() as u64).sum();
        let response = DeltaDiscoveryResponse {
            system_version_info: snapshot.generation.to_string(),
            resources: added
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.to_string(),
                    version: r.version.to_string(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_string(),
            removed_resources: removed.iter().map(|n| n.to_string()).collect(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.server
            .metrics
            .responses
            .get_or_create(&TypeLabel::of(type_url))
            .inc();
        self.server
            .metrics
            .resource_bytes
            .get_or_create(&TypeLabel::of(type_url))
            .inc_by(bytes);
        tracing::debug!(
            node = self.node.as_deref(),
            type_url,
            nonce,
            added = added.len(),
            removed = removed.len(),
            bytes,
            "push"
        );
        self.pending.insert(
            nonce,
            Pending {
                type_url,
                added: added.iter().map(Held::of).collect(),
                removed,
            },
        );
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }

    /// Compare again what changes in Envoy's state made stale (clusters no
    /// route uses directly any more).
    async fn settle(&mut self, snapshot: &XdsSnapshot) -> Result<(), Closed> {
        while !self.recheck.is_empty() {
            let recheck = std::mem::take(&mut self.recheck);
            for type_url in PUSH_ORDER {
                let names: Vec<Arc<str>> = recheck
                    .iter()
                    .filter(|(t, _)| *t == type_url)
                    .map(|(_, n)| n.clone())
                    .collect();
                if !names.is_empty() {
                    self.push(snapshot, type_url, Names::These(names)).await?;
                }
            }
        }
        Ok(())
    }

    /// Publish what changed in this Envoy's status.
    fn flush_status(&mut self) {
        let Some(node) = self.node.clone() else {
            return;
        };
        if self.published && self.change.is_empty() {
            return;
        }
        if !self.published && self.change.is_empty() {
            // Nothing ACKed or held yet: nothing to say.
            return;
        }
        let change = std::mem::take(&mut self.change);
        let mut owners = self.server.owners.lock().expect("owners");
        if self.published && owners.get(&node) != Some(&self.id) {
            // A newer stream of the same Envoy speaks for it now.
            return;
        }
        if !self.published {
            // This stream's first word: the whole status (replacing whatever
            // an earlier stream of the same Envoy left).
            self.published = true;
            owners.insert(node.clone(), self.id);
            let status = EnvoyStatus {
                acked_versions: self
                    .types
                    .iter()
                    .filter(|(_, t)| t.ever_acked)
                    .map(|(type_url, t)| {
                        (
                            type_url.to_string(),
                            resources::format_set_version(t.acked_sum),
                        )
                    })
                    .collect(),
                clusters_with_endpoints: self
                    .with_endpoints
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                routed_hosts: self.hosts.keys().cloned().collect(),
                nacks: self.nacks,
            };
            self.server.envoys.send_modify(|envoys| {
                envoys.insert(node, status);
            });
            return;
        }
        self.server.envoys.send_modify(|envoys| {
            let status = envoys.entry(node).or_default();
            for (type_url, version) in change.versions {
                status.acked_versions.insert(type_url.to_string(), version);
            }
            for (add, host) in change.hosts {
                if add {
                    status.routed_hosts.insert(host);
                } else {
                    status.routed_hosts.remove(&host);
                }
            }
            for (add, cluster) in change.clusters {
                if add {
                    status.clusters_with_endpoints.insert(cluster);
                } else {
                    status.clusters_with_endpoints.remove(&cluster);
                }
            }
            status.nacks += change.nacks;
        });
    }
}

enum Desired {
    Have(Arc<Resource>),
    /// Not wanted any more, but still used: leave it.
    Keep,
    Absent,
}

/// The Envoy went away.
struct Closed;
