//! The gateway core against the local cluster and a real Envoy: views API,
//! Kubernetes as the only state, xDS routing only to ready endpoints.

use std::time::Duration;

use anyhow::ensure;
use futures::StreamExt;
use futures::future::join_all;
use googletest::prelude::*;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::gateway::Gateway;
use test_support::{TestNamespace, echo_view_pod, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn view_spec(name: &str, prefix: &str) -> Value {
    json!({"name": name, "subsets": [{"bucket": "lake", "prefixes": [prefix]}]})
}

async fn post_view(gateway: &Gateway, spec: &Value) -> (StatusCode, Value) {
    let response = gateway
        .client()
        .post(gateway.url("localhost", "/_api/views"))
        .json(spec)
        .send()
        .await
        .expect("POST /_api/views");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Wait until Envoy has the view of `host` with a serving endpoint, then
/// answer one request. (Not by polling the host: a request to a cold view
/// would activate it, and these tests bring their own pods.)
async fn wait_routed(gateway: &Gateway, host: &str) -> (StatusCode, String) {
    gateway
        .wait_serving(host.split('.').next().unwrap_or_default())
        .await;
    get(gateway, host, "/").await
}

async fn get(gateway: &Gateway, host: &str, path: &str) -> (StatusCode, String) {
    let response = gateway
        .client()
        .get(gateway.url(host, path))
        .send()
        .await
        .expect("GET");
    (response.status(), response.text().await.unwrap_or_default())
}

/// The kubelet probes every replica's Envoy at `GET /_api/readyz` every 5 s:
/// a passed probe is not access-logged; everything else is.
#[gtest]
#[tokio::test]
async fn passed_readiness_probes_stay_out_of_the_access_log() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("probelog", namespace.name()).await;
    for _ in 0..3 {
        let (status, _) = get(&gateway, "localhost", "/_api/readyz").await;
        expect_that!(status, eq(StatusCode::OK));
    }
    let posted = gateway
        .client()
        .post(gateway.url("localhost", "/_api/readyz"))
        .send()
        .await
        .expect("POST /_api/readyz");
    expect_that!(posted.status().is_success(), eq(false));
    let (status, _) = get(&gateway, "localhost", "/_api/views").await;
    expect_that!(status, eq(StatusCode::OK));
    // Lines are written in request order: once the last one is there, so
    // would be the probes'.
    let lines = eventually(WAIT, || async {
        let log = gateway.access_log();
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        ensure!(
            lines.iter().any(|line| line["path"] == "/_api/views"),
            "GET /_api/views not logged yet: {log}"
        );
        Ok(lines)
    })
    .await;
    // Only the refused POST: its status, as Envoy writes it (a number or a string).
    let probes: Vec<String> = lines
        .iter()
        .filter(|line| line["path"] == "/_api/readyz")
        .map(|line| format!("{} {}", line["method"], line["status"]).replace('"', ""))
        .collect();
    expect_that!(
        probes,
        elements_are![eq(&format!("POST {}", posted.status().as_u16()))]
    );
}

#[gtest]
#[tokio::test]
async fn a_view_whose_spec_was_broken_by_hand_shows_as_invalid_and_can_be_deleted() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("broken", namespace.name()).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let (status, _) = post_view(&gateway, &view_spec("hand", "sales/")).await;
    expect_that!(status, eq(StatusCode::CREATED));
    services
        .patch(
            "view-hand",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"views.dev/spec": "{not json"}}})),
        )
        .await
        .expect("the spec edited by hand");

    // Sign-in is off here, so the caller is an admin: the view is listed as
    // invalid, with the problem, and no longer as a view.
    let listed = eventually(WAIT, || async {
        let listed: Value = gateway
            .client()
            .get(gateway.url("localhost", "/_api/views"))
            .send()
            .await?
            .json()
            .await?;
        ensure!(listed["invalid"][0]["name"] == "hand", "not yet: {listed}");
        Ok(listed)
    })
    .await;
    expect_that!(listed["views"], eq(&json!([])));
    expect_that!(
        listed["invalid"][0]["problem"].as_str(),
        some(contains_substring(
            "views.dev/spec is not a valid view spec"
        ))
    );
    let shown = gateway
        .client()
        .get(gateway.url("localhost", "/_api/views/hand"))
        .send()
        .await
        .expect("GET");
    expect_that!(shown.status(), eq(StatusCode::UNPROCESSABLE_ENTITY));
    let shown: Value = shown.json().await.unwrap_or_default();
    expect_that!(shown["error"], eq(&json!("unprocessable")));
    expect_that!(
        shown["details"]["problem"].as_str(),
        some(contains_substring("not a valid view spec"))
    );
    // It gets no routes.
    expect_that!(
        get(&gateway, "hand.localhost", "/").await,
        eq(&(StatusCode::NOT_FOUND, "no such view\n".to_string()))
    );

    // And it can be deleted through the API: nothing is left behind.
    let response = gateway
        .client()
        .delete(gateway.url("localhost", "/_api/views/hand"))
        .send()
        .await
        .expect("DELETE");
    expect_that!(response.status(), eq(StatusCode::NO_CONTENT));
    expect_that!(
        services.get_opt("view-hand").await.expect("get service"),
        none()
    );
    eventually(WAIT, || async {
        let listed: Value = gateway
            .client()
            .get(gateway.url("localhost", "/_api/views"))
            .send()
            .await?
            .json()
            .await?;
        ensure!(listed.get("invalid").is_none(), "still listed: {listed}");
        Ok(())
    })
    .await;
}

#[gtest]
#[tokio::test]
async fn a_view_created_through_the_api_routes_to_its_pod_and_is_gone_after_delete() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("route", namespace.name()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());

    let (status, body) = post_view(&gateway, &view_spec("sales", "sales/")).await;
    expect_that!(status, eq(StatusCode::CREATED));
    expect_that!(body["hostname"].as_str(), some(eq("sales.localhost")));
    expect_that!(body["status"]["phase"].as_str(), some(eq("cold")));

    pods.create(
        &PostParams::default(),
        &echo_view_pod("sales-1", "sales", "hello", true),
    )
    .await
    .expect("pod");
    let (status, body) = wait_routed(&gateway, "sales.localhost").await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(body, contains_substring("pod: sales-1"));
    // Envoy logs every request as one JSON line (its access log).
    let logged = eventually(WAIT, || async {
        let log = std::fs::read_to_string(gateway.logs_dir().join("envoy-access.log"))?;
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["cluster"] == "view-sales")
            .ok_or_else(|| anyhow::anyhow!("no access log line for view-sales yet"))
    })
    .await;
    expect_that!(logged["status"].as_u64(), some(eq(200)));
    expect_that!(logged["method"].as_str(), some(eq("GET")));
    expect_that!(
        logged["authority"].as_str(),
        some(starts_with("sales.localhost"))
    );
    // Exact host match only: a port is fine, another suffix is not.
    expect_that!(
        get(&gateway, "sales.localhost.evil.example", "/").await.0,
        eq(StatusCode::NOT_FOUND)
    );

    let (status, view) = {
        let response = gateway
            .client()
            .get(gateway.url("localhost", "/_api/views/sales"))
            .send()
            .await
            .expect("GET view");
        (
            response.status(),
            response.json::<Value>().await.expect("view JSON"),
        )
    };
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(view["status"]["phase"].as_str(), some(eq("ready")));

    let response = gateway
        .client()
        .delete(gateway.url("localhost", "/_api/views/sales"))
        .send()
        .await
        .expect("DELETE");
    expect_that!(response.status(), eq(StatusCode::NO_CONTENT));
    expect_that!(
        get(&gateway, "sales.localhost", "/").await,
        eq(&(StatusCode::NOT_FOUND, "no such view\n".to_string()))
    );
    expect_that!(
        services.get_opt("view-sales").await.expect("get service"),
        none()
    );
    let _ = pods.delete("sales-1", &DeleteParams::default()).await;
}

#[gtest]
#[tokio::test]
async fn only_ready_endpoints_receive_traffic() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("ready", namespace.name()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());

    let (status, _) = post_view(&gateway, &view_spec("mixed", "m/")).await;
    expect_that!(status, eq(StatusCode::CREATED));
    pods.create(
        &PostParams::default(),
        &echo_view_pod("unready", "mixed", "from-unready", false),
    )
    .await
    .expect("pod");
    pods.create(
        &PostParams::default(),
        &echo_view_pod("ready", "mixed", "from-ready", true),
    )
    .await
    .expect("pod");

    // Both endpoints are known (publishNotReadyAddresses), one is ready.
    let view = eventually(WAIT, || async {
        let view: Value = gateway
            .client()
            .get(gateway.url("localhost", "/_api/views/mixed"))
            .send()
            .await?
            .json()
            .await?;
        let endpoints = view["status"]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ensure!(
            endpoints.len() == 2 && view["status"]["phase"] == "ready",
            "not yet: {view}"
        );
        Ok(view)
    })
    .await;
    let ready_flags: Vec<bool> = view["status"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ready"].as_bool().unwrap())
        .collect();
    expect_that!(ready_flags, unordered_elements_are![eq(&true), eq(&false)]);

    wait_routed(&gateway, "mixed.localhost").await;
    let answers = join_all((0..100).map(|_| get(&gateway, "mixed.localhost", "/"))).await;
    let from_ready = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::OK && b.contains("from-ready"))
        .count();
    expect_that!(from_ready, eq(100));
}

#[gtest]
#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("input", namespace.name()).await;
    let http = gateway.client();
    let views = gateway.url("localhost", "/_api/views");

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (http.post(&views).header("content-type", "application/json").body("{not json"), StatusCode::BAD_REQUEST, "invalid_request"),
        (http.post(&views).body(view_spec("plain", "p/").to_string()), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (http.post(&views).json(&view_spec("No", "p/")), StatusCode::BAD_REQUEST, "invalid_name"),
        (http.post(&views).json(&view_spec("waytoolong", "p/")), StatusCode::BAD_REQUEST, "invalid_name"),
        (http.post(&views).json(&view_spec("api", "p/")), StatusCode::UNPROCESSABLE_ENTITY, "reserved_name"),
        (http.post(&views).json(&json!({"name": "nosubs", "subsets": []})), StatusCode::BAD_REQUEST, "invalid_request"),
        (http.post(&views).json(&json!({"name": "escape", "subsets": [{"bucket": "lake", "prefixes": ["a/"], "tables": {"t": {"path": "b/x.parquet", "format": "parquet"}}}]})), StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
        (http.post(&views).json(&json!({"name": "short", "subsets": [{"bucket": "lake", "prefixes": ["a/"]}], "deadlineSeconds": 5})), StatusCode::BAD_REQUEST, "invalid_request"),
        (http.post(&views).header("content-type", "application/json").body(vec![b' '; 100_000]), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (http.get(gateway.url("localhost", "/_api/views/ghost")), StatusCode::NOT_FOUND, "not_found"),
        (http.get(gateway.url("localhost", "/_api/views/..%2F..")), StatusCode::BAD_REQUEST, "invalid_name"),
        (http.delete(gateway.url("localhost", "/_api/views/ghost")), StatusCode::NOT_FOUND, "not_found"),
        (http.put(&views), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (http.get(gateway.url("localhost", "/_api/nothing")), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (request, expected_status, expected_code) in cases {
        let response = request.send().await.expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        expect_that!(
            (status, body["error"].as_str()),
            eq((expected_status, Some(expected_code))),
            "body: {body}"
        );
        expect_that!(body["message"].as_str().map(str::len), some(gt(0)));
    }

    let list: Value = http
        .get(&views)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    expect_that!(list["views"].as_array().map(Vec::len), some(eq(0)));
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    expect_that!(
        services
            .list(&ListParams::default())
            .await
            .expect("services")
            .items,
        is_empty()
    );
    // Unknown hosts: a plain 404 that lists nothing.
    expect_that!(
        get(&gateway, "ghost.localhost", "/").await,
        eq(&(StatusCode::NOT_FOUND, "no such view\n".to_string()))
    );
}

#[gtest]
#[tokio::test]
async fn creates_are_idempotent_and_replicas_racing_get_one_winner() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let one = Gateway::start("one", namespace.name()).await;
    let two = Gateway::start("two", namespace.name()).await;

    let spec = view_spec("twice", "t/");
    expect_that!(post_view(&one, &spec).await.0, eq(StatusCode::CREATED));
    expect_that!(post_view(&two, &spec).await.0, eq(StatusCode::CREATED));
    let (status, body) = post_view(&two, &view_spec("twice", "other/")).await;
    expect_that!(status, eq(StatusCode::CONFLICT));
    expect_that!(body["error"].as_str(), some(eq("conflict")));

    // Ten rounds of both replicas creating the same name with different
    // specs at once: the API server picks exactly one winner every time.
    for round in 0..10 {
        let name = format!("race{round}");
        let (spec_one, spec_two) = (view_spec(&name, "one/"), view_spec(&name, "two/"));
        let (a, b) = tokio::join!(post_view(&one, &spec_one), post_view(&two, &spec_two));
        let mut statuses = vec![a.0, b.0];
        statuses.sort();
        expect_that!(
            statuses,
            eq(&vec![StatusCode::CREATED, StatusCode::CONFLICT]),
            "round {round}"
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    expect_that!(
        services
            .list(&ListParams::default())
            .await
            .expect("services")
            .items
            .len(),
        eq(11)
    );
}

#[gtest]
#[tokio::test]
async fn a_restarted_sidecar_loses_nothing() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let mut gateway = Gateway::start("restart", namespace.name()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());

    expect_that!(
        post_view(&gateway, &view_spec("keep", "k/")).await.0,
        eq(StatusCode::CREATED)
    );
    pods.create(
        &PostParams::default(),
        &echo_view_pod("keep-1", "keep", "kept", true),
    )
    .await
    .expect("pod");
    wait_routed(&gateway, "keep.localhost").await;

    gateway.restart_sidecar().await;

    let list: Value = gateway
        .client()
        .get(gateway.url("localhost", "/_api/views"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    let names: Vec<&str> = list["views"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    expect_that!(names, elements_are![eq(&"keep")]);
    let answer = get(&gateway, "keep.localhost", "/").await;
    expect_that!(answer.0, eq(StatusCode::OK));
    expect_that!(answer.1, contains_substring("kept"));
}

/// What Envoy's admin says about rejected configuration: the sum of every
/// `*.update_rejected` counter (LDS, RDS, CDS, EDS).
async fn envoy_rejections(gateway: &Gateway) -> u64 {
    let stats = reqwest::get(format!(
        "http://127.0.0.1:{}/stats?filter=update_rejected",
        gateway.admin_port
    ))
    .await
    .expect("Envoy admin")
    .text()
    .await
    .expect("stats");
    stats
        .lines()
        .filter_map(|line| line.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

/// The view virtual hosts in Envoy's live route configuration.
async fn envoy_view_hosts(gateway: &Gateway) -> Vec<String> {
    let dump: Value = reqwest::get(format!(
        "http://127.0.0.1:{}/config_dump?resource=dynamic_route_configs",
        gateway.admin_port
    ))
    .await
    .expect("Envoy admin")
    .json()
    .await
    .expect("config dump");
    let mut hosts: Vec<String> = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["route_config"]["virtual_hosts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v["name"].as_str().map(String::from))
        .filter(|name| name.starts_with("view-"))
        .collect();
    hosts.sort();
    hosts
}

#[gtest]
#[tokio::test]
async fn killing_the_sidecar_under_load_fails_no_request_and_config_converges() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let mut gateway = Gateway::start("kill9", namespace.name()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());

    expect_that!(
        post_view(&gateway, &view_spec("warm", "w/")).await.0,
        eq(StatusCode::CREATED)
    );
    pods.create(
        &PostParams::default(),
        &echo_view_pod("warm-1", "warm", "warm", true),
    )
    .await
    .expect("pod");
    wait_routed(&gateway, "warm.localhost").await;
    let before = gateway.debug_envoys().await.expect("/debug/envoys");

    // A client sends requests back to back while the sidecar is SIGKILLed
    // and started again (bounded: at most 20,000 requests).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (http, url, stop) = (
            gateway.client(),
            gateway.url("warm.localhost", "/"),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                sent += 1;
                match http.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    _ => failed += 1,
                }
            }
            (sent, failed)
        })
    };
    gateway.restart_sidecar().await;
    // The new sidecar's view of Envoy: the same content versions it had ACKed.
    let after = eventually(WAIT, || async {
        let after: Value = gateway.debug_envoys().await?;
        ensure!(
            after["kill9"]["acked_versions"] == before["kill9"]["acked_versions"],
            "not converged: {after}"
        );
        Ok(after)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.await.expect("load task");

    expect_that!(failed, eq(0), "of {sent} requests");
    expect_that!(sent, gt(10));
    // Listeners, scoped routes, routes, clusters and endpoints.
    expect_that!(
        after["kill9"]["acked_versions"]
            .as_object()
            .map(|o| o.len()),
        some(eq(5))
    );
    expect_that!(
        envoy_view_hosts(&gateway).await,
        elements_are![eq("view-warm")]
    );
}

#[gtest]
#[tokio::test]
async fn churn_of_200_views_is_never_rejected_by_envoy_and_ends_consistent() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("churn", namespace.name()).await;
    let http = gateway.client();
    let names: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();

    // All 200 created concurrently (20 at a time), then every odd one deleted
    // concurrently while the even ones are still being read.
    let created = futures::stream::iter(names.iter().map(|name| {
        let spec = view_spec(name, "churn/");
        let gateway = &gateway;
        async move { post_view(gateway, &spec).await.0 }
    }))
    .buffer_unordered(20)
    .collect::<Vec<_>>()
    .await;
    expect_that!(
        created
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        eq(200)
    );

    let deleted = futures::stream::iter(names.iter().skip(1).step_by(2).map(|name| {
        let (http, url) = (
            http.clone(),
            gateway.url("localhost", &format!("/_api/views/{name}")),
        );
        async move { http.delete(url).send().await.map(|r| r.status()).ok() }
    }))
    .buffer_unordered(20)
    .collect::<Vec<_>>()
    .await;
    expect_that!(
        deleted
            .iter()
            .filter(|s| **s == Some(StatusCode::NO_CONTENT))
            .count(),
        eq(100)
    );

    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let mut in_cluster: Vec<String> = services
        .list(&ListParams::default())
        .await
        .expect("services")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    in_cluster.sort();
    let expected: Vec<String> = names
        .iter()
        .step_by(2)
        .map(|n| format!("view-{n}"))
        .collect();
    expect_that!(in_cluster, eq(&expected));
    expect_that!(envoy_view_hosts(&gateway).await, eq(&expected));
    expect_that!(envoy_rejections(&gateway).await, eq(0));
    expect_that!(
        gateway.metric("views_gateway_xds_nacks_total", "").await,
        eq(0.0)
    );
}

#[gtest]
#[tokio::test]
async fn a_namespace_quota_on_services_caps_the_number_of_views() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    // The operator's limit on views is Kubernetes' own object-count quota.
    Api::<ResourceQuota>::namespaced(client.clone(), namespace.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "views"},
                "spec": {"hard": {"services": "1"}},
            }))
            .expect("quota"),
        )
        .await
        .expect("creating the quota");
    let gateway = Gateway::start("quota", namespace.name()).await;
    // The quota controller fills in the quota's usage asynchronously.
    eventually(WAIT, || async {
        let quota = Api::<ResourceQuota>::namespaced(client.clone(), namespace.name())
            .get("views")
            .await?;
        ensure!(
            quota.status.and_then(|s| s.used).is_some(),
            "quota not calculated yet"
        );
        Ok(())
    })
    .await;

    let (first, _) = post_view(&gateway, &view_spec("first", "a/")).await;
    let (second, body) = post_view(&gateway, &view_spec("second", "b/")).await;

    expect_that!(first, eq(StatusCode::CREATED));
    expect_that!(second, eq(StatusCode::TOO_MANY_REQUESTS));
    expect_that!(body["error"].as_str(), some(eq("quota_exceeded")));
    expect_that!(
        body["message"].as_str(),
        some(contains_substring("exceeded quota"))
    );
    let listed: Value = gateway
        .client()
        .get(gateway.url("localhost", "/_api/views"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    expect_that!(listed["views"].as_array().map(Vec::len), some(eq(1)));
}

#[gtest]
#[tokio::test]
async fn the_edge_normalises_hosts_and_paths_and_bounds_headers() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("edge", namespace.name()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let (status, _) = post_view(&gateway, &view_spec("edge", "edge/")).await;
    expect_that!(status, eq(StatusCode::CREATED));
    pods.create(
        &PostParams::default(),
        &echo_view_pod("edge-1", "edge", "hello", true),
    )
    .await
    .expect("pod");
    wait_routed(&gateway, "edge.localhost").await;
    let http = gateway.client();

    // Host names are case-insensitive.
    let (status, seen) = get(&gateway, "EDGE.LocalHost", "/headers").await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(seen, contains_substring("host: edge.localhost:"));
    expect_that!(
        get(&gateway, "LOCALHOST", "/_api/views").await.0,
        eq(StatusCode::OK)
    );
    // One spelling per path: the view sees what routing saw.
    let (status, seen) = get(&gateway, "edge.localhost", "//nowhere/..//headers").await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(seen, contains_substring("host: edge.localhost:"));
    // The client's own X-Forwarded-For is not its address: Envoy appends
    // what it saw and names the client by its connection.
    let seen = http
        .get(gateway.url("edge.localhost", "/headers"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    expect_that!(seen, contains_substring("x-forwarded-for: 203.0.113.9,"));
    expect_that!(
        seen,
        contains_substring("x-envoy-external-address: 127.0.0.1\n")
    );
    // A stranger's x-envoy-* headers do not steer Envoy (retries, timeouts)
    // and do not reach the view.
    let seen = http
        .get(gateway.url("edge.localhost", "/headers"))
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-upstream-rq-timeout-ms", "1")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    expect_that!(seen, not(contains_substring("x-envoy-retry-on")));
    expect_that!(
        seen,
        not(contains_substring("x-envoy-upstream-rq-timeout-ms"))
    );
    // Underscored names could pass for the identity header at a view that
    // folds `_` into `-`: refused.
    let status = http
        .get(gateway.url("edge.localhost", "/headers"))
        .header("x_views_identity", "eyJzdWIiOiJhZGEifQ")
        .send()
        .await
        .expect("request")
        .status();
    expect_that!(status, eq(StatusCode::BAD_REQUEST));
    // Header size and count are bounded.
    let status = http
        .get(gateway.url("edge.localhost", "/headers"))
        .header("x-big", "a".repeat(70 * 1024))
        .send()
        .await
        .expect("request")
        .status();
    expect_that!(status, eq(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    let mut many = http.get(gateway.url("edge.localhost", "/headers"));
    for i in 0..120 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let status = many.send().await.expect("request").status();
    expect_that!(status, eq(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
}
