//! `bench cold`: what the activator adds to a cold start.
//!
//! For each activation: create a view, send one request to its host and
//! take the time its response headers arrive (the first byte). Every step
//! in between that can be seen from outside the sidecar is timestamped, all
//! on this machine's clock:
//!
//! 1. *pod Ready*: the pod runner's own log line (`readiness changed
//!    ready=true`, microseconds): the workload is up;
//! 2. *status PATCH landed*: this benchmark's own watch of the namespace's
//!    Pods sees Ready=True;
//! 3. *EndpointSlice serving*: its watch of EndpointSlices sees the
//!    endpoint serving (kube-controller-manager's EndpointSlice controller);
//! 4. *sidecar index: pod ready / serving endpoint*: when the activator's
//!    driver first saw them in the sidecar's index, and
//! 5. *released*: when it saw every Envoy ACK the view's cluster with a
//!    serving endpoint, which releases the held request (4 and 5 from the
//!    driver's `view ready` log line);
//! 6. *response*: the first byte, proxied by Envoy to the pod.
//!
//! *Ready → first byte* is what happens after the workload is up; *arrival
//! → first byte* adds the Job, scheduling and the process start.
//!
//! Rounds: `--activations` real pod processes (echo-server's release build
//! through the pod runner) one at a time, then `--concurrent` views at once, then
//! `--containers` real containers one at a time, then
//! `--simulated` views at once whose pods kwok simulates, Ready as soon as
//! they are scheduled: no workload start at all, only Kubernetes' and our
//! own overhead. Nothing listens at a simulated pod's address (the pod
//! network refuses connections there, see `cluster::network`), so a
//! released request gets Envoy's own 503 "upstream connect error"; the
//! report says so and times the release itself from the sidecar's log.
//!
//! Real containers run on the real node (`real-node-0`: kubelet, containerd,
//! runc; RuntimeClass `runc`), hardened as every view, from an image of the
//! same echo-server already imported into the node's containerd (made here
//! by [`container_image`]; one unmeasured start first). Their pod Ready is
//! the Pod watch's (the kubelet logs its probe results only at higher
//! verbosity); before it, the Pod watch sees the pod created and scheduled,
//! and containerd's log (nanoseconds) its sandbox started and its container
//! started: *scheduled → container started* is the container runtime's
//! share (kubelet's pod worker, the sandbox with its network, the
//! container), *container started → Ready* the kubelet noticing the
//! container (PLEG), probing it and reporting.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use test_support::TestNamespace;
use test_support::gateway::Gateway;

use super::gateway as gw;
use super::scale::percentile;
use crate::{paths, progress};

pub struct Options {
    pub activations: usize,
    pub concurrent: usize,
    /// Real containers one at a time, and their image on the node.
    pub containers: usize,
    pub container_image: Option<String>,
    pub simulated: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Real pod processes, one activation at a time.
    pub sequential: Vec<Sample>,
    /// Real pod processes, every view requested at once.
    pub concurrent: Vec<Sample>,
    /// kwok-simulated pods (Ready once scheduled), every view at once.
    #[serde(default)]
    pub simulated: Vec<Sample>,
    /// Real containers on the real node, one activation at a time.
    #[serde(default)]
    pub containers: Vec<Sample>,
    /// Their image (already on the node).
    #[serde(default)]
    pub container_image: Option<String>,
    /// What Envoy answered the released simulated requests.
    #[serde(default)]
    pub simulated_answer: Option<String>,
}

/// One activation: when each step was seen, in milliseconds after its
/// request was sent (None: not seen, or not applicable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    pub view: String,
    /// The pod runner's log line (process pods only).
    pub pod_ready: Option<f64>,
    /// Pod watch: the pod first seen, and first seen with a node.
    #[serde(default)]
    pub pod_created: Option<f64>,
    #[serde(default)]
    pub pod_scheduled: Option<f64>,
    /// containerd's log (real containers only): `RunPodSandbox` began, and
    /// `StartContainer` of the view's container returned.
    #[serde(default)]
    pub sandbox_started: Option<f64>,
    #[serde(default)]
    pub container_started: Option<f64>,
    pub pod_watch_ready: Option<f64>,
    pub slice_serving: Option<f64>,
    pub index_pod_ready: Option<f64>,
    pub index_serving: Option<f64>,
    pub released: Option<f64>,
    /// The response's headers: for a real pod, the view's first byte.
    pub response: f64,
    pub status: u16,
}

/// A step of a [`Sample`]: how the report names it, and its time.
pub type Step = (&'static str, fn(&Sample) -> Option<f64>);

/// The steps after the pod is ready, in order.
pub const STEPS: [Step; 6] = [
    ("status PATCH landed (Pod watch: Ready=True)", |s| {
        s.pod_watch_ready
    }),
    ("EndpointSlice serving (EndpointSlice watch)", |s| {
        s.slice_serving
    }),
    ("sidecar index: pod ready", |s| s.index_pod_ready),
    ("sidecar index: serving endpoint", |s| s.index_serving),
    ("every Envoy ACKed: request released", |s| s.released),
    ("response (first byte)", |s| Some(s.response)),
];

/// The steps of a real container before its pod is Ready, in order.
pub const CONTAINER_STEPS: [Step; 4] = [
    ("pod created (Pod watch)", |s| s.pod_created),
    ("pod scheduled (Pod watch: node assigned)", |s| {
        s.pod_scheduled
    }),
    ("sandbox started (containerd: RunPodSandbox)", |s| {
        s.sandbox_started
    }),
    (
        "container started (containerd: StartContainer returned)",
        |s| s.container_started,
    ),
];

/// The container runtime's share of a real container's start: pod
/// scheduled → container started (ms).
pub fn runtime_share(sample: &Sample) -> Option<f64> {
    Some(sample.container_started? - sample.pod_scheduled?)
}

/// Milliseconds from the Pod watch's Ready to the first byte.
pub fn watch_ready_to_first_byte(sample: &Sample) -> Option<f64> {
    Some(sample.response - sample.pod_watch_ready?)
}

/// p50 and p99 of `pick` over the samples that have it.
pub fn p50_p99(samples: &[Sample], pick: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64)> {
    let values: Vec<f64> = samples.iter().filter_map(pick).collect();
    Some((percentile(&values, 50.0)?, percentile(&values, 99.0)?))
}

/// Milliseconds from the pod runner's Ready to the first byte.
pub fn ready_to_first_byte(sample: &Sample) -> Option<f64> {
    Some(sample.response - sample.pod_ready?)
}

pub async fn run(options: &Options) -> anyhow::Result<Results> {
    let client = super::objects::client().await?;
    let mut results = Results::default();
    if options.activations + options.concurrent > 0 {
        let namespace = TestNamespace::create(&client).await;
        let observer = Observer::start(&client, namespace.name()).await?;
        // The release build, as a real view image would be: a debug
        // build's start costs CPU the measured path then lacks.
        let gateway = gw::start_with(
            "bench-cold",
            namespace.name(),
            &[("VIEW_IMAGE", "views.dev/echo-server:release")],
            &[],
        )
        .await?;
        let mut sequential = Vec::new();
        for i in 0..options.activations {
            let answer = request(&gateway, &format!("s{i:03}")).await?;
            answer.expect_status(200)?;
            progress::info(format!(
                "{}: first byte {:.0} ms after the request",
                answer.view,
                millis(answer.sent, answer.answered)
            ));
            sequential.push(answer);
        }
        let concurrent = join_all((0..options.concurrent).map(|i| {
            let gateway = &gateway;
            async move { request(gateway, &format!("c{i:03}")).await }
        }))
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
        for answer in &concurrent {
            answer.expect_status(200)?;
        }
        let sidecar = SidecarLog::read(gateway.logs_dir())?;
        let runner = RunnerLog::read(namespace.name())?;
        results.sequential = fill(sequential, &observer, &sidecar, Pods::Processes(&runner))?;
        results.concurrent = fill(concurrent, &observer, &sidecar, Pods::Processes(&runner))?;
        super::objects::delete_views(&client, namespace.name()).await?;
    }
    if let (true, Some(image)) = (options.containers > 0, &options.container_image) {
        results.containers = containers(&client, image, options.containers).await?;
        results.container_image = Some(image.clone());
    }
    if options.simulated > 0 {
        let namespace = TestNamespace::create(&client).await;
        let observer = Observer::start(&client, namespace.name()).await?;
        // No runtime class: kwok's nodes take the pods, and with no
        // `sim.views.dev/ready-after` they are Ready once scheduled.
        let gateway = gw::start_with(
            "bench-cold-sim",
            namespace.name(),
            &[("VIEW_RUNTIME_CLASS", "")],
            &[],
        )
        .await?;
        let answers = join_all((0..options.simulated).map(|i| {
            let gateway = &gateway;
            async move { request(gateway, &format!("z{i:03}")).await }
        }))
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
        let mut reasons: Vec<String> = Vec::new();
        for answer in &answers {
            let reason = answer.envoy_connect_error()?;
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
        results.simulated_answer = Some(reasons.join("; "));
        let sidecar = SidecarLog::read(gateway.logs_dir())?;
        results.simulated = fill(answers, &observer, &sidecar, Pods::Simulated)?;
        super::objects::delete_views(&client, namespace.name()).await?;
    }
    Ok(results)
}

/// The echo-server's release build as a container image (`FROM scratch`,
/// the binary and its libraries, user 65532), imported into the real node's
/// containerd; images of earlier builds are removed. Call while
/// `paths::target_dir()` is still the real target directory.
pub fn container_image() -> anyhow::Result<String> {
    const NAME: &str = "views.dev/echo-server-bench";
    let layout = crate::cluster::Layout::new();
    let binary = paths::target_dir().join("release").join("echo-server");
    let mut spec = crate::cluster::image::Spec::for_binaries(NAME, std::slice::from_ref(&binary))?;
    spec.entrypoint = vec!["/bin/echo-server".into()];
    spec.user = Some("65532:65532".into());
    let image = crate::cluster::image::ensure(&layout, &spec)?;
    let keep = std::collections::BTreeSet::from([image.clone()]);
    for removed in crate::cluster::image::prune(&layout, NAME, &keep)? {
        progress::info(format!("removed the unused image {removed}"));
    }
    Ok(image)
}

/// `count` real containers on the real node, one activation at a time,
/// after one unmeasured start (the node's first container of this image).
async fn containers(
    client: &kube::Client,
    image: &str,
    count: usize,
) -> anyhow::Result<Vec<Sample>> {
    let namespace = TestNamespace::create(client).await;
    let observer = Observer::start(client, namespace.name()).await?;
    let gateway = gw::start_with(
        "bench-cold-real",
        namespace.name(),
        &[("VIEW_IMAGE", image), ("VIEW_RUNTIME_CLASS", "runc")],
        &[],
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    request(&gateway, "w000").await?.expect_status(200)?;
    remove(&gateway, &pods, "w000").await?;
    let mut answers = Vec::new();
    for i in 0..count {
        let answer = request(&gateway, &format!("r{i:03}")).await?;
        answer.expect_status(200)?;
        progress::info(format!(
            "{} (real container): first byte {:.0} ms after the request",
            answer.view,
            millis(answer.sent, answer.answered)
        ));
        // The node has room for a few views only (CPU requests), and each
        // start should find it as idle as the first.
        remove(&gateway, &pods, &answer.view).await?;
        answers.push(answer);
    }
    let sidecar = SidecarLog::read(gateway.logs_dir())?;
    let containerd = ContainerdLog::read(namespace.name())?;
    let samples = fill(answers, &observer, &sidecar, Pods::Containers(&containerd))?;
    super::objects::delete_views(client, namespace.name()).await?;
    Ok(samples)
}

/// Delete `view` through the API, and its pods at once (the echo server
/// ignores SIGTERM as a container's first process, and would hold its CPU
/// request for the whole grace period); returns once they are gone.
async fn remove(gateway: &Gateway, pods: &Api<Pod>, view: &str) -> anyhow::Result<()> {
    let deleted = gateway
        .client()
        .delete(gateway.url("localhost", &format!("/_api/views/{view}")))
        .send()
        .await?;
    if !deleted.status().is_success() {
        bail!("deleting view {view}: {}", deleted.status());
    }
    let selector = kube::api::ListParams::default().labels(&format!("views.dev/view={view}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = pods.list_metadata(&selector).await?.items;
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("view {view}'s pods were not gone within 60 s");
        }
        for pod in left.iter().filter_map(|p| p.metadata.name.as_deref()) {
            let now = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            match pods.delete(pod, &now).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                other => {
                    other?;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What ran the pods of a round, and the log saying when they started.
#[derive(Clone, Copy)]
enum Pods<'a> {
    Processes(&'a RunnerLog),
    Containers(&'a ContainerdLog),
    Simulated,
}

/// One cold request: when it was sent and answered, and the answer.
struct Answer {
    view: String,
    sent: SystemTime,
    answered: SystemTime,
    status: u16,
    body: String,
}

impl Answer {
    fn expect_status(&self, status: u16) -> anyhow::Result<()> {
        if self.status != status {
            bail!("view {} answered {}: {}", self.view, self.status, self.body);
        }
        Ok(())
    }

    /// Envoy's 503 for a request it could not connect upstream (not the
    /// activator's own 503s, which are JSON): its reason.
    fn envoy_connect_error(&self) -> anyhow::Result<String> {
        // "upstream connect error or disconnect/reset before headers. reset
        // reason: remote connection failure, transport failure reason: …"
        match self.body.strip_prefix("upstream connect error") {
            Some(rest) if self.status == 503 => Ok(format!(
                "503 upstream connect error ({})",
                rest.rsplit("reason: ").next().unwrap_or(rest).trim()
            )),
            _ => bail!(
                "simulated view {}: expected Envoy's 503 upstream connect error, got {}: {}",
                self.view,
                self.status,
                self.body
            ),
        }
    }
}

/// Create `view`, then request it cold.
async fn request(gateway: &Gateway, view: &str) -> anyhow::Result<Answer> {
    let created = gateway
        .client()
        .post(gateway.url("localhost", "/_api/views"))
        .json(&super::objects::view_spec(view))
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creating view {view}: {}", created.status());
    }
    let sent = SystemTime::now();
    let response = gateway
        .client()
        .get(gateway.url(&format!("{view}.localhost"), "/"))
        .timeout(Duration::from_secs(90))
        .send()
        .await?;
    let answered = SystemTime::now();
    let status = response.status().as_u16();
    Ok(Answer {
        view: view.to_owned(),
        sent,
        answered,
        status,
        body: response.text().await.unwrap_or_default(),
    })
}

fn millis(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(after) => after.as_secs_f64() * 1e3,
        Err(before) => -before.duration().as_secs_f64() * 1e3,
    }
}

/// The samples of `answers`, with what the watches and logs saw.
fn fill(
    answers: Vec<Answer>,
    observer: &Observer,
    sidecar: &SidecarLog,
    pods: Pods<'_>,
) -> anyhow::Result<Vec<Sample>> {
    let seen = observer.seen.lock().expect("observer lock");
    answers
        .into_iter()
        .map(|answer| {
            let view = answer.view;
            let at = |time: Option<&SystemTime>| time.map(|t| millis(answer.sent, *t));
            let ready = sidecar.ready.get(&view).with_context(|| {
                format!("no `view ready` line for view {view} in the sidecar's log")
            })?;
            let pod_ready = match pods {
                Pods::Processes(runner) => Some(at(runner.ready.get(&view)).with_context(|| {
                    format!("no Ready line for view {view}'s pod in the pod runner's log")
                })?),
                Pods::Containers(_) | Pods::Simulated => None,
            };
            let (sandbox_started, container_started) = match pods {
                Pods::Containers(containerd) => {
                    let started = containerd.started.get(&view).with_context(|| {
                        format!("no sandbox and container start for view {view}'s pod in containerd's log")
                    })?;
                    (at(Some(&started.sandbox)), at(Some(&started.container)))
                }
                Pods::Processes(_) | Pods::Simulated => (None, None),
            };
            Ok(Sample {
                pod_ready,
                pod_created: at(seen.pod_created.get(&view)),
                pod_scheduled: at(seen.pod_scheduled.get(&view)),
                sandbox_started,
                container_started,
                pod_watch_ready: at(seen.pod_ready.get(&view)),
                slice_serving: at(seen.slice_serving.get(&view)),
                index_pod_ready: at(Some(&ready.pod_ready)),
                index_serving: at(Some(&ready.serving)),
                released: at(Some(&ready.released)),
                response: millis(answer.sent, answer.answered),
                status: answer.status,
                view,
            })
        })
        .collect()
}

/// When this benchmark's own watches first saw each view's pod Ready and
/// its EndpointSlice serving.
#[derive(Default)]
struct Seen {
    pod_created: HashMap<String, SystemTime>,
    pod_scheduled: HashMap<String, SystemTime>,
    pod_ready: HashMap<String, SystemTime>,
    slice_serving: HashMap<String, SystemTime>,
}

/// Watches Pods and EndpointSlices of a namespace while it lives.
struct Observer {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Observer {
    /// Start both watches; returns once both have listed the namespace.
    async fn start(client: &kube::Client, namespace: &str) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let (pods_listed, slices_listed) = (
            tokio::sync::oneshot::channel(),
            tokio::sync::oneshot::channel(),
        );
        let tasks = vec![
            tokio::spawn(observe(pods, seen.clone(), pods_listed.0, |pod: &Pod| {
                let Some(view) = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("views.dev/view"))
                else {
                    return Vec::new();
                };
                let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
                let ready = pod
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                [
                    Some(Kind::PodCreated),
                    scheduled.then_some(Kind::PodScheduled),
                    ready.then_some(Kind::PodReady),
                ]
                .into_iter()
                .flatten()
                .map(|kind| (view.clone(), kind))
                .collect()
            })),
            tokio::spawn(observe(
                slices,
                seen.clone(),
                slices_listed.0,
                |slice: &EndpointSlice| {
                    let serving = slice.endpoints.iter().any(|e| {
                        e.conditions
                            .as_ref()
                            .is_some_and(|c| c.serving == Some(true) && c.terminating != Some(true))
                    });
                    slice
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get("kubernetes.io/service-name"))
                        .and_then(|service| service.strip_prefix("view-"))
                        .filter(|_| serving)
                        .map(|view| (view.to_owned(), Kind::SliceServing))
                        .into_iter()
                        .collect()
                },
            )),
        ];
        let observer = Observer { seen, tasks };
        let listed = async {
            pods_listed.1.await?;
            slices_listed.1.await
        };
        tokio::time::timeout(Duration::from_secs(30), listed)
            .await
            .context("the benchmark's Pod and EndpointSlice watches did not list within 30 s")?
            .context("a watch of the benchmark ended")?;
        Ok(observer)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    PodCreated,
    PodScheduled,
    PodReady,
    SliceServing,
}

/// Record the first time `read` finds each view's step in `api`'s watch.
async fn observe<K>(
    api: Api<K>,
    seen: Arc<Mutex<Seen>>,
    listed: tokio::sync::oneshot::Sender<()>,
    read: fn(&K) -> Vec<(String, Kind)>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut listed = Some(listed);
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(error) => {
                progress::info(format!("benchmark watch: {error}; retrying"));
                continue;
            }
        };
        let now = SystemTime::now();
        let object = match event {
            watcher::Event::InitDone => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                continue;
            }
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => object,
            watcher::Event::Init | watcher::Event::Delete(_) => continue,
        };
        let mut seen = seen.lock().expect("observer lock");
        for (view, kind) in read(&object) {
            let map = match kind {
                Kind::PodCreated => &mut seen.pod_created,
                Kind::PodScheduled => &mut seen.pod_scheduled,
                Kind::PodReady => &mut seen.pod_ready,
                Kind::SliceServing => &mut seen.slice_serving,
            };
            map.entry(view).or_insert(now);
        }
    }
}

/// What the activator's drivers logged when their views became ready.
struct SidecarLog {
    ready: HashMap<String, Ready>,
}

struct Ready {
    pod_ready: SystemTime,
    serving: SystemTime,
    released: SystemTime,
}

impl SidecarLog {
    /// Read `<dir>/sidecar.log` (the text format of the test harness):
    /// `<time> INFO gateway_sidecar::activator: view ready: … view="c001"
    /// pod_ready_ms=… serving_ms=… ready_ms=…`, the times counted from when
    /// the driver took the start up; the line is written at `ready_ms`.
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("sidecar.log");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut ready = HashMap::new();
        for line in text.lines().map(strip_ansi) {
            if !line.contains("view ready:") {
                continue;
            }
            let parsed = (|| {
                let logged = timestamp(&line)?;
                let view = field(&line, "view")?.trim_matches('"').to_owned();
                let ms = |name| field(&line, name)?.parse::<f64>().ok();
                let released = ms("ready_ms")?;
                let before = |at: f64| logged - Duration::from_secs_f64((released - at) / 1e3);
                Some((
                    view,
                    Ready {
                        pod_ready: before(ms("pod_ready_ms")?),
                        serving: before(ms("serving_ms")?),
                        released: logged,
                    },
                ))
            })()
            .with_context(|| {
                format!("unexpected `view ready` line in {}: {line}", path.display())
            })?;
            ready.insert(parsed.0, parsed.1);
        }
        Ok(Self { ready })
    }
}

/// When the pod runner logged each view's pod Ready.
struct RunnerLog {
    ready: HashMap<String, SystemTime>,
}

impl RunnerLog {
    /// The Ready lines of `namespace`'s pods: `<time> INFO
    /// pod{pod="<namespace>/view-<view>-<n>-<suffix>"}: … readiness changed
    /// ready=true`; the first activation's pod of each view.
    fn read(namespace: &str) -> anyhow::Result<Self> {
        let path = paths::cache_dir().join("cluster/logs/pod-runner.log");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let prefix = format!("pod{{pod=\"{namespace}/view-");
        let mut ready = HashMap::new();
        for line in text.lines() {
            if !line.contains("readiness changed ready=true") {
                continue;
            }
            let Some(pod) = line.split_once(&prefix).map(|(_, pod)| pod) else {
                continue;
            };
            let Some(view) = pod.split_once("-1-").map(|(view, _)| view) else {
                continue;
            };
            let at = timestamp(line)
                .with_context(|| format!("unexpected line in {}: {line}", path.display()))?;
            ready.entry(view.to_owned()).or_insert(at);
        }
        Ok(Self { ready })
    }
}

/// When containerd started each view pod's sandbox and container.
struct ContainerdLog {
    started: HashMap<String, Started>,
}

struct Started {
    sandbox: SystemTime,
    container: SystemTime,
}

impl ContainerdLog {
    /// The real node's containerd log (logrus text, nanoseconds), for the
    /// pods of `namespace` (`view-<view>-<n>-<suffix>`, the first activation
    /// of each view):
    /// `time="…" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:<pod>,Uid:…,Namespace:<namespace>,…}"`,
    /// the same `… returns sandbox id \"<sandbox>\""`,
    /// `CreateContainer within sandbox \"<sandbox>\" for &ContainerMetadata{…} returns container id \"<container>\""`,
    /// `StartContainer for \"<container>\" returns successfully`.
    fn read(namespace: &str) -> anyhow::Result<Self> {
        let path = paths::cache_dir().join("cluster/logs/containerd.log");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text, namespace))
    }

    fn parse(text: &str, namespace: &str) -> Self {
        let quoted = |s: &str, after: &str| -> Option<String> {
            let rest = s.split_once(after)?.1;
            Some(rest.split('\\').next()?.to_owned())
        };
        let mut sandbox_began: HashMap<String, SystemTime> = HashMap::new();
        let mut sandbox_of: HashMap<String, String> = HashMap::new();
        let mut container_of: HashMap<String, String> = HashMap::new();
        let mut started = HashMap::new();
        for line in text.lines() {
            let Some(at) = logrus_time(line) else {
                continue;
            };
            if let Some(rest) =
                line.split_once("msg=\"RunPodSandbox for &PodSandboxMetadata{Name:view-")
            {
                let meta = rest.1;
                if !meta.contains(&format!(",Namespace:{namespace},")) {
                    continue;
                }
                let Some(view) = meta.split_once("-1-").map(|(view, _)| view.to_owned()) else {
                    continue;
                };
                match quoted(meta, "returns sandbox id \\\"") {
                    Some(sandbox) => {
                        sandbox_of.insert(sandbox, view);
                    }
                    None => {
                        sandbox_began.entry(view).or_insert(at);
                    }
                }
            } else if let Some(rest) = line.split_once("msg=\"CreateContainer within sandbox \\\"")
            {
                let sandbox = rest.1.split('\\').next().unwrap_or_default();
                if let (Some(view), Some(container)) = (
                    sandbox_of.get(sandbox),
                    quoted(rest.1, "returns container id \\\""),
                ) {
                    container_of.insert(container, view.clone());
                }
            } else if let Some(rest) = line.split_once("msg=\"StartContainer for \\\"") {
                if !rest.1.contains("returns successfully") {
                    continue;
                }
                let container = rest.1.split('\\').next().unwrap_or_default();
                if let Some(view) = container_of.get(container)
                    && let Some(sandbox) = sandbox_began.get(view)
                {
                    started.entry(view.clone()).or_insert(Started {
                        sandbox: *sandbox,
                        container: at,
                    });
                }
            }
        }
        Self { started }
    }
}

/// The `time="…"` of a logrus text line.
fn logrus_time(line: &str) -> Option<SystemTime> {
    let stamp = line.strip_prefix("time=\"")?.split('"').next()?;
    let at: jiff::Timestamp = stamp.parse().ok()?;
    Some(SystemTime::from(at))
}

/// The RFC 3339 timestamp a log line starts with.
fn timestamp(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let at: jiff::Timestamp = stamp.parse().ok()?;
    Some(SystemTime::from(at))
}

/// The value of ` name=value` in a tracing text line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()
}

/// The line without its terminal colours (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_lines_give_each_view_its_sandbox_and_container_start() {
        let text = r#"time="2026-12-04T14:00:58.400000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:view-r001-1-abcde,Uid:u,Namespace:other,Attempt:0,}"
time="2026-12-04T14:00:58.491697379Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:view-r001-1-abcde,Uid:u,Namespace:bench-x,Attempt:0,}"
time="2026-12-04T14:00:58.824188996Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:view-r001-1-abcde,Uid:u,Namespace:bench-x,Attempt:0,} returns sandbox id \"s1\""
time="2026-12-04T14:00:58.874665661Z" level=info msg="CreateContainer within sandbox \"s1\" for &ContainerMetadata{Name:view,Attempt:0,} returns container id \"c1\""
time="2026-12-04T14:00:58.879743746Z" level=info msg="StartContainer for \"c1\""
time="2026-12-04T14:00:59.066465589Z" level=info msg="StartContainer for \"c1\" returns successfully"
"#;
        let log = ContainerdLog::parse(text, "bench-x");
        let started = &log.started["r001"];
        let at = |s: &str| SystemTime::from(s.parse::<jiff::Timestamp>().unwrap());
        assert_eq!(started.sandbox, at("2026-12-04T14:00:58.491697379Z"));
        assert_eq!(started.container, at("2026-12-04T14:00:59.066465589Z"));
        assert_eq!(log.started.len(), 1);
    }

    #[test]
    fn ready_lines_give_each_step_its_time() {
        let dir = std::env::temp_dir().join(format!("bench-cold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("sidecar.log"),
            "\u{1b}[2m2026-11-22T02:56:58.900000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
             \u{1b}[2mgateway_sidecar::activator\u{1b}[0m\u{1b}[2m:\u{1b}[0m view ready: every Envoy \
             routes to it \u{1b}[3mview\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"c001\" \
             \u{1b}[3mpod_ready_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m700.5 \
             \u{1b}[3mserving_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m800 \
             \u{1b}[3mready_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m900\n\
             2026-11-22T02:56:58.100000Z  INFO other line view=\"c002\"\n",
        )
        .unwrap();
        let log = SidecarLog::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let ready = &log.ready["c001"];
        let released = timestamp("2026-11-22T02:56:58.900000Z").unwrap();
        assert_eq!(ready.released, released);
        assert_eq!(
            millis(ready.serving, released).round(),
            100.0,
            "serving 100 ms before the line"
        );
        assert_eq!((millis(ready.pod_ready, released) * 10.0).round(), 1995.0);
        assert_eq!(log.ready.len(), 1);
    }
}
