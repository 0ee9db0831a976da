//! The ADS server: one task per Envoy stream, honouring the xDS protocol.
//!
//! - Versions are per type and derived from content; a type is pushed only
//!   when what this Envoy subscribed to changed.
//! - Every response has a fresh nonce. A request echoing the latest nonce is
//!   an ACK (no `error_detail`) or a NACK (logged with Envoy's message,
//!   counted, and *not* answered with a resend: the next change will push
//!   again, so a bad resource never causes a push loop). Requests with a
//!   stale nonce only update subscriptions.
//! - Clusters are pushed before endpoints, listeners before routes; a
//!   cluster still named by the routes this Envoy last ACKed is kept until
//!   the routes that drop it are ACKed (make-before-break).
//! - What each Envoy has ACKed is published ([`EnvoysWatch`]) so the
//!   activator can release a request only once *this* Envoy can route it.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::resources::{
    CLUSTER_TYPE, ENDPOINT_TYPE, PUSH_ORDER, ROUTE_TYPE, Resources, XdsSnapshot,
};
use crate::telemetry::Metrics;

/// What one connected Envoy has ACKed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EnvoyStatus {
    /// Type URL → the version it last ACKed.
    pub acked_versions: BTreeMap<String, String>,
    /// Clusters for which it ACKed an assignment with at least one endpoint.
    pub clusters_with_endpoints: BTreeSet<String>,
    /// Virtual hosts (one per view, `view-<name>`) in the routes it ACKed.
    pub routed_hosts: BTreeSet<String>,
    pub nacks: u64,
}

/// Node id → status, for every Envoy connected now.
pub type EnvoysWatch = watch::Receiver<BTreeMap<String, EnvoyStatus>>;

#[derive(Clone)]
pub struct AdsServer {
    snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    envoys: Arc<watch::Sender<BTreeMap<String, EnvoyStatus>>>,
    metrics: Arc<Metrics>,
    nonces: Arc<AtomicU64>,
}

impl AdsServer {
    pub fn new(snapshots: watch::Receiver<Arc<XdsSnapshot>>, metrics: Arc<Metrics>) -> Self {
        Self {
            snapshots,
            envoys: Arc::new(watch::channel(BTreeMap::new()).0),
            metrics,
            nonces: Arc::new(AtomicU64::new(0)),
        }
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
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let stream = EnvoyStream::new(self.clone(), tx);
        tokio::spawn(stream.run(requests));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "this control plane serves state-of-the-world ADS (api_type: GRPC)",
        ))
    }
}

/// What was last sent for one type.
#[derive(Default)]
struct Sent {
    nonce: String,
    version: String,
    resources: BTreeMap<String, Any>,
}

/// One Envoy's stream.
struct EnvoyStream {
    server: AdsServer,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    node: Option<String>,
    /// Type URL → names asked for (empty = all; LDS/CDS are wildcard).
    subscribed: BTreeMap<String, BTreeSet<String>>,
    sent: BTreeMap<String, Sent>,
    /// Clusters named by the routes this Envoy last ACKed.
    acked_route_clusters: BTreeSet<String>,
    /// Clusters named by the routes sent with each RDS nonce (until ACKed).
    pending_route_clusters: BTreeMap<String, BTreeSet<String>>,
    status: EnvoyStatus,
}

impl EnvoyStream {
    fn new(server: AdsServer, tx: mpsc::Sender<Result<DiscoveryResponse, Status>>) -> Self {
        Self {
            server,
            tx,
            node: None,
            subscribed: BTreeMap::new(),
            sent: BTreeMap::new(),
            acked_route_clusters: BTreeSet::new(),
            pending_route_clusters: BTreeMap::new(),
            status: EnvoyStatus::default(),
        }
    }

    async fn run(mut self, mut requests: Streaming<DiscoveryRequest>) {
        let mut snapshots = self.server.snapshots.clone();
        self.server.metrics.xds_streams.inc();
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
                    if self.push_all().await.is_err() { break }
                }
            }
        }
        self.server.metrics.xds_streams.dec();
        if let Some(node) = &self.node {
            self.server.envoys.send_modify(|envoys| {
                envoys.remove(node);
            });
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Closed> {
        if self.node.is_none() {
            let node = request
                .node
                .as_ref()
                .map(|n| n.id.clone())
                .unwrap_or_default();
            tracing::info!(node, "Envoy connected");
            self.node = Some(node);
        }
        let type_url = request.type_url.clone();
        if !PUSH_ORDER.contains(&type_url.as_str()) {
            tracing::warn!(
                type_url,
                "Envoy asked for a type this control plane does not serve"
            );
            return Ok(());
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let names_changed = self.subscribed.get(&type_url) != Some(&names);
        self.subscribed.insert(type_url.clone(), names);

        let latest_nonce = self.sent.get(&type_url).map(|s| s.nonce.as_str());
        if !request.response_nonce.is_empty()
            && Some(request.response_nonce.as_str()) == latest_nonce
        {
            match &request.error_detail {
                Some(error) => self.on_nack(&type_url, &request.version_info, &error.message),
                None => self.on_ack(&type_url, &request.response_nonce),
            }
            // A response to what we sent: answer only if it also changed
            // what it subscribes to (never re-send after a NACK).
            if names_changed {
                self.push(&type_url).await?;
            }
            if type_url == ROUTE_TYPE && request.error_detail.is_none() {
                // Clusters kept for the routes Envoy just left behind can go.
                self.push(CLUSTER_TYPE).await?;
            }
            return Ok(());
        }
        if request.response_nonce.is_empty() || names_changed {
            // A first request for this type (or a reconnect), or a new subscription.
            self.push(&type_url).await?;
        }
        Ok(())
    }

    fn on_ack(&mut self, type_url: &str, nonce: &str) {
        let Some(sent) = self.sent.get(type_url) else {
            return;
        };
        self.server
            .metrics
            .xds_acks
            .get_or_create(&type_label(type_url))
            .inc();
        self.status
            .acked_versions
            .insert(type_url.to_string(), sent.version.clone());
        if type_url == ENDPOINT_TYPE {
            self.status.clusters_with_endpoints = sent
                .resources
                .iter()
                .filter(|(_, any)| assignment_has_endpoints(any))
                .map(|(name, _)| name.clone())
                .collect();
        }
        if type_url == ROUTE_TYPE {
            self.status.routed_hosts = sent.resources.values().flat_map(virtual_hosts).collect();
            if let Some(clusters) = self.pending_route_clusters.remove(nonce) {
                self.acked_route_clusters = clusters;
            }
            self.pending_route_clusters.clear();
        }
        self.publish_status();
    }

    fn on_nack(&mut self, type_url: &str, version: &str, message: &str) {
        self.server
            .metrics
            .xds_nacks
            .get_or_create(&type_label(type_url))
            .inc();
        self.status.nacks += 1;
        tracing::error!(
            node = self.node.as_deref(),
            type_url,
            rejected_version = self.sent.get(type_url).map(|s| s.version.as_str()),
            kept_version = version,
            message,
            "Envoy rejected configuration (NACK)"
        );
        self.publish_status();
    }

    fn publish_status(&self) {
        let Some(node) = &self.node else { return };
        let status = self.status.clone();
        self.server.envoys.send_modify(|envoys| {
            envoys.insert(node.clone(), status);
        });
    }

    /// Push every subscribed type whose content changed, in push order.
    async fn push_all(&mut self) -> Result<(), Closed> {
        for type_url in PUSH_ORDER {
            if self.subscribed.contains_key(type_url) {
                self.push(type_url).await?;
            }
        }
        Ok(())
    }

    /// What this Envoy should have of one type now.
    fn desired(&self, type_url: &str) -> Resources {
        let snapshot = self.server.snapshots.borrow().clone();
        let mut resources = snapshot.resources(type_url);
        if type_url == CLUSTER_TYPE {
            // Make-before-break: keep clusters the ACKed routes still use.
            if let Some(sent) = self.sent.get(CLUSTER_TYPE) {
                for name in &self.acked_route_clusters {
                    if let (false, Some(any)) =
                        (resources.0.contains_key(name), sent.resources.get(name))
                    {
                        resources.0.insert(name.clone(), any.clone());
                    }
                }
            }
        }
        let names = self.subscribed.get(type_url).cloned().unwrap_or_default();
        if !names.is_empty() {
            resources.0.retain(|name, _| names.contains(name));
        }
        resources
    }

    /// Send one type if what this Envoy should have differs from what it was sent.
    async fn push(&mut self, type_url: &str) -> Result<(), Closed> {
        if !self.subscribed.contains_key(type_url) || !self.server.snapshots.borrow().complete {
            return Ok(());
        }
        let resources = self.desired(type_url);
        let version = resources.version();
        if self
            .sent
            .get(type_url)
            .is_some_and(|s| s.version == version)
        {
            return Ok(());
        }
        let nonce = self
            .server
            .nonces
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        if type_url == ROUTE_TYPE {
            let snapshot = self.server.snapshots.borrow().clone();
            let clusters = resources
                .0
                .keys()
                .filter_map(|name| snapshot.route_clusters.get(name))
                .flatten()
                .cloned()
                .collect();
            self.pending_route_clusters.insert(nonce.clone(), clusters);
        }
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: resources.0.values().cloned().collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.server
            .metrics
            .xds_responses
            .get_or_create(&type_label(type_url))
            .inc();
        self.server
            .metrics
            .xds_bytes
            .get_or_create(&type_label(type_url))
            .inc_by(resources.0.values().map(|a| a.value.len() as u64).sum());
        tracing::debug!(
            node = self.node.as_deref(),
            type_url,
            version,
            nonce,
            count = resources.0.len(),
            "push"
        );
        self.sent.insert(
            type_url.to_string(),
            Sent {
                nonce,
                version,
                resources: resources.0,
            },
        );
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }
}

/// The Envoy went away.
struct Closed;

fn type_label(type_url: &str) -> crate::telemetry::TypeLabel {
    crate::telemetry::TypeLabel {
        r#type: type_url.rsplit('.').next().unwrap_or(type_url).to_string(),
    }
}

fn virtual_hosts(any: &Any) -> Vec<String> {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use prost::Message;
    RouteConfiguration::decode(any.value.as_slice())
        .map(|routes| routes.virtual_hosts.into_iter().map(|v| v.name).collect())
        .unwrap_or_default()
}

fn assignment_has_endpoints(any: &Any) -> bool {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;
    ClusterLoadAssignment::decode(any.value.as_slice())
        .is_ok_and(|a| a.endpoints.iter().any(|l| !l.lb_endpoints.is_empty()))
}
