//! Pods on the real node (`real-node-0`: kubelet, containerd, runc) behave as
//! in any cluster: the hardened security context is enforced, limits reach the
//! container's cgroup, readiness follows an HTTP probe, the pod answers at its
//! IP, through a ClusterIP Service (kube-proxy) and by DNS name (CoreDNS) from
//! another pod, and `kubectl logs` and `kubectl exec` reach the kubelet.
//!
//! The test image is made here, from the workspace's echo server and
//! Debian's static busybox (the client pod's `wget` and `nslookup`, the shell
//! tools for `exec`), by `xtask cluster image`.
//!
//! The view workload's image built from `ui/duckdb-view/Dockerfile` (by
//! `xtask images`, on the base-image stand-ins) runs here too, hardened as
//! the gateway runs views, and queries the local lake through its httpfs
//! extension.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use googletest::prelude::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde_json::json;
use test_support::gateway::kubectl_output;
use test_support::{TestNamespace, eventually, workspace_binary};

const WAIT: Duration = Duration::from_secs(60);
const BUSYBOX: &str = "/bin/busybox";

/// The test image's reference (`views.dev/echo-server:<content hash>`).
fn test_image() -> String {
    let output = Command::new(workspace_binary("xtask"))
        .args(["cluster", "image", "views.dev/echo-server"])
        .arg(workspace_binary("echo-server"))
        .arg(BUSYBOX)
        .current_dir(test_support::repo_root())
        .output()
        .expect("running xtask cluster image");
    assert!(
        output.status.success(),
        "xtask cluster image failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `kubectl exec` of a busybox tool in `pod`; Ok(output) only if it succeeded.
fn exec(namespace: &str, pod: &str, command: &[&str]) -> anyhow::Result<String> {
    exec_in(namespace, pod, &[&[BUSYBOX], command].concat())
}

/// `kubectl exec` of a command of the image's own.
fn exec_in(namespace: &str, pod: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["-n", namespace, "exec", pod, "--"];
    args.extend_from_slice(command);
    kubectl_output(&args)
}

/// The hardened pod of a view: non-root, read-only root, no capabilities,
/// the runtime's seccomp profile, limits. `command` runs from the image's /bin.
fn hardened_pod(name: &str, image: &str, command: &[&str], probe: bool) -> Pod {
    let readiness =
        probe.then(|| json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}));
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "runtimeClassName": "runc",
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": name,
                "image": image,
                "imagePullPolicy": "Never",
                "command": command,
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": readiness,
                "resources": {
                    "requests": {"cpu": "50m", "memory": "32Mi"},
                    "limits": {"cpu": "200m", "memory": "64Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("pod")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(WAIT, || async {
        let pod = pods.get(name).await?;
        ensure!(is_ready(&pod), "{name} not ready yet: {:?}", pod.status);
        Ok(pod)
    })
    .await
}

#[gtest]
#[tokio::test]
async fn a_hardened_pod_runs_on_the_real_node_and_is_reached_by_ip_service_and_dns() {
    let client = test_support::client().await;
    // The blocking commands here (xtask, kubectl) are short, and nothing else
    // runs on this test's runtime meanwhile.
    let image = test_image();
    let namespace = TestNamespace::create(&client).await;
    let ns = namespace.name().to_owned();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for service in [
        json!({"metadata": {"name": "echo"}, "spec": {
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        }}),
        json!({"metadata": {"name": "echo-pods"}, "spec": {
            "clusterIP": "None",
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": 8080}],
        }}),
    ] {
        let service: Service = serde_json::from_value(service).expect("service");
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("creating a service");
    }
    let echo = hardened_pod("echo", &image, &["echo-server"], true);
    let client_pod = hardened_pod("client", &image, &["busybox", "sleep", "3600"], false);
    for pod in [&echo, &client_pod] {
        pods.create(&PostParams::default(), pod)
            .await
            .expect("creating a pod");
    }

    let echo = wait_ready(&pods, "echo").await;
    expect_that!(
        echo.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        some(eq("real-node-0"))
    );
    let ip = echo
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    expect_that!(ip.as_str(), starts_with("10.235.0."));
    let body = eventually(WAIT, || async {
        Ok(reqwest::get(format!("http://{ip}:8080/"))
            .await?
            .error_for_status()?
            .text()
            .await?)
    })
    .await;
    expect_that!(body, starts_with("pod: echo\n"));
    wait_ready(&pods, "client").await;

    let ns = ns.as_str();
    // Another pod reaches it through the ClusterIP Service and by name
    // (CoreDNS answers the Service's and the headless Service's names).
    for url in [
        format!("http://echo.{ns}.svc.cluster.local/"),
        format!("http://echo-pods.{ns}.svc.cluster.local:8080/"),
        "http://echo/".to_owned(),
    ] {
        // busybox's own `wget -T` crashes (Debian 1.35): `timeout` bounds it.
        let fetched = exec(
            ns,
            "client",
            &["timeout", "10", BUSYBOX, "wget", "-q", "-O", "-", &url],
        )
        .with_context(|| format!("GET {url} from the client pod"));
        expect_that!(
            fetched.map_err(|e| format!("{e:#}")),
            ok(starts_with("pod: echo\n"))
        );
    }
    let lookup = exec(
        ns,
        "client",
        &["nslookup", &format!("echo-pods.{ns}.svc.cluster.local")],
    );
    expect_that!(
        lookup.as_deref().ok(),
        some(contains_substring(ip.as_str()))
    );

    // Inside: the user asked for, no capabilities, seccomp filtering,
    // a read-only root and the memory limit in the container's cgroup.
    expect_that!(exec(ns, "echo", &["id", "-u"]).ok(), some(eq("65532\n")));
    let status = exec(ns, "echo", &["cat", "/proc/self/status"]).unwrap_or_default();
    expect_that!(status, contains_substring("CapEff:\t0000000000000000"));
    expect_that!(status, contains_substring("Seccomp:\t2"));
    let write = exec(ns, "echo", &["touch", "/written"]);
    expect_that!(
        write.map_err(|e| e.to_string()),
        err(contains_substring("Read-only file system"))
    );
    let memory_limit = exec(
        ns,
        "echo",
        &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
    );
    expect_that!(memory_limit.ok(), some(eq("67108864\n")));

    let logs = kubectl_output(&["-n", ns, "logs", "echo"]).map_err(|e| format!("{e:#}"));
    expect_that!(
        logs,
        ok(contains_substring("echo-server: listening on 0.0.0.0:8080"))
    );
}

/// Build (or find up to date) the duckdb-view image from its Dockerfile and
/// load it into the node: `xtask images duckdb-view`. CI has built every
/// image before the tests, so this only checks.
fn duckdb_view_image() -> &'static str {
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

#[gtest]
#[tokio::test]
async fn the_duckdb_view_image_from_its_dockerfile_runs_hardened_and_queries_the_lake() {
    let client = test_support::client().await;
    let image = duckdb_view_image();
    let lake: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(test_support::cache_dir().join("lake/lake.json"))
            .expect("lake.json: run `cargo xtask lake up`"),
    )
    .expect("lake.json");
    let namespace = TestNamespace::create(&client).await;
    let ns = namespace.name().to_owned();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // As the gateway starts a view, but with the lake's own keys: no user
    // set (the image's numeric USER must satisfy runAsNonRoot), read-only
    // root, no capabilities, the runtime's seccomp profile, limits.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "view"},
        "spec": {
            "runtimeClassName": "runc",
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "view",
                "image": image,
                "imagePullPolicy": "Never",
                "env": [
                    {"name": "VIEW_NAME", "value": "imaged"},
                    {"name": "VIEW_SUBSETS", "value": r#"[{"bucket":"lake","prefixes":["sales/"]}]"#},
                    {"name": "AWS_ENDPOINT_URL_S3", "value": lake["endpoint"]},
                    {"name": "AWS_REGION", "value": lake["region"]},
                    {"name": "AWS_ACCESS_KEY_ID", "value": lake["access_key_id"]},
                    {"name": "AWS_SECRET_ACCESS_KEY", "value": lake["secret_access_key"]},
                    {"name": "VIEW_THREADS", "value": "1"},
                    {"name": "VIEW_MEMORY_LIMIT", "value": "256MB"},
                ],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("creating the view pod");

    // Ready means DuckDB started, loaded httpfs from the image and locked down.
    let view = wait_ready(&pods, "view").await;
    expect_that!(
        view.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        some(eq("real-node-0"))
    );
    let ip = view
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    let http = reqwest::Client::new();
    let catalog: serde_json::Value = http
        .get(format!("http://{ip}:8080/api/catalog"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /api/catalog")
        .json()
        .await
        .expect("catalog JSON");
    expect_that!(catalog["view"].as_str(), some(eq("imaged")));
    expect_that!(catalog["engine"].as_str(), some(starts_with("DuckDB v1.")));
    // The sample data's sales/ prefix: 15000 orders, read over S3 by the
    // image's httpfs from the lake on this machine.
    let response = http
        .post(format!("http://{ip}:8080/api/query"))
        .json(&json!({"sql": "SELECT count(*) AS orders FROM read_parquet('s3://lake/sales/**/*.parquet')"}))
        .send()
        .await
        .expect("POST /api/query");
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("query JSON");
    expect_that!(status.as_u16(), eq(200), "{body}");
    expect_that!(body["rows"], eq(&json!([[15000]])), "{body}");

    // The image's user, and its root really read-only.
    expect_that!(
        exec_in(&ns, "view", &["id", "-u"]).ok(),
        some(eq("65532\n"))
    );
    expect_that!(
        exec_in(&ns, "view", &["touch", "/usr/local/bin/written"]).map_err(|e| e.to_string()),
        err(contains_substring("Read-only file system"))
    );
}
