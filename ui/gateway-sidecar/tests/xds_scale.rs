//! What one view's change costs over xDS as the number of views grows: the
//! resource bytes the sidecar sends for adding one view, and the time from
//! its Service's creation until Envoy has ACKed routes for it, at 20 and at
//! 1,000 views (Services created directly, as the index sees them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::StreamExt;
use gateway_sidecar::config::Config;
use gateway_sidecar::index::{Snapshot, ViewState};
use gateway_sidecar::xds::resources::{self, ROUTE_TYPE, SCOPED_ROUTE_TYPE};
use googletest::prelude::*;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::Value;
use test_support::gateway::Gateway;
use test_support::{TestNamespace, eventually};

const BYTES_METRIC: &str = "views_gateway_xds_resource_bytes_total";
/// New views measured at each size.
const SAMPLES: usize = 5;

/// The larger size: 1,000 views (`XDS_SCALE_VIEWS` sets another).
fn large() -> usize {
    std::env::var("XDS_SCALE_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Envoy's heap in use (admin `/memory`), in MB.
async fn envoy_heap_mb(gateway: &Gateway) -> f64 {
    let memory: Value = reqwest::get(format!("http://127.0.0.1:{}/memory", gateway.admin_port))
        .await
        .expect("Envoy admin")
        .json()
        .await
        .expect("memory JSON");
    memory["allocated"]
        .as_str()
        .and_then(|a| a.parse::<f64>().ok())
        .unwrap_or_default()
        / 1e6
}

fn config(namespace: &str) -> Config {
    use clap::Parser;
    Config::parse_from(["gateway-sidecar", "--namespace", namespace])
}

fn view_service(name: &str, namespace: &str) -> Service {
    let spec = serde_json::from_value(
        serde_json::json!({"name": name, "subsets": [{"bucket": "lake", "prefixes": ["scale/"]}]}),
    )
    .expect("a view spec");
    gateway_sidecar::view::to_service(&spec, &config(namespace))
}

/// The bytes of every routing resource (scopes and route configurations)
/// for `names`: what a change would cost if it re-sent the route table.
fn route_table_bytes(names: &[String], namespace: &str) -> usize {
    let views = names
        .iter()
        .map(|name| {
            let service = view_service(name, namespace);
            let state = ViewState {
                spec: gateway_sidecar::view::from_service(&service).expect("a view"),
                uid: name.clone(),
                created_at: None,
                annotations: BTreeMap::new(),
                endpoints: Vec::new(),
                activations: BTreeMap::new(),
            };
            (name.clone(), Arc::new(state))
        })
        .collect();
    let snapshot = Snapshot {
        views,
        synced: true,
        ..Snapshot::default()
    };
    let built = resources::build(&snapshot, &config(namespace));
    [ROUTE_TYPE, SCOPED_ROUTE_TYPE]
        .iter()
        .flat_map(|t| {
            built
                .resources(t)
                .values()
                .map(|r| r.body.value.len())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Create the views `names` as Services, 16 at a time.
async fn create_all(services: &Api<Service>, namespace: &str, names: &[String]) {
    let created = futures::stream::iter(names.iter().map(|name| async move {
        services
            .create(&PostParams::default(), &view_service(name, namespace))
            .await
            .map(|_| ())
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let failed: Vec<_> = created.into_iter().filter_map(Result::err).collect();
    assert!(failed.is_empty(), "creating views: {failed:?}");
}

/// The view hosts the gateway's Envoy has ACKed routes for.
async fn routed_views(gateway: &Gateway) -> anyhow::Result<usize> {
    let envoys: Value = gateway.debug_envoys().await?;
    Ok(envoys[&gateway.name]["routed_hosts"]
        .as_array()
        .map_or(0, |hosts| {
            hosts
                .iter()
                .filter(|h| h.as_str().is_some_and(|h| h.starts_with("view-")))
                .count()
        }))
}

async fn is_routed(gateway: &Gateway, view: &str) -> anyhow::Result<bool> {
    let envoys: Value = gateway.debug_envoys().await?;
    let host = format!("view-{view}");
    Ok(envoys[&gateway.name]["routed_hosts"]
        .as_array()
        .is_some_and(|hosts| hosts.iter().any(|h| h == &host)))
}

async fn xds_bytes(gateway: &Gateway) -> f64 {
    gateway.metric(BYTES_METRIC, "").await
}

/// The xDS byte counter once it has stopped moving (no push in flight).
async fn settled_bytes(gateway: &Gateway) -> f64 {
    let mut last = xds_bytes(gateway).await;
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = xds_bytes(gateway).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// One size's figures: resource bytes sent and time until routed, per new view.
#[derive(Debug)]
struct Sample {
    bytes: Vec<f64>,
    routed_ms: Vec<f64>,
}

/// Add `SAMPLES` views one at a time, each measured on its own.
async fn measure(gateway: &Gateway, services: &Api<Service>, namespace: &str, tag: &str) -> Sample {
    let mut sample = Sample {
        bytes: Vec::new(),
        routed_ms: Vec::new(),
    };
    for i in 0..SAMPLES {
        let name = format!("{tag}{i:03}");
        let before = settled_bytes(gateway).await;
        let started = Instant::now();
        services
            .create(&PostParams::default(), &view_service(&name, namespace))
            .await
            .expect("creating a view");
        // Polled closely (the time is the figure), for 30 s at most.
        while !is_routed(gateway, &name).await.unwrap_or(false) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} not routed within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sample.routed_ms.push(started.elapsed().as_secs_f64() * 1e3);
        // Envoy itself routes the host: a gateway path on it reaches the
        // sidecar (without activating the view) instead of Envoy's 404.
        let probe = gateway
            .client()
            .get(gateway.url(&format!("{name}.localhost"), "/_gateway/probe"))
            .send()
            .await
            .expect("probe");
        let status = probe.status();
        let body = probe.text().await.unwrap_or_default();
        assert!(
            body != resources::NO_SUCH_VIEW,
            "{name}.localhost is not routed by Envoy: {status} {body:?}"
        );
        sample.bytes.push(settled_bytes(gateway).await - before);
    }
    sample
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[gtest]
#[tokio::test]
async fn one_view_change_costs_the_same_xds_bytes_at_20_and_1000_views() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("scale", namespace.name()).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let (small_size, large_size) = (20, large());

    let names = |from: usize, to: usize| (from..to).map(|i| format!("v{i:05}")).collect::<Vec<_>>();
    let mut figures = Vec::new();
    for (from, to, tag) in [(0, small_size, "a"), (small_size, large_size, "b")] {
        create_all(&services, namespace.name(), &names(from, to)).await;
        // The views measured at the smaller size are there too.
        let expected = to + if tag == "a" { 0 } else { SAMPLES };
        eventually(Duration::from_secs(300), || async {
            let routed = routed_views(&gateway).await?;
            ensure!(routed == expected, "{routed} of {expected} views routed");
            Ok(())
        })
        .await;
        let sample = measure(&gateway, &services, namespace.name(), tag).await;
        println!(
            "one new view at {expected} views: {} resource bytes (median; all {:?}); \
             routed after {:.0} ms (median; all {:.0?}); Envoy heap {:.0} MB",
            median(&sample.bytes),
            sample.bytes,
            median(&sample.routed_ms),
            sample.routed_ms,
            envoy_heap_mb(&gateway).await,
        );
        figures.push(sample);
    }
    let table = route_table_bytes(&names(0, large_size), namespace.name());
    println!("the route table at {large_size} views: {table} bytes");

    let (small_bytes, large_bytes) = (median(&figures[0].bytes), median(&figures[1].bytes));
    expect_that!(small_bytes, gt(0.0));
    // The same cost at 1,000 views as at 20 (a few bytes of slack: names and
    // hashes are not all the same length).
    expect_that!(large_bytes, le(small_bytes * 1.05 + 16.0));
    // … and a tiny part of the route table a state-of-the-world update re-sends.
    expect_that!(large_bytes * 100.0, lt(table as f64));
    // Unknown hosts still get the gateway's 404.
    let unknown = gateway
        .client()
        .get(gateway.url("nobody.localhost", "/"))
        .send()
        .await
        .expect("GET");
    expect_that!(unknown.status().as_u16(), eq(404));
    expect_that!(
        unknown.text().await.unwrap_or_default(),
        eq(resources::NO_SUCH_VIEW)
    );
}
