//! View keys: the access key id says whose key it is and until when; the
//! secret is derived from the id under the master key, so nothing is stored
//! per view and every replica of the sidecar mints and checks the same keys.
//!
//! ```text
//! access key id      vg1_<view>_<expiry: unix seconds>_<nonce: 16 × base32>
//!                    vg1_sales_1767225600_mfrggzdfmztwq2lk
//! secret access key  hex(HMAC-SHA256(master key, access key id))   (64 chars)
//! nonce              base32(SHA-256("views-gateway/activation" 0 view 0 activation))[..16]
//! ```
//!
//! The id uses only `a-z 0-9 - _` (no `/`, which separates the SigV4
//! credential scope), is at most 4 + 63 + 1 + 11 + 1 + 16 = 96 characters,
//! and parses back to exactly one (view, expiry, nonce): a key id that does
//! not re-encode to itself is refused.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::error::CredentialsError;
use super::metrics::Counters;

/// The version tag every view key id starts with.
pub const KEY_ID_PREFIX: &str = "vg1";
/// The shortest master key accepted, in bytes.
pub const MIN_MASTER_KEY_LEN: usize = 32;
/// The longest a view key may live: S3's own limit for presigned URLs.
pub const MAX_LIFETIME: SignedDuration = SignedDuration::from_hours(7 * 24);
const NONCE_LEN: usize = 16;
const MAX_VIEW_LEN: usize = 63;

/// The secret every view key is derived from (from a Kubernetes Secret).
pub struct MasterKey(Box<[u8]>);

impl MasterKey {
    /// Accept at least [`MIN_MASTER_KEY_LEN`] bytes; refuse shorter keys and
    /// a key of one repeated byte (an unset or zeroed Secret).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CredentialsError> {
        let constant = bytes.windows(2).all(|pair| pair[0] == pair[1]);
        if bytes.len() < MIN_MASTER_KEY_LEN || constant {
            return Err(CredentialsError::WeakMasterKey {
                len: bytes.len(),
                min: MIN_MASTER_KEY_LEN,
                constant: constant && !bytes.is_empty(),
            });
        }
        Ok(Self(bytes.into()))
    }

    fn hmac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({} bytes, redacted)", self.0.len())
    }
}

/// A parsed view key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyId {
    pub view: String,
    /// Unix seconds; the key is valid while now < expires_at.
    pub expires_at: Timestamp,
    /// Identifies the activation the key was minted for ([`activation_nonce`]).
    pub nonce: String,
}

impl KeyId {
    /// Parse a key id strictly: exactly the format [`KeyId::encode`] writes.
    pub fn parse(id: &str) -> Result<Self, CredentialsError> {
        let malformed = || CredentialsError::MalformedKeyId;
        let rest = id
            .strip_prefix(KEY_ID_PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or_else(malformed)?;
        // The view may contain '-' but never '_': split from the right.
        let mut parts = rest.rsplitn(3, '_');
        let nonce = parts.next().ok_or_else(malformed)?;
        let expiry = parts.next().ok_or_else(malformed)?;
        let view = parts.next().ok_or_else(malformed)?;
        if !is_view_name(view)
            || nonce.len() != NONCE_LEN
            || !nonce.bytes().all(is_base32)
            || expiry.is_empty()
            || expiry.len() > 11
            || expiry.starts_with('0')
            || !expiry.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed());
        }
        let seconds: i64 = expiry.parse().map_err(|_| malformed())?;
        let expires_at = Timestamp::from_second(seconds).map_err(|_| malformed())?;
        let key = Self {
            view: view.to_owned(),
            expires_at,
            nonce: nonce.to_owned(),
        };
        // Canonical: one key id per (view, expiry, nonce).
        if key.encode() != id {
            return Err(malformed());
        }
        Ok(key)
    }

    /// The access key id.
    pub fn encode(&self) -> String {
        format!(
            "{KEY_ID_PREFIX}_{}_{}_{}",
            self.view,
            self.expires_at.as_second(),
            self.nonce
        )
    }

    /// Whether the key is past its expiry at `now`.
    pub fn expired_at(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// Credentials for one activation of a view, to be put in the activation's
/// Secret. The secret is redacted from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ViewCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Whole seconds, never later than the requested expiry.
    pub expires_at: Timestamp,
}

impl fmt::Debug for ViewCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Mints view keys and derives their secrets.
#[derive(Debug)]
pub struct Broker {
    master: MasterKey,
    counters: std::sync::Arc<Counters>,
}

impl Broker {
    pub fn new(master: MasterKey) -> Self {
        Self {
            master,
            counters: Default::default(),
        }
    }

    /// The counters of this broker and every [`super::Endpoint`] built on it.
    pub fn counters(&self) -> &std::sync::Arc<Counters> {
        &self.counters
    }

    /// Credentials for `view`'s activation `activation` (e.g. the Job's name
    /// or uid), valid until `expires_at` (rounded down to the second; at most
    /// [`MAX_LIFETIME`] from now). Deterministic: minting again for the same
    /// activation and expiry gives the same credentials, so replicas that
    /// race to create the activation's Secret write identical data.
    pub fn mint(
        &self,
        view: &str,
        activation: &str,
        expires_at: Timestamp,
    ) -> Result<ViewCredentials, CredentialsError> {
        self.mint_at(view, activation, expires_at, Timestamp::now())
    }

    /// [`Broker::mint`] at a given time (for tests).
    pub fn mint_at(
        &self,
        view: &str,
        activation: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<ViewCredentials, CredentialsError> {
        if !is_view_name(view) {
            return Err(CredentialsError::InvalidViewName(view.to_owned()));
        }
        if activation.is_empty() {
            return Err(CredentialsError::EmptyActivation);
        }
        let expires_at = Timestamp::from_second(expires_at.as_second())
            .expect("a whole second of a valid timestamp is valid");
        if expires_at <= now {
            return Err(CredentialsError::ExpiryNotInFuture { expires_at, now });
        }
        if expires_at.duration_since(now) > MAX_LIFETIME {
            return Err(CredentialsError::ExpiryTooFar {
                expires_at,
                max_hours: MAX_LIFETIME.as_hours(),
            });
        }
        let key = KeyId {
            view: view.to_owned(),
            expires_at,
            nonce: activation_nonce(view, activation),
        };
        let access_key_id = key.encode();
        let secret_access_key = self.secret_for(&access_key_id);
        self.counters.record_minted();
        tracing::info!(
            view,
            activation,
            nonce = %key.nonce,
            %expires_at,
            "minted view credentials"
        );
        Ok(ViewCredentials {
            access_key_id,
            secret_access_key,
            expires_at,
        })
    }

    /// Parse a presented key id and check its expiry at `now`. The view's
    /// existence is the endpoint's check (it needs the view index).
    pub fn verify(&self, access_key_id: &str, now: Timestamp) -> Result<KeyId, CredentialsError> {
        let key = KeyId::parse(access_key_id)?;
        if key.expired_at(now) {
            return Err(CredentialsError::Expired(key.expires_at));
        }
        Ok(key)
    }

    /// The secret of a key id: hex(HMAC-SHA256(master key, key id)).
    pub(crate) fn secret_for(&self, access_key_id: &str) -> String {
        hex(&self.master.hmac(access_key_id.as_bytes()))
    }
}

/// The nonce a key minted for `activation` of `view` carries: the view
/// index can compare it with its current activation to refuse keys of
/// ended activations ([`super::ViewSubsets::activation_current`]).
pub fn activation_nonce(view: &str, activation: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"views-gateway/activation\0");
    hash.update(view.as_bytes());
    hash.update(b"\0");
    hash.update(activation.as_bytes());
    let digest = hash.finalize();
    base32(&digest[..NONCE_LEN * 5 / 8])
}

/// A DNS label: 1–63 of `a-z 0-9 -`, starting with a letter, not ending with
/// '-'. (The API enforces the stricter view-name rules; this is what the key
/// format needs: no '_', nothing outside the key id charset.)
fn is_view_name(view: &str) -> bool {
    let bytes = view.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_VIEW_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn is_base32(b: u8) -> bool {
    BASE32.contains(&b)
}

/// RFC 4648 base32, lowercase, no padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    fn broker() -> Broker {
        Broker::new(MasterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap())
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[gtest]
    fn master_keys_shorter_than_32_bytes_are_refused() {
        let error = MasterKey::from_bytes(&[7, 1, 2]).unwrap_err();
        expect_that!(
            error,
            pat!(CredentialsError::WeakMasterKey {
                len: eq(&3),
                min: eq(&32),
                constant: eq(&false)
            })
        );
    }

    #[gtest]
    fn a_master_key_of_one_repeated_byte_is_refused() {
        expect_that!(MasterKey::from_bytes(&[0; 64]), err(anything()));
    }

    #[gtest]
    fn master_keys_are_redacted_from_debug() {
        let key = MasterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        expect_that!(format!("{key:?}"), not(contains_substring("0123")));
    }

    #[gtest]
    fn a_minted_key_id_names_view_expiry_and_nonce() {
        let credentials = broker()
            .mint_at("sales", "sales-abc12", at(1_767_225_600), at(1_767_220_000))
            .unwrap();
        let key = KeyId::parse(&credentials.access_key_id).unwrap();
        expect_that!(key.view, eq("sales"));
        expect_that!(key.expires_at, eq(at(1_767_225_600)));
        expect_that!(key.nonce, eq(&activation_nonce("sales", "sales-abc12")));
        expect_that!(
            credentials.access_key_id,
            starts_with("vg1_sales_1767225600_")
        );
        expect_that!(credentials.access_key_id.len(), le(128));
    }

    #[gtest]
    fn the_secret_is_the_hmac_of_the_key_id() {
        let broker = broker();
        let credentials = broker
            .mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000))
            .unwrap();
        let expected = hex(&broker.master.hmac(credentials.access_key_id.as_bytes()));
        expect_that!(credentials.secret_access_key, eq(&expected));
        expect_that!(credentials.secret_access_key.len(), eq(64));
    }

    #[gtest]
    fn minting_is_deterministic_per_activation() {
        let broker = broker();
        let mint = |activation| {
            broker
                .mint_at("sales", activation, at(1_767_225_600), at(1_767_220_000))
                .unwrap()
        };
        expect_that!(mint("a1"), eq(&mint("a1")));
        expect_that!(mint("a1").access_key_id, not(eq(&mint("a2").access_key_id)));
    }

    #[gtest]
    fn different_master_keys_derive_different_secrets() {
        let other =
            Broker::new(MasterKey::from_bytes(b"another master key, 32 bytes long").unwrap());
        let mint = |broker: &Broker| {
            broker
                .mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000))
                .unwrap()
                .secret_access_key
        };
        expect_that!(mint(&broker()), not(eq(&mint(&other))));
    }

    #[gtest]
    fn expiry_is_rounded_down_to_the_second() {
        let expires_at: Timestamp = "2026-01-01T00:00:00.900Z".parse().unwrap();
        let credentials = broker()
            .mint_at("sales", "a1", expires_at, at(1_767_220_000))
            .unwrap();
        expect_that!(credentials.expires_at, eq(at(1_767_225_600)));
    }

    #[gtest]
    fn minting_refuses_bad_views_activations_and_expiries() {
        let broker = broker();
        let now = at(1_767_220_000);
        let soon = at(1_767_225_600);
        expect_that!(
            broker.mint_at("Sales", "a1", soon, now),
            err(pat!(CredentialsError::InvalidViewName(_)))
        );
        expect_that!(
            broker.mint_at("sa_les", "a1", soon, now),
            err(pat!(CredentialsError::InvalidViewName(_)))
        );
        expect_that!(
            broker.mint_at("sales", "", soon, now),
            err(pat!(CredentialsError::EmptyActivation))
        );
        expect_that!(
            broker.mint_at("sales", "a1", now, now),
            err(pat!(CredentialsError::ExpiryNotInFuture { .. }))
        );
        expect_that!(
            broker.mint_at("sales", "a1", at(1_767_220_000 + 8 * 24 * 3600), now),
            err(pat!(CredentialsError::ExpiryTooFar { .. }))
        );
    }

    #[gtest]
    fn verify_refuses_expired_keys_at_the_second() {
        let broker = broker();
        let credentials = broker
            .mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000))
            .unwrap();
        expect_that!(
            broker.verify(&credentials.access_key_id, at(1_767_225_599)),
            ok(anything())
        );
        expect_that!(
            broker.verify(&credentials.access_key_id, at(1_767_225_600)),
            err(pat!(CredentialsError::Expired(_)))
        );
    }

    #[gtest]
    fn key_ids_parse_only_in_canonical_form() {
        let nonce = activation_nonce("sales", "a1");
        let parses = |id: String| KeyId::parse(&id).is_ok();
        expect_that!(parses(format!("vg1_sales_1767225600_{nonce}")), eq(true));
        expect_that!(parses(format!("vg1_my-view_1767225600_{nonce}")), eq(true));
        expect_that!(parses(format!("vg1_sales_01767225600_{nonce}")), eq(false));
        expect_that!(parses(format!("vg1_sales_+1767225600_{nonce}")), eq(false));
        expect_that!(parses(format!("VG1_sales_1767225600_{nonce}")), eq(false));
        expect_that!(parses(format!("vg1_Sales_1767225600_{nonce}")), eq(false));
        expect_that!(parses(format!("vg1_sa_les_1767225600_{nonce}")), eq(false));
        expect_that!(parses(format!("vg1__1767225600_{nonce}")), eq(false));
        expect_that!(parses(format!("vg1_sales_1767225600_{nonce}x")), eq(false));
        expect_that!(
            parses(format!("vg1_sales_1767225600_{}", &nonce[1..])),
            eq(false)
        );
        expect_that!(
            parses(format!("vg1_sales_1767225600_{}", nonce.to_uppercase())),
            eq(false)
        );
        expect_that!(parses("AKIAIOSFODNN7EXAMPLE".into()), eq(false));
        expect_that!(parses(String::new()), eq(false));
    }

    #[gtest]
    fn base32_matches_rfc_4648() {
        expect_that!(base32(b"foobar"), eq("mzxw6ytboi"));
        expect_that!(base32(b"fooba"), eq("mzxw6ytb"));
    }
}
