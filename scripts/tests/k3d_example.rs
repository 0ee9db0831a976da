//! The k3d example's steps (`k3d-example/README.md`) against the local
//! cluster, all but the two k3d commands: `cargo xtask dev --in-cluster`
//! makes the images and installs the example through its local overlay
//! (`scripts/dev/in-cluster`) on the real node; then, as the README says, the
//! gateway rolls out (step 5), a view is created (6), opened, queried and
//! refused data outside its subset (7), and deleted (8).
//!
//! What k3d would give for free is checked too: the gateway's two replicas
//! and the lake run as containers on real-node-0, and the view's container
//! runs with the hardened security context enforced (its process, seen from
//! this machine: user 65532, no capabilities, seccomp, no new privileges, a
//! read-only root file system).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::ensure;
use googletest::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;
use test_support::gateway::kubectl_output;
use test_support::{eventually, workspace_binary};

const NAMESPACE: &str = "views";
const VIEW: &str = "sales";

/// The port the gateway is served on (`VIEWS_GATEWAY_PORT`, 8080 as in the
/// README).
fn port() -> u16 {
    std::env::var("VIEWS_GATEWAY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

/// An HTTP client that resolves `localhost` and `<view>.localhost` to the
/// loopback address, as curl and browsers do.
fn http() -> reqwest::Client {
    let address = SocketAddr::from(([127, 0, 0, 1], port()));
    reqwest::Client::builder()
        .resolve("localhost", address)
        .resolve(&format!("{VIEW}.localhost"), address)
        .timeout(Duration::from_secs(150))
        .build()
        .expect("an HTTP client")
}

fn url(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", port())
}

/// The process of `pod`'s container on this machine: the one whose cgroup
/// names the pod's UID and which runs `program`.
fn container_process(pod_uid: &str, program: &str) -> anyhow::Result<u32> {
    // The kubelet's cgroup names use the UID with `_` for `-` under the
    // systemd driver and as is under cgroupfs: accept both.
    let names = [pod_uid.to_owned(), pod_uid.replace('-', "_")];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if names.iter().any(|name| cgroup.contains(name.as_str()))
            && argv0.ends_with(program.as_bytes())
        {
            return Ok(pid);
        }
    }
    anyhow::bail!("no process {program} in the cgroup of pod {pod_uid}")
}

#[gtest]
#[tokio::test]
async fn the_k3d_examples_steps_run_on_the_local_clusters_real_node() {
    // Steps 1-4: instead of k3d, the local cluster; instead of `docker
    // build` and `k3d image import`, the fast-path images made and imported
    // by the task; `kubectl apply -k` of the overlay (the task's), waiting
    // for both Deployments to roll out.
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

    // Step 5 (no sample-data Job here: the overlay's lake volume holds the
    // data, checked by the queries below).
    let rollout = kubectl_output(&[
        "-n",
        NAMESPACE,
        "rollout",
        "status",
        "deployment/gateway",
        "--timeout=5m",
    ]);
    expect_that!(rollout, ok(contains_substring("successfully rolled out")));
    let client = test_support::client().await;
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let placed = |selector: &str| {
        let pods = pods.clone();
        let selector = selector.to_owned();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("listing pods");
            list.items
                .into_iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .filter(|pod| {
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .map(|pod| pod.spec.and_then(|s| s.node_name).unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    expect_that!(
        placed("app.kubernetes.io/name=views-gateway").await,
        elements_are![eq("real-node-0"), eq("real-node-0")]
    );
    expect_that!(
        placed("app.kubernetes.io/name=lake").await,
        elements_are![eq("real-node-0")]
    );

    // Step 6: create the view (gone first, if an earlier run left it).
    let http = http();
    let gone = http
        .delete(url("localhost", &format!("/_api/views/{VIEW}")))
        .send()
        .await
        .expect("DELETE the view");
    expect_that!(gone.status().as_u16(), any![eq(204), eq(404)]);
    let body = json!({
        "name": VIEW,
        "subsets": [{
            "bucket": "lake",
            "prefixes": ["sales/"],
            "tables": { "orders": { "path": "sales/**/*.parquet", "format": "parquet" } }
        }]
    });
    // A view just deleted may still be on its way out (409 meanwhile).
    eventually(Duration::from_secs(60), || async {
        let created = http
            .post(url("localhost", "/_api/views"))
            .json(&body)
            .send()
            .await?;
        let status = created.status();
        ensure!(status == 201, "HTTP {status}: {}", created.text().await?);
        Ok(())
    })
    .await;
    let view: serde_json::Value = http
        .get(url("localhost", &format!("/_api/views/{VIEW}")))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET the view")
        .json()
        .await
        .expect("the view's JSON");
    expect_that!(view["name"].as_str(), some(eq(VIEW)));

    // Step 7: the first request starts the view (held until it is ready),
    // then the README's queries.
    let host = format!("{VIEW}.localhost");
    let page = http
        .get(url(&host, "/"))
        .send()
        .await
        .expect("GET the view's page");
    expect_that!(page.status().as_u16(), eq(200));
    let query = |sql: &'static str| {
        let http = http.clone();
        let url = url(&host, "/api/query");
        async move {
            let response = http
                .post(url)
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .expect("POST /api/query");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let (status, body) =
        query("SELECT nation, count(*) AS orders FROM orders GROUP BY ALL ORDER BY 2 DESC").await;
    expect_that!(status, eq(200), "{body}");
    let total: i64 = body["rows"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row[1].as_i64()).sum())
        .unwrap_or_default();
    // The sample data's sales/ prefix: 15000 orders.
    expect_that!(total, eq(15000), "{body}");
    let (status, body) = query("SELECT * FROM 's3://lake/sales-private/customers.parquet'").await;
    expect_that!(status, eq(403), "{body}");

    // The view ran as a real container on the real node, hardened.
    let view_pods = pods
        .list(&ListParams::default().labels(&format!("views.dev/view={VIEW}")))
        .await
        .expect("listing the view's pods");
    let view_pod = view_pods
        .items
        .iter()
        .find(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .expect("a running pod of the view");
    expect_that!(
        view_pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        some(eq("real-node-0"))
    );
    let uid = view_pod.metadata.uid.clone().expect("a pod UID");
    let pid = container_process(&uid, "duckdb-view").expect("the view's process");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    expect_that!(
        status,
        contains_regex(r"(?m)^Uid:\s+65532\s+65532\s+65532\s+65532$")
    );
    expect_that!(status, contains_substring("CapEff:\t0000000000000000"));
    expect_that!(status, contains_substring("CapBnd:\t0000000000000000"));
    expect_that!(status, contains_substring("NoNewPrivs:\t1"));
    expect_that!(status, contains_substring("Seccomp:\t2"));
    // Its root mount (mount point `/` in its own namespace) is read-only.
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("its mounts");
    let root = mounts
        .lines()
        .find(|line| line.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    expect_that!(root.split(' ').nth(5), some(starts_with("ro")), "{root}");

    // Step 8: delete the view; its Job goes with it.
    let deleted = http
        .delete(url("localhost", &format!("/_api/views/{VIEW}")))
        .send()
        .await
        .expect("DELETE the view");
    expect_that!(deleted.status().as_u16(), eq(204));
    eventually(Duration::from_secs(60), || async {
        let jobs = kubectl_output(&[
            "-n",
            NAMESPACE,
            "get",
            "jobs",
            "-l",
            &format!("views.dev/view={VIEW}"),
            "-o",
            "name",
        ])?;
        ensure!(jobs.trim().is_empty(), "still there: {jobs}");
        Ok(())
    })
    .await;
}
