//! `gateway-sidecar`: the control plane process next to Envoy (see the crate
//! docs for the architecture).

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use gateway_sidecar::config::Config;
use gateway_sidecar::{api, index, kubernetes, telemetry, xds};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Arc::new(Config::parse());
    install_crypto_provider();
    telemetry::init_logging(config.log_json);
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(telemetry::Metrics::default());

    let (index_tx, index) = index::channel();
    tokio::spawn(index::run(
        kubernetes::watch_views(client.clone(), &config.namespace),
        index_tx,
    ));

    let (xds_tx, xds_rx) = watch::channel(Arc::new(xds::resources::XdsSnapshot::default()));
    tokio::spawn(xds::build_snapshots(index.clone(), config.clone(), xds_tx));
    let ads = xds::AdsServer::new(xds_rx, metrics.clone());

    let state = api::AppState {
        config: config.clone(),
        index,
        writer: kubernetes::Writer::new(client, config.clone()),
        metrics,
        envoys: ads.envoys(),
    };

    let http = bind(config.http_listen).await?;
    let ops = bind(config.ops_listen).await?;
    tracing::info!(
        http = %config.http_listen,
        ops = %config.ops_listen,
        xds = %config.xds_listen,
        hostname = config.gateway_hostname,
        namespace = config.namespace,
        "gateway sidecar starting"
    );
    let ops_server =
        axum::serve(ops, api::ops_router(state.clone())).with_graceful_shutdown(shutdown_signal());
    let http_server =
        axum::serve(http, api::router(state)).with_graceful_shutdown(shutdown_signal());
    let grpc_server = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .serve_with_shutdown(config.xds_listen, shutdown_signal());
    let (http_result, ops_result, grpc_result) = tokio::join!(http_server, ops_server, grpc_server);
    http_result.context("HTTP server")?;
    ops_result.context("ops HTTP server")?;
    grpc_result.context("gRPC server")?;
    tracing::info!("gateway sidecar stopped");
    Ok(())
}

/// kube's TLS uses ring; with the AWS SDK linked too, rustls cannot pick a
/// provider by itself.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn bind(address: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
