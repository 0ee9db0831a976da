//! Who may see what, end to end: the real OpenID Connect provider of the
//! local stack issues the tokens, the real Envoy verifies them (jwt_authn)
//! and enforces each view's owner and shares (RBAC), the sidecar answers the
//! API for the identity Envoy verified and checks the operator's
//! entitlements (a ConfigMap) on create, share and start.

use std::time::Duration;

use anyhow::ensure;
use googletest::prelude::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::gateway::Gateway;
use test_support::openapi::as_documented;
use test_support::{TestNamespace, echo_view_pod, eventually, oidc};

const WAIT: Duration = Duration::from_secs(30);
const ENTITLEMENTS: &str = "views-gateway-entitlements";

/// analysts read sales/, finance reads tpch/ and sales-private/, both read
/// shared/; cy (no groups) reads sales/.
const GRANTS: &str = r#"
grants:
- groups: [analysts]
  bucket: lake
  prefixes: [sales/]
  access: read
- groups: [finance]
  bucket: lake
  prefixes: [tpch/, sales-private/]
  access: read
- groups: [analysts, finance]
  bucket: lake
  prefixes: [shared/]
  access: read
- users: [cy]
  bucket: lake
  prefixes: [sales/]
"#;

async fn set_entitlements(client: &kube::Client, namespace: &str, document: &str) {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": ENTITLEMENTS},
        "data": {"entitlements.yaml": document},
    }))
    .expect("ConfigMap");
    config_maps
        .patch(
            ENTITLEMENTS,
            &PatchParams::apply("identity-test").force(),
            &Patch::Apply(&config_map),
        )
        .await
        .expect("entitlements ConfigMap");
}

async fn signed_in_gateway(name: &str, namespace: &str) -> Gateway {
    let issuer = oidc::provider().issuer;
    Gateway::start_with(
        name,
        namespace,
        &[("OIDC_ISSUER", &issuer), ("ADMIN_GROUPS", "views-admins")],
    )
    .await
}

async fn token(user: &str) -> String {
    oidc::token(user, "views-cli", "urn:views-gateway")
        .await
        .unwrap_or_else(|e| panic!("a token for {user}: {e:#}"))
}

/// One request as `token` (none: anonymous); the status and the body.
async fn call(
    gateway: &Gateway,
    token: Option<&str>,
    method: Method,
    host: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = gateway.client().request(method, gateway.url(host, path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    (response.status(), response.text().await.unwrap_or_default())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn view(name: &str, prefix: &str) -> Value {
    json!({"name": name, "subsets": [{"bucket": "lake", "prefixes": [prefix]}]})
}

/// Wait until `token`'s request to `host` gets `status` (Envoy applies a
/// route or policy change asynchronously).
async fn eventually_status(
    gateway: &Gateway,
    token: &str,
    host: &str,
    status: StatusCode,
) -> String {
    eventually(WAIT, || async {
        let (got, body) = call(gateway, Some(token), Method::GET, host, "/", None).await;
        ensure!(got == status, "{host}: {got} {body}");
        Ok(body)
    })
    .await
}

#[gtest]
#[tokio::test]
async fn people_reach_only_their_own_views_and_those_shared_with_them() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    set_entitlements(&client, namespace.name(), GRANTS).await;
    let gateway = signed_in_gateway("identity", namespace.name()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let services: Api<Service> = Api::namespaced(client.clone(), namespace.name());
    let (ana, bob, ada) = (token("ana").await, token("bob").await, token("ada").await);

    // Strangers: 401 with the API's JSON error, on the API and on any host.
    let (status, body) = call(
        &gateway,
        None,
        Method::GET,
        "localhost",
        "/_api/views",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::UNAUTHORIZED));
    expect_that!(
        json_of(&body)["error"].as_str(),
        some(eq("unauthenticated"))
    );
    let (status, _) = call(&gateway, None, Method::GET, "nosuch.localhost", "/", None).await;
    expect_that!(status, eq(StatusCode::UNAUTHORIZED));
    let challenge = gateway
        .client()
        .get(gateway.url("localhost", "/_api/views"))
        .send()
        .await
        .expect("request");
    expect_that!(
        challenge
            .headers()
            .get("www-authenticate")
            .and_then(|c| c.to_str().ok()),
        some(starts_with("Bearer"))
    );
    // The readiness path stays open for probes.
    let (status, _) = call(
        &gateway,
        None,
        Method::GET,
        "localhost",
        "/_api/readyz",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));

    // Ana creates views over what she may read, and nothing else.
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::POST,
        "localhost",
        "/_api/views",
        Some(view("anav", "sales/")),
    )
    .await;
    expect_that!(status, eq(StatusCode::CREATED), "{body}");
    expect_that!(json_of(&body)["owner"].as_str(), some(eq("ana")));
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::POST,
        "localhost",
        "/_api/views",
        Some(view("secret", "sales-private/")),
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));
    let refused = json_of(&body);
    expect_that!(refused["error"].as_str(), some(eq("not_entitled")));
    expect_that!(
        refused["details"]["prefix"].as_str(),
        some(eq("sales-private/"))
    );
    expect_that!(refused["details"]["subset"].as_u64(), some(eq(0)));
    let created = services
        .list(&ListParams::default())
        .await
        .expect("services")
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect::<Vec<_>>();
    expect_that!(created, not(contains(eq("view-secret"))));
    // Nor for someone else.
    let mut for_bob = view("bobv", "sales/");
    for_bob["owner"] = "bob".into();
    let (status, _) = call(
        &gateway,
        Some(&ana),
        Method::POST,
        "localhost",
        "/_api/views",
        Some(for_bob),
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::POST,
        "localhost",
        "/_api/views",
        Some(view("joint", "shared/")),
    )
    .await;
    expect_that!(status, eq(StatusCode::CREATED), "{body}");

    for (pod, view) in [("anav-1", "anav"), ("joint-1", "joint")] {
        pods.create(
            &PostParams::default(),
            &echo_view_pod(pod, view, "hello", true),
        )
        .await
        .expect("pod");
        gateway.wait_serving(view).await;
    }
    let body = eventually_status(&gateway, &ana, "anav.localhost", StatusCode::OK).await;
    expect_that!(body, contains_substring("pod: anav-1"));
    eventually_status(&gateway, &ana, "joint.localhost", StatusCode::OK).await;

    // Bob can neither open, list, delete nor learn of ana's views: to him
    // they answer exactly like a host that does not exist.
    let unknown = call(
        &gateway,
        Some(&bob),
        Method::GET,
        "nosuch.localhost",
        "/",
        None,
    )
    .await;
    expect_that!(unknown.0, eq(StatusCode::NOT_FOUND));
    let refused = call(
        &gateway,
        Some(&bob),
        Method::GET,
        "anav.localhost",
        "/",
        None,
    )
    .await;
    expect_that!(refused, eq(&unknown));
    let (status, body) = call(
        &gateway,
        Some(&bob),
        Method::GET,
        "localhost",
        "/_api/views",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        json_of(&body)["views"].as_array().map(Vec::len),
        some(eq(0))
    );
    for method in [Method::GET, Method::DELETE] {
        let (status, _) = call(
            &gateway,
            Some(&bob),
            method,
            "localhost",
            "/_api/views/anav",
            None,
        )
        .await;
        expect_that!(status, eq(StatusCode::NOT_FOUND));
    }
    let (status, _) = call(
        &gateway,
        Some(&bob),
        Method::PUT,
        "localhost",
        "/_api/views/anav/shares",
        Some(json!({"users": ["bob"]})),
    )
    .await;
    expect_that!(status, eq(StatusCode::NOT_FOUND));

    // Sharing is checked against the entitlements of whom it names; a
    // refused share changes nothing.
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::PUT,
        "localhost",
        "/_api/views/anav/shares",
        Some(json!({"users": ["cy"]})),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::PUT,
        "localhost",
        "/_api/views/anav/shares",
        Some(json!({"groups": ["finance"]})),
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));
    expect_that!(
        json_of(&body)["details"]["group"].as_str(),
        some(eq("finance"))
    );
    let (_, body) = call(
        &gateway,
        Some(&ana),
        Method::GET,
        "localhost",
        "/_api/views/anav",
        None,
    )
    .await;
    expect_that!(json_of(&body)["sharedWith"], eq(&json!({"users": ["cy"]})));
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::PUT,
        "localhost",
        "/_api/views/joint/shares",
        Some(json!({"groups": ["finance"]})),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    expect_that!(
        json_of(&body)["sharedWith"]["groups"][0].as_str(),
        some(eq("finance"))
    );

    // Once shared with his group, bob reaches it and sees it, but only its
    // owner (or an admin) deletes or re-shares it.
    let body = eventually_status(&gateway, &bob, "joint.localhost", StatusCode::OK).await;
    expect_that!(body, contains_substring("pod: joint-1"));
    let (_, body) = call(
        &gateway,
        Some(&bob),
        Method::GET,
        "localhost",
        "/_api/views",
        None,
    )
    .await;
    let names: Vec<String> = json_of(&body)["views"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    expect_that!(names, elements_are![eq("joint")]);
    let (status, _) = call(
        &gateway,
        Some(&bob),
        Method::DELETE,
        "localhost",
        "/_api/views/joint",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));
    let (status, _) = call(
        &gateway,
        Some(&bob),
        Method::PUT,
        "localhost",
        "/_api/views/joint/shares",
        Some(json!({})),
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));

    // An admin sees every view.
    let (_, body) = call(
        &gateway,
        Some(&ada),
        Method::GET,
        "localhost",
        "/_api/views",
        None,
    )
    .await;
    expect_that!(
        json_of(&body)["views"].as_array().map(Vec::len),
        some(eq(2))
    );

    // Warm, signed-in requests are checked in Envoy alone.
    let checks = gateway
        .metric("views_gateway_ext_authz_checks_total", "")
        .await;
    for _ in 0..50 {
        let (status, _) = call(
            &gateway,
            Some(&ana),
            Method::GET,
            "anav.localhost",
            "/",
            None,
        )
        .await;
        expect_that!(status, eq(StatusCode::OK));
    }
    expect_that!(
        gateway
            .metric("views_gateway_ext_authz_checks_total", "")
            .await,
        eq(checks)
    );

    // Un-sharing takes bob's access away again.
    let (status, _) = call(
        &gateway,
        Some(&ana),
        Method::PUT,
        "localhost",
        "/_api/views/joint/shares",
        Some(json!({})),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    let gone = eventually_status(&gateway, &bob, "joint.localhost", StatusCode::NOT_FOUND).await;
    expect_that!(gone, eq(&unknown.1));

    // A spec broken by hand says no more whose the view is: only admins see
    // what is left of it, and only they may delete it.
    services
        .patch(
            "view-joint",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"views.dev/spec": "{}"}}})),
        )
        .await
        .expect("the spec edited by hand");
    let listed = eventually(WAIT, || async {
        let (_, body) = call(
            &gateway,
            Some(&ada),
            Method::GET,
            "localhost",
            "/_api/views",
            None,
        )
        .await;
        let listed = json_of(&body);
        ensure!(listed["invalid"][0]["name"] == "joint", "not yet: {body}");
        Ok(listed)
    })
    .await;
    expect_that!(listed["invalid"].as_array().map(Vec::len), some(eq(1)));
    let (_, body) = call(
        &gateway,
        Some(&ana),
        Method::GET,
        "localhost",
        "/_api/views",
        None,
    )
    .await;
    expect_that!(json_of(&body).get("invalid"), none());
    for (method, status) in [
        (Method::GET, StatusCode::NOT_FOUND),
        (Method::DELETE, StatusCode::NOT_FOUND),
    ] {
        let (got, _) = call(
            &gateway,
            Some(&ana),
            method,
            "localhost",
            "/_api/views/joint",
            None,
        )
        .await;
        expect_that!(got, eq(status));
    }
    let (status, _) = call(
        &gateway,
        Some(&ada),
        Method::DELETE,
        "localhost",
        "/_api/views/joint",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::NO_CONTENT));
    expect_that!(services.get_opt("view-joint").await.expect("get"), none());
}

#[gtest]
#[tokio::test]
async fn only_valid_tokens_for_this_gateway_are_accepted() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    set_entitlements(&client, namespace.name(), GRANTS).await;
    let gateway = signed_in_gateway("tokens", namespace.name()).await;
    let ana = token("ana").await;

    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::GET,
        "localhost",
        "/_api/me",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::OK), "{body}");
    let me = json_of(&body);
    expect_that!(me["user"].as_str(), some(eq("ana")));
    expect_that!(me["groups"], eq(&json!(["analysts"])));
    expect_that!(me["admin"].as_bool(), some(eq(false)));
    expect_that!(
        me["grants"],
        eq(&json!([{"bucket": "lake", "prefixes": ["sales/", "shared/"], "access": "read"}]))
    );

    // A changed claim breaks the signature.
    let mut parts: Vec<String> = ana.split('.').map(String::from).collect();
    let mut claims = oidc::claims(&ana).expect("claims");
    claims["groups"] = json!(["finance"]);
    parts[1] = base64_url(&claims.to_string());
    let tampered = parts.join(".");
    let foreign = oidc::token("ana", "views-cli", "urn:other-service")
        .await
        .expect("a token for another service");
    for (what, token) in [
        ("tampered", tampered.as_str()),
        ("other audience", foreign.as_str()),
        ("not a JWT", "hello"),
    ] {
        let (status, body) = call(
            &gateway,
            Some(token),
            Method::GET,
            "localhost",
            "/_api/me",
            None,
        )
        .await;
        expect_that!(status, eq(StatusCode::UNAUTHORIZED), "{what}: {body}");
        expect_that!(
            json_of(&body)["error"].as_str(),
            some(eq("unauthenticated")),
            "{what}"
        );
    }
    // A client-sent identity header is not believed.
    let forged = base64_url(r#"{"sub":"ada","groups":["views-admins"]}"#);
    let response = gateway
        .client()
        .get(gateway.url("localhost", "/_api/me"))
        .header("x-views-identity", forged)
        .send()
        .await
        .expect("request");
    expect_that!(response.status(), eq(StatusCode::UNAUTHORIZED));

    // A token that expires (this client's live 5 s) works, then stops.
    let expiring = oidc::token("ana", "views-expiring", "urn:views-gateway")
        .await
        .expect("an expiring token");
    let (status, _) = call(
        &gateway,
        Some(&expiring),
        Method::GET,
        "localhost",
        "/_api/me",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    eventually(WAIT, || async {
        let (status, _) = call(
            &gateway,
            Some(&expiring),
            Method::GET,
            "localhost",
            "/_api/me",
            None,
        )
        .await;
        ensure!(status == StatusCode::UNAUTHORIZED, "still {status}");
        Ok(())
    })
    .await;
}

/// The cookies a response sets (not those it deletes).
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok().map(String::from))
        .filter(|c| {
            !c.split(';')
                .next()
                .is_some_and(|pair| pair.ends_with("=deleted"))
        })
        .collect()
}

/// A `Cookie` header carrying every cookie of these `Set-Cookie`s.
fn cookie_header(set_cookies: &[String]) -> String {
    set_cookies
        .iter()
        .filter_map(|c| c.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[gtest]
#[tokio::test]
async fn a_removed_entitlement_stops_the_next_create_and_start() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    set_entitlements(&client, namespace.name(), GRANTS).await;
    let gateway = signed_in_gateway("entitled", namespace.name()).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace.name());
    let ana = token("ana").await;
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::POST,
        "localhost",
        "/_api/views",
        Some(view("euro", "sales/")),
    )
    .await;
    expect_that!(status, eq(StatusCode::CREATED), "{body}");

    // The operator takes sales/ away from analysts.
    set_entitlements(
        &client,
        namespace.name(),
        "grants:\n- groups: [finance]\n  bucket: lake\n  prefixes: [tpch/]\n  access: read\n",
    )
    .await;
    let refused = eventually(WAIT, || async {
        let (status, body) = call(
            &gateway,
            Some(&ana),
            Method::POST,
            "localhost",
            "/_api/views",
            Some(view("eu2", "sales/")),
        )
        .await;
        ensure!(status == StatusCode::FORBIDDEN, "{status} {body}");
        Ok(json_of(&body))
    })
    .await;
    expect_that!(refused["error"].as_str(), some(eq("not_entitled")));
    // The existing view no longer starts for her, and no workload is made.
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::GET,
        "euro.localhost",
        "/",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::FORBIDDEN), "{body}");
    expect_that!(json_of(&body)["error"].as_str(), some(eq("not_entitled")));
    expect_that!(
        json_of(&body)["details"]["prefix"].as_str(),
        some(eq("sales/"))
    );
    let made = jobs
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .len();
    expect_that!(made, eq(0));
}

/// A browser's sign-in, step by step: Envoy sends it to the provider with
/// PKCE, takes the code back on the view's own host and sets that host's
/// session: it opens that host and no other (a sibling host can neither use
/// nor plant it), and the view behind it learns who calls but never sees it.
#[gtest]
#[tokio::test]
async fn a_browser_signs_in_per_host_and_its_session_works_on_that_host_only() {
    use reqwest::header::{ACCEPT, COOKIE, LOCATION};
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    set_entitlements(&client, namespace.name(), GRANTS).await;
    let provider = oidc::provider();
    let secret = provider
        .client("views-gateway")
        .expect("the gateway's client")
        .secret
        .clone()
        .expect("its secret");
    let gateway = Gateway::start_with(
        "browser",
        namespace.name(),
        &[
            ("OIDC_ISSUER", &provider.issuer),
            ("OIDC_CLIENT_SECRET", &secret),
            ("OIDC_RESOURCE", "urn:views-gateway"),
            ("OIDC_SCOPES", "openid,profile,email,groups"),
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    let ana = token("ana").await;
    for name in ["anav", "anav2"] {
        let (status, body) = call(
            &gateway,
            Some(&ana),
            Method::POST,
            "localhost",
            "/_api/views",
            Some(view(name, "sales/")),
        )
        .await;
        expect_that!(status, eq(StatusCode::CREATED), "{body}");
        pods.create(
            &PostParams::default(),
            &echo_view_pod(&format!("{name}-1"), name, "hello", true),
        )
        .await
        .expect("pod");
        gateway.wait_serving(name).await;
    }
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], gateway.port));
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("anav.localhost", loopback)
        .resolve("anav2.localhost", loopback)
        .no_proxy()
        .build()
        .expect("browser");
    let page = gateway.url("anav.localhost", "/");
    let location = |response: &reqwest::Response| -> String {
        response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };

    // A program without a session: 401, never a redirect.
    let response = browser.get(&page).send().await.expect("request");
    expect_that!(response.status(), eq(StatusCode::UNAUTHORIZED));
    // A person: to the provider, with PKCE, coming back to this very host.
    // (Envoy's cookies are `Secure`: browsers keep them for http://*.localhost,
    // reqwest's jar does not, so they are carried by hand.)
    let response = browser
        .get(&page)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .expect("request");
    expect_that!(response.status(), eq(StatusCode::FOUND));
    let flow_cookies = cookie_header(&set_cookies(&response));
    let mut url = reqwest::Url::parse(&location(&response)).expect("authorization URL");
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    expect_that!(
        url.as_str(),
        starts_with(format!("{}/auth", provider.issuer))
    );
    expect_that!(
        query.get("code_challenge_method").map(String::as_str),
        some(eq("S256"))
    );
    expect_that!(
        query.get("redirect_uri").map(String::as_str),
        some(eq(format!(
            "http://anav.localhost:{}/_gateway/oauth2/callback",
            gateway.port
        )
        .as_str()))
    );
    // At the provider: its login form, ana's password, back to the callback.
    let user = provider.user("ana").expect("ana");
    let mut posted = false;
    let callback = loop {
        let mut response = browser.get(url.clone()).send().await.expect("provider");
        if response.status() == StatusCode::OK && !posted {
            posted = true;
            response = browser
                .post(url.clone())
                .form(&[
                    ("username", user.name.as_str()),
                    ("password", user.password.as_str()),
                ])
                .send()
                .await
                .expect("login form");
        }
        assert!(
            response.status().is_redirection(),
            "{url}: {}",
            response.status()
        );
        let next = url.join(&location(&response)).expect("Location");
        if next.host_str() == Some("anav.localhost") {
            break next;
        }
        url = next;
    };
    // Envoy trades the code for tokens and sets this host's session.
    let response = browser
        .get(callback)
        .header(COOKIE, &flow_cookies)
        .send()
        .await
        .expect("callback");
    expect_that!(response.status(), eq(StatusCode::FOUND));
    // Back to the page asked for, on its host and port.
    expect_that!(location(&response), eq(page.as_str()));
    let cookies = set_cookies(&response);
    expect_that!(cookies, not(is_empty()));
    let session = cookie_header(&cookies);
    for cookie in &cookies {
        let lower = cookie.to_lowercase();
        expect_that!(lower, contains_substring("httponly"), "{cookie}");
        expect_that!(lower, contains_substring("secure"), "{cookie}");
        expect_that!(lower, contains_substring("samesite=lax"), "{cookie}");
        expect_that!(lower, not(contains_substring("domain=")), "{cookie}");
    }
    let response = browser
        .get(&page)
        .header(ACCEPT, "text/html")
        .header(COOKIE, &session)
        .send()
        .await
        .expect("signed in");
    expect_that!(response.status(), eq(StatusCode::OK));
    expect_that!(
        response.text().await.unwrap_or_default(),
        contains_substring("pod: anav-1")
    );

    // What the view receives: who the caller is, never their session or token.
    let response = browser
        .get(gateway.url("anav.localhost", "/headers"))
        .header(COOKIE, &session)
        .send()
        .await
        .expect("headers");
    let seen = response.text().await.unwrap_or_default().to_lowercase();
    expect_that!(seen, contains_substring("x-views-identity:"));
    expect_that!(seen, not(contains_substring("cookie:")));
    expect_that!(seen, not(contains_substring("authorization:")));
    // Cookies without the `__Host-` prefix could be planted from a sibling host.
    for cookie in &cookies {
        expect_that!(cookie, starts_with("__Host-"));
    }
    // The session, or any cookie of it, carried to another host opens nothing
    // there: not another view of ana's, not the API.
    let mut replays = vec![session.clone()];
    replays.extend(
        cookies
            .iter()
            .filter_map(|c| c.split(';').next())
            .map(String::from),
    );
    for replay in &replays {
        for (host, path) in [("anav2.localhost", "/"), ("localhost", "/_api/me")] {
            let response = gateway
                .client()
                .get(gateway.url(host, path))
                .header(COOKIE, replay)
                .send()
                .await
                .expect("replay");
            expect_that!(
                response.status(),
                eq(StatusCode::UNAUTHORIZED),
                "{host}{path} with {replay}"
            );
        }
    }
}

/// A token the cluster's TokenRequest API issues to a ServiceAccount.
async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audience: Option<&str>,
) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts
        .get_opt(name)
        .await
        .expect("service account")
        .is_none()
    {
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).expect("account"),
            )
            .await
            .expect("creating the service account");
    }
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": audience.map(|a| vec![a]).unwrap_or_default(), "expirationSeconds": 600},
    });
    let issued: TokenRequest = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("a token");
    issued.status.expect("a token in the status").token
}

#[gtest]
#[tokio::test]
async fn programs_in_the_cluster_sign_in_with_their_service_account_token() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let robot = format!("system:serviceaccount:{}:ci-bot", namespace.name());
    set_entitlements(
        &client,
        namespace.name(),
        &format!("grants:\n- users: [\"{robot}\"]\n  bucket: lake\n  prefixes: [sales/]\n"),
    )
    .await;
    let gateway = signed_in_gateway("robot", namespace.name()).await;
    let token =
        service_account_token(&client, namespace.name(), "ci-bot", Some("views-gateway")).await;
    // Envoy reads the cluster's keys from the sidecar, which reads them
    // from the API server: the first requests may beat that.
    let me = eventually(WAIT, || async {
        let (status, body) = call(
            &gateway,
            Some(&token),
            Method::GET,
            "localhost",
            "/_api/me",
            None,
        )
        .await;
        ensure!(status == StatusCode::OK, "{status} {body}");
        Ok(json_of(&body))
    })
    .await;
    expect_that!(me["user"].as_str(), some(eq(robot.as_str())));
    let (status, body) = call(
        &gateway,
        Some(&token),
        Method::POST,
        "localhost",
        "/_api/views",
        Some(view("robo", "sales/")),
    )
    .await;
    expect_that!(status, eq(StatusCode::CREATED), "{body}");
    expect_that!(json_of(&body)["owner"].as_str(), some(eq(robot.as_str())));
    // A token for the API server (its default audience) is not one for the gateway.
    let for_kubernetes = service_account_token(&client, namespace.name(), "ci-bot", None).await;
    let (status, _) = call(
        &gateway,
        Some(&for_kubernetes),
        Method::GET,
        "localhost",
        "/_api/me",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::UNAUTHORIZED));
}

/// (token, method, documented path, path, body)
type ApiCall<'a> = (
    Option<&'a str>,
    Method,
    &'static str,
    &'static str,
    Option<Value>,
);

#[gtest]
#[tokio::test]
async fn the_api_answers_as_its_openapi_document_says() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    set_entitlements(&client, namespace.name(), GRANTS).await;
    let gateway = signed_in_gateway("openapi", namespace.name()).await;
    let (ana, bob, cy) = (token("ana").await, token("bob").await, token("cy").await);

    // The document itself: for signed-in callers, the one in the repository.
    let (status, _) = call(
        &gateway,
        None,
        Method::GET,
        "localhost",
        "/_api/openapi.json",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::UNAUTHORIZED));
    let (status, body) = call(
        &gateway,
        Some(&ana),
        Method::GET,
        "localhost",
        "/_api/openapi.json",
        None,
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    let document = json_of(&body);
    let committed: Value =
        serde_json::from_str(views_types::OPENAPI).expect("the document is JSON");
    expect_that!(document, eq(&committed));

    // Every operation, answering well and badly.
    let bad_json = json!("not a view request");
    let cases: Vec<ApiCall> = vec![
        (None, Method::GET, "/_api/views", "/_api/views", None),
        (
            Some(&ana),
            Method::POST,
            "/_api/views",
            "/_api/views",
            Some(view("anao", "sales/")),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views",
            "/_api/views",
            Some(view("anao", "sales/")),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views",
            "/_api/views",
            Some(view("anap", "tpch/")),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views",
            "/_api/views",
            Some(view("anao", "shared/")),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views",
            "/_api/views",
            Some(bad_json),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views",
            "/_api/views",
            Some(view("api", "sales/")),
        ),
        (Some(&ana), Method::GET, "/_api/views", "/_api/views", None),
        (
            Some(&ana),
            Method::GET,
            "/_api/views/{name}",
            "/_api/views/anao",
            None,
        ),
        (
            Some(&ana),
            Method::GET,
            "/_api/views/{name}",
            "/_api/views/nosuch",
            None,
        ),
        (
            Some(&ana),
            Method::PUT,
            "/_api/views/{name}/shares",
            "/_api/views/anao/shares",
            Some(json!({"users": ["cy"]})),
        ),
        (
            Some(&ana),
            Method::PUT,
            "/_api/views/{name}/shares",
            "/_api/views/anao/shares",
            Some(json!({"groups": ["finance"]})),
        ),
        (
            Some(&ana),
            Method::PUT,
            "/_api/views/{name}/shares",
            "/_api/views/anao/shares",
            Some(json!({"users": "cy"})),
        ),
        // Shared with cy: she may open it, not stop it; bob may not learn of it.
        (
            Some(&cy),
            Method::POST,
            "/_api/views/{name}/stop",
            "/_api/views/anao/stop",
            None,
        ),
        (
            Some(&bob),
            Method::POST,
            "/_api/views/{name}/stop",
            "/_api/views/anao/stop",
            None,
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views/{name}/stop",
            "/_api/views/anao/stop",
            None,
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views/{name}/stop",
            "/_api/views/nosuch/stop",
            None,
        ),
        // Restart as stop (cy 403, bob 404); extending needs a run.
        (
            Some(&cy),
            Method::POST,
            "/_api/views/{name}/restart",
            "/_api/views/anao/restart",
            None,
        ),
        (
            Some(&bob),
            Method::POST,
            "/_api/views/{name}/restart",
            "/_api/views/anao/restart",
            None,
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views/{name}/extend",
            "/_api/views/anao/extend",
            Some(json!({"seconds": 600})),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views/{name}/extend",
            "/_api/views/anao/extend",
            Some(json!({"seconds": 5})),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views/{name}/restart",
            "/_api/views/anao/restart",
            None,
        ),
        (
            Some(&cy),
            Method::POST,
            "/_api/views/{name}/extend",
            "/_api/views/anao/extend",
            Some(json!({"seconds": 600})),
        ),
        (
            Some(&ana),
            Method::POST,
            "/_api/views/{name}/extend",
            "/_api/views/anao/extend",
            Some(json!({"seconds": 86400})),
        ),
        (Some(&ana), Method::GET, "/_api/me", "/_api/me", None),
        (
            Some(&ana),
            Method::DELETE,
            "/_api/views/{name}",
            "/_api/views/anao",
            None,
        ),
        (
            Some(&ana),
            Method::DELETE,
            "/_api/views/{name}",
            "/_api/views/anao",
            None,
        ),
        (None, Method::GET, "/_api/readyz", "/_api/readyz", None),
    ];
    let mut statuses = Vec::new();
    for (token, method, template, path, body) in cases {
        let (status, answer) = call(&gateway, token, method.clone(), "localhost", path, body).await;
        statuses.push(format!("{method} {path} {}", status.as_u16()));
        expect_that!(
            as_documented(&document, &method, template, status, &answer),
            ok(anything()),
        );
    }
    // The answers above are the ones meant: good and bad of each kind.
    expect_that!(
        statuses,
        elements_are![
            eq("GET /_api/views 401"),
            eq("POST /_api/views 201"),
            eq("POST /_api/views 201"),
            eq("POST /_api/views 403"),
            eq("POST /_api/views 409"),
            eq("POST /_api/views 400"),
            eq("POST /_api/views 422"),
            eq("GET /_api/views 200"),
            eq("GET /_api/views/anao 200"),
            eq("GET /_api/views/nosuch 404"),
            eq("PUT /_api/views/anao/shares 200"),
            eq("PUT /_api/views/anao/shares 403"),
            eq("PUT /_api/views/anao/shares 400"),
            eq("POST /_api/views/anao/stop 403"),
            eq("POST /_api/views/anao/stop 404"),
            eq("POST /_api/views/anao/stop 200"),
            eq("POST /_api/views/nosuch/stop 404"),
            eq("POST /_api/views/anao/restart 403"),
            eq("POST /_api/views/anao/restart 404"),
            eq("POST /_api/views/anao/extend 409"),
            eq("POST /_api/views/anao/extend 400"),
            eq("POST /_api/views/anao/restart 202"),
            eq("POST /_api/views/anao/extend 200"),
            eq("POST /_api/views/anao/extend 422"),
            eq("GET /_api/me 200"),
            eq("DELETE /_api/views/anao 204"),
            eq("DELETE /_api/views/anao 404"),
            eq("GET /_api/readyz 200"),
        ]
    );
}
