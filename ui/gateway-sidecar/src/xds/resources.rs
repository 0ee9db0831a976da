//! Envoy's configuration as a function of the index snapshot, one small
//! resource per view so that one view's change is one small update.
//!
//! ```text
//! Listener "gateway" (ENVOY_LISTEN) ── HTTP connection manager, scoped routes "gateway":
//!   scope key = the first label of the Host (port stripped first: strip_any_host_port)
//!   http filters: ext_authz (disabled unless a route enables it) → router
//!   a request no route matches (no scope, or no virtual host in it): 404 "no such view"
//! ScopedRouteConfiguration "gateway"      key <first label of GATEWAY_HOSTNAME> → RDS "gateway"
//! ScopedRouteConfiguration "view-<name>"  key <name>                             → RDS "view-<name>"
//! RouteConfiguration "gateway"
//!   vhost "api":         <GATEWAY_HOSTNAME>  /_api/ → cluster sidecar-api (static)
//!                                            / → sidecar-api too (the hub's page, else its JSON 404)
//! RouteConfiguration "view-<name>"
//!   vhost "view-<name>": <name>.<HOSTNAME>   /_gateway/ → sidecar-api (the progress page's status stream)
//!                                            / → cluster view-<name>, ext_authz off (serving endpoints)
//!                                            / → cluster view-<name>, ext_authz on  (none: the
//!                                                sidecar activates the view and holds the request
//!                                                until Envoy has the cluster with a ready endpoint)
//! Cluster "view-<name>" (EDS over ADS) and its ClusterLoadAssignment — only
//! for active views (serving endpoints, or a start under way: the cluster is
//! warm before the pod is ready), so Envoy holds clusters for active views only.
//! ```
//!
//! Hosts match exactly: `demo.localhost:8080` is `demo.localhost` (the port is
//! stripped before routing), `demo.localhost.evil.example` falls in scope
//! `demo` but matches no virtual host there, so it gets the same 404 as an
//! unknown view. The scope key is compared exactly, so a Host with capitals
//! is lowercased first (`access::lowercase_hosts`). A view named like the first label of
//! `GATEWAY_HOSTNAME` cannot have a scope of its own: its virtual host goes
//! into the gateway's route configuration instead.
//!
//! [`Builder`] keeps every view's resources and looks only at the views the
//! index says changed (and rebuilds only those whose state really differs),
//! so a change costs work in proportion to what changed, not to the number of
//! views: resources live in persistent maps (a snapshot shares all but the
//! changed entries with the one before), and each snapshot lists the names
//! that changed in each of the last [`crate::changelog::KEEP`] snapshots, so a stream
//! that fell a few snapshots behind still compares only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as ext_authz;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use prost::Message;

use super::access::{self, SECRET_TYPE};
use crate::changelog::ChangeLog;
use crate::config::{AccessLog, Config};
use crate::index::{Snapshot, ViewState};

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const SCOPED_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The order in which a change is pushed: clusters before the endpoints that
/// warm them, secrets before the listener that names them, listeners before
/// the scopes they load, scopes before the routes they name.
pub const PUSH_ORDER: [&str; 6] = [
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    SECRET_TYPE,
    LISTENER_TYPE,
    SCOPED_ROUTE_TYPE,
    ROUTE_TYPE,
];

/// The name of the listener, of its scoped routes, and of the scope and
/// route configuration of the gateway's own host.
pub const GATEWAY: &str = "gateway";
const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// How much longer than the cold-start budget Envoy waits for the sidecar's
/// answer: the sidecar answers 503 itself at the budget.
const EXT_AUTHZ_MARGIN_SECONDS: u64 = 5;
/// What a host no virtual host matches gets.
pub const NO_SUCH_VIEW: &str = "no such view\n";

/// One xDS resource, encoded once, with its content version.
#[derive(Debug, PartialEq)]
pub struct Resource {
    pub name: Arc<str>,
    /// A content version: equal resources give equal versions in any process
    /// (a restarted sidecar recognises what Envoy already has).
    pub version: Arc<str>,
    pub body: Any,
    pub refs: Refs,
}

/// What a resource means for the protocol and for [`super::EnvoyStatus`].
#[derive(Debug, Default, PartialEq)]
pub struct Refs {
    /// A scope: the route configuration it loads.
    pub route: Option<Arc<str>>,
    /// A route configuration: its virtual hosts.
    pub virtual_hosts: Vec<String>,
    /// A route configuration: the clusters it sends requests to directly
    /// (ext_authz off). Such a cluster stays in Envoy until routes that no
    /// longer use it are ACKed (make-before-break).
    pub direct_clusters: Vec<Arc<str>>,
    /// An endpoint assignment with at least one endpoint.
    pub has_endpoints: bool,
}

impl Resource {
    fn new<M: Message>(type_url: &str, name: &str, message: &M, refs: Refs) -> Arc<Resource> {
        let body = any(type_url, message);
        let version = content_version(&body.value);
        Arc::new(Resource {
            name: name.into(),
            version,
            body,
            refs,
        })
    }
}

fn content_version(bytes: &[u8]) -> Arc<str> {
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}", hasher.finish()).into()
}

/// One type's resources, by name (persistent: cloning shares the entries).
pub type Resources = imbl::OrdMap<Arc<str>, Arc<Resource>>;

/// Per type, the names whose resource changed (or went).
pub type Changes = BTreeMap<&'static str, BTreeSet<Arc<str>>>;

/// Everything Envoy should have, per type.
#[derive(Debug, Clone, Default)]
pub struct XdsSnapshot {
    pub by_type: BTreeMap<&'static str, Resources>,
    /// Increases with every published snapshot.
    pub generation: u64,
    /// What changed in each of the last snapshots, this one last.
    pub changes: ChangeLog<Changes>,
    /// Built from a synced index. Until then nothing is pushed: an Envoy
    /// reconnecting to a restarted sidecar keeps what it has rather than
    /// receiving an empty configuration.
    pub complete: bool,
}

impl XdsSnapshot {
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<Resource>> {
        self.by_type.get(type_url)?.get(name)
    }

    pub fn resources(&self, type_url: &str) -> Resources {
        self.by_type.get(type_url).cloned().unwrap_or_default()
    }

    /// Per type, the names that changed after snapshot `generation` up to
    /// this one; None when that is too far back (or not from this builder)
    /// to tell.
    pub fn changed_since(&self, generation: u64) -> Option<Changes> {
        if generation == self.generation {
            return Some(Changes::new());
        }
        let mut changes = Changes::new();
        for changed in self.changes.since(generation, self.generation)? {
            for (type_url, names) in changed {
                changes
                    .entry(type_url)
                    .or_default()
                    .extend(names.iter().cloned());
            }
        }
        Some(changes)
    }
}

/// The version of a set of resources as a whole (what [`super::EnvoyStatus`]
/// reports per type): a sum of one hash per (name, version), so it can be
/// kept up to date one resource at a time and equal sets give equal versions
/// in any process.
pub fn set_version<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    format_set_version(items.into_iter().fold(0u64, |sum, (name, version)| {
        sum.wrapping_add(item_hash(name, version))
    }))
}

pub(crate) fn item_hash(name: &str, version: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    version.hash(&mut hasher);
    hasher.finish()
}

pub(crate) fn format_set_version(sum: u64) -> String {
    format!("{sum:016x}")
}

pub fn cluster_name(view: &str) -> String {
    format!("view-{view}")
}

/// What a route configuration Envoy has but whose content this process does
/// not know (a version from before a restart) may mean, by construction of
/// the names: `view-<name>` has that virtual host and may send requests
/// straight to that cluster.
pub fn assumed_route_refs(name: &str) -> (Vec<String>, Vec<Arc<str>>) {
    if name.starts_with("view-") {
        (vec![name.to_string()], vec![name.into()])
    } else {
        (Vec::new(), Vec::new())
    }
}

/// Build every resource from one index snapshot (what [`Builder`] does
/// incrementally).
pub fn build(snapshot: &Snapshot, config: &Config) -> XdsSnapshot {
    Builder::new(Arc::new(config.clone()))
        .update(snapshot)
        .unwrap_or_default()
}

/// One view as last built.
struct Built {
    state: Arc<ViewState>,
    shape: Shape,
}

/// What a view's resources depend on.
#[derive(PartialEq)]
struct Shape {
    /// Serving endpoints, in a stable order.
    serving: Vec<(IpAddr, u16)>,
    /// A start is under way: Envoy gets the (still empty) cluster now, so
    /// that when the pod is ready only its endpoints are left to send, not a
    /// new cluster to warm.
    starting: bool,
    /// Who may reach the view's host.
    owner: Option<views_types::Owner>,
    shared_with: Option<views_types::Shares>,
}

impl Shape {
    fn of(view: &ViewState) -> Self {
        let mut serving: Vec<_> = view.serving_endpoints().map(|e| (e.ip, e.port)).collect();
        serving.sort();
        Shape {
            serving,
            starting: view.live_activation().is_some(),
            owner: view.spec.owner.clone(),
            shared_with: view.spec.shared_with.clone(),
        }
    }

    fn has_cluster(&self) -> bool {
        self.starting || !self.serving.is_empty()
    }
}

/// Keeps every resource and rebuilds only what a new index snapshot changes.
pub struct Builder {
    config: Arc<Config>,
    /// The scope key of the gateway's own host.
    gateway_label: String,
    views: BTreeMap<String, Built>,
    /// The generation of the index snapshot last applied.
    index_generation: Option<u64>,
    by_type: BTreeMap<&'static str, Resources>,
    changed: Changes,
    changes: ChangeLog<Changes>,
    generation: u64,
    complete: bool,
    started: bool,
    /// The certificate last given to Envoy.
    tls: Option<Arc<crate::tls::Certificate>>,
}

impl Builder {
    pub fn new(config: Arc<Config>) -> Self {
        let gateway_label = scope_key_of(&config.gateway_hostname).to_string();
        Self {
            config,
            gateway_label,
            views: BTreeMap::new(),
            index_generation: None,
            by_type: PUSH_ORDER.iter().map(|t| (*t, Resources::new())).collect(),
            changed: Changes::new(),
            changes: ChangeLog::default(),
            generation: 0,
            complete: false,
            started: false,
            tls: None,
        }
    }

    /// Apply one index snapshot; the new xDS snapshot if anything changed.
    pub fn update(&mut self, snapshot: &Snapshot) -> Option<XdsSnapshot> {
        if !self.started {
            self.started = true;
            for secret in access::secrets(&self.config) {
                let name = secret.name.clone();
                self.set(
                    SECRET_TYPE,
                    Resource::new(SECRET_TYPE, &name, &secret, Refs::default()),
                );
            }
            for cluster in access::provider_clusters(&self.config) {
                let name = cluster.name.clone();
                self.set(
                    CLUSTER_TYPE,
                    Resource::new(CLUSTER_TYPE, &name, &cluster, Refs::default()),
                );
            }
            for listener in gateway_listeners(&self.config) {
                self.set(LISTENER_TYPE, listener);
            }
            if self.config.tls_secret.is_some() && snapshot.tls.is_none() {
                tracing::warn!(
                    secret = self.config.tls_secret,
                    "the TLS listener waits for a usable certificate in its Secret"
                );
            }
            self.set(SCOPED_ROUTE_TYPE, scope(GATEWAY, &self.gateway_label));
            // A one-label hostname (`localhost`) on a port: its first label
            // is `localhost:<port>`, for each port people use.
            if !self.config.gateway_hostname.contains('.') {
                let plain = self
                    .config
                    .tls_secret
                    .as_ref()
                    .and(self.config.envoy_http_listen)
                    .map(|address| address.port());
                let ports: Vec<u16> = self
                    .config
                    .gateway_public_port
                    .into_iter()
                    .chain(plain)
                    .collect();
                for port in ports {
                    self.set(
                        SCOPED_ROUTE_TYPE,
                        scope_of(
                            &format!("{GATEWAY}-port-{port}"),
                            GATEWAY,
                            &format!("{}:{port}", self.gateway_label),
                        ),
                    );
                }
            }
            self.rebuild_gateway_routes();
        }
        if let Some(certificate) = &snapshot.tls
            && self
                .tls
                .as_ref()
                .is_none_or(|served| !Arc::ptr_eq(served, certificate))
        {
            self.tls = Some(certificate.clone());
            let secret = access::certificate(certificate);
            let name = secret.name.clone();
            self.set(
                SECRET_TYPE,
                Resource::new(SECRET_TYPE, &name, &secret, Refs::default()),
            );
        }
        match self
            .index_generation
            .and_then(|seen| snapshot.changed_since(seen))
        {
            Some(names) => {
                for name in names {
                    self.apply_view(&name, snapshot.views.get(&name));
                }
            }
            None => {
                let gone: Vec<String> = self
                    .views
                    .keys()
                    .filter(|name| !snapshot.views.contains_key(*name))
                    .cloned()
                    .collect();
                for name in gone {
                    self.apply_view(&name, None);
                }
                for (name, state) in &snapshot.views {
                    self.apply_view(name, Some(state));
                }
            }
        }
        self.index_generation = Some(snapshot.generation);
        let complete_changed = self.complete != snapshot.synced;
        self.complete = snapshot.synced;
        if self.changed.is_empty() && !complete_changed && self.generation > 0 {
            return None;
        }
        self.generation += 1;
        self.changes
            .record(self.generation, std::mem::take(&mut self.changed));
        Some(XdsSnapshot {
            by_type: self.by_type.clone(),
            generation: self.generation,
            changes: self.changes.clone(),
            complete: self.complete,
        })
    }

    /// Bring one view's resources in line with its state in the index.
    fn apply_view(&mut self, name: &str, state: Option<&Arc<ViewState>>) {
        let Some(state) = state else {
            if self.views.remove(name).is_some() {
                self.remove_view(name);
            }
            return;
        };
        let shape = Shape::of(state);
        let rebuild = match self.views.get(name) {
            Some(built) if Arc::ptr_eq(&built.state, state) => return,
            Some(built) => built.shape != shape,
            None => true,
        };
        let built = Built {
            shape,
            state: state.clone(),
        };
        self.views.insert(name.to_string(), built);
        if rebuild {
            self.build_view(name);
        }
    }

    fn set(&mut self, type_url: &'static str, resource: Arc<Resource>) {
        let resources = self.by_type.entry(type_url).or_default();
        if resources
            .get(&resource.name)
            .is_some_and(|r| r.version == resource.version && r.refs == resource.refs)
        {
            return;
        }
        self.changed
            .entry(type_url)
            .or_default()
            .insert(resource.name.clone());
        resources.insert(resource.name.clone(), resource);
    }

    fn unset(&mut self, type_url: &'static str, name: &str) {
        let resources = self.by_type.entry(type_url).or_default();
        if let Some((name, _)) = resources.remove_with_key(name) {
            self.changed.entry(type_url).or_default().insert(name);
        }
    }

    fn build_view(&mut self, name: &str) {
        let Some(built) = self.views.get(name) else {
            return;
        };
        let view = built.state.clone();
        let has_cluster = built.shape.has_cluster();
        let assignment = load_assignment(&cluster_name(name), &built.shape.serving);
        let cluster = cluster_name(name);
        if has_cluster {
            self.set(
                CLUSTER_TYPE,
                Resource::new(
                    CLUSTER_TYPE,
                    &cluster,
                    &view_cluster(&cluster),
                    Refs::default(),
                ),
            );
            let has_endpoints = assignment
                .endpoints
                .iter()
                .any(|l| !l.lb_endpoints.is_empty());
            self.set(
                ENDPOINT_TYPE,
                Resource::new(
                    ENDPOINT_TYPE,
                    &cluster,
                    &assignment,
                    Refs {
                        has_endpoints,
                        ..Refs::default()
                    },
                ),
            );
        } else {
            self.unset(CLUSTER_TYPE, &cluster);
            self.unset(ENDPOINT_TYPE, &cluster);
        }
        if name == self.gateway_label {
            self.rebuild_gateway_routes();
        } else {
            self.set(SCOPED_ROUTE_TYPE, scope(&cluster, name));
            self.set(ROUTE_TYPE, view_routes(&self.config, &cluster, &[&view]));
        }
    }

    fn remove_view(&mut self, name: &str) {
        let cluster = cluster_name(name);
        self.unset(CLUSTER_TYPE, &cluster);
        self.unset(ENDPOINT_TYPE, &cluster);
        if name == self.gateway_label {
            self.rebuild_gateway_routes();
        } else {
            self.unset(SCOPED_ROUTE_TYPE, &cluster);
            self.unset(ROUTE_TYPE, &cluster);
        }
    }

    /// The gateway's route configuration: the API, and the view named like
    /// the gateway's first label, if there is one.
    fn rebuild_gateway_routes(&mut self) {
        let view = self.views.get(&self.gateway_label).map(|b| b.state.clone());
        let views: Vec<&ViewState> = view.iter().map(|v| v.as_ref()).collect();
        let routes = view_routes(&self.config, GATEWAY, &views);
        self.set(ROUTE_TYPE, routes);
    }
}

/// The scope key of a host: its first label (what the listener's key builder
/// takes from the Host header).
fn scope_key_of(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

pub(super) fn any<M: Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: type_url.into(),
        value: message.encode_to_vec(),
    }
}

fn typed<M: Message>(type_url: &str, message: &M) -> Option<listener::filter::ConfigType> {
    Some(listener::filter::ConfigType::TypedConfig(any(
        type_url, message,
    )))
}

pub(super) fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource::default(),
        )),
        ..Default::default()
    }
}

fn socket_address(ip: IpAddr, port: u16) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                port,
            ))),
            ..Default::default()
        })),
    }
}

pub(super) fn seconds(s: i64) -> Option<Duration> {
    Some(Duration {
        seconds: s,
        nanos: 0,
    })
}

pub(super) fn inline(body: &str) -> Option<core::DataSource> {
    Some(core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(body.into())),
        ..Default::default()
    })
}

/// A local reply's body as it is, served as JSON.
pub(super) fn json_body() -> Option<core::SubstitutionFormatString> {
    Some(core::SubstitutionFormatString {
        format: Some(core::substitution_format_string::Format::TextFormatSource(
            core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString(
                    "%LOCAL_REPLY_BODY%".into(),
                )),
                ..Default::default()
            },
        )),
        content_type: "application/json".into(),
        ..Default::default()
    })
}

/// What a cold view's request gets when ext_authz itself fails (the sidecar
/// cannot be reached, or went away while holding the request): Envoy's bare
/// `status_on_error` (504, which the sidecar never answers with) becomes a
/// 503 with `Retry-After` and a machine-readable reason, as the sidecar's
/// own refusals have. Another replica, or this one restarted, will start
/// the view.
fn sidecar_unavailable() -> hcm::ResponseMapper {
    let retry_after = crate::activator::RETRY_AFTER_SECONDS;
    let filter = |specifier| accesslog::AccessLogFilter {
        filter_specifier: Some(specifier),
    };
    hcm::ResponseMapper {
        filter: Some(filter(
            accesslog::access_log_filter::FilterSpecifier::AndFilter(accesslog::AndFilter {
                filters: vec![
                    filter(
                        accesslog::access_log_filter::FilterSpecifier::ResponseFlagFilter(
                            accesslog::ResponseFlagFilter {
                                flags: vec!["UAEX".into()],
                            },
                        ),
                    ),
                    filter(
                        accesslog::access_log_filter::FilterSpecifier::StatusCodeFilter(
                            accesslog::StatusCodeFilter {
                                comparison: Some(accesslog::ComparisonFilter {
                                    op: accesslog::comparison_filter::Op::Eq as i32,
                                    value: Some(core::RuntimeUInt32 {
                                        default_value: 504,
                                        runtime_key: "views_gateway.local_reply.ext_authz_error"
                                            .into(),
                                    }),
                                }),
                            },
                        ),
                    ),
                ],
            }),
        )),
        status_code: Some(UInt32Value { value: 503 }),
        body: inline(&format!(
            r#"{{"error":"gateway_unavailable","message":"the gateway cannot start views right now (its control plane does not answer); try again shortly","details":{{"retryAfterSeconds":{retry_after}}}}}"#
        )),
        body_format_override: json_body(),
        headers_to_add: vec![core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: "retry-after".into(),
                value: retry_after.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}

/// The gateway's listener, and with TLS the plain-HTTP one beside it.
fn gateway_listeners(config: &Config) -> Vec<Arc<Resource>> {
    use hcm::scoped_routes::scope_key_builder::{FragmentBuilder, fragment_builder};
    let budget = config.workload.cold_start_budget_seconds;
    let check_timeout = budget + EXT_AUTHZ_MARGIN_SECONDS;
    let authorization = ext_authz::ExtAuthz {
        services: Some(ext_authz::ext_authz::Services::GrpcService(
            core::GrpcService {
                target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                    core::grpc_service::EnvoyGrpc {
                        cluster_name: config.sidecar_grpc_cluster.clone(),
                        ..Default::default()
                    },
                )),
                timeout: seconds(check_timeout as i64),
                ..Default::default()
            },
        )),
        transport_api_version: core::ApiVersion::V3 as i32,
        // The sidecar unreachable (restarting, killed mid-check): the view
        // cannot start now. A status the sidecar's own answers never use,
        // so that `sidecar_unavailable` can say why.
        status_on_error: Some(envoy_types::pb::envoy::r#type::v3::HttpStatus {
            code: envoy_types::pb::envoy::r#type::v3::StatusCode::GatewayTimeout as i32,
        }),
        ..Default::default()
    };
    // The scope is the Host's first label: `<name>` of `<name>.<hostname>`.
    let first_label = FragmentBuilder {
        r#type: Some(fragment_builder::Type::HeaderValueExtractor(
            fragment_builder::HeaderValueExtractor {
                name: ":authority".into(),
                element_separator: ".".into(),
                extract_type: Some(fragment_builder::header_value_extractor::ExtractType::Index(0)),
            },
        )),
    };
    let manager = hcm::HttpConnectionManager {
        stat_prefix: GATEWAY.into(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(
            hcm::ScopedRoutes {
                name: GATEWAY.into(),
                scope_key_builder: Some(hcm::scoped_routes::ScopeKeyBuilder {
                    fragments: vec![first_label],
                }),
                rds_config_source: Some(ads()),
                config_specifier: Some(hcm::scoped_routes::ConfigSpecifier::ScopedRds(
                    hcm::ScopedRds {
                        scoped_rds_config_source: Some(ads()),
                        ..Default::default()
                    },
                )),
            },
        )),
        // Ports stay in the Host: sign-in must send a browser back to the
        // host and port it came from. Routing ignores them (the scope key is
        // the first label; virtual hosts ignore ports).
        strip_trailing_host_dot: true,
        // The edge: the client's address is the connection's, plus at most
        // TRUSTED_PROXY_HOPS addresses a load balancer in front appended to
        // X-Forwarded-For; what a client writes there itself is not believed.
        use_remote_address: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        xff_num_trusted_hops: config.trusted_proxy_hops,
        // One spelling per path (RFC 3986 normalisation, `//` merged), so
        // routing and the view see the same path. `%2F` is kept as sent:
        // access is decided per host, never per path, and the API answers
        // a name with an escaped slash with its own 400.
        normalize_path: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        merge_slashes: true,
        // Bounded headers: size, count, time to send them.
        max_request_headers_kb: Some(UInt32Value { value: 60 }),
        request_headers_timeout: seconds(10),
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            max_headers_count: Some(UInt32Value { value: 100 }),
            // `x_views_identity` must not slip past the filter that drops
            // `x-views-identity` and reach a view that folds `_` into `-`.
            headers_with_underscores_action:
                core::http_protocol_options::HeadersWithUnderscoresAction::RejectRequest as i32,
            ..Default::default()
        }),
        // Envoy's edge recommendations for HTTP/2 clients.
        http2_protocol_options: Some(core::Http2ProtocolOptions {
            max_concurrent_streams: Some(UInt32Value { value: 100 }),
            initial_stream_window_size: Some(UInt32Value { value: 65_536 }),
            initial_connection_window_size: Some(UInt32Value { value: 1_048_576 }),
            ..Default::default()
        }),
        // No scope for the host, or no virtual host in its scope: Envoy's
        // "no route" (NR), answered like an unknown view.
        local_reply_config: Some(hcm::LocalReplyConfig {
            mappers: std::iter::once(sidecar_unavailable())
                .chain(access::local_replies(config))
                .chain([hcm::ResponseMapper {
                    filter: Some(accesslog::AccessLogFilter {
                        filter_specifier: Some(
                            accesslog::access_log_filter::FilterSpecifier::ResponseFlagFilter(
                                accesslog::ResponseFlagFilter {
                                    flags: vec!["NR".into()],
                                },
                            ),
                        ),
                    }),
                    status_code: Some(UInt32Value { value: 404 }),
                    body: inline(NO_SUCH_VIEW),
                    ..Default::default()
                }])
                .collect(),
            ..Default::default()
        }),
        // A held request sends nothing while its view starts.
        stream_idle_timeout: seconds((check_timeout + 25).max(300) as i64),
        access_log: match config.access_log {
            AccessLog::Json => vec![access_log()],
            AccessLog::Off => Vec::new(),
        },
        early_header_mutation_extensions: vec![access::strip_internal_headers()],
        http_filters: access::strict_transport_security(config)
            .into_iter()
            .chain([access::lowercase_hosts()])
            .chain(access::http_filters(config))
            .chain([
                hcm::HttpFilter {
                    name: EXT_AUTHZ_FILTER.into(),
                    config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                        "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                        &authorization,
                    ))),
                    // Only routes of cold views turn it on: warm traffic never
                    // reaches the sidecar.
                    disabled: true,
                    ..Default::default()
                },
                hcm::HttpFilter {
                    name: "envoy.filters.http.router".into(),
                    config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                        &Router::default(),
                    ))),
                    ..Default::default()
                },
            ])
            .collect(),
        ..Default::default()
    };
    let http_filter = |manager: &hcm::HttpConnectionManager| listener::Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: typed(
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            manager,
        ),
    };
    let gateway = listener::Listener {
        name: GATEWAY.into(),
        address: Some(socket_address(
            config.envoy_listen.ip(),
            config.envoy_listen.port(),
        )),
        filter_chains: vec![listener::FilterChain {
            filters: vec![http_filter(&manager)],
            transport_socket: config.tls_secret.as_ref().map(|_| access::terminate_tls()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut listeners = vec![Resource::new(
        LISTENER_TYPE,
        GATEWAY,
        &gateway,
        Refs::default(),
    )];
    if let (Some(_), Some(address)) = (&config.tls_secret, config.envoy_http_listen) {
        // Plain HTTP: the same gateway on localhost (development), else
        // a redirect to HTTPS.
        let plain = if config.gateway_hostname == "localhost" {
            manager
        } else {
            access::redirect_to_https(config.gateway_public_port)
        };
        let listener = listener::Listener {
            name: PLAIN_HTTP.into(),
            address: Some(socket_address(address.ip(), address.port())),
            filter_chains: vec![listener::FilterChain {
                filters: vec![http_filter(&plain)],
                ..Default::default()
            }],
            ..Default::default()
        };
        listeners.push(Resource::new(
            LISTENER_TYPE,
            PLAIN_HTTP,
            &listener,
            Refs::default(),
        ));
    }
    listeners
}

/// The listener for plain HTTP when the gateway serves TLS.
const PLAIN_HTTP: &str = "gateway-http";

/// One JSON line per request on Envoy's stdout: who asked for which view,
/// what came back, how long it took and where it went.
///
/// Its cost is the formatting, 560–1,570 instructions per field and request
/// (Envoy 1.37, callgrind): these 13 fields add about 14,000 to the ~253,000
/// a static Envoy with the same sign-in spends proxying a small response
/// (~186,000 without sign-in), the largest part of what the warm path costs
/// over a static Envoy (see `scripts/bench/analysis.md`). Buffering does not change it: Envoy
/// already hands the lines to a flush thread in 64 KiB writes.
///
/// Not logged: a readiness probe that passed ([`not_a_passed_readiness_probe`]).
fn access_log() -> envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
    use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
    use envoy_types::pb::google::protobuf::{Value, value::Kind};
    let fields = [
        ("time", "%START_TIME%"),
        ("authority", "%REQ(:AUTHORITY)%"),
        ("method", "%REQ(:METHOD)%"),
        // The path as received: no route rewrites paths, so not
        // `X-ENVOY-ORIGINAL-PATH?:PATH`, a header clients can send too.
        ("path", "%REQ(:PATH)%"),
        ("status", "%RESPONSE_CODE%"),
        ("flags", "%RESPONSE_FLAGS%"),
        ("details", "%RESPONSE_CODE_DETAILS%"),
        ("duration_ms", "%DURATION%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("upstream", "%UPSTREAM_HOST%"),
        ("cluster", "%UPSTREAM_CLUSTER%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ];
    let mut entries: Vec<sorted::StructEntry> = fields
        .iter()
        .map(|(name, operator)| sorted::StructEntry {
            key: name.to_string(),
            value: Some(Value {
                kind: Some(Kind::StringValue(operator.to_string())),
            }),
        })
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let stdout = sorted::StdoutAccessLog {
        log_format: Some(sorted::SubstitutionFormatString {
            json_format: Some(sorted::Struct { fields: entries }),
        }),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.stdout".into(),
        filter: Some(not_a_passed_readiness_probe()),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            &stdout,
        ))),
    }
}

/// Every request but a `GET` of [`access::READINESS_PATH`] answered 200: the
/// kubelet's probe of each replica (every 5 s, through this listener) would
/// otherwise be most of an idle gateway's log. The path is public on every
/// host and answers nothing but readiness, so a client that asks it too
/// hides nothing by going unlogged; a failed probe (503, or no answer) is
/// logged.
fn not_a_passed_readiness_probe() -> accesslog::AccessLogFilter {
    use accesslog::access_log_filter::FilterSpecifier;
    use accesslog::comparison_filter::Op;
    let filter = |specifier| accesslog::AccessLogFilter {
        filter_specifier: Some(specifier),
    };
    let header = |name: &str, value: &str| {
        filter(FilterSpecifier::HeaderFilter(accesslog::HeaderFilter {
            header: Some(route::HeaderMatcher {
                name: name.into(),
                header_match_specifier: Some(
                    route::header_matcher::HeaderMatchSpecifier::StringMatch(
                        envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                            match_pattern: Some(
                                envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                                    value.into(),
                                ),
                            ),
                            ..Default::default()
                        },
                    ),
                ),
                invert_match: true,
                treat_missing_header_as_empty: true,
            }),
        }))
    };
    let status = |op: Op, value: u32, key: &str| {
        filter(FilterSpecifier::StatusCodeFilter(
            accesslog::StatusCodeFilter {
                comparison: Some(accesslog::ComparisonFilter {
                    op: op as i32,
                    value: Some(core::RuntimeUInt32 {
                        default_value: value,
                        runtime_key: format!("views_gateway.access_log.readiness_status_{key}"),
                    }),
                }),
            },
        ))
    };
    filter(FilterSpecifier::OrFilter(accesslog::OrFilter {
        filters: vec![
            header(":path", access::READINESS_PATH),
            header(":method", "GET"),
            status(Op::Ge, 201, "above"),
            status(Op::Le, 199, "below"),
        ],
    }))
}

/// Wire-compatible stand-ins for messages holding a protobuf map, encoding
/// its entries in a fixed order. (prost encodes a map in its `HashMap`'s
/// order, which differs between instances: equal configuration would get
/// different bytes, hence a different version, and be sent again, after
/// every restart.)
mod sorted {
    use envoy_types::pb::google::protobuf::Value;

    /// `envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` (log_format only).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StdoutAccessLog {
        #[prost(message, optional, tag = "1")]
        pub log_format: Option<SubstitutionFormatString>,
    }

    /// `envoy.config.core.v3.SubstitutionFormatString` (json_format only).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubstitutionFormatString {
        #[prost(message, optional, tag = "2")]
        pub json_format: Option<Struct>,
    }

    /// `google.protobuf.Struct`: its map as repeated entries, in order.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Struct {
        #[prost(message, repeated, tag = "1")]
        pub fields: Vec<StructEntry>,
    }

    /// One entry of a `map<string, Value>`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StructEntry {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Value>,
    }
}

/// The scope `name` for hosts whose first label is `key`, loading the route
/// configuration of the same name.
fn scope(name: &str, key: &str) -> Arc<Resource> {
    scope_of(name, name, key)
}

/// The scope `name` for hosts whose first label is `key`, loading `routes`.
fn scope_of(name: &str, routes: &str, key: &str) -> Arc<Resource> {
    use route::scoped_route_configuration::{Key, key::Fragment, key::fragment};
    let scope = route::ScopedRouteConfiguration {
        name: name.into(),
        route_configuration_name: routes.into(),
        key: Some(Key {
            fragments: vec![Fragment {
                r#type: Some(fragment::Type::StringKey(key.into())),
            }],
        }),
        ..Default::default()
    };
    Resource::new(
        SCOPED_ROUTE_TYPE,
        name,
        &scope,
        Refs {
            route: Some(routes.into()),
            ..Refs::default()
        },
    )
}

fn prefix_route(prefix: &str, action: route::route::Action) -> route::Route {
    route::Route {
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}

fn to_cluster(cluster: String, timeout: i64) -> route::route::Action {
    route::route::Action::Route(route::RouteAction {
        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(cluster)),
        timeout: seconds(timeout),
        ..Default::default()
    })
}

/// The route configuration `name`: the API's virtual host for the gateway's
/// own, and one virtual host per view in `views`.
fn view_routes(config: &Config, name: &str, views: &[&ViewState]) -> Arc<Resource> {
    let mut virtual_hosts = Vec::new();
    let mut direct_clusters: Vec<Arc<str>> = Vec::new();
    if name == GATEWAY {
        virtual_hosts.push(route::VirtualHost {
            name: "api".into(),
            domains: vec![config.gateway_hostname.clone()],
            routes: vec![
                prefix_route("/_api/", to_cluster(config.sidecar_api_cluster.clone(), 30)),
                // The hub's page and its files; anything else there is the
                // sidecar's JSON 404.
                prefix_route("/", to_cluster(config.sidecar_api_cluster.clone(), 30)),
            ],
            ..Default::default()
        });
    }
    for view in views {
        let view_name = view.spec.name.as_str();
        // Analysts' queries can run long: no route timeout, idle streams are
        // still bounded by the connection manager.
        let mut to_view = prefix_route("/", to_cluster(cluster_name(view_name), 0));
        if view.serving_endpoints().next().is_some() {
            direct_clusters.push(cluster_name(view_name).into());
        } else {
            to_view.typed_per_filter_config = activate_through_sidecar();
        }
        virtual_hosts.push(route::VirtualHost {
            name: cluster_name(view_name),
            domains: vec![config.view_hostname(view_name)],
            typed_per_filter_config: access::view_access(config, &view.spec),
            // A view never receives the caller's session cookies (or any
            // cookie): its pages could not replay what they never see.
            request_headers_to_remove: vec!["cookie".into()],
            routes: vec![
                prefix_route(
                    GATEWAY_PREFIX,
                    to_cluster(config.sidecar_api_cluster.clone(), 0),
                ),
                to_view,
            ],
            ..Default::default()
        });
    }
    let refs = Refs {
        virtual_hosts: virtual_hosts.iter().map(|v| v.name.clone()).collect(),
        direct_clusters,
        ..Refs::default()
    };
    let routes = route::RouteConfiguration {
        name: name.into(),
        ignore_port_in_host_matching: true,
        typed_per_filter_config: access::routed(),
        virtual_hosts,
        ..Default::default()
    };
    Resource::new(ROUTE_TYPE, name, &routes, refs)
}

/// The prefix of the gateway's own paths on every view host (the progress
/// page's status stream).
const GATEWAY_PREFIX: &str = "/_gateway/";

/// Turn ext_authz on for a route (it is off by default in the listener).
fn activate_through_sidecar() -> std::collections::HashMap<String, Any> {
    let per_route = ext_authz::ExtAuthzPerRoute {
        r#override: Some(ext_authz::ext_authz_per_route::Override::CheckSettings(
            ext_authz::CheckSettings::default(),
        )),
    };
    let enabled = route::FilterConfig {
        config: Some(any(
            "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            &per_route,
        )),
        disabled: false,
        ..Default::default()
    };
    std::collections::HashMap::from([(
        EXT_AUTHZ_FILTER.to_string(),
        any(
            "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            &enabled,
        ),
    )])
}

fn view_cluster(name: &str) -> cluster::Cluster {
    cluster::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            ..Default::default()
        }),
        connect_timeout: seconds(2),
        ..Default::default()
    }
}

fn load_assignment(name: &str, serving: &[(IpAddr, u16)]) -> endpoint::ClusterLoadAssignment {
    endpoint::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![endpoint::LocalityLbEndpoints {
            lb_endpoints: serving
                .iter()
                .map(|&(ip, port)| endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(socket_address(ip, port)),
                            ..Default::default()
                        },
                    )),
                    health_status: core::HealthStatus::Healthy as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use googletest::prelude::*;

    use super::*;
    use crate::index::Endpoint;

    fn config() -> Config {
        Config::parse_from(["gateway-sidecar"])
    }

    /// The HTTP connection manager of a listener resource's first chain.
    fn manager_of(resource: &Resource) -> (listener::Listener, hcm::HttpConnectionManager) {
        let listener = listener::Listener::decode(resource.body.value.as_slice()).unwrap();
        let Some(listener::filter::ConfigType::TypedConfig(any)) =
            &listener.filter_chains[0].filters[0].config_type
        else {
            panic!("a typed HTTP connection manager");
        };
        let manager = hcm::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        (listener, manager)
    }

    /// The gateway with TLS at `hostname`, plain HTTP on 8080.
    fn tls(hostname: &str) -> Config {
        Config::parse_from([
            "gateway-sidecar",
            "--gateway-hostname",
            hostname,
            "--tls-secret",
            "views-gateway-tls",
            "--envoy-http-listen",
            "0.0.0.0:8080",
            "--envoy-listen",
            "0.0.0.0:8443",
        ])
    }

    #[gtest]
    fn with_tls_plain_http_is_redirected_except_on_localhost() {
        let listeners = gateway_listeners(&tls("views.example.com"));
        expect_that!(listeners.len(), eq(2));
        let (secure, _) = manager_of(&listeners[0]);
        expect_that!(secure.filter_chains[0].transport_socket, some(anything()));
        let (plain, manager) = manager_of(&listeners[1]);
        expect_that!(plain.filter_chains[0].transport_socket, none());
        let Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(routes)) =
            manager.route_specifier
        else {
            panic!("an inline redirect");
        };
        let redirect_port =
            |routes: &route::RouteConfiguration| match &routes.virtual_hosts[0].routes[0].action {
                Some(route::route::Action::Redirect(redirect)) => Some(redirect.port_redirect),
                _ => None,
            };
        // To the scheme's default port, unless people use another.
        expect_that!(redirect_port(&routes), some(eq(0)));
        let mut on_own_port = tls("views.localhost");
        on_own_port.gateway_public_port = Some(8443);
        let (_, manager) = manager_of(&gateway_listeners(&on_own_port)[1]);
        let Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(routes)) =
            manager.route_specifier
        else {
            panic!("an inline redirect");
        };
        expect_that!(redirect_port(&routes), some(eq(8443)));
        // On localhost the plain listener is the gateway itself.
        let local = gateway_listeners(&tls("localhost"));
        let (_, manager) = manager_of(&local[1]);
        expect_that!(
            manager.route_specifier,
            some(matches_pattern!(
                hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(anything())
            ))
        );
        // Without TLS: one plain listener.
        expect_that!(gateway_listeners(&config()).len(), eq(1));
    }

    #[gtest]
    fn browsers_are_told_https_only_wherever_plain_http_only_redirects() {
        let first_filter = |config: &Config| {
            let (_, manager) = manager_of(&gateway_listeners(config)[0]);
            manager.http_filters[0].name.clone()
        };
        let hsts = "envoy.filters.http.header_mutation";
        expect_that!(first_filter(&tls("views.example.com")), eq(hsts));
        expect_that!(first_filter(&tls("views.localhost")), eq(hsts));
        // localhost serves plain HTTP (development); without TLS nothing to say.
        expect_that!(first_filter(&tls("localhost")), not(eq(hsts)));
        expect_that!(first_filter(&config()), not(eq(hsts)));
    }

    fn view(name: &str, serving: &[[u8; 4]]) -> Arc<ViewState> {
        Arc::new(ViewState {
            spec: serde_json::from_value(serde_json::json!({
                "name": name, "subsets": [{"bucket": "lake", "prefixes": ["p/"]}],
            }))
            .expect("spec"),
            uid: format!("uid-{name}"),
            created_at: None,
            annotations: BTreeMap::new(),
            endpoints: serving
                .iter()
                .map(|ip| Endpoint {
                    ip: IpAddr::from(*ip),
                    port: 8080,
                    serving: true,
                    terminating: false,
                })
                .collect(),
            activations: BTreeMap::new(),
        })
    }

    fn names(snapshot: &XdsSnapshot, type_url: &str) -> Vec<String> {
        snapshot
            .resources(type_url)
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    #[gtest]
    fn one_scope_and_route_configuration_per_view_and_clusters_for_active_views_only() {
        let built = build(
            &Snapshot::of(&[view("cold", &[]), view("warm", &[[10, 233, 0, 5]])]),
            &config(),
        );
        expect_that!(
            names(&built, SCOPED_ROUTE_TYPE),
            elements_are![eq("gateway"), eq("view-cold"), eq("view-warm")]
        );
        expect_that!(
            names(&built, ROUTE_TYPE),
            elements_are![eq("gateway"), eq("view-cold"), eq("view-warm")]
        );
        expect_that!(names(&built, CLUSTER_TYPE), elements_are![eq("view-warm")]);
        expect_that!(names(&built, ENDPOINT_TYPE), elements_are![eq("view-warm")]);
        let warm = built.get(ROUTE_TYPE, "view-warm").expect("warm routes");
        expect_that!(warm.refs.direct_clusters.len(), eq(1));
        expect_that!(warm.refs.virtual_hosts, elements_are![eq("view-warm")]);
        let cold = built.get(ROUTE_TYPE, "view-cold").expect("cold routes");
        expect_that!(cold.refs.direct_clusters, is_empty());
    }

    #[gtest]
    fn an_unchanged_view_is_not_rebuilt_and_a_change_lists_only_its_names() {
        let config = Arc::new(config());
        let mut builder = Builder::new(config);
        let (a, b) = (view("aaa", &[]), view("bbb", &[]));
        let first = builder
            .update(&Snapshot::of(&[a.clone(), b.clone()]))
            .expect("first");
        expect_that!(first.complete, eq(true));
        // The same Arcs again: nothing to publish.
        expect_that!(
            builder
                .update(&Snapshot::of(&[a.clone(), b.clone()]))
                .is_none(),
            eq(true)
        );
        // An equal state in a new Arc: still nothing.
        let b_again = Arc::new((*b).clone());
        expect_that!(
            builder
                .update(&Snapshot::of(&[a.clone(), b_again.clone()]))
                .is_none(),
            eq(true)
        );
        // b gets an endpoint: its resources only.
        let next = builder
            .update(&Snapshot::of(&[a.clone(), view("bbb", &[[10, 233, 0, 9]])]))
            .expect("a change");
        let changed: BTreeMap<&str, Vec<String>> = next
            .changed_since(first.generation)
            .expect("recent")
            .iter()
            .map(|(t, n)| (*t, n.iter().map(|n| n.to_string()).collect()))
            .collect();
        expect_that!(
            changed,
            eq(&BTreeMap::from([
                (CLUSTER_TYPE, vec!["view-bbb".to_string()]),
                (ENDPOINT_TYPE, vec!["view-bbb".to_string()]),
                (ROUTE_TYPE, vec!["view-bbb".to_string()]),
            ]))
        );
        // a goes away.
        let gone = builder
            .update(&Snapshot::of(&[view("bbb", &[[10, 233, 0, 9]])]))
            .expect("a removal");
        expect_that!(
            names(&gone, SCOPED_ROUTE_TYPE),
            elements_are![eq("gateway"), eq("view-bbb")]
        );
        expect_that!(
            gone.changed_since(next.generation)
                .expect("recent")
                .get(SCOPED_ROUTE_TYPE)
                .map(|n| n.len()),
            some(eq(1))
        );
    }

    #[gtest]
    fn changes_since_an_older_snapshot_are_the_union_of_the_recent_ones() {
        let mut builder = Builder::new(Arc::new(config()));
        let first = builder.update(&Snapshot::of(&[])).expect("first");
        let mut last = first.clone();
        for i in 0..3 {
            last = builder
                .update(&Snapshot::of(&[view(&format!("v{i:02}"), &[])]))
                .expect("a change");
        }
        let changes = last.changed_since(first.generation).expect("recent");
        let scopes: Vec<&str> = changes[SCOPED_ROUTE_TYPE].iter().map(|n| &**n).collect();
        // v00 and v01 came and went; v02 is there.
        expect_that!(
            scopes,
            elements_are![eq(&"view-v00"), eq(&"view-v01"), eq(&"view-v02")]
        );
        expect_that!(
            last.changed_since(last.generation),
            some(eq(&Changes::new()))
        );
        for i in 0..crate::changelog::KEEP {
            last = builder
                .update(&Snapshot::of(&[view(&format!("w{i:03}"), &[])]))
                .expect("a change");
        }
        expect_that!(last.changed_since(first.generation), none());
        expect_that!(
            last.changed_since(last.generation - 1).map(|c| c.len()),
            some(eq(2))
        );
    }

    #[gtest]
    fn with_the_index_change_log_only_the_views_it_names_are_looked_at() {
        let mut builder = Builder::new(Arc::new(config()));
        let mut first = Snapshot::of(&[view("aaa", &[]), view("bbb", &[])]);
        first.generation = 1;
        first
            .changes
            .record(1, BTreeSet::from(["aaa".to_string(), "bbb".to_string()]));
        builder.update(&first).expect("the first snapshot");
        // Both views have an endpoint now, but the log names only aaa.
        let mut second = Snapshot::of(&[
            view("aaa", &[[10, 233, 0, 1]]),
            view("bbb", &[[10, 233, 0, 2]]),
        ]);
        second.generation = 2;
        second.changes = first.changes.clone();
        second
            .changes
            .record(2, BTreeSet::from(["aaa".to_string()]));
        let built = builder.update(&second).expect("aaa changed");
        expect_that!(names(&built, CLUSTER_TYPE), elements_are![eq("view-aaa")]);
        // A snapshot the log cannot relate to the last one: every view is compared.
        let mut far = second.clone();
        far.generation = 100;
        far.changes = ChangeLog::default();
        far.changes.record(100, BTreeSet::new());
        let built = builder.update(&far).expect("bbb changed");
        expect_that!(
            names(&built, CLUSTER_TYPE),
            elements_are![eq("view-aaa"), eq("view-bbb")]
        );
    }

    #[gtest]
    fn a_starting_view_has_its_cluster_before_its_pod_is_ready() {
        let mut starting = (*view("aaa", &[])).clone();
        starting.activations.insert(
            1,
            crate::workload::Activation {
                number: 1,
                job: "view-aaa-1".into(),
                uid: "job-uid".into(),
                created_at: None,
                deadline: None,
                max_deadline: None,
                requests: Default::default(),
                phase: crate::workload::Phase::Starting,
            },
        );
        let mut builder = Builder::new(Arc::new(config()));
        let started = builder
            .update(&Snapshot::of(&[Arc::new(starting.clone())]))
            .expect("a snapshot");
        expect_that!(names(&started, CLUSTER_TYPE), elements_are![eq("view-aaa")]);
        let assignment = started
            .get(ENDPOINT_TYPE, "view-aaa")
            .expect("an assignment");
        expect_that!(assignment.refs.has_endpoints, eq(false));
        // Still cold: its route asks the sidecar first.
        let routes = started.get(ROUTE_TYPE, "view-aaa").expect("routes");
        expect_that!(routes.refs.direct_clusters, is_empty());

        // Ready: only the endpoints change (and the route goes direct).
        starting.endpoints = view("aaa", &[[10, 233, 0, 5]]).endpoints.clone();
        let ready = builder
            .update(&Snapshot::of(&[Arc::new(starting.clone())]))
            .expect("a change");
        let changed = ready.changed_since(started.generation).expect("recent");
        expect_that!(changed.get(CLUSTER_TYPE), none());
        expect_that!(changed.get(ENDPOINT_TYPE).map(|n| n.len()), some(eq(1)));

        // The start failed: no endpoint, no live activation, no cluster.
        starting.endpoints.clear();
        starting.activations.get_mut(&1).expect("activation").phase =
            crate::workload::Phase::Ended {
                reason: "DeadlineExceeded".into(),
            };
        let ended = builder
            .update(&Snapshot::of(&[Arc::new(starting)]))
            .expect("a change");
        expect_that!(names(&ended, CLUSTER_TYPE), is_empty());
    }

    #[gtest]
    fn a_view_named_like_the_gateway_label_shares_the_gateway_scope() {
        let config =
            Config::parse_from(["gateway-sidecar", "--gateway-hostname", "views.example.com"]);
        let built = build(
            &Snapshot::of(&[view("views", &[]), view("other", &[])]),
            &config,
        );
        expect_that!(
            names(&built, SCOPED_ROUTE_TYPE),
            elements_are![eq("gateway"), eq("view-other")]
        );
        let gateway = built.get(ROUTE_TYPE, GATEWAY).expect("gateway routes");
        expect_that!(
            gateway.refs.virtual_hosts,
            elements_are![eq("api"), eq("view-views")]
        );
    }

    #[gtest]
    fn the_access_log_format_reads_as_envoy_s_message() {
        use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
            StdoutAccessLog, stdout_access_log::AccessLogFormat,
        };
        let log = access_log();
        let Some(
            envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(
                typed,
            ),
        ) = log.config_type
        else {
            panic!("a typed config");
        };
        let decoded = StdoutAccessLog::decode(typed.value.as_slice()).expect("a StdoutAccessLog");
        let Some(AccessLogFormat::LogFormat(format)) = decoded.access_log_format else {
            panic!("a log format");
        };
        let Some(core::substitution_format_string::Format::JsonFormat(json)) = format.format else {
            panic!("a JSON format");
        };
        expect_that!(json.fields.len(), eq(13));
        expect_that!(
            json.fields.get("cluster").and_then(|v| v.kind.clone()),
            some(eq(
                &envoy_types::pb::google::protobuf::value::Kind::StringValue(
                    "%UPSTREAM_CLUSTER%".into()
                )
            ))
        );
    }

    #[gtest]
    fn an_ext_authz_error_answers_503_with_a_reason_before_any_other_mapping() {
        let built = build(&Snapshot::of(&[]), &config());
        let (_, manager) = manager_of(built.get(LISTENER_TYPE, GATEWAY).expect("the listener"));
        let ext_authz = manager
            .http_filters
            .iter()
            .find(|f| f.name == EXT_AUTHZ_FILTER)
            .and_then(|f| match &f.config_type {
                Some(hcm::http_filter::ConfigType::TypedConfig(any)) => {
                    ext_authz::ExtAuthz::decode(any.value.as_slice()).ok()
                }
                _ => None,
            })
            .expect("ext_authz");
        expect_that!(ext_authz.status_on_error.map(|s| s.code), some(eq(504)));
        let first = &manager.local_reply_config.expect("local replies").mappers[0];
        expect_that!(first, eq(&sidecar_unavailable()));
        expect_that!(first.status_code.map(|s| s.value), some(eq(503)));
        expect_that!(
            first.headers_to_add[0]
                .header
                .as_ref()
                .map(|h| h.key.as_str()),
            some(eq("retry-after"))
        );
        let body = match first.body.as_ref().and_then(|b| b.specifier.as_ref()) {
            Some(core::data_source::Specifier::InlineString(body)) => body.clone(),
            _ => String::new(),
        };
        let body: views_types::ApiError = serde_json::from_str(&body).expect("an ApiError");
        expect_that!(
            body.error,
            eq(views_types::ApiErrorCode::GatewayUnavailable)
        );
    }

    #[gtest]
    fn access_log_off_leaves_the_connection_manager_without_one() {
        let access_logs = |config: &Config| {
            let built = build(&Snapshot::of(&[]), config);
            let listener = built.get(LISTENER_TYPE, GATEWAY).expect("the listener");
            let listener =
                listener::Listener::decode(listener.body.value.as_slice()).expect("a listener");
            let filter = &listener.filter_chains[0].filters[0];
            let Some(listener::filter::ConfigType::TypedConfig(typed)) = &filter.config_type else {
                panic!("a typed connection manager");
            };
            hcm::HttpConnectionManager::decode(typed.value.as_slice())
                .expect("a connection manager")
                .access_log
                .len()
        };
        expect_that!(access_logs(&config()), eq(1));
        expect_that!(
            access_logs(&Config::parse_from([
                "gateway-sidecar",
                "--access-log",
                "off"
            ])),
            eq(0)
        );
    }

    #[gtest]
    fn versions_depend_on_content_only() {
        let one = build(
            &Snapshot::of(&[view("same", &[[10, 233, 0, 7]])]),
            &config(),
        );
        let two = build(
            &Snapshot::of(&[view("same", &[[10, 233, 0, 7]])]),
            &config(),
        );
        for type_url in PUSH_ORDER {
            let versions = |s: &XdsSnapshot| {
                s.resources(type_url)
                    .values()
                    .map(|r| r.version.to_string())
                    .collect::<Vec<_>>()
            };
            expect_that!(versions(&one), eq(&versions(&two)));
        }
        expect_that!(
            set_version([("a", "1"), ("b", "2")]),
            eq(&set_version([("b", "2"), ("a", "1")]))
        );
    }
}
