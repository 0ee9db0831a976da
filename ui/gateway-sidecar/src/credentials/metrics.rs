//! Counters of the credential broker and its S3 endpoint: plain atomics,
//! exported on each scrape by [`CountersCollector`].

use std::sync::atomic::{AtomicU64, Ordering};

/// What the broker and endpoint did since start. Every S3 request counts
/// once, under the first of these that applies: `invalid_key`,
/// `expired_key`, `view_deleted`, `bad_signature`, `denied`, `allowed`,
/// `other_refused` (anonymous, malformed, ...).
#[derive(Debug, Default)]
pub struct Counters {
    minted: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    invalid_key: AtomicU64,
    expired_key: AtomicU64,
    view_deleted: AtomicU64,
    bad_signature: AtomicU64,
    other_refused: AtomicU64,
    upstream_errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Credentials minted.
    pub minted: u64,
    /// Requests forwarded to the lake.
    pub allowed: u64,
    /// Requests with a valid key and signature refused by the subset policy.
    pub denied: u64,
    /// Requests with a key id this gateway did not mint.
    pub invalid_key: u64,
    /// Requests with an expired key.
    pub expired_key: u64,
    /// Requests with the key of a deleted view (or ended activation).
    pub view_deleted: u64,
    /// Requests with a valid key whose signature did not verify.
    pub bad_signature: u64,
    /// Other refusals (anonymous, SigV2, malformed requests).
    pub other_refused: u64,
    /// Allowed requests the lake answered with a 5xx (or not at all).
    pub upstream_errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CountersSnapshot {
            minted: get(&self.minted),
            allowed: get(&self.allowed),
            denied: get(&self.denied),
            invalid_key: get(&self.invalid_key),
            expired_key: get(&self.expired_key),
            view_deleted: get(&self.view_deleted),
            bad_signature: get(&self.bad_signature),
            other_refused: get(&self.other_refused),
            upstream_errors: get(&self.upstream_errors),
        }
    }

    pub(crate) fn record_minted(&self) {
        self.minted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Denied => &self.denied,
            Outcome::InvalidKey => &self.invalid_key,
            Outcome::ExpiredKey => &self.expired_key,
            Outcome::ViewDeleted => &self.view_deleted,
            Outcome::BadSignature => &self.bad_signature,
            Outcome::OtherRefused => &self.other_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// How one request ended, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
    InvalidKey,
    ExpiredKey,
    ViewDeleted,
    BadSignature,
    OtherRefused,
}

/// Exports the counters on each scrape (`views_gateway_credentials_minted`,
/// `views_gateway_s3_requests{outcome}`, `views_gateway_s3_upstream_errors`).
#[derive(Debug)]
pub struct CountersCollector(pub std::sync::Arc<Counters>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl prometheus_client::collector::Collector for CountersCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let now = self.0.snapshot();
        let single = |encoder: &mut prometheus_client::encoding::DescriptorEncoder,
                      name: &str,
                      help: &str,
                      value: u64| {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)
        };
        single(
            &mut encoder,
            "credentials_minted",
            "View credentials minted",
            now.minted,
        )?;
        single(
            &mut encoder,
            "s3_upstream_errors",
            "Allowed S3 requests the lake failed",
            now.upstream_errors,
        )?;
        let mut family = encoder.encode_descriptor(
            "s3_requests",
            "Requests to the views' S3 endpoint, by outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, value) in [
            ("allowed", now.allowed),
            ("denied", now.denied),
            ("invalid_key", now.invalid_key),
            ("expired_key", now.expired_key),
            ("view_deleted", now.view_deleted),
            ("bad_signature", now.bad_signature),
            ("other_refused", now.other_refused),
        ] {
            let label = OutcomeLabel { outcome };
            ConstCounter::new(value).encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}

/// Exports the master key versions this replica holds, read from the index
/// on each scrape: `views_gateway_credentials_master_key_current_version`
/// (the number keys are minted with; 0 without a key) and
/// `views_gateway_credentials_master_key_versions` (how many verify). Two
/// replicas that differ here for longer than a moment have a watch behind.
pub struct MasterKeysCollector(pub std::sync::Arc<dyn super::MasterKeys>);

impl std::fmt::Debug for MasterKeysCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MasterKeysCollector")
            .field(&self.0.ring())
            .finish()
    }
}

impl prometheus_client::collector::Collector for MasterKeysCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let ring = self.0.ring();
        for (name, help, value) in [
            (
                "credentials_master_key_current_version",
                "The master key version new view keys are derived from (0: none)",
                ring.current().map_or(0, |v| i64::from(v.number)),
            ),
            (
                "credentials_master_key_versions",
                "Master key versions view keys are verified with",
                i64::try_from(ring.versions().len()).unwrap_or(i64::MAX),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
