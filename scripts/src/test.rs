//! `cargo xtask test`: everything CI runs. Lint, build the workspace (tests
//! run real binaries from it as pod processes), bring up (or reuse) the local
//! cluster and the S3 lake, then every Rust test.

use crate::{browser, cluster, cmd, lake, lint, progress};

pub fn run() -> anyhow::Result<()> {
    lint::run()?;
    browser::ensure()?;

    let step = progress::step("cargo build --workspace (binaries used as pod processes)");
    cmd::cargo(&["build", "--workspace", "--bins", "--quiet"])?;
    step.done();

    let step = progress::step("local cluster");
    cluster::up()?;
    step.done();

    let step = progress::step("S3 lake with sample data");
    lake::ensure_running()?;
    step.done();

    let step = progress::step("cargo test --workspace");
    cmd::cargo(&["test", "--workspace", "--no-fail-fast"])?;
    step.done();
    Ok(())
}
