//! The module's errors, and how each one answers an S3 client.

use jiff::Timestamp;
use s3s::{S3Error, S3ErrorCode};

use super::policy::Denial;

/// Everything that can go wrong minting or checking view credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The master key is too short (or trivially guessable) to derive secrets from.
    #[error(
        "the master key must be at least {min} random bytes (got {len}{constant})",
        constant = if *constant { ", all identical" } else { "" }
    )]
    WeakMasterKey {
        len: usize,
        min: usize,
        constant: bool,
    },
    /// A view name that cannot be a view (a DNS label).
    #[error("{0:?} is not a view name (a DNS label: a-z, 0-9 and '-', starting with a letter)")]
    InvalidViewName(String),
    /// An empty activation id.
    #[error("the activation id must not be empty")]
    EmptyActivation,
    /// Minting credentials that would already be expired.
    #[error("the expiry {expires_at} is not in the future (now {now})")]
    ExpiryNotInFuture {
        expires_at: Timestamp,
        now: Timestamp,
    },
    /// Minting credentials that would live longer than [`super::MAX_LIFETIME`].
    #[error("the expiry {expires_at} is more than {max_hours} hours away")]
    ExpiryTooFar {
        expires_at: Timestamp,
        max_hours: i64,
    },
    /// Minting with no master key at all (its Secret is absent or has no
    /// usable version).
    #[error("there is no usable master key (its Secret is missing or has no valid version)")]
    NoMasterKey,
    /// A key derived from a master key version this replica does not hold:
    /// removed after a rotation, deleted with its Secret, or never created.
    #[error("the access key's master key version {0} does not exist (rotated out or deleted)")]
    UnknownKeyVersion(String),
    /// An access key id this gateway did not mint.
    #[error("the access key id is not a view key")]
    MalformedKeyId,
    /// A view key past its expiry.
    #[error("the view's credentials expired at {0}")]
    Expired(Timestamp),
    /// A key of a view that no longer exists.
    #[error("view {0:?} no longer exists: its credentials are revoked")]
    ViewDeleted(String),
    /// A key of an activation that is no longer the view's current one.
    #[error("the activation these credentials were minted for has ended (view {0:?})")]
    ActivationEnded(String),
    /// A request the view's subsets do not allow.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// Serving the endpoint failed.
    #[error("the S3 endpoint: {0}")]
    Io(#[from] std::io::Error),
}

impl CredentialsError {
    /// A short machine-readable reason for the audit log and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WeakMasterKey { .. } => "weak-master-key",
            Self::InvalidViewName(_) => "invalid-view-name",
            Self::EmptyActivation => "empty-activation",
            Self::ExpiryNotInFuture { .. } => "expiry-not-in-future",
            Self::ExpiryTooFar { .. } => "expiry-too-far",
            Self::NoMasterKey => "no-master-key",
            Self::UnknownKeyVersion(_) => "unknown-key-version",
            Self::MalformedKeyId => "unknown-key",
            Self::Expired(_) => "expired-key",
            Self::ViewDeleted(_) => "view-deleted",
            Self::ActivationEnded(_) => "activation-ended",
            Self::Denied(denial) => denial.reason(),
            Self::Io(_) => "io",
        }
    }
}

impl From<CredentialsError> for S3Error {
    /// The S3 error a client sees. Every refusal is a 403 with a message that
    /// says why (the client may read it; it reveals nothing beyond the view's
    /// own key and subsets).
    fn from(error: CredentialsError) -> Self {
        let (code, status) = match &error {
            CredentialsError::MalformedKeyId
            | CredentialsError::UnknownKeyVersion(_)
            | CredentialsError::ViewDeleted(_)
            | CredentialsError::ActivationEnded(_) => (S3ErrorCode::InvalidAccessKeyId, 403),
            // AWS answers ExpiredToken with 400; a refusal of expired
            // credentials is a 403 everywhere else, which clients handle as
            // "not allowed" rather than "malformed request".
            CredentialsError::Expired(_) => (S3ErrorCode::ExpiredToken, 403),
            CredentialsError::Denied(_) => (S3ErrorCode::AccessDenied, 403),
            _ => (S3ErrorCode::InternalError, 500),
        };
        let mut s3 = S3Error::with_message(code, error.to_string());
        s3.set_status_code(hyper::StatusCode::from_u16(status).expect("a valid status"));
        s3
    }
}
