//! The local OpenID Connect provider (`cargo xtask oidc up`; `cargo xtask
//! test` starts it) answers as the gateway and its tests expect: discovery,
//! JWT access tokens for the gateway's audience carrying the user's groups,
//! refused passwords, a wrong-audience resource, short-lived tokens, the
//! gateway's per-view-host callbacks, sign-out, and `cargo xtask token`.

use googletest::prelude::*;
use serde_json::{Value, json};
use test_support::oidc::{
    self, CLI_CLIENT, EXPIRING_CLIENT, GATEWAY_CLIENT, GATEWAY_RESOURCE, OTHER_RESOURCE, OidcError,
    SignIn,
};

#[gtest]
#[tokio::test]
async fn discovery_announces_the_code_flow_with_pkce_and_rs256() {
    let provider = oidc::provider();
    let discovery = provider.discovery().await.expect("discovery document");
    expect_that!(discovery["issuer"], eq(&json!(provider.issuer)));
    expect_that!(provider.issuer.as_str(), eq("http://localhost:32702"));
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        expect_that!(
            discovery[endpoint].as_str(),
            some(starts_with(provider.issuer.clone())),
            "{endpoint}"
        );
    }
    expect_that!(discovery["response_types_supported"], eq(&json!(["code"])));
    expect_that!(
        discovery["code_challenge_methods_supported"],
        eq(&json!(["S256"]))
    );
    expect_that!(
        discovery["id_token_signing_alg_values_supported"],
        eq(&json!(["RS256"]))
    );
    expect_that!(
        strings(&discovery["scopes_supported"]),
        superset_of([
            &"openid",
            &"profile",
            &"email",
            &"groups",
            &"offline_access"
        ])
    );
    expect_that!(
        strings(&discovery["claims_supported"]),
        superset_of([&"sub", &"preferred_username", &"name", &"email", &"groups"])
    );
}

#[gtest]
#[tokio::test]
async fn ana_gets_a_jwt_for_the_gateway_with_her_groups() {
    let provider = oidc::provider();
    let token = oidc::token("ana", CLI_CLIENT, GATEWAY_RESOURCE)
        .await
        .expect("a token for ana");
    let header = oidc::header(&token).expect("JWT header");
    let claims = oidc::claims(&token).expect("JWT claims");
    expect_that!(header["alg"], eq(&json!("RS256")));
    expect_that!(header["typ"], eq(&json!("at+jwt")));
    expect_that!(
        signing_key_ids(&provider).await,
        contains(eq(header["kid"].as_str().unwrap_or("no kid")))
    );
    expect_that!(claims["iss"], eq(&json!(provider.issuer)));
    expect_that!(claims["aud"], eq(&json!("views-gateway")));
    expect_that!(claims["sub"], eq(&json!("ana")));
    expect_that!(claims["groups"], eq(&json!(["analysts"])));
    expect_that!(claims["preferred_username"], eq(&json!("ana")));
    expect_that!(claims["email"], eq(&json!("ana@example.com")));
    expect_that!(claims["client_id"], eq(&json!(CLI_CLIENT)));
}

#[gtest]
#[tokio::test]
async fn a_wrong_password_gets_no_token() {
    let provider = oidc::provider();
    let ana = provider.user("ana").expect("ana");
    let result = provider
        .session()
        .await
        .expect("provider up")
        .sign_in(&SignIn {
            password: "not-her-password",
            ..SignIn::new(ana, CLI_CLIENT, GATEWAY_RESOURCE)
        })
        .await;
    expect_that!(
        result,
        err(matches_pattern!(OidcError::SignInRefused {
            user: eq("ana"),
            reason: eq("Wrong user name or password."),
        }))
    );
}

#[gtest]
#[tokio::test]
async fn the_other_resource_gives_a_token_for_another_audience() {
    let token = oidc::token("bob", CLI_CLIENT, OTHER_RESOURCE)
        .await
        .expect("a token for bob");
    let claims = oidc::claims(&token).expect("JWT claims");
    expect_that!(claims["aud"], eq(&json!("other-service")));
    expect_that!(claims["groups"], eq(&json!(["finance"])));
}

#[gtest]
#[tokio::test]
async fn the_expiring_client_gets_tokens_that_live_five_seconds() {
    let token = oidc::token("cy", EXPIRING_CLIENT, GATEWAY_RESOURCE)
        .await
        .expect("a token for cy");
    let claims = oidc::claims(&token).expect("JWT claims");
    let lifetime = claims["exp"].as_i64().zip(claims["iat"].as_i64());
    expect_that!(lifetime.map(|(exp, iat)| exp - iat), some(eq(5)));
    expect_that!(claims["groups"], eq(&json!([])));
    let usual = oidc::token("cy", CLI_CLIENT, GATEWAY_RESOURCE)
        .await
        .expect("a token for cy");
    let claims = oidc::claims(&usual).expect("JWT claims");
    expect_that!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(exp, iat)| exp - iat),
        some(eq(3600))
    );
}

#[gtest]
#[tokio::test]
async fn the_gateway_signs_in_on_any_view_host_and_no_other() {
    let provider = oidc::provider();
    let bob = provider.user("bob").expect("bob");
    let session = provider.session().await.expect("provider up");
    let on = |redirect_uri| SignIn {
        redirect_uri,
        ..SignIn::new(bob, GATEWAY_CLIENT, GATEWAY_RESOURCE)
    };

    let tokens = session
        .sign_in(&on("http://sales.localhost:8080/_gateway/oauth2/callback"))
        .await
        .expect("signed in on a view host");
    let id_token = tokens.id_token.as_deref().expect("an ID token");
    let id_claims = oidc::claims(id_token).expect("ID token claims");
    expect_that!(id_claims["aud"], eq(&json!(GATEWAY_CLIENT)));
    expect_that!(id_claims["groups"], eq(&json!(["finance"])));
    expect_that!(id_claims["email"], eq(&json!("bob@example.com")));
    expect_that!(
        oidc::claims(&tokens.access_token).expect("claims")["aud"],
        eq(&json!("views-gateway"))
    );
    expect_that!(tokens.refresh_token, some(anything()));
    // With TLS (`dev --tls`), views are `<view>.views.localhost`.
    expect_that!(
        session
            .sign_in(&on(
                "https://sales.views.localhost:8443/_gateway/oauth2/callback"
            ))
            .await,
        ok(anything())
    );

    for foreign in [
        "http://evil.example/_gateway/oauth2/callback",
        "http://a.b.localhost/_gateway/oauth2/callback",
        "https://a.b.views.localhost/_gateway/oauth2/callback",
        "http://sales.localhost:8080/elsewhere",
        "http://sales.localhost:8080/_gateway/oauth2/callback?next=x",
    ] {
        expect_that!(
            session.sign_in(&on(foreign)).await,
            err(anything()),
            "{foreign}"
        );
    }
}

#[gtest]
#[tokio::test]
async fn signing_out_ends_the_provider_session() {
    let provider = oidc::provider();
    let ana = provider.user("ana").expect("ana");
    let session = provider.session().await.expect("provider up");
    let sign_in = SignIn::new(ana, GATEWAY_CLIENT, GATEWAY_RESOURCE);
    let wrong_password = SignIn {
        password: "not-her-password",
        ..sign_in.clone()
    };
    let tokens = session.sign_in(&sign_in).await.expect("signed in");
    // Signed in at the provider: the next sign-in shows no login form at
    // all, so the wrong password is never asked for.
    expect_that!(session.sign_in(&wrong_password).await, ok(anything()));

    session
        .sign_out(
            tokens.id_token.as_deref().expect("an ID token"),
            "http://demo.localhost:8080/",
        )
        .await
        .expect("signed out, back on the view host");
    expect_that!(
        session.sign_in(&wrong_password).await,
        err(matches_pattern!(OidcError::SignInRefused { .. }))
    );
}

#[gtest]
#[test]
fn xtask_token_prints_the_token_on_its_last_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["token", "ada"])
        .output()
        .expect("running xtask token");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "xtask token ada: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = stdout.lines().last().unwrap_or_default();
    let claims = oidc::claims(token).expect("a JWT on the last line");
    expect_that!(claims["sub"], eq(&json!("ada")));
    expect_that!(claims["groups"], eq(&json!(["views-admins"])));
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn signing_key_ids(provider: &oidc::Oidc) -> Vec<String> {
    let discovery = provider.discovery().await.expect("discovery");
    let jwks: Value = reqwest::get(discovery["jwks_uri"].as_str().expect("jwks_uri"))
        .await
        .expect("JWKS")
        .json()
        .await
        .expect("JWKS JSON");
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|key| key["alg"] == "RS256" && key["use"] == "sig")
        .filter_map(|key| key["kid"].as_str().map(str::to_owned))
        .collect()
}
