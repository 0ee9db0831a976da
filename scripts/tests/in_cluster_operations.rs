//! Operations on the in-cluster gateway (`cargo xtask dev --in-cluster`) as
//! users perform them, under steady load on a warm view through
//! `localhost`: `kubectl rollout restart deployment/gateway`, deleting one
//! gateway pod and changing `VIEW_IMAGE` (another gateway rollout) fail no
//! request. The new image reaches new starts while the running view keeps
//! its pod; deleting that view's Job rolls it to the new image at its next
//! request.
//!
//! The load: a few clients with keep-alive connections (as browsers and
//! HTTP libraries keep them), each sending one request after another to the
//! view's `/healthz` through the local load balancer, the gateway Service
//! and either replica's Envoy, which sends warm requests straight to the
//! view's pod.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use googletest::prelude::*;
use serde_json::json;
use test_support::gateway::kubectl_output;
use test_support::{eventually, workspace_binary};

const NAMESPACE: &str = "views";
const VIEW: &str = "warmops";
/// A view started after VIEW_IMAGE changed.
const FRESH: &str = "newimage";
const CLIENTS: usize = 4;

fn port() -> u16 {
    std::env::var("VIEWS_GATEWAY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

fn url(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", port())
}

/// An HTTP client (its own connection pool) that resolves the gateway's
/// hosts to the loopback address, as curl and browsers do.
fn client() -> reqwest::Client {
    let address = SocketAddr::from(([127, 0, 0, 1], port()));
    reqwest::Client::builder()
        .resolve("localhost", address)
        .resolve(&format!("{VIEW}.localhost"), address)
        .resolve(&format!("{FRESH}.localhost"), address)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// What the load saw: requests answered 200, and every other outcome.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

/// `CLIENTS` clients, each with its own connection pool, sending requests
/// one after another until `stop`.
fn start_load(
    http: &reqwest::Client,
    stop: &Arc<AtomicBool>,
    load: &Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (http, stop, load) = (http.clone(), stop.clone(), load.clone());
            tokio::spawn(async move {
                let target = url(&format!("{VIEW}.localhost"), "/healthz");
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match http.get(&target).send().await {
                        Ok(response) if response.status() == 200 => {
                            let _ = response.bytes().await;
                            load.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            let failure = format!(
                                "HTTP {} after {:?}: {}",
                                response.status(),
                                started.elapsed(),
                                response.text().await.unwrap_or_default()
                            );
                            load.failures.lock().expect("lock").push(failure);
                        }
                        Err(error) => load
                            .failures
                            .lock()
                            .expect("lock")
                            .push(format!("{error:?} after {:?}", started.elapsed())),
                    }
                }
            })
        })
        .collect()
}

/// The gateway's pods that are not being deleted.
fn gateway_pods() -> anyhow::Result<Vec<String>> {
    let names = kubectl_output(&[
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=views-gateway",
        "-o",
        "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}-{.metadata.name} {end}|{range .items[*]}{.metadata.name} {end}",
    ])?;
    let (deleting, all) = names.split_once('|').context("kubectl's output")?;
    let deleting: Vec<&str> = deleting.split_whitespace().map(|n| &n[1..]).collect();
    Ok(all
        .split_whitespace()
        .filter(|name| !deleting.contains(name))
        .map(str::to_owned)
        .collect())
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_restart_and_a_deleted_gateway_pod_fail_no_warm_request() {
    let output = Command::new(workspace_binary("xtask"))
        .args(["dev", "--in-cluster", "--no-sign-in", "--detach"])
        .env("VIEWS_GATEWAY_PORT", port().to_string())
        .current_dir(test_support::repo_root())
        .output()
        .expect("running xtask dev --in-cluster");
    assert!(
        output.status.success(),
        "xtask dev --in-cluster failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let http = client();

    // A warm view: created (or there from an earlier run) and started.
    let created = http
        .post(url("localhost", "/_api/views"))
        .json(&json!({"name": VIEW, "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}]}))
        .send()
        .await
        .expect("POST /_api/views");
    expect_that!(created.status().as_u16(), any![eq(201), eq(409)]);
    // A run of an earlier, failed test may still be there, on another image:
    // this test's warm view starts now, on the gateway's VIEW_IMAGE.
    expect_that!(delete_view_jobs(), ok(anything()));
    eventually(Duration::from_secs(120), || async {
        let response = http
            .get(url(&format!("{VIEW}.localhost"), "/healthz"))
            .send()
            .await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        Ok(())
    })
    .await;

    // The image step 3 moves to, built before the load starts.
    let new_image = tokio::task::spawn_blocking(dockerfile_view_image)
        .await
        .expect("the image's task");

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients = start_load(&client(), &stop, &load);

    // 1. A rolling restart: new pods first, old ones drained.
    let restart = tokio::task::spawn_blocking(|| {
        kubectl_output(&["-n", NAMESPACE, "rollout", "restart", "deployment/gateway"])?;
        kubectl_output(&[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deployment/gateway",
            "--timeout=5m",
        ])
    })
    .await
    .expect("the restart's task");
    expect_that!(restart, ok(contains_substring("successfully rolled out")));
    let after_restart = load.ok.load(Ordering::Relaxed);

    // 2. One gateway pod deleted (as a node drain or an eviction would):
    // the other serves; the Deployment replaces it.
    let pods = gateway_pods().expect("the gateway's pods");
    expect_that!(pods.len(), eq(2));
    let victim = pods[0].clone();
    let deleted = tokio::task::spawn_blocking(move || {
        kubectl_output(&["-n", NAMESPACE, "delete", "pod", &victim, "--wait=true"])?;
        kubectl_output(&[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deployment/gateway",
            "--timeout=5m",
        ])
    })
    .await
    .expect("the deletion's task");
    expect_that!(deleted, ok(anything()));

    // 3. A new VIEW_IMAGE: the view's image built from its Dockerfile
    // instead of the fast path's. The gateway rolls out again; the running
    // view keeps its pod and image.
    let warm_pod = view_pod(VIEW).expect("the warm view's pod");
    let previous = kubectl_output(&[
        "-n",
        NAMESPACE,
        "get",
        "deployment",
        "gateway",
        "-o",
        r#"jsonpath={.spec.template.spec.containers[?(@.name=="sidecar")].env[?(@.name=="VIEW_IMAGE")].value}"#,
    ])
    .expect("the gateway's VIEW_IMAGE");
    expect_that!(warm_pod.1, not(eq(new_image)));
    let changed = tokio::task::spawn_blocking(move || set_view_image(new_image.to_owned()))
        .await
        .expect("the change's task");
    expect_that!(changed, ok(contains_substring("successfully rolled out")));
    expect_that!(view_pod(VIEW).ok(), some(eq(&warm_pod)));

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a load client");
    }
    let answered = load.ok.load(Ordering::Relaxed);
    let failures = load.failures.lock().expect("lock").clone();
    eprintln!(
        "warm requests answered 200: {after_restart} through the rollout restart, {} through the pod deletion and the VIEW_IMAGE change; failed: {}",
        answered - after_restart,
        failures.len()
    );
    expect_that!(failures, is_empty());
    expect_that!(after_restart, gt(100));
    expect_that!(answered - after_restart, gt(100));

    // New starts get the new image once the rollout is over: the replaced
    // replicas gone, not only the new ones ready (a replica being replaced
    // serves what still reaches it, with its own VIEW_IMAGE, until its Envoy
    // has gone). (The API over new connections, as below: the load's were
    // kept alive through the rollouts.)
    eventually(Duration::from_secs(90), || async {
        let pods = kubectl_output(&[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=views-gateway",
            "-o",
            "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name} {end}",
        ])?;
        ensure!(pods.trim().is_empty(), "still being replaced: {pods}");
        Ok(())
    })
    .await;
    let http = client();
    let fresh = FRESH;
    let created = http
        .post(url("localhost", "/_api/views"))
        .json(&json!({"name": fresh, "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}]}))
        .send()
        .await
        .expect("POST /_api/views");
    let status = created.status().as_u16();
    let body = created.text().await.unwrap_or_default();
    expect_that!(status, any![eq(201), eq(409)], "{body}");
    let warm = |view: &'static str| {
        let http = http.clone();
        async move {
            eventually(Duration::from_secs(120), || async {
                let response = http
                    .get(url(&format!("{view}.localhost"), "/healthz"))
                    .send()
                    .await?;
                ensure!(response.status() == 200, "HTTP {}", response.status());
                Ok(())
            })
            .await
        }
    };
    warm(fresh).await;
    expect_that!(
        view_pod(fresh).map(|(_, image)| image).ok(),
        some(eq(new_image))
    );
    // A running view moves to the new image when its Job ends: at its idle
    // timeout or deadline, or now, by deleting the Job.
    expect_that!(delete_view_jobs(), ok(anything()));
    warm(VIEW).await;
    expect_that!(
        view_pod(VIEW).map(|(_, image)| image).ok(),
        some(eq(new_image))
    );

    // Back to the image `dev --in-cluster` set: another rollout, and the
    // clean-up's API calls right after it, on new connections that may
    // still reach a replica being replaced (its sidecar serves its Envoy
    // until that has gone; see the README's "Operations").
    let http = client();
    let restored = tokio::task::spawn_blocking(move || set_view_image(previous.trim().to_owned()))
        .await
        .expect("the restore's task");
    expect_that!(restored, ok(anything()));
    for view in [fresh, VIEW] {
        let deleted = http
            .delete(url("localhost", &format!("/_api/views/{view}")))
            .send()
            .await
            .expect("DELETE a view");
        let status = deleted.status().as_u16();
        let body = deleted.text().await.unwrap_or_default();
        expect_that!(status, eq(204), "{body}");
    }
}

/// The running pod of `view` (not being deleted): its name and image.
fn view_pod(view: &str) -> anyhow::Result<(String, String)> {
    let pods: serde_json::Value = serde_json::from_str(&kubectl_output(&[
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        &format!("views.dev/view={view}"),
        "--field-selector=status.phase=Running",
        "-o",
        "json",
    ])?)?;
    let running: Vec<(String, String)> = pods["items"]
        .as_array()
        .context("a pod list")?
        .iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .map(|pod| {
            (
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pod["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    ensure!(running.len() == 1, "not one running pod: {running:?}");
    Ok(running.into_iter().next().expect("one pod"))
}

/// Set the sidecars' VIEW_IMAGE and wait for the gateway's rollout.
fn set_view_image(image: String) -> anyhow::Result<String> {
    kubectl_output(&[
        "-n",
        NAMESPACE,
        "set",
        "env",
        "deployment/gateway",
        "-c",
        "sidecar",
        &format!("VIEW_IMAGE={image}"),
    ])?;
    kubectl_output(&[
        "-n",
        NAMESPACE,
        "rollout",
        "status",
        "deployment/gateway",
        "--timeout=5m",
    ])
}

/// The view image built from its Dockerfile (`xtask images duckdb-view`;
/// CI has built it before the tests, so this only checks).
fn dockerfile_view_image() -> &'static str {
    let output = Command::new(workspace_binary("xtask"))
        .args(["images", "duckdb-view"])
        .current_dir(test_support::repo_root())
        .output()
        .expect("running xtask images");
    assert!(
        output.status.success(),
        "xtask images duckdb-view failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    "ghcr.io/views-gateway/duckdb-view:0.1.0"
}

/// Delete the test view's Jobs and wait until their pods are gone too, so
/// the next request starts a new run.
fn delete_view_jobs() -> anyhow::Result<String> {
    kubectl_output(&[
        "-n",
        NAMESPACE,
        "delete",
        "job",
        "-l",
        &format!("views.dev/view={VIEW}"),
        "--cascade=foreground",
        "--wait=true",
    ])
}
