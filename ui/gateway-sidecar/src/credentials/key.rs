//! View keys: the access key id says whose key it is, until when, and which
//! version of the master key it was derived from; the secret is derived
//! from the id under that version, so nothing is stored per view and every
//! replica of the sidecar mints and checks the same keys.
//!
//! ```text
//! access key id      vg2_v<n>-<tag>_<view>_<expiry: unix seconds>_<nonce: 16 × base32>
//!                    vg2_v1-mzxw6ytb_sales_1767225600_mfrggzdfmztwq2lk
//! secret access key  hex(HMAC-SHA256(master key v<n>, access key id))   (64 chars)
//! tag                base32(HMAC-SHA256(master key v<n>, "views-gateway/master-key-tag"))[..8]
//! nonce              base32(SHA-256("views-gateway/activation" 0 view 0 activation))[..16]
//! ```
//!
//! The master key is a [`KeyRing`] of numbered versions: keys are minted
//! with the newest and verified with the version their id names. The tag
//! names the version's key material, not only its number, so a replica
//! whose ring is behind (a Secret deleted and created again starts at v1
//! with other bytes) never derives a different secret for the same id: it
//! does not know that version yet, and waits for its watch to bring it.
//!
//! The id uses only `a-z 0-9 - _` (no `/`, which separates the SigV4
//! credential scope), is at most 4 + 17 + 63 + 1 + 11 + 1 + 16 = 113
//! characters (S3 allows 128), and parses back to exactly one (version,
//! view, expiry, nonce): a key id that does not re-encode to itself is
//! refused.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::error::CredentialsError;
use super::metrics::Counters;

/// The format tag every view key id starts with (`vg1` ids named no master
/// key version).
pub const KEY_ID_PREFIX: &str = "vg2";
/// The shortest master key accepted, in bytes.
pub const MIN_MASTER_KEY_LEN: usize = 32;
/// The longest a view key may live: S3's own limit for presigned URLs.
pub const MAX_LIFETIME: SignedDuration = SignedDuration::from_hours(7 * 24);
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 8;
const MAX_VIEW_LEN: usize = 63;
/// The highest master key version number (keeps the id within 128 characters).
pub const MAX_KEY_VERSION: u32 = 999_999_999;

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

    /// The tag that names this key's material in key ids: an HMAC under the
    /// key, so it says nothing about the key.
    fn tag(&self) -> String {
        base32(&self.hmac(b"views-gateway/master-key-tag")[..TAG_LEN * 5 / 8])
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({} bytes, redacted)", self.0.len())
    }
}

/// One version of the master key, as key ids name it: `v<number>-<tag>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion {
    /// The version's number in the master key Secret (`v<number>`).
    pub number: u32,
    /// Names the version's key material ([`MasterKey`]'s tag).
    pub tag: String,
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}-{}", self.number, self.tag)
    }
}

impl KeyVersion {
    fn parse(text: &str) -> Option<Self> {
        let (number, tag) = text.strip_prefix('v')?.split_once('-')?;
        if number.is_empty()
            || number.len() > 9
            || number.starts_with('0')
            || !number.bytes().all(|b| b.is_ascii_digit())
            || tag.len() != TAG_LEN
            || !tag.bytes().all(is_base32)
        {
            return None;
        }
        Some(Self {
            number: number.parse().ok()?,
            tag: tag.to_owned(),
        })
    }
}

/// The versions of the master key the replica knows, by number: keys are
/// minted with the newest and verified with the one their id names. Every
/// replica reads the same ring from the same Kubernetes Secret.
#[derive(Default)]
pub struct KeyRing {
    versions: BTreeMap<u32, (String, MasterKey)>,
}

impl KeyRing {
    /// A ring of these numbered keys (numbers 1..=[`MAX_KEY_VERSION`];
    /// others are left out).
    pub fn new(versions: impl IntoIterator<Item = (u32, MasterKey)>) -> Self {
        Self {
            versions: versions
                .into_iter()
                .filter(|(number, _)| (1..=MAX_KEY_VERSION).contains(number))
                .map(|(number, key)| (number, (key.tag(), key)))
                .collect(),
        }
    }

    /// A ring of one key, version 1 (for tests and tools).
    pub fn single(key: MasterKey) -> Self {
        Self::new([(1, key)])
    }

    /// The version new keys are minted with: the highest number.
    pub fn current(&self) -> Option<KeyVersion> {
        let (number, (tag, _)) = self.versions.last_key_value()?;
        Some(KeyVersion {
            number: *number,
            tag: tag.clone(),
        })
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> Vec<KeyVersion> {
        self.versions
            .iter()
            .map(|(number, (tag, _))| KeyVersion {
                number: *number,
                tag: tag.clone(),
            })
            .collect()
    }

    /// Whether the ring holds this version (number and key material).
    pub fn holds(&self, version: &KeyVersion) -> bool {
        self.key(version).is_some()
    }

    fn key(&self, version: &KeyVersion) -> Option<&MasterKey> {
        self.versions
            .get(&version.number)
            .filter(|(tag, _)| *tag == version.tag)
            .map(|(_, key)| key)
    }

    /// The secret of a key id derived from `version`, if the ring holds it:
    /// hex(HMAC-SHA256(master key, key id)).
    fn secret_for(&self, version: &KeyVersion, access_key_id: &str) -> Option<String> {
        Some(hex(&self.key(version)?.hmac(access_key_id.as_bytes())))
    }
}

impl PartialEq for KeyRing {
    /// The same versions with the same key material (the tags name it).
    fn eq(&self, other: &Self) -> bool {
        self.versions().eq(&other.versions())
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.versions()).finish()
    }
}

/// Where the broker reads the master key versions: the view index (from the
/// watched Secret) in the gateway, a fixed ring in tests and tools.
#[async_trait::async_trait]
pub trait MasterKeys: Send + Sync + 'static {
    /// The ring as last read.
    fn ring(&self) -> Arc<KeyRing>;

    /// The first ring, from now until `timeout`, for which `holds` is true;
    /// the ring as it then stands if none is.
    async fn wait_for(
        &self,
        timeout: Duration,
        holds: &(dyn for<'k> Fn(&'k KeyRing) -> bool + Send + Sync),
    ) -> Arc<KeyRing>;
}

/// A ring that never changes.
#[async_trait::async_trait]
impl MasterKeys for Arc<KeyRing> {
    fn ring(&self) -> Arc<KeyRing> {
        self.clone()
    }

    async fn wait_for(
        &self,
        _timeout: Duration,
        _holds: &(dyn for<'k> Fn(&'k KeyRing) -> bool + Send + Sync),
    ) -> Arc<KeyRing> {
        self.clone()
    }
}

/// How long a replica waits for its watch to bring a master key version it
/// does not know yet (created or rotated a moment ago through another
/// replica) before refusing a key derived from it.
pub const UNKNOWN_VERSION_WAIT: Duration = Duration::from_secs(5);

/// A parsed view key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyId {
    /// The master key version the key's secret is derived from.
    pub version: KeyVersion,
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
        let (version, rest) = id
            .strip_prefix(KEY_ID_PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split_once('_'))
            .ok_or_else(malformed)?;
        let version = KeyVersion::parse(version).ok_or_else(malformed)?;
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
            version,
            view: view.to_owned(),
            expires_at,
            nonce: nonce.to_owned(),
        };
        // Canonical: one key id per (version, view, expiry, nonce).
        if key.encode() != id {
            return Err(malformed());
        }
        Ok(key)
    }

    /// The access key id.
    pub fn encode(&self) -> String {
        format!(
            "{KEY_ID_PREFIX}_{}_{}_{}_{}",
            self.version,
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

/// Mints view keys and derives their secrets, from the master key versions
/// of its [`MasterKeys`].
pub struct Broker {
    keys: Arc<dyn MasterKeys>,
    counters: Arc<Counters>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("keys", &self.keys.ring())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with one fixed master key (version 1): for tests and tools.
    pub fn new(master: MasterKey) -> Self {
        Self::with_keys(Arc::new(Arc::new(KeyRing::single(master))))
    }

    /// A broker reading the master key versions from `keys`.
    pub fn with_keys(keys: Arc<dyn MasterKeys>) -> Self {
        Self {
            keys,
            counters: Default::default(),
        }
    }

    /// The counters of this broker and every [`super::Endpoint`] built on it.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Where the master key versions come from.
    pub fn keys(&self) -> &Arc<dyn MasterKeys> {
        &self.keys
    }

    /// Credentials for `view`'s activation `activation` (e.g. the Job's name
    /// or uid), valid until `expires_at` (rounded down to the second; at most
    /// [`MAX_LIFETIME`] from now), derived from the newest master key
    /// version. Deterministic: minting again for the same activation, expiry
    /// and version gives the same credentials, so replicas that race to
    /// create the activation's Secret write identical data (and a Secret
    /// written before a rotation keeps working: its version still verifies).
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
        let ring = self.keys.ring();
        let version = ring.current().ok_or(CredentialsError::NoMasterKey)?;
        let key = KeyId {
            version,
            view: view.to_owned(),
            expires_at,
            nonce: activation_nonce(view, activation),
        };
        let access_key_id = key.encode();
        let secret_access_key = ring
            .secret_for(&key.version, &access_key_id)
            .expect("the current version is in the ring");
        self.counters.record_minted();
        tracing::info!(
            view,
            activation,
            nonce = %key.nonce,
            version = %key.version,
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

    /// The secret of a parsed key id, derived from the version it names. A
    /// version this replica does not know may have been created or rotated
    /// in a moment ago: wait up to `wait` for the watch to bring it, and
    /// refuse the key only then.
    pub(crate) async fn secret_for(
        &self,
        key: &KeyId,
        wait: Duration,
    ) -> Result<String, CredentialsError> {
        let id = key.encode();
        let mut ring = self.keys.ring();
        if !ring.holds(&key.version) {
            ring = self
                .keys
                .wait_for(wait, &|ring| ring.holds(&key.version))
                .await;
        }
        ring.secret_for(&key.version, &id)
            .ok_or_else(|| CredentialsError::UnknownKeyVersion(key.version.to_string()))
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

    fn master() -> MasterKey {
        MasterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn broker() -> Broker {
        Broker::new(master())
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
    fn a_minted_key_id_names_version_view_expiry_and_nonce() {
        let credentials = broker()
            .mint_at("sales", "sales-abc12", at(1_767_225_600), at(1_767_220_000))
            .unwrap();
        let key = KeyId::parse(&credentials.access_key_id).unwrap();
        expect_that!(
            key.version,
            eq(&KeyVersion {
                number: 1,
                tag: master().tag()
            })
        );
        expect_that!(key.view, eq("sales"));
        expect_that!(key.expires_at, eq(at(1_767_225_600)));
        expect_that!(key.nonce, eq(&activation_nonce("sales", "sales-abc12")));
        expect_that!(
            credentials.access_key_id,
            starts_with(format!("vg2_v1-{}_sales_1767225600_", master().tag()))
        );
        expect_that!(credentials.access_key_id.len(), le(128));
    }

    #[gtest]
    fn the_secret_is_the_hmac_of_the_key_id() {
        let broker = broker();
        let credentials = broker
            .mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000))
            .unwrap();
        let expected = hex(&master().hmac(credentials.access_key_id.as_bytes()));
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
        let v = "v1-abcdefgh";
        expect_that!(
            parses(format!("vg2_{v}_sales_1767225600_{nonce}")),
            eq(true)
        );
        expect_that!(
            parses(format!("vg2_{v}_my-view_1767225600_{nonce}")),
            eq(true)
        );
        expect_that!(
            parses(format!("vg2_v999999999-abcdefgh_sales_1767225600_{nonce}")),
            eq(true)
        );
        expect_that!(
            parses(format!("vg2_{v}_sales_01767225600_{nonce}")),
            eq(false)
        );
        expect_that!(
            parses(format!("vg2_{v}_sales_+1767225600_{nonce}")),
            eq(false)
        );
        expect_that!(
            parses(format!("VG2_{v}_sales_1767225600_{nonce}")),
            eq(false)
        );
        expect_that!(
            parses(format!("vg2_{v}_Sales_1767225600_{nonce}")),
            eq(false)
        );
        expect_that!(
            parses(format!("vg2_{v}_sa_les_1767225600_{nonce}")),
            eq(false)
        );
        expect_that!(parses(format!("vg2_{v}__1767225600_{nonce}")), eq(false));
        expect_that!(
            parses(format!("vg2_{v}_sales_1767225600_{nonce}x")),
            eq(false)
        );
        expect_that!(
            parses(format!("vg2_{v}_sales_1767225600_{}", &nonce[1..])),
            eq(false)
        );
        expect_that!(
            parses(format!("vg2_{v}_sales_1767225600_{}", nonce.to_uppercase())),
            eq(false)
        );
        // The version: v<number without leading zeros>-<8 × base32>.
        for version in [
            "v0-abcdefgh",
            "v01-abcdefgh",
            "v1000000000-abcdefgh",
            "v-abcdefgh",
            "1-abcdefgh",
            "v1-abcdefg",
            "v1-abcdefghi",
            "v1-ABCDEFGH",
            "v1-abcdefg1",
            "v1_abcdefgh",
            "v+1-abcdefgh",
        ] {
            expect_that!(
                parses(format!("vg2_{version}_sales_1767225600_{nonce}")),
                eq(false),
                "{version}"
            );
        }
        // Ids of the format before versions are not view keys any more.
        expect_that!(parses(format!("vg1_sales_1767225600_{nonce}")), eq(false));
        expect_that!(parses("AKIAIOSFODNN7EXAMPLE".into()), eq(false));
        expect_that!(parses(String::new()), eq(false));
    }

    fn ring(keys: &[(u32, &[u8])]) -> Arc<KeyRing> {
        Arc::new(KeyRing::new(
            keys.iter()
                .map(|(n, k)| (*n, MasterKey::from_bytes(k).unwrap())),
        ))
    }

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"another master key, 32 bytes long";
    const C: &[u8] = b"a third master key, also 32 bytes";

    /// The secret `broker` derives for `id`, without waiting for versions.
    async fn secret(broker: &Broker, id: &str) -> Result<String, CredentialsError> {
        broker
            .secret_for(&KeyId::parse(id).unwrap(), Duration::ZERO)
            .await
    }

    #[gtest]
    #[tokio::test]
    async fn keys_are_minted_with_the_newest_version_and_verified_with_theirs() {
        let mint = |broker: &Broker| {
            broker
                .mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000))
                .unwrap()
        };
        let before = Broker::with_keys(Arc::new(ring(&[(1, A)])));
        let old = mint(&before);
        // Rotated: v2 added, v1 kept.
        let after = Broker::with_keys(Arc::new(ring(&[(1, A), (2, B)])));
        let new = mint(&after);
        expect_that!(new.access_key_id, starts_with("vg2_v2-"));
        expect_that!(new.secret_access_key, not(eq(&old.secret_access_key)));
        // Both verify on the rotated replica, each with its own version.
        expect_that!(
            secret(&after, &old.access_key_id).await,
            ok(eq(&old.secret_access_key))
        );
        expect_that!(
            secret(&after, &new.access_key_id).await,
            ok(eq(&new.secret_access_key))
        );
        // A replica still without v2 does not derive anything for it.
        expect_that!(
            secret(&before, &new.access_key_id).await,
            err(pat!(CredentialsError::UnknownKeyVersion(_)))
        );
        // v1 removed: its keys are refused.
        let pruned = Broker::with_keys(Arc::new(ring(&[(2, B)])));
        expect_that!(
            secret(&pruned, &old.access_key_id).await,
            err(pat!(CredentialsError::UnknownKeyVersion(_)))
        );
    }

    #[gtest]
    #[tokio::test]
    async fn a_version_recreated_with_other_bytes_is_another_version() {
        // The Secret deleted and created again: v1 again, new material.
        let old = Broker::with_keys(Arc::new(ring(&[(1, A)])));
        let recreated = Broker::with_keys(Arc::new(ring(&[(1, C)])));
        let minted = recreated
            .mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000))
            .unwrap();
        expect_that!(
            secret(&old, &minted.access_key_id).await,
            err(pat!(CredentialsError::UnknownKeyVersion(_)))
        );
    }

    #[gtest]
    fn without_a_master_key_nothing_is_minted() {
        let empty = Broker::with_keys(Arc::new(Arc::new(KeyRing::default())));
        expect_that!(
            empty.mint_at("sales", "a1", at(1_767_225_600), at(1_767_220_000)),
            err(pat!(CredentialsError::NoMasterKey))
        );
    }

    #[gtest]
    fn rings_compare_and_print_by_version_never_by_key() {
        expect_that!(ring(&[(1, A), (2, B)]), eq(&ring(&[(2, B), (1, A)])));
        expect_that!(ring(&[(1, A)]), not(eq(&ring(&[(1, B)]))));
        let printed = format!("{:?}", ring(&[(1, A)]));
        expect_that!(printed, starts_with("[KeyVersion { number: 1"));
        expect_that!(printed, not(contains_substring("0123")));
    }

    #[gtest]
    fn base32_matches_rfc_4648() {
        expect_that!(base32(b"foobar"), eq("mzxw6ytboi"));
        expect_that!(base32(b"fooba"), eq("mzxw6ytb"));
    }
}
