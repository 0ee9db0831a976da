//! Envoy's configuration as a pure function of the index snapshot.
//!
//! ```text
//! Listener "gateway" (ENVOY_LISTEN) ── HTTP connection manager ── RDS "gateway"
//!   http filters: ext_authz (disabled unless a route enables it) → router
//! RouteConfiguration "gateway"
//!   vhost "api":        <GATEWAY_HOSTNAME>    /_api/ → cluster sidecar-api (static), else 404
//!   vhost "view-<name>": <name>.<HOSTNAME>    /_gateway/ → sidecar-api (the progress page's status stream)
//!                                              / → cluster view-<name>, ext_authz off (serving endpoints)
//!                                              / → cluster view-<name>, ext_authz on  (none: the
//!                                                  sidecar activates the view and holds the request
//!                                                  until Envoy has the cluster with a ready endpoint)
//!   vhost "unknown":    *                     404 "no such view"
//! Cluster "view-<name>" (EDS over ADS) and its ClusterLoadAssignment — only
//! for views with serving endpoints, so Envoy holds clusters for active views only.
//! ```
//! Ports in the Host header are ignored (`strip_any_host_port`), so
//! `demo.localhost:8080` matches `demo.localhost` exactly; nothing else does.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as ext_authz;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Message;

use crate::config::Config;
use crate::index::{Snapshot, ViewState};

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The order in which a change is pushed: clusters before the endpoints that
/// warm them, listeners before the routes they load.
pub const PUSH_ORDER: [&str; 4] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];

const LISTENER_NAME: &str = "gateway";
const ROUTE_NAME: &str = "gateway";
const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// How much longer than the cold-start budget Envoy waits for the sidecar's
/// answer: the sidecar answers 503 itself at the budget.
const EXT_AUTHZ_MARGIN_SECONDS: u64 = 5;

/// One xDS type's resources, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources(pub BTreeMap<String, Any>);

impl Resources {
    /// A content version: equal resources give equal versions in any process.
    pub fn version(&self) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        for (name, any) in &self.0 {
            name.hash(&mut hasher);
            any.value.hash(&mut hasher);
        }
        format!("{:016x}", hasher.finish())
    }
}

/// Everything Envoy should have, per type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XdsSnapshot {
    pub by_type: BTreeMap<&'static str, Resources>,
    /// Clusters each route resource refers to (for make-before-break).
    pub route_clusters: BTreeMap<String, Vec<String>>,
    /// Built from a synced index. Until then nothing is pushed: an Envoy
    /// reconnecting to a restarted sidecar keeps what it has rather than
    /// receiving an empty configuration.
    pub complete: bool,
}

impl XdsSnapshot {
    pub fn resources(&self, type_url: &str) -> Resources {
        self.by_type.get(type_url).cloned().unwrap_or_default()
    }
}

pub fn cluster_name(view: &str) -> String {
    format!("view-{view}")
}

fn any<M: Message>(type_url: &str, message: &M) -> Any {
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

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource::default(),
        )),
        ..Default::default()
    }
}

fn socket_address(ip: std::net::IpAddr, port: u16) -> core::Address {
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

fn seconds(s: i64) -> Option<Duration> {
    Some(Duration {
        seconds: s,
        nanos: 0,
    })
}

/// Build every resource from the index snapshot.
pub fn build(snapshot: &Snapshot, config: &Config) -> XdsSnapshot {
    let active: Vec<&ViewState> = snapshot
        .views
        .values()
        .map(|v| v.as_ref())
        .filter(|v| v.serving_endpoints().next().is_some())
        .collect();

    let mut clusters = Resources::default();
    let mut endpoints = Resources::default();
    for view in &active {
        let name = cluster_name(view.spec.name.as_str());
        clusters
            .0
            .insert(name.clone(), any(CLUSTER_TYPE, &view_cluster(&name)));
        endpoints.0.insert(
            name.clone(),
            any(ENDPOINT_TYPE, &load_assignment(&name, view)),
        );
    }

    let routes = route_configuration(snapshot, config);
    let referenced = active
        .iter()
        .map(|v| cluster_name(v.spec.name.as_str()))
        .collect();

    let mut listeners = Resources::default();
    listeners.0.insert(
        LISTENER_NAME.into(),
        any(LISTENER_TYPE, &gateway_listener(config)),
    );
    let mut route_resources = Resources::default();
    route_resources
        .0
        .insert(ROUTE_NAME.into(), any(ROUTE_TYPE, &routes));

    XdsSnapshot {
        by_type: BTreeMap::from([
            (LISTENER_TYPE, listeners),
            (ROUTE_TYPE, route_resources),
            (CLUSTER_TYPE, clusters),
            (ENDPOINT_TYPE, endpoints),
        ]),
        route_clusters: BTreeMap::from([(ROUTE_NAME.to_string(), referenced)]),
        complete: snapshot.synced,
    }
}

fn gateway_listener(config: &Config) -> listener::Listener {
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
        // The sidecar unreachable: the view cannot start, say so.
        status_on_error: Some(envoy_types::pb::envoy::r#type::v3::HttpStatus {
            code: envoy_types::pb::envoy::r#type::v3::StatusCode::ServiceUnavailable as i32,
        }),
        ..Default::default()
    };
    let manager = hcm::HttpConnectionManager {
        stat_prefix: "gateway".into(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: ROUTE_NAME.into(),
            },
        )),
        strip_port_mode: Some(hcm::http_connection_manager::StripPortMode::StripAnyHostPort(true)),
        // A held request sends nothing while its view starts.
        stream_idle_timeout: seconds((check_timeout + 25).max(300) as i64),
        access_log: vec![access_log()],
        http_filters: vec![
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
        ],
        ..Default::default()
    };
    listener::Listener {
        name: LISTENER_NAME.into(),
        address: Some(socket_address(
            config.envoy_listen.ip(),
            config.envoy_listen.port(),
        )),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: typed(
                    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &manager,
                ),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One JSON line per request on Envoy's stdout: who asked for which view,
/// what came back, how long it took and where it went.
fn access_log() -> envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
    use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3 as stream;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let fields = [
        ("time", "%START_TIME%"),
        ("authority", "%REQ(:AUTHORITY)%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
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
    let format = Struct {
        fields: fields
            .iter()
            .map(|(name, operator)| {
                (
                    name.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(operator.to_string())),
                    },
                )
            })
            .collect(),
    };
    let stdout = stream::StdoutAccessLog {
        access_log_format: Some(stream::stdout_access_log::AccessLogFormat::LogFormat(
            core::SubstitutionFormatString {
                format: Some(core::substitution_format_string::Format::JsonFormat(format)),
                ..Default::default()
            },
        )),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.stdout".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            &stdout,
        ))),
        ..Default::default()
    }
}

fn direct(status: u32, body: &str) -> route::route::Action {
    route::route::Action::DirectResponse(route::DirectResponseAction {
        status,
        body: Some(core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(body.into())),
            ..Default::default()
        }),
        ..Default::default()
    })
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

fn route_configuration(snapshot: &Snapshot, config: &Config) -> route::RouteConfiguration {
    let mut virtual_hosts = vec![route::VirtualHost {
        name: "api".into(),
        domains: vec![config.gateway_hostname.clone()],
        routes: vec![
            prefix_route("/_api/", to_cluster(config.sidecar_api_cluster.clone(), 30)),
            prefix_route("/", direct(404, "not found\n")),
        ],
        ..Default::default()
    }];
    for view in snapshot.views.values() {
        let name = view.spec.name.as_str();
        // Analysts' queries can run long: no route timeout, idle streams are
        // still bounded by the connection manager.
        let mut to_view = prefix_route("/", to_cluster(cluster_name(name), 0));
        if view.serving_endpoints().next().is_none() {
            to_view.typed_per_filter_config = activate_through_sidecar();
        }
        virtual_hosts.push(route::VirtualHost {
            name: cluster_name(name),
            domains: vec![config.view_hostname(name)],
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
    virtual_hosts.push(route::VirtualHost {
        name: "unknown".into(),
        domains: vec!["*".into()],
        routes: vec![prefix_route("/", direct(404, "no such view\n"))],
        ..Default::default()
    });
    route::RouteConfiguration {
        name: ROUTE_NAME.into(),
        virtual_hosts,
        ..Default::default()
    }
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

fn load_assignment(name: &str, view: &ViewState) -> endpoint::ClusterLoadAssignment {
    let mut serving: Vec<_> = view.serving_endpoints().collect();
    serving.sort_by_key(|e| (e.ip, e.port));
    endpoint::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![endpoint::LocalityLbEndpoints {
            lb_endpoints: serving
                .into_iter()
                .map(|e| endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(socket_address(e.ip, e.port)),
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
