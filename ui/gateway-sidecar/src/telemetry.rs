//! Logs and metrics. Logs go through `tracing` (JSON when not on a terminal);
//! metrics are Prometheus counters and gauges served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub method: String,
    pub status: u16,
}

/// Every metric the sidecar exports.
#[derive(Default)]
pub struct Metrics {
    pub xds_streams: Gauge,
    pub xds_responses: Family<TypeLabel, Counter>,
    pub xds_bytes: Family<TypeLabel, Counter>,
    pub xds_acks: Family<TypeLabel, Counter>,
    pub xds_nacks: Family<TypeLabel, Counter>,
    pub views: Gauge,
    pub views_serving: Gauge,
    pub api_requests: Family<ApiLabel, Counter>,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("views_gateway");
        registry.register(
            "xds_streams",
            "Envoy ADS streams connected now",
            self.xds_streams.clone(),
        );
        registry.register(
            "xds_responses",
            "xDS responses sent, by type",
            self.xds_responses.clone(),
        );
        registry.register(
            "xds_resource_bytes",
            "Bytes of xDS resources sent, by type",
            self.xds_bytes.clone(),
        );
        registry.register(
            "xds_acks",
            "xDS responses Envoy accepted, by type",
            self.xds_acks.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses Envoy rejected, by type",
            self.xds_nacks.clone(),
        );
        registry.register("views", "Views in the index", self.views.clone());
        registry.register(
            "views_serving",
            "Views with at least one serving endpoint",
            self.views_serving.clone(),
        );
        registry.register(
            "api_requests",
            "/_api requests, by method and status",
            self.api_requests.clone(),
        );
        registry
    }
}

/// Install the global tracing subscriber.
pub fn init_logging(json: Option<bool>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_client::client::builder=warn".into());
    let json = json.unwrap_or_else(|| !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
