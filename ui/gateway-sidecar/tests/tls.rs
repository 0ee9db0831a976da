//! TLS at the edge with a real Envoy: the certificate comes from a
//! Kubernetes Secret over SDS, and replacing the Secret rotates it without a
//! restart — new connections get the new certificate, an open connection
//! keeps working.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use googletest::prelude::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use test_support::gateway::Gateway;
use test_support::{TestNamespace, eventually};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "views-gateway-tls";

/// A CA, and certificates for the gateway's host and a view's that it
/// issues. (A wildcard for `*.localhost` would not do: TLS clients refuse
/// wildcards directly under a top-level name; a real deployment's
/// `*.views.example.com` is fine.)
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl Authority {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = params
            .self_signed(&key)
            .expect("CA certificate")
            .der()
            .clone();
        Self {
            issuer: Issuer::new(params, key),
            root,
        }
    }

    /// (certificate chain PEM, key PEM, certificate DER).
    fn issue(&self) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec!["localhost".into(), "demo.localhost".into()])
            .expect("certificate");
        let certificate = params.signed_by(&key, &self.issuer).expect("signed");
        (
            certificate.pem(),
            key.serialize_pem(),
            certificate.der().to_vec(),
        )
    }
}

async fn put_secret(client: &kube::Client, namespace: &str, chain: &str, key: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": chain, "tls.key": key},
    }))
    .expect("Secret");
    secrets
        .patch(
            SECRET,
            &PatchParams::apply("tls-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("the TLS Secret");
}

/// A TLS connection to the gateway for `host`, trusting only `root`.
async fn connect(
    port: u16,
    root: &CertificateDer<'static>,
    host: &str,
) -> anyhow::Result<TlsStream<tokio::net::TcpStream>> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(host.to_string())?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

fn served(stream: &TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// One HTTP/1.1 request on an open connection (kept open); its status.
async fn request(
    stream: &mut TlsStream<tokio::net::TcpStream>,
    host: &str,
    path: &str,
) -> anyhow::Result<u16> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    status
        .split_whitespace()
        .nth(1)
        .context("a status line")?
        .parse()
        .context("a status code")
}

#[gtest]
#[tokio::test]
async fn the_certificate_comes_from_its_secret_and_rotates_without_cutting_connections() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let authority = Authority::new();
    let (chain, key, first) = authority.issue();
    put_secret(&client, namespace.name(), &chain, &key).await;
    let plain = test_support::gateway::free_port();
    let plain_listen = format!("127.0.0.1:{plain}");
    let gateway = Gateway::start_with(
        "tls",
        namespace.name(),
        &[("TLS_SECRET", SECRET), ("ENVOY_HTTP_LISTEN", &plain_listen)],
    )
    .await;

    // Served with the Secret's certificate, for the gateway's host and views'.
    let mut open = eventually(WAIT, || async {
        connect(gateway.port, &authority.root, "localhost").await
    })
    .await;
    expect_that!(served(&open), eq(&first));
    expect_that!(
        request(&mut open, "localhost", "/_api/readyz").await.ok(),
        some(eq(200))
    );
    let view_host = connect(gateway.port, &authority.root, "demo.localhost")
        .await
        .expect("a view host");
    expect_that!(served(&view_host), eq(&first));

    // Replace the Secret: new connections get the new certificate…
    let (chain, key, second) = authority.issue();
    put_secret(&client, namespace.name(), &chain, &key).await;
    eventually(WAIT, || async {
        let fresh = connect(gateway.port, &authority.root, "localhost").await?;
        ensure!(served(&fresh) == second, "still the first certificate");
        Ok(())
    })
    .await;
    // …and the connection opened before still works, on the old one.
    expect_that!(served(&open), eq(&first));
    expect_that!(
        request(&mut open, "localhost", "/_api/readyz").await.ok(),
        some(eq(200))
    );

    // A broken Secret keeps the certificate in use.
    put_secret(&client, namespace.name(), "not a certificate", "nor a key").await;
    let still = connect(gateway.port, &authority.root, "localhost")
        .await
        .expect("still served");
    expect_that!(served(&still), eq(&second));
}
