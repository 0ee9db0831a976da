//! Where the endpoint learns what a view may access: the view index
//! implements [`ViewSubsets`]; tests and tools use [`InMemoryViews`]. The
//! index is also where the broker reads the master key versions
//! ([`MasterKeys`], from the watched Secret).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use views_types::Subset;

use super::key::{KeyRing, MasterKeys};

/// The views' current subsets, asked on every request (so a change or a
/// deletion applies to the next request, with no cache to invalidate).
pub trait ViewSubsets: Send + Sync + 'static {
    /// The view's subsets, or `None` when the view does not exist (deleted):
    /// its keys are refused at once.
    fn subsets(&self, view: &str) -> Option<Vec<Subset>>;

    /// Whether keys minted for the activation with this nonce
    /// ([`super::activation_nonce`]) may still be used. The default accepts
    /// every activation of an existing view until its key expires; an index
    /// that knows the current activation can refuse keys of ended ones.
    fn activation_current(&self, view: &str, nonce: &str) -> bool {
        let _ = (view, nonce);
        true
    }
}

/// Views held in memory: for tests and local tools.
#[derive(Debug, Default)]
pub struct InMemoryViews {
    views: RwLock<HashMap<String, Vec<Subset>>>,
    /// The nonce of each view's current activation, where one is set.
    activations: RwLock<HashMap<String, String>>,
}

impl InMemoryViews {
    pub fn new() -> Self {
        Self::default()
    }

    /// Create or replace a view.
    pub fn insert(&self, view: &str, subsets: Vec<Subset>) {
        self.views
            .write()
            .expect("views lock")
            .insert(view.to_owned(), subsets);
    }

    /// Delete a view; returns whether it existed.
    pub fn remove(&self, view: &str) -> bool {
        self.activations
            .write()
            .expect("activations lock")
            .remove(view);
        self.views
            .write()
            .expect("views lock")
            .remove(view)
            .is_some()
    }

    /// Make `activation` the view's current one: keys minted for any other
    /// activation of the view are refused from now on.
    pub fn set_activation(&self, view: &str, activation: &str) {
        self.activations.write().expect("activations lock").insert(
            view.to_owned(),
            super::key::activation_nonce(view, activation),
        );
    }
}

impl ViewSubsets for InMemoryViews {
    fn subsets(&self, view: &str) -> Option<Vec<Subset>> {
        self.views.read().expect("views lock").get(view).cloned()
    }

    fn activation_current(&self, view: &str, nonce: &str) -> bool {
        self.activations
            .read()
            .expect("activations lock")
            .get(view)
            .is_none_or(|current| current == nonce)
    }
}

/// The gateway's own source: the view index. Keys are good for the view's
/// live activation only (the one whose Job uid they were minted for).
impl ViewSubsets for crate::index::Index {
    fn subsets(&self, view: &str) -> Option<Vec<Subset>> {
        let snapshot = self.snapshot();
        Some(snapshot.views.get(view)?.spec.subsets.clone())
    }

    fn activation_current(&self, view: &str, nonce: &str) -> bool {
        let snapshot = self.snapshot();
        snapshot
            .views
            .get(view)
            .and_then(|v| v.live_activation())
            .is_some_and(|live| super::key::activation_nonce(view, &live.uid) == nonce)
    }
}

/// The master key versions of the index's last snapshot: the watched
/// Secret's, the same on every replica once their watches have seen it.
#[async_trait::async_trait]
impl MasterKeys for crate::index::Index {
    fn ring(&self) -> Arc<KeyRing> {
        self.snapshot().master_keys.clone()
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        holds: &(dyn for<'k> Fn(&'k KeyRing) -> bool + Send + Sync),
    ) -> Arc<KeyRing> {
        let held = |snapshot: &crate::index::Snapshot| holds(&snapshot.master_keys);
        crate::index::Index::wait_for(self, timeout, held).await;
        self.ring()
    }
}

impl<T: ViewSubsets + ?Sized> ViewSubsets for std::sync::Arc<T> {
    fn subsets(&self, view: &str) -> Option<Vec<Subset>> {
        (**self).subsets(view)
    }

    fn activation_current(&self, view: &str, nonce: &str) -> bool {
        (**self).activation_current(view, nonce)
    }
}
