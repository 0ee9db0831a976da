//! The credentials master key, kept in a Kubernetes Secret so every replica
//! derives the same view keys and nothing per view is stored.
//!
//! The Secret holds numbered versions, `data: {v1: <bytes>, v2: <bytes>}`:
//! keys are minted with the highest and verified with the one their id
//! names, so rotating is adding `v<n+1>` and, once the keys derived from
//! `v<n>` have expired, removing it. Replicas read it only through their
//! watch (the index), and the first one to need it creates it with `v1`
//! (create-if-absent: replicas racing to create it collide on
//! AlreadyExists, and everyone's watch brings the winner's).

use std::collections::BTreeMap;
use std::io::Read;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::write::WriteError;
use crate::credentials::{KeyRing, MasterKey};
use crate::view::{MANAGED_BY, MANAGED_BY_LABEL};

/// The entry an earlier version of the gateway wrote (one unversioned key):
/// read as version 1 when there is no `v1`.
const LEGACY_KEY: &str = "master-key";
const LEN: usize = 32;

/// The Secret `name` with a fresh random version 1 (not immutable: rotating
/// adds versions to it).
pub(super) fn new_secret(name: &str) -> Result<Secret, WriteError> {
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "v1".to_string(),
            ByteString(random_key()?),
        )])),
        ..Secret::default()
    })
}

/// The usable versions of a master key Secret (none when it is absent).
/// Entries that are not `v<n>` or whose key is too weak are left out, with
/// an error in the log: every replica leaves out the same ones.
pub fn ring_of(secret: Option<&Secret>) -> KeyRing {
    let Some(data) = secret.and_then(|s| s.data.as_ref()) else {
        return KeyRing::default();
    };
    let mut versions = BTreeMap::new();
    for (entry, bytes) in data {
        let number = match entry.as_str() {
            LEGACY_KEY if !data.contains_key("v1") => Some(1),
            entry => entry
                .strip_prefix('v')
                .filter(|n| !n.starts_with('0'))
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=crate::credentials::MAX_KEY_VERSION).contains(n)),
        };
        let Some(number) = number else {
            tracing::error!(
                entry,
                "the master key Secret has an entry that is not a version (v1, v2, …): ignored"
            );
            continue;
        };
        match MasterKey::from_bytes(&bytes.0) {
            Ok(key) => {
                versions.insert(number, key);
            }
            Err(error) => tracing::error!(
                entry,
                %error,
                "a master key version cannot be used: ignored"
            ),
        }
    }
    KeyRing::new(versions)
}

fn random_key() -> Result<Vec<u8>, WriteError> {
    let mut key = vec![0; LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| WriteError::Refused {
            code: 500,
            message: format!("reading /dev/urandom: {e}"),
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    fn secret(entries: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"another master key, 32 bytes long";

    fn numbers(ring: &KeyRing) -> Vec<u32> {
        ring.versions().iter().map(|v| v.number).collect()
    }

    #[gtest]
    fn versions_are_read_by_number_and_the_highest_is_current() {
        let ring = ring_of(Some(&secret(&[("v2", B), ("v10", A), ("v1", A)])));
        expect_that!(numbers(&ring), eq(&vec![1, 2, 10]));
        expect_that!(ring.current().map(|v| v.number), some(eq(10)));
    }

    #[gtest]
    fn entries_that_are_not_usable_versions_are_left_out() {
        let ring = ring_of(Some(&secret(&[
            ("v0", A),
            ("v01", A),
            ("vx", A),
            ("key", A),
            ("v3", &[1, 2, 3]),
            ("v4", &[0; 40]),
            ("v5", B),
        ])));
        expect_that!(numbers(&ring), eq(&vec![5]));
    }

    #[gtest]
    fn an_earlier_unversioned_key_is_version_1_unless_there_is_a_v1() {
        expect_that!(
            numbers(&ring_of(Some(&secret(&[(LEGACY_KEY, A), ("v2", B)])))),
            eq(&vec![1, 2])
        );
        let both = ring_of(Some(&secret(&[(LEGACY_KEY, A), ("v1", B)])));
        let only_v1 = ring_of(Some(&secret(&[("v1", B)])));
        expect_that!(both, eq(&only_v1));
    }

    #[gtest]
    fn no_secret_no_versions() {
        expect_that!(ring_of(None).current(), none());
    }

    #[gtest]
    fn a_new_secret_has_a_usable_random_version_1_and_can_be_rotated() {
        let first = new_secret("k").unwrap();
        let second = new_secret("k").unwrap();
        expect_that!(first.immutable, none());
        let ring = ring_of(Some(&first));
        expect_that!(numbers(&ring), eq(&vec![1]));
        expect_that!(ring, not(eq(&ring_of(Some(&second)))));
    }
}
