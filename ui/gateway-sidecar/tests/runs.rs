//! Restarting a view's run and extending its deadline, end to end: the real
//! OpenID Connect provider issues the tokens, the real Envoy verifies them
//! and routes the API and the view hosts' `/_gateway/view` to the sidecar,
//! the real API server runs the Job controller that enforces the deadline,
//! and the real lake (through the sidecar's S3 endpoint) serves an extended
//! run past its first deadline.

use std::time::Duration;

use anyhow::ensure;
use googletest::prelude::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::gateway::{Gateway, free_port};
use test_support::{TestNamespace, eventually, oidc};

const WAIT: Duration = Duration::from_secs(60);
/// The operator's cap on one run in these tests: two hours.
const CAP: i64 = 7200;

/// ana (analysts), ada (views-admins) and cy read sales/; ana shares her
/// views with cy.
const GRANTS: &str = r#"
grants:
- groups: [analysts, views-admins]
  bucket: lake
  prefixes: [sales/]
- users: [cy]
  bucket: lake
  prefixes: [sales/]
"#;

/// A signed-in gateway whose sidecar is also the views' S3 endpoint in front
/// of the lake `cargo xtask lake up` runs, with a cap of [`CAP`] on one run
/// (and `extra` settings); and that endpoint's URL.
async fn gateway(name: &str, namespace: &str, extra: &[(&str, &str)]) -> (Gateway, String) {
    let client = test_support::client().await;
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "views-gateway-entitlements"},
        "data": {"entitlements.yaml": GRANTS},
    }))
    .expect("ConfigMap");
    Api::<ConfigMap>::namespaced(client, namespace)
        .patch(
            "views-gateway-entitlements",
            &PatchParams::apply("runs-test").force(),
            &Patch::Apply(&config_map),
        )
        .await
        .expect("entitlements");
    let path = test_support::cache_dir().join("lake/lake.json");
    let lake: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("lake.json: run `cargo xtask lake up`"),
    )
    .expect("lake.json");
    let text = |key: &str| lake[key].as_str().expect("lake.json field").to_owned();
    let s3_port = free_port();
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let issuer = oidc::provider().issuer;
    let (cap, listen) = (CAP.to_string(), format!("127.0.0.1:{s3_port}"));
    let (lake_endpoint, key, secret) = (
        text("endpoint"),
        text("access_key_id"),
        text("secret_access_key"),
    );
    let mut settings = vec![
        ("OIDC_ISSUER", issuer.as_str()),
        ("ADMIN_GROUPS", "views-admins"),
        ("MAX_RUN_SECONDS", cap.as_str()),
        ("STOP_WARNING_SECONDS", "120"),
        ("CREDENTIALS_LISTEN", listen.as_str()),
        ("CREDENTIALS_ENDPOINT_URL", endpoint.as_str()),
        ("LAKE_ENDPOINT_URL", lake_endpoint.as_str()),
        ("LAKE_ACCESS_KEY_ID", key.as_str()),
        ("LAKE_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    settings.extend_from_slice(extra);
    let gateway = Gateway::start_with(name, namespace, &settings).await;
    (gateway, endpoint)
}

async fn token(user: &str) -> String {
    oidc::token(user, oidc::CLI_CLIENT, oidc::GATEWAY_RESOURCE)
        .await
        .unwrap_or_else(|e| panic!("a token for {user}: {e:#}"))
}

/// One request as the holder of `token`, with extra `headers`: the status
/// and the JSON body (Null when there is none).
async fn send(
    gateway: &Gateway,
    token: &str,
    (method, host, path): (Method, &str, &str),
    body: Option<Value>,
    headers: &[(&str, String)],
) -> (StatusCode, Value) {
    let mut request = gateway
        .client()
        .request(method, gateway.url(host, path))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn post(path: &str) -> (Method, &str, &str) {
    (Method::POST, "localhost", path)
}

/// Create `name` as ana (deadline `deadline` seconds), shared with cy.
async fn create(gateway: &Gateway, ana: &str, name: &str, deadline: i64) {
    let (status, body) = send(
        gateway,
        ana,
        post("/_api/views"),
        Some(json!({
            "name": name,
            "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}],
            "deadlineSeconds": deadline,
            "sharedWith": {"users": ["cy"]},
        })),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "creating {name}: {body}");
}

/// Start `name` by a request to its host (held until it serves).
async fn start(gateway: &Gateway, token: &str, name: &str) {
    let host = format!("{name}.localhost");
    eventually(WAIT, || async {
        let (status, body) = send(gateway, token, (Method::GET, &host, "/"), None, &[]).await;
        ensure!(status == StatusCode::OK, "{host}: {status} {body}");
        Ok(())
    })
    .await;
}

/// The names of the view's Jobs not being deleted.
async fn live_jobs(client: &kube::Client, namespace: &str, view: &str) -> Vec<String> {
    let jobs = Api::<Job>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("views.dev/view={view}")))
        .await
        .expect("jobs");
    jobs.items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| j.metadata.name)
        .collect()
}

async fn job_deadline(client: &kube::Client, namespace: &str, job: &str) -> Option<i64> {
    Api::<Job>::namespaced(client.clone(), namespace)
        .get(job)
        .await
        .expect("job")
        .spec?
        .active_deadline_seconds
}

/// The keys in run `job`'s Secret, and whether they list the lake's sales/
/// through the sidecar's S3 endpoint.
async fn lake_keys(
    client: &kube::Client,
    namespace: &str,
    endpoint: &str,
    job: &str,
) -> (String, bool) {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&format!("{job}-s3"))
        .await
        .expect("the run's Secret");
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| String::from_utf8(data[key].0.clone()).expect("text");
    let key = value("AWS_ACCESS_KEY_ID");
    let lake = gateway_sidecar::credentials::s3_client(&gateway_sidecar::credentials::Upstream {
        endpoint: endpoint.into(),
        access_key_id: key.clone(),
        secret_access_key: value("AWS_SECRET_ACCESS_KEY"),
        region: "us-east-1".into(),
    });
    let listed = lake
        .list_objects_v2()
        .bucket("lake")
        .prefix("sales/")
        .send()
        .await;
    (key, listed.is_ok_and(|l| !l.contents().is_empty()))
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

#[gtest]
#[tokio::test]
async fn a_restart_replaces_the_run_for_its_owner_or_an_admin_only() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let (gateway, endpoint) = gateway("restart", namespace.name(), &[]).await;
    let (ana, bob, cy, ada) = (
        token("ana").await,
        token("bob").await,
        token("cy").await,
        token("ada").await,
    );
    create(&gateway, &ana, "rest", 3600).await;
    let restart = "/_api/views/rest/restart";

    // Not running: a restart starts it at once, without a request to its host.
    let (status, body) = send(&gateway, &ana, post(restart), None, &[]).await;
    expect_that!(status, eq(StatusCode::ACCEPTED), "{body}");
    expect_that!(
        body["status"]["phase"].as_str(),
        some(any![eq("starting"), eq("ready")])
    );
    expect_that!(
        live_jobs(&client, namespace.name(), "rest").await,
        elements_are![eq("view-rest-1")]
    );
    start(&gateway, &ana, "rest").await;

    // Those it is shared with may open it, not restart it; strangers do not
    // learn that it exists.
    let (status, body) = send(&gateway, &cy, post(restart), None, &[]).await;
    expect_that!(status, eq(StatusCode::FORBIDDEN), "{body}");
    expect_that!(body["error"].as_str(), some(eq("forbidden")));
    let (status, body) = send(&gateway, &bob, post(restart), None, &[]).await;
    expect_that!(status, eq(StatusCode::NOT_FOUND), "{body}");
    expect_that!(
        live_jobs(&client, namespace.name(), "rest").await,
        elements_are![eq("view-rest-1")]
    );

    // The owner: run 1 goes, run 2 starts; two calls at once (a double
    // click, or two replicas) start one run between them.
    let (first, second) = tokio::join!(
        send(&gateway, &ana, post(restart), None, &[]),
        send(&gateway, &ana, post(restart), None, &[]),
    );
    expect_that!(first.0, eq(StatusCode::ACCEPTED), "{}", first.1);
    expect_that!(second.0, eq(StatusCode::ACCEPTED), "{}", second.1);
    start(&gateway, &ana, "rest").await;
    // A new name: the old run's Secret (garbage-collected later) is not in
    // the new run's way, and the new run's keys read the lake.
    expect_that!(
        live_jobs(&client, namespace.name(), "rest").await,
        elements_are![eq("view-rest-2")]
    );
    expect_that!(
        lake_keys(&client, namespace.name(), &endpoint, "view-rest-2")
            .await
            .1,
        eq(true)
    );

    // An admin may restart anyone's view.
    let (status, body) = send(&gateway, &ada, post(restart), None, &[]).await;
    expect_that!(status, eq(StatusCode::ACCEPTED), "{body}");
    eventually(WAIT, || async {
        let jobs = live_jobs(&client, namespace.name(), "rest").await;
        ensure!(jobs == ["view-rest-3"], "{jobs:?}");
        Ok(())
    })
    .await;
    start(&gateway, &ana, "rest").await;
    let (status, _) = send(
        &gateway,
        &ana,
        post("/_api/views/nosuch/restart"),
        None,
        &[],
    )
    .await;
    expect_that!(status, eq(StatusCode::NOT_FOUND));
}

#[gtest]
#[tokio::test]
async fn a_restart_while_the_run_is_starting_joins_it() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    // Runs take 4 s to become ready: time for a second call meanwhile.
    let slow = [("VIEW_POD_ANNOTATIONS", "sim.views.dev/ready-after=4s")];
    let (gateway, _) = gateway("join", namespace.name(), &slow).await;
    let ana = token("ana").await;
    create(&gateway, &ana, "join", 3600).await;
    let restart = post("/_api/views/join/restart");
    let (status, body) = send(&gateway, &ana, restart.clone(), None, &[]).await;
    expect_that!(status, eq(StatusCode::ACCEPTED), "{body}");
    expect_that!(body["status"]["phase"].as_str(), some(eq("starting")));
    // A second click while it starts: the same run, not another.
    let (status, body) = send(&gateway, &ana, restart, None, &[]).await;
    expect_that!(status, eq(StatusCode::ACCEPTED), "{body}");
    expect_that!(body["status"]["phase"].as_str(), some(eq("starting")));
    start(&gateway, &ana, "join").await;
    expect_that!(
        live_jobs(&client, namespace.name(), "join").await,
        elements_are![eq("view-join-1")]
    );
}

#[gtest]
#[tokio::test]
async fn a_run_is_extended_within_the_operators_cap_and_outlives_its_first_deadline() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let (gateway, endpoint) = gateway("extend", namespace.name(), &[]).await;
    let (ana, bob, cy, ada) = (
        token("ana").await,
        token("bob").await,
        token("cy").await,
        token("ada").await,
    );
    create(&gateway, &ana, "ext", 60).await;
    let extend = "/_api/views/ext/extend";
    let by = |seconds: i64| Some(json!({"seconds": seconds}));

    // Nothing runs: nothing to extend.
    let (status, body) = send(&gateway, &ana, post(extend), by(600), &[]).await;
    expect_that!(status, eq(StatusCode::CONFLICT), "{body}");
    start(&gateway, &ana, "ext").await;
    let (_, view) = send(
        &gateway,
        &ana,
        (Method::GET, "localhost", "/_api/views/ext"),
        None,
        &[],
    )
    .await;
    let started = timestamp(&view["status"]["startedAt"]);
    let first_deadline = timestamp(&view["status"]["deadline"]);
    expect_that!(first_deadline.duration_since(started).as_secs(), eq(60));
    expect_that!(
        timestamp(&view["status"]["maxDeadline"])
            .duration_since(started)
            .as_secs(),
        eq(CAP)
    );
    expect_that!(view["status"]["requests"]["cpu"].as_str(), some(eq("250m")));
    // Its lake keys live as long as the run may: until its start plus the cap.
    let (key, works) = lake_keys(&client, namespace.name(), &endpoint, "view-ext-1").await;
    expect_that!(works, eq(true));
    let expiry: i64 = key
        .split('_')
        .nth(3)
        .and_then(|e| e.parse().ok())
        .expect("expiry");
    expect_that!(expiry - started.as_second(), eq(CAP));

    // The owner and those it is shared with extend it; strangers cannot see it.
    let (status, body) = send(&gateway, &ana, post(extend), by(60), &[]).await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    expect_that!(
        timestamp(&body["status"]["deadline"])
            .duration_since(started)
            .as_secs(),
        eq(120)
    );
    expect_that!(
        job_deadline(&client, namespace.name(), "view-ext-1").await,
        some(eq(120))
    );
    let (status, body) = send(&gateway, &cy, post(extend), by(60), &[]).await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    let (status, _) = send(&gateway, &bob, post(extend), by(60), &[]).await;
    expect_that!(status, eq(StatusCode::NOT_FOUND));
    let (status, body) = send(&gateway, &ada, post(extend), by(60), &[]).await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    expect_that!(
        job_deadline(&client, namespace.name(), "view-ext-1").await,
        some(eq(240))
    );

    // Past the cap: refused, with what may still be added; nothing changes.
    let (status, body) = send(&gateway, &ana, post(extend), by(CAP), &[]).await;
    expect_that!(status, eq(StatusCode::UNPROCESSABLE_ENTITY), "{body}");
    expect_that!(body["error"].as_str(), some(eq("over_cap")));
    expect_that!(
        body["details"]["allowedSeconds"].as_i64(),
        some(eq(CAP - 240))
    );
    expect_that!(
        job_deadline(&client, namespace.name(), "view-ext-1").await,
        some(eq(240))
    );
    // Bad bodies are refused as the API refuses them.
    let (status, body) = send(&gateway, &ana, post(extend), by(5), &[]).await;
    expect_that!(status, eq(StatusCode::BAD_REQUEST), "{body}");
    expect_that!(body["error"].as_str(), some(eq("invalid_request")));

    // Past its first deadline the run still serves, and its keys still read
    // the lake (the Job controller would have ended it at 60 s).
    eventually(WAIT * 2, || async {
        ensure!(
            jiff::Timestamp::now() > first_deadline + jiff::SignedDuration::from_secs(10),
            "not yet past the first deadline"
        );
        Ok(())
    })
    .await;
    start(&gateway, &ana, "ext").await;
    expect_that!(
        live_jobs(&client, namespace.name(), "ext").await,
        elements_are![eq("view-ext-1")]
    );
    expect_that!(
        lake_keys(&client, namespace.name(), &endpoint, "view-ext-1").await,
        eq(&(key, true))
    );
}

#[gtest]
#[tokio::test]
async fn the_banner_reads_and_extends_on_the_views_host_and_refuses_other_pages() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let (gateway, _) = gateway("banner", namespace.name(), &[]).await;
    let (ana, bob, cy) = (token("ana").await, token("bob").await, token("cy").await);
    create(&gateway, &ana, "bann", 3600).await;
    start(&gateway, &ana, "bann").await;
    let host = "bann.localhost";
    let origin = |host: &str| format!("http://{host}:{}", gateway.port);

    // What the banner needs, for the signed-in caller: the run's deadline,
    // its idle timeout, and the warning window.
    let (status, body) = send(
        &gateway,
        &cy,
        (Method::GET, host, "/_gateway/view"),
        None,
        &[],
    )
    .await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    expect_that!(body["warningSeconds"].as_i64(), some(eq(120)));
    expect_that!(body["view"]["idleTimeoutSeconds"].as_i64(), some(eq(900)));
    let deadline = timestamp(&body["view"]["status"]["deadline"]);
    // Strangers: the host does not exist for them (Envoy's RBAC).
    let (status, _) = send(
        &gateway,
        &bob,
        (Method::GET, host, "/_gateway/view"),
        None,
        &[],
    )
    .await;
    expect_that!(status, eq(StatusCode::NOT_FOUND));

    // Another page (another host of the same site, or another site) cannot
    // extend it with the browser's session; the view's own page can.
    let extend = (Method::POST, host, "/_gateway/view/extend");
    let body = Some(json!({"seconds": 600}));
    for headers in [
        vec![("origin", origin("evil.localhost"))],
        vec![
            ("sec-fetch-site", "same-site".to_string()),
            ("origin", origin(host)),
        ],
        vec![("sec-fetch-site", "cross-site".to_string())],
        vec![("origin", "null".to_string())],
    ] {
        let (status, answer) = send(&gateway, &ana, extend.clone(), body.clone(), &headers).await;
        expect_that!(status, eq(StatusCode::FORBIDDEN), "{headers:?}: {answer}");
        expect_that!(answer["error"].as_str(), some(eq("forbidden")));
    }
    let (_, unchanged) = send(
        &gateway,
        &ana,
        (Method::GET, host, "/_gateway/view"),
        None,
        &[],
    )
    .await;
    expect_that!(
        timestamp(&unchanged["view"]["status"]["deadline"]),
        eq(deadline)
    );
    let same_origin = [
        ("sec-fetch-site", "same-origin".to_string()),
        ("origin", origin(host)),
    ];
    let (status, answer) = send(&gateway, &cy, extend.clone(), body.clone(), &same_origin).await;
    expect_that!(status, eq(StatusCode::OK), "{answer}");
    expect_that!(
        timestamp(&answer["view"]["status"]["deadline"])
            .duration_since(deadline)
            .as_secs(),
        eq(600)
    );

    // The API refuses other pages' writes the same way: a view's page
    // cannot stop (or delete) anything through the gateway's host.
    let (status, answer) = send(
        &gateway,
        &ana,
        post("/_api/views/bann/stop"),
        None,
        &[
            ("origin", origin(host)),
            ("sec-fetch-site", "same-site".to_string()),
        ],
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN), "{answer}");
    expect_that!(
        live_jobs(&client, namespace.name(), "bann").await,
        elements_are![eq("view-bann-1")]
    );
    let (status, answer) = send(
        &gateway,
        &ana,
        post("/_api/views/bann/stop"),
        None,
        &[
            ("origin", origin("localhost")),
            ("sec-fetch-site", "same-origin".to_string()),
        ],
    )
    .await;
    expect_that!(status, eq(StatusCode::OK), "{answer}");
}
