//! The project's tasks, run as `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`). These are the only way the README and CI build,
//! test and run things.

mod bench;
mod browser;
mod cluster;
mod cmd;
mod compile;
mod dev;
mod duckdb_runtime;
mod e2e;
mod envoy;
mod fuzz;
mod images;
mod lake;
mod lint;
mod oidc;
mod paths;
mod progress;
mod schemas;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tasks of the views gateway")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Export `ui/types` JSON Schemas and generate their Rust types.
    Schemas {
        /// Fail if the generated files are not up to date instead of writing them.
        #[arg(long)]
        check: bool,
    },
    /// Build release binaries into `target/bin/<arch>/` (runs `schemas` first).
    Compile,
    /// Formatting, clippy, generated files up to date.
    Lint,
    /// Everything CI runs: lint, unit and integration tests against the local cluster.
    Test,
    /// The local Kubernetes cluster (control plane, kwok, pod network, pod runner).
    Cluster {
        #[command(subcommand)]
        command: cluster::Command,
    },
    /// Build the images of the repository's Dockerfiles (gateway-sidecar, duckdb-view, s3s-fs)
    /// with Docker, on stand-ins for their public base images made here, and load them into the
    /// local cluster's real node.
    Images(images::Args),
    /// The local data lake: an S3 server (s3s-fs) with sample data, and the S3 clients tests use.
    Lake {
        #[command(subcommand)]
        command: lake::Command,
    },
    /// The local OpenID Connect provider (oidc-provider from npm) with the demo users.
    Oidc {
        #[command(subcommand)]
        command: oidc::Command,
    },
    /// Print a demo user's access token (last line of stdout), obtained from the running local
    /// OIDC provider through the authorization-code flow with PKCE.
    Token {
        /// The user (ana, bob, ada, cy; passwords in <cache>/oidc/oidc.json).
        user: String,
        #[arg(long, default_value = "views-cli", value_parser = ["views-cli", "views-expiring"])]
        client: String,
        #[arg(long, default_value = "urn:views-gateway", value_parser = ["urn:views-gateway", "urn:other-service"])]
        resource: String,
    },
    /// Run the gateway locally; in the foreground until interrupted.
    Dev {
        /// Return once everything is ready and leave it running.
        #[arg(long)]
        detach: bool,
        /// HTTPS as in a real deployment: views.localhost and *.views.localhost on port 8443
        /// (VIEWS_GATEWAY_TLS_PORT), a certificate from a local CA, plain HTTP redirected.
        #[arg(long)]
        tls: bool,
        /// Deploy the gateway into the local cluster (the k3d example's overlay, through
        /// scripts/dev/in-cluster) instead of running it as processes: real containers on the real
        /// node, served on localhost:8080 (VIEWS_GATEWAY_PORT) by a local load balancer.
        #[arg(long)]
        in_cluster: bool,
        /// With --in-cluster: without sign-in, as the k3d example runs (hostname localhost only).
        #[arg(long, requires = "in_cluster")]
        no_sign_in: bool,
    },
    /// Stop everything `dev` started.
    Down,
    /// The end-to-end suite (test/e2e) in Chromium against the `dev` stack (reused when running).
    E2e,
    /// Benchmarks (warm path, scale); writes BENCHMARKS.md.
    Bench(bench::Args),
    /// The sidecar's fuzz targets (cargo-fuzz, nightly), each for a bounded time; fails on any
    /// panic or sanitizer report.
    Fuzz(fuzz::Args),
}

fn main() -> anyhow::Result<()> {
    // kube's client logs every failed request at error level; while the API
    // server starts up those are expected, and the tasks report real
    // failures themselves.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client::client::builder=off".into()),
        )
        .init();
    // kube's TLS uses ring; when the workspace is built together another
    // crate enables aws-lc-rs as well, and rustls then needs to be told.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.task {
        Task::Schemas { check } => schemas::run(check),
        Task::Compile => compile::run(),
        Task::Lint => lint::run(),
        Task::Test => test::run(),
        Task::Cluster { command } => cluster::run(command),
        Task::Images(args) => images::run(args),
        Task::Lake { command } => lake::run(command),
        Task::Oidc { command } => oidc::run(command),
        Task::Token {
            user,
            client,
            resource,
        } => oidc::token(&user, &client, &resource),
        Task::Dev {
            detach,
            tls,
            in_cluster,
            no_sign_in,
        } => dev::run(
            detach,
            if tls {
                dev::Scheme::Https
            } else {
                dev::Scheme::Http
            },
            if in_cluster {
                dev::Mode::InCluster
            } else {
                dev::Mode::Host
            },
            !no_sign_in,
        ),
        Task::Down => dev::down(),
        Task::E2e => e2e::run(),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
    }
}
