//! `duckdb-view`: see the crate README for every flag and variable.
//!
//! Binds first (so the readiness probe gets a clear "starting" answer), then
//! starts DuckDB off the async runtime; `/healthz` turns ready once the
//! engine has locked itself down. A failed start exits non-zero, so the pod
//! shows the failure instead of hanging unready.

use std::future::IntoFuture;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::Parser;
use duckdb_view::config::Config;
use duckdb_view::engine::{ENGINE_VERSION, Engine, EngineOptions};
use duckdb_view::http::{AppState, router, shutdown_signal};
use duckdb_view::queries::{Limits, QueryService};

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    duckdb_view::logging::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // DuckDB has its own thread pool; the HTTP side needs little.
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "duckdb-view failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    // Configuration errors are reported before anything starts.
    let lake = config.lake()?;
    let s3 = config.s3()?;
    if s3.credentials.is_none() {
        tracing::warn!("no S3 credentials (AWS_ACCESS_KEY_ID): requests to S3 are anonymous");
    }
    let options = EngineOptions {
        threads: config.threads,
        memory_limit: config.memory_limit_setting(),
        temp_dir: config.temp_dir.clone(),
        extension_dir: config.extension_dir.clone(),
    };
    let limits = Limits {
        max_rows: config.max_rows,
        statement_timeout: config.statement_timeout,
        max_concurrent: config.max_concurrent_queries.max(1),
    };

    let state = Arc::new(AppState {
        name: config.name.clone(),
        service: OnceLock::new(),
        max_body: 1024 * 1024,
        user_claim: config.user_claim.clone(),
        health: Arc::default(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        view = %config.name,
        engine = ENGINE_VERSION,
        subsets = lake.subsets.len(),
        tables = lake.tables.len(),
        "serving; starting DuckDB"
    );

    let engine_state = Arc::clone(&state);
    let engine_task = tokio::task::spawn_blocking(move || Engine::start(&options, lake, &s3));
    let engine_ready = async move {
        let engine = engine_task
            .await
            .map_err(|e| anyhow::anyhow!("the start-up task failed: {e}"))??;
        let unavailable = engine.tables.iter().filter(|t| t.error.is_some()).count();
        let service = QueryService::new(Arc::new(engine), limits, Arc::clone(&engine_state.health));
        let _ = engine_state.service.set(service);
        tracing::info!(
            startup_ms = started.elapsed().as_secs_f64() * 1e3,
            unavailable_tables = unavailable,
            "ready: DuckDB started and locked down"
        );
        anyhow::Ok(())
    };

    let app = router(Arc::clone(&state));
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(Arc::clone(&state)))
            .into_future(),
    );
    tokio::select! {
        // A shutdown signal while DuckDB is still starting ends the process.
        result = &mut server => return served(result),
        result = engine_ready => result?,
    }
    served(server.await)?;
    if state.health.is_failed() {
        anyhow::bail!(
            "DuckDB failed and invalidated the database: exiting, so that the container restarts with a fresh one"
        );
    }
    Ok(())
}

fn served(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result
        .map_err(|e| anyhow::anyhow!("the server task failed: {e}"))?
        .map_err(|e| anyhow::anyhow!("serving: {e}"))
}
