//! `bench warm` with sign-in on: the local OpenID Connect provider's user
//! `ana` owns the bench view and signs every request with her access token,
//! which the gateway's Envoy and the static baseline check with the same
//! filters (oauth2 → jwt_authn → per-host RBAC, see
//! `ui/gateway-sidecar/src/xds/access.rs`).
//!
//! This module owns what that takes: the entitlements the view needs, the
//! token, the gateway's `OIDC_*` settings, the values of
//! `scripts/bench/envoy-static-signed-in.yaml`, the check that both Envoys
//! really run the same sign-in filters, and the filters' counters (every
//! measured request verified and allowed, none refused).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use test_support::oidc::{self, CLI_CLIENT, GATEWAY_CLIENT, GATEWAY_RESOURCE, Oidc};

use super::config_dump::{config_dump, differ, find};
use super::gateway as gw;

/// The bench view's owner, a demo user of the local provider (group
/// `analysts`).
pub const USER: &str = "ana";
/// The static template.
pub const TEMPLATE: &str = "scripts/bench/envoy-static-signed-in.yaml";
/// Scopes the oauth2 filter asks for (both Envoys get these).
const SCOPES: [&str; 4] = ["openid", "profile", "email", "groups"];
/// The claim naming the user in both Envoys' RBAC policies.
const USER_CLAIM: &str = "sub";
/// The sign-in filters, as named in both Envoys' listeners.
const FILTERS: [&str; 3] = [
    "envoy.filters.http.oauth2",
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.rbac",
];

/// Ana, signed in: her token and what the two Envoys are configured with.
pub struct SignedIn {
    pub token: String,
    /// Her user id (the `sub` claim): the view's owner.
    pub owner: String,
    /// When the token expires (seconds since the epoch).
    pub expires_at: u64,
    issuer: String,
    client_secret: String,
    authorization_endpoint: String,
    token_endpoint: String,
    end_session_endpoint: String,
    jwks_uri: String,
    /// The cluster's ServiceAccount token issuer (the gateway accepts those
    /// tokens too by default).
    service_account_issuer: String,
}

impl SignedIn {
    /// Grant `analysts` what the bench view reads (lake `sales/`, see
    /// [`super::objects::view_spec`]) in `namespace`, before the gateway
    /// starts; and get ana's token through the provider's real flow.
    pub async fn prepare(
        provider: &Oidc,
        client: &kube::Client,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let entitlements: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "views-gateway-entitlements"},
            "data": {"entitlements.yaml":
                "grants:\n- groups: [analysts]\n  bucket: lake\n  prefixes: [sales/]\n  access: read\n"},
        }))?;
        config_maps
            .create(&PostParams::default(), &entitlements)
            .await
            .context("creating the entitlements ConfigMap")?;

        let discovery = provider.discovery().await?;
        let endpoint = |name: &str| {
            discovery[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("the provider's discovery has no {name}"))
        };
        let client_secret = provider
            .client(GATEWAY_CLIENT)?
            .secret
            .clone()
            .with_context(|| format!("no secret for client {GATEWAY_CLIENT} in oidc.json"))?;
        // Where the sidecar reads it too: the API server's discovery.
        let cluster_discovery: Value = serde_json::from_str(
            &client
                .request_text(
                    http::Request::get("/.well-known/openid-configuration").body(Vec::new())?,
                )
                .await
                .context("the API server's OpenID discovery")?,
        )?;
        let service_account_issuer = cluster_discovery["issuer"]
            .as_str()
            .context("no issuer in the API server's OpenID discovery")?
            .to_string();
        let token = oidc::token(USER, CLI_CLIENT, GATEWAY_RESOURCE).await?;
        let claims = oidc::claims(&token)?;
        Ok(SignedIn {
            owner: claims[USER_CLAIM]
                .as_str()
                .with_context(|| format!("{USER}'s token has no {USER_CLAIM}"))?
                .to_string(),
            expires_at: claims["exp"]
                .as_u64()
                .with_context(|| format!("{USER}'s token has no exp"))?,
            token,
            issuer: endpoint("issuer")?,
            client_secret,
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            end_session_endpoint: endpoint("end_session_endpoint")?,
            jwks_uri: endpoint("jwks_uri")?,
            service_account_issuer,
        })
    }

    /// Fail now rather than mid-run if the token would expire within
    /// `needed` (the provider's tokens live an hour; a run takes minutes).
    pub fn check_lifetime(&self, needed: Duration) -> anyhow::Result<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let left = Duration::from_secs(self.expires_at.saturating_sub(now));
        if left < needed {
            bail!(
                "{USER}'s token expires in {} s, the run needs about {} s",
                left.as_secs(),
                needed.as_secs()
            );
        }
        Ok(left)
    }

    /// The sidecar's sign-in settings: every `OIDC_*` the static template's
    /// values below are taken from too, so neither side relies on the
    /// other's defaults. A client secret puts the oauth2 filter in the chain.
    pub fn gateway_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OIDC_ISSUER", self.issuer.clone()),
            ("OIDC_CLIENT_ID", GATEWAY_CLIENT.into()),
            ("OIDC_CLIENT_SECRET", self.client_secret.clone()),
            ("OIDC_RESOURCE", GATEWAY_RESOURCE.into()),
            ("OIDC_SCOPES", SCOPES.join(",")),
            ("OIDC_USER_CLAIM", USER_CLAIM.into()),
            ("SERVICE_ACCOUNT_TOKENS", "true".into()),
        ]
    }

    /// The `{{…}}` values of [`TEMPLATE`] (besides the ports and backend),
    /// with the gateway's sidecar API at `sidecar_api` (see [`sidecar_api`]).
    pub fn template_values(
        &self,
        view: &str,
        sidecar_api: (String, u16),
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let (cluster, host, port) = provider_cluster(&self.jwks_uri)?;
        // One cluster in the template for both: true of the local provider.
        if provider_cluster(&self.token_endpoint)?.0 != cluster {
            bail!(
                "the provider's token endpoint ({}) and JWKS ({}) are on different hosts",
                self.token_endpoint,
                self.jwks_uri
            );
        }
        // Any key: requests with a bearer token pass the oauth2 filter
        // without cookies, so the cookies' key is never used here.
        let hmac: String = Sha256::digest(format!("bench static\n{}", self.client_secret))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(vec![
            ("VIEW", view.into()),
            ("OWNER", self.owner.clone()),
            ("USER_CLAIM", USER_CLAIM.into()),
            ("ISSUER", self.issuer.clone()),
            // The gateway's audience: its client id (OIDC_AUDIENCE unset).
            ("AUDIENCE", GATEWAY_CLIENT.into()),
            ("CLIENT_ID", GATEWAY_CLIENT.into()),
            ("CLIENT_SECRET", self.client_secret.clone()),
            ("HMAC_SECRET", hmac),
            (
                "AUTHORIZATION_ENDPOINT",
                self.authorization_endpoint.clone(),
            ),
            ("TOKEN_ENDPOINT", self.token_endpoint.clone()),
            ("END_SESSION_ENDPOINT", self.end_session_endpoint.clone()),
            ("JWKS_URI", self.jwks_uri.clone()),
            ("AUTH_SCOPES", serde_json::to_string(&SCOPES)?),
            ("RESOURCES", serde_json::to_string(&[GATEWAY_RESOURCE])?),
            ("IDP_CLUSTER", cluster),
            ("IDP_HOST", host),
            ("IDP_PORT", port.to_string()),
            (
                "SERVICE_ACCOUNT_ISSUER",
                self.service_account_issuer.clone(),
            ),
            ("SIDECAR_API_HOST", sidecar_api.0),
            ("SIDECAR_API_PORT", sidecar_api.1.to_string()),
        ])
    }
}

/// The address of the gateway's sidecar API, from its Envoy's bootstrap
/// cluster `sidecar-api` (the ServiceAccount keys are served there).
pub async fn sidecar_api(http: &reqwest::Client, admin_port: u16) -> anyhow::Result<(String, u16)> {
    let dump = config_dump(http, admin_port).await?;
    let address = find(&dump, &|v| {
        (v["name"].as_str() == Some("sidecar-api"))
            .then(|| {
                v.pointer(
                    "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address",
                )
            })
            .flatten()
    })
    .context("no cluster sidecar-api in the gateway's Envoy")?;
    Ok((
        address["address"].as_str().unwrap_or_default().to_string(),
        address["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .context("sidecar-api has no port")?,
    ))
}

/// The provider's cluster for `uri`, named as the sidecar names it
/// (`idp-<scheme>-<host>-<port>`), with its host and port.
fn provider_cluster(uri: &str) -> anyhow::Result<(String, String, u16)> {
    let url = Url::parse(uri).with_context(|| format!("the provider's URL {uri}"))?;
    let host = url
        .host_str()
        .with_context(|| format!("no host in {uri}"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .with_context(|| format!("no port for {uri}"))?;
    Ok((format!("idp-{}-{host}-{port}", url.scheme()), host, port))
}

/// Check that the gateway's Envoy and the static one run the same sign-in
/// filters with the same settings, and the same RBAC policy on the view's
/// host, from their config dumps: the static baseline is copied from
/// access.rs and must not drift from it. Differences allowed: secrets and
/// clusters from SDS/CDS against static ones, and a listener's port in a URL.
pub async fn check_same_filters(
    http: &reqwest::Client,
    view: &str,
    gateway: (u16, u16),
    static_envoy: (u16, u16),
) -> anyhow::Result<()> {
    let ports = [gateway.1, static_envoy.1];
    let gateway_config = sign_in_config(http, gateway.0, view, &ports).await?;
    let static_config = sign_in_config(http, static_envoy.0, view, &ports).await?;
    let mut differences = Vec::new();
    differ("", &gateway_config, &static_config, &mut differences);
    if !differences.is_empty() {
        bail!(
            "the static baseline's sign-in differs from the gateway's (fix {TEMPLATE} to match \
             ui/gateway-sidecar/src/xds/access.rs):\n{}",
            differences.join("\n")
        );
    }
    Ok(())
}

/// The sign-in filters' configs in the listener and the view host's
/// per-filter configs, from the Envoy admin at `admin_port`, normalised.
async fn sign_in_config(
    http: &reqwest::Client,
    admin_port: u16,
    view: &str,
    listen_ports: &[u16],
) -> anyhow::Result<Value> {
    let url = format!("http://127.0.0.1:{admin_port}/config_dump");
    let dump = config_dump(http, admin_port).await?;
    let filters = find(&dump, &|v| v.get("http_filters").and_then(Value::as_array))
        .with_context(|| format!("no HTTP filters in {url}"))?;
    let mut config: BTreeMap<String, Value> = filters
        .iter()
        .filter_map(|f| {
            let name = f["name"].as_str()?;
            FILTERS
                .contains(&name)
                .then(|| (name.to_string(), f["typed_config"].clone()))
        })
        .collect();
    let host = format!("view-{view}");
    let per_host = find(&dump, &|v| {
        (v["name"].as_str() == Some(&host) && v.get("domains").is_some())
            .then(|| v.get("typed_per_filter_config"))
            .flatten()
    })
    .with_context(|| format!("no virtual host {host} with per-filter configs in {url}"))?;
    config.insert(format!("{host} per-filter"), per_host.clone());
    let mut config = serde_json::to_value(config)?;
    normalise(&mut config, listen_ports);
    Ok(config)
}

/// Drop where secrets come from (SDS over ADS, or static), and the
/// listeners' ports from URLs (a callback URL may name its listener's).
fn normalise(value: &mut Value, listen_ports: &[u16]) {
    match value {
        Value::Object(map) => {
            map.remove("sds_config");
            map.values_mut().for_each(|v| normalise(v, listen_ports));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalise(v, listen_ports)),
        Value::String(text) => {
            for port in listen_ports {
                *text = text.replace(&format!(":{port}/"), "/");
            }
        }
        _ => {}
    }
}

/// What a proxy's sign-in filters counted over the measured runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verdicts {
    pub path: String,
    /// Requests wrk counted on this path.
    pub requests: u64,
    pub jwt_allowed: u64,
    pub jwt_denied: u64,
    pub rbac_allowed: u64,
    pub rbac_denied: u64,
}

/// The sign-in filters' counters of the Envoy at `admin_port`.
pub async fn counters(http: &reqwest::Client, admin_port: u16) -> anyhow::Result<[u64; 4]> {
    let stats = gw::envoy_stats(http, admin_port, r"\.(jwt_authn|rbac)\.").await?;
    let sum = |suffix: &str| {
        stats
            .iter()
            .filter(|(name, _)| name.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    };
    Ok([
        sum(".jwt_authn.allowed"),
        sum(".jwt_authn.denied"),
        sum(".rbac.allowed"),
        sum(".rbac.denied"),
    ])
}

impl Verdicts {
    pub fn new(path: &str, requests: u64, before: [u64; 4], after: [u64; 4]) -> Self {
        let delta = |i: usize| after[i].saturating_sub(before[i]);
        Verdicts {
            path: path.into(),
            requests,
            jwt_allowed: delta(0),
            jwt_denied: delta(1),
            rbac_allowed: delta(2),
            rbac_denied: delta(3),
        }
    }

    /// Every request wrk counted went through jwt_authn and RBAC and was
    /// allowed (requests still in flight when a run ended count in Envoy's
    /// counters, not in wrk's), and none was refused.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (what, allowed, denied) in [
            ("jwt_authn", self.jwt_allowed, self.jwt_denied),
            ("rbac", self.rbac_allowed, self.rbac_denied),
        ] {
            if denied > 0 {
                problems.push(format!("{}: {what} refused {denied} requests", self.path));
            }
            if allowed < self.requests {
                problems.push(format!(
                    "{}: {what} allowed {allowed} requests, wrk counted {}",
                    self.path, self.requests
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_clusters_are_named_like_the_sidecars() {
        assert_eq!(
            provider_cluster("http://localhost:32702/jwks").unwrap(),
            ("idp-http-localhost-32702".into(), "localhost".into(), 32702)
        );
        assert_eq!(
            provider_cluster("https://id.example.com/certs").unwrap().0,
            "idp-https-id.example.com-443"
        );
    }

    #[test]
    fn only_what_differs_beyond_secret_sources_and_ports_is_reported() {
        let mut gateway = json!({"f": {"token_secret": {"name": "s", "sds_config": {"ads": {}}},
            "redirect_uri": "%REQ(:authority)%:1000/cb", "n": 1}});
        let mut static_envoy = json!({"f": {"token_secret": {"name": "s"},
            "redirect_uri": "%REQ(:authority)%/cb", "n": 2}});
        normalise(&mut gateway, &[1000, 2000]);
        normalise(&mut static_envoy, &[1000, 2000]);
        let mut differences = Vec::new();
        differ("", &gateway, &static_envoy, &mut differences);
        assert_eq!(differences, ["  /f/n: gateway 1, static 2"]);
    }

    #[test]
    fn a_refused_or_unverified_request_is_a_problem() {
        let fine = Verdicts::new("gateway", 100, [0; 4], [102, 0, 102, 0]);
        assert!(fine.problems().is_empty());
        let refused = Verdicts::new("gateway", 100, [0; 4], [102, 0, 101, 1]);
        assert_eq!(refused.problems(), ["gateway: rbac refused 1 requests"]);
        let skipped = Verdicts::new("static", 100, [0; 4], [0, 0, 0, 0]);
        assert_eq!(skipped.problems().len(), 2);
    }
}
