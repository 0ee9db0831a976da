//! `gateway-sidecar`: the control plane process next to Envoy (see the crate
//! docs for the architecture).

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use gateway_sidecar::config::Config;
use gateway_sidecar::envoy_admin::EnvoyAdmin;
use gateway_sidecar::{
    activator, api, auth, credentials, drain, identity, idle, index, kubernetes, telemetry, xds,
};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    install_crypto_provider();
    telemetry::init_logging(config.log_json);
    config.validate()?;
    match &config.identity.oidc_issuer {
        Some(issuer) => {
            let provider = identity::Provider::discover(issuer).await;
            tracing::info!(
                issuer,
                jwks = provider.jwks_uri,
                "sign-in with OpenID Connect"
            );
            config.provider = Some(provider);
        }
        None => tracing::warn!(
            "OIDC_ISSUER is not set: nobody signs in, and everyone who reaches the gateway may do everything (development only)"
        ),
    }
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let mut service_account_keys = None;
    if config.identity.oidc_issuer.is_some() && config.identity.service_account_tokens {
        let issuer = kubernetes::service_accounts::issuer(&client).await;
        tracing::info!(issuer, "ServiceAccount tokens accepted");
        config.identity.service_account_issuer = Some(issuer);
        let (keys, refresh) = kubernetes::service_accounts::keys(client.clone());
        tokio::spawn(refresh);
        service_account_keys = Some(keys);
    }
    let config = Arc::new(config);
    let metrics = Arc::new(telemetry::Metrics::default());

    let (index_tx, index) = index::channel();
    tokio::spawn(index::run(
        kubernetes::watch_views(
            client.clone(),
            &config.namespace,
            &config.entitlements_configmap,
            config.tls_secret.as_deref(),
        ),
        index_tx,
    ));

    let (xds_tx, xds_rx) = watch::channel(Arc::new(xds::resources::XdsSnapshot::default()));
    tokio::spawn(xds::build_snapshots(index.clone(), config.clone(), xds_tx));
    let ads = xds::AdsServer::new(xds_rx, metrics.clone());

    let writer = kubernetes::Writer::new(client.clone(), config.clone());
    let broker = match config.credentials.credentials_listen {
        Some(_) => {
            let key = kubernetes::master_key::load_or_create(
                client.clone(),
                &config.namespace,
                &config.credentials.master_key_secret,
            )
            .await
            .context("loading the credentials master key")?;
            let broker = credentials::Broker::new(
                credentials::MasterKey::from_bytes(&key).context("the credentials master key")?,
            );
            let _ = metrics.credentials.set(broker.counters().clone());
            Some(Arc::new(broker))
        }
        None => None,
    };
    let activator = activator::Activator::new(
        config.clone(),
        index.clone(),
        ads.envoys(),
        writer.clone(),
        broker.clone(),
        metrics.clone(),
    );
    tokio::spawn(
        idle::Reaper::new(
            config.clone(),
            index.clone(),
            writer.clone(),
            metrics.clone(),
        )
        .run(),
    );
    let drain = drain::Drain::default();
    let stopped = drain.watch();
    let auth = auth::Auth::new(&config);
    let state = api::AppState {
        auth,
        service_account_keys,
        drain: drain.watch(),
        config: config.clone(),
        index: index.clone(),
        writer,
        metrics,
        envoys: ads.envoys(),
        activator: activator.clone(),
    };
    let s3_server = serve_credentials(&config, broker, index, stopped.clone().stopped()).await?;
    tokio::spawn(drain.run(
        EnvoyAdmin::new(&config.workload.envoy_admin_url),
        state.metrics.clone(),
        std::time::Duration::from_secs(config.drain_seconds),
    ));

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
    let ops_server = axum::serve(ops, api::ops_router(state.clone()))
        .with_graceful_shutdown(stopped.clone().stopped());
    let http_server =
        axum::serve(http, api::router(state)).with_graceful_shutdown(stopped.clone().stopped());
    let grpc_server = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .add_service(AuthorizationServer::new(activator::ExtAuthz::new(
            activator,
        )))
        .serve_with_shutdown(config.xds_listen, stopped.clone().stopped());
    let servers = async { tokio::join!(http_server, ops_server, grpc_server, s3_server) };
    // Envoy's ADS stream (and any status stream) lives as long as its peer:
    // once stopped, give connections a moment to close, then leave anyway.
    let closing = async {
        stopped.stopped().await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    };
    let (http_result, ops_result, grpc_result, s3_result) = tokio::select! {
        results = servers => results,
        () = closing => {
            tracing::info!("gateway sidecar stopped (long-lived streams closed)");
            return Ok(());
        }
    };
    http_result.context("HTTP server")?;
    ops_result.context("ops HTTP server")?;
    grpc_result.context("gRPC server")?;
    s3_result.context("S3 endpoint")?;
    tracing::info!("gateway sidecar stopped");
    Ok(())
}

/// The views' S3 endpoint, when configured: runs until shutdown.
async fn serve_credentials(
    config: &Config,
    broker: Option<Arc<credentials::Broker>>,
    index: index::Index,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<impl Future<Output = Result<(), credentials::CredentialsError>>> {
    let settings = &config.credentials;
    let (Some(listen), Some(broker)) = (settings.credentials_listen, broker) else {
        return Ok(futures::future::Either::Left(std::future::ready(Ok(()))));
    };
    // validate() made sure these are set along with CREDENTIALS_LISTEN.
    let upstream = credentials::Upstream {
        endpoint: settings.lake_endpoint_url.clone().unwrap_or_default(),
        access_key_id: settings.lake_access_key_id.clone().unwrap_or_default(),
        secret_access_key: settings.lake_secret_access_key.clone().unwrap_or_default(),
        region: settings.lake_region.clone(),
    };
    let listener = bind(listen).await?;
    tracing::info!(%listen, lake = upstream.endpoint, "S3 endpoint for views");
    let endpoint = credentials::Endpoint::new(broker, Arc::new(index), &upstream);
    Ok(futures::future::Either::Right(
        endpoint.serve(listener, shutdown),
    ))
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
