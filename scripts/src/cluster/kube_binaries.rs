//! The Kubernetes control-plane binaries, built from Go modules.
//!
//! `scripts/kube` is a Go module whose one multi-call binary holds etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kwok and kubectl
//! at the versions of the kwok cluster image `v0.7.0-k8s.v1.33.0`. It is built
//! once per content of that module and cached under
//! `<cache>/kube/<content hash>/`, with one symlink per component so each
//! process shows its own name.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{paths, progress};

pub const COMPONENTS: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
];

/// Stamp the versions the release builds carry (a plain `go build` reports
/// v0.0.0-master), and strip symbols to keep the binary small.
const LDFLAGS: &str = "-ldflags=-s -w \
    -X k8s.io/component-base/version.gitVersion=v1.33.0 \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=33 \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=v1.33.0 \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=33";

/// The directory holding the binaries for the current Go module content.
pub fn dir() -> anyhow::Result<PathBuf> {
    let module = paths::repo_root().join("scripts").join("kube");
    let mut hash = Sha256::new();
    for file in ["go.mod", "go.sum", "main.go"] {
        let path = module.join(file);
        hash.update(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let digest = hash.finalize();
    let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(paths::cache_dir().join("kube").join(key))
}

/// The path of one component's binary (a symlink to the multi-call binary).
pub fn component(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Build the binaries unless this module content was built before.
pub fn ensure_built() -> anyhow::Result<PathBuf> {
    let dir = dir()?;
    if COMPONENTS.iter().all(|c| component(&dir, c).exists()) {
        return Ok(dir);
    }
    let step = progress::step(format!(
        "building the Kubernetes control plane from Go modules into {} (first time only; about 5 minutes on 2 cores)",
        dir.display()
    ));
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join("kube.partial");
    let status = Command::new("go")
        .args(["build", "-trimpath", LDFLAGS, "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(paths::repo_root().join("scripts").join("kube"))
        .status()
        .context("running `go build` (is Go installed?)")?;
    if !status.success() {
        bail!("go build of scripts/kube failed ({status})");
    }
    std::fs::rename(&partial, dir.join("kube"))?;
    for name in COMPONENTS {
        let link = component(&dir, name);
        if link.exists() {
            std::fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink("kube", &link)?;
    }
    step.done();
    prune_other_builds(&dir);
    Ok(dir)
}

/// Each build is ~170 MB: keep only the current one. Processes still running
/// from an older build keep their (now unlinked) binary until they stop.
fn prune_other_builds(current: &Path) {
    let Some(parent) = current.parent() else {
        return;
    };
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.path() != current {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
