//! The Kubernetes control-plane binaries, built from Go modules.
//!
//! `scripts/kube` is a Go module whose one multi-call binary holds etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kwok and kubectl
//! at the versions of the kwok cluster image `v0.7.0-k8s.v1.33.0`, and the
//! real node's kubelet and kube-proxy (1.33.0). `scripts/kube/coredns` is a
//! module of its own (CoreDNS v1.12.1 cannot share client-go v0.33). Both are
//! built once per content of those modules and cached under
//! `<cache>/kube/<content hash>/`, with one symlink per component of the
//! multi-call binary so each process shows its own name.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{paths, progress};

pub const COMPONENTS: [&str; 8] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "kubelet",
    "kube-proxy",
];

/// The CoreDNS binary (its own module, not a symlink).
pub const COREDNS: &str = "coredns";

/// The source files whose content names a build.
const SOURCES: [&str; 6] = [
    "go.mod",
    "go.sum",
    "main.go",
    "coredns/go.mod",
    "coredns/go.sum",
    "coredns/main.go",
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
    for file in SOURCES {
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
    if COMPONENTS
        .iter()
        .chain([&COREDNS])
        .all(|c| component(&dir, c).exists())
    {
        return Ok(dir);
    }
    let step = progress::step(format!(
        "building Kubernetes and CoreDNS from Go modules into {} (first time only; about 7 minutes on 2 cores)",
        dir.display()
    ));
    std::fs::create_dir_all(&dir)?;
    let module = paths::repo_root().join("scripts").join("kube");
    go_build(&module, LDFLAGS, &dir.join("kube"))?;
    go_build(
        &module.join("coredns"),
        "-ldflags=-s -w",
        &dir.join(COREDNS),
    )?;
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

/// `go build` the module in `module_dir` into `output` (written under a
/// temporary name first, so an interrupted build is never taken as done).
fn go_build(module_dir: &Path, ldflags: &str, output: &Path) -> anyhow::Result<()> {
    let partial = output.with_extension("partial");
    let status = Command::new("go")
        .args(["build", "-trimpath", ldflags, "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(module_dir)
        .status()
        .context("running `go build` (is Go installed?)")?;
    if !status.success() {
        bail!("go build of {} failed ({status})", module_dir.display());
    }
    std::fs::rename(&partial, output)?;
    Ok(())
}

/// Each build is ~230 MB: keep only the current one. Processes still running
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
