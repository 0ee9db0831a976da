//! The activator's metrics: ext_authz Checks, starts, held requests.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Progress;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    pub outcome: String,
}

pub struct Metrics {
    /// ext_authz Checks by outcome (`ready`, `page`, `budget`, `failed`, …).
    pub ext_authz_checks: Family<CheckLabel, Counter>,
    pub activations_started: Counter,
    /// Starts followed to the end, by outcome, and how long they took.
    pub activation_seconds: Family<CheckLabel, Histogram, fn() -> Histogram>,
    pub held_requests: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ext_authz_checks: Family::default(),
            activations_started: Counter::default(),
            activation_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 12))
            }),
            held_requests: Gauge::default(),
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
    pub fn record_activation(&self, outcome: &Progress, took: std::time::Duration) {
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

    pub fn register(&self, registry: &mut Registry) {
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
        registry.register(
            "held_requests",
            "Requests held now while their view starts",
            self.held_requests.clone(),
        );
    }
}
