//! Scoped, expiring data-lake credentials for views.
//!
//! The sidecar is the views' S3 endpoint. Each activation of a view gets an
//! access key id that names the master key version, the view, an expiry and
//! a per-activation nonce; its secret is an HMAC of that id under that
//! version of the master key, kept in a Kubernetes Secret ([`KeyRing`],
//! read through [`MasterKeys`]), so nothing is stored per view. The endpoint ([`Endpoint`]) derives
//! the secret from the presented key id, lets `s3s` verify the SigV4
//! signature with it, refuses expired keys and keys of deleted views, checks
//! every operation against the view's current subsets and forwards what is
//! allowed to the lake, re-signed with the lake's own credentials.
//!
//! ```text
//!  view pod ──SigV4 (view key)──► Endpoint ──SigV4 (lake root key)──► lake (S3)
//!                                   │ Auth: parse key id, expiry, view exists,
//!                                   │       secret = HMAC(master key version, key id)
//!                                   │ s3s:  signature check (SignatureDoesNotMatch)
//!                                   │ Access: operation allow-list, subset prefixes,
//!                                   │       key hygiene, read-only unless `write`
//!                                   └ Forward: allowed operations only (s3s-aws)
//! ```
//!
//! See `README.md` beside this file for the design and its trade-offs.

mod endpoint;
mod error;
mod key;
mod metrics;
mod policy;
mod views;

pub use endpoint::{Endpoint, Upstream, s3_client};
pub use error::CredentialsError;
pub use key::{
    Broker, KEY_ID_PREFIX, KeyId, KeyRing, KeyVersion, MAX_KEY_VERSION, MAX_LIFETIME,
    MIN_MASTER_KEY_LEN, MasterKey, MasterKeys, UNKNOWN_VERSION_WAIT, ViewCredentials,
    activation_nonce,
};
pub use metrics::{Counters, CountersCollector, CountersSnapshot, MasterKeysCollector};
pub use policy::Denial;
pub use views::{InMemoryViews, ViewSubsets};
