//! Scale from zero against the local cluster and real Envoys: the first
//! requests for a cold view start one Job, are held, and get the view's own
//! answer; starts that cannot succeed fail fast; the budget ends the wait.

use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::future::join_all;
use googletest::prelude::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use kube::api::{Api, ListParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::gateway::Gateway;
use test_support::{TestNamespace, eventually};

const WAIT: Duration = Duration::from_secs(60);

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

async fn get(gateway: &Gateway, host: &str) -> Answer {
    let response = gateway
        .client()
        .get(gateway.url(host, "/"))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("GET");
    Answer {
        status: response.status(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        body: response.text().await.unwrap_or_default(),
    }
}

async fn jobs_of(client: &kube::Client, namespace: &str, view: &str) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("views.dev/view={view}")))
        .await
        .expect("listing Jobs")
        .items
}

async fn view_status(gateway: &Gateway, name: &str) -> Value {
    gateway
        .client()
        .get(gateway.url("localhost", &format!("/_api/views/{name}")))
        .send()
        .await
        .expect("GET view")
        .json()
        .await
        .expect("view JSON")
}

/// Send `count` requests to `host` in the background and return once the
/// sidecar holds them all; their answers come from the task.
async fn hold(
    gateway: &Gateway,
    host: &str,
    count: usize,
) -> tokio::task::JoinHandle<Vec<(StatusCode, String)>> {
    let held = tokio::spawn({
        let http = gateway.client();
        let url = gateway.url(host, "/");
        async move {
            join_all((0..count).map(|_| async {
                let response = http.get(&url).send().await.expect("GET");
                (response.status(), response.text().await.unwrap_or_default())
            }))
            .await
        }
    });
    eventually(WAIT, || async {
        let held = gateway.metric("views_gateway_held_requests", "").await;
        ensure!(held >= count as f64, "{held} held");
        Ok(())
    })
    .await;
    held
}

fn echo_answers(answers: &[Answer]) -> usize {
    answers
        .iter()
        .filter(|a| a.status == StatusCode::OK && a.body.starts_with("pod: "))
        .count()
}

#[gtest]
#[tokio::test]
async fn two_hundred_requests_to_a_cold_view_start_one_job_and_all_get_the_view() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start_with(
        "cold200",
        namespace.name(),
        &[("VIEW_POD_ANNOTATIONS", "sim.views.dev/ready-after=2s")],
    )
    .await;
    gateway.create_view("burst").await;

    let started = Instant::now();
    let answers = join_all((0..200).map(|_| get(&gateway, "burst.localhost"))).await;
    let took = started.elapsed();

    expect_that!(echo_answers(&answers), eq(200));
    let unavailable = answers
        .iter()
        .filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    expect_that!(unavailable, eq(0));
    expect_that!(
        jobs_of(&client, namespace.name(), "burst").await.len(),
        eq(1)
    );
    // Held for the pod's start (2 s), not answered before it.
    expect_that!(took, ge(Duration::from_secs(2)));
    expect_that!(
        gateway
            .metric("views_gateway_activations_started_total", "")
            .await,
        eq(1.0)
    );
    let status = view_status(&gateway, "burst").await;
    expect_that!(status["status"]["phase"].as_str(), some(eq("ready")));
    expect_that!(status["status"]["deadline"].as_str(), some(anything()));
}

#[gtest]
#[tokio::test]
async fn two_replicas_split_a_burst_and_still_start_one_job() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let env = [("VIEW_POD_ANNOTATIONS", "sim.views.dev/ready-after=2s")];
    let (first, second) = tokio::join!(
        Gateway::start_with("replica-a", namespace.name(), &env),
        Gateway::start_with("replica-b", namespace.name(), &env),
    );
    first.create_view("split").await;
    // The second replica has the view once its index does.
    eventually(WAIT, || async {
        ensure!(view_status(&second, "split").await["name"] == "split");
        Ok(())
    })
    .await;

    let answers = join_all((0..200).map(|i| {
        let gateway = if i % 2 == 0 { &first } else { &second };
        get(gateway, "split.localhost")
    }))
    .await;

    expect_that!(echo_answers(&answers), eq(200));
    expect_that!(
        jobs_of(&client, namespace.name(), "split").await.len(),
        eq(1)
    );
    let created = first
        .metric("views_gateway_activations_started_total", "")
        .await
        + second
            .metric("views_gateway_activations_started_total", "")
            .await;
    // Both may have tried; the API server let one create the Job.
    expect_that!(created, ge(1.0));
}

#[gtest]
#[tokio::test]
async fn a_warm_view_is_served_without_asking_the_sidecar() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start("warm", namespace.name()).await;
    gateway.create_view("warm").await;
    let first = get(&gateway, "warm.localhost").await;
    expect_that!(first.status, eq(StatusCode::OK));
    // Warm once this Envoy has the route without ext_authz.
    eventually(WAIT, || async {
        let before = gateway
            .metric("views_gateway_ext_authz_checks_total", "")
            .await;
        get(&gateway, "warm.localhost").await;
        let after = gateway
            .metric("views_gateway_ext_authz_checks_total", "")
            .await;
        ensure!(before == after, "still checked: {before} → {after}");
        Ok(())
    })
    .await;

    let checks_before = gateway
        .metric("views_gateway_ext_authz_checks_total", "")
        .await;
    let mut answers = Vec::new();
    for batch in 0..10 {
        let _ = batch;
        answers.extend(join_all((0..100).map(|_| get(&gateway, "warm.localhost"))).await);
    }
    let checks_after = gateway
        .metric("views_gateway_ext_authz_checks_total", "")
        .await;

    expect_that!(echo_answers(&answers), eq(1000));
    expect_that!(checks_after - checks_before, eq(0.0));
}

#[gtest]
#[tokio::test]
async fn a_view_that_never_becomes_ready_gets_503_with_retry_after_at_the_budget() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start_with(
        "never",
        namespace.name(),
        &[
            ("VIEW_RUNTIME_CLASS", ""),
            ("VIEW_POD_ANNOTATIONS", "sim.views.dev/fail=never-ready"),
            ("COLD_START_BUDGET_SECONDS", "3"),
        ],
    )
    .await;
    gateway.create_view("never").await;

    let started = Instant::now();
    let answers = join_all((0..5).map(|_| get(&gateway, "never.localhost"))).await;
    let took = started.elapsed();

    for answer in &answers {
        expect_that!(answer.status, eq(StatusCode::SERVICE_UNAVAILABLE));
        expect_that!(answer.retry_after.as_deref(), some(eq("5")));
        let body: Value = serde_json::from_str(&answer.body).unwrap_or_default();
        expect_that!(body["error"].as_str(), some(eq("view_starting")));
        expect_that!(
            body["message"].as_str(),
            some(contains_substring("still starting"))
        );
    }
    expect_that!(took, ge(Duration::from_secs(3)));
    expect_that!(took, lt(Duration::from_secs(10)));
    // The start goes on: the view says so.
    let status = view_status(&gateway, "never").await;
    expect_that!(status["status"]["phase"].as_str(), some(eq("starting")));
    expect_that!(
        jobs_of(&client, namespace.name(), "never").await.len(),
        eq(1)
    );
}

#[gtest]
#[tokio::test]
async fn an_image_pull_failure_ends_held_requests_with_the_reason_at_once() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start_with(
        "pullfail",
        namespace.name(),
        &[
            ("VIEW_RUNTIME_CLASS", ""),
            (
                "VIEW_POD_ANNOTATIONS",
                "sim.views.dev/fail=image-pull-error",
            ),
            ("COLD_START_BUDGET_SECONDS", "60"),
        ],
    )
    .await;
    gateway.create_view("broken").await;

    let started = Instant::now();
    let answers = join_all((0..10).map(|_| get(&gateway, "broken.localhost"))).await;
    let took = started.elapsed();

    for answer in &answers {
        expect_that!(answer.status, eq(StatusCode::BAD_GATEWAY));
        let body: Value = serde_json::from_str(&answer.body).unwrap_or_default();
        expect_that!(body["error"].as_str(), some(eq("view_failed")));
        expect_that!(body["details"]["reason"].as_str(), some(eq("ErrImagePull")));
    }
    // Well before the 60 s budget.
    expect_that!(took, lt(Duration::from_secs(15)));
    let status = view_status(&gateway, "broken").await;
    expect_that!(status["status"]["phase"].as_str(), some(eq("failed")));
    expect_that!(
        status["status"]["reason"].as_str(),
        some(eq("ErrImagePull"))
    );
    // Nothing keeps pulling: the failed start's Job is deleted.
    eventually(WAIT, || async {
        let jobs = jobs_of(&client, namespace.name(), "broken").await;
        ensure!(jobs.is_empty(), "{} Jobs left", jobs.len());
        Ok(())
    })
    .await;
}

#[gtest]
#[tokio::test]
async fn deleting_a_view_ends_its_held_requests_with_404_and_leaves_no_job() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let gateway = Gateway::start_with(
        "delheld",
        namespace.name(),
        &[
            ("VIEW_RUNTIME_CLASS", ""),
            ("VIEW_POD_ANNOTATIONS", "sim.views.dev/fail=never-ready"),
        ],
    )
    .await;
    gateway.create_view("doomed").await;

    let held = hold(&gateway, "doomed.localhost", 20).await;
    let started = Instant::now();
    let deleted = gateway
        .client()
        .delete(gateway.url("localhost", "/_api/views/doomed"))
        .send()
        .await
        .expect("DELETE");
    expect_that!(deleted.status(), eq(StatusCode::NO_CONTENT));

    let answers = held.await.expect("held requests");
    expect_that!(started.elapsed(), lt(Duration::from_secs(10)));
    for (status, _) in &answers {
        expect_that!(*status, eq(StatusCode::NOT_FOUND));
    }
    eventually(WAIT, || async {
        let jobs = jobs_of(&client, namespace.name(), "doomed").await;
        ensure!(jobs.is_empty(), "{} Jobs left", jobs.len());
        Ok(())
    })
    .await;
}

#[gtest]
#[tokio::test]
async fn a_pod_quota_refusal_ends_held_requests_with_the_reason() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), namespace.name());
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "no-pods"},
                "spec": {"hard": {"pods": "0"}},
            }))
            .expect("quota"),
        )
        .await
        .expect("creating the quota");
    let gateway = Gateway::start_with(
        "quota",
        namespace.name(),
        &[
            ("VIEW_RUNTIME_CLASS", ""),
            ("COLD_START_BUDGET_SECONDS", "60"),
        ],
    )
    .await;
    gateway.create_view("capped").await;

    let started = Instant::now();
    let answer = get(&gateway, "capped.localhost").await;

    expect_that!(answer.status, eq(StatusCode::BAD_GATEWAY));
    let body: Value = serde_json::from_str(&answer.body).unwrap_or_default();
    expect_that!(
        body["details"]["reason"].as_str(),
        some(eq("QuotaExceeded"))
    );
    expect_that!(
        body["message"].as_str(),
        some(contains_substring("exceeded quota"))
    );
    expect_that!(started.elapsed(), lt(Duration::from_secs(20)));
}

#[gtest]
#[tokio::test]
async fn an_idle_view_is_stopped_and_one_busy_on_another_replica_is_not() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let env = [("IDLE_CHECK_SECONDS", "2")];
    let (serving, other) = tokio::join!(
        Gateway::start_with("idle-a", namespace.name(), &env),
        Gateway::start_with("idle-b", namespace.name(), &env),
    );
    // `lazy` is used once, right after this instant: it may not be stopped
    // before its idle timeout has passed since.
    let mut started = Instant::now();
    for name in ["busy", "lazy"] {
        let response = serving
            .client()
            .post(serving.url("localhost", "/_api/views"))
            .json(&json!({"name": name, "idleTimeoutSeconds": 60,
                          "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}]}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED);
        started = Instant::now();
        expect_that!(
            get(&serving, &format!("{name}.localhost")).await.status,
            eq(StatusCode::OK)
        );
    }

    // Only replica A carries traffic, and only for `busy`; replica B sees
    // none and must not stop it.
    let lazy_stopped = eventually(Duration::from_secs(120), || async {
        let answer = get(&serving, "busy.localhost").await;
        ensure!(
            answer.status == StatusCode::OK,
            "busy answered {}",
            answer.status
        );
        let lazy = jobs_of(&client, namespace.name(), "lazy").await;
        ensure!(
            lazy.is_empty(),
            "lazy still has its Job after {:?}",
            started.elapsed()
        );
        Ok(started.elapsed())
    })
    .await;

    expect_that!(lazy_stopped, ge(Duration::from_secs(60)));
    // Held past the idle timeout by its traffic.
    let busy = jobs_of(&client, namespace.name(), "busy").await;
    expect_that!(busy.len(), eq(1));
    expect_that!(busy[0].metadata.deletion_timestamp, none());
    let status = view_status(&other, "busy").await;
    expect_that!(status["status"]["lastActivity"].as_str(), some(anything()));
    eventually(WAIT, || async {
        let lazy = view_status(&other, "lazy").await;
        ensure!(lazy["status"]["phase"] == "cold", "{lazy}");
        Ok(())
    })
    .await;
    // A stopped view starts again on the next request.
    expect_that!(
        get(&other, "lazy.localhost").await.status,
        eq(StatusCode::OK)
    );
}

/// The lake `cargo xtask lake up` runs (endpoint, root keys), as the
/// sidecar's upstream.
fn lake() -> Value {
    let path = test_support::cache_dir().join("lake/lake.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run `cargo xtask lake up`", path.display()));
    serde_json::from_str(&text).expect("lake.json")
}

/// Keys listing `prefix` through the sidecar's S3 endpoint: the number of
/// objects, or the S3 error code.
async fn list(endpoint: &str, key: &str, secret: &str, prefix: &str) -> Result<usize, String> {
    let client = gateway_sidecar::credentials::s3_client(&gateway_sidecar::credentials::Upstream {
        endpoint: endpoint.into(),
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        region: "us-east-1".into(),
    });
    let listed = client
        .list_objects_v2()
        .bucket("lake")
        .prefix(prefix)
        .send()
        .await;
    match listed {
        Ok(output) => Ok(output.contents().len()),
        Err(error) => Err(aws_sdk_s3::error::ProvideErrorMetadata::code(&error)
            .unwrap_or("no code")
            .to_owned()),
    }
}

/// A gateway replica whose sidecar is the views' S3 endpoint in front of
/// the lake `cargo xtask lake up` runs; and that endpoint's URL.
async fn with_credentials(name: &str, namespace: &str) -> (Gateway, String) {
    let lake = lake();
    let text = |key: &str| lake[key].as_str().expect("lake.json field").to_owned();
    let s3_port = test_support::gateway::free_port();
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let gateway = Gateway::start_with(
        name,
        namespace,
        &[
            ("CREDENTIALS_LISTEN", &format!("127.0.0.1:{s3_port}")),
            ("CREDENTIALS_ENDPOINT_URL", &endpoint),
            ("LAKE_ENDPOINT_URL", &text("endpoint")),
            ("LAKE_ACCESS_KEY_ID", &text("access_key_id")),
            ("LAKE_SECRET_ACCESS_KEY", &text("secret_access_key")),
        ],
    )
    .await;
    (gateway, endpoint)
}

/// The lake keys in the credentials Secret of activation `job`.
async fn keys_of(client: &kube::Client, namespace: &str, job: &str) -> (String, String) {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&format!("{job}-s3"))
        .await
        .expect("the activation's Secret");
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| String::from_utf8(data[key].0.clone()).expect("text");
    (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY"))
}

#[gtest]
#[tokio::test]
async fn each_activation_gets_scoped_credentials_that_end_with_it() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let lake = lake();
    let text = |key: &str| lake[key].as_str().expect("lake.json field").to_owned();
    let (gateway, endpoint) = with_credentials("creds", namespace.name()).await;
    let response = gateway
        .client()
        .post(gateway.url("localhost", "/_api/views"))
        .json(&json!({"name": "euro", "subsets": [{"bucket": "lake", "prefixes": ["sales/region=eu/"]}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    expect_that!(
        get(&gateway, "euro.localhost").await.status,
        eq(StatusCode::OK)
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace.name());
    let secret = secrets
        .get("view-euro-1-s3")
        .await
        .expect("the activation's Secret");
    let owner = secret.metadata.owner_references.clone().unwrap_or_default();
    expect_that!(owner.first().map(|o| o.kind.as_str()), some(eq("Job")));
    expect_that!(
        owner.first().map(|o| o.name.as_str()),
        some(eq("view-euro-1"))
    );
    let (key, secret_key) = keys_of(&client, namespace.name(), "view-euro-1").await;
    expect_that!(key, starts_with("vg2_v1-"));
    expect_that!(key, contains_substring("_euro_"));
    // The lake's own keys never reach the view.
    expect_that!(key, not(eq(&text("access_key_id"))));

    expect_that!(
        list(&endpoint, &key, &secret_key, "sales/region=eu/").await,
        ok(gt(&0))
    );
    expect_that!(
        list(&endpoint, &key, &secret_key, "sales/region=us/").await,
        err(eq("AccessDenied"))
    );

    expect_that!(
        gateway
            .metric("views_gateway_credentials_minted_total", "")
            .await,
        ge(1.0)
    );
    expect_that!(
        gateway
            .metric("views_gateway_s3_requests_total", "outcome=\"denied\"")
            .await,
        eq(1.0)
    );

    // The activation ends (its Job deleted): its keys stop working.
    Api::<Job>::namespaced(client.clone(), namespace.name())
        .delete("view-euro-1", &kube::api::DeleteParams::background())
        .await
        .expect("deleting the Job");
    eventually(WAIT, || async {
        let listed = list(&endpoint, &key, &secret_key, "sales/region=eu/").await;
        ensure!(listed.is_err(), "still allowed: {listed:?}");
        Ok(())
    })
    .await;
}

/// The lake keys of `view`'s first activation, started through `gateway`.
async fn start_for_keys(
    client: &kube::Client,
    namespace: &str,
    gateway: &Gateway,
    view: &str,
) -> (String, String) {
    let answer = get(gateway, &format!("{view}.localhost")).await;
    assert_eq!(answer.status, StatusCode::OK, "{view}: {}", answer.body);
    keys_of(client, namespace, &format!("view-{view}-1")).await
}

/// Until both replicas hold `versions` master key versions, the newest
/// numbered `current` (0: none).
async fn wait_for_master_keys(replicas: [&Gateway; 2], current: f64, versions: f64) {
    eventually(Duration::from_secs(10), || async {
        for replica in replicas {
            let now = (
                replica
                    .metric("views_gateway_credentials_master_key_current_version", "")
                    .await,
                replica
                    .metric("views_gateway_credentials_master_key_versions", "")
                    .await,
            );
            ensure!(now == (current, versions), "{} holds {now:?}", replica.name);
        }
        Ok(())
    })
    .await;
}

#[gtest]
#[tokio::test]
async fn two_replicas_agree_on_view_keys_across_master_key_rotation_and_deletion() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let ns = namespace.name();
    let (a, a_s3) = with_credentials("keys-a", ns).await;
    let (b, b_s3) = with_credentials("keys-b", ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let master = secrets
        .get("views-gateway-master-key")
        .await
        .expect("created by the first replica");
    let data = master.data.unwrap_or_default();
    expect_that!(data.keys().collect::<Vec<_>>(), eq(&vec!["v1"]));
    expect_that!(master.immutable, none());
    wait_for_master_keys([&a, &b], 1.0, 1.0).await;
    for view in ["euro", "rota", "west", "east"] {
        a.create_view(view).await;
    }
    // Each view reads the lake through either replica's endpoint.
    let reads = |key: String, secret: String| {
        let (a_s3, b_s3) = (a_s3.clone(), b_s3.clone());
        async move {
            let (on_a, on_b) = tokio::join!(
                list(&a_s3, &key, &secret, "sales/region=eu/"),
                list(&b_s3, &key, &secret, "sales/region=eu/"),
            );
            [on_a, on_b]
        }
    };

    // A key minted by one replica verifies on the other.
    let (euro, euro_secret) = start_for_keys(&client, ns, &a, "euro").await;
    expect_that!(euro, starts_with("vg2_v1-"));
    let v1_tag = euro[..euro.find("_euro_").expect("the view in the id")].to_owned();
    expect_that!(
        reads(euro.clone(), euro_secret.clone()).await,
        each(ok(gt(&0)))
    );

    // Rotation: v2 added. New keys come from v2 on either replica; euro's
    // v1 key keeps reading the lake through both.
    let v2 = test_support::random_bytes(32);
    secrets
        .patch(
            "views-gateway-master-key",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"v2": base64(&v2)}})),
        )
        .await
        .expect("rotating the master key");
    wait_for_master_keys([&a, &b], 2.0, 2.0).await;
    let (rota, rota_secret) = start_for_keys(&client, ns, &b, "rota").await;
    expect_that!(rota, starts_with("vg2_v2-"));
    expect_that!(reads(rota, rota_secret).await, each(ok(gt(&0))));
    expect_that!(
        reads(euro.clone(), euro_secret.clone()).await,
        each(ok(gt(&0)))
    );

    // Deletion: neither replica keeps a copy, so both refuse every key
    // derived from it alike.
    secrets
        .delete(
            "views-gateway-master-key",
            &kube::api::DeleteParams::default(),
        )
        .await
        .expect("deleting the master key");
    wait_for_master_keys([&a, &b], 0.0, 0.0).await;
    expect_that!(
        reads(euro, euro_secret).await,
        each(err(eq("InvalidAccessKeyId")))
    );
    // Both replicas start a view at once: each needs a master key, both
    // create one, the API server lets one win, and both mint from it.
    let ((west, west_secret), (east, east_secret)) = tokio::join!(
        start_for_keys(&client, ns, &a, "west"),
        start_for_keys(&client, ns, &b, "east"),
    );
    let recreated = secrets
        .get("views-gateway-master-key")
        .await
        .expect("created again");
    expect_that!(
        recreated
            .data
            .unwrap_or_default()
            .keys()
            .collect::<Vec<_>>(),
        eq(&vec!["v1"])
    );
    let tag = |id: &str, view: &str| id[..id.find(&format!("_{view}_")).expect("view")].to_owned();
    expect_that!(tag(&west, "west"), eq(&tag(&east, "east")));
    expect_that!(tag(&west, "west"), starts_with("vg2_v1-"));
    expect_that!(tag(&west, "west"), not(eq(&v1_tag)), "a new v1");
    expect_that!(reads(west, west_secret).await, each(ok(gt(&0))));
    expect_that!(reads(east, east_secret).await, each(ok(gt(&0))));
    wait_for_master_keys([&a, &b], 1.0, 1.0).await;
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[gtest]
#[tokio::test]
async fn on_sigterm_the_replica_turns_unready_drains_envoy_finishes_held_requests_and_serves_until_its_envoy_is_gone()
 {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let mut gateway = Gateway::start_with(
        "drain",
        namespace.name(),
        &[
            ("VIEW_POD_ANNOTATIONS", "sim.views.dev/ready-after=3s"),
            // Longer than this test waits with Envoy still there: an exit
            // before it is the drain's own doing, not its time running out.
            ("DRAIN_SECONDS", "40"),
        ],
    )
    .await;
    gateway.create_view("slow").await;
    let held = hold(&gateway, "slow.localhost", 20).await;

    let terminating = tokio::spawn({
        let ops = gateway.ops_url("/readyz");
        let admin = format!("http://127.0.0.1:{}/ready", gateway.admin_port);
        let http = gateway.client();
        async move {
            // Unready (and Envoy draining) while the held requests finish.
            eventually(Duration::from_secs(5), || async {
                let ready = http.get(&ops).send().await?;
                ensure!(
                    ready.status() == StatusCode::SERVICE_UNAVAILABLE,
                    "{}",
                    ready.status()
                );
                let body: Value = ready.json().await?;
                ensure!(body["draining"] == true, "{body}");
                let envoy = http.get(&admin).send().await?.text().await?;
                ensure!(envoy.trim() == "DRAINING", "Envoy says {envoy}");
                Ok(())
            })
            .await
        }
    });
    // Nothing is held any more after a few seconds, but the sidecar goes on
    // while its Envoy may still be sent requests.
    let early_exit = gateway.terminate_sidecar(Duration::from_secs(10)).await;
    expect_that!(early_exit, none());

    terminating.await.expect("readiness checks");
    let answers = held.await.expect("held requests");
    let served = answers
        .iter()
        .filter(|(status, body)| *status == StatusCode::OK && body.starts_with("pod: "))
        .count();
    expect_that!(served, eq(20));

    // A request that still reaches this Envoy still gets the API.
    let listed = gateway
        .client()
        .get(gateway.url("localhost", "/_api/views"))
        .send()
        .await
        .expect("GET /_api/views");
    expect_that!(listed.status(), eq(StatusCode::OK));

    // Its Envoy gone (in a pod: after its preStop sleep), the drain ends.
    gateway.kill_envoy();
    let exit = gateway.terminate_sidecar(Duration::from_secs(10)).await;
    expect_that!(exit.map(|s| s.success()), some(eq(true)));
}
