//! Running other programs from tasks: inherited output, a clear error naming
//! the command when it fails.

use std::process::Command;

use anyhow::{Context, bail};

use crate::paths;

/// Run cargo (the one running this task) in the repository root, in the
/// environment a shell would give it.
///
/// `cargo xtask` runs the tasks through `cargo run`, which sets
/// `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and friends for them. Build scripts
/// that declare `rerun-if-env-changed` on those (ring does) see them change
/// between a build started here and every plain `cargo build`/`cargo test`,
/// including the `cargo run` that builds xtask itself, and rebuild ring and
/// everything above it (kube, the sidecar…: minutes on two cores) each time.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args(args).current_dir(paths::repo_root());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .status()
        .with_context(|| format!("starting `{cargo}`"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Make sure `binary` exists, installing Debian's `package` if it does not
/// (root and the package registry are needed), with progress output.
pub fn ensure_debian_package(binary: &str, package: &str) -> anyhow::Result<()> {
    ensure_debian_packages(&[(binary, package)])
}

/// [`ensure_debian_package`] for several packages at once: one
/// `apt-get update` and one install for all that are missing.
pub fn ensure_debian_packages(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(binary, _)| !std::path::Path::new(binary).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    let step = crate::progress::step(format!("installing {packages} (apt-get install)"));
    let install = [&["install", "-y", "-qq"][..], &missing].concat();
    for args in [&["update", "-qq"][..], &install] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed (root and Debian's package registry are needed)",
                args.join(" ")
            );
        }
    }
    step.done();
    Ok(())
}

/// A virtualenv at `venv` with `requirement` (`package==version`) installed
/// from PyPI.
pub fn python_venv(venv: &std::path::Path, requirement: &str) -> anyhow::Result<()> {
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!("creating the virtualenv {} failed", venv.display());
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ])
        .status()
        .context("running pip")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(venv);
        bail!("pip install {requirement} failed");
    }
    Ok(())
}
