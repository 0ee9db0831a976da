//! Who sends a request to the view: the user the gateway's Envoy verified.
//!
//! Envoy's `jwt_authn` passes the claims of the caller's verified token in
//! `x-views-identity` (base64url JSON) and drops any such header a client
//! sends; only the gateway's Envoys reach a view pod (the kustomize base's
//! NetworkPolicy). The view takes the user from the claim the gateway
//! identifies people by (`VIEW_USER_CLAIM`, the sidecar's `OIDC_USER_CLAIM`)
//! and keeps each person's running queries to themselves. Without sign-in
//! (development only) every request is [`Caller::anonymous`].

use axum::http::HeaderMap;
use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The header Envoy passes verified claims in (the sidecar's `PAYLOAD_HEADER`).
pub const IDENTITY_HEADER: &str = "x-views-identity";

/// A JWT segment's encoding: base64url, padded or not.
const PAYLOAD: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The user behind a request, or nobody in particular.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Caller(Option<String>);

impl Caller {
    pub fn anonymous() -> Self {
        Self(None)
    }

    pub fn user(user: impl Into<String>) -> Self {
        Self(Some(user.into()))
    }

    /// The caller of a request: the string claim `claim` of the verified
    /// claims in [`IDENTITY_HEADER`]; anonymous without them.
    pub fn from_headers(headers: &HeaderMap, claim: &str) -> Self {
        let user = headers
            .get(IDENTITY_HEADER)
            .and_then(|value| PAYLOAD.decode(value.as_bytes()).ok())
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .and_then(|claims| claims.get(claim)?.as_str().map(str::to_owned));
        Self(user)
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("(anonymous)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(payload: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
        headers.insert(IDENTITY_HEADER, encoded.parse().unwrap());
        headers
    }

    #[test]
    fn the_configured_claim_names_the_user() {
        let claims = r#"{"sub":"u-1","preferred_username":"ana","groups":["analysts"]}"#;
        assert_eq!(
            Caller::from_headers(&headers(claims), "sub"),
            Caller::user("u-1")
        );
        assert_eq!(
            Caller::from_headers(&headers(claims), "preferred_username"),
            Caller::user("ana")
        );
    }

    #[test]
    fn no_header_a_missing_claim_or_garbage_is_nobody_in_particular() {
        assert_eq!(
            Caller::from_headers(&HeaderMap::new(), "sub"),
            Caller::anonymous()
        );
        assert_eq!(
            Caller::from_headers(&headers(r#"{"email":"x"}"#), "sub"),
            Caller::anonymous()
        );
        assert_eq!(
            Caller::from_headers(&headers(r#"{"sub":7}"#), "sub"),
            Caller::anonymous()
        );
        let mut garbage = HeaderMap::new();
        garbage.insert(IDENTITY_HEADER, "%%%".parse().unwrap());
        assert_eq!(Caller::from_headers(&garbage, "sub"), Caller::anonymous());
    }
}
