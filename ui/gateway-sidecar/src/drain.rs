//! Graceful shutdown. On SIGTERM (or Ctrl-C) the replica stops being ready
//! (`/readyz` answers 503, so Kubernetes takes the pod out of the gateway
//! Service), tells its Envoy to fail health checks and drain its listeners
//! (clients are sent `Connection: close` / GOAWAY), keeps answering held
//! requests until they are done or `DRAIN_SECONDS` pass, and only then stops
//! its servers. Starts in progress go on in Kubernetes either way: another
//! replica picks them up from the index.
//!
//! ```text
//! Serving ──SIGTERM──► Draining ──held requests done, or DRAIN_SECONDS──► Stopped
//!                       │ /readyz 503, Envoy /healthcheck/fail + /drain_listeners
//! ```
//!
//! In the Deployment, Envoy's container sleeps in a preStop hook meanwhile,
//! so Envoy outlives the drain instead of exiting on its own SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::envoy_admin::EnvoyAdmin;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
    Stopped,
}

/// A read handle on the replica's phase.
#[derive(Clone)]
pub struct DrainWatch(watch::Receiver<Phase>);

impl DrainWatch {
    pub fn is_draining(&self) -> bool {
        *self.0.borrow() != Phase::Serving
    }

    /// Resolves once the servers should stop.
    pub async fn stopped(mut self) {
        let _ = self.0.wait_for(|phase| *phase == Phase::Stopped).await;
    }
}

pub struct Drain {
    tx: watch::Sender<Phase>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            tx: watch::channel(Phase::Serving).0,
        }
    }
}

impl Drain {
    pub fn watch(&self) -> DrainWatch {
        DrainWatch(self.tx.subscribe())
    }

    /// Wait for the termination signal, then drain (see the module docs).
    pub async fn run(self, admin: EnvoyAdmin, metrics: Arc<Metrics>, limit: Duration) {
        termination_signal().await;
        tracing::info!(limit_seconds = limit.as_secs(), "draining");
        self.tx.send_replace(Phase::Draining);
        for action in ["/healthcheck/fail", "/drain_listeners?graceful"] {
            if let Err(error) = admin.post(action).await {
                tracing::warn!(%error, "could not tell Envoy to drain");
            }
        }
        let mut held = tokio::time::interval(Duration::from_millis(100));
        let finished = async {
            loop {
                held.tick().await;
                if metrics.held_requests.get() <= 0 {
                    return;
                }
            }
        };
        if tokio::time::timeout(limit, finished).await.is_err() {
            tracing::warn!(
                held = metrics.held_requests.get(),
                "drain time is up with requests still held"
            );
        }
        self.tx.send_replace(Phase::Stopped);
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn termination_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
