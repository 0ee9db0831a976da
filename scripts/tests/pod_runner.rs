//! Pods of RuntimeClass `process` run as real processes at real pod IPs: the
//! pod runner (the kubelet of process-node-0) against the local cluster.
//!
//! All process pods share one network namespace, so each echo server listens
//! on its own pod IP (`--listen $(POD_IP):$(PORT)`), never on 0.0.0.0.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use googletest::prelude::*;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use test_support::{TestNamespace, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
const IMAGE: &str = "views.dev/echo-server:latest";

/// An echo-server pod; `extra_args` follow `--listen <pod IP>:8080`.
fn echo_pod(name: &str, extra_args: &[&str], probe: serde_json::Value) -> Pod {
    let mut args = vec!["--listen", "$(POD_IP):$(PORT)"];
    args.extend_from_slice(extra_args);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "runtimeClassName": "process",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "echo",
                "image": IMAGE,
                "command": ["echo-server"],
                "args": args,
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [
                    {"name": "PORT", "value": "8080"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "ECHO_MESSAGE", "valueFrom": {"secretKeyRef": {"name": "echo", "key": "message"}}},
                ],
                "readinessProbe": probe,
            }],
        },
    }))
    .expect("pod")
}

fn healthz_probe() -> serde_json::Value {
    json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1})
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.phase.clone()
}

fn node(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn pod_ip(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    status.and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

fn container(pod: &Pod) -> anyhow::Result<ContainerStatus> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses
        .and_then(|cs| cs.first().cloned())
        .context("no container status yet")
}

/// The process id behind the container, from its `process://<pid>` ID.
fn container_pid(pod: &Pod) -> Option<u32> {
    let id = container(pod).ok()?.container_id?;
    id.strip_prefix("process://")?.parse().ok()
}

fn process_command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_owned(),
    )
}

async fn create_secret(client: &kube::Client, namespace: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "stringData": {"message": "hello from a secret"},
    }))
    .expect("secret");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let created = secrets.create(&PostParams::default(), &secret).await;
    created.expect("creating the secret");
}

async fn create_pods(pods: &Api<Pod>, all: &[Pod]) {
    for pod in all {
        pods.create(&PostParams::default(), pod)
            .await
            .expect("creating a pod");
    }
}

/// `GET path` over plain HTTP/1.1; returns the status code and body.
async fn http_get(ip: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect((ip, port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("no answer within 2s")??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed response")?;
    let status = head.split_whitespace().nth(1).context("no status code")?;
    Ok((status.parse()?, body.to_owned()))
}

async fn ready_endpoints(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> anyhow::Result<Vec<String>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let list = slices
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(list
        .items
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.clone())
        .collect())
}

#[gtest]
#[tokio::test]
async fn a_process_pod_serves_http_at_its_pod_ip_until_it_is_deleted() {
    test_support::workspace_binary("echo-server");
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    create_secret(&client, namespace.name()).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": 8080}],
        },
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    create_pods(
        &pods,
        &[echo_pod(
            "echo",
            &["--ready-after-ms", "500"],
            healthz_probe(),
        )],
    )
    .await;

    let pod = eventually(WAIT, || async {
        let pod = pods.get("echo").await?;
        ensure!(is_ready(&pod), "not ready yet: {:?}", pod.status);
        Ok(pod)
    })
    .await;
    let ip = pod_ip(&pod);
    let pid = container_pid(&pod).expect("a process:// container ID");
    let command_line = process_command_line(pid);
    expect_that!(node(&pod), some(eq("process-node-0")));
    expect_that!(phase(&pod), some(eq("Running")));
    expect_that!(ip, starts_with("10.233."));
    // `$(POD_IP)` and `$(PORT)` were expanded from the pod's env, as the kubelet does.
    let expected = format!("echo-server --listen {ip}:8080 --ready-after-ms 500");
    expect_that!(command_line, some(ends_with(expected)));

    let (status, body) = http_get(&ip, 8080, "/")
        .await
        .expect("the pod answers at its IP");
    expect_that!(status, eq(200));
    expect_that!(body, eq("pod: echo\nmessage: hello from a secret\n"));

    let endpoints = eventually(WAIT, || async {
        let ready = ready_endpoints(&client, namespace.name(), "echo").await?;
        ensure!(!ready.is_empty(), "no ready endpoint yet");
        Ok(ready)
    })
    .await;
    expect_that!(endpoints, elements_are![eq(&ip)]);

    pods.delete("echo", &DeleteParams::default())
        .await
        .expect("delete");

    eventually(WAIT, || async {
        ensure!(pods.get_opt("echo").await?.is_none(), "pod still exists");
        Ok(())
    })
    .await;
    let refusal = eventually(WAIT, || async {
        match http_get(&ip, 8080, "/").await {
            Ok(answer) => bail!("{ip} still answers: {answer:?}"),
            Err(refused) => Ok(refused.to_string()),
        }
    })
    .await;
    expect_that!(refusal, not(eq("")));
    expect_that!(process_command_line(pid), none());
}

#[gtest]
#[tokio::test]
async fn a_readiness_probe_that_never_passes_keeps_the_pod_not_ready() {
    test_support::workspace_binary("echo-server");
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let events: Api<Event> = Api::namespaced(client.clone(), namespace.name());
    create_secret(&client, namespace.name()).await;
    create_pods(
        &pods,
        &[echo_pod(
            "stuck",
            &["--ready-after-ms", "3600000"],
            healthz_probe(),
        )],
    )
    .await;

    // Three failed probes, one a second, reported as they happen.
    let failures = eventually(WAIT, || async {
        let list = events.list(&ListParams::default()).await?;
        let unhealthy = list
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Unhealthy")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("stuck")
            })
            .context("no Unhealthy event yet")?;
        let count = unhealthy.series.as_ref().map_or(1, |s| s.count);
        ensure!(count >= 3, "only {count} failed probes so far");
        Ok(unhealthy)
    })
    .await;
    let pod = pods.get("stuck").await.expect("pod");
    let container = container(&pod).expect("container status");
    expect_that!(failures.note, some(starts_with("Readiness probe failed")));
    expect_that!(phase(&pod), some(eq("Running")));
    expect_that!(is_ready(&pod), eq(false));
    expect_that!(container.started, some(eq(true)));
    expect_that!(container.ready, eq(false));
    // The process itself is up and serving: only the probe holds it back.
    let (root, _) = http_get(&pod_ip(&pod), 8080, "/")
        .await
        .expect("the pod answers");
    let (healthz, _) = http_get(&pod_ip(&pod), 8080, "/healthz")
        .await
        .expect("the pod answers");
    expect_that!(root, eq(200));
    expect_that!(healthz, eq(503));
}

#[gtest]
#[tokio::test]
async fn exits_follow_the_restart_policy() {
    test_support::workspace_binary("echo-server");
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    create_secret(&client, namespace.name()).await;
    let mut never = echo_pod("never", &["--no-such-flag"], json!(null));
    let mut on_failure = echo_pod("on-failure", &["--no-such-flag"], json!(null));
    let spec = never.spec.as_mut().expect("spec");
    spec.restart_policy = Some("Never".into());
    spec.containers[0].termination_message_policy = Some("FallbackToLogsOnError".into());
    on_failure.spec.as_mut().expect("spec").restart_policy = Some("OnFailure".into());
    create_pods(&pods, &[never, on_failure]).await;

    let failed = eventually(WAIT, || async {
        let pod = pods.get("never").await?;
        ensure!(
            phase(&pod).as_deref() == Some("Failed"),
            "phase {:?}",
            phase(&pod)
        );
        let terminated = container(&pod)?.state.and_then(|s| s.terminated);
        terminated.context("no terminated state")
    })
    .await;
    expect_that!(failed.exit_code, eq(2));
    expect_that!(failed.reason, some(eq("Error")));
    expect_that!(failed.message, some(contains_substring("unknown argument")));

    let restarting = eventually(WAIT, || async {
        let pod = pods.get("on-failure").await?;
        let container = container(&pod)?;
        ensure!(container.restart_count >= 1, "not restarted yet");
        Ok((phase(&pod), container))
    })
    .await;
    let last_exit = restarting.1.last_state.and_then(|s| s.terminated);
    expect_that!(restarting.0, some(eq("Running")));
    expect_that!(last_exit.map(|t| t.exit_code), some(eq(2)));
}

#[gtest]
#[tokio::test]
async fn pods_the_runner_cannot_run_say_why() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    create_secret(&client, namespace.name()).await;
    let mut unmapped = echo_pod("unmapped", &[], json!(null));
    unmapped.spec.as_mut().expect("spec").containers[0].image =
        Some("views.dev/not-mapped:1".into());
    let mut two_containers = echo_pod("two", &[], json!(null));
    let spec = two_containers.spec.as_mut().expect("spec");
    let mut second = spec.containers[0].clone();
    second.name = "second".into();
    spec.containers.push(second);
    create_pods(&pods, &[unmapped, two_containers]).await;

    let (unmapped_phase, waiting) = eventually(WAIT, || async {
        let pod = pods.get("unmapped").await?;
        let waiting = container(&pod)?
            .state
            .and_then(|s| s.waiting)
            .context("not waiting")?;
        ensure!(
            waiting.reason.as_deref() != Some("ContainerCreating"),
            "still creating"
        );
        Ok((phase(&pod), waiting))
    })
    .await;
    expect_that!(unmapped_phase, some(eq("Pending")));
    expect_that!(waiting.reason, some(eq("ErrImagePull")));
    let why = waiting.message;
    expect_that!(why, some(contains_substring("process-images.toml")));

    let refused = eventually(WAIT, || async {
        let pod = pods.get("two").await?;
        ensure!(
            phase(&pod).as_deref() == Some("Failed"),
            "phase {:?}",
            phase(&pod)
        );
        Ok(pod.status.unwrap_or_default())
    })
    .await;
    expect_that!(refused.reason, some(eq("UnsupportedPodSpec")));
    let why = refused.message;
    expect_that!(why, some(contains_substring("exactly one container")));
}
