//! xDS: Envoy's configuration, served over ADS (state of the world).
//!
//! ```text
//! index snapshots ──► resources::build ──► watch<XdsSnapshot> ──► one task per Envoy stream
//!                                                                   │  per-type version, nonce,
//!                                                                   │  ACK/NACK, subscriptions
//!                                             EnvoyStatus (what each Envoy ACKed) ◄──┘
//! ```

pub mod resources;
mod server;

pub use server::{AdsServer, EnvoyStatus, EnvoysWatch};

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::index::Index;

/// Turn every index snapshot into an xDS snapshot (only publishing when the
/// resources actually change).
pub async fn build_snapshots(
    index: Index,
    config: Arc<Config>,
    tx: watch::Sender<Arc<resources::XdsSnapshot>>,
) {
    let mut snapshots = index.subscribe();
    loop {
        let built = resources::build(&snapshots.borrow_and_update(), &config);
        tx.send_if_modified(|current| {
            if **current == built {
                return false;
            }
            *current = Arc::new(built);
            true
        });
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
