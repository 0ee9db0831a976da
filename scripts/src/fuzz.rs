//! `cargo xtask fuzz`: the sidecar's fuzz targets (`ui/gateway-sidecar/fuzz`,
//! cargo-fuzz and libFuzzer with AddressSanitizer), each run for a bounded
//! time; any panic or sanitizer report fails the task and leaves the input
//! that caused it under the cache, with the command that replays it.
//!
//! The committed corpus (`fuzz/corpus/<target>/`) seeds every run and is
//! never written by it: what a run discovers goes to a corpus under the cache
//! (kept between runs on one machine), and `--update-corpus` folds that back
//! into the committed one, minimised (`cargo fuzz cmin`), for a commit.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{cmd, paths, progress};

/// cargo-fuzz, pinned: installed once into the cache.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target in `ui/gateway-sidecar/fuzz/fuzz_targets/`.
const TARGETS: [&str; 4] = ["view_host", "view_request", "key_id", "s3_request"];

#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Run only this target.
    #[arg(long, value_parser = TARGETS)]
    target: Option<String>,
    /// Afterwards, merge what the runs found into the committed corpus, minimised.
    #[arg(long)]
    update_corpus: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz()?;
    let targets: Vec<&str> = match &args.target {
        Some(target) => vec![target.as_str()],
        None => TARGETS.to_vec(),
    };

    let step = progress::step("cargo +nightly fuzz build (release, AddressSanitizer)");
    cargo_fuzz_command(&cargo_fuzz)?
        .args(["build", "--release", "--debug-assertions"])
        .status_ok()?;
    step.done();

    for target in &targets {
        let found = found_corpus(target);
        let artifacts = paths::cache_dir()
            .join("fuzz")
            .join("artifacts")
            .join(target);
        for dir in [&found, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let step = progress::step(format!("fuzz {target} for {} s", args.seconds));
        // libFuzzer writes new inputs into the first corpus directory only.
        let outcome = cargo_fuzz_command(&cargo_fuzz)?
            .args(["run", "--release", "--debug-assertions", target])
            .arg(&found)
            .arg(committed_corpus(target))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .status_ok();
        if let Err(error) = outcome {
            bail!(
                "{error}\nfuzz target {target} failed: the input is in {} (replay it with \
                 `cargo +nightly fuzz run {target} <file>` in ui/gateway-sidecar)",
                artifacts.display()
            );
        }
        step.done();
    }

    if args.update_corpus {
        for target in &targets {
            let step = progress::step(format!(
                "cargo fuzz cmin {target} into the committed corpus"
            ));
            let committed = committed_corpus(target);
            // cmin minimises one directory in place: gather both first.
            copy_files(&found_corpus(target), &committed)?;
            cargo_fuzz_command(&cargo_fuzz)?
                .args(["cmin", "--release", "--debug-assertions", target])
                .arg(&committed)
                .status_ok()?;
            step.done();
        }
    }
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    paths::repo_root()
        .join("ui")
        .join("gateway-sidecar")
        .join("fuzz")
}

fn committed_corpus(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

fn found_corpus(target: &str) -> PathBuf {
    paths::cache_dir().join("fuzz").join("corpus").join(target)
}

/// `cargo +nightly fuzz …` in the fuzz crate, with its own target directory
/// (sanitizer flags would otherwise rebuild the workspace's every time).
fn cargo_fuzz_command(cargo_fuzz: &Path) -> anyhow::Result<Command> {
    // Through rustup's proxy, found on PATH, `+nightly` picks the toolchain,
    // and cargo finds the `cargo-fuzz` subcommand on PATH as well; the
    // variables `cargo xtask` inherits from its own cargo would pin stable.
    let bin_dir = cargo_fuzz
        .parent()
        .expect("cargo-fuzz is in a bin/ directory");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz"])
        .current_dir(fuzz_dir().parent().expect("fuzz/ has a parent"))
        .env("PATH", path)
        .env(
            "CARGO_TARGET_DIR",
            paths::cache_dir().join("cargo-target-fuzz"),
        );
    for name in ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC"] {
        command.env_remove(name);
    }
    Ok(command)
}

trait StatusOk {
    fn status_ok(&mut self) -> anyhow::Result<()>;
}

impl StatusOk for Command {
    fn status_ok(&mut self) -> anyhow::Result<()> {
        let status = self
            .status()
            .with_context(|| format!("starting {:?}", self.get_program()))?;
        if !status.success() {
            bail!("{self:?} failed ({status})");
        }
        Ok(())
    }
}

/// cargo-fuzz under the cache (installed from crates.io once), after
/// checking that a nightly toolchain is there: libFuzzer's instrumentation
/// needs it, and it is not something this task can install.
fn ensure_cargo_fuzz() -> anyhow::Result<PathBuf> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .context("running rustup")?;
    if !nightly.status.success() {
        bail!(
            "fuzzing needs a nightly Rust toolchain (`rustup toolchain install nightly`): {}",
            String::from_utf8_lossy(&nightly.stderr).trim()
        );
    }
    let root = paths::cache_dir()
        .join("tools")
        .join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let binary = root.join("bin").join("cargo-fuzz");
    if binary.exists() {
        return Ok(binary);
    }
    let step = progress::step(format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install)"
    ));
    let root_arg = root.to_str().context("the cache path is not UTF-8")?;
    cmd::cargo(&[
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
        "--root",
        root_arg,
    ])?;
    step.done();
    Ok(binary)
}

fn copy_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
