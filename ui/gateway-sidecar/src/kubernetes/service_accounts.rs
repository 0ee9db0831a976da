//! The cluster's ServiceAccount token issuer, so that programs in the cluster
//! (a CI job, a scheduled notebook) call the gateway with a token Kubernetes
//! issued them: `kubectl create token <sa> --audience views-gateway`.
//!
//! Envoy verifies those tokens itself (a second `jwt_authn` provider, see
//! `xds::access`), against the keys this module reads from the API server's
//! service-account issuer discovery (`/openid/v1/jwks`, readable by every
//! ServiceAccount through the built-in `system:service-account-issuer-discovery`
//! binding) and serves to Envoy on the sidecar's HTTP port. The keys are read
//! again every [`REFRESH`]; the last good set is kept while the API is away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often the issuer's keys are read again (they rotate rarely; a new
/// key is published before tokens are signed with it).
pub const REFRESH: Duration = Duration::from_secs(300);

/// The issuer's keys as JSON (a JWKS), once read.
pub type Keys = watch::Receiver<Option<Arc<str>>>;

async fn get(client: &kube::Client, path: &str) -> Result<String, kube::Error> {
    let request = hyper::Request::get(path)
        .body(Vec::new())
        .expect("a GET without a body is a request");
    client.request_text(request).await
}

/// The issuer named in the cluster's discovery document, retried until the
/// API server answers.
pub async fn issuer(client: &kube::Client) -> String {
    let mut delay = Duration::from_millis(200);
    loop {
        let issuer = get(client, "/.well-known/openid-configuration")
            .await
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| e.to_string())?
                    .get("issuer")
                    .and_then(|i| i.as_str())
                    .map(String::from)
                    .ok_or_else(|| "no issuer in the discovery document".to_string())
            });
        match issuer {
            Ok(issuer) => return issuer,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "reading the ServiceAccount token issuer");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Read the issuer's keys now and every [`REFRESH`] (sooner while none were
/// read yet).
pub fn keys(client: kube::Client) -> (Keys, impl Future<Output = ()>) {
    let (tx, rx) = watch::channel(None);
    let task = async move {
        loop {
            let read = match get(&client, "/openid/v1/jwks").await {
                Ok(jwks) if serde_json::from_str::<serde_json::Value>(&jwks).is_ok() => {
                    tx.send_if_modified(|current| {
                        let changed = current.as_deref() != Some(jwks.as_str());
                        *current = Some(jwks.into());
                        changed
                    });
                    true
                }
                Ok(_) => {
                    tracing::warn!("the ServiceAccount issuer's keys are not JSON");
                    false
                }
                // Keep the keys we have: Kubernetes may be briefly away.
                Err(error) => {
                    tracing::warn!(%error, "reading the ServiceAccount issuer's keys");
                    false
                }
            };
            if tx.is_closed() {
                return;
            }
            let wait = if read || tx.borrow().is_some() {
                REFRESH
            } else {
                Duration::from_secs(2)
            };
            tokio::time::sleep(wait).await;
        }
    };
    (rx, task)
}
