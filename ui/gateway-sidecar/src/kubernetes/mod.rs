//! Everything the sidecar says to Kubernetes: watching the views (Services,
//! EndpointSlices, Jobs, pods, Job events) for the index, writing views and
//! their workloads, and the credentials master key. Writers never touch the
//! index: their changes come back through the watches.

pub mod master_key;
mod watch;
mod write;

pub use watch::{Change, watch_views};
pub use write::{WriteError, Writer};
