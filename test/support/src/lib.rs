//! Support for integration tests against the local cluster.
//!
//! - [`client`] starts the local cluster if it is not running (reusing it when
//!   it is, so the dev loop stays fast) and returns an admin client.
//! - [`TestNamespace`] is a fresh namespace per test, deleted when dropped.
//! - [`eventually`] polls asynchronous Kubernetes state until it holds or a
//!   deadline passes: tests never sleep to synchronise.
//! - [`gateway::Gateway`] runs a real gateway replica (sidecar + Envoy).
//! - [`oidc`] is the local OpenID Connect provider: its users, and tokens
//!   for them through the real authorization-code flow.
//! - [`proxy::TcpProxy`] cuts a process off from a server, and restores it.
//! - [`api_server::PrivateApiServer`] is an API server of the local cluster
//!   of a test's own, to kill, pause and cut off from etcd.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let client = test_support::client().await;
//! let namespace = test_support::TestNamespace::create(&client).await;
//! let ready = test_support::eventually(Duration::from_secs(10), || async {
//!     anyhow::ensure!(true, "not yet");
//!     Ok(42)
//! })
//! .await;
//! # Ok(()) }
//! ```

pub mod api_server;
pub mod gateway;
pub mod oidc;
pub mod openapi;
pub mod proxy;

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The repository root: the workspace around the package under test.
///
/// Read at run time (`cargo test` sets `CARGO_MANIFEST_DIR`), not baked in
/// with `env!`: two checkouts sharing one `CARGO_TARGET_DIR` reuse each
/// other's unchanged test binaries, which would then act on the other tree.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("a workspace (Cargo.lock) around CARGO_MANIFEST_DIR")
        .to_path_buf()
}

/// A binary built from this workspace (`cargo build` puts it in
/// `target/debug/`); fails the test with a hint when it was not built.
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (cargo xtask test does)",
        path.display()
    );
    path
}

/// The admin kubeconfig `cargo xtask cluster up` writes (the same path the
/// task computes: `$VIEWS_HOME` or `~/.cache/views-gateway`).
pub fn kubeconfig_path() -> PathBuf {
    cache_dir().join("cluster").join("kubeconfig")
}

/// The local cluster's API server (host and port of the admin kubeconfig's
/// `https://` URL).
pub fn api_server_address() -> std::net::SocketAddr {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("reading the kubeconfig");
    let server = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .expect("a server in the kubeconfig");
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut addresses| addresses.next())
        .unwrap_or_else(|| panic!("the API server {server} is not host:port"))
}

/// The machine-wide cache the tasks fill (the same rule as xtask's
/// `paths::cache_dir`): `$VIEWS_HOME`, or `~/.cache/views-gateway`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VIEWS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/views-gateway")
        })
}

/// Bring the cluster up once per test process: `cluster up` reuses a running
/// cluster in well under a second and restarts any component that died.
fn ensure_cluster() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        let xtask = workspace_binary("xtask");
        let output = Command::new(&xtask)
            .args(["cluster", "up"])
            .current_dir(repo_root())
            .output()
            .expect("running xtask cluster up");
        assert!(
            output.status.success(),
            "`cargo xtask cluster up` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// An admin client for the local cluster, starting the cluster if needed.
/// Each call builds a new client: tests run on separate runtimes, and a
/// client's connections belong to the runtime that made them.
pub async fn client() -> kube::Client {
    install_crypto_provider();
    tokio::task::spawn_blocking(ensure_cluster)
        .await
        .expect("cluster start-up panicked");
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    kube::Client::try_from(config).expect("client")
}

/// kube's TLS uses ring; when the workspace is built together the AWS SDK
/// enables aws-lc-rs as well, and rustls then needs to be told which to use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A namespace for one test, deleted (with everything in it) on drop.
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    pub async fn create(client: &kube::Client) -> Self {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.generate_name = Some("test-".into());
        namespace.metadata.labels =
            Some([("views.dev/test".to_string(), "true".to_string())].into());
        let created = namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("creating a test namespace");
        Self {
            name: created.metadata.name.expect("generated name"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be shutting down: a
        // thread with its own runtime and client does the delete.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            install_crypto_provider();
            runtime.block_on(async {
                let kubeconfig = Kubeconfig::read_from(kubeconfig_path())?;
                let config =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await?;
                let namespaces: Api<Namespace> = Api::all(kube::Client::try_from(config)?);
                namespaces
                    .delete(&name, &DeleteParams::background())
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(error)) = deleted {
            eprintln!("deleting test namespace {}: {error}", self.name);
        }
    }
}

/// `n` random bytes (keys and secrets for tests).
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes
}

/// Poll `check` until it returns `Ok`, or panic with its last error once
/// `timeout` has passed. The interval is short: this is how tests wait for
/// asynchronous state instead of sleeping.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => {
                panic!("not true within {timeout:?}: {error:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A real pod process selected by `view`'s Service: the echo server at its
/// pod IP (RuntimeClass `process`), answering `pod: <pod>\nmessage: <message>`;
/// its readiness probe fails for good unless `ready`.
pub fn echo_view_pod(
    pod: &str,
    view: &str,
    message: &str,
    ready: bool,
) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": pod, "labels": {"views.dev/view": view}},
        "spec": {
            "runtimeClassName": "process",
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "view",
                "image": "views.dev/echo-server:latest",
                "args": ["--listen", "$(POD_IP):8080"],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "ECHO_MESSAGE", "value": message},
                ],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {
                    "httpGet": {"path": if ready { "/healthz" } else { "/never-ready" }, "port": "http"},
                    "periodSeconds": 1,
                },
            }],
        },
    }))
    .expect("pod")
}
