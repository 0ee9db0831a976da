//! Logs and metrics. Logs go through `tracing` (JSON when not on a terminal);
//! metrics are Prometheus counters and gauges served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub method: String,
    pub status: u16,
}

/// Every metric the sidecar exports.
pub struct Metrics {
    pub xds_streams: Gauge,
    pub xds_responses: Family<TypeLabel, Counter>,
    pub xds_bytes: Family<TypeLabel, Counter>,
    pub xds_acks: Family<TypeLabel, Counter>,
    pub xds_nacks: Family<TypeLabel, Counter>,
    pub views: Gauge,
    pub views_serving: Gauge,
    pub api_requests: Family<ApiLabel, Counter>,
    /// ext_authz Checks by outcome (`ready`, `page`, `budget`, `failed`, …).
    pub ext_authz_checks: Family<CheckLabel, Counter>,
    pub activations_started: Counter,
    /// Starts followed to the end, by outcome, and how long they took.
    pub activation_seconds: Family<CheckLabel, Histogram, fn() -> Histogram>,
    pub held_requests: Gauge,
    /// Views stopped for being idle.
    pub idle_stops: Counter,
    /// The credential broker's counters, when it runs.
    pub credentials: std::sync::OnceLock<std::sync::Arc<crate::credentials::Counters>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            xds_streams: Gauge::default(),
            xds_responses: Family::default(),
            xds_bytes: Family::default(),
            xds_acks: Family::default(),
            xds_nacks: Family::default(),
            views: Gauge::default(),
            views_serving: Gauge::default(),
            api_requests: Family::default(),
            ext_authz_checks: Family::default(),
            activations_started: Counter::default(),
            activation_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 12))
            }),
            held_requests: Gauge::default(),
            idle_stops: Counter::default(),
            credentials: std::sync::OnceLock::new(),
        }
    }
}

/// Counts one held request for as long as it lives.
pub struct HeldGuard(Gauge);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Count a held request until the guard drops.
    pub fn hold(&self) -> HeldGuard {
        self.held_requests.inc();
        HeldGuard(self.held_requests.clone())
    }

    /// Record how a start followed by this replica ended.
    pub fn record_activation(
        &self,
        outcome: &crate::activator::Progress,
        took: std::time::Duration,
    ) {
        use crate::activator::Progress;
        let outcome = match outcome {
            Progress::Ready => "ready",
            Progress::Failed(_) => "failed",
            Progress::Gone => "gone",
            Progress::Unavailable(_) => "unavailable",
            // Nobody was following any more; the start went on without us.
            Progress::Starting(_) => return,
        };
        self.activation_seconds
            .get_or_create(&CheckLabel {
                outcome: outcome.into(),
            })
            .observe(took.as_secs_f64());
    }

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
        registry.register(
            "ext_authz_checks",
            "ext_authz Checks from Envoy (requests for cold views), by outcome",
            self.ext_authz_checks.clone(),
        );
        registry.register(
            "activations_started",
            "Jobs this replica created to start a view",
            self.activations_started.clone(),
        );
        registry.register(
            "activation_seconds",
            "Starts followed to their end by this replica, by outcome",
            self.activation_seconds.clone(),
        );
        if let Some(counters) = self.credentials.get() {
            registry.register_collector(Box::new(crate::credentials::CountersCollector(
                counters.clone(),
            )));
        }
        registry.register(
            "idle_stops",
            "Views this replica stopped for being idle",
            self.idle_stops.clone(),
        );
        registry.register(
            "held_requests",
            "Requests held now while their view starts",
            self.held_requests.clone(),
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
