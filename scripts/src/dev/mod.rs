//! `cargo xtask dev`: the whole product on this machine, from nothing.
//!
//! ```text
//!  local cluster (cluster::up)      namespace `views`: ServiceAccount `gateway` + ui/gateway's RBAC
//!  lake (lake::ensure_running)      s3s-fs on 10.233.0.1:32700 with the sample data
//!  OIDC (oidc::ensure_running)      oidc-provider, issuer http://localhost:32702, demo users
//!  namespace `views`                + ConfigMap views-gateway-entitlements: the demo's grants
//!                                   (ui/gateway/entitlements.example.yaml)
//!  gateway-sidecar (target/debug)   as the `gateway` ServiceAccount (a token kubeconfig);
//!                                   sign-in on: bearer tokens and browser sign-in (client
//!                                   `views-gateway`) against the local provider, admins
//!                                   = group views-admins;
//!                                   API 127.0.0.1:8081, xDS 127.0.0.1:18000, ops 127.0.0.1:9090,
//!                                   the views' S3 endpoint on 10.233.0.1:32701 → the lake
//!  Envoy 1.37 (ui/gateway/envoy.yaml, node `dev`) on localhost:8080 (`VIEWS_GATEWAY_PORT`);
//!                                   with --tls: HTTPS for views.localhost on 8443
//!                                   (`VIEWS_GATEWAY_TLS_PORT`), a certificate from a local
//!                                   CA in the Secret views-gateway-tls, plain HTTP on
//!                                   8080 redirecting to it (see `tls`)
//!  view pods                        the real duckdb-view (target/debug), run by the pod
//!                                   runner (RuntimeClass `process`), reading the lake
//!                                   through the sidecar's S3 endpoint
//!  view `demo`                      over `sales/` (table `sales`), ana's: created with her
//!                                   token (from the provider) if absent
//! ```
//!
//! Everything already running is reused, except the gateway replica (Envoy
//! and the sidecar): it restarts, so a dev loop runs the code just built.
//! Where it answers is written to `<cache>/dev/run/gateway.json`
//! ([`Endpoint`]), for the end-to-end suite. `down` stops it all.

mod in_cluster;
mod tls;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use test_support::oidc::{CLI_CLIENT, GATEWAY_CLIENT, GATEWAY_RESOURCE, Oidc};

use crate::cluster::network::HOST_IP;
use crate::cluster::{self, Component, Layout};
use crate::{cmd, envoy, lake, oidc, paths, progress};

const NAMESPACE: &str = "views";
/// The view workload's image; `scripts/cluster/process-images.toml` maps it
/// to `target/debug/duckdb-view` for pods of RuntimeClass `process`.
const VIEW_IMAGE: &str = "ghcr.io/views-gateway/duckdb-view:0.1.0";
/// Where the sidecar serves S3 to view pods: the host's address on the pod
/// network, so pods (in netns `views-pods`) reach it. Next to the lake's 32700.
const CREDENTIALS_PORT: u16 = 32701;
/// The demo view: the sales sample (Parquet, partitioned by region), not its
/// sibling `sales-private/` nor TPC-H.
const DEMO_VIEW: &str = r#"{"name":"demo","subsets":[{"bucket":"lake","prefixes":["sales/"],"tables":{"sales":{"path":"sales/**/*.parquet","format":"parquet"}}}]}"#;
/// The demo view's owner (group analysts, entitled to `sales/`).
const DEMO_OWNER: &str = "ana";
/// Sees and manages every view (`ADMIN_GROUPS`): ada's group.
const ADMIN_GROUP: &str = "views-admins";
/// The demo's grants (who reads which prefixes), applied as they are.
const ENTITLEMENTS: &str = "ui/gateway/entitlements.example.yaml";

fn layout() -> Layout {
    let root = paths::cache_dir().join("dev");
    Layout {
        logs: root.join("logs"),
        run: root.join("run"),
        root,
        ..Layout::new()
    }
}

/// A port from the environment variable `name`, else `default`.
fn port_setting(name: &str, default: u16) -> anyhow::Result<u16> {
    match std::env::var(name) {
        Ok(port) => port
            .parse()
            .with_context(|| format!("{name} must be a port number")),
        Err(_) => Ok(default),
    }
}

/// Plain HTTP or HTTPS (`--tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where the local gateway answers, as [`up`] started it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `http`, or `https` with `--tls`.
    pub scheme: String,
    /// Views are `<view>.<hostname>`, the API `<hostname>/_api/`.
    pub hostname: String,
    /// Envoy's gateway listener: `VIEWS_GATEWAY_PORT` (8080), with TLS
    /// `VIEWS_GATEWAY_TLS_PORT` (8443).
    pub port: u16,
    /// With TLS: plain HTTP, redirected to HTTPS (`VIEWS_GATEWAY_PORT`).
    pub http_port: Option<u16>,
    /// With TLS: the CA that issued the gateway's certificate (trust it).
    pub ca: Option<PathBuf>,
    /// With TLS: the gateway's certificate.
    pub certificate: Option<PathBuf>,
    /// Deployed into the cluster (`--in-cluster`), not host processes.
    #[serde(default)]
    pub in_cluster: bool,
    /// People sign in (all but `--in-cluster --no-sign-in`).
    #[serde(default = "signed_in")]
    pub sign_in: bool,
}

fn signed_in() -> bool {
    true
}

impl Endpoint {
    /// The endpoint `up` makes for `scheme`.
    fn new(scheme: Scheme) -> anyhow::Result<Self> {
        let http = port_setting("VIEWS_GATEWAY_PORT", 8080)?;
        Ok(match scheme {
            Scheme::Http => Self {
                scheme: "http".into(),
                hostname: "localhost".into(),
                port: http,
                http_port: None,
                ca: None,
                certificate: None,
                in_cluster: false,
                sign_in: true,
            },
            Scheme::Https => {
                let files = tls::ensure(&layout().root.join("tls"))?;
                Self {
                    scheme: "https".into(),
                    hostname: tls::HOSTNAME.into(),
                    port: port_setting("VIEWS_GATEWAY_TLS_PORT", 8443)?,
                    http_port: Some(http),
                    ca: Some(files.ca),
                    certificate: Some(files.certificate),
                    in_cluster: false,
                    sign_in: true,
                }
            }
        })
    }

    fn file() -> PathBuf {
        layout().run.join("gateway.json")
    }

    /// The endpoint of the gateway `up` started last, if it still answers.
    pub fn running() -> Option<Self> {
        let endpoint: Self = serde_json::from_slice(&std::fs::read(Self::file()).ok()?).ok()?;
        endpoint.ready().then_some(endpoint)
    }

    /// `<scheme>://[<view>.]<hostname>:<port><path>`.
    pub fn url(&self, view: Option<&str>, path: &str) -> String {
        let host = match view {
            Some(view) => format!("{view}.{}", self.hostname),
            None => self.hostname.clone(),
        };
        format!("{}://{host}:{}{path}", self.scheme, self.port)
    }

    /// Whether the gateway answers `GET /_api/readyz` with 200.
    pub fn ready(&self) -> bool {
        self.request("GET", "/_api/readyz", None, None)
            .is_ok_and(|(status, _)| status == 200)
    }

    /// One HTTP/1.1 request to the gateway's own host on 127.0.0.1, with a
    /// bearer token if given: the status and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        json: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = json.unwrap_or("");
        let content_type = if json.is_some() {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{authorization}{content_type}Content-Length: {}\r\n\r\n{body}",
            self.hostname,
            body.len()
        );
        let mut response = Vec::new();
        match &self.ca {
            Some(ca) => {
                let mut tls = rustls::StreamOwned::new(tls::client(ca, &self.hostname)?, stream);
                tls.write_all(request.as_bytes())?;
                // Envoy closes without close_notify after `Connection: close`.
                if let Err(error) = tls.read_to_end(&mut response)
                    && error.kind() != std::io::ErrorKind::UnexpectedEof
                {
                    return Err(error.into());
                }
            }
            None => {
                stream.write_all(request.as_bytes())?;
                stream.read_to_end(&mut response)?;
            }
        }
        let response = String::from_utf8_lossy(&response);
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP response: {response:.80}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .trim()
            .to_string();
        Ok((status, body))
    }
}

/// The two processes of a gateway replica, as run locally.
fn components() -> anyhow::Result<[Component; 2]> {
    let sidecar = Component {
        name: "gateway-sidecar",
        program: paths::target_dir().join("debug").join("gateway-sidecar"),
        args: vec![],
    };
    let envoy = Component {
        name: "envoy",
        program: envoy::ensure()?,
        args: [
            "--config-path",
            &paths::repo_root()
                .join("ui/gateway/envoy.yaml")
                .display()
                .to_string(),
            "--service-node",
            "dev",
            // Hot restart makes Envoy exit when the process that started it
            // does; we restart by stopping and starting instead.
            "--disable-hot-restart",
            "--log-level",
            "warning",
        ]
        .map(String::from)
        .to_vec(),
    };
    Ok([sidecar, envoy])
}

/// Where the gateway runs: as processes on this machine, or deployed into
/// the local cluster (`--in-cluster`, see [`in_cluster`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Host,
    InCluster,
}

pub fn run(detach: bool, scheme: Scheme, mode: Mode, sign_in: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    match mode {
        Mode::Host if !sign_in => bail!("--no-sign-in goes with --in-cluster only"),
        Mode::Host => print_usage(&up(scheme)?),
        Mode::InCluster => {
            if scheme == Scheme::Https {
                bail!("--in-cluster serves plain HTTP only (no --tls yet)");
            }
            let endpoint = up_in_cluster(sign_in)?;
            in_cluster::print_usage(&endpoint, sign_in);
        }
    }
    progress::info(format!("ready in {:.1}s", started.elapsed().as_secs_f64()));
    if detach {
        println!("Left running; `cargo xtask down` stops it.");
        return Ok(());
    }
    println!("Running in the foreground; Ctrl-C stops everything.");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    progress::info("interrupted");
    down()
}

/// The gateway deployed into the cluster (plain HTTP), with or without
/// sign-in; returns where it answers.
pub fn up_in_cluster(sign_in: bool) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint {
        in_cluster: true,
        sign_in,
        ..Endpoint::new(Scheme::Http)?
    };
    in_cluster::up(&endpoint, sign_in)?;
    Ok(endpoint)
}

/// Remove the in-cluster gateway (its Deployment and load balancer).
pub fn remove_in_cluster() -> anyhow::Result<()> {
    in_cluster::remove()
}

/// Bring the whole stack up (reusing what runs; the gateway replica
/// restarts) and make sure the demo view exists. Returns where the gateway
/// answers.
pub fn up(scheme: Scheme) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::new(scheme)?;
    cluster::up()?;
    // The gateway deployed by `--in-cluster` would serve the same views.
    in_cluster::remove()?;
    let step = progress::step("S3 lake with sample data");
    let lake = lake::ensure_running()?;
    step.done();
    let step = progress::step("OpenID Connect provider (demo users)");
    let provider = oidc::ensure_running()?;
    step.done();
    // duckdb-view links DuckDB's prebuilt library: fetch it before cargo builds.
    crate::duckdb_runtime::ensure()?;

    let step = progress::step("building gateway-sidecar and duckdb-view (debug)");
    cmd::cargo(&[
        "build",
        "--quiet",
        "-p",
        "gateway-sidecar",
        "-p",
        "duckdb-view",
    ])?;
    step.done();

    let layout = layout();
    for dir in [&layout.logs, &layout.run] {
        std::fs::create_dir_all(dir)?;
    }
    let step = progress::step(format!(
        "namespace {NAMESPACE}: the gateway's ServiceAccount and RBAC, the demo's entitlements"
    ));
    let kubeconfig = gateway_kubeconfig(&layout.root)?;
    kubectl(
        &["apply", "--namespace", NAMESPACE, "-f", ENTITLEMENTS],
        None,
    )?;
    step.done();
    if let (Some(certificate), Some(ca)) = (&endpoint.certificate, &endpoint.ca) {
        let step = progress::step(format!(
            "TLS: Secret {} for {} and *.{} (issued by {})",
            tls::SECRET,
            endpoint.hostname,
            endpoint.hostname,
            ca.display()
        ));
        apply_tls_secret(certificate)?;
        step.done();
    }

    let [sidecar, envoy] = components()?;
    let step = progress::step(format!(
        "starting the sidecar and Envoy on {}",
        endpoint.url(None, "")
    ));
    // The replica restarts as a whole, so a dev loop runs the code and the
    // bootstrap just built. Envoy goes first: a sidecar that is told to stop
    // drains its Envoy (which then must not be reused) and waits for it.
    stop_gateway()?;
    sidecar.start_with_env(
        &layout,
        &sidecar_env(&endpoint, &kubeconfig, &lake, &provider)?,
    )?;
    envoy.start(&layout)?;
    wait_until_routed(&endpoint, &[&sidecar, &envoy], &layout)?;
    std::fs::write(Endpoint::file(), serde_json::to_vec_pretty(&endpoint)?)?;
    step.done();

    let step = progress::step(format!("the demo view ({DEMO_OWNER}'s)"));
    create_demo(&endpoint)?;
    step.done();
    Ok(endpoint)
}

/// The certificate and key of `certificate` (its key beside it) as the
/// `kubernetes.io/tls` Secret the sidecar serves to Envoy.
fn apply_tls_secret(certificate: &Path) -> anyhow::Result<()> {
    let key = certificate.with_extension("key");
    let secret = kubectl(
        &[
            "create",
            "secret",
            "tls",
            tls::SECRET,
            "--namespace",
            NAMESPACE,
            "--cert",
            &certificate.display().to_string(),
            "--key",
            &key.display().to_string(),
            "--dry-run=client",
            "-o",
            "json",
        ],
        None,
    )?;
    kubectl(&["apply", "-f", "-"], Some(&secret))?;
    Ok(())
}

/// The sidecar's settings: views in `views`, view pods running the real
/// duckdb-view as processes, their lake credentials served by the sidecar's
/// S3 endpoint on the pod network and re-signed to the local lake; sign-in
/// against the local provider, as against an organisation's (bearer tokens,
/// and browsers through the `views-gateway` client with its secret).
fn sidecar_env(
    endpoint: &Endpoint,
    kubeconfig: &Path,
    lake: &lake::Lake,
    provider: &Oidc,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let secret = provider
        .client(GATEWAY_CLIENT)?
        .secret
        .clone()
        .with_context(|| format!("the provider's client {GATEWAY_CLIENT} has no secret"))?;
    let mut env = vec![
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("GATEWAY_HOSTNAME", endpoint.hostname.clone()),
        ("VIEWS_NAMESPACE", NAMESPACE.into()),
        ("ENVOY_LISTEN", format!("127.0.0.1:{}", endpoint.port)),
        // Not a scheme's default port: `localhost:<port>` is the gateway's
        // own host, and plain HTTP is redirected to HTTPS on it.
        ("GATEWAY_PUBLIC_PORT", endpoint.port.to_string()),
        ("LOG_JSON", "false".into()),
        ("VIEW_IMAGE", VIEW_IMAGE.into()),
        ("VIEW_RUNTIME_CLASS", "process".into()),
        (
            "CREDENTIALS_LISTEN",
            format!("{HOST_IP}:{CREDENTIALS_PORT}"),
        ),
        (
            "CREDENTIALS_ENDPOINT_URL",
            format!("http://{HOST_IP}:{CREDENTIALS_PORT}"),
        ),
        ("LAKE_ENDPOINT_URL", lake.endpoint.clone()),
        ("LAKE_REGION", lake.region.clone()),
        ("LAKE_ACCESS_KEY_ID", lake.access_key_id.clone()),
        ("LAKE_SECRET_ACCESS_KEY", lake.secret_access_key.clone()),
        ("OIDC_ISSUER", provider.issuer.clone()),
        ("OIDC_CLIENT_ID", GATEWAY_CLIENT.into()),
        ("OIDC_CLIENT_SECRET", secret),
        // Access tokens as JWTs for the audience views-gateway (the
        // provider issues them per resource indicator).
        ("OIDC_RESOURCE", GATEWAY_RESOURCE.into()),
        ("OIDC_SCOPES", "openid,profile,email,groups".into()),
        ("ADMIN_GROUPS", ADMIN_GROUP.into()),
    ];
    if let Some(http_port) = endpoint.http_port {
        env.push(("TLS_SECRET", tls::SECRET.into()));
        env.push(("ENVOY_HTTP_LISTEN", format!("127.0.0.1:{http_port}")));
    }
    Ok(env)
}

fn print_usage(endpoint: &Endpoint) {
    let layout = layout();
    let cache = paths::cache_dir();
    // curl needs the local CA with TLS.
    let curl = match &endpoint.ca {
        Some(ca) => format!("curl --cacert {}", ca.display()),
        None => "curl".into(),
    };
    let bearer =
        |user: &str| format!("-H \"Authorization: Bearer $(cargo xtask token {user} | tail -1)\"");
    let demo = endpoint.url(Some("demo"), "/");
    println!();
    println!(
        "The views gateway is running, with sign-in. Open the demo view (DuckDB over s3://lake/sales/):"
    );
    println!();
    println!("  {demo}");
    println!();
    if let (Some(ca), Some(http_port)) = (&endpoint.ca, endpoint.http_port) {
        println!(
            "\
HTTPS, with a certificate for {host} and *.{host} from a local CA: trust it once in
your browser or system ({ca}; Chromium: Settings → Privacy and security → Security →
Manage certificates → Authorities → Import). Plain HTTP on port {http_port} redirects here.",
            host = endpoint.hostname,
            ca = ca.display()
        );
        println!();
    }
    println!(
        "\
It is {DEMO_OWNER}'s: only she (and whom she shares it with) may open it; to anyone else
it answers 404, like a view that does not exist. The browser goes to the provider's
sign-in page first: sign in as {DEMO_OWNER} (password below) and it comes back to the
view. Each host has its own session; the provider remembers you, so other hosts sign
you in without the form. Sign out: {}",
        endpoint.url(Some("demo"), "/_gateway/sign-out")
    );
    println!();
    println!("The API takes the provider's access tokens (analysts such as ana may read sales/,");
    println!("finance such as bob tpch/ and sales-private/; group {ADMIN_GROUP} sees every view):");
    println!(
        "  {curl} {} {}",
        bearer(DEMO_OWNER),
        endpoint.url(None, "/_api/me")
    );
    println!("Create another view (names are 3-8 characters):");
    println!(
        "  {curl} {} -H 'content-type: application/json' {} \\",
        bearer(DEMO_OWNER),
        endpoint.url(None, "/_api/views")
    );
    println!(
        "       -d '{{\"name\":\"euro\",\"subsets\":[{{\"bucket\":\"lake\",\"prefixes\":[\"sales/region=eu/\"],\"tables\":{{\"orders\":{{\"path\":\"sales/region=eu/*.parquet\",\"format\":\"parquet\"}}}}}}]}}'"
    );
    println!(
        "  then open {}   (list: {curl} {} {})",
        endpoint.url(Some("euro"), "/"),
        bearer(DEMO_OWNER),
        endpoint.url(None, "/_api/views")
    );
    println!();
    if let Ok(provider) = Oidc::load() {
        oidc::print_usage(&provider);
        println!();
    }
    println!("Logs:");
    println!("  gateway (sidecar, Envoy)  {}", layout.logs.display());
    for (what, dir) in [
        ("view pods", "cluster/logs/pods"),
        ("cluster", "cluster/logs"),
        ("lake (s3s-fs)", "lake/logs"),
        ("OIDC provider", "oidc/logs"),
    ] {
        println!("  {what:<25} {}", cache.join(dir).display());
    }
    println!(
        "  kubectl:  eval \"$(cargo xtask cluster env)\" && kubectl -n {NAMESPACE} get services,jobs,pods"
    );
}

/// Stop everything `dev` and `test` started: Envoy, the sidecar, the lake,
/// the OIDC provider, the cluster.
pub fn down() -> anyhow::Result<()> {
    stop_gateway()?;
    in_cluster::stop_load_balancer()?;
    if lake::stop()? {
        progress::info("stopped the lake (s3s-fs)");
    }
    if oidc::stop()? {
        progress::info("stopped the OIDC provider");
    }
    cluster::run(cluster::Command::Down { purge: false })
}

/// Stop only the gateway (Envoy and the sidecar); the cluster, the lake and
/// the views stay.
pub fn stop_gateway() -> anyhow::Result<()> {
    let layout = layout();
    let _ = std::fs::remove_file(Endpoint::file());
    for component in components()?.iter().rev() {
        if component.stop(&layout)? {
            progress::info(format!("stopped {}", component.name));
        }
    }
    Ok(())
}

/// Run the local cluster's kubectl as admin, in the repository root, with
/// `stdin` piped in; its stdout.
fn kubectl(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new(cluster::kubectl()?)
        .arg("--kubeconfig")
        .arg(cluster::kubeconfig())
        .args(args)
        .current_dir(paths::repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Apply the views namespace and `ui/gateway`'s ServiceAccount and RBAC, and
/// write `<dir>/sidecar.kubeconfig`, which authenticates as that
/// ServiceAccount (a fresh token: the sidecar has exactly the rights it has
/// in a real cluster).
fn gateway_kubeconfig(dir: &Path) -> anyhow::Result<PathBuf> {
    let namespace = kubectl(
        &[
            "create",
            "namespace",
            NAMESPACE,
            "--dry-run=client",
            "-o",
            "json",
        ],
        None,
    )?;
    kubectl(&["apply", "-f", "-"], Some(&namespace))?;
    kubectl(
        &[
            "apply",
            "--namespace",
            NAMESPACE,
            "-f",
            "ui/gateway/serviceaccount.yaml",
            "-f",
            "ui/gateway/rbac.yaml",
        ],
        None,
    )?;
    // A week: `dev` writes a new one every time it starts the sidecar.
    let token = kubectl(
        &[
            "create",
            "token",
            "gateway",
            "--namespace",
            NAMESPACE,
            "--duration=168h",
        ],
        None,
    )?;
    let admin: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster::kubeconfig())?)?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "gateway", "user": {"token": token.trim()}}],
        "contexts": [{"name": "gateway", "context": {"cluster": "local", "user": "gateway", "namespace": NAMESPACE}}],
        "current-context": "gateway",
    });
    let path = dir.join("sidecar.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string())?;
    Ok(path)
}

/// Wait until Envoy routes the API to a ready sidecar: the whole path works.
fn wait_until_routed(
    endpoint: &Endpoint,
    components: &[&Component],
    layout: &Layout,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if endpoint.ready() {
            return Ok(());
        }
        for component in components {
            if component.running(layout).is_none() {
                bail!(
                    "{} exited; see {}",
                    component.name,
                    component.log_file(layout).display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway is not ready after 60s; see {}",
                layout.logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Create the demo view as its owner, with a token the provider gave her
/// (so it is hers, as if she had created it). The same spec again is fine
/// (201). A `demo` made while sign-in was off (no owner: now only admins
/// could open it) is replaced by an admin; one with another owner or spec is
/// somebody's and stays as it is.
fn create_demo(endpoint: &Endpoint) -> anyhow::Result<()> {
    let owner = token(DEMO_OWNER)?;
    let mut replaced = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) =
            endpoint.request("POST", "/_api/views", Some(&owner), Some(DEMO_VIEW))?;
        match status {
            201 => return Ok(()),
            409 if !replaced => {
                let admin = token(admin_user()?.as_str())?;
                let (_, existing) =
                    endpoint.request("GET", "/_api/views/demo", Some(&admin), None)?;
                let existing: serde_json::Value =
                    serde_json::from_str(&existing).unwrap_or_default();
                if !existing["owner"].is_null() {
                    progress::info(format!(
                        "a view `demo` of {} with another spec exists; left as it is: {body}",
                        existing["owner"]
                    ));
                    return Ok(());
                }
                progress::info("replacing the `demo` made while sign-in was off (it had no owner)");
                let (status, body) =
                    endpoint.request("DELETE", "/_api/views/demo", Some(&admin), None)?;
                if status != 204 && status != 404 {
                    bail!("deleting the ownerless demo view: HTTP {status}: {body}");
                }
                replaced = true;
            }
            // The sidecar's index or Envoy lagging behind, or the old demo
            // still being deleted: retry.
            503 | 409 if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            _ => bail!("creating the demo view: HTTP {status}: {body}"),
        }
    }
}

/// A demo user's access token through the provider's real sign-in flow.
fn token(user: &str) -> anyhow::Result<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(test_support::oidc::token(
            user,
            CLI_CLIENT,
            GATEWAY_RESOURCE,
        ))
        .with_context(|| format!("signing {user} in at the local provider"))
}

/// A demo user in the admins' group.
fn admin_user() -> anyhow::Result<String> {
    Oidc::load()?
        .users
        .into_iter()
        .find(|user| user.groups.iter().any(|group| group == ADMIN_GROUP))
        .map(|user| user.name)
        .with_context(|| format!("no demo user in the group {ADMIN_GROUP}"))
}
