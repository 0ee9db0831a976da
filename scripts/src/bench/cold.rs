//! `bench cold`: what the activator adds to a cold start, with real pod
//! processes (echo-server through the pod runner).
//!
//! For each activation: create a view, send one request to its host and
//! take the time its response headers arrive (the first byte). The pod's
//! Ready moment is the pod runner's own log line (`readiness changed
//! ready=true`, microsecond timestamps on this machine's clock), so
//! *Ready → first byte* is what happens after the workload is up: the
//! EndpointSlice, the watch, the index, the xDS push and Envoy's ACK, the
//! release of the held request, and the proxied request itself.
//! *Arrival → first byte* adds the Job, scheduling and the process start.
//!
//! Run one activation at a time (`--activations`, default 50), then
//! `--concurrent` views (default 20) at once. The results are printed (not
//! yet written to BENCHMARKS.md).

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use futures::future::join_all;
use test_support::TestNamespace;

use super::gateway as gw;
use super::scale::percentile;
use crate::{paths, progress};

pub struct Options {
    pub activations: usize,
    pub concurrent: usize,
}

/// One activation's timings, in milliseconds.
struct Sample {
    arrival_to_first_byte: f64,
    ready_to_first_byte: f64,
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let client = super::objects::client().await?;
    let namespace = TestNamespace::create(&client).await;
    let gateway = gw::start("bench-cold", namespace.name()).await?;
    let mut sequential = Vec::new();
    for i in 0..options.activations {
        let view = format!("s{i:03}");
        sequential.push(activate(&gateway, namespace.name(), &view).await?);
    }
    let concurrent = join_all((0..options.concurrent).map(|i| {
        let view = format!("c{i:03}");
        let namespace = namespace.name().to_owned();
        let gateway = &gateway;
        async move { activate(gateway, &namespace, &view).await }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    super::objects::delete_views(&client, namespace.name()).await?;

    println!();
    println!(
        "| activations | arrival → first byte p50 / p99 ms | pod Ready → first byte p50 / p99 ms |"
    );
    println!("|---|---:|---:|");
    for (label, samples) in [
        (format!("{} one at a time", sequential.len()), &sequential),
        (format!("{} at once", concurrent.len()), &concurrent),
    ] {
        let column = |pick: fn(&Sample) -> f64| {
            let values: Vec<f64> = samples.iter().map(pick).collect();
            format!(
                "{:.0} / {:.0}",
                percentile(&values, 50.0).unwrap_or(f64::NAN),
                percentile(&values, 99.0).unwrap_or(f64::NAN)
            )
        };
        println!(
            "| {label} | {} | {} |",
            column(|s| s.arrival_to_first_byte),
            column(|s| s.ready_to_first_byte)
        );
    }
    Ok(())
}

/// Create `view`, request it cold, and time the answer against its pod's Ready.
async fn activate(
    gateway: &test_support::gateway::Gateway,
    namespace: &str,
    view: &str,
) -> anyhow::Result<Sample> {
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
    let first_byte = SystemTime::now();
    if response.status() != 200 {
        bail!("view {view} answered {}", response.status());
    }
    let ready = pod_ready_at(namespace, view)?;
    let millis = |from: SystemTime| {
        first_byte
            .duration_since(from)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    progress::info(format!(
        "{view}: Ready → first byte {:.0} ms",
        millis(ready)
    ));
    Ok(Sample {
        arrival_to_first_byte: millis(sent),
        ready_to_first_byte: millis(ready),
    })
}

/// When the pod runner saw the view's (first activation's) pod become ready.
fn pod_ready_at(namespace: &str, view: &str) -> anyhow::Result<SystemTime> {
    let log = paths::cache_dir().join("cluster/logs/pod-runner.log");
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let pod = format!("pod=\"{namespace}/view-{view}-1-");
    let line = text
        .lines()
        .rev()
        .find(|line| line.contains(&pod) && line.contains("readiness changed ready=true"))
        .with_context(|| format!("no Ready line for view {view} in {}", log.display()))?;
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let at: jiff::Timestamp = stamp
        .parse()
        .with_context(|| format!("timestamp `{stamp}` in {}", log.display()))?;
    Ok(SystemTime::from(at))
}
