//! The local cluster behaves like a cluster: scheduling, kwok's simulated
//! pod lifecycle (our stages), EndpointSlices, garbage collection.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use googletest::prelude::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use test_support::{TestNamespace, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn headless_service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {"view": name},
            "ports": [{"name": "http", "port": 8080}],
        },
    }))
    .expect("service")
}

fn job(name: &str, pod_annotations: serde_json::Value, owner: Option<&Service>) -> Job {
    let owner_references = owner.map(|service| {
        json!([{
            "apiVersion": "v1", "kind": "Service",
            "name": service.metadata.name, "uid": service.metadata.uid,
            "blockOwnerDeletion": true,
        }])
    });
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owner_references},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"view": name}, "annotations": pod_annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "view", "image": "views.dev/simulated:1"}],
                },
            },
        },
    }))
    .expect("job")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The endpoints of a Service's EndpointSlices, as (ip, ready, serving).
///
/// With `publishNotReadyAddresses` the EndpointSlice controller reports every
/// endpoint `ready: true` (the Service asked for unready ones to be
/// published); the pod's own readiness is in `serving`. The gateway must
/// route on `serving`.
async fn endpoints(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> anyhow::Result<Vec<(String, Option<bool>, Option<bool>)>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let list = slices
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(list
        .items
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .flat_map(|endpoint| {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            endpoint
                .addresses
                .iter()
                .map(move |ip| (ip.clone(), conditions.ready, conditions.serving))
        })
        .collect())
}

async fn the_pod(pods: &Api<Pod>, view: &str) -> anyhow::Result<Pod> {
    let list = pods
        .list(&ListParams::default().labels(&format!("view={view}")))
        .await?;
    list.items.into_iter().next().context("no pod yet")
}

#[gtest]
#[tokio::test]
async fn job_pod_becomes_a_not_ready_then_ready_endpoint_of_a_headless_service() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());

    services
        .create(&PostParams::default(), &headless_service("web"))
        .await
        .expect("service");
    jobs.create(
        &PostParams::default(),
        &job("web", json!({"sim.views.dev/ready-after": "3s"}), None),
    )
    .await
    .expect("job");

    let pod = eventually(WAIT, || async {
        let pod = the_pod(&pods, "web").await?;
        ensure!(
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some(),
            "no pod IP yet"
        );
        Ok(pod)
    })
    .await;
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    expect_that!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        some(eq("kwok-node-0"))
    );
    expect_that!(pod_ip.as_str(), starts_with("10.233."));

    let not_ready = eventually(WAIT, || async {
        let found = endpoints(&client, namespace.name(), "web").await?;
        ensure!(!found.is_empty(), "no endpoints yet");
        Ok(found)
    })
    .await;
    let seen_not_ready = Instant::now();
    expect_that!(
        not_ready,
        elements_are![eq(&(pod_ip.clone(), Some(true), Some(false)))]
    );

    let ready = eventually(WAIT, || async {
        let found = endpoints(&client, namespace.name(), "web").await?;
        ensure!(
            found.iter().any(|(_, _, serving)| *serving == Some(true)),
            "not serving yet: {found:?}"
        );
        Ok(found)
    })
    .await;
    expect_that!(
        ready,
        elements_are![eq(&(pod_ip.clone(), Some(true), Some(true)))]
    );
    // The 3 s delay was honoured (measured from when we saw it not ready, so
    // a little less than 3 s must have passed).
    expect_that!(seen_not_ready.elapsed(), gt(Duration::from_secs(2)));

    // Our stages keep a Job's pod running: kwok's default pod-complete would
    // have finished it, ending a view at once.
    let job = jobs.get("web").await.expect("job");
    let status = job.status.unwrap_or_default();
    expect_that!(status.active, some(eq(1)));
    expect_that!(status.succeeded, none());
}

#[gtest]
#[tokio::test]
async fn simulated_failures_image_pull_error_and_never_ready() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    for (name, annotations) in [
        ("pull", json!({"sim.views.dev/fail": "image-pull-error"})),
        ("stuck", json!({"sim.views.dev/fail": "never-ready"})),
        ("fine", json!({})),
    ] {
        jobs.create(&PostParams::default(), &job(name, annotations, None))
            .await
            .expect("job");
    }

    let pulling = eventually(WAIT, || async {
        let pod = the_pod(&pods, "pull").await?;
        let status = pod.status.clone().unwrap_or_default();
        let waiting = status
            .container_statuses
            .as_ref()
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.clone())
            .context("not waiting yet")?;
        Ok((status, waiting))
    })
    .await;
    expect_that!(pulling.1.reason.as_deref(), some(eq("ErrImagePull")));
    expect_that!(
        pulling.1.message.as_deref(),
        some(contains_substring("views.dev/simulated:1"))
    );
    expect_that!(pulling.0.phase.as_deref(), some(eq("Pending")));
    expect_that!(pulling.0.pod_ip, none());

    // Once a plain pod created alongside is Ready, the never-ready one has
    // had every chance and is still not Ready.
    eventually(WAIT, || async {
        ensure!(
            is_ready(&the_pod(&pods, "fine").await?),
            "fine pod not ready yet"
        );
        Ok(())
    })
    .await;
    let stuck = the_pod(&pods, "stuck").await.expect("stuck pod");
    expect_that!(
        stuck.status.as_ref().and_then(|s| s.phase.as_deref()),
        some(eq("Running"))
    );
    expect_that!(
        stuck.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        some(starts_with("10.233."))
    );
    expect_that!(is_ready(&stuck), eq(false));
}

#[gtest]
#[tokio::test]
async fn deleting_the_owning_service_garbage_collects_job_and_pods() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());

    let service = services
        .create(&PostParams::default(), &headless_service("owned"))
        .await
        .expect("service");
    jobs.create(
        &PostParams::default(),
        &job("owned", json!({}), Some(&service)),
    )
    .await
    .expect("job");
    eventually(WAIT, || async {
        ensure!(
            is_ready(&the_pod(&pods, "owned").await?),
            "pod not ready yet"
        );
        Ok(())
    })
    .await;

    services
        .delete("owned", &DeleteParams::default())
        .await
        .expect("delete service");

    eventually(WAIT, || async {
        ensure!(jobs.get_opt("owned").await?.is_none(), "job still exists");
        ensure!(
            pods.list(&ListParams::default()).await?.items.is_empty(),
            "pods still exist"
        );
        Ok(())
    })
    .await;
    expect_that!(jobs.get_opt("owned").await.expect("get job"), none());
    expect_that!(
        pods.list(&ListParams::default()).await.expect("list").items,
        is_empty()
    );
}
