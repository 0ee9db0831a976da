//! What the cluster holds besides its processes: the two simulated nodes, the
//! `process` RuntimeClass and the real node's objects, applied server-side
//! (so a repeated `up` changes nothing), and the checks that say the cluster
//! is usable.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::Layout;
use super::components::Component;
use super::real_node;

const FIELD_MANAGER: &str = "views-cluster";
/// Simulated pods (kwok stages) run here.
pub const SIMULATED_NODE: &str = "kwok-node-0";
/// Pods of RuntimeClass `process` run here, as real processes.
pub const PROCESS_NODE: &str = "process-node-0";
pub const PROCESS_RUNTIME_CLASS: &str = "process";
const RUNTIME_LABEL: &str = "views.dev/pod-runtime";

pub async fn client(layout: &Layout) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(&layout.kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn readyz(client: &kube::Client) -> anyhow::Result<String> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

/// Wait for the API server's `/readyz`, failing fast if it exits.
pub async fn wait_for_api(layout: &Layout, apiserver: &Component) -> anyhow::Result<()> {
    let client = client(layout).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match readyz(&client).await {
            Ok(_) => return Ok(()),
            Err(error) if apiserver.running(layout).is_none() || Instant::now() > deadline => {
                bail!(
                    "kube-apiserver is not ready ({error}); see {}",
                    apiserver.log_file(layout).display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Register both nodes and the `process` RuntimeClass.
pub async fn apply(client: &kube::Client) -> anyhow::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, runtime, taints) in [
        (SIMULATED_NODE, "simulated", json!([])),
        (
            PROCESS_NODE,
            PROCESS_RUNTIME_CLASS,
            json!([{"key": RUNTIME_LABEL, "value": PROCESS_RUNTIME_CLASS, "effect": "NoSchedule"}]),
        ),
    ] {
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                // kwok heartbeats every node carrying this annotation.
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    RUNTIME_LABEL: runtime,
                },
            },
            "spec": {"taints": taints},
        });
        nodes
            .patch(name, &params, &Patch::Apply(&node))
            .await
            .with_context(|| format!("registering node {name}"))?;
    }
    let runtime_classes: Api<RuntimeClass> = Api::all(client.clone());
    let runtime_class = json!({
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": PROCESS_RUNTIME_CLASS},
        "handler": PROCESS_RUNTIME_CLASS,
        "scheduling": {
            "nodeSelector": {RUNTIME_LABEL: PROCESS_RUNTIME_CLASS},
            "tolerations": [{
                "key": RUNTIME_LABEL, "operator": "Equal",
                "value": PROCESS_RUNTIME_CLASS, "effect": "NoSchedule",
            }],
        },
    });
    runtime_classes
        .patch(
            PROCESS_RUNTIME_CLASS,
            &params,
            &Patch::Apply(&runtime_class),
        )
        .await
        .context("registering RuntimeClass process")?;
    for object in real_node::objects() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str();
        let patch = Patch::Apply(&object);
        let applied = match (object["kind"].as_str(), namespace) {
            (Some("ClusterRoleBinding"), _) => Api::<ClusterRoleBinding>::all(client.clone())
                .patch(name, &params, &patch)
                .await
                .map(drop),
            (Some("RuntimeClass"), _) => {
                runtime_classes.patch(name, &params, &patch).await.map(drop)
            }
            (Some("Service"), Some(ns)) => Api::<Service>::namespaced(client.clone(), ns)
                .patch(name, &params, &patch)
                .await
                .map(drop),
            (Some("EndpointSlice"), Some(ns)) => {
                Api::<EndpointSlice>::namespaced(client.clone(), ns)
                    .patch(name, &params, &patch)
                    .await
                    .map(drop)
            }
            (kind, _) => bail!("no API for {kind:?} {name}"),
        };
        applied.with_context(|| format!("applying {} {name}", object["kind"]))?;
    }
    Ok(())
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Wait until pods can run: every node Ready (kwok is heartbeating, the real
/// node's kubelet has registered and its runtime and network are up) and the
/// `default` ServiceAccount exists (the controller-manager is working; pods
/// are refused without it).
pub async fn wait_until_usable(client: &kube::Client, layout: &Layout) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready: Vec<String> = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| node_ready(n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let ready_nodes = [SIMULATED_NODE, PROCESS_NODE, real_node::NODE_NAME]
            .iter()
            .filter(|name| ready.iter().any(|r| r == *name))
            .count();
        let account = accounts.get_opt("default").await?.is_some();
        if ready_nodes == 3 && account {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "cluster not usable after 60s ({ready_nodes}/3 nodes Ready, default ServiceAccount {}); see logs in {}",
                if account { "present" } else { "missing" },
                layout.logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn print_status(layout: &Layout) -> anyhow::Result<()> {
    let client = client(layout).await?;
    match readyz(&client).await {
        Ok(_) => println!("{:<24} ready", "API"),
        Err(error) => println!("{:<24} not ready: {error}", "API"),
    }
    for node in Api::<Node>::all(client)
        .list(&ListParams::default())
        .await?
    {
        println!(
            "{:<24} {}",
            format!("node {}", node.metadata.name.as_deref().unwrap_or("?")),
            if node_ready(&node) {
                "Ready"
            } else {
                "NotReady"
            }
        );
    }
    Ok(())
}
