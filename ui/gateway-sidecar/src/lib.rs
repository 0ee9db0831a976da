//! The views gateway's control plane, run as a sidecar next to Envoy.
//!
//! ```text
//!  Kubernetes ──watch──► kubernetes::watch_views ──► index (one task owns the
//!  (Services,                                        view state; publishes Snapshots
//!   EndpointSlices)                                  through tokio::sync::watch)
//!        ▲                                                  │
//!        │                               ┌──────────────────┼─────────────────┐
//!        │                               ▼                  ▼                 ▼
//!        │                 xds (resources::build → ADS   api (/_api,     (activator:
//!        │                  streams, ACK/NACK per Envoy)  /readyz, …)     next issue)
//!        └─────── kubernetes::Writer (create/delete view Services) ◄───────┘
//!  credentials: per-view S3 keys and the S3 endpoint that enforces them
//! ```
//!
//! Data flows one way: watchers feed the index, the index feeds xDS and the
//! API; writers go to Kubernetes and their effect comes back through the
//! watches, never around them.

pub mod activator;
pub mod api;
pub mod auth;
pub mod changelog;
pub mod config;
pub mod credentials;
pub mod drain;
pub mod entitlements;
pub mod envoy_admin;
pub mod identity;
pub mod idle;
pub mod index;
pub mod kubernetes;
pub mod telemetry;
pub mod view;
pub mod workload;
pub mod xds;
