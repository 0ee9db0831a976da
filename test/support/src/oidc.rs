//! The local OpenID Connect provider (`scripts/oidc`, run by `cargo xtask oidc
//! up`) as tests and tasks use it: where it is and who its users are
//! ([`Oidc`], read from `<cache>/oidc/oidc.json`), and tokens obtained from it
//! the way a command-line client obtains them: the authorization-code flow
//! with PKCE over HTTP, signing in on the provider's login page with the
//! user's password ([`token`], [`Session::sign_in`]). Nothing here mints a
//! token itself.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use test_support::oidc::{self, CLI_CLIENT, GATEWAY_RESOURCE};
//! let token = oidc::token("ana", CLI_CLIENT, GATEWAY_RESOURCE).await?;
//! let claims = oidc::claims(&token)?;
//! assert_eq!(claims["groups"][0], "analysts");
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{StatusCode, Url, redirect};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The gateway: a confidential client (secret in `oidc.json`); its callback
/// is `/_gateway/oauth2/callback` on `localhost` or any `<view>.localhost`.
pub const GATEWAY_CLIENT: &str = "views-gateway";
/// The public client of `cargo xtask token` and scripts (RFC 8252 loopback).
pub const CLI_CLIENT: &str = "views-cli";
/// Like [`CLI_CLIENT`], but its access tokens live 5 seconds.
pub const EXPIRING_CLIENT: &str = "views-expiring";
/// The default resource: access tokens for it have the audience `views-gateway`.
pub const GATEWAY_RESOURCE: &str = "urn:views-gateway";
/// Another resource (audience `other-service`): a wrong-audience token.
pub const OTHER_RESOURCE: &str = "urn:other-service";
/// The native clients' redirect URI. The flow stops when the provider
/// redirects there; nothing listens at it.
pub const CLI_REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// A redirect URI the gateway client may use (any view host works too).
pub const GATEWAY_REDIRECT_URI: &str = "http://localhost/_gateway/oauth2/callback";
/// The scopes every sign-in here asks for.
pub const SCOPES: &str = "openid profile email groups";

/// The provider as `cargo xtask oidc up` describes it in `oidc.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Oidc {
    /// `http://localhost:32702`: browsers, Envoy and tests all use this name.
    pub issuer: String,
    /// The port on 127.0.0.1 it listens on.
    pub port: u16,
    /// Where pods of the local cluster reach it (the pod network's host
    /// address), if it listens there: it does when the network existed as
    /// it started.
    #[serde(default, rename = "podUrl", skip_serializing_if = "Option::is_none")]
    pub pod_url: Option<String>,
    pub clients: Vec<Client>,
    pub users: Vec<User>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Client {
    pub id: String,
    /// Only confidential clients (`views-gateway`) have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A demo user: `sub` and `preferred_username` are the name, the email is
/// `<name>@example.com`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("reading {path}: {reason} (is the provider up? `cargo xtask oidc up`)")]
    State { path: PathBuf, reason: String },
    #[error(
        "the OIDC provider does not answer at {issuer}: {source} (`cargo xtask oidc up` starts it)"
    )]
    Down {
        issuer: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no user {0:?} in the provider's oidc.json")]
    UnknownUser(String),
    #[error("no client {0:?} in the provider's oidc.json")]
    UnknownClient(String),
    #[error("the provider refused the sign-in of {user:?}: {reason}")]
    SignInRefused { user: String, reason: String },
    #[error("the provider refused the authorization request: {error}: {description}")]
    AuthorizationRefused { error: String, description: String },
    #[error("the token endpoint answered {status}: {body}")]
    TokenRefused { status: StatusCode, body: String },
    #[error("unexpected answer from the provider: {0}")]
    Protocol(String),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// What the token endpoint returned.
#[derive(Clone, Debug, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// One authorization request: who signs in, with which password, for
/// which client and resource, coming back to which redirect URI.
#[derive(Clone, Debug)]
pub struct SignIn<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub client: &'a str,
    pub resource: &'a str,
    pub redirect_uri: &'a str,
}

impl<'a> SignIn<'a> {
    /// `user` with their own password, coming back to the client's usual
    /// redirect URI ([`GATEWAY_REDIRECT_URI`] or [`CLI_REDIRECT_URI`]).
    pub fn new(user: &'a User, client: &'a str, resource: &'a str) -> Self {
        Self {
            user: &user.name,
            password: &user.password,
            client,
            resource,
            redirect_uri: if client == GATEWAY_CLIENT {
                GATEWAY_REDIRECT_URI
            } else {
                CLI_REDIRECT_URI
            },
        }
    }
}

/// `<cache>/oidc/oidc.json`.
pub fn state_file() -> PathBuf {
    crate::cache_dir().join("oidc").join("oidc.json")
}

/// The running provider, as `oidc.json` describes it; panics with a hint
/// when it is missing (tests expect `cargo xtask test` or `oidc up` to have
/// started it).
pub fn provider() -> Oidc {
    Oidc::load().unwrap_or_else(|error| panic!("{error}"))
}

/// An access token for `user` (password from `oidc.json`) from `client`
/// (`views-cli` or `views-expiring`) for `resource`, through the real
/// authorization-code flow with PKCE.
pub async fn token(user: &str, client: &str, resource: &str) -> anyhow::Result<String> {
    let oidc = Oidc::load()?;
    let user = oidc.user(user)?;
    let tokens = oidc
        .session()
        .await?
        .sign_in(&SignIn::new(user, client, resource))
        .await?;
    Ok(tokens.access_token)
}

/// The claims of a JWT, decoded without verifying its signature (tests
/// look at what the provider put in; verifying is the gateway's job).
pub fn claims(jwt: &str) -> anyhow::Result<serde_json::Value> {
    jwt_part(jwt, 1)
}

/// The header of a JWT (`alg`, `kid`, `typ`), decoded.
pub fn header(jwt: &str) -> anyhow::Result<serde_json::Value> {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, index: usize) -> anyhow::Result<serde_json::Value> {
    let part = jwt
        .split('.')
        .nth(index)
        .ok_or_else(|| anyhow::anyhow!("not a JWT: {jwt:.40}"))?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
}

impl Oidc {
    pub fn load() -> Result<Self, OidcError> {
        let path = state_file();
        let reason = |reason: String| OidcError::State {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read(&path).map_err(|e| reason(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| reason(e.to_string()))
    }

    pub fn user(&self, name: &str) -> Result<&User, OidcError> {
        self.users
            .iter()
            .find(|user| user.name == name)
            .ok_or_else(|| OidcError::UnknownUser(name.into()))
    }

    pub fn client(&self, id: &str) -> Result<&Client, OidcError> {
        self.clients
            .iter()
            .find(|client| client.id == id)
            .ok_or_else(|| OidcError::UnknownClient(id.into()))
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub async fn discovery(&self) -> Result<serde_json::Value, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        discover(&http, &self.issuer).await
    }

    /// A user agent with its own cookies (the provider's session), once the
    /// provider has answered its discovery document.
    pub async fn session(&self) -> Result<Session, OidcError> {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            // Redirects are followed by hand: the last one goes to the
            // client's redirect URI, which is read, not visited.
            .redirect(redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let discovery = discover(&http, &self.issuer).await?;
        let endpoint = |name: &str| {
            discovery[name]
                .as_str()
                .and_then(|url| Url::parse(url).ok())
                .ok_or_else(|| OidcError::Protocol(format!("discovery has no {name}")))
        };
        Ok(Session {
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            end_session_endpoint: endpoint("end_session_endpoint")?,
            oidc: self.clone(),
            http,
        })
    }
}

async fn discover(http: &reqwest::Client, issuer: &str) -> Result<serde_json::Value, OidcError> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|source| OidcError::Down {
            issuer: issuer.into(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(OidcError::Protocol(format!(
            "GET {url}: {}",
            response.status()
        )));
    }
    Ok(response.json().await?)
}

/// A user agent talking to the provider: one cookie jar, so a second
/// sign-in finds the provider's session (single sign-on) until
/// [`Session::sign_out`].
pub struct Session {
    oidc: Oidc,
    http: reqwest::Client,
    authorization_endpoint: Url,
    token_endpoint: Url,
    end_session_endpoint: Url,
}

impl Session {
    /// The authorization-code flow with PKCE (S256): the authorization
    /// request, the login form posted with the password when the provider
    /// shows it (not when this session is signed in already), the redirects
    /// up to the redirect URI, and the code exchanged at the token endpoint
    /// (with the client's secret when it has one).
    pub async fn sign_in(&self, request: &SignIn<'_>) -> Result<Tokens, OidcError> {
        let client = self.oidc.client(request.client)?;
        let verifier = random_token()?;
        let state = random_token()?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = self.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", request.client)
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("scope", SCOPES)
            .append_pair("resource", request.resource)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        let callback = self.follow(url, request).await?;
        let query = |name: &str| {
            callback
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        if let Some(error) = query("error") {
            return Err(OidcError::AuthorizationRefused {
                error,
                description: query("error_description").unwrap_or_default(),
            });
        }
        if query("state").as_deref() != Some(state.as_str()) {
            return Err(OidcError::Protocol(format!(
                "the callback {callback} does not carry our state"
            )));
        }
        let code = query("code")
            .ok_or_else(|| OidcError::Protocol(format!("no code in the callback {callback}")))?;

        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", request.redirect_uri),
            ("code_verifier", &verifier),
            ("client_id", request.client),
        ];
        if let Some(secret) = &client.secret {
            form.push(("client_secret", secret));
        }
        let response = self
            .http
            .post(self.token_endpoint.clone())
            .form(&form)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(OidcError::TokenRefused { status, body });
        }
        Ok(response.json().await?)
    }

    /// From the authorization request to the redirect URI: the URL the
    /// provider finally redirects to (not visited). The login page is
    /// answered once; shown again, the sign-in was refused.
    async fn follow(&self, mut url: Url, request: &SignIn<'_>) -> Result<Url, OidcError> {
        let redirect_uri = Url::parse(request.redirect_uri)
            .map_err(|e| OidcError::Protocol(format!("redirect URI: {e}")))?;
        let mut posted = false;
        for _ in 0..10 {
            let mut response = self.http.get(url.clone()).send().await?;
            if response.status() == StatusCode::OK && !posted {
                // The login page: its form posts back to where it was served.
                posted = true;
                response = self
                    .http
                    .post(url.clone())
                    .form(&[("username", request.user), ("password", request.password)])
                    .send()
                    .await?;
                if response.status() == StatusCode::OK {
                    let page = response.text().await.unwrap_or_default();
                    return Err(OidcError::SignInRefused {
                        user: request.user.into(),
                        reason: alert(&page).unwrap_or("the login page came back").into(),
                    });
                }
            }
            if !response.status().is_redirection() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(OidcError::Protocol(format!(
                    "{url} answered {status}: {}",
                    alert(&body).unwrap_or(&body)
                )));
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| {
                    OidcError::Protocol(format!("{url}: a redirect without Location"))
                })?;
            let next = url
                .join(location)
                .map_err(|e| OidcError::Protocol(format!("{url}: Location {location:?}: {e}")))?;
            if same_endpoint(&next, &redirect_uri) {
                return Ok(next);
            }
            url = next;
        }
        Err(OidcError::Protocol(format!(
            "more than 10 redirects without reaching {redirect_uri}"
        )))
    }

    /// RP-initiated logout: the end-session request with the ID token as
    /// hint, the provider's confirmation form submitted ("Sign out"), and
    /// the redirect to `post_logout_redirect_uri` checked.
    pub async fn sign_out(
        &self,
        id_token: &str,
        post_logout_redirect_uri: &str,
    ) -> Result<(), OidcError> {
        let mut url = self.end_session_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        let response = self.http.get(url.clone()).send().await?;
        let status = response.status();
        let page = response.text().await?;
        if status != StatusCode::OK {
            return Err(OidcError::Protocol(format!("{url} answered {status}")));
        }
        let (action, xsrf) = attribute(&page, "id=\"op.logoutForm\"", "action")
            .zip(attribute(&page, "name=\"xsrf\"", "value"))
            .ok_or_else(|| OidcError::Protocol("no sign-out form on the page".into()))?;
        let action = url
            .join(action)
            .map_err(|e| OidcError::Protocol(format!("sign-out form action: {e}")))?;
        let response = self
            .http
            .post(action)
            .form(&[("xsrf", xsrf), ("logout", "yes")])
            .send()
            .await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !response.status().is_redirection() || !location.starts_with(post_logout_redirect_uri) {
            return Err(OidcError::Protocol(format!(
                "sign-out answered {} to {location:?}, not a redirect to {post_logout_redirect_uri}",
                response.status()
            )));
        }
        Ok(())
    }
}

/// Whether `url` is `endpoint` (scheme, host, path), whatever its port and
/// query: native clients' loopback redirects may carry any port.
fn same_endpoint(url: &Url, endpoint: &Url) -> bool {
    url.scheme() == endpoint.scheme()
        && url.host_str() == endpoint.host_str()
        && url.path() == endpoint.path()
}

/// The text of the page's `role="alert"` element (our login page's error).
fn alert(page: &str) -> Option<&str> {
    let start = page.find("role=\"alert\"")?;
    let text = &page[start..];
    let text = &text[text.find('>')? + 1..];
    Some(text[..text.find('<')?].trim())
}

/// The value of `name="…"` in the first tag containing `marker`.
fn attribute<'p>(page: &'p str, marker: &str, name: &str) -> Option<&'p str> {
    let at = page.find(marker)?;
    let tag_start = page[..at].rfind('<')?;
    let tag = &page[tag_start..tag_start + page[tag_start..].find('>')?];
    let value = &tag[tag.find(&format!("{name}=\""))? + name.len() + 2..];
    Some(&value[..value.find('"')?])
}

/// 32 random bytes, base64url: a PKCE verifier (43 characters) or a state.
fn random_token() -> Result<String, OidcError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| OidcError::Protocol(format!("no randomness: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_is_the_error_text() {
        let page =
            r#"<p class="hint">x</p><p role="alert" id="error">Wrong user name or password.</p>"#;
        assert_eq!(alert(page), Some("Wrong user name or password."));
        assert_eq!(alert("<p>fine</p>"), None);
    }

    #[test]
    fn attribute_of_the_marked_tag() {
        let form = r#"<form id="op.logoutForm" method="post" action="http://localhost:32702/session/end/confirm"><input type="hidden" name="xsrf" value="abc"/></form>"#;
        assert_eq!(
            attribute(form, "id=\"op.logoutForm\"", "action"),
            Some("http://localhost:32702/session/end/confirm")
        );
        assert_eq!(attribute(form, "name=\"xsrf\"", "value"), Some("abc"));
    }

    #[test]
    fn loopback_redirects_match_on_any_port() {
        let endpoint = Url::parse(CLI_REDIRECT_URI).unwrap();
        let at = |s: &str| same_endpoint(&Url::parse(s).unwrap(), &endpoint);
        assert!(at("http://127.0.0.1/callback?code=x"));
        assert!(at("http://127.0.0.1:4711/callback?code=x"));
        assert!(!at("http://127.0.0.1/elsewhere?code=x"));
        assert!(!at("http://localhost/callback?code=x"));
    }
}
