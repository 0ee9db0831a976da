//! The pod runner: the kubelet of `process-node-0`, running that node's pods
//! (RuntimeClass `process`) as real processes at real pod IPs.
//!
//! It owns every pod bound to its node, and nothing else:
//! - the pods' status (phase, IPs, conditions, container status) and the
//!   last step of their graceful deletion;
//! - the process-pod addresses on the pod side of the veth (see
//!   [`network`](super::network)), one per pod while it has a process;
//! - the pod processes: one per pod, started from the binary its image maps to
//!   in `scripts/cluster/process-images.toml`, inside the `views-pods` network
//!   namespace, each in its own process group, logging to
//!   `<logs-dir>/pods/<namespace>_<pod>_<container>.log`;
//! - `<state-dir>/process-groups/`, which lets a restarted runner kill what
//!   an earlier one left behind.
//!
//! It is a minimal but honest kubelet: command, args, env (literal,
//! Secret/ConfigMap keys, `envFrom`, downward-API fields) and `workingDir` come
//! from the pod spec; readiness follows the container's `readinessProbe`
//! (httpGet over plain HTTP, tcpSocket) against the real process; exits honour
//! `restartPolicy`; deleting a pod stops its process group (SIGTERM, the grace
//! period, SIGKILL) before the pod object goes. It does not do volumes,
//! resource limits, security contexts (processes run as the runner's user, in
//! the host's filesystem), liveness/startup probes, init or sidecar containers.
//! A pod it cannot run says why in its status instead.
//!
//! Unlike real pods, process pods share one network namespace: a process
//! must listen on its pod IP (`$(POD_IP)` from the downward API), not on
//! 0.0.0.0, or two pods on the same port collide.

mod env;
mod images;
mod ipam;
mod probe;
mod process;
mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::paths;
use worker::{Shared, Update, Worker};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig with rights over pods, their status, secrets, configmaps and events.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The node whose pods this runner runs.
    #[arg(long, default_value = "process-node-0")]
    pub node: String,
    /// Image → binary mapping [default: scripts/cluster/process-images.toml].
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Where the runner keeps what must survive its own restart.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Pod process logs go to `<logs-dir>/pods/`.
    #[arg(long)]
    pub logs_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod's container cannot be started (yet); `reason` is the
    /// container's waiting reason, as the kubelet would report it.
    #[error("{reason}: {message}")]
    Container {
        reason: &'static str,
        message: String,
    },
    #[error("images file {path}: {message}")]
    ImagesFile { path: PathBuf, message: String },
    #[error("no free process-pod address left")]
    AddressesExhausted,
    #[error("pod network: {0}")]
    Network(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Run until SIGTERM or SIGINT, then stop every pod process.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pod-runner")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))?;
    Ok(())
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let repo_root = paths::repo_root();
    let images_path = args.images.clone().unwrap_or_else(|| {
        repo_root
            .join("scripts")
            .join("cluster")
            .join("process-images.toml")
    });
    // A broken mapping is better reported now than at the first pod.
    images::Images::load(&images_path, &repo_root)?;
    let pod_logs = args.logs_dir.join("pods");
    std::fs::create_dir_all(&pod_logs)
        .with_context(|| format!("creating {}", pod_logs.display()))?;
    let records = process::Records::new(&args.state_dir)?;
    let killed = records.kill_leftovers()?;
    if killed > 0 {
        tracing::info!(killed, "killed pod processes left by an earlier pod runner");
    }

    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: shutting down every pod process");
        let _ = shutdown_tx.send(true);
    });

    let client = client(&args.kubeconfig).await?;
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", args.node);
    let ipam = ipam::Ipam::new();
    let Some(existing) = list_with_retry(&pods, &selector, shutdown.clone()).await else {
        return Ok(());
    };
    reserve_addresses(&ipam, &existing).await;

    let shared = Arc::new(Shared {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "views-pod-runner".into(),
                instance: Some(args.node.clone()),
            },
        ),
        client,
        images_path,
        repo_root,
        pod_logs,
        records,
        ipam,
        spawner: process::Spawner::start(tokio::runtime::Handle::current())?,
    });
    tracing::info!(
        node = args.node,
        pods = existing.len(),
        "pod runner started"
    );
    dispatch(shared, pods, &selector, shutdown).await;
    tracing::info!("pod runner stopped");
    Ok(())
}

async fn client(kubeconfig: &std::path::Path) -> Result<Client, Error> {
    let kubeconfig_error = |source| Error::Kubeconfig {
        path: kubeconfig.to_owned(),
        source,
    };
    let config = kube::config::Kubeconfig::read_from(kubeconfig).map_err(kubeconfig_error)?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .map_err(kubeconfig_error)?;
    Ok(Client::try_from(config)?)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for signals; stop me with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// The node's pods as they are now, retried while the API is not reachable
/// yet; None if told to stop meanwhile.
async fn list_with_retry(
    pods: &Api<Pod>,
    selector: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Vec<Pod>> {
    let params = ListParams::default().fields(selector);
    loop {
        match pods.list(&params).await {
            Ok(list) => return Some(list.items),
            Err(e) => tracing::warn!(error = %e, "listing pods; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
}

/// Keep the addresses live pods already have, and take off the veth any
/// address no pod owns (left by a runner that died without cleaning up).
async fn reserve_addresses(ipam: &ipam::Ipam, existing: &[Pod]) {
    for pod in existing {
        let Some(status) = &pod.status else { continue };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let ip = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
        if let (Some(ip), Some(uid)) = (ip, pod.uid()) {
            ipam.reserve(ip, &uid);
        }
    }
    match ipam::addresses().await {
        Ok(addresses) => {
            for ip in addresses.into_iter().filter(|ip| !ipam.is_owned(*ip)) {
                tracing::info!(%ip, "removing an address no pod owns");
                if let Err(e) = ipam::remove_address(ip).await {
                    tracing::warn!(%ip, error = %e, "removing address");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing pod addresses (is the pod network up?)"),
    }
}

/// Feed watch events to one worker per pod until shutdown, then wait for the
/// workers to stop their processes.
async fn dispatch(
    shared: Arc<Shared>,
    pods: Api<Pod>,
    selector: &str,
    mut shutdown: watch::Receiver<bool>,
) {
    let events =
        watcher(pods, watcher::Config::default().fields(selector)).backoff(WatchBackoff::default());
    let mut events = std::pin::pin!(events);
    let mut workers = Workers {
        shared,
        shutdown: shutdown.clone(),
        updates: HashMap::new(),
        tasks: JoinSet::new(),
    };
    // UIDs seen since the watch (re)started listing.
    let mut relisted: Option<HashSet<String>> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => relisted = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.uid()) {
                        seen.insert(uid);
                    }
                    workers.apply(pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods deleted while the watch was down get no Delete event.
                    workers.gone_unless_in(&relisted.take().unwrap_or_default());
                }
                Some(Ok(watcher::Event::Apply(pod))) => workers.apply(pod),
                Some(Ok(watcher::Event::Delete(pod))) => workers.gone(pod),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch"),
                None => break,
            },
            Some(done) = workers.tasks.join_next(), if !workers.tasks.is_empty() => match done {
                Ok(uid) => {
                    workers.updates.remove(&uid);
                }
                Err(e) => tracing::error!(error = %e, "a pod worker failed"),
            },
        }
    }
    // The workers see the shutdown themselves; their update channels stay
    // open meanwhile so none mistakes the runner stopping for its pod going.
    let stopping = async { while workers.tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(worker::SHUTDOWN_GRACE + Duration::from_secs(5), stopping)
        .await
        .is_err()
    {
        tracing::warn!("some pod workers did not stop in time");
    }
}

/// Retry a broken watch quickly: the API server is local and restarts in
/// seconds (`cluster up` after a crash), while kube's default backoff grows
/// to half a minute, during which no pod on this node would start or stop.
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(2);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(Self::MAX);
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

struct Workers {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    /// By pod UID.
    updates: HashMap<String, watch::Sender<Update>>,
    /// Each worker's task returns its pod's UID.
    tasks: JoinSet<String>,
}

impl Workers {
    /// Hand the pod to its worker, starting one for a pod not seen before.
    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.uid() else { return };
        if let Some(updates) = self.updates.get(&uid) {
            updates.send_replace(Update::Pod(Box::new(pod)));
            return;
        }
        let span = tracing::info_span!(
            "pod",
            pod = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
        );
        let (updates, receiver) = watch::channel(Update::Pod(Box::new(pod.clone())));
        self.updates.insert(uid.clone(), updates);
        let worker = Worker::new(self.shared.clone(), pod, receiver, self.shutdown.clone());
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                worker.run().await;
                uid
            },
            span,
        ));
    }

    fn gone(&mut self, pod: Pod) {
        if let Some(updates) = pod.uid().and_then(|uid| self.updates.remove(&uid)) {
            updates.send_replace(Update::Gone(Box::new(pod)));
        }
    }

    fn gone_unless_in(&mut self, seen: &HashSet<String>) {
        self.updates.retain(|uid, updates| {
            let keep = seen.contains(uid);
            if !keep {
                let (Update::Pod(pod) | Update::Gone(pod)) = updates.borrow().clone();
                updates.send_replace(Update::Gone(pod));
            }
            keep
        });
    }
}
