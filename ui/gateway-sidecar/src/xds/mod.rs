//! xDS: Envoy's configuration, served over incremental ADS.
//!
//! ```text
//! index snapshots ──► resources::Builder ──► watch<XdsSnapshot> ──► one task per Envoy stream
//!   (rebuilds only views      (per type: resources by name,          │  per-resource versions,
//!    the index says changed)   names changed in recent snapshots)     │  subscriptions, nonces,
//!                                                                     │  ACK/NACK, deltas only
//!                                       EnvoyStatus (what each Envoy holds) ◄──┘
//! ```

pub mod access;
mod metrics;
pub mod resources;
mod server;

pub use metrics::{Metrics, TypeLabel};
pub use server::{AdsServer, EnvoyStatus, EnvoysWatch};

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::index::Index;

/// Turn every index snapshot into an xDS snapshot (only publishing when a
/// resource actually changes).
pub async fn build_snapshots(
    index: Index,
    config: Arc<Config>,
    tx: watch::Sender<Arc<resources::XdsSnapshot>>,
) {
    let mut snapshots = index.subscribe();
    let mut builder = resources::Builder::new(config);
    loop {
        // Not built under the borrow: it would hold off the index's next send.
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(built) = builder.update(&snapshot) {
            tracing::debug!(
                generation = built.generation,
                changed = built
                    .changes
                    .latest()
                    .map_or(0, |c| c.values().map(|n| n.len()).sum::<usize>()),
                complete = built.complete,
                "xDS snapshot"
            );
            tx.send_replace(Arc::new(built));
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
