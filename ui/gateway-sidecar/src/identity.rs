//! Who a request comes from, as Envoy proved it.
//!
//! ```text
//!  browser ──cookie──► Envoy oauth2 (sign-in: authorization code + PKCE, per host)
//!  program ──Bearer──►   │ Authorization: Bearer <access token>
//!                        ▼
//!                  jwt_authn (issuer, audience, signature against the provider's JWKS)
//!                        │ verified claims → dynamic metadata (RBAC: the view's owner
//!                        │ and shares) and the header `x-views-identity` (base64url JSON)
//!                        ▼
//!                  sidecar: /_api (who calls), ext_authz (who starts a view)
//! ```
//!
//! Envoy verifies every token before a request reaches the sidecar, and strips
//! [`PAYLOAD_HEADER`] from what clients send before its filters run: the
//! sidecar never takes an unverified identity. This module owns the identity
//! type every access decision is taken on, the `OIDC_*` settings, and the
//! provider's endpoints (found once at start-up through OpenID Connect
//! discovery).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;

/// The header in which Envoy's `jwt_authn` passes a verified token's payload
/// (base64url-encoded JSON) to the sidecar and to views.
pub const PAYLOAD_HEADER: &str = "x-views-identity";

/// A signed-in user: their stable user id (the configured claim, `sub` by
/// default) and the groups the provider says they belong to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub groups: BTreeSet<String>,
}

impl Identity {
    pub fn new(
        user: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            user: user.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }
}

/// Sign-in settings. Without `OIDC_ISSUER` nobody signs in: the gateway is
/// open (allowed only for `GATEWAY_HOSTNAME=localhost`, for development).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IdentityConfig {
    /// The OpenID Connect issuer (its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`).
    #[arg(long, env = "OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// Where this gateway itself reaches the provider, when not at the
    /// issuer's address (e.g. a cluster-internal one): discovery, JWKS and
    /// the token endpoint are fetched there, while tokens must still name
    /// `OIDC_ISSUER` and browsers are still sent to the issuer's endpoints.
    /// Unset: the issuer's address.
    #[arg(long, env = "OIDC_PROVIDER_URL")]
    pub oidc_provider_url: Option<String>,

    /// This gateway's client id at the provider.
    #[arg(long, env = "OIDC_CLIENT_ID", default_value = "views-gateway")]
    pub oidc_client_id: String,

    /// The client secret, for browser sign-in (usually from a Secret through
    /// `valueFrom.secretKeyRef`). Unset: only bearer tokens are accepted.
    #[arg(long, env = "OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,

    /// The audience access tokens must be issued for (default: the client id).
    #[arg(long, env = "OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// A resource indicator (RFC 8707) asked for at sign-in, for providers
    /// that issue JWT access tokens per resource.
    #[arg(long, env = "OIDC_RESOURCE")]
    pub oidc_resource: Option<String>,

    /// Scopes asked for at sign-in (comma-separated).
    #[arg(
        long,
        env = "OIDC_SCOPES",
        value_delimiter = ',',
        default_value = "openid,profile,email"
    )]
    pub oidc_scopes: Vec<String>,

    /// The claim naming the user (owner of views, subject of grants). `sub`
    /// is stable at every provider; others may be reassigned.
    #[arg(long, env = "OIDC_USER_CLAIM", default_value = "sub")]
    pub oidc_user_claim: String,

    /// The claim listing the user's groups.
    #[arg(long, env = "OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,

    /// CA bundle Envoy checks an `https` provider's certificate against.
    #[arg(
        long,
        env = "OIDC_CA_FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub oidc_ca_file: String,

    /// Also accept Kubernetes ServiceAccount tokens issued for the gateway's
    /// audience (`kubectl create token <sa> --audience <audience>`); their
    /// user is `system:serviceaccount:<namespace>:<name>`.
    #[arg(
        long,
        env = "SERVICE_ACCOUNT_TOKENS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub service_account_tokens: bool,

    /// The cluster's ServiceAccount token issuer, read at start-up when
    /// sign-in and ServiceAccount tokens are on.
    #[arg(skip)]
    pub service_account_issuer: Option<String>,

    /// Groups whose members see and manage every view (comma-separated).
    #[arg(long, env = "ADMIN_GROUPS", value_delimiter = ',', default_value = "")]
    pub admin_groups: Vec<String>,
}

impl IdentityConfig {
    pub fn audience(&self) -> &str {
        self.oidc_audience
            .as_deref()
            .unwrap_or(&self.oidc_client_id)
    }

    pub fn is_admin(&self, identity: &Identity) -> bool {
        self.admin_groups
            .iter()
            .any(|g| !g.is_empty() && identity.in_group(g))
    }

    /// The identity in a verified payload header (see [`PAYLOAD_HEADER`]).
    pub fn identity_of(&self, header: &str) -> Result<Identity, IdentityError> {
        let encoded = header.trim().trim_end_matches('=');
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| IdentityError::Payload("not base64url"))?;
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json)
            .map_err(|_| IdentityError::Payload("not a JSON object"))?;
        let user = claims
            .get(&self.oidc_user_claim)
            .and_then(|v| v.as_str())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| IdentityError::MissingClaim(self.oidc_user_claim.clone()))?;
        let groups = match claims.get(&self.oidc_groups_claim) {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|g| g.as_str()).collect()
            }
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        Ok(Identity::new(user, groups))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the verified token payload is {0}")]
    Payload(&'static str),
    #[error("the token has no `{0}` claim naming the user")]
    MissingClaim(String),
    #[error("OpenID Connect discovery at {url} failed: {reason}")]
    Discovery { url: String, reason: String },
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Provider {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

impl Provider {
    /// Read `<issuer>/.well-known/openid-configuration`, retrying until the
    /// provider answers (a gateway cannot check anyone without it). With
    /// `reached_at` (`OIDC_PROVIDER_URL`), the document is read there and the
    /// endpoints this gateway calls itself (JWKS, token) are moved there too.
    pub async fn discover(issuer: &str, reached_at: Option<&str>) -> Self {
        let mut delay = Duration::from_millis(200);
        loop {
            match Self::fetch(issuer, reached_at).await {
                Ok(provider) => return provider,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "the identity provider is not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn fetch(issuer: &str, reached_at: Option<&str>) -> Result<Self, IdentityError> {
        use http_body_util::BodyExt;
        let url = format!(
            "{}/.well-known/openid-configuration",
            reached_at.unwrap_or(issuer).trim_end_matches('/')
        );
        let failed = |reason: String| IdentityError::Discovery {
            url: url.clone(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|e| failed(format!("{e}")))?;
        // For an https issuer, main made sure at start-up that there are
        // roots (crate::roots); an http issuer needs none.
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(format!("TLS: {e}")))?
        .with_root_certificates(crate::roots::system())
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, http_body_util::Empty<hyper::body::Bytes>>(connector);
        let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .map_err(|_| failed("no answer within 10 s".into()))?
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .map_err(|_| failed("the document did not arrive within 10 s".into()))?
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        let provider: Provider = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("not a discovery document: {e}")))?;
        // OpenID Connect Discovery 1.0, 4.3: the document names its issuer.
        if provider.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(failed(format!(
                "the document names issuer `{}`",
                provider.issuer
            )));
        }
        Ok(match reached_at {
            Some(base) => provider.reached_at(base),
            None => provider,
        })
    }

    /// The endpoints the gateway calls itself (JWKS, token) at `base`, and
    /// those browsers are sent to (authorization, end session) at the
    /// issuer's address: a provider may name either address in a document
    /// read at `base` (panva's oidc-provider names the one it was asked at).
    /// Endpoints under neither stay as they are.
    fn reached_at(mut self, base: &str) -> Self {
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        let base = base.trim_end_matches('/').to_owned();
        let moved = |endpoint: &mut String, from: &str, to: &str| {
            if let Some(path) = endpoint.strip_prefix(from)
                && (path.is_empty() || path.starts_with('/'))
            {
                *endpoint = format!("{to}{path}");
            }
        };
        for endpoint in [&mut self.jwks_uri, &mut self.token_endpoint] {
            moved(endpoint, &issuer, &base);
        }
        moved(&mut self.authorization_endpoint, &base, &issuer);
        if let Some(endpoint) = &mut self.end_session_endpoint {
            moved(endpoint, &base, &issuer);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn a_provider_reached_elsewhere_serves_the_gateway_there_and_browsers_at_the_issuer() {
        let provider = Provider {
            issuer: "http://localhost:32702".into(),
            jwks_uri: "http://localhost:32702/jwks".into(),
            authorization_endpoint: "http://localhost:32702/auth".into(),
            token_endpoint: "http://localhost:32702/token".into(),
            end_session_endpoint: Some("http://localhost:32702/session/end".into()),
        }
        .reached_at("http://10.233.0.1:32702/");
        expect_that!(provider.jwks_uri, eq("http://10.233.0.1:32702/jwks"));
        expect_that!(provider.token_endpoint, eq("http://10.233.0.1:32702/token"));
        expect_that!(provider.issuer, eq("http://localhost:32702"));
        expect_that!(
            provider.authorization_endpoint,
            eq("http://localhost:32702/auth")
        );
        expect_that!(
            provider.end_session_endpoint,
            some(eq("http://localhost:32702/session/end"))
        );
        // Named at the address it was read at: browsers still go to the issuer.
        let as_asked = Provider {
            issuer: "http://localhost:32702".into(),
            jwks_uri: "http://10.233.0.1:32702/jwks".into(),
            authorization_endpoint: "http://10.233.0.1:32702/auth".into(),
            token_endpoint: "http://10.233.0.1:32702/token".into(),
            end_session_endpoint: Some("http://10.233.0.1:32702/session/end".into()),
        }
        .reached_at("http://10.233.0.1:32702");
        expect_that!(as_asked, eq(&provider));
        // Only under the issuer: a look-alike host is not moved.
        let elsewhere = Provider {
            jwks_uri: "http://localhost:327020/jwks".into(),
            ..provider.clone()
        }
        .reached_at("http://10.233.0.1:32702");
        expect_that!(elsewhere.jwks_uri, eq("http://localhost:327020/jwks"));
    }

    fn config() -> IdentityConfig {
        IdentityConfig {
            oidc_user_claim: "sub".into(),
            oidc_groups_claim: "groups".into(),
            admin_groups: vec!["views-admins".into()],
            ..IdentityConfig::default()
        }
    }

    fn header(claims: serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    }

    #[gtest]
    fn the_payload_names_the_user_and_groups() {
        let config = config();
        let ana = config
            .identity_of(&header(
                serde_json::json!({"sub": "ana", "groups": ["analysts", 7]}),
            ))
            .unwrap();
        expect_that!(ana, eq(&Identity::new("ana", ["analysts"])));
        expect_that!(config.is_admin(&ana), eq(false));
        let ada = config
            .identity_of(&header(
                serde_json::json!({"sub": "ada", "groups": "views-admins"}),
            ))
            .unwrap();
        expect_that!(config.is_admin(&ada), eq(true));
        expect_that!(
            config.identity_of(&header(serde_json::json!({"sub": "cy"}))),
            ok(eq(&Identity::new("cy", Vec::<String>::new())))
        );
    }

    #[gtest]
    fn a_payload_without_a_user_or_not_json_is_refused() {
        let config = config();
        expect_that!(
            config.identity_of(&header(serde_json::json!({"groups": ["a"]}))),
            err(eq(&IdentityError::MissingClaim("sub".into())))
        );
        expect_that!(
            config.identity_of(&header(serde_json::json!({"sub": ""}))),
            err(anything())
        );
        expect_that!(config.identity_of("%%%"), err(anything()));
        expect_that!(
            config.identity_of(&header(serde_json::json!(["ana"]))),
            err(anything())
        );
    }
}
