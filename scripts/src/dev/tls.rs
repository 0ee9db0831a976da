//! `cargo xtask dev --tls`: HTTPS as in a real deployment. The gateway is
//! `views.localhost` and its views `<view>.views.localhost` (a certificate
//! for `*.localhost` would not do: TLS clients refuse a wildcard directly
//! under a top-level name; Chromium and curl resolve every `*.localhost`
//! name to loopback). A CA of the development stack's own, kept under
//! `<cache>/dev/tls` so that a browser or curl told to trust it once keeps
//! trusting it, issues the certificate for both names; it goes into the
//! Secret the sidecar's `TLS_SECRET` names, which Envoy gets over SDS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::cluster::pki;

/// The gateway's hostname with TLS.
pub const HOSTNAME: &str = "views.localhost";
/// The `kubernetes.io/tls` Secret with the certificate (`TLS_SECRET`).
pub const SECRET: &str = "views-gateway-tls";
const CA_NAME: &str = "views-gateway development CA";

/// The development CA and the certificate it issued for [`HOSTNAME`].
pub struct Files {
    /// The CA certificate to trust (PEM).
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The CA (made once) and a certificate for `views.localhost` and
/// `*.views.localhost` (issued when missing), under `dir`.
pub fn ensure(dir: &Path) -> anyhow::Result<Files> {
    std::fs::create_dir_all(dir)?;
    let files = Files {
        ca: dir.join("ca.crt"),
        certificate: dir.join("gateway.crt"),
        key: dir.join("gateway.key"),
    };
    let ca_key_path = dir.join("ca.key");
    let issuer = if files.ca.exists() && ca_key_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)?;
        Issuer::new(pki::ca_params(CA_NAME)?, key)
    } else {
        let key = KeyPair::generate()?;
        let params = pki::ca_params(CA_NAME)?;
        let certificate = params.self_signed(&key)?;
        // A new CA: whatever the old one issued goes with it.
        let _ = std::fs::remove_file(&files.certificate);
        pki::write(&files.ca, &certificate.pem())?;
        pki::write(&ca_key_path, &key.serialize_pem())?;
        Issuer::new(params, key)
    };
    if !(files.certificate.exists() && files.key.exists()) {
        let mut params = pki::leaf(HOSTNAME, None, ExtendedKeyUsagePurpose::ServerAuth)?;
        params.subject_alt_names = [HOSTNAME.to_owned(), format!("*.{HOSTNAME}")]
            .into_iter()
            .map(|name| Ok(SanType::DnsName(name.try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;
        pki::write(&files.certificate, &certificate.pem())?;
        pki::write(&files.key, &key.serialize_pem())?;
    }
    Ok(files)
}

/// A TLS client that trusts only the CA in `ca` (PEM), for `host`.
pub fn client(ca: &Path, host: &str) -> anyhow::Result<rustls::ClientConnection> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(
        CertificateDer::from_pem_file(ca).with_context(|| format!("reading {}", ca.display()))?,
    )?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(host.to_owned())?,
    )?)
}
