//! Everything the sidecar says to Kubernetes: watching the views (Services
//! and their EndpointSlices) for the index, and writing views. Writers never
//! touch the index: their changes come back through the watches.

mod watch;
mod write;

pub use watch::{Change, watch_views};
pub use write::{WriteError, Writer};
