//! Graceful shutdown. On SIGTERM (or Ctrl-C) the replica stops being ready
//! (`/readyz` answers 503, so Kubernetes takes the pod out of the gateway
//! Service), tells its Envoy to fail health checks and drain its listeners
//! (clients are sent `Connection: close` / GOAWAY), keeps answering held
//! requests until they are done, and keeps serving its Envoys (API,
//! ext_authz, xDS) for as long as they stay connected, or until
//! `DRAIN_SECONDS` pass; only then it stops its servers. Starts in progress
//! go on in Kubernetes either way: another replica picks them up from the
//! index.
//!
//! ```text
//! Serving ──SIGTERM──► Draining ──every Blocker dropped, or DRAIN_SECONDS──► Stopped
//!                       │ /readyz 503, Envoy /healthcheck/fail + /drain_listeners
//! ```
//!
//! Each held request holds a [`Blocker`] for as long as it is held (ztunnel's
//! drain blocker), and so does each Envoy's xDS stream for as long as it is
//! open: the drain waits on them, those arriving while it waits included,
//! and ends the moment the last one is dropped. Without the Envoys among
//! them, a replica with nothing held stopped at once while its Envoy (in its
//! preStop sleep) still took requests for a while: new connections until
//! the pod's removal from the Service reached every node, and kept-alive
//! ones; those needing the sidecar got 503 "connection refused".
//!
//! In the Deployment, Envoy's container sleeps in a preStop hook meanwhile,
//! so Envoy outlives the drain instead of exiting on its own SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::envoy_admin::EnvoyAdmin;

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

/// Hands out [`Blocker`]s: the drain waits until every one is dropped.
#[derive(Clone)]
pub struct Blockers(Arc<watch::Sender<usize>>);

impl Blockers {
    /// Hold off the end of a drain until the returned blocker is dropped.
    pub fn block(&self) -> Blocker {
        self.0.send_modify(|held| *held += 1);
        Blocker(self.0.clone())
    }
}

/// Held by a request the drain waits for.
pub struct Blocker(Arc<watch::Sender<usize>>);

impl Drop for Blocker {
    fn drop(&mut self) {
        self.0.send_modify(|held| *held -= 1);
    }
}

pub struct Drain {
    tx: watch::Sender<Phase>,
    /// How many blockers are held now.
    held: Arc<watch::Sender<usize>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            tx: watch::channel(Phase::Serving).0,
            held: Arc::new(watch::channel(0).0),
        }
    }
}

impl Drain {
    pub fn watch(&self) -> DrainWatch {
        DrainWatch(self.tx.subscribe())
    }

    pub fn blockers(&self) -> Blockers {
        Blockers(self.held.clone())
    }

    /// Wait for the termination signal, then drain (see the module docs).
    pub async fn run(self, admin: EnvoyAdmin, limit: Duration) {
        termination_signal().await;
        self.drain(admin, limit).await;
    }

    async fn drain(self, admin: EnvoyAdmin, limit: Duration) {
        tracing::info!(limit_seconds = limit.as_secs(), "draining");
        self.tx.send_replace(Phase::Draining);
        for action in ["/healthcheck/fail", "/drain_listeners?graceful"] {
            if let Err(error) = admin.post(action).await {
                tracing::warn!(%error, "could not tell Envoy to drain");
            }
        }
        // Woken by each blocker's drop; those taken meanwhile count too.
        let mut held = self.held.subscribe();
        let done = tokio::time::timeout(limit, held.wait_for(|held| *held == 0))
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                held = *self.held.borrow(),
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

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    /// No Envoy there: telling it to drain fails at once, and is only logged.
    fn no_envoy() -> EnvoyAdmin {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        EnvoyAdmin::new(&format!("http://127.0.0.1:{port}"))
    }

    #[gtest]
    #[tokio::test]
    async fn the_drain_ends_when_the_last_held_request_does_not_before() {
        let drain = Drain::default();
        let phase = drain.watch();
        let blockers = drain.blockers();
        let first = blockers.block();
        let draining = tokio::spawn(drain.drain(no_envoy(), Duration::from_secs(30)));
        let mut rx = phase.0.clone();
        rx.wait_for(|p| *p == Phase::Draining)
            .await
            .expect("draining");
        // One arriving while the drain waits counts too.
        let second = blockers.block();
        drop(first);
        // (is_ok at once: a borrowed phase would hold off the drain's send.)
        let stopped_early = tokio::time::timeout(
            Duration::from_millis(300),
            rx.wait_for(|p| *p == Phase::Stopped),
        )
        .await
        .is_ok();
        expect_that!(stopped_early, eq(false), "stopped with a request held");

        let released = std::time::Instant::now();
        drop(second);
        phase.clone().stopped().await;
        expect_that!(released.elapsed(), lt(Duration::from_millis(100)));
        draining.await.expect("drain task");
    }

    #[gtest]
    #[tokio::test]
    async fn the_drain_stops_at_its_limit_with_requests_still_held() {
        let drain = Drain::default();
        let phase = drain.watch();
        let _held = drain.blockers().block();
        let started = std::time::Instant::now();
        drain.drain(no_envoy(), Duration::from_millis(200)).await;
        expect_that!(phase.is_draining(), eq(true));
        phase.stopped().await;
        expect_that!(started.elapsed(), ge(Duration::from_millis(200)));
    }
}
