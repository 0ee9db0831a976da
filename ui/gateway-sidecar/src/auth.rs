//! Who calls the views API, and what they may do with a view.
//!
//! With sign-in on (`OIDC_ISSUER`), Envoy's `jwt_authn` has verified the
//! caller's token before the request reaches the sidecar and passed its
//! claims in [`crate::identity::PAYLOAD_HEADER`] (a header Envoy strips from
//! what clients send). A view belongs to its owner and is shared with the
//! users and groups its spec names: they see it and open it; only the owner
//! and admins (members of `ADMIN_GROUPS`) delete or re-share it. To anyone
//! else a view does not exist (404, not 403: names would otherwise leak).
//! Every API write is logged with its caller under the `audit` target.
//!
//! Without sign-in (development on `localhost` only) everyone may do
//! everything, and the start-up log says so.

use axum::http::HeaderMap;
use views_types::ViewRequest;

use crate::identity::{Identity, IdentityConfig, IdentityError, PAYLOAD_HEADER};

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Sign-in is off.
    Anonymous,
    User {
        identity: Identity,
        admin: bool,
    },
}

impl Caller {
    /// May this caller see and open the view? (Owner, a share, or an admin.)
    pub fn may_use(&self, spec: &ViewRequest) -> bool {
        match self {
            Caller::Anonymous | Caller::User { admin: true, .. } => true,
            Caller::User { identity, .. } => {
                owns(identity, spec) || {
                    let shares = spec.shared_with.as_ref();
                    let users = shares.and_then(|s| s.users.as_deref()).unwrap_or_default();
                    let groups = shares.and_then(|s| s.groups.as_deref()).unwrap_or_default();
                    users.iter().any(|u| u.as_str() == identity.user)
                        || groups.iter().any(|g| identity.in_group(g))
                }
            }
        }
    }

    /// May this caller delete the view or change whom it is shared with?
    pub fn may_manage(&self, spec: &ViewRequest) -> bool {
        match self {
            Caller::Anonymous | Caller::User { admin: true, .. } => true,
            Caller::User { identity, .. } => owns(identity, spec),
        }
    }

    /// For the audit log.
    /// Sees and manages every view, and what is no view any more (a Service
    /// whose spec cannot be read: its owner is unknown).
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Anonymous | Caller::User { admin: true, .. })
    }

    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "(anonymous)",
            Caller::User { identity, .. } => &identity.user,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Anonymous => None,
            Caller::User { identity, .. } => Some(identity),
        }
    }
}

fn owns(identity: &Identity, spec: &ViewRequest) -> bool {
    spec.owner.as_deref().map(String::as_str) == Some(identity.user.as_str())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("sign in first: send `Authorization: Bearer <token>` from the identity provider")]
    Missing,
    #[error(transparent)]
    Invalid(#[from] IdentityError),
}

#[derive(Clone, Debug)]
pub struct Auth {
    /// None: sign-in is off.
    identity: Option<IdentityConfig>,
}

impl Auth {
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            identity: config
                .identity
                .oidc_issuer
                .is_some()
                .then(|| config.identity.clone()),
        }
    }

    pub fn signing_in(&self) -> bool {
        self.identity.is_some()
    }

    /// The caller of a request with these headers (as Envoy forwarded them).
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let Some(config) = &self.identity else {
            return Ok(Caller::Anonymous);
        };
        let payload = headers
            .get(PAYLOAD_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let identity = config.identity_of(payload)?;
        let admin = config.is_admin(&identity);
        Ok(Caller::User { identity, admin })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use clap::Parser;
    use googletest::prelude::*;

    use super::*;

    fn spec(json: serde_json::Value) -> ViewRequest {
        let mut base = serde_json::json!({"name": "sales", "subsets": [{"bucket": "lake", "prefixes": ["sales/"]}]});
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn user(name: &str, groups: &[&str], admin: bool) -> Caller {
        Caller::User {
            identity: Identity::new(name, groups.iter().copied()),
            admin,
        }
    }

    #[gtest]
    fn owners_shares_and_admins_use_a_view_and_only_owners_and_admins_manage_it() {
        let shared = spec(serde_json::json!({
            "owner": "ana",
            "sharedWith": {"users": ["cy"], "groups": ["finance"]},
        }));
        let ana = user("ana", &["analysts"], false);
        let bob = user("bob", &["finance"], false);
        let cy = user("cy", &[], false);
        let dan = user("dan", &["analysts"], false);
        let ada = user("ada", &["views-admins"], true);
        expect_that!(ana.may_use(&shared), eq(true));
        expect_that!(bob.may_use(&shared), eq(true));
        expect_that!(cy.may_use(&shared), eq(true));
        expect_that!(dan.may_use(&shared), eq(false));
        expect_that!(ada.may_use(&shared), eq(true));
        expect_that!(ana.may_manage(&shared), eq(true));
        expect_that!(bob.may_manage(&shared), eq(false));
        expect_that!(ada.may_manage(&shared), eq(true));
        let unowned = spec(serde_json::json!({}));
        expect_that!(ana.may_use(&unowned), eq(false));
        expect_that!(Caller::Anonymous.may_manage(&unowned), eq(true));
    }

    #[gtest]
    fn without_the_verified_header_there_is_no_caller() {
        let config = crate::config::Config::parse_from([
            "gateway-sidecar",
            "--oidc-issuer",
            "http://localhost:32702",
            "--admin-groups",
            "views-admins",
        ]);
        let auth = Auth::new(&config);
        expect_that!(auth.caller(&HeaderMap::new()), err(eq(&AuthError::Missing)));
        let mut headers = HeaderMap::new();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"ada","groups":["views-admins"]}"#);
        headers.insert(PAYLOAD_HEADER, payload.parse().unwrap());
        expect_that!(
            auth.caller(&headers),
            ok(eq(&user("ada", &["views-admins"], true)))
        );
        let open = Auth::new(&crate::config::Config::parse_from(["gateway-sidecar"]));
        expect_that!(open.caller(&HeaderMap::new()), ok(eq(&Caller::Anonymous)));
    }
}
