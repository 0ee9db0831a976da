//! The Kubernetes objects the benchmarks create: view Services written
//! directly (as the sidecar's `view::to_service` writes them), real and
//! simulated view pods.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// What selects every view (and, labels being inherited, their EndpointSlices).
pub const VIEWS_SELECTOR: &str = "app.kubernetes.io/managed-by=views-gateway";

/// An admin client for the local cluster.
pub async fn client() -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(crate::cluster::kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// A view's spec as the sidecar stores it (normalised: defaults filled in).
pub fn view_spec(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}],
        "deadlineSeconds": 3600,
        "idleTimeoutSeconds": 900,
    })
}

/// The headless Service that is view `name` (see `ui/gateway-sidecar/src/view.rs`).
pub fn view_service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("view-{name}"),
            "labels": {"app.kubernetes.io/managed-by": "views-gateway", "views.dev/view": name},
            "annotations": {"views.dev/spec": view_spec(name).to_string()},
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {"views.dev/view": name},
            "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
        },
    }))
    .expect("a Service")
}

/// A real pod process for `view`: the echo server at its pod IP.
pub fn echo_pod(view: &str) -> Pod {
    test_support::echo_view_pod(&format!("{view}-echo"), view, "bench", true)
}

/// A pod kwok simulates (Running with an IP, Ready at once): makes `view`
/// active without a process. Nothing ever connects to its address.
pub fn simulated_pod(view: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{view}-sim"),
            "labels": {"views.dev/view": view},
            "annotations": {"sim.views.dev/ready-after": "0s"},
        },
        "spec": {
            "containers": [{
                "name": "view",
                "image": "views.dev/simulated:latest",
                "ports": [{"name": "http", "containerPort": 8080}],
            }],
        },
    }))
    .expect("a Pod")
}

/// Wait until pod `name` is Ready; its IP.
pub async fn wait_ready(pods: &Api<Pod>, name: &str, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get(name).await?;
        let status = pod.status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if let (true, Some(ip)) = (ready, status.pod_ip) {
            return Ok(ip);
        }
        if Instant::now() >= deadline {
            bail!("pod {name} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Create the Services of `names`, at most `concurrency` requests at once;
/// the names of the last `concurrency` created (the API server answered
/// them last, so a watcher sees them last).
pub async fn create_views(
    services: &Api<Service>,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let mut last = std::collections::VecDeque::with_capacity(concurrency);
    let mut created = futures::stream::iter(names)
        .map(|name| async move {
            services
                .create(&PostParams::default(), &view_service(name))
                .await
                .with_context(|| format!("creating view-{name}"))
                .map(|_| name.clone())
        })
        .buffer_unordered(concurrency);
    while let Some(name) = created.try_next().await? {
        if last.len() == concurrency {
            last.pop_front();
        }
        last.push_back(name);
    }
    Ok(last.into())
}

/// Delete every view Service and pod of the namespace and wait (bounded)
/// until their EndpointSlices are gone too, so the next measurement does not
/// share the machine with this one's garbage collection.
pub async fn delete_views(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams::background();
    // One by one (bounded): a single delete-collection of 10,000 Services
    // outlasts the API server's request timeout.
    let names: Vec<String> = services
        .list_metadata(&ListParams::default().labels(VIEWS_SELECTOR))
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    futures::stream::iter(&names)
        .map(|name| {
            let (services, params) = (&services, &params);
            async move {
                match services.delete(name, params).await {
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        })
        .buffer_unordered(32)
        .try_for_each(|()| async { Ok(()) })
        .await?;
    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..params
        },
        &ListParams::default(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = slices
            .list_metadata(&ListParams::default().labels(VIEWS_SELECTOR).limit(1))
            .await?;
        if left.items.is_empty() || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
