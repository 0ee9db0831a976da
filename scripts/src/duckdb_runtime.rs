//! The DuckDB runtime of `ui/duckdb-view`: DuckDB's prebuilt shared library
//! and the signed extensions the view loads, fetched once per version into
//! `~/.cache/views-gateway/duckdb/<version>/` and verified against the
//! pinned SHA-256 sums in `ui/duckdb-view/duckdb-runtime.toml`.
//!
//! Why not build DuckDB: its sources take about 17 minutes on two cores.
//! DuckDB ships the same engine prebuilt as `libduckdb.so` in the npm package
//! of its Node bindings, and its extensions as PyPI wheels; both registries
//! are reachable from our machines (nothing else is), so this module uses
//! their ordinary clients (`npm pack`, `pip download`) and unpacks the files.
//!
//! Layout of a complete cache entry (written to a temporary directory and
//! renamed into place, so a half-finished download is never mistaken for a
//! complete one, and two concurrent runs cannot corrupt each other):
//!
//! ```text
//! duckdb/1.5.5/
//!   lib/libduckdb.so                      linked by duckdb-view's build.rs (rpath)
//!   extensions/httpfs.duckdb_extension    LOADed by the view at start
//! ```

// The tasks (lint, compile, test, dev) call `ensure()` before building the
// workspace.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{paths, progress};

/// Where the DuckDB runtime of the view lives on this machine.
#[derive(Debug, Clone)]
pub struct DuckdbRuntime {
    /// `~/.cache/views-gateway/duckdb/<version>/`.
    pub dir: PathBuf,
    /// The directory holding `libduckdb.so` (what `DUCKDB_LIB_DIR` means to `libduckdb-sys`).
    pub lib_dir: PathBuf,
    /// Each pinned extension by name, e.g. `httpfs` → `…/extensions/httpfs.duckdb_extension`.
    pub extensions: BTreeMap<String, PathBuf>,
}

/// The pins, as written in `ui/duckdb-view/duckdb-runtime.toml`.
#[derive(Debug, Deserialize)]
struct Pins {
    version: String,
    library: LibraryPin,
    extensions: BTreeMap<String, ExtensionPin>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LibraryPin {
    npm: String,
    npm_version: String,
    file: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ExtensionPin {
    pypi: String,
    pypi_version: String,
    sha256: String,
}

/// Make sure the pinned DuckDB library and extensions are in the cache
/// (download and verify them once), and say where they are. Cheap when they
/// are already there: no network, no hashing (the cache entry was verified
/// before it was renamed into place).
pub fn ensure() -> anyhow::Result<DuckdbRuntime> {
    let pins_path = paths::repo_root()
        .join("ui")
        .join("duckdb-view")
        .join("duckdb-runtime.toml");
    let pins: Pins = toml::from_str(
        &fs::read_to_string(&pins_path)
            .with_context(|| format!("reading {}", pins_path.display()))?,
    )
    .with_context(|| format!("parsing {}", pins_path.display()))?;
    ensure_pins(&pins, &paths::cache_dir().join("duckdb"))
}

fn ensure_pins(pins: &Pins, root: &Path) -> anyhow::Result<DuckdbRuntime> {
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        // The pins name the linux-x64 npm package and the manylinux x86_64 wheel.
        bail!(
            "duckdb-runtime.toml pins DuckDB for linux x86_64 only; this is {} {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
    }
    let dir = root.join(&pins.version);
    let runtime = DuckdbRuntime {
        lib_dir: dir.join("lib"),
        extensions: pins
            .extensions
            .keys()
            .map(|name| {
                let file = dir
                    .join("extensions")
                    .join(format!("{name}.duckdb_extension"));
                (name.clone(), file)
            })
            .collect(),
        dir,
    };
    if is_complete(&runtime, pins) {
        return Ok(runtime);
    }

    let step = progress::step(format!(
        "DuckDB {} runtime (npm {}@{}, {} from PyPI) into {}",
        pins.version,
        pins.library.npm,
        pins.library.npm_version,
        pins.extensions
            .values()
            .map(|e| format!("{}=={}", e.pypi, e.pypi_version))
            .collect::<Vec<_>>()
            .join(", "),
        runtime.dir.display()
    ));
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // A unique staging directory next to the final one: same file system, so
    // the final rename is atomic.
    let staging = root.join(format!(".{}.partial-{}", pins.version, std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let result = fetch_into(pins, &staging);
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(err);
    }
    if runtime.dir.exists() {
        // An incomplete entry (a manual edit, an older layout): replace it.
        // If another process completed it meanwhile, ours is equally good.
        if is_complete(&runtime, pins) {
            let _ = fs::remove_dir_all(&staging);
            step.done();
            return Ok(runtime);
        }
        fs::remove_dir_all(&runtime.dir)
            .with_context(|| format!("removing incomplete {}", runtime.dir.display()))?;
    }
    if let Err(err) = fs::rename(&staging, &runtime.dir) {
        let _ = fs::remove_dir_all(&staging);
        // Lost a race with a concurrent run that renamed its own copy first.
        if !is_complete(&runtime, pins) {
            return Err(err).with_context(|| format!("creating {}", runtime.dir.display()));
        }
    }
    step.done();
    Ok(runtime)
}

/// All pinned files present (their content was verified before the rename).
fn is_complete(runtime: &DuckdbRuntime, pins: &Pins) -> bool {
    runtime.lib_dir.join(&pins.library.file).is_file()
        && runtime.extensions.values().all(|file| file.is_file())
}

/// Download, verify and unpack everything into `staging`.
fn fetch_into(pins: &Pins, staging: &Path) -> anyhow::Result<()> {
    let downloads = staging.join("downloads");
    let lib_dir = staging.join("lib");
    let extension_dir = staging.join("extensions");
    for dir in [&downloads, &lib_dir, &extension_dir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    // The library: `npm pack` downloads the package tarball (npm checks it
    // against the registry's integrity hash); we check the file we use
    // against our own pin.
    let spec = format!("{}@{}", pins.library.npm, pins.library.npm_version);
    progress::info(format!("npm pack {spec}"));
    run(Command::new("npm")
        .args(["pack", "--silent", &spec, "--pack-destination"])
        .arg(&downloads)
        .current_dir(&downloads))?;
    let tarball = single_file(&downloads, ".tgz")?;
    let member = format!("package/{}", pins.library.file);
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&downloads)
        .arg(&member))?;
    let library = lib_dir.join(&pins.library.file);
    fs::rename(downloads.join(&member), &library)?;
    verify(&library, &pins.library.sha256)?;

    // The extensions: one wheel each, `pip download --no-deps` (no install),
    // unpacked with Python's zipfile module (pip implies Python is there).
    for (name, pin) in &pins.extensions {
        let spec = format!("{}=={}", pin.pypi, pin.pypi_version);
        progress::info(format!("pip download {spec}"));
        let wheel_dir = downloads.join(name);
        fs::create_dir_all(&wheel_dir)?;
        run(Command::new(python()?)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--platform",
                "manylinux2014_x86_64",
                "--dest",
            ])
            .arg(&wheel_dir)
            .arg(&spec))?;
        let wheel = single_file(&wheel_dir, ".whl")?;
        let unpacked = wheel_dir.join("unpacked");
        run(Command::new(python()?)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked))?;
        let inside = unpacked
            .join(format!("duckdb_extension_{name}"))
            .join("extensions")
            .join(format!("v{}", pins.version))
            .join(format!("{name}.duckdb_extension"));
        if !inside.is_file() {
            bail!(
                "{} does not contain {} (expected for DuckDB {})",
                wheel.display(),
                inside.strip_prefix(&unpacked).unwrap_or(&inside).display(),
                pins.version
            );
        }
        let target = extension_dir.join(format!("{name}.duckdb_extension"));
        fs::rename(&inside, &target)?;
        verify(&target, &pin.sha256)?;
    }

    fs::remove_dir_all(&downloads)?;
    Ok(())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The Python that has pip: `python3`, else `python`.
fn python() -> anyhow::Result<&'static str> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate);
        }
    }
    bail!("fetching DuckDB extensions needs Python with pip (python3 -m pip)")
}

/// The one file in `dir` whose name ends with `suffix`.
fn single_file(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one *{suffix} in {}, found {}",
            dir.display(),
            found.len()
        ),
    }
}

fn verify(file: &Path, expected: &str) -> anyhow::Result<()> {
    let mut hasher = Sha256::new();
    let mut reader = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !actual.eq_ignore_ascii_case(expected) {
        bail!(
            "{}: SHA-256 {actual} does not match the pinned {expected} (ui/duckdb-view/duckdb-runtime.toml)",
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_name_one_engine_version() {
        let text = fs::read_to_string(
            paths::repo_root()
                .join("ui")
                .join("duckdb-view")
                .join("duckdb-runtime.toml"),
        )
        .unwrap();
        let pins: Pins = toml::from_str(&text).unwrap();
        assert!(
            pins.library
                .npm_version
                .starts_with(&format!("{}-r.", pins.version))
        );
        assert!(pins.extensions.contains_key("httpfs"));
        for pin in pins.extensions.values() {
            assert_eq!(pin.pypi_version, pins.version);
            assert_eq!(pin.sha256.len(), 64);
        }
    }

    /// Downloads about 30 MB into a temporary cache: `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore = "downloads ~30 MB from npm and PyPI into a temporary cache; every `cargo xtask test` already exercises the real fetch through `ensure()`"]
    fn fetches_verifies_and_reuses() {
        let text = fs::read_to_string(
            paths::repo_root()
                .join("ui")
                .join("duckdb-view")
                .join("duckdb-runtime.toml"),
        )
        .unwrap();
        let pins: Pins = toml::from_str(&text).unwrap();
        let root = std::env::temp_dir().join(format!("duckdb-runtime-test-{}", std::process::id()));
        let runtime = ensure_pins(&pins, &root).unwrap();
        assert!(runtime.lib_dir.join("libduckdb.so").is_file());
        assert!(runtime.extensions["httpfs"].is_file());
        let again = ensure_pins(&pins, &root).unwrap();
        assert_eq!(again.dir, runtime.dir);
        fs::remove_dir_all(&root).unwrap();
    }
}
