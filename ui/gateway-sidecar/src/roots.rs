//! The system's CA certificates, which the sidecar needs only for `https`
//! peers: the OpenID Connect provider's discovery document and a lake behind
//! `https`. Which peers are `https` is known from the configuration, so a
//! missing CA bundle is a start-up error naming the setting that needs it,
//! never a panic or an endless retry at the first request. `http` peers get
//! clients that never load the roots (the AWS SDK's default client loads
//! them for every scheme, and its debug builds panic when there are none).

use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error(
        "{setting} is https, but there are no CA certificates to verify it with ({detail}): \
         install the `ca-certificates` package in the image, or mount a PEM bundle and set \
         SSL_CERT_FILE to it"
    )]
    Missing {
        setting: &'static str,
        detail: String,
    },
}

/// The system's CA certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the
/// platform's usual places); empty when there are none.
pub fn system() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::debug!(%error, "CA certificates: a source could not be read");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    roots
}

/// Fail unless there are CA certificates, when `url` (the value of
/// `setting`) is `https`.
pub fn require_for(setting: &'static str, url: &str) -> Result<(), RootsError> {
    if !is_https(url) {
        return Ok(());
    }
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (valid, _) = roots.add_parsable_certificates(loaded.certs);
    if valid > 0 {
        return Ok(());
    }
    let detail = if loaded.errors.is_empty() {
        "none found".to_owned()
    } else {
        loaded
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(RootsError::Missing { setting, detail })
}

/// Whether `url` is an `https` URL (case-insensitive scheme).
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn only_https_needs_roots() {
        expect_that!(is_https("https://lake:9000"), eq(true));
        expect_that!(is_https("HTTPS://lake"), eq(true));
        expect_that!(is_https("http://10.233.0.1:32700"), eq(false));
        expect_that!(is_https("http"), eq(false));
        // http peers never look for certificates
        expect_that!(
            require_for("LAKE_ENDPOINT_URL", "http://lake:9000"),
            ok(anything())
        );
    }
}
