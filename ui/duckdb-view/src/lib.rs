//! The view workload: DuckDB over a view's subsets of the S3 data lake.
//!
//! At start ([`engine::Engine::start`]) it loads the httpfs extension,
//! creates the S3 secret from the credentials the gateway injected, one
//! DuckDB VIEW per table of its subsets, and then locks itself down. It then
//! serves ([`http::router`]) an offline web page and a query API.
//!
//! Modules: [`config`] (flags and env), [`db`] (the C API layer),
//! [`engine`] (start-up and lockdown), [`policy`] (statement policy),
//! [`queries`] (running, cancelling, timing out queries, each its
//! caller's), [`caller`] (who sends a request, as the gateway verified it),
//! [`encode`] (JSON and CSV), [`http`] (routes), [`logging`].

pub mod caller;
pub mod config;
pub mod db;
pub mod encode;
pub mod engine;
pub mod http;
pub mod logging;
pub mod policy;
pub mod queries;
