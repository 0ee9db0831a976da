//! The local Kubernetes cluster: a real control plane, kwok, a pod network,
//! a pod runner and a real node, all as processes on this machine.
//!
//! ```text
//!  etcd ◄── kube-apiserver (127.0.0.1:32443) ◄── kube-controller-manager
//!              ▲   ▲   ▲   ▲                     kube-scheduler
//!              │   │   │   └── kwok: heartbeats kwok-node-0 and process-node-0,
//!              │   │   │         simulates pods on kwok-node-0
//!              │   │   │         (scripts/cluster/kwok-stages.yaml)
//!              │   │   └────── pod runner: the "kubelet" of process-node-0; runs
//!              │   │             pods of RuntimeClass `process` as real processes
//!              │   │             in the `views-pods` network namespace
//!              │   └────────── real-node-0 (real_node): kubelet + containerd +
//!              │                 runc, CNI bridge vg-real0, kube-proxy, CoreDNS;
//!              │                 pods of RuntimeClass `runc` as real containers
//!              ├────────────── api-forward (forward): 10.233.0.1:32443, the
//!              │                 `kubernetes` Service's endpoint, for pods
//!              └────────────── tests, `kubectl`, the gateway (admin kubeconfig)
//! ```
//!
//! Everything lives under `<cache>/cluster/` (pki, etcd data, logs, pids,
//! kubeconfig, the real node's state). `up` is idempotent: running components
//! are kept, dead ones are started again, and so are running ones whose flags
//! changed (a new version of this task may need them); `down` stops only the
//! processes it started.

mod components;
pub mod forward;
pub mod image;
mod kube_binaries;
pub mod network;
mod objects;
pub(crate) mod pki;
mod pod_runner;
mod real_node;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::{paths, progress};
pub(crate) use components::Component;
pub(crate) use real_node::unmount_under;

#[derive(Subcommand)]
pub enum Command {
    /// Start the cluster, or reuse it if it is already running.
    Up,
    /// Stop every process `up` started and remove the pod network.
    Down {
        /// Also delete the cluster's data (etcd, PKI, logs).
        #[arg(long)]
        purge: bool,
    },
    /// Show each component, the API and the nodes.
    Status,
    /// Print shell exports for KUBECONFIG and a matching kubectl on PATH:
    /// `eval "$(cargo xtask cluster env)"`.
    Env,
    /// The kubelet of process-node-0 (started by `up`).
    #[command(hide = true)]
    PodRunner(pod_runner::Args),
    /// Forward TCP connections from one address to another (the API server
    /// for pods, started by `up`; `dev --in-cluster`'s load balancer).
    #[command(hide = true)]
    Forward(forward::Args),
    /// Make a FROM-scratch image of binaries (in /bin, with the shared
    /// libraries they load) and import it into the real node's containerd;
    /// prints its reference, `<name>:<content hash>`.
    Image {
        /// The image's name, e.g. views.dev/echo-server.
        name: String,
        /// The binaries it holds.
        #[arg(required = true)]
        binaries: Vec<PathBuf>,
    },
}

/// Where the cluster's files are.
pub struct Layout {
    pub root: PathBuf,
    pub pki: pki::Pki,
    pub logs: PathBuf,
    pub run: PathBuf,
    pub kubeconfig: PathBuf,
    pub kwok_stages: PathBuf,
}

impl Layout {
    pub fn new() -> Self {
        let root = paths::cache_dir().join("cluster");
        Self {
            pki: pki::Pki::new(root.join("pki")),
            logs: root.join("logs"),
            run: root.join("run"),
            kubeconfig: root.join("kubeconfig"),
            kwok_stages: paths::repo_root()
                .join("scripts")
                .join("cluster")
                .join("kwok-stages.yaml"),
            root,
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up => {
            up()?;
            print_usage();
            Ok(())
        }
        Command::Down { purge } => down(purge),
        Command::Status => status(),
        Command::Env => {
            let layout = Layout::new();
            println!("export KUBECONFIG={}", layout.kubeconfig.display());
            println!("export PATH={}:\"$PATH\"", kube_binaries::dir()?.display());
            Ok(())
        }
        Command::PodRunner(args) => pod_runner::run(args),
        Command::Forward(args) => forward::run(args),
        Command::Image { name, binaries } => {
            let spec = image::Spec::for_binaries(&name, &binaries)?;
            println!("{}", image::ensure(&Layout::new(), &spec)?);
            Ok(())
        }
    }
}

/// Import an image archive (`docker save`'s, or an OCI layout's) into the
/// real node's containerd, where the kubelet finds it.
pub fn import_image_archive(archive: &std::path::Path) -> anyhow::Result<()> {
    let out = real_node::ctr(&Layout::new())
        .args(["images", "import"])
        .arg(archive)
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr images import: {} (is the real node's containerd running? `cargo xtask cluster up`)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The kubectl matching the cluster (built with it).
pub fn kubectl() -> anyhow::Result<PathBuf> {
    Ok(kube_binaries::dir()?.join("kubectl"))
}

/// The admin kubeconfig of the local cluster.
pub fn kubeconfig() -> PathBuf {
    Layout::new().kubeconfig
}

fn pod_runner_component(layout: &Layout) -> anyhow::Result<Component> {
    Ok(Component {
        name: "pod-runner",
        program: components::this_program()?,
        args: [
            "cluster",
            "pod-runner",
            "--kubeconfig",
            &layout.kubeconfig.display().to_string(),
            "--state-dir",
            &layout.root.join("pod-runner").display().to_string(),
            "--logs-dir",
            &layout.logs.display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
    })
}

/// Every process of the cluster in start order: the control plane, kwok and
/// the pod runner, the real node's, and the API server's forwarder for pods.
fn components(layout: &Layout) -> anyhow::Result<Vec<Component>> {
    let kube_bin = kube_binaries::dir()?;
    let mut all = components::all(layout, &kube_bin, pod_runner_component(layout)?);
    all.extend(real_node::components(layout, &kube_bin));
    all.push(forward::api_server()?);
    Ok(all)
}

/// Bring the cluster up (or confirm it is up) and return once the API is
/// ready, every node is Ready and the default ServiceAccount exists.
pub fn up() -> anyhow::Result<()> {
    let started = Instant::now();
    let layout = Layout::new();
    kube_binaries::ensure_built()?;
    network::up()?;
    for dir in [&layout.root, &layout.logs, &layout.run] {
        std::fs::create_dir_all(dir)?;
    }
    layout.pki.ensure()?;
    write_kubeconfig(&layout)?;
    real_node::prepare(&layout)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let mut restarted = Vec::new();
    for component in components(&layout)? {
        match component.running(&layout) {
            Some(pid) if component.args_match(pid) => {}
            running => {
                if running.is_some() {
                    progress::info(format!("restarting {}: its flags changed", component.name));
                    component.stop(&layout)?;
                }
                component.start(&layout)?;
                restarted.push(component.name);
                match component.name {
                    "etcd" => wait_for_port(components::ETCD_CLIENT_PORT, &component, &layout)?,
                    "kube-apiserver" => {
                        runtime.block_on(objects::wait_for_api(&layout, &component))?
                    }
                    "containerd" => real_node::wait_for_containerd(&layout, &component)?,
                    _ => {}
                }
            }
        }
        if component.name == "containerd" {
            // Before the kubelet starts: every pod's sandbox needs it.
            real_node::ensure_sandbox_image(&layout)?;
        }
    }
    if restarted.is_empty() {
        progress::info("cluster already running: reusing it");
    } else {
        progress::info(format!("started: {}", restarted.join(", ")));
    }
    runtime.block_on(async {
        let client = objects::client(&layout).await?;
        objects::apply(&client).await?;
        objects::wait_until_usable(&client, &layout).await
    })?;
    // A component that died while we waited (a bad flag, a port in use)
    // shows up here rather than as a mysterious failure later.
    for component in components(&layout)? {
        if component.running(&layout).is_none() {
            bail!(
                "{} exited; see {}",
                component.name,
                component.log_file(&layout).display()
            );
        }
    }
    progress::info(format!(
        "cluster ready in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn down(purge: bool) -> anyhow::Result<()> {
    let layout = Layout::new();
    let step = progress::step("stopping the local cluster");
    let kube_bin = kube_binaries::dir()?;
    real_node::down(&layout, &real_node::components(&layout, &kube_bin))?;
    for component in components(&layout)?.iter().rev() {
        if component.stop(&layout)? {
            progress::info(format!("stopped {}", component.name));
        }
    }
    network::down()?;
    if purge && layout.root.exists() {
        std::fs::remove_dir_all(&layout.root)
            .with_context(|| format!("removing {}", layout.root.display()))?;
        progress::info(format!("removed {}", layout.root.display()));
    }
    step.done();
    Ok(())
}

fn status() -> anyhow::Result<()> {
    let layout = Layout::new();
    let mut all_running = true;
    for component in components(&layout)? {
        match component.running(&layout) {
            Some(pid) => println!("{:<24} running (pid {pid})", component.name),
            None => {
                all_running = false;
                println!("{:<24} stopped", component.name)
            }
        }
    }
    println!(
        "{:<24} {}",
        "pod network",
        if network::is_up() { "up" } else { "down" }
    );
    if all_running {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(objects::print_status(&layout))?;
    }
    println!("logs: {}", layout.logs.display());
    if !all_running {
        bail!("the cluster is not (fully) running: `cargo xtask cluster up` starts it");
    }
    Ok(())
}

fn print_usage() {
    let layout = Layout::new();
    println!("The local cluster is up.");
    println!("  kubeconfig: {}", layout.kubeconfig.display());
    println!("  logs:       {}", layout.logs.display());
    println!("  use it:     eval \"$(cargo xtask cluster env)\" && kubectl get nodes");
    println!("  stop it:    cargo xtask cluster down");
}

fn write_kubeconfig(layout: &Layout) -> anyhow::Result<()> {
    let pki = &layout.pki;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "views-local", "cluster": {
            "server": format!("https://127.0.0.1:{}", components::API_PORT),
            "certificate-authority": pki.ca_cert(),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": pki.admin_cert(),
            "client-key": pki.admin_key(),
        }}],
        "contexts": [{"name": "views-local", "context": {"cluster": "views-local", "user": "admin"}}],
        "current-context": "views-local",
    });
    let contents = serde_json::to_string_pretty(&kubeconfig)?;
    if std::fs::read_to_string(&layout.kubeconfig).ok().as_deref() != Some(contents.as_str()) {
        std::fs::write(&layout.kubeconfig, contents)?;
    }
    Ok(())
}

fn wait_for_port(port: u16, component: &Component, layout: &Layout) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if component.running(layout).is_none() || Instant::now() > deadline {
            bail!(
                "{} did not start listening on port {port}; see {}",
                component.name,
                component.log_file(layout).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
