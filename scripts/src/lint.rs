//! `cargo xtask lint`: formatting, clippy with warnings as errors, generated
//! files up to date, Go formatting of the control-plane module.

use std::process::Command;

use anyhow::bail;

use crate::{cmd, paths, progress, schemas};

pub fn run() -> anyhow::Result<()> {
    let step = progress::step("cargo fmt --check");
    cmd::cargo(&["fmt", "--all", "--check"])?;
    step.done();

    let step = progress::step("cargo clippy --all-targets -- -D warnings");
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    step.done();

    schemas::run(true)?;

    let step = progress::step("gofmt scripts/kube");
    let output = Command::new("gofmt")
        .args(["-l", "."])
        .current_dir(paths::repo_root().join("scripts").join("kube"))
        .output()?;
    let unformatted = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !unformatted.trim().is_empty() {
        bail!("gofmt: not formatted: {unformatted}");
    }
    step.done();
    Ok(())
}
