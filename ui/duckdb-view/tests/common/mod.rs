//! A real S3 server (s3s-fs) holding small Parquet/CSV/JSON files written by
//! DuckDB itself, and the `duckdb-view` binary started against it, talking
//! HTTP on loopback. Everything is torn down when the fixture is dropped.

#![allow(dead_code)] // Each test binary uses a different part of this.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use duckdb_view::db::Database;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub const ACCESS_KEY: &str = "VIEWTESTKEY";
pub const SECRET_KEY: &str = "view-test-secret-key-0123456789";

/// Rows written per table.
pub const ORDERS: usize = 1500;
pub const CUSTOMERS: usize = 120;
pub const EVENTS: usize = 10;

/// The s3s-fs binary: `$S3S_FS`, or where the tasks install it.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("S3S_FS") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("VIEWS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/views-gateway")
        });
    let path = cache.join("tools/s3s-fs-0.14.1/bin/s3s-fs");
    assert!(
        path.is_file(),
        "s3s-fs 0.14.1 is not at {}: run `cargo xtask lake tools` (cargo xtask test does), or set S3S_FS",
        path.display(),
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "duckdb-view-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Write the lake's objects into s3s-fs's root (bucket = directory): DuckDB
/// generates them, so the test data needs no committed binaries.
fn write_lake(root: &Path) {
    for dir in [
        "lake/sales/orders",
        "lake/sales/events",
        "lake/sales-private",
        "lake/other",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("lake dirs");
    }
    let path = |p: &str| root.join(p).display().to_string().replace('\'', "''");
    let db = Database::open_in_memory(&[("threads", "1".into())]).expect("duckdb");
    let mut conn = db.connect().expect("connect");
    conn.execute_batch(&format!(
        "COPY (SELECT range AS o_id, (range % 97) * 1.5 AS amount, ['north','south','east'][range % 3 + 1] AS region \
               FROM range(0, 1000)) TO '{}' (FORMAT parquet); \
         COPY (SELECT range AS o_id, (range % 97) * 1.5 AS amount, 'west' AS region \
               FROM range(1000, {ORDERS})) TO '{}' (FORMAT parquet); \
         COPY (SELECT range AS c_id, 'customer ' || range AS name FROM range({CUSTOMERS})) TO '{}' (FORMAT csv, HEADER); \
         COPY (SELECT range AS e_id, 'click' AS kind FROM range({EVENTS})) TO '{}' (FORMAT json); \
         COPY (SELECT 'secret salary' AS s) TO '{}' (FORMAT parquet); \
         COPY (SELECT 'other team' AS s) TO '{}' (FORMAT parquet);",
        path("lake/sales/orders/part-0.parquet"),
        path("lake/sales/orders/part-1.parquet"),
        path("lake/sales/customers.csv"),
        path("lake/sales/events/2025.json"),
        path("lake/sales-private/salaries.parquet"),
        path("lake/other/x.parquet"),
    ))
    .expect("writing the test lake");
}

/// The subsets the test view gets: one prefix, four named tables (one of
/// which has no objects yet).
pub fn subsets() -> Value {
    json!([{
        "bucket": "lake",
        "prefixes": ["sales/"],
        "tables": {
            "orders": { "path": "sales/orders/*.parquet", "format": "parquet" },
            "customers": { "path": "sales/customers.csv", "format": "csv" },
            "events": { "path": "sales/events/*.json", "format": "json" },
            "ghosts": { "path": "sales/ghosts/*.parquet", "format": "parquet" }
        }
    }])
}

/// s3s-fs with the test lake, and a running view.
pub struct Fixture {
    pub s3_addr: SocketAddr,
    pub view_addr: SocketAddr,
    pub http: Http,
    /// How long the view took from spawn to ready.
    pub startup: Duration,
    pub view: Process,
    _s3: Process,
    pub dir: TempDir,
}

impl Fixture {
    /// Start with extra environment for the view (e.g. a short timeout).
    pub async fn start(extra_env: &[(&str, &str)]) -> Fixture {
        let dir = TempDir::new("fixture");
        let root = dir.0.join("s3");
        write_lake(&root);

        let s3_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut s3 = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &s3_addr.port().to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("s3s-fs.log")).unwrap())
            .spawn()
            .expect("starting s3s-fs");
        wait_for_port(s3_addr, &mut s3, "s3s-fs");
        let s3 = Process(s3);

        let view_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_duckdb-view"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VIEW_LISTEN", view_addr.to_string())
            .env("VIEW_NAME", "test")
            .env("VIEW_SUBSETS", subsets().to_string())
            .env("AWS_ENDPOINT_URL_S3", format!("http://{s3_addr}"))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("VIEW_THREADS", "2")
            .env("VIEW_MEMORY_LIMIT", "512MB")
            .env("VIEW_MAX_ROWS", "1000")
            .env("VIEW_LOG_FORMAT", "json")
            // The home directory is not writable in a pod: prove nothing needs it.
            .env("HOME", "/nonexistent");
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let log = dir.0.join("view.log");
        let mut view = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting duckdb-view");
        wait_for_port(view_addr, &mut view, "duckdb-view");
        let view = Process(view);
        let http = Http::new(view_addr);

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(reply) = http.get("/healthz").await
                && reply.status == 200
            {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the view did not become ready; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let startup = started.elapsed();
        eprintln!("duckdb-view ready {startup:?} after spawn");
        Fixture {
            s3_addr,
            view_addr,
            http,
            startup,
            view,
            _s3: s3,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("view.log")).unwrap_or_default()
    }

    /// POST /api/query with `{sql}` (JSON answer).
    pub async fn query(&self, sql: &str) -> Reply {
        self.http
            .post_json("/api/query", &json!({ "sql": sql }))
            .await
            .expect("query")
    }
}

/// What a request returned.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// `x-views-identity`, as the gateway's Envoy passes a verified caller.
    identity: Option<String>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Http {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            identity: None,
        }
    }

    /// The same view, called by the person whose verified token has
    /// `claims` (base64url JSON in `x-views-identity`, as Envoy sends it).
    pub fn as_caller(&self, claims: &Value) -> Self {
        use base64::Engine;
        Http {
            identity: Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
            ),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(identity) = &self.identity {
            request = request.header("x-views-identity", identity);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into()))?)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send("GET", path, None, Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send("POST", path, Some("application/json"), body.to_string())
            .await
    }
}
