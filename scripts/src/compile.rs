//! `cargo xtask compile`: generated types first, then release binaries of
//! every workspace crate copied into `target/bin/<arch>/`.

use std::process::Command;

use anyhow::Context;

use crate::{cmd, paths, progress, schemas};

pub fn run() -> anyhow::Result<()> {
    // duckdb-view links DuckDB's prebuilt library: fetch it before cargo builds.
    crate::duckdb_runtime::ensure()?;
    schemas::run(false)?;
    let step = progress::step("cargo build --release (workspace binaries)");
    cmd::cargo(&[
        "build",
        "--release",
        "--workspace",
        "--bins",
        "--exclude",
        "xtask",
    ])?;
    step.done();

    let bin_dir = paths::bin_dir();
    std::fs::create_dir_all(&bin_dir)?;
    let release = paths::target_dir().join("release");
    for name in workspace_binaries()? {
        std::fs::copy(release.join(&name), bin_dir.join(&name))
            .with_context(|| format!("copying {name}"))?;
        progress::info(format!("{}", bin_dir.join(&name).display()));
    }
    Ok(())
}

/// Names of the binary targets of the workspace, except the task runner.
fn workspace_binaries() -> anyhow::Result<Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version=1", "--no-deps"])
        .current_dir(paths::repo_root())
        .output()?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut names = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if is_bin && package["name"] != "xtask" {
                names.extend(target["name"].as_str().map(String::from));
            }
        }
    }
    Ok(names)
}
