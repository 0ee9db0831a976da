//! `cargo xtask lint`: formatting, clippy with warnings as errors, generated
//! files up to date, Go formatting of the control-plane module.

use std::process::Command;

use anyhow::bail;

use crate::{cluster, cmd, envoy, paths, progress, schemas};

pub fn run() -> anyhow::Result<()> {
    // duckdb-view links DuckDB's prebuilt library: fetch it before cargo builds.
    crate::duckdb_runtime::ensure()?;
    let step = progress::step("cargo fmt --check");
    cmd::cargo(&["fmt", "--all", "--check"])?;
    step.done();

    let step = progress::step("cargo clippy --all-targets -- -D warnings");
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    step.done();

    schemas::run(true)?;

    let step = progress::step("gofmt scripts/kube");
    let output = Command::new("gofmt")
        .args(["-l", "."])
        .current_dir(paths::repo_root().join("scripts").join("kube"))
        .output()?;
    let unformatted = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !unformatted.trim().is_empty() {
        bail!("gofmt: not formatted: {unformatted}");
    }
    step.done();

    gateway_base()
}

/// `ui/gateway`: kustomize builds it, Envoy accepts its bootstrap, and the
/// API server accepts its manifests (server-side dry run, so admission and
/// schema validation run for real).
fn gateway_base() -> anyhow::Result<()> {
    // Builds the control plane (and so kubectl) on a fresh machine, and gives
    // the dry run an API server to talk to.
    cluster::up()?;
    let kubectl = cluster::kubectl()?;
    let base = paths::repo_root().join("ui").join("gateway");

    let step = progress::step("kubectl kustomize ui/gateway");
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&base)
        .output()?;
    if !output.status.success() {
        bail!("kustomize: {}", String::from_utf8_lossy(&output.stderr));
    }
    step.done();

    let step = progress::step(format!(
        "envoy {} --mode validate ui/gateway/envoy.yaml",
        envoy::VERSION
    ));
    let output = Command::new(envoy::ensure()?)
        .args(["--mode", "validate", "--config-path"])
        .arg(base.join("envoy.yaml"))
        .output()?;
    if !output.status.success() {
        bail!(
            "Envoy rejects ui/gateway/envoy.yaml:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    step.done();

    let step = progress::step("server-side dry-run apply of ui/gateway");
    let output = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(cluster::kubeconfig())
        .args(["apply", "--dry-run=server", "--namespace=default", "-k"])
        .arg(&base)
        .output()?;
    if !output.status.success() {
        bail!(
            "the API server rejects ui/gateway:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    step.done();
    Ok(())
}
