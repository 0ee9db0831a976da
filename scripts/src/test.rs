//! `cargo xtask test`: everything CI runs. Lint, build the workspace (tests
//! run real binaries from it as pod processes), bring up (or reuse) the local
//! cluster, then every Rust test.

use crate::{cluster, cmd, lint, progress};

pub fn run() -> anyhow::Result<()> {
    lint::run()?;

    let step = progress::step("cargo build --workspace (binaries used as pod processes)");
    cmd::cargo(&["build", "--workspace", "--bins", "--quiet"])?;
    step.done();

    let step = progress::step("local cluster");
    cluster::up()?;
    step.done();

    let step = progress::step("cargo test --workspace");
    cmd::cargo(&["test", "--workspace", "--no-fail-fast"])?;
    step.done();
    Ok(())
}
