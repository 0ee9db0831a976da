//! Operations on the in-cluster gateway (`cargo xtask dev --in-cluster`) as
//! users perform them, under steady load on a warm view through
//! `localhost`: `kubectl rollout restart deployment/gateway` and deleting
//! one gateway pod fail no request.
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
use test_support::{eventually, workspace_binary};

const NAMESPACE: &str = "views";
const VIEW: &str = "warmops";
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

fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(test_support::gateway::kubectl())
        .arg("--kubeconfig")
        .arg(test_support::kubeconfig_path())
        .args(args)
        .output()
        .context("running kubectl")?;
    ensure!(
        output.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
    let names = kubectl(&[
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
        .args(["dev", "--in-cluster", "--detach"])
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
    let address = SocketAddr::from(([127, 0, 0, 1], port()));
    let http = reqwest::Client::builder()
        .resolve("localhost", address)
        .resolve(&format!("{VIEW}.localhost"), address)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");

    // A warm view: created (or there from an earlier run) and started.
    let created = http
        .post(url("localhost", "/_api/views"))
        .json(&json!({"name": VIEW, "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}]}))
        .send()
        .await
        .expect("POST /_api/views");
    expect_that!(created.status().as_u16(), any![eq(201), eq(409)]);
    eventually(Duration::from_secs(120), || async {
        let response = http
            .get(url(&format!("{VIEW}.localhost"), "/healthz"))
            .send()
            .await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        Ok(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients = start_load(&http, &stop, &load);

    // 1. A rolling restart: new pods first, old ones drained.
    let restart = tokio::task::spawn_blocking(|| {
        kubectl(&["-n", NAMESPACE, "rollout", "restart", "deployment/gateway"])?;
        kubectl(&[
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
        kubectl(&["-n", NAMESPACE, "delete", "pod", &victim, "--wait=true"])?;
        kubectl(&[
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

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a load client");
    }
    let ok = load.ok.load(Ordering::Relaxed);
    let failures = load.failures.lock().expect("lock").clone();
    eprintln!(
        "warm requests answered 200: {after_restart} through the rollout restart, {} through the pod deletion; failed: {}",
        ok - after_restart,
        failures.len()
    );
    expect_that!(failures, is_empty());
    expect_that!(after_restart, gt(100));
    expect_that!(ok - after_restart, gt(100));

    let deleted = http
        .delete(url("localhost", &format!("/_api/views/{VIEW}")))
        .send()
        .await
        .expect("DELETE the view");
    expect_that!(deleted.status().as_u16(), eq(204));
}
