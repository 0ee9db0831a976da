//! The sidecar's configuration: every setting is a flag with an environment
//! variable of the same meaning (the Deployment sets environment variables).

use std::net::SocketAddr;

use clap::Parser;

use crate::identity::{IdentityConfig, Provider};

/// Envoy's access log ([`Config::access_log`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLog {
    Json,
    Off,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "gateway-sidecar", about = "The views gateway's control plane")]
pub struct Config {
    /// Base hostname: views are served at `<name>.<hostname>`, the API at
    /// `<hostname>/_api/`. Only `localhost` works without TLS termination.
    #[arg(long, env = "GATEWAY_HOSTNAME", default_value = "localhost")]
    pub gateway_hostname: String,

    /// The port people reach the gateway on, when it is not their scheme's
    /// default (e.g. `localhost:8080`, or `views.localhost:8443` with TLS in
    /// development): plain HTTP is redirected to HTTPS on it, and with a
    /// one-label hostname the gateway's own host, routed by its first label,
    /// carries it.
    #[arg(long, env = "GATEWAY_PUBLIC_PORT")]
    pub gateway_public_port: Option<u16>,

    /// How many proxies in front of Envoy append to X-Forwarded-For (a load
    /// balancer: 1); addresses beyond them are the client's own claims.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: u32,

    /// Namespace holding the views (Services, Jobs). Defaults to the pod's own.
    #[arg(long, env = "VIEWS_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// gRPC address for Envoy: ADS (xDS) and ext_authz.
    #[arg(long, env = "XDS_LISTEN", default_value = "127.0.0.1:18000")]
    pub xds_listen: SocketAddr,

    /// HTTP address for `/_api/` (reached through Envoy: keep it on localhost).
    #[arg(long, env = "HTTP_LISTEN", default_value = "127.0.0.1:8081")]
    pub http_listen: SocketAddr,

    /// HTTP address for `/healthz`, `/readyz`, `/metrics`, `/debug/envoys`
    /// (probes and Prometheus).
    #[arg(long, env = "OPS_LISTEN", default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,

    /// A `kubernetes.io/tls` Secret (in the views' namespace) with the
    /// certificate for `<hostname>` and `*.<hostname>`: Envoy then serves
    /// TLS on `ENVOY_LISTEN`. Replace the Secret to rotate it.
    #[arg(long, env = "TLS_SECRET")]
    pub tls_secret: Option<String>,

    /// With TLS: where Envoy also listens for plain HTTP, which it redirects
    /// to HTTPS (on `localhost` it serves it, for development).
    #[arg(long, env = "ENVOY_HTTP_LISTEN")]
    pub envoy_http_listen: Option<SocketAddr>,

    /// Where Envoy's gateway listener binds (pushed over LDS).
    #[arg(long, env = "ENVOY_LISTEN", default_value = "0.0.0.0:8080")]
    pub envoy_listen: SocketAddr,

    /// Envoy's cluster name for the sidecar's HTTP port (defined statically in
    /// `envoy.yaml`); the API route points at it.
    #[arg(long, env = "SIDECAR_API_CLUSTER", default_value = "sidecar-api")]
    pub sidecar_api_cluster: String,

    /// Envoy's cluster name for the sidecar's gRPC port (ADS and ext_authz;
    /// defined statically in `envoy.yaml`).
    #[arg(long, env = "SIDECAR_GRPC_CLUSTER", default_value = "xds")]
    pub sidecar_grpc_cluster: String,

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

    /// The ConfigMap (in the views' namespace) holding the data entitlements
    /// (key `entitlements.yaml`); absent or invalid, nothing is granted.
    #[arg(
        long,
        env = "ENTITLEMENTS_CONFIGMAP",
        default_value = "views-gateway-entitlements"
    )]
    pub entitlements_configmap: String,

    #[command(flatten)]
    pub identity: IdentityConfig,

    /// The identity provider's endpoints, discovered at start-up when
    /// `OIDC_ISSUER` is set.
    #[arg(skip)]
    pub provider: Option<Provider>,

    /// On SIGTERM, how long held requests may take to finish before the
    /// servers stop (seconds; keep it below the pod's grace period).
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,

    /// Envoy's access log: one JSON line per request on its stdout, or none
    /// (formatting the line is about a tenth of Envoy's CPU per request on a
    /// small response; see BENCHMARKS.md).
    #[arg(long, env = "ACCESS_LOG", value_enum, default_value_t = AccessLog::Json)]
    pub access_log: AccessLog,

    /// Log as JSON (the default when stderr is not a terminal).
    #[arg(long, env = "LOG_JSON")]
    pub log_json: Option<bool>,

    #[command(flatten)]
    pub workload: WorkloadConfig,

    #[command(flatten)]
    pub credentials: CredentialsConfig,
}

/// How a view's workload (its Job) is started and how long a request waits for it.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkloadConfig {
    /// The view workload's image: a version tag or digest, never an implicit
    /// `:latest` (refused at start-up).
    #[arg(
        long,
        env = "VIEW_IMAGE",
        default_value = "ghcr.io/views-gateway/duckdb-view:0.1.0"
    )]
    pub view_image: String,

    /// RuntimeClass for view pods (the local cluster runs pods of class
    /// `process` as real processes); unset in real clusters.
    #[arg(long, env = "VIEW_RUNTIME_CLASS")]
    pub view_runtime_class: Option<String>,

    /// Extra annotations on view pods, `key=value` comma-separated (e.g.
    /// Prometheus scrape hints, or the local cluster's simulation knobs).
    #[arg(long, env = "VIEW_POD_ANNOTATIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub view_pod_annotations: Vec<(String, String)>,

    #[arg(long, env = "VIEW_CPU_REQUEST", default_value = "250m")]
    pub view_cpu_request: String,
    #[arg(long, env = "VIEW_CPU_LIMIT", default_value = "2")]
    pub view_cpu_limit: String,
    #[arg(long, env = "VIEW_MEMORY_REQUEST", default_value = "512Mi")]
    pub view_memory_request: String,
    #[arg(long, env = "VIEW_MEMORY_LIMIT", default_value = "2Gi")]
    pub view_memory_limit: String,

    /// How long a request for a cold view is held before it gets 503 with
    /// `Retry-After` (seconds). Envoy's ext_authz and stream timeouts are
    /// generated to allow it.
    #[arg(long, env = "COLD_START_BUDGET_SECONDS", default_value_t = 60)]
    pub cold_start_budget_seconds: u64,

    /// How often Envoy's request counters are read to find idle views (seconds).
    #[arg(long, env = "IDLE_CHECK_SECONDS", default_value_t = 10)]
    pub idle_check_seconds: u64,

    /// Envoy's admin interface, for its request counters (idle detection).
    #[arg(long, env = "ENVOY_ADMIN_URL", default_value = "http://127.0.0.1:9901")]
    pub envoy_admin_url: String,

    /// Finished Jobs (and their pods and Secrets) are kept this long for
    /// inspection, then garbage-collected (seconds).
    #[arg(long, env = "FINISHED_JOB_TTL_SECONDS", default_value_t = 300)]
    pub finished_job_ttl_seconds: i32,

    /// The longest one run of a view may last, extensions of its deadline
    /// included (seconds, from its start; 60 to 7 days, the lake keys'
    /// longest life). `POST /_api/views/<name>/extend` refuses to go past it.
    #[arg(long, env = "MAX_RUN_SECONDS", default_value_t = 28_800,
          value_parser = clap::value_parser!(i64).range(60..=604_800))]
    pub max_run_seconds: i64,

    /// How long before a run's deadline or idle stop the banner inside the
    /// view warns and offers to extend (seconds).
    #[arg(long, env = "STOP_WARNING_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(10..=86_400))]
    pub stop_warning_seconds: i64,
}

/// The views' S3 endpoint and the lake behind it.
#[derive(clap::Args, Debug, Clone)]
pub struct CredentialsConfig {
    /// Where the sidecar serves S3 to view pods (unset: no endpoint, and view
    /// pods get no lake credentials).
    #[arg(long, env = "CREDENTIALS_LISTEN")]
    pub credentials_listen: Option<SocketAddr>,

    /// The endpoint URL view pods use to reach `CREDENTIALS_LISTEN` (e.g. a
    /// Service in front of the gateway pods).
    #[arg(long, env = "CREDENTIALS_ENDPOINT_URL")]
    pub credentials_endpoint_url: Option<String>,

    /// The lake: the real S3 endpoint requests are re-signed for.
    #[arg(long, env = "LAKE_ENDPOINT_URL")]
    pub lake_endpoint_url: Option<String>,
    #[arg(long, env = "LAKE_REGION", default_value = "us-east-1")]
    pub lake_region: String,
    #[arg(long, env = "LAKE_ACCESS_KEY_ID", hide_env_values = true)]
    pub lake_access_key_id: Option<String>,
    #[arg(long, env = "LAKE_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub lake_secret_access_key: Option<String>,

    /// The Secret (in the views' namespace) holding the master key view keys
    /// are derived from; created with a random key when absent.
    #[arg(
        long,
        env = "MASTER_KEY_SECRET",
        default_value = "views-gateway-master-key"
    )]
    pub master_key_secret: String,
}

impl CredentialsConfig {
    /// The lake and the sidecar's own keys for it, when all are set (the
    /// views' S3 endpoint and the lake browser use them).
    pub fn lake_upstream(&self) -> Option<crate::credentials::Upstream> {
        Some(crate::credentials::Upstream {
            endpoint: self.lake_endpoint_url.clone()?,
            access_key_id: self.lake_access_key_id.clone()?,
            secret_access_key: self.lake_secret_access_key.clone()?,
            region: self.lake_region.clone(),
        })
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not key=value"))
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

/// A configuration that cannot work, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "VIEW_IMAGE `{0}` has no version: pin a tag or digest (an implicit `:latest` is not reproducible)"
    )]
    UnpinnedImage(String),
    #[error(
        "CREDENTIALS_LISTEN is set, so {0} must be too (view pods reach the lake through the gateway)"
    )]
    MissingCredentialsSetting(&'static str),
    #[error(
        "OIDC_ISSUER is not set: nobody would need to sign in, which is allowed only with GATEWAY_HOSTNAME=localhost (development)"
    )]
    OpenBeyondLocalhost,
    #[error("OIDC_ISSUER `{0}` is not an http(s) URL")]
    InvalidIssuer(String),
    #[error("OIDC_PROVIDER_URL `{0}` is not an http(s) URL (or OIDC_ISSUER is not set)")]
    InvalidProviderUrl(String),
}

impl Config {
    /// Check what clap cannot: settings that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let image = &self.workload.view_image;
        let last = image.rsplit('/').next().unwrap_or(image);
        if !(image.contains('@') || last.contains(':')) {
            return Err(ConfigError::UnpinnedImage(image.clone()));
        }
        match &self.identity.oidc_issuer {
            None if self.gateway_hostname != "localhost" => {
                return Err(ConfigError::OpenBeyondLocalhost);
            }
            Some(issuer) if !(issuer.starts_with("https://") || issuer.starts_with("http://")) => {
                return Err(ConfigError::InvalidIssuer(issuer.clone()));
            }
            _ => {}
        }
        if let Some(url) = &self.identity.oidc_provider_url
            && (self.identity.oidc_issuer.is_none()
                || !(url.starts_with("https://") || url.starts_with("http://")))
        {
            return Err(ConfigError::InvalidProviderUrl(url.clone()));
        }
        if self.credentials.credentials_listen.is_some() {
            let c = &self.credentials;
            for (set, name) in [
                (
                    c.credentials_endpoint_url.is_some(),
                    "CREDENTIALS_ENDPOINT_URL",
                ),
                (c.lake_endpoint_url.is_some(), "LAKE_ENDPOINT_URL"),
                (c.lake_access_key_id.is_some(), "LAKE_ACCESS_KEY_ID"),
                (c.lake_secret_access_key.is_some(), "LAKE_SECRET_ACCESS_KEY"),
            ] {
                if !set {
                    return Err(ConfigError::MissingCredentialsSetting(name));
                }
            }
        }
        Ok(())
    }

    /// The cold-start budget as a duration.
    pub fn cold_start_budget(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.workload.cold_start_budget_seconds)
    }

    pub fn is_reserved(&self, name: &str) -> bool {
        BUILT_IN_RESERVED_NAMES.contains(&name) || self.reserved_names.iter().any(|r| r == name)
    }

    pub fn view_hostname(&self, name: &str) -> String {
        format!("{name}.{}", self.gateway_hostname)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use googletest::prelude::*;

    use super::*;

    fn validated(args: &[&str]) -> Result<(), ConfigError> {
        Config::parse_from(std::iter::once("gateway-sidecar").chain(args.iter().copied()))
            .validate()
    }

    #[gtest]
    fn a_provider_url_goes_with_an_issuer_and_is_http() {
        let issuer = ["--oidc-issuer", "http://localhost:32702"];
        expect_that!(
            validated(
                &[
                    &issuer[..],
                    &["--oidc-provider-url", "http://10.233.0.1:32702"]
                ]
                .concat()
            ),
            ok(anything())
        );
        expect_that!(
            validated(&[&issuer[..], &["--oidc-provider-url", "10.233.0.1:32702"]].concat()),
            err(matches_pattern!(ConfigError::InvalidProviderUrl(_)))
        );
        expect_that!(
            validated(&["--oidc-provider-url", "http://10.233.0.1:32702"]),
            err(matches_pattern!(ConfigError::InvalidProviderUrl(_)))
        );
    }
}
