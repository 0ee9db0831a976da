//! `bench scale`: the control plane at 100 … 10,000 views.
//!
//! Per size, in a fresh namespace with a fresh gateway replica:
//!
//! 1. `active` simulated pods (kwok: Running, Ready at once), then the
//!    Services of all views, created directly and concurrently (bounded);
//!    until Envoy has ACKed routes naming every view ("converged"), within
//!    a time bound: a size that does not converge is reported as such.
//! 2. `samples` times, one after the other: create one more view's Service
//!    and time until Envoy's listener routes its host (answers anything but
//!    the 404 "no such view"). Around them: the sidecar's CPU time, the xDS
//!    bytes it sent (its own counter) and Envoy received (Envoy's stats).
//!    Then `api_samples` more through the views API (`POST /_api/views`,
//!    which answers 201 once this replica's Envoy routes the view): time to
//!    the 201, and until the listener routes the host.
//! 3. Memory of the sidecar and Envoy; the clusters Envoy holds.
//! 4. Resync: SIGKILL the sidecar, start it, time until its `/readyz` and
//!    until Envoy has ACKed every type again and routes every view.
//! 5. Delete the views (by label) and the namespace.

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use test_support::TestNamespace;
use test_support::gateway::Gateway;

use super::gateway::{self as gw, poll};
use super::{objects, procs};
use crate::progress;

pub struct Options {
    pub sizes: Vec<usize>,
    pub samples: usize,
    pub active: usize,
    pub converge_timeout: Duration,
    pub concurrency: usize,
    pub api_samples: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub active_views: usize,
    pub samples: usize,
    pub converge_timeout_seconds: u64,
    pub concurrency: usize,
    pub sizes: Vec<Size>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Size {
    pub views: usize,
    /// Creating the views' Services (the API server's part).
    pub create_seconds: f64,
    /// From the first create until Envoy routed every view; None: not
    /// within the time bound.
    pub converged_seconds: Option<f64>,
    /// From the first create until the sidecar recorded Envoy's ACK of
    /// routes with every view.
    #[serde(default)]
    pub sidecar_acked_seconds: Option<f64>,
    /// One new view: from its create call until Envoy routes it.
    pub routable_ms: Vec<f64>,
    /// The same, from the API server's answer to the create.
    pub routable_after_create_ms: Vec<f64>,
    /// Samples that were not routable within the per-sample bound.
    pub sample_timeouts: usize,
    /// One new view through the API: from `POST /_api/views` until its 201.
    #[serde(default)]
    pub api_created_ms: Vec<f64>,
    /// … and until Envoy's listener routes its host.
    #[serde(default)]
    pub api_routable_ms: Vec<f64>,
    pub sidecar_rss_bytes: u64,
    pub sidecar_peak_bytes: u64,
    pub envoy_rss_bytes: u64,
    pub sidecar_cpu_ms_per_change: Option<f64>,
    /// Resource bytes the sidecar sent per change (its xDS counter).
    pub xds_bytes_per_change: Option<f64>,
    /// Bytes Envoy received on its xDS connection per change (wire bytes).
    pub envoy_rx_bytes_per_change: Option<f64>,
    /// Dynamic clusters Envoy holds (the goal: one per active view).
    pub envoy_clusters: Option<usize>,
    /// After SIGKILL and start: the sidecar's `/readyz` answers 200.
    pub resync_ready_seconds: Option<f64>,
    /// … and Envoy has ACKed every type again, routing every view.
    pub resync_acked_seconds: Option<f64>,
    pub notes: Vec<String>,
}

/// How long after Envoy routes every view to wait for the sidecar to record
/// Envoy's ACK of it.
const ACK_RECORD_WAIT: Duration = Duration::from_secs(30);
/// Per sample: how long a new view may take to become routable.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the resync measurement.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(60);
const XDS_BYTES_METRIC: &str = "views_gateway_xds_resource_bytes";
const ENVOY_XDS_RX: &str = "cluster.xds.upstream_cx_rx_bytes_total";
/// A path the gateway routes to the sidecar on every view host; the
/// sidecar answers 404 for it. (Any other path of a cold view would start it.)
const PROBE_PATH: &str = "/_gateway/bench-probe";

/// Nearest-rank percentile of `values` (p in 0..=100).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

impl Size {
    pub fn routable_p50(&self) -> Option<f64> {
        percentile(&self.routable_ms, 50.0)
    }
    pub fn routable_p99(&self) -> Option<f64> {
        percentile(&self.routable_ms, 99.0)
    }
}

fn view_name(i: usize) -> String {
    format!("v{i:05}")
}

pub async fn run(options: &Options) -> anyhow::Result<Results> {
    let client = objects::client().await?;
    let mut sizes = Vec::new();
    for &views in &options.sizes {
        let step = progress::step(format!("{views} views"));
        let size = measure(&client, views, options).await;
        progress::info(format!(
            "routable p50 {} / p99 {} ms; through the API: 201 p50 {} / p99 {} ms, routable p50 {} / p99 {} ms; \
             sidecar {:.0} MB, Envoy {:.0} MB; resync {}",
            fmt_opt(size.routable_p50(), 0),
            fmt_opt(size.routable_p99(), 0),
            fmt_opt(percentile(&size.api_created_ms, 50.0), 0),
            fmt_opt(percentile(&size.api_created_ms, 99.0), 0),
            fmt_opt(percentile(&size.api_routable_ms, 50.0), 0),
            fmt_opt(percentile(&size.api_routable_ms, 99.0), 0),
            procs::megabytes(size.sidecar_rss_bytes),
            procs::megabytes(size.envoy_rss_bytes),
            fmt_opt(size.resync_acked_seconds, 2),
        ));
        for note in &size.notes {
            progress::info(format!("note: {note}"));
        }
        sizes.push(size);
        step.done();
    }
    Ok(Results {
        active_views: options.active,
        samples: options.samples,
        converge_timeout_seconds: options.converge_timeout.as_secs(),
        concurrency: options.concurrency,
        sizes,
    })
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

async fn measure(client: &kube::Client, views: usize, options: &Options) -> Size {
    let namespace = TestNamespace::create(client).await;
    let name = format!("bench-scale-{views}");
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let mut size = Size {
        views,
        ..Size::default()
    };
    let measured = match gw::start(&name, namespace.name()).await {
        Ok(gateway) => measure_in(&mut size, gateway, &services, &pods, &name, options).await,
        Err(error) => Err(error),
    };
    if let Err(error) = measured {
        size.notes.push(format!("failed: {error:#}"));
    }
    let step = progress::step("deleting the views");
    if let Err(error) = objects::delete_views(client, namespace.name()).await {
        size.notes
            .push(format!("deleting the views failed: {error:#}"));
    }
    drop(namespace);
    step.done();
    size
}

async fn measure_in(
    size: &mut Size,
    gateway: Gateway,
    services: &Api<Service>,
    pods: &Api<Pod>,
    node: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let views = size.views;
    let active = options.active.min(views);
    let http = gateway.client();
    let ops_port = gateway.ops_port;

    // 1. The views, a few of them active.
    for i in 0..active {
        pods.create(
            &PostParams::default(),
            &objects::simulated_pod(&view_name(i)),
        )
        .await?;
    }
    let names: Vec<String> = (0..views).map(view_name).collect();
    let started = Instant::now();
    let last = tokio::time::timeout(
        options.converge_timeout,
        objects::create_views(services, &names, options.concurrency),
    )
    .await
    .with_context(|| {
        format!(
            "creating {views} Services took over {} s",
            options.converge_timeout.as_secs()
        )
    })??;
    size.create_seconds = started.elapsed().as_secs_f64();
    progress::info(format!(
        "{views} Services created in {:.1} s",
        size.create_seconds
    ));
    // Converged: Envoy routes the views created last (and so, as the index
    // applies changes in order, all) and holds the active views' clusters.
    // Separately: when the sidecar has recorded Envoy's ACK of routes with
    // every view (what its API and activator wait for).
    let probes: Vec<String> = last
        .iter()
        .map(|view| gateway.url(&format!("{view}.localhost"), PROBE_PATH))
        .collect();
    let deadline = started + options.converge_timeout;
    loop {
        let now = started.elapsed().as_secs_f64();
        if size.converged_seconds.is_none()
            && routes_all(&http, &probes).await
            && dynamic_clusters(&http, gateway.admin_port)
                .await
                .is_ok_and(|c| c >= active)
        {
            size.converged_seconds = Some(now);
            progress::info(format!(
                "Envoy routes all {views} views {now:.1} s after the first create"
            ));
        }
        if size.sidecar_acked_seconds.is_none()
            && envoy_status(&http, ops_port, node)
                .await
                .is_some_and(|s| s.routed_views >= views && s.clusters_with_endpoints >= active)
        {
            size.sidecar_acked_seconds = Some(now);
        }
        let waited_for_ack = size
            .converged_seconds
            .is_some_and(|c| now - c > ACK_RECORD_WAIT.as_secs_f64());
        if (size.converged_seconds.is_some() && size.sidecar_acked_seconds.is_some())
            || waited_for_ack
            || Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if size.converged_seconds.is_none() {
        size.notes.push(format!(
            "{views} views did not converge within {} s: Envoy did not yet route the last views created",
            options.converge_timeout.as_secs(),
        ));
    }
    if size.sidecar_acked_seconds.is_none() {
        let status = envoy_status(&http, ops_port, node).await;
        size.notes.push(format!(
            "the sidecar had not recorded Envoy's ACK of routes with all {views} views by the end of the wait \
             (its last recorded ACK names {} views)",
            status.map_or("?".into(), |s| s.routed_views.to_string())
        ));
    }

    // 2. One new view at a time.
    let sidecar = gw::sidecar_pid(&gateway)?;
    let envoy = gw::envoy_pid(&gateway)?;
    let cpu_before = procs::cpu_ns(sidecar)?;
    let bytes_before = gw::metric_sum(&gw::metrics(&gateway).await?, XDS_BYTES_METRIC);
    let rx_before = gw::envoy_stat(&http, gateway.admin_port, ENVOY_XDS_RX).await?;
    let mut consecutive_timeouts = 0;
    let mut changes = 0;
    for i in 0..options.samples {
        let view = format!("new{i:02}");
        let created = Instant::now();
        services
            .create(&PostParams::default(), &objects::view_service(&view))
            .await?;
        let answered = created.elapsed();
        changes += 1;
        match routable(&gateway, &view).await {
            Some(()) => {
                let total = created.elapsed();
                size.routable_ms.push(total.as_secs_f64() * 1e3);
                size.routable_after_create_ms
                    .push((total - answered).as_secs_f64() * 1e3);
                consecutive_timeouts = 0;
            }
            None => {
                size.sample_timeouts += 1;
                consecutive_timeouts += 1;
                if consecutive_timeouts >= 3 {
                    size.notes.push(format!(
                        "stopped sampling after 3 new views in a row were not routable within {} s",
                        SAMPLE_TIMEOUT.as_secs()
                    ));
                    break;
                }
            }
        }
        // Let the ACK and the view's EndpointSlice settle: one change at a time.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cpu_after = procs::cpu_ns(sidecar)?;
    let bytes_after = gw::metric_sum(&gw::metrics(&gateway).await?, XDS_BYTES_METRIC);
    let rx_after = gw::envoy_stat(&http, gateway.admin_port, ENVOY_XDS_RX).await?;
    if changes > 0 {
        let per = |delta: f64| delta / changes as f64;
        size.sidecar_cpu_ms_per_change = Some(per((cpu_after - cpu_before) as f64 / 1e6));
        size.xds_bytes_per_change = bytes_before
            .zip(bytes_after)
            .map(|(before, after)| per(after - before));
        size.envoy_rx_bytes_per_change = Some(per(rx_after.saturating_sub(rx_before) as f64));
    }

    // 2b. Through the API.
    for i in 0..options.api_samples {
        let view = format!("api{i:02}");
        let posted = Instant::now();
        let response = http
            .post(gateway.url("localhost", "/_api/views"))
            .json(&objects::view_spec(&view))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "POST /_api/views for {view}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let created = posted.elapsed();
        if routable(&gateway, &view).await.is_none() {
            size.notes.push(format!(
                "view {view}, created through the API, was not routable within {} s",
                SAMPLE_TIMEOUT.as_secs()
            ));
            break;
        }
        size.api_created_ms.push(created.as_secs_f64() * 1e3);
        size.api_routable_ms
            .push(posted.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 3. Memory and clusters.
    let sidecar_memory = procs::memory(sidecar)?;
    size.sidecar_rss_bytes = sidecar_memory.rss;
    size.sidecar_peak_bytes = sidecar_memory.peak;
    size.envoy_rss_bytes = procs::memory(envoy)?.rss;
    size.envoy_clusters = dynamic_clusters(&http, gateway.admin_port).await.ok();

    // 4. Resync after a restart.
    let total_views = views + size.routable_ms.len() + size.api_routable_ms.len();
    // Listeners, scopes, routes, clusters, and endpoints only while Envoy
    // has EDS clusters.
    let types = if active > 0 { 5 } else { 4 };
    let resync = resync(gateway, &http, ops_port, node, total_views, types).await;
    size.resync_ready_seconds = resync.0;
    size.resync_acked_seconds = resync.1;
    if resync.1.is_none() {
        size.notes.push(format!(
            "after a restart, Envoy had not ACKed all {total_views} views within {} s",
            RESYNC_TIMEOUT.as_secs()
        ));
    }
    Ok(())
}

/// Wait until Envoy's listener routes `view`'s host; None after
/// [`SAMPLE_TIMEOUT`].
///
/// Until Envoy has the view's scope and routes, a probe gets Envoy's own 404
/// "no such view" (answered by its worker, no sidecar involved); once it
/// has them, the probe's path (`/_gateway/`, routed to the sidecar on every
/// view host, which answers 404 without starting the view) gets something
/// else. Polling Envoy's admin `/stats` instead would scan every stat (about
/// a dozen per view) on Envoy's main thread, the thread that applies xDS:
/// the measurement would slow down what it measures.
async fn routable(gateway: &Gateway, view: &str) -> Option<()> {
    let http = gateway.client();
    let url = gateway.url(&format!("{view}.localhost"), PROBE_PATH);
    poll(SAMPLE_TIMEOUT, Duration::from_millis(2), || async {
        let (status, body) = gw::get_with(&http, &url).await.ok()?;
        (status != 404 || body != "no such view\n").then_some(())
    })
    .await
}

/// Envoy routes every host of `probes` (answers something other than its
/// own 404 "no such view").
async fn routes_all(http: &reqwest::Client, probes: &[String]) -> bool {
    for url in probes {
        match gw::get_with(http, url).await {
            Ok((status, body)) if status != 404 || body != "no such view\n" => {}
            _ => return false,
        }
    }
    true
}

/// What the sidecar reports about one Envoy.
struct EnvoyStatus {
    acked_types: usize,
    routed_views: usize,
    clusters_with_endpoints: usize,
}

async fn envoy_status(http: &reqwest::Client, ops_port: u16, node: &str) -> Option<EnvoyStatus> {
    let envoys = gw::envoys(http, ops_port).await.ok()?;
    let status = envoys.get(node)?;
    let count = |field: &str| status[field].as_array().map_or(0, Vec::len);
    Some(EnvoyStatus {
        acked_types: status["acked_versions"].as_object().map_or(0, |m| m.len()),
        routed_views: status["routed_hosts"].as_array().map_or(0, |hosts| {
            hosts
                .iter()
                .filter(|h| h.as_str().is_some_and(|h| h.starts_with("view-")))
                .count()
        }),
        clusters_with_endpoints: count("clusters_with_endpoints"),
    })
}

/// Dynamic clusters Envoy holds (its admin `config_dump`).
async fn dynamic_clusters(http: &reqwest::Client, admin_port: u16) -> anyhow::Result<usize> {
    let url = format!("http://127.0.0.1:{admin_port}/config_dump?resource=dynamic_active_clusters");
    let (_, body) = gw::get_with(http, &url).await?;
    let dump: serde_json::Value = serde_json::from_str(&body)?;
    Ok(dump["configs"].as_array().map_or(0, Vec::len))
}

/// Kill the sidecar, start it, and time (from the kill) until its
/// `/readyz` answers 200 and until Envoy has ACKed every type with every view.
async fn resync(
    mut gateway: Gateway,
    http: &reqwest::Client,
    ops_port: u16,
    node: &str,
    views: usize,
    types: usize,
) -> (Option<f64>, Option<f64>) {
    let step = progress::step("resync: SIGKILL the sidecar and start it again");
    gateway.kill_sidecar();
    let killed = Instant::now();
    // test-support's restart waits (30 s at most, then panics: the task
    // ends with the replica dropped, which the measurement below reports).
    let restart = tokio::spawn(async move {
        gateway.restart_sidecar().await;
        gateway
    });
    let ready_url = format!("http://127.0.0.1:{ops_port}/readyz");
    let measure = async {
        let ready = poll(RESYNC_TIMEOUT, Duration::from_millis(10), || async {
            let (status, _) = gw::get_with(http, &ready_url).await.ok()?;
            (status == 200).then(|| killed.elapsed().as_secs_f64())
        })
        .await;
        let acked = poll(
            RESYNC_TIMEOUT.saturating_sub(killed.elapsed()),
            Duration::from_millis(20),
            || async {
                let status = envoy_status(http, ops_port, node).await?;
                (status.acked_types >= types && status.routed_views >= views)
                    .then(|| killed.elapsed().as_secs_f64())
            },
        )
        .await;
        (ready, acked)
    };
    let (restarted, measured) = tokio::join!(restart, measure);
    match restarted {
        Ok(gateway) => drop(gateway),
        Err(_) => {
            progress::info("the restarted sidecar did not get ready within test-support's 30 s")
        }
    }
    step.done();
    measured
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(10.0));
        assert_eq!(percentile(&values, 99.0), Some(20.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
