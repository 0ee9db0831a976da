//! A gateway replica cut off from the Kubernetes API server (a TCP proxy of
//! the test's own between the sidecar and the shared cluster's API server,
//! stopped and started; the API server itself is never touched): it stays
//! ready and keeps serving warm views, refuses what needs the API server
//! with 503 + Retry-After, and is back in step within 5 s of its return,
//! whether its connections were reset or died without a word.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use googletest::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::gateway::Gateway;
use test_support::proxy::TcpProxy;
use test_support::{TestNamespace, echo_view_pod, eventually};

/// The bound: back in step within this of the API server's return.
const RECOVERY: Duration = Duration::from_secs(5);
/// How long the API server stays away: long enough for the watches to
/// back off to their longest pause between attempts.
const OUTAGE: Duration = Duration::from_secs(10);

async fn post_view(gateway: &Gateway, name: &str) -> reqwest::Response {
    gateway
        .client()
        .post(gateway.url("localhost", "/_api/views"))
        .json(&json!({"name": name, "subsets": [{"bucket": "lake", "prefixes": [format!("{name}/")]}]}))
        .send()
        .await
        .expect("POST /_api/views")
}

async fn readyz(gateway: &Gateway) -> anyhow::Result<(StatusCode, Value)> {
    let response = gateway
        .client()
        .get(gateway.ops_url("/readyz"))
        .send()
        .await?;
    Ok((response.status(), response.json().await?))
}

/// What went wrong with requests that must keep working, sampled every
/// 100 ms until `stop` is set: the sidecar's readiness, Envoy's (through
/// the sidecar), and a warm view.
async fn sample_serving(gateway: Arc<Gateway>, stop: Arc<AtomicBool>) -> Vec<String> {
    let client = gateway.client();
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for url in [
            gateway.ops_url("/readyz"),
            gateway.url("localhost", "/_api/readyz"),
            gateway.url("warm.localhost", "/"),
        ] {
            match client.get(&url).send().await {
                Ok(response) if response.status() == StatusCode::OK => {}
                Ok(response) => failures.push(format!("{url}: {}", response.status())),
                Err(error) => failures.push(format!("{url}: {error:#}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failures
}

#[gtest]
#[tokio::test]
async fn cut_off_from_the_api_server_a_replica_stays_ready_and_catches_up_within_5_s() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let mut proxy = TcpProxy::start(test_support::api_server_address()).await;
    let gateway = Arc::new(
        Gateway::start_with_api_server(
            "outage",
            namespace.name(),
            &[],
            &format!("https://{}", proxy.address()),
        )
        .await,
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    for view in ["warm", "late"] {
        expect_that!(
            post_view(&gateway, view).await.status(),
            eq(StatusCode::CREATED)
        );
    }
    pods.create(
        &PostParams::default(),
        &echo_view_pod("warm-1", "warm", "hello", true),
    )
    .await
    .expect("pod");
    gateway.wait_serving("warm").await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_serving(gateway.clone(), stop.clone()));
    proxy.cut().await;
    let cut = Instant::now();

    // Ready all along, saying what is degraded.
    let degraded = eventually(Duration::from_secs(10), || async {
        let (status, body) = readyz(&gateway).await?;
        ensure!(status == StatusCode::OK, "readyz {status}: {body}");
        ensure!(body["degraded"] == json!(["kubernetes"]), "{body}");
        Ok(body)
    })
    .await;
    eprintln!("outage noticed after {:?}", cut.elapsed());
    expect_that!(degraded["kubernetes"]["state"], eq(&json!("unreachable")));
    expect_that!(degraded["kubernetesReachable"], eq(&json!(false)));

    // What needs the API server: 503, Retry-After, a machine-readable reason.
    let refused = post_view(&gateway, "newer").await;
    expect_that!(refused.status(), eq(StatusCode::SERVICE_UNAVAILABLE));
    expect_that!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
        some(gt(0))
    );
    let body: Value = refused.json().await.expect("error JSON");
    expect_that!(body["error"], eq(&json!("kubernetes_unavailable")));
    expect_that!(body["details"]["retryAfterSeconds"].as_u64(), some(gt(0)));
    let refused = gateway
        .client()
        .delete(gateway.url("localhost", "/_api/views/warm"))
        .send()
        .await
        .expect("DELETE");
    expect_that!(refused.status(), eq(StatusCode::SERVICE_UNAVAILABLE));
    expect_that!(refused.headers().get("retry-after"), some(anything()));
    expect_that!(
        gateway.metric("views_gateway_kubernetes_api_up", "").await,
        eq(0.0)
    );
    // A cold start too (ext_authz, through Envoy).
    let cold = gateway
        .client()
        .get(gateway.url("late.localhost", "/"))
        .send()
        .await
        .expect("GET a cold view");
    expect_that!(cold.status(), eq(StatusCode::SERVICE_UNAVAILABLE));
    expect_that!(cold.headers().get("retry-after"), some(anything()));
    let body: Value = cold.json().await.expect("error JSON");
    expect_that!(body["error"], eq(&json!("kubernetes_unavailable")));

    // Meanwhile Kubernetes moves on: a pod of view `late` becomes ready.
    pods.create(
        &PostParams::default(),
        &echo_view_pod("late-1", "late", "later", true),
    )
    .await
    .expect("pod");
    wait_ready_in_kubernetes(&client, namespace.name(), "late").await;
    let late = view(&gateway, "late").await.expect("GET view late");
    expect_that!(
        late["status"]["phase"],
        eq(&json!("cold")),
        "the replica cannot know yet"
    );

    // The outage's length is the scenario, not a wait for some state (the
    // sampler checks all along that the replica keeps serving).
    tokio::time::sleep_until((cut + OUTAGE).into()).await;
    proxy.restore().await;
    let restored = Instant::now();
    eventually(RECOVERY * 2, || async {
        let late = view(&gateway, "late").await?;
        ensure!(late["status"]["phase"] == "ready", "{late}");
        Ok(())
    })
    .await;
    let caught_up = restored.elapsed();
    eventually(RECOVERY * 2, || async {
        let created = post_view(&gateway, "newer").await;
        ensure!(
            created.status() == StatusCode::CREATED,
            "{}",
            created.status()
        );
        Ok(())
    })
    .await;
    let writing = restored.elapsed();
    eventually(RECOVERY * 2, || async {
        let (status, body) = readyz(&gateway).await?;
        ensure!(status == StatusCode::OK, "readyz {status}: {body}");
        ensure!(body["degraded"] == json!([]), "{body}");
        Ok(())
    })
    .await;
    let healthy = restored.elapsed();
    expect_that!(
        gateway.metric("views_gateway_kubernetes_api_up", "").await,
        eq(1.0)
    );
    eprintln!(
        "after the API server's return (cut for {:?}): index caught up in {caught_up:?}, \
         creates accepted in {writing:?}, nothing degraded in {healthy:?}",
        restored - cut
    );
    expect_that!(caught_up, lt(RECOVERY));
    expect_that!(writing, lt(RECOVERY));
    expect_that!(healthy, lt(RECOVERY));

    stop.store(true, Ordering::Relaxed);
    let failures = sampler.await.expect("sampler");
    expect_that!(failures, is_empty());
}

async fn view(gateway: &Gateway, name: &str) -> anyhow::Result<Value> {
    let response = gateway
        .client()
        .get(gateway.url("localhost", &format!("/_api/views/{name}")))
        .send()
        .await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    Ok(response.json().await?)
}

#[gtest]
#[tokio::test]
async fn when_its_api_server_connections_die_silently_a_replica_catches_up_within_5_s_of_the_return()
 {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let mut proxy = TcpProxy::start(test_support::api_server_address()).await;
    let gateway = Gateway::start_with_api_server(
        "stall",
        namespace.name(),
        &[],
        &format!("https://{}", proxy.address()),
    )
    .await;
    expect_that!(
        post_view(&gateway, "late").await.status(),
        eq(StatusCode::CREATED)
    );

    // Every connection, the watches' too, stays open and answers nothing.
    proxy.stall();
    let stalled = Instant::now();
    eventually(Duration::from_secs(10), || async {
        let (status, body) = readyz(&gateway).await?;
        ensure!(status == StatusCode::OK, "readyz {status}: {body}");
        ensure!(body["degraded"] == json!(["kubernetes"]), "{body}");
        Ok(())
    })
    .await;
    eprintln!("silence noticed after {:?}", stalled.elapsed());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    pods.create(
        &PostParams::default(),
        &echo_view_pod("late-1", "late", "later", true),
    )
    .await
    .expect("pod");
    wait_ready_in_kubernetes(&client, namespace.name(), "late").await;

    // The watches' connections stay dead: only starting over helps.
    proxy.restore().await;
    let restored = Instant::now();
    eventually(RECOVERY * 2, || async {
        let late = view(&gateway, "late").await?;
        ensure!(late["status"]["phase"] == "ready", "{late}");
        Ok(())
    })
    .await;
    let caught_up = restored.elapsed();
    eprintln!(
        "after the API server's return (silent for {:?}): index caught up in {caught_up:?}",
        restored - stalled
    );
    expect_that!(caught_up, lt(RECOVERY));
}

/// Until Kubernetes has a ready endpoint of `view` (its pod is ready).
async fn wait_ready_in_kubernetes(client: &kube::Client, namespace: &str, view: &str) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name=view-{view}");
    eventually(Duration::from_secs(30), || async {
        let listed = slices
            .list(&ListParams::default().labels(&selector))
            .await?;
        let ready = listed.items.iter().flat_map(|s| &s.endpoints).any(|e| {
            e.conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or_default()
        });
        ensure!(ready, "no ready endpoint of view-{view} in Kubernetes yet");
        Ok(())
    })
    .await;
}
