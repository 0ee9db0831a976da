//! The sidecar's configuration: every setting is a flag with an environment
//! variable of the same meaning (the Deployment sets environment variables).

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "gateway-sidecar", about = "The views gateway's control plane")]
pub struct Config {
    /// Base hostname: views are served at `<name>.<hostname>`, the API at
    /// `<hostname>/_api/`. Only `localhost` works without TLS termination.
    #[arg(long, env = "GATEWAY_HOSTNAME", default_value = "localhost")]
    pub gateway_hostname: String,

    /// Namespace holding the views (Services, Jobs). Defaults to the pod's own.
    #[arg(long, env = "VIEWS_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// gRPC address for Envoy: ADS (xDS) and, later, ext_authz.
    #[arg(long, env = "XDS_LISTEN", default_value = "127.0.0.1:18000")]
    pub xds_listen: SocketAddr,

    /// HTTP address for `/_api/` (reached through Envoy: keep it on localhost).
    #[arg(long, env = "HTTP_LISTEN", default_value = "127.0.0.1:8081")]
    pub http_listen: SocketAddr,

    /// HTTP address for `/healthz`, `/readyz`, `/metrics`, `/debug/envoys`
    /// (probes and Prometheus).
    #[arg(long, env = "OPS_LISTEN", default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,

    /// Where Envoy's gateway listener binds (pushed over LDS).
    #[arg(long, env = "ENVOY_LISTEN", default_value = "0.0.0.0:8080")]
    pub envoy_listen: SocketAddr,

    /// Envoy's cluster name for the sidecar's HTTP port (defined statically in
    /// `envoy.yaml`); the API route points at it.
    #[arg(long, env = "SIDECAR_API_CLUSTER", default_value = "sidecar-api")]
    pub sidecar_api_cluster: String,

    /// Names that cannot be views, in addition to the built-in ones
    /// (comma-separated).
    #[arg(
        long,
        env = "RESERVED_VIEW_NAMES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub reserved_names: Vec<String>,

    /// Hard cap on one run of a view when the request does not say (seconds).
    #[arg(long, env = "DEFAULT_DEADLINE_SECONDS", default_value_t = 3600)]
    pub default_deadline_seconds: i64,

    /// Idle time after which a view is stopped when the request does not say (seconds).
    #[arg(long, env = "DEFAULT_IDLE_TIMEOUT_SECONDS", default_value_t = 900)]
    pub default_idle_timeout_seconds: i64,

    /// The port view pods serve HTTP on (their container port named `http`).
    #[arg(long, env = "VIEW_PORT", default_value_t = 8080)]
    pub view_port: u16,

    /// How long a create/delete waits for its change to reach this sidecar's
    /// index before answering 503 (milliseconds).
    #[arg(long, env = "INDEX_WAIT_MS", default_value_t = 10_000)]
    pub index_wait_ms: u64,

    /// Log as JSON (the default when stderr is not a terminal).
    #[arg(long, env = "LOG_JSON")]
    pub log_json: Option<bool>,
}

/// Names refused for views whatever the configuration: they would shadow the
/// gateway's own hostnames or confuse people.
pub const BUILT_IN_RESERVED_NAMES: &[&str] = &[
    "api",
    "www",
    "admin",
    "gateway",
    "status",
    "health",
    "metrics",
    "login",
    "auth",
    "static",
    "assets",
    "default",
    "system",
    "kube",
    "envoy",
    "sidecar",
    "localhost",
];

impl Config {
    pub fn is_reserved(&self, name: &str) -> bool {
        BUILT_IN_RESERVED_NAMES.contains(&name) || self.reserved_names.iter().any(|r| r == name)
    }

    pub fn view_hostname(&self, name: &str) -> String {
        format!("{name}.{}", self.gateway_hostname)
    }
}
