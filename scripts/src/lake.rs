//! The local data lake: a real S3 server (`s3s-fs` 0.14.1 from crates.io,
//! a file-system backed S3) run as a process, holding sample data generated
//! with DuckDB, plus the clients tests use against it (the AWS CLI and
//! DuckDB's Python package).
//!
//! ```text
//!  s3s-fs ── http://10.233.0.1:32700 (the host's address on the pod network:
//!     │       view pods in netns views-pods and the host both reach it)
//!     └─ root <cache>/lake/data/           bucket = directory
//!          lake/tpch/sf0.01/<table>/<table>.parquet     TPC-H, 8 tables
//!          lake/sales/region=<eu|us|asia|africa|mideast>/data_0.parquet
//!          lake/sales-private/customers.parquet         a sibling of sales/
//! ```
//!
//! Everything is cached under `<cache>` (`$VIEWS_HOME` or
//! `~/.cache/views-gateway`): tools in `tools/<name>-<version>/`, the lake in
//! `lake/` (root credentials generated once, data, `lake.json` with the
//! endpoint and credentials for other programs, pid file and log). Data is
//! regenerated only when its recipe changes; nothing is committed.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cluster::network::{self, HOST_IP};
use crate::cluster::{Component, Layout};
use crate::{paths, progress};

/// The S3 server, as published on crates.io.
pub const S3S_FS_VERSION: &str = "0.14.1";
/// The AWS CLI tests use (PyPI `awscli`).
pub const AWSCLI_VERSION: &str = "1.46.3";
/// The port the lake listens on, at the pod network's host address. Like every
/// fixed port of the local stack (32247–32702: the cluster, the lake, the
/// views' S3 endpoint, the OIDC provider) it is below Linux's ephemeral range
/// (32768–60999), so an outgoing connection can never hold it when the server
/// starts: a CI run lost the OIDC provider's former 32902 that way.
pub const PORT: u16 = 32700;
/// The one bucket of sample data.
pub const BUCKET: &str = "lake";
/// s3s-fs accepts any region; clients must name one.
pub const REGION: &str = "us-east-1";
/// TPC-H scale factor of the sample data.
const SCALE_FACTOR: &str = "0.01";

#[derive(Subcommand)]
pub enum Command {
    /// Install the tools, generate the sample data (once) and start the S3 server.
    Up,
    /// Stop the S3 server (the data stays cached).
    Down,
    /// Show the server, its endpoint and the sample data.
    Status,
    /// Install the S3 server and the clients tests use (AWS CLI, DuckDB for Python).
    Tools,
}

/// A running lake: where it is and how to sign in as its root.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lake {
    /// `http://10.233.0.1:32700`, reachable from the host and from pods.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub bucket: String,
    /// The server's root directory (bucket = directory under it).
    pub root: PathBuf,
    /// Row count of each sample table, by its key prefix in the bucket
    /// (e.g. `tpch/sf0.01/lineitem/` → 60175, `sales/region=eu/` → …).
    pub tables: BTreeMap<String, u64>,
}

/// The tools the lake and its tests use.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The `s3s-fs` binary.
    pub s3s_fs: PathBuf,
    /// The `aws` command (AWS CLI v1).
    pub aws: PathBuf,
    /// A Python with `duckdb` and the `tpch` and `httpfs` extension packages.
    pub duckdb_python: PathBuf,
    /// The DuckDB version of that Python package (the workspace's).
    pub duckdb_version: String,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up => {
            let lake = ensure_running()?;
            print_usage(&lake);
            Ok(())
        }
        Command::Down => {
            if stop()? {
                progress::info("stopped s3s-fs");
            } else {
                progress::info("the lake was not running");
            }
            Ok(())
        }
        Command::Status => status(),
        Command::Tools => {
            let tools = ensure_tools()?;
            println!("s3s-fs         {}", tools.s3s_fs.display());
            println!("aws            {}", tools.aws.display());
            println!(
                "duckdb python  {} (DuckDB {})",
                tools.duckdb_python.display(),
                tools.duckdb_version
            );
            Ok(())
        }
    }
}

fn lake_dir() -> PathBuf {
    paths::cache_dir().join("lake")
}

fn tools_dir() -> PathBuf {
    paths::cache_dir().join("tools")
}

/// `lake.json`: the running lake's endpoint, credentials and tables, for
/// programs that do not link this crate (tests of other crates).
pub fn state_file() -> PathBuf {
    lake_dir().join("lake.json")
}

/// The lake's process files live in `<cache>/lake/{run,logs}`; the cluster's
/// `Component` does the pid-file bookkeeping.
fn layout() -> Layout {
    let root = lake_dir();
    Layout {
        logs: root.join("logs"),
        run: root.join("run"),
        root,
        ..Layout::new()
    }
}

fn component(tools: &Tools, credentials: &RootCredentials, root: &Path) -> Component {
    Component {
        name: "s3s-fs",
        program: tools.s3s_fs.clone(),
        args: vec![
            "--host".into(),
            HOST_IP.to_string(),
            "--port".into(),
            PORT.to_string(),
            "--access-key".into(),
            credentials.access_key_id.clone(),
            "--secret-key".into(),
            credentials.secret_access_key.clone(),
            root.display().to_string(),
        ],
    }
}

/// Install what is missing, generate the data if its recipe changed, start
/// the server if it is not running (on the pod network, which this creates
/// if needed), and wait until it accepts connections. Cheap when all is up.
pub fn ensure_running() -> anyhow::Result<Lake> {
    let tools = ensure_tools()?;
    let dir = lake_dir();
    let layout = layout();
    for d in [&dir, &layout.run, &layout.logs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let credentials = RootCredentials::ensure(&dir.join("credentials.json"))?;
    let root = dir.join("data");
    let tables = ensure_data(&tools, &root)?;
    network::up()?;

    let component = component(&tools, &credentials, &root);
    let address = SocketAddr::from((HOST_IP, PORT));
    match component.running(&layout) {
        Some(pid) if accepts(address) => {
            progress::info(format!("lake already running (pid {pid}): reusing it"));
        }
        running => {
            if running.is_some() {
                // Running but unreachable (the pod network was rebuilt
                // under it): start it again.
                component.stop(&layout)?;
            }
            let step = progress::step(format!("starting s3s-fs on {address}"));
            let pid = component.start(&layout)?;
            wait_until_accepting(&component, &layout, pid, address)?;
            step.done();
        }
    }
    let lake = Lake {
        endpoint: format!("http://{address}"),
        access_key_id: credentials.access_key_id,
        secret_access_key: credentials.secret_access_key,
        region: REGION.into(),
        bucket: BUCKET.into(),
        root,
        tables,
    };
    write_private(&state_file(), &serde_json::to_vec_pretty(&lake)?)?;
    Ok(lake)
}

/// Stop the server if it runs; returns whether it did.
pub fn stop() -> anyhow::Result<bool> {
    let Ok(tools) = tools_if_installed() else {
        return Ok(false);
    };
    let dir = lake_dir();
    let credentials = match RootCredentials::load(&dir.join("credentials.json")) {
        Ok(credentials) => credentials,
        Err(_) => return Ok(false),
    };
    let stopped = component(&tools, &credentials, &dir.join("data")).stop(&layout())?;
    let _ = std::fs::remove_file(state_file());
    Ok(stopped)
}

fn status() -> anyhow::Result<()> {
    let dir = lake_dir();
    let running = tools_if_installed().ok().and_then(|tools| {
        let credentials = RootCredentials::load(&dir.join("credentials.json")).ok()?;
        component(&tools, &credentials, &dir.join("data")).running(&layout())
    });
    match running {
        Some(pid) => println!(
            "s3s-fs {S3S_FS_VERSION}: running (pid {pid}) on http://{HOST_IP}:{PORT}, reachable: {}",
            accepts(SocketAddr::from((HOST_IP, PORT)))
        ),
        None => println!("s3s-fs {S3S_FS_VERSION}: not running"),
    }
    println!("data:   {}", dir.join("data").display());
    println!("log:    {}", layout().logs.join("s3s-fs.log").display());
    if let Ok(stamp) = read_stamp(&dir.join("data")) {
        for (table, rows) in stamp.tables {
            println!("  s3://{BUCKET}/{table:<32} {rows:>8} rows");
        }
    }
    Ok(())
}

fn print_usage(lake: &Lake) {
    println!("The lake is up: {} (bucket {})", lake.endpoint, lake.bucket);
    println!("  root credentials and tables: {}", state_file().display());
    println!(
        "  AWS_ACCESS_KEY_ID=$(jq -r .access_key_id {0}) AWS_SECRET_ACCESS_KEY=$(jq -r .secret_access_key {0}) \\",
        state_file().display()
    );
    println!(
        "    {} --endpoint-url {} s3 ls s3://{}/ --recursive",
        tools_dir()
            .join(format!("awscli-{AWSCLI_VERSION}/bin/aws"))
            .display(),
        lake.endpoint,
        lake.bucket
    );
}

fn accepts(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

fn wait_until_accepting(
    component: &Component,
    layout: &Layout,
    pid: nix::unistd::Pid,
    address: SocketAddr,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if accepts(address) {
            return Ok(());
        }
        // By pid, not `Component::running`: right after the spawn the child
        // may not have exec'd yet, and its cmdline is still ours.
        let exited = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        });
        if exited {
            bail!(
                "s3s-fs exited; see {}",
                component.log_file(layout).display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "s3s-fs does not accept connections on {address} after 20s; see {}",
                component.log_file(layout).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Tools: installed once per version under <cache>/tools/.

/// Install (once) the S3 server and the clients tests use, and record
/// where they are in `<cache>/tools/lake-tools.json` (tests read it, and
/// fail with a hint to run `cargo xtask lake tools` when it is missing).
pub fn ensure_tools() -> anyhow::Result<Tools> {
    let duckdb_version = duckdb_version()?;
    let tools = Tools {
        s3s_fs: ensure_s3s_fs()?,
        aws: ensure_venv(
            &format!("awscli-{AWSCLI_VERSION}"),
            "aws",
            &[format!("awscli=={AWSCLI_VERSION}")],
        )?,
        duckdb_python: ensure_venv(
            &format!("duckdb-python-{duckdb_version}"),
            "python",
            &[
                format!("duckdb=={duckdb_version}"),
                format!("duckdb-extension-tpch=={duckdb_version}"),
                format!("duckdb-extension-httpfs=={duckdb_version}"),
            ],
        )?,
        duckdb_version,
    };
    let manifest = serde_json::json!({
        "s3s_fs": tools.s3s_fs,
        "aws": tools.aws,
        "duckdb_python": tools.duckdb_python,
        "duckdb_version": tools.duckdb_version,
    });
    let path = tools_dir().join("lake-tools.json");
    if std::fs::read(&path).ok() != Some(serde_json::to_vec_pretty(&manifest)?) {
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(tools)
}

/// The tools' paths, if they are all installed (nothing is installed).
pub fn tools_if_installed() -> anyhow::Result<Tools> {
    let duckdb_version = duckdb_version()?;
    let tools = Tools {
        s3s_fs: s3s_fs_path(),
        aws: tools_dir()
            .join(format!("awscli-{AWSCLI_VERSION}"))
            .join("bin/aws"),
        duckdb_python: tools_dir()
            .join(format!("duckdb-python-{duckdb_version}"))
            .join("bin/python"),
        duckdb_version,
    };
    for path in [&tools.s3s_fs, &tools.aws, &tools.duckdb_python] {
        if !path.exists() {
            bail!(
                "{} is missing: run `cargo xtask lake tools`",
                path.display()
            );
        }
    }
    Ok(tools)
}

/// The workspace's DuckDB release: the one `ui/duckdb-view` pins.
fn duckdb_version() -> anyhow::Result<String> {
    let pins = paths::repo_root().join("ui/duckdb-view/duckdb-runtime.toml");
    let text =
        std::fs::read_to_string(&pins).with_context(|| format!("reading {}", pins.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", pins.display()))?;
    value
        .get("version")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no version", pins.display()))
}

fn s3s_fs_path() -> PathBuf {
    tools_dir()
        .join(format!("s3s-fs-{S3S_FS_VERSION}"))
        .join("bin/s3s-fs")
}

fn ensure_s3s_fs() -> anyhow::Result<PathBuf> {
    let binary = s3s_fs_path();
    if binary.exists() {
        return Ok(binary);
    }
    let root = binary.parent().and_then(Path::parent).expect("bin/s3s-fs");
    let step = progress::step(format!(
        "cargo install s3s-fs {S3S_FS_VERSION} into {} (once; a few minutes on 2 cores)",
        root.display()
    ));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Process::new(cargo)
        .args(["install", "s3s-fs", "--version", S3S_FS_VERSION])
        .args(["--locked", "--features", "binary", "--root"])
        .arg(root)
        // Build in cargo's own temporary directory, not the workspace's.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo install")?;
    if !status.success() || !binary.exists() {
        bail!("cargo install s3s-fs {S3S_FS_VERSION} failed ({status})");
    }
    step.done();
    Ok(binary)
}

/// A virtualenv `<cache>/tools/<name>/` with `packages`, returning its
/// `bin/<program>`. Built in a staging directory and renamed into place,
/// so a failed install is never mistaken for a complete one.
fn ensure_venv(name: &str, program: &str, packages: &[String]) -> anyhow::Result<PathBuf> {
    let venv = tools_dir().join(name);
    let binary = venv.join("bin").join(program);
    if binary.exists() {
        return Ok(binary);
    }
    let step = progress::step(format!(
        "pip install {} into {}",
        packages.join(" "),
        venv.display()
    ));
    std::fs::create_dir_all(tools_dir())?;
    // Virtualenvs record their path: build in place, marked incomplete
    // until pip succeeds.
    let _ = std::fs::remove_dir_all(&venv);
    let status = Process::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed ({status})", venv.display());
    }
    let status = Process::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .context("running pip")?;
    if !status.success() || !binary.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        bail!("pip install {} failed ({status})", packages.join(" "));
    }
    step.done();
    Ok(binary)
}

// ---------------------------------------------------------------------------
// Root credentials: generated once, kept private in the cache.

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RootCredentials {
    access_key_id: String,
    secret_access_key: String,
}

impl RootCredentials {
    fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    fn ensure(path: &Path) -> anyhow::Result<Self> {
        if let Ok(credentials) = Self::load(path) {
            return Ok(credentials);
        }
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let credentials = Self {
            access_key_id: format!("LAKEROOT{}", random_string(12, UPPER)?),
            secret_access_key: random_string(40, ANY)?,
        };
        write_private(path, &serde_json::to_vec_pretty(&credentials)?)?;
        progress::info(format!(
            "generated the lake's root credentials: {}",
            path.display()
        ));
        Ok(credentials)
    }
}

fn random_string(len: usize, alphabet: &[u8]) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // 62 or 32 symbols from a byte: the small modulo bias is irrelevant
    // for local development keys.
    Ok(bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect())
}

/// Write a file readable by its owner only, atomically.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let staging = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)
            .with_context(|| format!("writing {}", staging.display()))?;
        file.write_all(contents)?;
    }
    std::fs::rename(&staging, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Sample data: TPC-H generated by DuckDB, written as Parquet.

/// The generator, run by the DuckDB venv's Python as
/// `python -c GENERATE <out dir> <scale factor>`; prints the row counts as
/// JSON on its last line. One file for both lakes: the k3d example's
/// sample-data Job runs the same script.
const GENERATE: &str = include_str!("../../k3d-example/lake/generate.py");

#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    recipe: String,
    tables: BTreeMap<String, u64>,
}

fn recipe(tools: &Tools) -> String {
    let mut hash = Sha256::new();
    hash.update(GENERATE.as_bytes());
    hash.update(tools.duckdb_version.as_bytes());
    hash.update(SCALE_FACTOR.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn stamp_file(root: &Path) -> PathBuf {
    root.with_extension("stamp.json")
}

fn read_stamp(root: &Path) -> anyhow::Result<Stamp> {
    Ok(serde_json::from_slice(&std::fs::read(stamp_file(root))?)?)
}

/// Generate the sample data into `<root>/lake/` unless the same recipe
/// already did. Written to a staging directory and swapped in whole.
fn ensure_data(tools: &Tools, root: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let recipe = recipe(tools);
    let bucket = root.join(BUCKET);
    if let Ok(stamp) = read_stamp(root)
        && stamp.recipe == recipe
        && bucket.is_dir()
    {
        return Ok(stamp.tables);
    }
    let step = progress::step(format!(
        "generating sample data: TPC-H sf{SCALE_FACTOR} as Parquet (DuckDB {}) into {}",
        tools.duckdb_version,
        bucket.display()
    ));
    std::fs::create_dir_all(root)?;
    let staging = root.with_extension(format!("staging.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let output = Process::new(&tools.duckdb_python)
        .arg("-c")
        .arg(GENERATE)
        .arg(&staging)
        .arg(SCALE_FACTOR)
        .output()
        .context("running the DuckDB generator")?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "generating the sample data failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tables: BTreeMap<String, u64> =
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .with_context(|| format!("reading the generator's row counts from {stdout:?}"))?;
    let _ = std::fs::remove_dir_all(&bucket);
    std::fs::rename(staging.join(BUCKET), &bucket)
        .with_context(|| format!("moving the data into {}", bucket.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    let stamp = Stamp {
        recipe,
        tables: tables.clone(),
    };
    std::fs::write(stamp_file(root), serde_json::to_vec_pretty(&stamp)?)?;
    for (table, rows) in &tables {
        progress::info(format!("s3://{BUCKET}/{table}: {rows} rows"));
    }
    step.done();
    Ok(tables)
}
