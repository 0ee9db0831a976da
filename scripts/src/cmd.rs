//! Running other programs from tasks: inherited output, a clear error naming
//! the command when it fails.

use std::process::Command;

use anyhow::{Context, bail};

use crate::paths;

/// Run `program args…` in the repository root and fail if it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(paths::repo_root())
        .status()
        .with_context(|| format!("starting `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Run cargo (the same cargo that runs this task).
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(&cargo, args)
}
