//! Everything the sidecar says to Kubernetes: watching the views (Services,
//! EndpointSlices, Jobs, pods, Job events) and the objects named in the
//! configuration for the index, writing views and their workloads, the
//! credentials master key (created if absent, read through the watch), the
//! ServiceAccount token issuer's keys, and whether the API server can be
//! reached at all. Writers never touch the index: their changes come back
//! through the watches.

pub mod health;
pub mod master_key;
pub mod service_accounts;
mod watch;
mod write;

pub use watch::{Change, Named, watch_views};
pub use write::{WriteError, Writer};
