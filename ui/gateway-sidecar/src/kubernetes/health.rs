//! Whether the Kubernetes API server can be reached, probed on its own
//! (`GET /readyz`, which every client may read). The gateway serves warm
//! views without it, so this never makes the replica unready: `/readyz`
//! reports it, and the writes that need the API server (creates, deletes,
//! starts) are refused at once with `503` and `Retry-After` while it cannot
//! be reached, instead of each waiting out a timeout.
//!
//! The watches cannot tell this themselves: a watch resumed after an outage
//! says nothing until an object changes.

use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// How often the API server is probed while it answers…
const PERIOD: Duration = Duration::from_secs(2);
/// …and while it does not: its return is noticed within this.
const PERIOD_AWAY: Duration = Duration::from_millis(500);
/// A probe not answered within this counts as unreachable (a stopped or
/// overloaded API server accepts connections and never answers).
const TIMEOUT: Duration = Duration::from_secs(2);

/// The API server as last probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiServer {
    /// Not probed yet (the sidecar has just started and reached it to start).
    Unknown,
    /// Answered `/readyz` with success.
    Ready,
    /// Answered, but not ready (starting, or a check failing): requests are
    /// still tried, and may succeed.
    NotReady { since: Timestamp, message: String },
    /// No answer: requests are refused without trying.
    Unreachable { since: Timestamp, message: String },
}

impl ApiServer {
    /// Requests are worth trying.
    pub fn reachable(&self) -> bool {
        !matches!(self, ApiServer::Unreachable { .. })
    }

    /// Short name of the state, for `/readyz`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiServer::Unknown => "unknown",
            ApiServer::Ready => "ready",
            ApiServer::NotReady { .. } => "not_ready",
            ApiServer::Unreachable { .. } => "unreachable",
        }
    }
}

/// A read handle on the API server's state.
#[derive(Clone)]
pub struct ApiHealth {
    rx: watch::Receiver<ApiServer>,
    /// Counts the API server's returns after being unreachable.
    returns: watch::Receiver<u64>,
    /// 1 while requests are worth trying, for alerts.
    up: Gauge,
}

impl ApiHealth {
    pub fn get(&self) -> ApiServer {
        self.rx.borrow().clone()
    }

    /// Changes each time the API server answers again after it could not be
    /// reached (the watches start over then: see `kubernetes::watch`).
    pub fn returns(&self) -> watch::Receiver<u64> {
        self.returns.clone()
    }

    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "kubernetes_api_up",
            "Whether the Kubernetes API server answers this replica (0: creates, deletes and starts are refused; warm views serve on)",
            self.up.clone(),
        );
    }
}

/// The API server's state, and the task that probes it (runs until the
/// process ends).
pub fn probe(client: kube::Client) -> (ApiHealth, impl Future<Output = ()>) {
    let (tx, rx) = watch::channel(ApiServer::Unknown);
    let (returned, returns) = watch::channel(0);
    let up = Gauge::default();
    let health = ApiHealth {
        rx,
        returns,
        up: up.clone(),
    };
    let task = async move {
        loop {
            let state = match tokio::time::timeout(TIMEOUT, ready(&client)).await {
                Ok(Ok(())) => ApiServer::Ready,
                Ok(Err(kube::Error::Api(status))) => ApiServer::NotReady {
                    since: Timestamp::now(),
                    message: format!("{} ({})", status.message, status.code),
                },
                Ok(Err(error)) => ApiServer::Unreachable {
                    since: Timestamp::now(),
                    message: error.to_string(),
                },
                Err(_) => ApiServer::Unreachable {
                    since: Timestamp::now(),
                    message: format!("no answer within {} s", TIMEOUT.as_secs()),
                },
            };
            tx.send_if_modified(|current| {
                // Same kind as before: keep when it began.
                if std::mem::discriminant(current) == std::mem::discriminant(&state) {
                    return false;
                }
                match &state {
                    ApiServer::Ready if *current != ApiServer::Unknown => {
                        tracing::info!("the Kubernetes API server is back")
                    }
                    ApiServer::NotReady { message, .. } => {
                        tracing::warn!(message, "the Kubernetes API server is not ready")
                    }
                    ApiServer::Unreachable { message, .. } => {
                        tracing::warn!(message, "the Kubernetes API server cannot be reached")
                    }
                    ApiServer::Ready | ApiServer::Unknown => {}
                }
                if !current.reachable() && state.reachable() {
                    returned.send_modify(|count| *count += 1);
                }
                *current = state;
                true
            });
            let reachable = tx.borrow().reachable();
            up.set(i64::from(reachable));
            let period = if reachable { PERIOD } else { PERIOD_AWAY };
            tokio::time::sleep(period).await;
        }
    };
    (health, task)
}

async fn ready(client: &kube::Client) -> Result<(), kube::Error> {
    let request = hyper::Request::get("/readyz")
        .body(Vec::new())
        .expect("a GET without a body is a request");
    client.request_text(request).await.map(drop)
}
