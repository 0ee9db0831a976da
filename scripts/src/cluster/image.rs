//! Container images for the real node, made on this machine: `FROM scratch`
//! images holding a few files (binaries with the shared libraries they load),
//! written as OCI archives and imported into the node's containerd.
//!
//! No public registry is reachable, so nothing is pulled. An image is named
//! by its content (unless a fixed reference is asked for, as the sandbox
//! image is): building the same files again finds the image already imported
//! and costs only the hashing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Layout;
use super::real_node;

/// An image to make: files at paths inside it, and how it runs.
pub struct Spec {
    /// The repository part of the reference, e.g. `views.dev/echo-server`.
    pub name: String,
    /// A fixed tag; `None` tags the image with its content hash.
    pub tag: Option<String>,
    /// Path inside the image → file on this machine.
    pub files: BTreeMap<String, PathBuf>,
    pub entrypoint: Vec<String>,
    /// The user it runs as unless the pod says otherwise (`uid:gid`).
    pub user: Option<String>,
    /// Environment variables besides `PATH=/bin` (`NAME=value`).
    pub env: Vec<String>,
}

impl Spec {
    /// An image holding `binaries` in `/bin` (stripped of debug symbols),
    /// each with the shared libraries it loads at their paths on this machine.
    pub fn for_binaries(name: &str, binaries: &[PathBuf]) -> anyhow::Result<Self> {
        let mut files = BTreeMap::new();
        for binary in binaries {
            let file_name = binary
                .file_name()
                .with_context(|| format!("{} is not a file", binary.display()))?;
            files.insert(
                format!("/bin/{}", file_name.to_string_lossy()),
                binary.clone(),
            );
            for library in shared_libraries(binary)? {
                files.insert(library.display().to_string(), library);
            }
        }
        Ok(Self {
            name: name.to_owned(),
            tag: None,
            files,
            entrypoint: Vec::new(),
            user: None,
            env: Vec::new(),
        })
    }
}

/// The shared libraries `binary` loads (none for a static binary), per `ldd`.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
    // `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no path.
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Make the image and import it into the real node's containerd unless it is
/// there already; returns its reference.
pub fn ensure(layout: &Layout, spec: &Spec) -> anyhow::Result<String> {
    let work = layout
        .root
        .join("images")
        .join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = build_and_import(layout, spec, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn build_and_import(layout: &Layout, spec: &Spec, work: &Path) -> anyhow::Result<String> {
    let rootfs = work.join("rootfs");
    for (inside, source) in &spec.files {
        let target = rootfs.join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a path inside the root"))?;
        if inside.starts_with("/bin/") {
            strip(source, &target)?;
        } else {
            std::fs::copy(source, &target)
                .with_context(|| format!("copying {}", source.display()))?;
        }
    }
    let layout_dir = work.join("oci");
    let blobs = layout_dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_tar = work.join("layer.tar");
    run(Command::new("tar")
        // Fixed order, times and owners: the same files make the same layer.
        .args([
            "--create",
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
        ])
        .arg("--file")
        .arg(&layer_tar)
        .arg("-C")
        .arg(&rootfs)
        .arg("."))?;
    let layer = std::fs::read(&layer_tar)?;
    let layer_digest = store_blob(&blobs, &layer)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Env": std::iter::once("PATH=/bin").chain(spec.env.iter().map(String::as_str)).collect::<Vec<_>>(),
            "User": spec.user.as_deref().unwrap_or(""),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))?;
    let config_digest = store_blob(&blobs, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = store_blob(&blobs, &manifest)?;
    let tag = spec.tag.clone().unwrap_or_else(|| {
        manifest_digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    });
    let reference = format!("{}:{tag}", spec.name);
    if imported(layout, &reference, &manifest_digest)? {
        return Ok(reference);
    }
    std::fs::write(
        layout_dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }))?,
    )?;
    std::fs::write(
        layout_dir.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = work.join("image.tar");
    run(Command::new("tar")
        .arg("--create")
        .arg("--file")
        .arg(&archive)
        .arg("-C")
        .arg(&layout_dir)
        .arg("."))?;
    run(real_node::ctr(layout)
        .args(["images", "import"])
        .arg(&archive))?;
    Ok(reference)
}

/// Copy a binary without its debug information (a debug build's is most of
/// its size), keeping it executable.
fn strip(source: &Path, target: &Path) -> anyhow::Result<()> {
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(target)
        .arg(source))
}

/// Write a blob under its digest; returns the digest.
fn store_blob(blobs: &Path, contents: &[u8]) -> anyhow::Result<String> {
    let hex: String = Sha256::digest(contents)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(blobs.join(&hex), contents)?;
    Ok(format!("sha256:{hex}"))
}

/// Whether containerd holds `reference` with exactly this manifest.
fn imported(layout: &Layout, reference: &str, manifest_digest: &str) -> anyhow::Result<bool> {
    let out = real_node::ctr(layout)
        .args(["images", "ls", &format!("name=={reference}")])
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr images ls: {} (is the real node's containerd running? `cargo xtask cluster up`)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().any(|line| {
        line.split_whitespace().next() == Some(reference) && line.contains(manifest_digest)
    }))
}

/// Run a command; a failure carries its stderr.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Remove the images of repository `name` (e.g. `views.dev/gateway-sidecar`)
/// whose references are not in `keep`: content-tagged images pile up with
/// every rebuild, and the node never collects them. Containers running
/// from a removed image keep running (containerd keeps what they use).
pub fn prune(
    layout: &Layout,
    name: &str,
    keep: &std::collections::BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let out = real_node::ctr(layout)
        .args(["images", "ls", "--quiet"])
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr images ls: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let prefix = format!("{name}:");
    let stale: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|reference| reference.starts_with(&prefix) && !keep.contains(*reference))
        .map(str::to_owned)
        .collect();
    if !stale.is_empty() {
        run(real_node::ctr(layout).args(["images", "rm"]).args(&stale))?;
    }
    Ok(stale)
}
