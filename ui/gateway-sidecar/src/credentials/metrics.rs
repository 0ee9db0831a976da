//! Counters of the credential broker and its S3 endpoint: plain atomics, for
//! telemetry to export.

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
