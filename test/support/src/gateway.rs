//! A real gateway for tests: the `gateway-sidecar` binary and Envoy 1.37,
//! started as processes on free loopback ports, with Envoy bootstrapped from
//! `ui/gateway/envoy.yaml` itself and the sidecar authenticated as the
//! `gateway` ServiceAccount with the RBAC of `ui/gateway` applied — so the
//! Role's rules are exercised for real.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::{kubeconfig_path, repo_root, workspace_binary};

/// One gateway replica: an Envoy and its sidecar.
pub struct Gateway {
    pub name: String,
    /// Envoy's gateway listener (`http://<view>.localhost:<port>/`).
    pub port: u16,
    pub admin_port: u16,
    pub ops_port: u16,
    /// Where readiness is probed over plain HTTP: the listener, or with TLS
    /// the plain listener beside it (`ENVOY_HTTP_LISTEN`).
    probe_port: u16,
    sidecar: Option<Child>,
    envoy: Option<Child>,
    sidecar_env: Vec<(String, String)>,
    envoy_args: Vec<String>,
    dir: PathBuf,
}

/// A free loopback port for a process the test is about to start.
///
/// Not `bind(":0")`: the kernel hands out those ports from the ephemeral
/// range, which every outgoing connection on the machine also draws from, so
/// between our release and the child's bind an API-server or Envoy client
/// connection could take it (CI saw exactly that). These come from below the
/// ephemeral range (Linux: 32768–60999), one process-wide sequence started at
/// a per-process offset, each checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT)
}

/// `kubectl` built with the cluster (the only one under the cache).
pub fn kubectl() -> PathBuf {
    let kube_dir = crate::cache_dir().join("kube");
    std::fs::read_dir(&kube_dir)
        .expect("control-plane binaries (cargo xtask cluster up)")
        .flatten()
        .map(|e| e.path().join("kubectl"))
        .find(|p| p.exists())
        .expect("kubectl in the control-plane build")
}

/// kubectl against the local cluster: its stdout, or an error with stdout and
/// stderr. kubectl's own client logs go to stderr and are not the command's
/// output (its websocket exec client may log "Unknown stream id 1, discarding
/// message" after a command's output: a CI run saw it).
pub fn kubectl_output(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .current_dir(repo_root())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "kubectl {}: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout.into_owned())
}

fn run_kubectl(args: &[&str]) -> String {
    kubectl_output(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A kubeconfig for the `gateway` ServiceAccount of `namespace`, after
/// applying `ui/gateway`'s ServiceAccount and RBAC there; the API server at
/// `server` if given (a URL), else the cluster's.
fn service_account_kubeconfig(
    namespace: &str,
    dir: &std::path::Path,
    server: Option<&str>,
) -> PathBuf {
    run_kubectl(&[
        "apply",
        "--namespace",
        namespace,
        "-f",
        "ui/gateway/serviceaccount.yaml",
        "-f",
        "ui/gateway/rbac.yaml",
    ]);
    let token = run_kubectl(&[
        "create",
        "token",
        "gateway",
        "--namespace",
        namespace,
        "--duration=2h",
    ]);
    let admin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kubeconfig_path()).expect("kubeconfig"))
            .expect("JSON kubeconfig");
    let mut cluster = admin["clusters"][0]["cluster"].clone();
    if let Some(server) = server {
        cluster["server"] = server.into();
    }
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "gateway", "user": {"token": token.trim()}}],
        "contexts": [{"name": "gateway", "context": {"cluster": "local", "user": "gateway", "namespace": namespace}}],
        "current-context": "gateway",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).expect("writing kubeconfig");
    path
}

impl Gateway {
    /// Start a gateway replica serving the views of `namespace`.
    pub async fn start(name: &str, namespace: &str) -> Gateway {
        Self::start_with(name, namespace, &[]).await
    }

    /// As [`Gateway::start`], with extra sidecar environment variables.
    pub async fn start_with(name: &str, namespace: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_with_envoy_args(name, namespace, env, &[]).await
    }

    /// As [`Gateway::start_with`], with extra Envoy command-line arguments
    /// (the benchmarks run Envoy with `--concurrency 1`).
    pub async fn start_with_envoy_args(
        name: &str,
        namespace: &str,
        env: &[(&str, &str)],
        envoy_args: &[&str],
    ) -> Gateway {
        Self::launch(name, namespace, env, envoy_args, None).await
    }

    /// As [`Gateway::start_with`], with the sidecar reaching the API server
    /// at `api_server` (a URL: a [`crate::proxy::TcpProxy`] in front of the
    /// cluster's, which serves the same certificate).
    pub async fn start_with_api_server(
        name: &str,
        namespace: &str,
        env: &[(&str, &str)],
        api_server: &str,
    ) -> Gateway {
        Self::launch(name, namespace, env, &[], Some(api_server)).await
    }

    async fn launch(
        name: &str,
        namespace: &str,
        env: &[(&str, &str)],
        envoy_args: &[&str],
        api_server: Option<&str>,
    ) -> Gateway {
        let dir = std::env::temp_dir().join(format!("views-gateway-{namespace}-{name}"));
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let kubeconfig = service_account_kubeconfig(namespace, &dir, api_server);
        let (port, admin_port, ops_port, api_port, xds_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );

        write_bootstrap(&dir, xds_port, api_port, admin_port);

        let mut sidecar_env: Vec<(String, String)> = vec![
            ("KUBECONFIG".into(), kubeconfig.display().to_string()),
            ("GATEWAY_HOSTNAME".into(), "localhost".into()),
            ("VIEWS_NAMESPACE".into(), namespace.into()),
            ("ENVOY_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("GATEWAY_PUBLIC_PORT".into(), port.to_string()),
            ("HTTP_LISTEN".into(), format!("127.0.0.1:{api_port}")),
            ("OPS_LISTEN".into(), format!("127.0.0.1:{ops_port}")),
            ("XDS_LISTEN".into(), format!("127.0.0.1:{xds_port}")),
            ("LOG_JSON".into(), "false".into()),
            (
                "ENVOY_ADMIN_URL".into(),
                format!("http://127.0.0.1:{admin_port}"),
            ),
            // Views started by the activator run the echo server as a real
            // process (tests override these for simulated pods).
            ("VIEW_IMAGE".into(), "views.dev/echo-server:latest".into()),
            ("VIEW_RUNTIME_CLASS".into(), "process".into()),
            ("RUST_LOG".into(), "info,gateway_sidecar=debug".into()),
        ];
        sidecar_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let probe_port = env
            .iter()
            .find(|(k, _)| *k == "ENVOY_HTTP_LISTEN")
            .and_then(|(_, v)| v.parse::<SocketAddr>().ok())
            .map_or(port, |address| address.port());
        let mut gateway = Gateway {
            name: name.into(),
            port,
            admin_port,
            ops_port,
            probe_port,
            sidecar: None,
            envoy: None,
            sidecar_env,
            envoy_args: envoy_args.iter().map(|a| a.to_string()).collect(),
            dir,
        };
        gateway.start_sidecar();
        gateway.start_envoy();
        gateway.wait_ready().await;
        gateway
    }

    fn start_sidecar(&mut self) {
        self.sidecar = Some(
            Command::new(workspace_binary("gateway-sidecar"))
                .envs(
                    self.sidecar_env
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .stdout(Stdio::null())
                .stderr(log_file(&self.dir, "sidecar.log"))
                .spawn()
                .expect("starting gateway-sidecar"),
        );
    }

    fn start_envoy(&mut self) {
        let args: Vec<&str> = self.envoy_args.iter().map(String::as_str).collect();
        self.envoy = Some(spawn_envoy_with(&self.dir, &self.name, &args));
    }

    /// Stop Envoy (SIGKILL: its connections reset, its configuration is lost).
    pub fn kill_envoy(&mut self) {
        if let Some(mut child) = self.envoy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start Envoy again (after [`Gateway::kill_envoy`]: empty, it gets its
    /// configuration from the sidecar) and wait until the replica is ready.
    pub async fn restart_envoy(&mut self) {
        self.kill_envoy();
        self.start_envoy();
        self.wait_ready().await;
    }

    /// Start a killed replica again, sidecar and Envoy, and wait until it
    /// is ready.
    pub async fn restart_sidecar_and_envoy(&mut self) {
        self.kill_sidecar();
        self.kill_envoy();
        self.start_sidecar();
        self.start_envoy();
        self.wait_ready().await;
    }

    /// Stop the sidecar process (SIGKILL: nothing is saved on the way out).
    pub fn kill_sidecar(&mut self) {
        if let Some(mut child) = self.sidecar.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send the sidecar SIGTERM (as Kubernetes does on pod deletion) and
    /// wait up to `limit` for it to exit; its exit status, if it did.
    pub async fn terminate_sidecar(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.sidecar.as_mut()?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("waiting for the sidecar") {
                self.sidecar = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Envoy's access log so far (one JSON line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy-access.log")).unwrap_or_default()
    }

    /// Start the sidecar again (after [`Gateway::kill_sidecar`]) and wait for it.
    pub async fn restart_sidecar(&mut self) {
        self.kill_sidecar();
        self.start_sidecar();
        self.wait_ready().await;
    }

    /// Ready: the sidecar's index is synced and Envoy routes the API.
    /// A process that exits meanwhile fails the wait at once, with its log.
    async fn wait_ready(&mut self) {
        let client = self.client();
        let url = format!("http://localhost:{}/_api/readyz", self.probe_port);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.assert_running();
            let outcome = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => format!("status {}", response.status()),
                Err(error) => format!("{error:#}"),
            };
            if std::time::Instant::now() >= deadline {
                panic!(
                    "gateway {} not ready within 30s: {outcome} (logs in {})",
                    self.name,
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Panic with the process's log if the sidecar or Envoy has exited.
    fn assert_running(&mut self) {
        for (child, log) in [
            (&mut self.sidecar, "sidecar.log"),
            (&mut self.envoy, "envoy.log"),
        ] {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                panic!(
                    "{} of gateway {} exited ({status}); last lines of {}:\n{}",
                    log.trim_end_matches(".log"),
                    self.name,
                    self.dir.join(log).display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }

    /// Create view `name` over the lake's `sales/` through this replica's
    /// API (sign-in off), failing the test unless it answers 201.
    pub async fn create_view(&self, name: &str) {
        let response = self
            .client()
            .post(self.url("localhost", "/_api/views"))
            .json(&serde_json::json!({"name": name, "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}]}))
            .send()
            .await
            .expect("POST /_api/views");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::CREATED,
            "creating view {name}"
        );
    }

    /// `http://<host>:<port><path>` on this replica's Envoy.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    /// The sidecar's ops endpoint (`/metrics`, `/debug/envoys`, …).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    /// An HTTP client resolving every host to loopback, so
    /// `http://<view>.localhost:<port>/` reaches this Envoy with that Host.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Loopback))
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client")
    }

    /// The value of one counter or gauge in the sidecar's `/metrics`
    /// (the sum over all label sets that contain `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self
            .client()
            .get(self.ops_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Wait until this replica's Envoy routes `view` to a serving endpoint,
    /// without a request to it (which would start a cold view: tests that
    /// bring their own pods wait this way).
    pub async fn wait_serving(&self, view: &str) {
        let cluster = format!("view-{view}");
        crate::eventually(Duration::from_secs(30), || async {
            let envoys = self.debug_envoys().await?;
            let has = envoys[&self.name]["clusters_with_endpoints"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == &cluster));
            anyhow::ensure!(has, "{view} not routed yet: {envoys}");
            Ok(())
        })
        .await;
    }

    /// What every Envoy connected to the sidecar has ACKed (`/debug/envoys`).
    pub async fn debug_envoys(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .client()
            .get(self.ops_url("/debug/envoys"))
            .send()
            .await?
            .json()
            .await?)
    }

    pub fn logs_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The pid of this replica's Envoy, while it runs.
    pub fn envoy_pid(&self) -> Option<u32> {
        self.envoy.as_ref().map(Child::id)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill_sidecar();
        if let Some(mut envoy) = self.envoy.take() {
            let _ = envoy.kill();
            let _ = envoy.wait();
        }
    }
}

/// Write `<dir>/envoy.yaml`: `ui/gateway/envoy.yaml` with its ports moved.
pub fn write_bootstrap(dir: &std::path::Path, xds_port: u16, api_port: u16, admin_port: u16) {
    let bootstrap = std::fs::read_to_string(repo_root().join("ui/gateway/envoy.yaml"))
        .expect("ui/gateway/envoy.yaml")
        .replace("port_value: 18000", &format!("port_value: {xds_port}"))
        .replace("port_value: 8081", &format!("port_value: {api_port}"))
        .replace("port_value: 9901", &format!("port_value: {admin_port}"));
    assert!(
        bootstrap.contains(&format!("port_value: {xds_port}")),
        "envoy.yaml changed shape"
    );
    std::fs::write(dir.join("envoy.yaml"), bootstrap).expect("bootstrap");
}

/// Start Envoy with `<dir>/envoy.yaml` as node `node`, logging to `<dir>/envoy.log`;
/// its stdout (the gateway's access log, one JSON line per request) goes
/// straight to the file `<dir>/envoy-access.log`, never through a pipe this
/// process would have to drain.
pub fn spawn_envoy(dir: &std::path::Path, node: &str) -> Child {
    spawn_envoy_with(dir, node, &[])
}

/// As [`spawn_envoy`], with extra command-line arguments.
pub fn spawn_envoy_with(dir: &std::path::Path, node: &str, extra_args: &[&str]) -> Child {
    Command::new(envoy())
        .arg("--config-path")
        .arg(dir.join("envoy.yaml"))
        .args([
            "--service-node",
            node,
            "--disable-hot-restart",
            "--log-level",
            "warning",
        ])
        .args(extra_args)
        .stdout(log_file(dir, "envoy-access.log"))
        .stderr(log_file(dir, "envoy.log"))
        .spawn()
        .expect("starting envoy")
}

/// A process's log, appended to: a restarted process adds to its
/// predecessor's.
fn log_file(dir: &std::path::Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

/// Envoy 1.37 as installed by the tasks (`cargo xtask lint` installs it).
pub fn envoy() -> PathBuf {
    let path = crate::cache_dir().join("tools/envoy-1.37.0/bin/envoy");
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask lint` installs it",
        path.display()
    );
    path
}

struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addrs)
        })
    }
}
