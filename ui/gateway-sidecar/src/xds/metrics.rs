//! The xDS server's metrics (`views_gateway_xds_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// An xDS resource type, by the last part of its type URL (`Cluster`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

impl TypeLabel {
    pub fn of(type_url: &str) -> Self {
        Self {
            r#type: type_url.rsplit('.').next().unwrap_or(type_url).to_string(),
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub streams: Gauge,
    pub responses: Family<TypeLabel, Counter>,
    pub resource_bytes: Family<TypeLabel, Counter>,
    pub acks: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("xds");
        registry.register(
            "streams",
            "Envoy ADS streams connected now",
            self.streams.clone(),
        );
        registry.register(
            "responses",
            "xDS responses sent, by type",
            self.responses.clone(),
        );
        registry.register(
            "resource_bytes",
            "Bytes of xDS resources sent, by type",
            self.resource_bytes.clone(),
        );
        registry.register(
            "acks",
            "xDS responses Envoy accepted, by type",
            self.acks.clone(),
        );
        registry.register(
            "nacks",
            "xDS responses Envoy rejected, by type",
            self.nacks.clone(),
        );
    }
}
