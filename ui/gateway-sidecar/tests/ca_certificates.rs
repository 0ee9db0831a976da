//! Without CA certificates (an image lacking `ca-certificates`): an https
//! peer is a clear start-up error naming the setting, and an http lake works
//! without any. Before, the sidecar's debug build panicked in the AWS SDK's
//! client (`TrustStore configured to enable native roots but no valid root
//! certificates parsed!`) and an https issuer's discovery retried forever.
//!
//! The certificates are taken away with `SSL_CERT_FILE`/`SSL_CERT_DIR`,
//! which the system-roots loader honours: for a child process, and for this
//! test binary's own process in the one test that builds a client here.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_sidecar::credentials::{Upstream, s3_client};
use googletest::prelude::*;

/// A directory with no certificates in it, and an empty bundle file.
fn no_certificates() -> (tempdir::Dir, String, String) {
    let dir = tempdir::Dir::new();
    let file = dir.path.join("empty.pem");
    std::fs::write(&file, b"").expect("an empty bundle");
    let (file, dir_path) = (
        file.to_string_lossy().into_owned(),
        dir.path.to_string_lossy().into_owned(),
    );
    (dir, file, dir_path)
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "ca-certificates-test-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn sidecar_without_certificates(settings: &[(&str, &str)]) -> std::process::Output {
    let (_dir, file, dir) = no_certificates();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-sidecar"))
        .env_clear()
        .env("SSL_CERT_FILE", &file)
        .env("SSL_CERT_DIR", &dir)
        .env("VIEW_IMAGE", "views.dev/duckdb-view:test")
        .env("GATEWAY_HOSTNAME", "views.example")
        // no cluster: were the check not first, the run would end there
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sidecar runs");
    // It must end by itself, soon: before, it retried discovery forever.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("the sidecar's status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("the sidecar's output")
}

/// The sidecar, run with `settings` and no certificates, exits by itself
/// (killed at the deadline: no exit code) naming `setting`, without a panic.
fn expect_start_up_error(settings: &[(&str, &str)], setting: &str) {
    let output = sidecar_without_certificates(settings);
    let stderr = String::from_utf8_lossy(&output.stderr);
    expect_that!(output.status.code(), some(not(eq(0))));
    expect_that!(
        stderr.as_ref(),
        contains_substring(format!(
            "{setting} is https, but there are no CA certificates"
        ))
    );
    expect_that!(stderr.as_ref(), not(contains_substring("panicked")));
}

#[gtest]
fn an_https_issuer_without_certificates_is_a_start_up_error() {
    expect_start_up_error(&[("OIDC_ISSUER", "https://id.example")], "OIDC_ISSUER");
}

#[gtest]
fn an_https_provider_url_without_certificates_is_a_start_up_error() {
    expect_start_up_error(
        &[
            ("OIDC_ISSUER", "http://id.example"),
            ("OIDC_PROVIDER_URL", "https://id.internal"),
        ],
        "OIDC_PROVIDER_URL",
    );
}

#[gtest]
fn an_https_lake_without_certificates_is_a_start_up_error() {
    expect_start_up_error(
        &[
            ("OIDC_ISSUER", "http://id.example"),
            ("CREDENTIALS_LISTEN", "127.0.0.1:0"),
            ("CREDENTIALS_ENDPOINT_URL", "http://gateway-s3:9000"),
            ("LAKE_ENDPOINT_URL", "https://lake.example"),
            ("LAKE_ACCESS_KEY_ID", "id"),
            ("LAKE_SECRET_ACCESS_KEY", "secret"),
        ],
        "LAKE_ENDPOINT_URL",
    );
}

#[gtest]
#[tokio::test]
async fn an_http_lake_needs_no_certificates() {
    let (_dir, file, dir) = no_certificates();
    // SAFETY: the only test of this binary that reads the environment in
    // this process; the others set their children's.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &file);
        std::env::set_var("SSL_CERT_DIR", &dir);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A port nothing listens on: the request fails to connect, as it
    // should, instead of the client panicking while it is built.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address");
    let client = s3_client(&Upstream {
        endpoint: format!("http://{closed}"),
        access_key_id: "id".into(),
        secret_access_key: "secret".into(),
        region: "us-east-1".into(),
    });
    let answer = tokio::spawn(async move { client.list_buckets().send().await }).await;
    expect_that!(answer.is_ok(), eq(true), "the client panicked: {answer:?}");
    expect_that!(
        answer.map(|result| result.is_err()).unwrap_or(false),
        eq(true)
    );
}
