//! The DuckDB release is pinned in three places that must agree: the
//! runtime pins (duckdb-runtime.toml: what the tasks fetch and build.rs links),
//! the Dockerfile's ARGs (what the image ships), and the `libduckdb-sys`
//! version (whose C API bindings must match the library).

use std::collections::BTreeMap;
use std::path::Path;

use googletest::prelude::*;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dockerfile_args() -> BTreeMap<String, String> {
    let text = read(&manifest_dir().join("Dockerfile"));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("ARG "))
        .filter_map(|arg| arg.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[gtest]
fn dockerfile_ships_the_pinned_library_and_extension() {
    let pins: toml::Table = read(&manifest_dir().join("duckdb-runtime.toml"))
        .parse()
        .unwrap();
    let args = dockerfile_args();
    let arg = |name: &str| args.get(name).map(String::as_str).unwrap_or("<missing>");
    let pin = |value: &toml::Value| value.as_str().unwrap_or("<missing>").to_string();

    expect_that!(arg("DUCKDB_VERSION"), eq(pin(&pins["version"])));
    expect_that!(arg("DUCKDB_NPM_PACKAGE"), eq(pin(&pins["library"]["npm"])));
    expect_that!(
        arg("DUCKDB_NPM_VERSION"),
        eq(pin(&pins["library"]["npm-version"]))
    );
    expect_that!(arg("LIBDUCKDB_SHA256"), eq(pin(&pins["library"]["sha256"])));
    let httpfs = &pins["extensions"]["httpfs"];
    expect_that!(arg("HTTPFS_PYPI_PACKAGE"), eq(pin(&httpfs["pypi"])));
    expect_that!(arg("HTTPFS_PYPI_VERSION"), eq(pin(&httpfs["pypi-version"])));
    expect_that!(arg("HTTPFS_SHA256"), eq(pin(&httpfs["sha256"])));
}

#[gtest]
fn libduckdb_sys_binds_the_same_release() {
    // duckdb-rs versions encode DuckDB's: 1.MMmmpp.x is DuckDB MM.mm.pp.
    let pins: toml::Table = read(&manifest_dir().join("duckdb-runtime.toml"))
        .parse()
        .unwrap();
    let version = pins["version"].as_str().unwrap();
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    let encoded = format!("1.{}{:02}{:02}.", parts[0], parts[1], parts[2]);
    let workspace: toml::Table = read(&manifest_dir().join("../../Cargo.toml"))
        .parse()
        .unwrap();
    let sys = &workspace["workspace"]["dependencies"]["libduckdb-sys"]["version"];
    expect_that!(
        sys.as_str().unwrap_or_default(),
        starts_with(format!("={encoded}"))
    );
    expect_that!(
        duckdb_view::db::library_version(),
        eq(&format!("v{version}"))
    );
}

/// This package's directory, read at run time (see `test_support::repo_root`
/// for why not `env!`).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("cargo test sets CARGO_MANIFEST_DIR")
        .into()
}
