//! The views gateway's control plane, run as a sidecar next to Envoy.
//!
//! ```text
//!  Kubernetes ──watch──► kubernetes::watch_views ──► index (one task owns the
//!  (Services, EndpointSlices,                        view state and the entitlements;
//!   Jobs, pods, events, the                          publishes Snapshots through
//!   entitlements ConfigMap)                          tokio::sync::watch)
//!        ▲                                                  │
//!        │                     ┌────────────────┬───────────┼──────────────┬─────────────┐
//!        │                     ▼                ▼           ▼              ▼             ▼
//!        │    xds (resources + access: sign-in   api (/_api:   activator      idle    credentials
//!        │     filters, per-view RBAC → ADS)     auth, shares, (ext_authz,            (S3 endpoint,
//!        │                                       /_api/me)     entitlements           per-view keys)
//!        │                                                      at start)
//!        └─────── kubernetes::Writer (view Services, Jobs, Secrets) ◄──────┘
//!  identity: the verified caller (Envoy's jwt_authn) and the provider's endpoints
//!  entitlements: the operator's data grants, checked on create, share and start
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
pub mod hub;
pub mod identity;
pub mod idle;
pub mod index;
pub mod kubernetes;
pub mod lake;
pub mod roots;
pub mod runs;
pub mod same_origin;
pub mod telemetry;
pub mod tls;
pub mod view;
pub mod workload;
pub mod xds;
