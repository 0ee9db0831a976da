//! The local Envoy's admin interface, as the sidecar uses it: request
//! counters (idle detection) and draining (graceful shutdown).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
#[error("Envoy admin {url}: {message}")]
pub struct AdminError {
    url: String,
    message: String,
}

#[derive(Clone)]
pub struct EnvoyAdmin {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl EnvoyAdmin {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET /stats?format=json&filter=<regex>` (the regex already URL-encoded).
    pub async fn stats(&self, encoded_filter: &str) -> Result<serde_json::Value, AdminError> {
        let body = self
            .call(
                hyper::Method::GET,
                &format!("/stats?format=json&filter={encoded_filter}"),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|e| self.error("/stats", e))
    }

    /// `POST <path>`: admin actions (`/healthcheck/fail`, `/drain_listeners`…).
    pub async fn post(&self, path: &str) -> Result<(), AdminError> {
        self.call(hyper::Method::POST, path).await.map(drop)
    }

    async fn call(&self, method: hyper::Method, path: &str) -> Result<Bytes, AdminError> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Empty::new())
            .map_err(|e| self.error(path, e))?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.http.request(request))
            .await
            .map_err(|_| self.error(path, "timed out"))?
            .map_err(|e| self.error(path, e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.error(path, e))?
            .to_bytes();
        if !status.is_success() {
            return Err(self.error(path, format!("status {status}")));
        }
        Ok(body)
    }

    fn error(&self, path: &str, message: impl std::fmt::Display) -> AdminError {
        AdminError {
            url: format!("{}{path}", self.base),
            message: message.to_string(),
        }
    }
}
