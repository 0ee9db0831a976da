//! The certificate Envoy terminates TLS with, for `<hostname>` and
//! `*.<hostname>`: a `kubernetes.io/tls` Secret (`TLS_SECRET`), watched like
//! everything else, handed to Envoy over SDS. Replacing the Secret rotates
//! the certificate without a restart: new connections get the new one, open
//! connections keep theirs.
//!
//! A Secret that cannot be used (a key missing, not PEM) is logged and the
//! certificate in use is kept: a botched rotation must not take the gateway
//! down. Without a usable certificate Envoy's TLS listener does not start.

use k8s_openapi::api::core::v1::Secret;

/// The Secret keys of a `kubernetes.io/tls` Secret.
pub const CERTIFICATE_KEY: &str = "tls.crt";
pub const PRIVATE_KEY_KEY: &str = "tls.key";

/// A certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Certificate {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("chain_bytes", &self.chain.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unusable {
    #[error("the TLS Secret does not exist")]
    Missing,
    #[error("the TLS Secret has no `{0}`")]
    NoEntry(&'static str),
    #[error("the TLS Secret's `{0}` is not PEM")]
    NotPem(&'static str),
}

impl Certificate {
    pub fn from_secret(secret: Option<&Secret>) -> Result<Certificate, Unusable> {
        let data = secret.ok_or(Unusable::Missing)?.data.as_ref();
        let entry = |key: &'static str| -> Result<Vec<u8>, Unusable> {
            let bytes = data
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .filter(|b| !b.is_empty())
                .ok_or(Unusable::NoEntry(key))?;
            if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
                return Err(Unusable::NotPem(key));
            }
            Ok(bytes)
        };
        Ok(Certificate {
            chain: entry(CERTIFICATE_KEY)?,
            key: entry(PRIVATE_KEY_KEY)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[gtest]
    fn a_tls_secret_gives_its_chain_and_key_and_anything_else_is_unusable() {
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----\n";
        expect_that!(
            Certificate::from_secret(Some(&secret(&[("tls.crt", pem), ("tls.key", key)]))),
            ok(eq(&Certificate {
                chain: pem.into(),
                key: key.into()
            }))
        );
        expect_that!(
            Certificate::from_secret(Some(&secret(&[("tls.crt", pem)]))),
            err(eq(&Unusable::NoEntry("tls.key")))
        );
        expect_that!(
            Certificate::from_secret(Some(&secret(&[("tls.crt", "hello"), ("tls.key", key)]))),
            err(eq(&Unusable::NotPem("tls.crt")))
        );
        expect_that!(Certificate::from_secret(None), err(eq(&Unusable::Missing)));
        expect_that!(
            format!(
                "{:?}",
                Certificate {
                    chain: vec![1],
                    key: b"secret".to_vec()
                }
            ),
            not(contains_substring("secret"))
        );
    }
}
