//! Who is calling the views API, and what they may do.
//!
//! With `API_TOKENS_SECRET` set, every `/_api/views` request must carry
//! `Authorization: Bearer <token>`; the Secret's entries map user names to
//! their tokens (key = user, value = token), re-read every
//! [`REFRESH`] so tokens are added and revoked without a restart. A user owns
//! the views they create and may see and delete only those; users named in
//! `API_ADMINS` may do anything. Without the setting the API is open (local
//! development) and says so in the log at start-up. Every API write is logged
//! with its caller under the `audit` target.
//!
//! Tokens are compared by their SHA-256, so a lookup's timing says nothing
//! about how much of a presented token was right.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// How often the tokens Secret is read again.
pub const REFRESH: Duration = Duration::from_secs(15);

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off (no `API_TOKENS_SECRET`).
    Open,
    User {
        name: String,
        admin: bool,
    },
}

impl Caller {
    /// May this caller see and change a view owned by `owner`?
    pub fn may_use(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Open => true,
            Caller::User { admin: true, .. } => true,
            Caller::User { name, .. } => owner == Some(name.as_str()),
        }
    }

    /// For the audit log.
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "(unauthenticated)",
            Caller::User { name, .. } => name,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this API needs `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
}

/// Token hash → user name.
type Tokens = Arc<HashMap<[u8; 32], String>>;

#[derive(Clone)]
pub struct Auth {
    /// None: authentication is off.
    tokens: Option<watch::Receiver<Tokens>>,
    admins: Arc<Vec<String>>,
    /// The tokens were read at least once (a replica is not ready before).
    loaded: Arc<std::sync::atomic::AtomicBool>,
}

impl Auth {
    /// Open: every caller may do everything.
    pub fn open() -> Self {
        Self {
            tokens: None,
            admins: Arc::default(),
            loaded: Arc::new(true.into()),
        }
    }

    /// Tokens from Secret `secret`, kept fresh by a background task.
    pub fn from_secret(
        client: kube::Client,
        namespace: &str,
        secret: &str,
        admins: Vec<String>,
    ) -> Self {
        let (tx, rx) = watch::channel(Tokens::default());
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let secret = secret.to_owned();
        let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loaded_by_task = loaded.clone();
        tokio::spawn(async move {
            loop {
                match secrets.get_opt(&secret).await {
                    Ok(found) => {
                        let tokens = found.as_ref().map(read_tokens).unwrap_or_default();
                        if found.is_none() {
                            tracing::warn!(
                                secret,
                                "the API tokens Secret does not exist: every API call is refused"
                            );
                        }
                        tx.send_if_modified(|current| {
                            let changed = **current != tokens;
                            *current = Arc::new(tokens);
                            changed
                        });
                        loaded_by_task.store(true, std::sync::atomic::Ordering::Release);
                    }
                    // Keep the tokens we have: Kubernetes may be briefly away.
                    Err(error) => tracing::warn!(secret, %error, "reading the API tokens failed"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(REFRESH).await;
            }
        });
        Self {
            tokens: Some(rx),
            admins: Arc::new(admins),
            loaded,
        }
    }

    /// Ready to answer: the tokens (if any) have been read.
    pub fn ready(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The caller of a request with these headers.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::Open);
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let name = tokens
            .borrow()
            .get(&hash(token))
            .cloned()
            .ok_or(AuthError::Invalid)?;
        let admin = self.admins.contains(&name);
        Ok(Caller::User { name, admin })
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Every entry of the Secret: user name → token (empty tokens ignored).
fn read_tokens(secret: &Secret) -> HashMap<[u8; 32], String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(user, token)| {
            let token = std::str::from_utf8(&token.0).ok()?.trim();
            (!token.is_empty()).then(|| (hash(token), user.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    fn auth(tokens: &[(&str, &str)], admins: &[&str]) -> Auth {
        let tokens: HashMap<[u8; 32], String> = tokens
            .iter()
            .map(|(user, token)| (hash(token), user.to_string()))
            .collect();
        let (tx, rx) = watch::channel(Arc::new(tokens));
        std::mem::forget(tx);
        Auth {
            tokens: Some(rx),
            admins: Arc::new(admins.iter().map(|a| a.to_string()).collect()),
            loaded: Arc::new(true.into()),
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[gtest]
    fn tokens_name_their_user_and_anything_else_is_refused() {
        let auth = auth(&[("ana", "t-ana"), ("root", "t-root")], &["root"]);
        expect_that!(
            auth.caller(&bearer("t-ana")),
            ok(eq(&Caller::User {
                name: "ana".into(),
                admin: false
            }))
        );
        expect_that!(
            auth.caller(&bearer("t-root")),
            ok(eq(&Caller::User {
                name: "root".into(),
                admin: true
            }))
        );
        expect_that!(auth.caller(&bearer("t-an")), err(eq(&AuthError::Invalid)));
        expect_that!(auth.caller(&HeaderMap::new()), err(eq(&AuthError::Missing)));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic YW5hOnQ=".parse().unwrap());
        expect_that!(auth.caller(&basic), err(eq(&AuthError::Missing)));
    }

    #[gtest]
    fn users_use_their_own_views_and_admins_all() {
        let ana = Caller::User {
            name: "ana".into(),
            admin: false,
        };
        let root = Caller::User {
            name: "root".into(),
            admin: true,
        };
        expect_that!(ana.may_use(Some("ana")), eq(true));
        expect_that!(ana.may_use(Some("bo")), eq(false));
        expect_that!(ana.may_use(None), eq(false));
        expect_that!(root.may_use(Some("bo")), eq(true));
        expect_that!(Caller::Open.may_use(Some("bo")), eq(true));
    }
}
