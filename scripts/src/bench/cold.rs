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
//! `--simulated` views at once whose pods kwok simulates, Ready as soon as
//! they are scheduled: no workload start at all, only Kubernetes' and our
//! own overhead. Nothing listens at a simulated pod's address (the pod
//! network refuses connections there, see `cluster::network`), so a
//! released request gets Envoy's own 503 "upstream connect error"; the
//! report says so and times the release itself from the sidecar's log.

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
        results.sequential = fill(sequential, &observer, &sidecar, Some(&runner))?;
        results.concurrent = fill(concurrent, &observer, &sidecar, Some(&runner))?;
        super::objects::delete_views(&client, namespace.name()).await?;
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
        results.simulated = fill(answers, &observer, &sidecar, None)?;
        super::objects::delete_views(&client, namespace.name()).await?;
    }
    Ok(results)
}

/// As `bench::gateway::start` (info-level logs, a failed start an error), with more
/// sidecar settings.
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
    runner: Option<&RunnerLog>,
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
            let pod_ready = match runner {
                Some(runner) => Some(at(runner.ready.get(&view)).with_context(|| {
                    format!("no Ready line for view {view}'s pod in the pod runner's log")
                })?),
                None => None,
            };
            Ok(Sample {
                pod_ready,
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
                let view = pod.metadata.labels.as_ref()?.get("views.dev/view")?;
                let ready = pod
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then(|| (view.clone(), Kind::PodReady))
            })),
            tokio::spawn(observe(
                slices,
                seen.clone(),
                slices_listed.0,
                |slice: &EndpointSlice| {
                    let service = slice
                        .metadata
                        .labels
                        .as_ref()?
                        .get("kubernetes.io/service-name")?;
                    let serving = slice.endpoints.iter().any(|e| {
                        e.conditions
                            .as_ref()
                            .is_some_and(|c| c.serving == Some(true) && c.terminating != Some(true))
                    });
                    let view = service.strip_prefix("view-")?;
                    serving.then(|| (view.to_owned(), Kind::SliceServing))
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
    PodReady,
    SliceServing,
}

/// Record the first time `read` finds each view's step in `api`'s watch.
async fn observe<K>(
    api: Api<K>,
    seen: Arc<Mutex<Seen>>,
    listed: tokio::sync::oneshot::Sender<()>,
    read: fn(&K) -> Option<(String, Kind)>,
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
        if let Some((view, kind)) = read(&object) {
            let mut seen = seen.lock().expect("observer lock");
            let map = match kind {
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
