//! `cargo xtask dev`: the gateway on this machine. The local cluster, then
//! Envoy 1.37 on `localhost:8080` (`VIEWS_GATEWAY_PORT` to change it) and
//! the sidecar, which talks to the cluster as the `gateway` ServiceAccount
//! with `ui/gateway`'s RBAC — the same rights it has in a real cluster.
//! Views live in the namespace `views`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::{self, Component, Layout};
use crate::{cmd, envoy, paths, progress};

const NAMESPACE: &str = "views";

fn layout() -> Layout {
    let root = paths::cache_dir().join("dev");
    Layout {
        logs: root.join("logs"),
        run: root.join("run"),
        root,
        ..Layout::new()
    }
}

fn gateway_port() -> anyhow::Result<u16> {
    match std::env::var("VIEWS_GATEWAY_PORT") {
        Ok(port) => port
            .parse()
            .context("VIEWS_GATEWAY_PORT must be a port number"),
        Err(_) => Ok(8080),
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

pub fn run(detach: bool) -> anyhow::Result<()> {
    let port = gateway_port()?;
    cluster::up()?;
    // duckdb-view links DuckDB's prebuilt library: fetch it before cargo builds.
    crate::duckdb_runtime::ensure()?;

    let step = progress::step("building gateway-sidecar");
    cmd::cargo(&["build", "--quiet", "-p", "gateway-sidecar"])?;
    step.done();

    let layout = layout();
    for dir in [&layout.logs, &layout.run] {
        std::fs::create_dir_all(dir)?;
    }
    let step = progress::step(format!(
        "namespace {NAMESPACE}: the gateway's ServiceAccount and RBAC"
    ));
    let kubeconfig = service_account_kubeconfig(&layout.root)?;
    step.done();

    let [sidecar, envoy] = components()?;
    let step = progress::step(format!(
        "starting the sidecar and Envoy on localhost:{port}"
    ));
    // The sidecar always restarts so a dev loop runs the code just built.
    sidecar.stop(&layout)?;
    let sidecar_env = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("GATEWAY_HOSTNAME", "localhost".to_string()),
        ("VIEWS_NAMESPACE", NAMESPACE.to_string()),
        ("ENVOY_LISTEN", format!("127.0.0.1:{port}")),
        ("LOG_JSON", "false".to_string()),
    ];
    sidecar.start_with_env(&layout, &sidecar_env)?;
    if envoy.running(&layout).is_none() {
        envoy.start(&layout)?;
    }
    wait_until_routed(port, &[&sidecar, &envoy], &layout)?;
    step.done();

    println!();
    println!("The views gateway is running: http://localhost:{port}/_api/views");
    println!(
        "  create a view:  curl -H 'content-type: application/json' http://localhost:{port}/_api/views \\"
    );
    println!(
        "                    -d '{{\"name\":\"demo\",\"subsets\":[{{\"bucket\":\"lake\",\"prefixes\":[\"sales/\"]}}]}}'"
    );
    println!("  open it:        http://demo.localhost:{port}/");
    println!("  logs:           {}", layout.logs.display());
    println!(
        "  cluster:        eval \"$(cargo xtask cluster env)\" && kubectl -n {NAMESPACE} get services,pods"
    );
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

/// Stop everything `dev` and `test` started: Envoy, the sidecar, the lake,
/// the cluster.
pub fn down() -> anyhow::Result<()> {
    let layout = layout();
    for component in components()?.iter().rev() {
        if component.stop(&layout)? {
            progress::info(format!("stopped {}", component.name));
        }
    }
    if crate::lake::stop()? {
        progress::info("stopped the lake (s3s-fs)");
    }
    cluster::run(cluster::Command::Down { purge: false })
}

fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(cluster::kubectl()?)
        .arg("--kubeconfig")
        .arg(cluster::kubeconfig())
        .args(args)
        .current_dir(paths::repo_root())
        .output()?;
    if !output.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Apply `ui/gateway`'s ServiceAccount and RBAC to the views namespace and
/// write a kubeconfig that authenticates as that ServiceAccount.
fn service_account_kubeconfig(dir: &Path) -> anyhow::Result<PathBuf> {
    let namespace = kubectl(&[
        "create",
        "namespace",
        NAMESPACE,
        "--dry-run=client",
        "-o",
        "json",
    ])?;
    let manifest = dir.join("namespace.json");
    std::fs::write(&manifest, namespace)?;
    kubectl(&["apply", "-f", &manifest.display().to_string()])?;
    kubectl(&[
        "apply",
        "--namespace",
        NAMESPACE,
        "-f",
        "ui/gateway/serviceaccount.yaml",
        "-f",
        "ui/gateway/rbac.yaml",
    ])?;
    let token = kubectl(&[
        "create",
        "token",
        "gateway",
        "--namespace",
        NAMESPACE,
        "--duration=24h",
    ])?;
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
fn wait_until_routed(port: u16, components: &[&Component], layout: &Layout) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if readyz(port).is_ok_and(|status| status == 200) {
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

/// `GET /_api/readyz` through Envoy; the HTTP status.
fn readyz(port: u16) -> anyhow::Result<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream
        .write_all(b"GET /_api/readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12])?.parse()?;
    Ok(status)
}
