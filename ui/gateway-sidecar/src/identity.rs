//! Who a request comes from, as Envoy proved it.
//!
//! Envoy verifies every token (`jwt_authn`, configured over xDS from the
//! `OIDC_*` settings) before a request reaches the sidecar; the sidecar never
//! sees an unverified identity. This module owns the identity type every
//! decision (views API, entitlements, shares) is taken on.

use std::collections::BTreeSet;

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
