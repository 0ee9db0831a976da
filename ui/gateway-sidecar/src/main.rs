//! `gateway-sidecar`: the control plane process next to Envoy (see the crate
//! docs for the architecture).
//!
//! Every long-running task (the index, the xDS builder, the idle reaper, the
//! API server probe, the ServiceAccount key refresh, the drain, the servers)
//! is supervised: one that ends or panics before shutdown ends the process
//! with an error, so Kubernetes restarts it, instead of a replica running on
//! without it (a dead idle reaper would silently stop scale to zero).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use gateway_sidecar::config::Config;
use gateway_sidecar::envoy_admin::EnvoyAdmin;
use gateway_sidecar::{
    activator, api, auth, credentials, drain, entitlements, identity, idle, index, kubernetes,
    lake, roots, telemetry, xds,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    install_crypto_provider();
    telemetry::init_logging(config.log_json);
    config.validate()?;
    // https peers need CA certificates: a clear error now, not at the first request.
    if let Some(issuer) = &config.identity.oidc_issuer {
        roots::require_for("OIDC_ISSUER", issuer)?;
    }
    if let Some(provider) = &config.identity.oidc_provider_url {
        roots::require_for("OIDC_PROVIDER_URL", provider)?;
    }
    if let Some(lake) = &config.credentials.lake_endpoint_url {
        roots::require_for("LAKE_ENDPOINT_URL", lake)?;
    }
    match &config.identity.oidc_issuer {
        Some(issuer) => {
            let provider =
                identity::Provider::discover(issuer, config.identity.oidc_provider_url.as_deref())
                    .await;
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
    let mut tasks = Supervisor::default();
    let mut service_account_keys = None;
    if config.identity.oidc_issuer.is_some() && config.identity.service_account_tokens {
        let issuer = kubernetes::service_accounts::issuer(&client).await;
        tracing::info!(issuer, "ServiceAccount tokens accepted");
        config.identity.service_account_issuer = Some(issuer);
        let (keys, refresh) = kubernetes::service_accounts::keys(client.clone());
        tasks.spawn("ServiceAccount key refresh", Kind::Background, async move {
            refresh.await;
            Ok(())
        });
        service_account_keys = Some(keys);
    }
    let config = Arc::new(config);
    // Every module registers its own metrics here.
    let mut registry = prometheus_client::registry::Registry::with_prefix("views_gateway");

    let (health, probe) = kubernetes::health::probe(client.clone());
    health.register_metrics(&mut registry);
    tasks.spawn(
        "Kubernetes API server probe",
        Kind::Background,
        async move {
            probe.await;
            Ok(())
        },
    );
    let (index_tx, index) = index::channel();
    let credentials_on = config.credentials.credentials_listen.is_some();
    let changes = kubernetes::watch_views(
        client.clone(),
        &config.namespace,
        kubernetes::Named {
            entitlements: &config.entitlements_configmap,
            tls: config.tls_secret.as_deref(),
            master_key: credentials_on.then_some(config.credentials.master_key_secret.as_str()),
        },
        health.returns(),
    );
    tasks.spawn("index", Kind::Background, async move {
        index::run(changes, index_tx).await;
        Ok(())
    });

    let (xds_tx, xds_rx) = watch::channel(Arc::new(xds::resources::XdsSnapshot::default()));
    let builder = xds::build_snapshots(index.clone(), config.clone(), xds_tx);
    tasks.spawn("xDS builder", Kind::Background, async move {
        builder.await;
        Ok(())
    });
    let xds_metrics = Arc::new(xds::Metrics::default());
    xds_metrics.register(&mut registry);
    let drain = drain::Drain::default();
    let stopped = drain.watch();
    let ads = xds::AdsServer::new(xds_rx, xds_metrics).holding_off(drain.blockers());

    let writer = kubernetes::Writer::new(client.clone(), config.clone(), health);
    let broker = if credentials_on {
        // The index reads the master key (its watch); the first replica
        // creates it, else the first activation that needs it does.
        if let Err(error) = writer.ensure_master_key().await {
            tracing::warn!(%error, "could not create the credentials master key yet");
        }
        let broker = credentials::Broker::with_keys(Arc::new(index.clone()));
        registry.register_collector(Box::new(credentials::CountersCollector(
            broker.counters().clone(),
        )));
        registry.register_collector(Box::new(credentials::MasterKeysCollector(
            broker.keys().clone(),
        )));
        Some(Arc::new(broker))
    } else {
        None
    };
    let activator = activator::Activator::new(
        config.clone(),
        index.clone(),
        ads.envoys(),
        writer.clone(),
        broker.clone(),
        drain.blockers(),
    );
    activator.metrics().register(&mut registry);
    let reaper = idle::Reaper::new(config.clone(), index.clone(), writer.clone());
    reaper.register_metrics(&mut registry);
    tasks.spawn("idle reaper", Kind::Background, async move {
        reaper.run().await;
        Ok(())
    });
    entitlements::register_metrics(&mut registry, index.clone());
    let api_metrics = Arc::new(api::Metrics::default());
    api_metrics.register(&mut registry);
    let auth = auth::Auth::new(&config);
    let lake_metrics = Arc::new(lake::Metrics::default());
    lake_metrics.register(&mut registry);
    let lake = Arc::new(lake::Lake::new(
        config.credentials.lake_upstream().as_ref(),
        index.clone(),
        lake_metrics,
    ));
    let state = api::AppState {
        lake,
        auth,
        service_account_keys,
        drain: drain.watch(),
        config: config.clone(),
        index: index.clone(),
        writer,
        metrics: api_metrics,
        registry: Arc::new(registry),
        envoys: ads.envoys(),
        activator: activator.clone(),
    };
    if let Some(s3_server) =
        serve_credentials(&config, broker, index, stopped.clone().stopped()).await?
    {
        tasks.spawn("S3 endpoint", Kind::Server, async move {
            s3_server.await.context("S3 endpoint")
        });
    }
    let drain_task = drain.run(
        EnvoyAdmin::new(&config.workload.envoy_admin_url),
        Duration::from_secs(config.drain_seconds),
    );
    tasks.spawn("drain", Kind::Server, async move {
        drain_task.await;
        Ok(())
    });

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
    tasks.spawn("ops HTTP server", Kind::Server, async move {
        ops_server.await.context("ops HTTP server")
    });
    let http_server =
        axum::serve(http, api::router(state)).with_graceful_shutdown(stopped.clone().stopped());
    tasks.spawn("HTTP server", Kind::Server, async move {
        http_server.await.context("HTTP server")
    });
    let grpc_server = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .add_service(AuthorizationServer::new(activator::ExtAuthz::new(
            activator,
        )))
        .serve_with_shutdown(config.xds_listen, stopped.clone().stopped());
    tasks.spawn("gRPC server", Kind::Server, async move {
        grpc_server.await.context("gRPC server")
    });
    tasks.run(stopped).await
}

/// What a supervised task is for, which says when its end is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Runs as long as the process: its end is always a failure.
    Background,
    /// Serves until the drain stops the replica (the drain itself too): its
    /// end is a failure before the drain began, or with an error.
    Server,
}

/// The sidecar's long-running tasks, by name.
#[derive(Default)]
struct Supervisor {
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, (&'static str, Kind)>,
}

impl Supervisor {
    fn spawn(
        &mut self,
        name: &'static str,
        kind: Kind,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, (name, kind));
    }

    /// Until the replica has stopped: Ok once stopped by the drain, an error
    /// as soon as a task ends when it should not (see [`Kind`]) or panics.
    async fn run(mut self, stopped: drain::DrainWatch) -> anyhow::Result<()> {
        let mut stopping = std::pin::pin!(stopped.clone().stopped());
        loop {
            let ended = tokio::select! {
                () = &mut stopping => break,
                Some(ended) = self.tasks.join_next_with_id() => ended,
            };
            self.ended(ended, &stopped)?;
        }
        // Envoy's ADS stream (and any status stream) lives as long as its
        // peer: give the servers a moment to close, then leave anyway.
        let mut servers = self
            .names
            .values()
            .filter(|(_, kind)| *kind == Kind::Server)
            .count();
        let closing = async {
            while servers > 0 {
                let Some(ended) = self.tasks.join_next_with_id().await else {
                    break;
                };
                self.ended(ended, &stopped)?;
                servers -= 1;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(2), closing).await {
            Ok(closed) => {
                closed?;
                tracing::info!("gateway sidecar stopped");
            }
            Err(_) => tracing::info!("gateway sidecar stopped (long-lived streams closed)"),
        }
        Ok(())
    }

    /// Whether a task's end is expected (an error when not, logged); it is
    /// no longer waited for.
    fn ended(
        &mut self,
        ended: Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>,
        stopped: &drain::DrainWatch,
    ) -> anyhow::Result<()> {
        let (id, outcome) = match ended {
            Ok((id, outcome)) => (id, outcome.map_err(|e| format!("{e:#}"))),
            Err(error) => (error.id(), Err(error.to_string())),
        };
        let (name, kind) = self
            .names
            .remove(&id)
            .expect("every task is spawned with a name");
        let why = match outcome {
            Ok(()) if kind == Kind::Server && stopped.is_draining() => return Ok(()),
            Ok(()) => "it returned".to_string(),
            Err(why) => why,
        };
        tracing::error!(
            task = name,
            error = why,
            "a long-running task ended; the sidecar cannot go on without it"
        );
        anyhow::bail!("{name} ended: {why}")
    }
}

/// The views' S3 endpoint, when configured: runs until shutdown.
async fn serve_credentials<S: Future<Output = ()>>(
    config: &Config,
    broker: Option<Arc<credentials::Broker>>,
    index: index::Index,
    shutdown: S,
) -> anyhow::Result<Option<impl Future<Output = Result<(), credentials::CredentialsError>> + use<S>>>
{
    let settings = &config.credentials;
    let (Some(listen), Some(broker)) = (settings.credentials_listen, broker) else {
        return Ok(None);
    };
    // validate() made sure these are set along with CREDENTIALS_LISTEN.
    let upstream = settings
        .lake_upstream()
        .context("CREDENTIALS_LISTEN needs the lake's settings")?;
    let listener = bind(listen).await?;
    tracing::info!(%listen, lake = upstream.endpoint, "S3 endpoint for views");
    let endpoint = credentials::Endpoint::new(broker, Arc::new(index), &upstream);
    Ok(Some(endpoint.serve(listener, shutdown)))
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

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    /// A supervisor of `tasks`, run with a replica that serves (no drain).
    async fn first_failure(
        tasks: Vec<(
            &'static str,
            Kind,
            futures::future::BoxFuture<'static, anyhow::Result<()>>,
        )>,
    ) -> String {
        let mut supervisor = Supervisor::default();
        for (name, kind, task) in tasks {
            supervisor.spawn(name, kind, task);
        }
        let serving = drain::Drain::default();
        let outcome = tokio::time::timeout(Duration::from_secs(5), supervisor.run(serving.watch()))
            .await
            .expect("the supervisor returns at once");
        format!("{:#}", outcome.expect_err("a failure"))
    }

    fn forever() -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(std::future::pending())
    }

    #[gtest]
    #[tokio::test]
    async fn a_task_that_panics_or_returns_or_fails_ends_the_process_with_its_name() {
        let panicked = first_failure(vec![
            ("index", Kind::Background, forever()),
            (
                "idle reaper",
                Kind::Background,
                Box::pin(async { panic!("boom") }),
            ),
        ])
        .await;
        expect_that!(panicked, starts_with("idle reaper ended: "));
        expect_that!(panicked, contains_substring("panicked"));

        let returned = first_failure(vec![
            ("HTTP server", Kind::Server, forever()),
            ("xDS builder", Kind::Background, Box::pin(async { Ok(()) })),
        ])
        .await;
        expect_that!(returned, eq("xDS builder ended: it returned"));

        // A server that ends before any drain, even without an error.
        let server = first_failure(vec![(
            "gRPC server",
            Kind::Server,
            Box::pin(async { Ok(()) }),
        )])
        .await;
        expect_that!(server, eq("gRPC server ended: it returned"));

        let failed = first_failure(vec![(
            "ops HTTP server",
            Kind::Server,
            Box::pin(async { Err(anyhow::anyhow!("address in use")) }),
        )])
        .await;
        expect_that!(failed, eq("ops HTTP server ended: address in use"));
    }
}
