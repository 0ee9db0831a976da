//! `bench warm`: the warm path against its baselines, same run, same backend.
//!
//! One echo-server pod (a real process at its pod IP, the release build)
//! serves four paths:
//!
//! ```text
//! direct       wrk ──────────────────────────────────────► pod IP:8080
//! static       wrk ──► Envoy, scripts/bench/envoy-static.yaml ──► pod
//! static-edge  wrk ──► Envoy, the same + scripts/bench/envoy-edge.yaml ──► pod
//! gateway      wrk ──► the gateway's Envoy (Host bench.localhost, view warm) ──► pod
//! ```
//!
//! `static-edge` adds the gateway's edge settings and access log to the
//! static baseline (see [`edge`]): gateway/static-edge is what the gateway's
//! dynamic routing costs, gateway/static what the gateway costs over an
//! Envoy with nothing but the same authentication.
//!
//! The Envoys run the same binary with the same options: one worker
//! (`--concurrency 1`), the same overload manager, stdout to a file. On a
//! machine with two CPUs or more they are pinned to CPU 0 and wrk and the
//! backend to CPU 1, so that under load the proxy is what limits the
//! throughput (and not the scheduler's choice of who runs where among wrk,
//! the proxy's workers and the backend's): requests/s then compares the
//! proxies' cost per request. Each proxy's CPU time per request is measured
//! too (all its threads, from `/proc`), which hardly depends on the machine's
//! other load.
//!
//! Each round runs every path once, the order rotating from round to round,
//! so drifts of a noisy machine spread over all three; a path's figure is
//! the median over the rounds. Two loads: one connection (latency without
//! queueing) and many (throughput).
//!
//! With sign-in on (the default, as in a real deployment; see [`sign_in`]),
//! the gateway runs with the local provider as its issuer and a client
//! secret (oauth2, jwt_authn and the view's RBAC in its chain), the view is
//! ana's, created with her token, and every request of every path carries
//! `Authorization: Bearer <her token>`; the static Envoys run
//! `scripts/bench/envoy-static-signed-in.yaml`, the same filters. The run
//! fails if the Envoys' sign-in or edge settings differ, if any request was
//! refused or not verified, or if the sidecar was asked (ext_authz) at all.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use test_support::TestNamespace;
use test_support::gateway::Gateway;

use super::gateway::{self as gw, poll};
use super::{config_dump, edge, objects, procs, sign_in, wrk};
use crate::{paths, progress};

const VIEW: &str = "bench";
/// The backend's image: the release echo-server (see
/// `scripts/cluster/process-images.toml`; `bench` builds it). A debug build
/// would take CPU from the proxies it is meant to compare.
const BACKEND_IMAGE: &str = "views.dev/echo-server:release";
/// Options both Envoys get beyond the harness's own (`--disable-hot-restart
/// --log-level warning`): one worker each.
const ENVOY_ARGS: [&str; 2] = ["--concurrency", "1"];
/// Where the proxies run, and where wrk and the backend run (when the
/// machine has two CPUs or more).
const PROXY_CPU: &str = "0";
const LOAD_CPU: &str = "1";
/// The static baseline without sign-in.
const STATIC_TEMPLATE: &str = "scripts/bench/envoy-static.yaml";
/// The gateway replica's name: its Envoy's node id.
const NODE: &str = "bench-warm";

pub struct Options {
    pub rounds: u32,
    pub seconds: u64,
    pub connections: Vec<u32>,
    /// The gateway's `ACCESS_LOG` (`json`, the default, or `off`).
    pub access_log: String,
    /// Sign-in on, with this provider (`cargo xtask oidc up`'s).
    pub sign_in: Option<test_support::oidc::Oidc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Which echo-server binary served (the pod runner maps the image).
    pub backend: String,
    pub rounds: u32,
    pub seconds_per_run: u64,
    pub levels: Vec<Level>,
    pub ext_authz: ExtAuthz,
    /// How the processes were placed on CPUs, and the Envoys' options.
    #[serde(default)]
    pub placement: Option<String>,
    /// The gateway's `ACCESS_LOG` setting (None: before it existed, `json`).
    #[serde(default)]
    pub access_log: Option<String>,
    /// Sign-in on (false: off, and results from before it existed).
    #[serde(default)]
    pub sign_in: bool,
    /// With sign-in on: what the static and the gateway's sign-in filters
    /// counted over the measured runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<sign_in::Verdicts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level {
    pub connections: u32,
    pub paths: Vec<PathRuns>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathRuns {
    pub path: String,
    pub runs: Vec<wrk::Run>,
}

/// ext_authz calls during the gateway's runs. `sidecar_checks` None: the
/// sidecar's counter has no sample (a labelled counter appears with its
/// first increment, so: no check since the sidecar started, or a sidecar
/// without the counter); `envoy_checks` None: Envoy has no ext_authz stats
/// (no such filter).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtAuthz {
    pub sidecar_checks: Option<f64>,
    pub envoy_checks: Option<u64>,
    /// Requests the gateway path served meanwhile.
    pub gateway_requests: u64,
}

pub const PATHS: [&str; 4] = ["direct", "static", "static-edge", "gateway"];
/// The baselines the gateway is compared with, the goals' first.
pub const BASELINES: [&str; 3] = ["static-edge", "static", "direct"];
/// The sidecar's counter of ext_authz checks (name per the lead's plan).
const EXT_AUTHZ_METRIC: &str = "gateway_ext_authz_checks";

impl PathRuns {
    pub fn median(&self, value: impl Fn(&wrk::Run) -> f64) -> f64 {
        median(&self.runs.iter().map(value).collect::<Vec<_>>())
    }

    pub fn rps(&self) -> f64 {
        self.median(wrk::Run::requests_per_second)
    }

    pub fn errors(&self) -> u64 {
        self.runs.iter().map(wrk::Run::errors).sum()
    }

    /// The median of the proxy's CPU time per request (µs), if measured.
    pub fn proxy_cpu_us(&self) -> Option<f64> {
        let values: Vec<f64> = self.runs.iter().filter_map(|r| r.proxy_cpu_us).collect();
        (!values.is_empty()).then(|| median(&values))
    }
}

impl Level {
    pub fn path(&self, name: &str) -> Option<&PathRuns> {
        self.paths.iter().find(|p| p.path == name)
    }

    /// `value(a) / value(b)` of the two paths' runs in the same round:
    /// runs close in time share the machine's load of the moment, so these
    /// paired ratios are much steadier than ratios of medians.
    pub fn paired_ratios(&self, a: &str, b: &str, value: impl Fn(&wrk::Run) -> f64) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.path(a), self.path(b)) else {
            return Vec::new();
        };
        a.runs
            .iter()
            .zip(&b.runs)
            .map(|(a, b)| value(a) / value(b))
            .filter(|r| r.is_finite())
            .collect()
    }
}

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A target of the load.
struct Target {
    address: IpAddr,
    port: u16,
    host: Option<String>,
    /// The proxy in the path, whose CPU time is measured.
    proxy: Option<u32>,
    /// Its admin port, for the sign-in filters' counters.
    admin_port: Option<u16>,
}

pub async fn run(options: &Options) -> anyhow::Result<Results> {
    let client = objects::client().await?;
    let namespace = TestNamespace::create(&client).await;
    let signed_in = match &options.sign_in {
        Some(provider) => {
            let step = progress::step(format!(
                "sign-in: entitlements, {}'s token from {}",
                sign_in::USER,
                provider.issuer
            ));
            let signed_in = sign_in::SignedIn::prepare(provider, &client, namespace.name()).await?;
            // Setting up and tearing down take a minute or two besides.
            let runs = options.rounds as u64
                * PATHS.len() as u64
                * options.connections.len() as u64
                * (options.seconds + 1);
            let left = signed_in.check_lifetime(Duration::from_secs(runs + 300))?;
            progress::info(format!(
                "the token lives {} more minutes; the runs take about {} s",
                left.as_secs() / 60,
                runs
            ));
            step.done();
            Some(signed_in)
        }
        None => None,
    };
    let token = signed_in.as_ref().map(|s| s.token.as_str());
    let step = progress::step(format!(
        "gateway (release sidecar + Envoy) for namespace {}, sign-in {}",
        namespace.name(),
        if signed_in.is_some() { "on" } else { "off" }
    ));
    let mut env = vec![("ACCESS_LOG", options.access_log.clone())];
    env.extend(signed_in.iter().flat_map(sign_in::SignedIn::gateway_env));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = gw::start_with(NODE, namespace.name(), &env, &ENVOY_ARGS).await?;
    step.done();

    let step = progress::step(format!(
        "view `bench` through the API{}, and its echo-server pod",
        if token.is_some() { " as ana" } else { "" }
    ));
    let response = authorised(
        gateway
            .client()
            .post(gateway.url("localhost", "/_api/views"))
            .json(&objects::view_spec(VIEW)),
        token,
    )
    .send()
    .await?;
    if !response.status().is_success() {
        bail!(
            "POST /_api/views: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let mut pod = objects::echo_pod(VIEW);
    for container in pod.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        container.image = Some(BACKEND_IMAGE.into());
    }
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let pod_name = pod.metadata.name.unwrap_or_default();
    let pod_ip: IpAddr = objects::wait_ready(&pods, &pod_name, Duration::from_secs(60))
        .await?
        .parse()?;
    // No request to the view before Envoy has its cluster with the ready
    // endpoint: a request to a cold view would make the activator start one.
    let http = gateway.client();
    poll(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let envoys = gw::envoys(&http, gateway.ops_port).await.ok()?;
            let clusters = envoys[NODE]["clusters_with_endpoints"].as_array()?.clone();
            clusters
                .iter()
                .any(|c| c.as_str() == Some(&format!("view-{VIEW}")))
                .then_some(())
        },
    )
    .await
    .context("Envoy did not get the view's ready endpoint within 30 s")?;
    let (status, body) = get(
        &http,
        &gateway.url(&format!("{VIEW}.localhost"), "/"),
        token,
    )
    .await?;
    if status != 200 || !body.contains("bench") {
        bail!("the warm view answered {status}: {body}");
    }
    progress::info(format!("pod {pod_name} at {pod_ip}: warm"));
    step.done();

    let (template, values) = match &signed_in {
        Some(signed_in) => {
            let sidecar_api = sign_in::sidecar_api(&http, gateway.admin_port).await?;
            (
                sign_in::TEMPLATE,
                signed_in.template_values(VIEW, sidecar_api)?,
            )
        }
        None => (STATIC_TEMPLATE, Vec::new()),
    };
    let mut static_envoys = Vec::new();
    for (name, with_edge) in [("static", false), ("static-edge", true)] {
        let mut values = values.clone();
        values.push(("EDGE", edge::template_value(with_edge)?));
        static_envoys.push(StaticEnvoy::start(&http, name, pod_ip, template, values, token).await?);
    }
    let [static_envoy, static_edge] = &static_envoys[..] else {
        unreachable!("two static Envoys were started")
    };
    if signed_in.is_some() {
        for envoy in [static_envoy, static_edge] {
            sign_in::check_same_filters(
                &http,
                VIEW,
                (gateway.admin_port, gateway.port),
                (envoy.admin_port, envoy.port),
            )
            .await?;
        }
        progress::info(
            "sign-in filters and the view's RBAC policy: the same in the three Envoys' config dumps",
        );
    }
    edge::check_same_edge(&http, gateway.admin_port, static_edge.admin_port).await?;
    progress::info(format!(
        "edge settings and access log: the same in the gateway's and the static-edge Envoy's \
         config dumps ({})",
        edge::FRAGMENT
    ));
    // Kept for profiling outside the run (static variants of the gateway's
    // listener, see scripts/bench/analysis.md): what the sidecar really
    // pushed, and the baselines beside it.
    let dumps = paths::cache_dir().join("bench");
    for (name, admin_port) in [
        ("gateway", gateway.admin_port),
        ("static", static_envoy.admin_port),
        ("static-edge", static_edge.admin_port),
    ] {
        let dump = config_dump::config_dump(&http, admin_port).await?;
        let path = dumps.join(format!("warm-{name}-config-dump.json"));
        std::fs::create_dir_all(&dumps)?;
        std::fs::write(&path, serde_json::to_vec_pretty(&dump)?)?;
        progress::info(format!("{name} Envoy's config dump: {}", path.display()));
    }
    let gateway_envoy = gateway
        .envoy_pid()
        .context("the gateway's Envoy is not running")?;
    let (placement, load_cpus) = place(
        &[
            gateway_envoy,
            static_envoy.child.id(),
            static_edge.child.id(),
        ],
        pod_ip,
    )?;
    progress::info(format!("placement: {placement}"));
    let targets = [
        Target {
            address: pod_ip,
            port: 8080,
            host: None,
            proxy: None,
            admin_port: None,
        },
        static_envoy.target(),
        static_edge.target(),
        Target {
            address: [127, 0, 0, 1].into(),
            port: gateway.port,
            host: Some(format!("{VIEW}.localhost")),
            proxy: Some(gateway_envoy),
            admin_port: Some(gateway.admin_port),
        },
    ];

    let step = progress::step("warm-up: 1 s per path");
    for target in &targets {
        load(target, 8, Duration::from_secs(1), load_cpus, token).await?;
    }
    step.done();

    let metrics_before = gw::metrics(&gateway).await?;
    let envoy_authz_before = ext_authz_stats(&gateway).await?;
    let mut verdicts_before = Vec::new();
    for target in &targets {
        verdicts_before.push(match (token, target.admin_port) {
            (Some(_), Some(port)) => Some(sign_in::counters(&http, port).await?),
            _ => None,
        });
    }

    let mut levels = Vec::new();
    for &connections in &options.connections {
        let step = progress::step(format!(
            "{} rounds × {} paths × {} s, {connections} connection(s)",
            options.rounds,
            PATHS.len(),
            options.seconds
        ));
        let mut paths: Vec<PathRuns> = PATHS
            .iter()
            .map(|p| PathRuns {
                path: p.to_string(),
                runs: Vec::new(),
            })
            .collect();
        for round in 0..options.rounds as usize {
            for i in 0..PATHS.len() {
                let index = (round + i) % PATHS.len();
                let run = load(
                    &targets[index],
                    connections,
                    Duration::from_secs(options.seconds),
                    load_cpus,
                    token,
                )
                .await?;
                progress::info(format!(
                    "round {} {:11} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs{}{}",
                    round + 1,
                    PATHS[index],
                    run.requests_per_second(),
                    run.p50_us,
                    run.p99_us,
                    run.p999_us,
                    run.proxy_cpu_us
                        .map(|us| format!("  proxy CPU {us:.1} µs/request"))
                        .unwrap_or_default(),
                    match run.errors() {
                        0 => String::new(),
                        n => format!("  ({n} errors)"),
                    }
                ));
                paths[index].runs.push(run);
            }
        }
        let level = Level { connections, paths };
        for base in ["static-edge", "static"] {
            if let (Some(b), Some(g)) = (
                level.path(base).and_then(PathRuns::proxy_cpu_us),
                level.path("gateway").and_then(PathRuns::proxy_cpu_us),
            ) {
                let paired =
                    level.paired_ratios("gateway", base, |r| r.proxy_cpu_us.unwrap_or(f64::NAN));
                progress::info(format!(
                    "proxy CPU per request, median: {base} {b:.1} µs, gateway {g:.1} µs; \
                     gateway/{base} paired by round {:.3}",
                    median(&paired)
                ));
            }
        }
        levels.push(level);
        step.done();
    }

    let metrics_after = gw::metrics(&gateway).await?;
    let envoy_authz_after = ext_authz_stats(&gateway).await?;
    let sidecar_checks = match (
        gw::metric_sum(&metrics_before, EXT_AUTHZ_METRIC)
            .or_else(|| gw::metric_sum(&metrics_before, &format!("views_{EXT_AUTHZ_METRIC}"))),
        gw::metric_sum(&metrics_after, EXT_AUTHZ_METRIC)
            .or_else(|| gw::metric_sum(&metrics_after, &format!("views_{EXT_AUTHZ_METRIC}"))),
    ) {
        // A labelled counter has no sample until its first increment.
        (before, Some(after)) => Some(after - before.unwrap_or(0.0)),
        (_, None) => None,
    };
    let requests = |path: &str| -> u64 {
        levels
            .iter()
            .filter_map(|l| l.path(path))
            .flat_map(|p| &p.runs)
            .map(|r| r.requests)
            .sum()
    };
    let ext_authz = ExtAuthz {
        sidecar_checks,
        envoy_checks: envoy_authz_after.map(|after| after - envoy_authz_before.unwrap_or(0)),
        gateway_requests: requests("gateway"),
    };
    let mut verdicts = Vec::new();
    for ((target, path), before) in targets.iter().zip(PATHS).zip(verdicts_before) {
        if let (Some(before), Some(port)) = (before, target.admin_port) {
            let after = sign_in::counters(&http, port).await?;
            verdicts.push(sign_in::Verdicts::new(path, requests(path), before, after));
        }
    }
    if signed_in.is_some() {
        check_signed_in(&levels, &ext_authz, &verdicts)?;
    }

    drop(static_envoys);
    drop(gateway);
    drop(namespace);
    Ok(Results {
        backend: backend_binary(),
        rounds: options.rounds,
        seconds_per_run: options.seconds,
        levels,
        ext_authz,
        placement: Some(placement),
        access_log: Some(options.access_log.clone()),
        sign_in: signed_in.is_some(),
        verdicts,
    })
}

/// With sign-in on, the figures only compare what they claim to if every
/// measured request was verified and allowed in Envoy (a refusal is a
/// cheap local reply) and the warm path never reached the sidecar.
fn check_signed_in(
    levels: &[Level],
    ext_authz: &ExtAuthz,
    verdicts: &[sign_in::Verdicts],
) -> anyhow::Result<()> {
    let mut problems: Vec<String> = verdicts.iter().flat_map(|v| v.problems()).collect();
    if verdicts.len() != PATHS.len() - 1 {
        problems.push(format!(
            "sign-in counters of {} proxies, expected the static Envoys' and the gateway's",
            verdicts.len()
        ));
    }
    for level in levels {
        for path in &level.paths {
            let refused: u64 = path.runs.iter().map(|r| r.non_2xx).sum();
            if refused > 0 {
                problems.push(format!(
                    "{} at {} connections: {refused} responses with status ≥ 400",
                    path.path, level.connections
                ));
            }
        }
    }
    match ext_authz.envoy_checks {
        None => problems.push("the gateway's Envoy has no ext_authz stats".into()),
        Some(0) => {}
        Some(n) => problems.push(format!("the gateway's Envoy made {n} ext_authz calls")),
    }
    if let Some(n) = ext_authz.sidecar_checks.filter(|n| *n != 0.0) {
        problems.push(format!("the sidecar counted {n} ext_authz checks"));
    }
    if problems.is_empty() {
        progress::info(format!(
            "signed in: every request verified and allowed in Envoy ({}), no ext_authz call",
            verdicts
                .iter()
                .map(|v| format!(
                    "{}: {} requests, jwt_authn allowed {}, rbac allowed {}",
                    v.path, v.requests, v.jwt_allowed, v.rbac_allowed
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        Ok(())
    } else {
        bail!(
            "the signed-in warm path was not what it is meant to be:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// `request` with `Authorization: Bearer <token>`, if any.
fn authorised(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// GET `url` (as `token`'s owner, if any); status and body.
async fn get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let response = authorised(http.get(url), token).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

async fn load(
    target: &Target,
    connections: u32,
    duration: Duration,
    cpus: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<wrk::Run> {
    let before = target.proxy.map(procs::cpu_ns).transpose()?;
    let mut run = wrk::run(&wrk::Load {
        address: target.address,
        port: target.port,
        host: target.host.as_deref(),
        bearer: token,
        connections,
        duration,
        cpus,
    })
    .await?;
    if let (Some(pid), Some(before)) = (target.proxy, before) {
        let spent = procs::cpu_ns(pid)?.saturating_sub(before);
        run.proxy_cpu_us = Some(spent as f64 / 1e3 / run.requests.max(1) as f64);
    }
    Ok(run)
}

/// Pin the proxies to [`PROXY_CPU`], and the backend (the echo-server
/// process serving `pod_ip`) to [`LOAD_CPU`], where wrk will run too; on a
/// machine with one CPU, nothing. The placement in words, and wrk's CPUs.
fn place(proxies: &[u32], pod_ip: IpAddr) -> anyhow::Result<(String, Option<&'static str>)> {
    let envoys = format!("both Envoys {}", ENVOY_ARGS.join(" "));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Ok((format!("{envoys}; one CPU: nothing pinned"), None));
    }
    let listen = format!("{pod_ip}:8080");
    let backend = procs::all(|cmdline| {
        cmdline
            .split(' ')
            .next()
            .is_some_and(|program| program.ends_with("/echo-server"))
            && cmdline.contains(&listen)
    });
    let [backend] = backend[..] else {
        bail!("expected one echo-server process listening on {listen}, found {backend:?}");
    };
    for &pid in proxies {
        procs::pin(pid, PROXY_CPU)?;
    }
    procs::pin(backend, LOAD_CPU)?;
    Ok((
        format!(
            "{envoys}, pinned to CPU {PROXY_CPU}; wrk (one thread) and the backend pinned to \
             CPU {LOAD_CPU}; {cpus} CPUs, shared with whatever else runs"
        ),
        Some(LOAD_CPU),
    ))
}

/// The sum of the gateway Envoy's ext_authz counters, or None when it has
/// none (no ext_authz filter configured).
async fn ext_authz_stats(gateway: &Gateway) -> anyhow::Result<Option<u64>> {
    let stats = gw::envoy_stats(&gateway.client(), gateway.admin_port, "ext_authz").await?;
    Ok((!stats.is_empty()).then(|| {
        stats
            .iter()
            .filter(|(name, _)| {
                // Calls made, whatever their outcome.
                ["ok", "denied", "error", "failure_mode_allowed"]
                    .iter()
                    .any(|outcome| name.ends_with(&format!("ext_authz.{outcome}")))
            })
            .map(|(_, v)| v)
            .sum()
    }))
}

/// The binary behind [`BACKEND_IMAGE`], as the pod runner resolves it (see
/// `scripts/cluster/process-images.toml`).
fn backend_binary() -> String {
    let mapping =
        std::fs::read_to_string(paths::repo_root().join("scripts/cluster/process-images.toml"))
            .unwrap_or_default();
    let binary = mapping
        .split(&format!("[images.\"{BACKEND_IMAGE}\"]"))
        .nth(1)
        .and_then(|section| {
            section
                .lines()
                .find_map(|l| l.trim().strip_prefix("binary = "))
                .map(|b| b.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let profile = if binary.contains("/release/") {
        "release build"
    } else if binary.contains("/debug/") {
        "debug build"
    } else {
        "build unknown"
    };
    format!("echo-server, {binary} ({profile}: the pod runner's image mapping)")
}

/// Envoy with a static baseline config, on free loopback ports.
struct StaticEnvoy {
    port: u16,
    admin_port: u16,
    child: std::process::Child,
}

impl StaticEnvoy {
    /// The baseline `name`: `template` ([`STATIC_TEMPLATE`], or with sign-in
    /// on [`sign_in::TEMPLATE`]) filled in with the ports, the backend and
    /// `values`; ready once it serves `token`'s request.
    async fn start(
        http: &reqwest::Client,
        name: &str,
        backend: IpAddr,
        template: &str,
        values: Vec<(&str, String)>,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let step = progress::step(format!("{name} Envoy ({template})"));
        let dir = std::env::temp_dir().join(format!("views-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = test_support::gateway::free_port();
        let admin_port = test_support::gateway::free_port();
        let values = [
            ("LISTEN_PORT", port.to_string()),
            ("ADMIN_PORT", admin_port.to_string()),
            ("BACKEND_IP", backend.to_string()),
            ("BACKEND_PORT", "8080".to_string()),
        ]
        .into_iter()
        .chain(values);
        let mut config = std::fs::read_to_string(paths::repo_root().join(template))?;
        for (name, value) in values {
            config = config.replace(&format!("{{{{{name}}}}}"), &value);
        }
        let unfilled = config
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .find(|line| line.contains("{{"));
        if let Some(line) = unfilled {
            bail!(
                "{template}: nothing fills in a placeholder of `{}`",
                line.trim()
            );
        }
        std::fs::write(dir.join("envoy.yaml"), config)?;
        let child =
            test_support::gateway::spawn_envoy_with(&dir, &format!("bench-{name}"), &ENVOY_ARGS);
        let mut envoy = StaticEnvoy {
            port,
            admin_port,
            child,
        };
        let url = format!("http://127.0.0.1:{port}/");
        // Signed in, this also waits for jwt_authn's first JWKS fetch.
        let ready = poll(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                let (status, body) = get(http, &url, token).await.ok()?;
                (status == 200 && body.contains("bench")).then_some(())
            },
        )
        .await;
        if ready.is_none() {
            let exited = envoy.child.try_wait().ok().flatten();
            bail!(
                "{name} Envoy not serving within 20 s ({}); log: {}",
                exited.map_or("running".into(), |s| s.to_string()),
                dir.join("envoy.log").display()
            );
        }
        step.done();
        Ok(envoy)
    }
}

impl StaticEnvoy {
    fn target(&self) -> Target {
        Target {
            address: [127, 0, 0, 1].into(),
            port: self.port,
            host: None,
            proxy: Some(self.child.id()),
            admin_port: Some(self.admin_port),
        }
    }
}

impl Drop for StaticEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
