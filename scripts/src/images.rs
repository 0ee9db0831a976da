//! `cargo xtask images`: the images of the repository's Dockerfiles, built on
//! this machine with Docker and loaded into the real node's containerd.
//!
//! ```text
//!  debootstrap (Debian mirror) ──► debian:{bookworm,trixie}-slim ─┐ stand-ins of the
//!  host Rust / Node / Envoy, apt ──► rust, node, python, distroless,├ public base images
//!                                    Envoy (scripts/images/*)      ┘ (standins.rs)
//!  ui/gateway-sidecar/Dockerfile ─┐
//!  ui/duckdb-view/Dockerfile ─────┼─ docker build ─► docker save ─► ctr import (k8s.io)
//!  k3d-example/lake/Dockerfile ───┘                                  real-node-0
//! ```
//!
//! No public registry is reachable, so the base images the Dockerfiles name
//! are made here first, under those names. Docker is Debian's `docker.io`
//! (dockerd 20.10 with BuildKit), a daemon of our own that lives only while
//! this task runs:
//!
//! - data root `<cache>/docker`, kept between runs: stand-ins, layers and
//!   the Dockerfiles' cargo cache mounts survive, so a rebuild compiles only
//!   what changed;
//! - exec root [`EXEC_ROOT`], where dockerd starts its own containerd (own
//!   socket, state and root), apart from the real node's;
//! - no bridge and no iptables rules: dockerd leaves the machine's network
//!   and the cluster's rules (kube-proxy, the pod networks) alone. `RUN`
//!   steps use the host's network (`--network host`), which is how they reach
//!   the package registries (apt, npm, PyPI, crates.io) here.
//!
//! One run at a time (a lock file): tests call this task too.

mod standins;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;

use crate::cluster::{self, Component};
use crate::{cmd, paths, progress};

/// Debian's docker CLI (20.10): it drives BuildKit itself. The newer CLI
/// some machines have in /usr/local/bin needs the buildx plugin for that.
const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// dockerd's runtime state and its containerd's sockets (short: socket paths
/// have a length limit).
const EXEC_ROOT: &str = "/run/views-gateway-docker";

/// An image built from one of the repository's Dockerfiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Image {
    GatewaySidecar,
    DuckdbView,
    S3sFs,
}

impl Image {
    pub const ALL: [Image; 3] = [Image::S3sFs, Image::GatewaySidecar, Image::DuckdbView];

    /// The reference the kustomize base and the k3d example run.
    pub fn reference(self) -> String {
        match self {
            Image::GatewaySidecar => "ghcr.io/views-gateway/gateway-sidecar:0.1.0".into(),
            Image::DuckdbView => "ghcr.io/views-gateway/duckdb-view:0.1.0".into(),
            Image::S3sFs => format!(
                "ghcr.io/views-gateway/s3s-fs:{}",
                crate::lake::S3S_FS_VERSION
            ),
        }
    }

    /// (Dockerfile, context), relative to the repository root, as the k3d
    /// example's README builds them.
    fn dockerfile_and_context(self) -> (&'static str, &'static str) {
        match self {
            Image::GatewaySidecar => ("ui/gateway-sidecar/Dockerfile", "."),
            Image::DuckdbView => ("ui/duckdb-view/Dockerfile", "."),
            Image::S3sFs => ("k3d-example/lake/Dockerfile", "k3d-example/lake"),
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The images to build (all when none is named). Envoy's stand-in is
    /// loaded into the node with them when all are built.
    #[arg(value_enum)]
    images: Vec<Image>,
    /// Make the base-image stand-ins again even where they are up to date
    /// (e.g. for the Debian mirror's latest packages).
    #[arg(long)]
    refresh_standins: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let images = if args.images.is_empty() {
        Image::ALL.to_vec()
    } else {
        args.images
    };
    build(&images, args.refresh_standins)
}

/// Make the stand-ins, build `images` from their Dockerfiles and load them
/// into the real node's containerd (which must be running: `cluster up`).
pub fn build(images: &[Image], refresh_standins: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    cmd::ensure_debian_packages(&[
        (DOCKERD, "docker.io"),
        ("/usr/sbin/debootstrap", "debootstrap"),
    ])?;
    let dir = paths::cache_dir().join("images");
    std::fs::create_dir_all(&dir)?;
    let lock = File::create(dir.join("lock"))?;
    lock.lock().context("locking the image builds")?;

    let daemon = Daemon::new()?;
    daemon.start()?;
    let built = build_with(&daemon.docker, &dir, images, refresh_standins);
    let stopped = daemon.stop();
    built?;
    stopped?;
    progress::info(format!(
        "images built and loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn build_with(
    docker: &Docker,
    dir: &Path,
    images: &[Image],
    refresh_standins: bool,
) -> anyhow::Result<()> {
    let envoy = standins::ensure(docker, dir, refresh_standins)?;
    let root = paths::repo_root();
    let mut load: Vec<String> = Vec::new();
    for image in images {
        let reference = image.reference();
        let (dockerfile, context) = image.dockerfile_and_context();
        let step = progress::step(format!("docker build -f {dockerfile} -t {reference}"));
        docker.build(
            &root.join(dockerfile),
            &root.join(context),
            &reference,
            &[],
            &[],
        )?;
        step.done();
        load.push(reference);
    }
    if images.len() == Image::ALL.len() {
        load.push(envoy);
    }
    let step = progress::step(format!(
        "loading into the real node's containerd: {}",
        load.join(", ")
    ));
    let archive = dir.join(format!("load-{}.tar", std::process::id()));
    for reference in &load {
        let saved = docker.run(
            docker
                .command()
                .args(["save", "--output"])
                .arg(&archive)
                .arg(reference),
        );
        let imported = saved.and_then(|()| cluster::import_image_archive(&archive));
        let _ = std::fs::remove_file(&archive);
        imported.with_context(|| format!("loading {reference} into the real node"))?;
    }
    step.done();
    Ok(())
}

/// The docker CLI against our daemon.
pub struct Docker {
    socket: PathBuf,
    config: PathBuf,
}

impl Docker {
    fn command(&self) -> Command {
        let mut command = Command::new(DOCKER);
        command
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            // BuildKit (cache mounts, per-Dockerfile ignore files); a client
            // configuration of our own, not the user's (credential helpers…).
            .env("DOCKER_BUILDKIT", "1")
            .env("DOCKER_CONFIG", &self.config);
        command
    }

    /// Run a docker command with its output shown; a failure names it.
    fn run(&self, command: &mut Command) -> anyhow::Result<()> {
        let status = command.status().context("running docker")?;
        if !status.success() {
            bail!("{command:?} failed ({status})");
        }
        Ok(())
    }

    /// `docker build` with the host's network for `RUN`, plain progress (the
    /// log of CI shows every step), and build arguments and labels.
    fn build(
        &self,
        dockerfile: &Path,
        context: &Path,
        reference: &str,
        build_args: &[(&str, String)],
        labels: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let mut command = self.command();
        command
            .args(["build", "--network", "host", "--progress", "plain"])
            .arg("--file")
            .arg(dockerfile)
            .args(["--tag", reference]);
        for (name, value) in build_args {
            command.arg("--build-arg").arg(format!("{name}={value}"));
        }
        for (name, value) in labels {
            command.arg("--label").arg(format!("{name}={value}"));
        }
        self.run(command.arg(context))
    }

    /// The value of `label` on the local image `reference`, if it exists.
    fn label(&self, reference: &str, label: &str) -> anyhow::Result<Option<String>> {
        let out = self
            .command()
            .args(["image", "inspect", "--format"])
            .arg(format!("{{{{ index .Config.Labels \"{label}\" }}}}"))
            .arg(reference)
            .output()
            .context("running docker image inspect")?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }
}

/// Our dockerd, started for a run and stopped after it.
struct Daemon {
    layout: cluster::Layout,
    component: Component,
    docker: Docker,
}

impl Daemon {
    fn new() -> anyhow::Result<Self> {
        let data_root = paths::cache_dir().join("docker");
        let exec_root = PathBuf::from(EXEC_ROOT);
        let socket = exec_root.join("docker.sock");
        let config_dir = paths::cache_dir().join("images").join("docker-config");
        std::fs::create_dir_all(&config_dir)?;
        // Our settings only, whatever /etc/docker/daemon.json says.
        let daemon_json = config_dir.join("daemon.json");
        std::fs::write(&daemon_json, "{}\n")?;
        // Its pid and log files apart from the cluster's: dockerd is no
        // component of the cluster (`cluster down` neither knows nor stops it).
        let images = paths::cache_dir().join("images");
        let layout = cluster::Layout {
            logs: images.join("logs"),
            run: images.join("run"),
            ..cluster::Layout::new()
        };
        for dir in [&layout.logs, &layout.run] {
            std::fs::create_dir_all(dir)?;
        }
        let path = |p: &Path| p.display().to_string();
        let component = Component {
            name: "dockerd",
            program: PathBuf::from(DOCKERD),
            args: vec![
                format!("--data-root={}", path(&data_root)),
                format!("--exec-root={}", path(&exec_root)),
                format!("--pidfile={}", path(&exec_root.join("dockerd.pid"))),
                format!("--host=unix://{}", path(&socket)),
                format!("--config-file={}", path(&daemon_json)),
                "--storage-driver=overlay2".into(),
                "--bridge=none".into(),
                "--iptables=false".into(),
                "--ip-forward=false".into(),
                "--ip-masq=false".into(),
                "--log-level=warn".into(),
            ],
        };
        Ok(Self {
            layout,
            component,
            docker: Docker {
                socket,
                config: config_dir,
            },
        })
    }

    /// Start dockerd (or keep the one a killed run left, if its flags are
    /// ours) and wait until it answers.
    fn start(&self) -> anyhow::Result<()> {
        match self.component.running(&self.layout) {
            Some(pid) if self.component.args_match(pid) => {}
            running => {
                if running.is_some() {
                    self.component.stop(&self.layout)?;
                }
                self.component.start(&self.layout)?;
            }
        }
        let step = progress::step("starting dockerd (Debian docker.io)");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = self
                .docker
                .command()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|out| out.status.success());
            if answered {
                break;
            }
            if self.component.running(&self.layout).is_none() || Instant::now() > deadline {
                bail!(
                    "dockerd did not start; see {}",
                    self.component.log_file(&self.layout).display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        step.done();
        Ok(())
    }

    fn stop(&self) -> anyhow::Result<()> {
        self.component.stop(&self.layout)?;
        Ok(())
    }
}
