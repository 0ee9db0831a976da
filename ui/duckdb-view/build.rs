//! Links the view against DuckDB's prebuilt `libduckdb.so` (pinned in
//! `duckdb-runtime.toml`) instead of building DuckDB from source.
//!
//! `libduckdb-sys` (without `bundled`) only asks the linker for `-lduckdb`;
//! this script says where that library is, sets the rpath so the binary and
//! the tests run without `LD_LIBRARY_PATH`, and compiles in the default
//! extension directory. It looks, in order, at `DUCKDB_LIB_DIR` (what
//! `libduckdb-sys` reads too; the Dockerfile sets it) and at the cache the
//! tasks fill: `$VIEWS_HOME` or `~/.cache/views-gateway`, then
//! `duckdb/<version>/lib`. It never downloads anything itself: builds stay
//! offline and reproducible, and the tasks fetch and verify once.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let pins_path = manifest_dir.join("duckdb-runtime.toml");
    println!("cargo:rerun-if-changed={}", pins_path.display());
    for var in [
        "DUCKDB_LIB_DIR",
        "DUCKDB_EXTENSION_DIR",
        "VIEWS_HOME",
        "HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let pins: toml::Table = std::fs::read_to_string(&pins_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pins_path.display()))
        .parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", pins_path.display()));
    let version = pins["version"].as_str().expect("version is a string");
    let library = pins["library"]["file"]
        .as_str()
        .expect("library.file is a string");

    let cache = env::var_os("VIEWS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache")
                .join("views-gateway")
        });
    let runtime_dir = cache.join("duckdb").join(version);
    let lib_dir = env::var_os("DUCKDB_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime_dir.join("lib"));
    let extension_dir = env::var_os("DUCKDB_EXTENSION_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime_dir.join("extensions"));

    let lib_file = lib_dir.join(library);
    // Re-run once the tasks have fetched it (a missing file always re-runs).
    println!("cargo:rerun-if-changed={}", lib_file.display());
    if !lib_file.is_file() {
        panic!(
            "\n\nduckdb-view links DuckDB {version}'s prebuilt {library}, which is not at {}.\n\
             Fetch it once with `cargo xtask test` (or `cargo xtask lint`, `compile`, `dev`): they \
             download it from npm into {} and verify it; or set DUCKDB_LIB_DIR to a directory \
             holding {library} of DuckDB {version}.\n\n",
            lib_file.display(),
            runtime_dir.display(),
        );
    }

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-env=DUCKDB_VIEW_ENGINE_VERSION={version}");
    println!(
        "cargo:rustc-env=DUCKDB_VIEW_DEFAULT_EXTENSION_DIR={}",
        extension_dir.display()
    );
}
