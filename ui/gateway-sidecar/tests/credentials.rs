//! Scoped, expiring view credentials against a real S3 server (s3s-fs, the
//! lake's server, on a temporary root) with real clients: the AWS CLI,
//! botocore's signer with http.client (raw paths the CLI would not send) and
//! DuckDB (httpfs).
//!
//! Each test starts its own s3s-fs process and its own broker endpoint on
//! 127.0.0.1, so tests are independent and run in parallel. The tools come
//! from `cargo xtask lake tools` (`cargo xtask test` runs it); a missing
//! tool fails the test with that hint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gateway_sidecar::credentials::{
    Broker, Endpoint, InMemoryViews, MasterKey, Upstream, ViewCredentials,
};
use googletest::prelude::*;
use jiff::{SignedDuration, Timestamp};
use tokio::process::Command;

const EU_ORDERS: &str = "order,total\n1,100\n2,250\n";
const US_ORDERS: &str = "order,total\n3,75\n";
const PRIVATE: &str = "name,phone\nAda,555-0100\n";
const SALARIES: &str = "name,salary\nAda,1\n";
const ROOT_KEY: &str = "LAKEROOTTESTKEY";
const ROOT_SECRET: &str = "lake-root-secret-for-tests-only-0123456789";

// ---------------------------------------------------------------------------
// Harness

/// The tools `cargo xtask lake tools` installs and records.
struct Tools {
    s3s_fs: PathBuf,
    aws: PathBuf,
    duckdb_python: PathBuf,
}

use test_support::cache_dir;

fn tools() -> Tools {
    let manifest = cache_dir().join("tools/lake-tools.json");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run `cargo xtask lake tools` (installs s3s-fs, the AWS CLI and DuckDB for Python)",
            manifest.display()
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).expect("lake-tools.json");
    let path = |name: &str| {
        let path = PathBuf::from(json[name].as_str().expect("a path"));
        assert!(
            path.exists(),
            "{} is missing: run `cargo xtask lake tools`",
            path.display()
        );
        path
    };
    Tools {
        s3s_fs: path("s3s_fs"),
        aws: path("aws"),
        duckdb_python: path("duckdb_python"),
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "views-credentials-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

use test_support::random_bytes;

fn sales_subsets() -> serde_json::Value {
    serde_json::json!([{ "bucket": "lake", "prefixes": ["sales/"] }])
}

/// s3s-fs on a temporary root, the broker endpoint in front of it, and two
/// views: `sales` (reads lake/sales/) and `writer` (reads lake/sales/,
/// writes scratch/teams/a/).
struct Harness {
    tools: Tools,
    dir: TempDir,
    lake_root: PathBuf,
    lake: tokio::process::Child,
    broker: Arc<Broker>,
    views: Arc<InMemoryViews>,
    endpoint: String,
    counters: Arc<gateway_sidecar::credentials::Counters>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("views_gateway=info,gateway_sidecar=info")
            .try_init();
        let tools = tools();
        let dir = TempDir::new();
        let lake_root = dir.0.join("root");
        write(
            &lake_root.join("lake/sales/region=eu/orders.csv"),
            EU_ORDERS,
        );
        write(
            &lake_root.join("lake/sales/region=us/orders.csv"),
            US_ORDERS,
        );
        write(&lake_root.join("lake/sales-private/customers.csv"), PRIVATE);
        write(&lake_root.join("lake/hr/salaries.csv"), SALARIES);
        std::fs::create_dir_all(lake_root.join("scratch/teams/a")).expect("scratch");
        write(
            &dir.0.join("aws-config"),
            "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n    signature_version = s3v4\n",
        );

        // The lake: a free port, then s3s-fs on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.0.join("s3s-fs.log")).expect("log");
        let lake = Command::new(&tools.s3s_fs)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ROOT_KEY, "--secret-key", ROOT_SECRET])
            .arg(&lake_root)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting s3s-fs");
        test_support::eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            anyhow::Ok(())
        })
        .await;

        let broker = Arc::new(Broker::new(
            MasterKey::from_bytes(&random_bytes(32)).expect("a master key"),
        ));
        let views = Arc::new(InMemoryViews::new());
        views.insert("sales", serde_json::from_value(sales_subsets()).unwrap());
        views.insert(
            "writer",
            serde_json::from_value(serde_json::json!([
                { "bucket": "lake", "prefixes": ["sales/"] },
                { "bucket": "scratch", "prefixes": ["teams/a/"], "write": true },
            ]))
            .unwrap(),
        );
        let endpoint = Endpoint::new(
            broker.clone(),
            views.clone(),
            &Upstream {
                endpoint: format!("http://127.0.0.1:{port}"),
                access_key_id: ROOT_KEY.into(),
                secret_access_key: ROOT_SECRET.into(),
                region: "us-east-1".into(),
            },
        );
        let counters = endpoint.counters().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(endpoint.serve(listener, async {
            let _ = stop.await;
        }));
        Self {
            tools,
            dir,
            lake_root,
            lake,
            broker,
            views,
            endpoint: format!("http://{address}"),
            counters,
            _shutdown: shutdown,
        }
    }

    /// Credentials for `view`, valid for `ttl` from now.
    fn mint(&self, view: &str, ttl: SignedDuration) -> ViewCredentials {
        self.broker
            .mint(
                view,
                &format!("{view}-activation-1"),
                Timestamp::now() + ttl,
            )
            .expect("minting")
    }

    /// Credentials for `view` that expired a minute ago.
    fn mint_expired(&self, view: &str) -> ViewCredentials {
        let now = Timestamp::now();
        self.broker
            .mint_at(
                view,
                "old-activation",
                now - SignedDuration::from_secs(60),
                now - SignedDuration::from_secs(3600),
            )
            .expect("minting")
    }

    /// The AWS CLI against the broker, signed with `credentials`.
    async fn aws(&self, credentials: &ViewCredentials, args: &[&str]) -> Run {
        self.aws_with(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            args,
        )
        .await
    }

    async fn aws_with(&self, key: &str, secret: &str, args: &[&str]) -> Run {
        let output = Command::new(&self.tools.aws)
            .args(["--endpoint-url", &self.endpoint])
            .args(args)
            .env("AWS_CONFIG_FILE", self.dir.0.join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.0.join("none"))
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .current_dir(&self.dir.0)
            .output()
            .await
            .expect("running the AWS CLI");
        Run::from(output)
    }

    /// A presigned GET URL for `key` made by the AWS CLI.
    async fn presign(&self, credentials: &ViewCredentials, key: &str, expires_in: u32) -> String {
        let run = self
            .aws(
                credentials,
                &[
                    "s3",
                    "presign",
                    &format!("s3://{key}"),
                    "--expires-in",
                    &expires_in.to_string(),
                ],
            )
            .await;
        assert!(run.success, "presign failed: {}", run.stderr);
        run.stdout.trim().to_owned()
    }

    /// A plain GET of `url` (a presigned URL), sent as it is.
    async fn get_url(&self, url: &str) -> Http {
        self.http(&["get", url]).await
    }

    /// A GET SigV4-signed by botocore for `signed_path`, sent with the
    /// request target `wire_path`, byte for byte (no dot-segment removal,
    /// no re-encoding): how an attacker would send a path the CLI would not.
    async fn get_signed(
        &self,
        credentials: &ViewCredentials,
        signed_path: &str,
        wire_path: &str,
    ) -> Http {
        self.get_signed_at(credentials, signed_path, wire_path, 0)
            .await
    }

    /// [`Self::get_signed`] with a signing clock `skew_seconds` off (its
    /// `X-Amz-Date`): a request captured then and replayed now, or signed
    /// by a client whose clock is wrong.
    async fn get_signed_at(
        &self,
        credentials: &ViewCredentials,
        signed_path: &str,
        wire_path: &str,
        skew_seconds: i64,
    ) -> Http {
        self.http(&[
            "signed",
            &credentials.access_key_id,
            &credentials.secret_access_key,
            self.endpoint.trim_start_matches("http://"),
            signed_path,
            wire_path,
            &skew_seconds.to_string(),
        ])
        .await
    }

    /// Raw HTTP through the AWS CLI's own Python (botocore's signer and
    /// http.client).
    async fn http(&self, args: &[&str]) -> Http {
        const SCRIPT: &str = r#"
import sys, http.client, urllib.parse
if sys.argv[1] == "get":
    url = urllib.parse.urlsplit(sys.argv[2])
    host, target, headers = url.netloc, url.path + "?" + url.query, {}
else:
    try:  # the AWS CLI v1 vendors botocore since 1.4x
        from awscli.botocore.auth import S3SigV4Auth
        from awscli.botocore.awsrequest import AWSRequest
        from awscli.botocore.credentials import Credentials
    except ImportError:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    key, secret, host, signed_path, target, skew = sys.argv[2:8]
    import datetime
    auth = sys.modules[S3SigV4Auth.__module__]
    now = auth.get_current_datetime
    auth.get_current_datetime = lambda *a, **k: now(*a, **k) + datetime.timedelta(seconds=int(skew))
    request = AWSRequest(method="GET", url=f"http://{host}{signed_path}")
    S3SigV4Auth(Credentials(key, secret), "s3", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
connection = http.client.HTTPConnection(host, timeout=30)
connection.request("GET", target, headers=headers)
response = connection.getresponse()
sys.stdout.write(f"{response.status}\n{response.read().decode()}")
"#;
        let python = self.tools.aws.with_file_name("python");
        let output = Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .args(args)
            .output()
            .await
            .expect("running the AWS CLI's python");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        Http {
            status: status.parse().unwrap_or(0),
            body: body.to_owned(),
        }
    }

    fn lake_file(&self, key: &str) -> PathBuf {
        self.lake_root.join(key)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.lake.start_kill();
    }
}

/// The outcome of a CLI run.
#[derive(Debug)]
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(output: std::process::Output) -> Self {
        Self {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// An HTTP status and body.
#[derive(Debug)]
struct Http {
    status: u16,
    body: String,
}

fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

// ---------------------------------------------------------------------------
// In-subset access works

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_credentials_list_and_get_in_subset_objects() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));

    let list = h
        .aws(
            &sales,
            &[
                "s3api",
                "list-objects-v2",
                "--bucket",
                "lake",
                "--prefix",
                "sales/",
            ],
        )
        .await;
    expect_that!(list.success, eq(true), "{}", list.stderr);
    expect_that!(
        list.stdout,
        contains_substring("sales/region=eu/orders.csv")
    );
    expect_that!(
        list.stdout,
        contains_substring("sales/region=us/orders.csv")
    );
    expect_that!(list.stdout, not(contains_substring("sales-private")));

    let ls = h
        .aws(&sales, &["s3", "ls", "s3://lake/sales/region=eu/"])
        .await;
    expect_that!(ls.success, eq(true), "{}", ls.stderr);
    expect_that!(ls.stdout, contains_substring("orders.csv"));

    let get = h
        .aws(
            &sales,
            &["s3", "cp", "s3://lake/sales/region=eu/orders.csv", "-"],
        )
        .await;
    expect_that!(get.success, eq(true), "{}", get.stderr);
    expect_that!(get.stdout, eq(EU_ORDERS));

    let head = h
        .aws(
            &sales,
            &[
                "s3api",
                "head-object",
                "--bucket",
                "lake",
                "--key",
                "sales/region=us/orders.csv",
            ],
        )
        .await;
    expect_that!(head.success, eq(true), "{}", head.stderr);
    expect_that!(
        head.stdout,
        contains_substring(format!("\"ContentLength\": {}", US_ORDERS.len()))
    );
    expect_that!(h.counters.snapshot().allowed, ge(4));
}

// ---------------------------------------------------------------------------
// Out-of-subset access is refused

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_prefixes_and_sibling_prefixes_are_refused() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));
    let get = |key: &'static str| {
        let h = &h;
        let sales = &sales;
        async move {
            h.aws(
                sales,
                &[
                    "s3api",
                    "get-object",
                    "--bucket",
                    "lake",
                    "--key",
                    key,
                    "out",
                ],
            )
            .await
        }
    };
    let list = |prefix: &'static str| {
        let h = &h;
        let sales = &sales;
        async move {
            h.aws(
                sales,
                &[
                    "s3api",
                    "list-objects-v2",
                    "--bucket",
                    "lake",
                    "--prefix",
                    prefix,
                ],
            )
            .await
        }
    };

    let other = get("hr/salaries.csv").await;
    expect_that!(other.success, eq(false));
    expect_that!(other.stderr, contains_substring("(AccessDenied)"));
    expect_that!(
        other.stderr,
        contains_substring("outside the view's subsets")
    );

    let sibling = get("sales-private/customers.csv").await;
    expect_that!(sibling.success, eq(false));
    expect_that!(sibling.stderr, contains_substring("(AccessDenied)"));

    let list_other = list("hr/").await;
    expect_that!(list_other.success, eq(false));
    expect_that!(list_other.stderr, contains_substring("(AccessDenied)"));

    let list_sibling = list("sales-private/").await;
    expect_that!(list_sibling.success, eq(false));
    expect_that!(list_sibling.stderr, contains_substring("(AccessDenied)"));

    let list_no_boundary = list("sales").await;
    expect_that!(list_no_boundary.success, eq(false));
    expect_that!(
        list_no_boundary.stderr,
        contains_substring("list within one of: sales/")
    );

    let list_root = h.aws(&sales, &["s3", "ls", "s3://lake/"]).await;
    expect_that!(list_root.success, eq(false));
    expect_that!(list_root.stderr, contains_substring("(AccessDenied)"));

    let list_buckets = h.aws(&sales, &["s3api", "list-buckets"]).await;
    expect_that!(list_buckets.success, eq(false));
    expect_that!(list_buckets.stderr, contains_substring("(AccessDenied)"));

    let other_bucket = h
        .aws(
            &sales,
            &[
                "s3api",
                "list-objects-v2",
                "--bucket",
                "scratch",
                "--prefix",
                "teams/a/",
            ],
        )
        .await;
    expect_that!(other_bucket.success, eq(false));
    expect_that!(other_bucket.stderr, contains_substring("(AccessDenied)"));
    expect_that!(h.lake_file("lake/hr/salaries.csv").exists(), eq(true));
    expect_that!(h.dir.0.join("out").exists(), eq(false));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_encoded_separators_are_refused() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));

    // The signer works: the same kind of request in the subset is answered.
    let control = h
        .get_signed(
            &sales,
            "/lake/sales/region%3Deu/orders.csv",
            "/lake/sales/region%3Deu/orders.csv",
        )
        .await;
    expect_that!(control.status, eq(200), "{}", control.body);
    expect_that!(control.body, eq(EU_ORDERS));

    // Signed as sent: the signature verifies, the policy refuses the key.
    for path in [
        "/lake/sales/../sales-private/customers.csv",
        "/lake/sales/./../hr/salaries.csv",
        "/lake/sales//../hr/salaries.csv",
        "/lake/sales/%252E%252E%252Fhr/salaries.csv",
        "/lake/sales/..%5Csales-private%5Ccustomers.csv",
    ] {
        let refused = h.get_signed(&sales, path, path).await;
        expect_that!(refused.status, eq(403), "{path}: {}", refused.body);
        expect_that!(
            refused.body,
            contains_substring("<Code>AccessDenied</Code>"),
            "{path}"
        );
        expect_that!(refused.body, not(contains_substring("Ada")), "{path}");
    }

    // Signed over the decoded path, sent encoded (%2F for '/', %2E for '.'):
    // s3s decodes the target, so the key still has its '..' and is refused.
    for (signed, sent) in [
        (
            "/lake/sales/../sales-private/customers.csv",
            "/lake/sales/%2E%2E/sales-private/customers.csv",
        ),
        (
            "/lake/sales/../sales-private/customers.csv",
            "/lake/sales/..%2Fsales-private/customers.csv",
        ),
        (
            "/lake/sales/../sales-private/customers.csv",
            "/lake/sales%2F..%2Fsales-private%2Fcustomers.csv",
        ),
    ] {
        let refused = h.get_signed(&sales, signed, sent).await;
        expect_that!(refused.status, eq(403), "{sent}: {}", refused.body);
        expect_that!(
            refused.body,
            contains_substring("<Code>AccessDenied</Code>"),
            "{sent}"
        );
    }

    // Signed over the %2F form as sent: not a valid signature for the key
    // it names, refused before any policy.
    let raw = "/lake/sales/..%2Fsales-private/customers.csv";
    let refused = h.get_signed(&sales, raw, raw).await;
    expect_that!(refused.status, eq(403), "{}", refused.body);
    expect_that!(refused.body, not(contains_substring("Ada")));

    for key in [
        "sales/../sales-private/customers.csv",
        "sales/..%2Fsales-private/customers.csv",
        "sales/%2e%2e/hr/salaries.csv",
    ] {
        let refused = h
            .aws(
                &sales,
                &[
                    "s3api",
                    "get-object",
                    "--bucket",
                    "lake",
                    "--key",
                    key,
                    "out",
                ],
            )
            .await;
        expect_that!(refused.success, eq(false), "{key}");
        expect_that!(
            refused.stderr,
            contains_substring("(AccessDenied)"),
            "{key}"
        );
    }
    let list = h
        .aws(
            &sales,
            &[
                "s3api",
                "list-objects-v2",
                "--bucket",
                "lake",
                "--prefix",
                "sales/../sales-private/",
            ],
        )
        .await;
    expect_that!(list.success, eq(false));
    expect_that!(list.stderr, contains_substring("(AccessDenied)"));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_unless_the_subset_allows_them() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));
    let writer = h.mint("writer", minutes(10));
    write(&h.dir.0.join("new.csv"), "new\n");

    let put = h
        .aws(
            &sales,
            &["s3", "cp", "new.csv", "s3://lake/sales/region=eu/new.csv"],
        )
        .await;
    expect_that!(put.success, eq(false));
    expect_that!(put.stderr, contains_substring("read-only"));
    expect_that!(
        h.lake_file("lake/sales/region=eu/new.csv").exists(),
        eq(false)
    );

    let delete = h
        .aws(
            &sales,
            &[
                "s3api",
                "delete-object",
                "--bucket",
                "lake",
                "--key",
                "sales/region=eu/orders.csv",
            ],
        )
        .await;
    expect_that!(delete.success, eq(false));
    expect_that!(delete.stderr, contains_substring("(AccessDenied)"));
    expect_that!(
        h.lake_file("lake/sales/region=eu/orders.csv").exists(),
        eq(true)
    );

    let multipart = h
        .aws(
            &sales,
            &[
                "s3api",
                "create-multipart-upload",
                "--bucket",
                "lake",
                "--key",
                "sales/big.csv",
            ],
        )
        .await;
    expect_that!(multipart.success, eq(false));
    expect_that!(multipart.stderr, contains_substring("(AccessDenied)"));

    let writable = h
        .aws(
            &writer,
            &["s3", "cp", "new.csv", "s3://scratch/teams/a/new.csv"],
        )
        .await;
    expect_that!(writable.success, eq(true), "{}", writable.stderr);
    expect_that!(
        std::fs::read_to_string(h.lake_file("scratch/teams/a/new.csv")).unwrap_or_default(),
        eq("new\n")
    );

    let sibling = h
        .aws(
            &writer,
            &["s3", "cp", "new.csv", "s3://scratch/teams/ab/new.csv"],
        )
        .await;
    expect_that!(sibling.success, eq(false));
    expect_that!(h.lake_file("scratch/teams/ab/new.csv").exists(), eq(false));

    let read_only_for_writer = h
        .aws(&writer, &["s3", "cp", "new.csv", "s3://lake/sales/new.csv"])
        .await;
    expect_that!(read_only_for_writer.success, eq(false));
    expect_that!(read_only_for_writer.stderr, contains_substring("read-only"));

    let removed = h
        .aws(&writer, &["s3", "rm", "s3://scratch/teams/a/new.csv"])
        .await;
    expect_that!(removed.success, eq(true), "{}", removed.stderr);
    expect_that!(h.lake_file("scratch/teams/a/new.csv").exists(), eq(false));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_from_outside_the_subsets_are_refused_even_when_writable() {
    let h = Harness::start().await;
    let writer = h.mint("writer", minutes(10));
    let copy = |source: &'static str| {
        let h = &h;
        let writer = &writer;
        async move {
            h.aws(
                writer,
                &[
                    "s3api",
                    "copy-object",
                    "--copy-source",
                    source,
                    "--bucket",
                    "scratch",
                    "--key",
                    "teams/a/copy.csv",
                ],
            )
            .await
        }
    };

    let from_other_prefix = copy("lake/hr/salaries.csv").await;
    expect_that!(from_other_prefix.success, eq(false));
    expect_that!(from_other_prefix.stderr, contains_substring("copy source"));

    let from_sibling = copy("lake/sales-private/customers.csv").await;
    expect_that!(from_sibling.success, eq(false));
    expect_that!(from_sibling.stderr, contains_substring("(AccessDenied)"));

    let with_dots = copy("lake/sales/../hr/salaries.csv").await;
    expect_that!(with_dots.success, eq(false));
    expect_that!(with_dots.stderr, contains_substring("(AccessDenied)"));
    expect_that!(h.lake_file("scratch/teams/a/copy.csv").exists(), eq(false));

    let in_subset = copy("lake/sales/region=eu/orders.csv").await;
    expect_that!(in_subset.success, eq(true), "{}", in_subset.stderr);
    expect_that!(
        std::fs::read_to_string(h.lake_file("scratch/teams/a/copy.csv")).unwrap_or_default(),
        eq(EU_ORDERS)
    );
}

// ---------------------------------------------------------------------------
// Expiry, signatures, deletion

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_stop_working_when_the_key_expires() {
    let h = Harness::start().await;
    // X-Amz-Expires asks for an hour; the key lives 10 seconds (enough for
    // the AWS CLI to presign and the first GET on a loaded machine: with 4,
    // a CI run once saw the key expire before that GET).
    let short = h.mint("sales", SignedDuration::from_secs(10));
    let url = h
        .presign(&short, "lake/sales/region=eu/orders.csv", 3600)
        .await;

    let before = h.get_url(&url).await;
    expect_that!(before.status, eq(200), "{}", before.body);
    expect_that!(before.body, eq(EU_ORDERS));

    let after = test_support::eventually(Duration::from_secs(30), || async {
        let response = h.get_url(&url).await;
        anyhow::ensure!(
            response.status != 200,
            "still answered: {}",
            response.status
        );
        Ok(response)
    })
    .await;
    expect_that!(after.status, eq(403));
    expect_that!(after.body, contains_substring("<Code>ExpiredToken</Code>"));
    expect_that!(after.body, not(contains_substring("order,total")));

    let expired = h.mint_expired("sales");
    let url = h
        .presign(&expired, "lake/sales/region=eu/orders.csv", 3600)
        .await;
    let refused = h.get_url(&url).await;
    expect_that!(refused.status, eq(403));
    expect_that!(
        refused.body,
        contains_substring("<Code>ExpiredToken</Code>")
    );
    expect_that!(h.counters.snapshot().expired_key, ge(2));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_refused() {
    let h = Harness::start().await;
    let expired = h.mint_expired("sales");

    let list = h
        .aws(&expired, &["s3", "ls", "s3://lake/sales/region=eu/"])
        .await;
    expect_that!(list.success, eq(false));
    expect_that!(list.stderr, contains_substring("(ExpiredToken)"));
    expect_that!(list.stderr, contains_substring("expired at"));

    let get = h
        .aws(
            &expired,
            &[
                "s3api",
                "get-object",
                "--bucket",
                "lake",
                "--key",
                "sales/region=eu/orders.csv",
                "out",
            ],
        )
        .await;
    expect_that!(get.success, eq(false));
    expect_that!(get.stderr, contains_substring("(ExpiredToken)"));
    expect_that!(h.dir.0.join("out").exists(), eq(false));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_signatures_are_refused() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));

    let url = h
        .presign(&sales, "lake/sales/region=eu/orders.csv", 600)
        .await;
    let (head, signature) = url.rsplit_once("X-Amz-Signature=").expect("a SigV4 URL");
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    let tampered = format!("{head}X-Amz-Signature={flipped}{}", &signature[1..]);
    let refused = h.get_url(&tampered).await;
    expect_that!(refused.status, eq(403));
    expect_that!(
        refused.body,
        contains_substring("<Code>SignatureDoesNotMatch</Code>")
    );

    // The view's key id with a secret that is not its derived one.
    let wrong_secret = h
        .aws_with(
            &sales.access_key_id,
            &"f".repeat(64),
            &["s3", "ls", "s3://lake/sales/region=eu/"],
        )
        .await;
    expect_that!(wrong_secret.success, eq(false));
    expect_that!(
        wrong_secret.stderr,
        contains_substring("(SignatureDoesNotMatch)")
    );

    // Another gateway's master key: its keys name a version (v1, with
    // another tag) that this gateway does not hold.
    let other = Broker::new(MasterKey::from_bytes(&random_bytes(32)).unwrap());
    let forged = other
        .mint("sales", "sales-activation-1", sales.expires_at)
        .unwrap();
    expect_that!(forged.access_key_id, starts_with("vg2_v1-"));
    expect_that!(forged.access_key_id, not(eq(&sales.access_key_id)));
    let forged_run = h
        .aws(&forged, &["s3", "ls", "s3://lake/sales/region=eu/"])
        .await;
    expect_that!(forged_run.success, eq(false));
    expect_that!(
        forged_run.stderr,
        contains_substring("(InvalidAccessKeyId)")
    );
    expect_that!(h.counters.snapshot().bad_signature, eq(2));
    expect_that!(h.counters.snapshot().invalid_key, eq(1));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_signed_more_than_15_minutes_from_now_are_refused() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(60));
    let path = "/lake/sales/region=eu/orders.csv";
    let mut answers = Vec::new();
    for skew in [0, -14 * 60, 14 * 60, -16 * 60, 16 * 60, -3600] {
        let answer = h.get_signed_at(&sales, path, path, skew).await;
        answers.push((
            skew,
            answer.status,
            answer.body.contains("RequestTimeTooSkewed"),
        ));
    }
    // A request replayed (or signed) more than 15 minutes away from the
    // endpoint's clock, either way, is refused with S3's own error.
    expect_that!(
        answers,
        eq(&vec![
            (0, 200, false),
            (-14 * 60, 200, false),
            (14 * 60, 200, false),
            (-16 * 60, 403, true),
            (16 * 60, 403, true),
            (-3600, 403, true),
        ])
    );
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_views_key_is_refused_at_once() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));
    let ls = ["s3", "ls", "s3://lake/sales/region=eu/"];

    let before = h.aws(&sales, &ls).await;
    expect_that!(before.success, eq(true), "{}", before.stderr);

    expect_that!(h.views.remove("sales"), eq(true));
    let after = h.aws(&sales, &ls).await;
    expect_that!(after.success, eq(false));
    expect_that!(after.stderr, contains_substring("(InvalidAccessKeyId)"));
    expect_that!(after.stderr, contains_substring("no longer exists"));

    expect_that!(h.counters.snapshot().view_deleted, eq(1));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_ended_activations_are_refused_when_the_index_tracks_them() {
    let h = Harness::start().await;
    let first = h.mint("sales", minutes(10));
    let ls = ["s3", "ls", "s3://lake/sales/region=eu/"];
    h.views.set_activation("sales", "sales-activation-1");

    let current = h.aws(&first, &ls).await;
    expect_that!(current.success, eq(true), "{}", current.stderr);

    // The view was stopped and started again (or deleted and created anew):
    // the first activation's key no longer works, the new one does.
    h.views.set_activation("sales", "sales-activation-2");
    let ended = h.aws(&first, &ls).await;
    expect_that!(ended.success, eq(false));
    expect_that!(ended.stderr, contains_substring("(InvalidAccessKeyId)"));
    expect_that!(ended.stderr, contains_substring("has ended"));

    let second = h
        .broker
        .mint(
            "sales",
            "sales-activation-2",
            Timestamp::now() + minutes(10),
        )
        .expect("minting");
    let renewed = h.aws(&second, &ls).await;
    expect_that!(renewed.success, eq(true), "{}", renewed.stderr);
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_gateway_did_not_mint_are_refused() {
    let h = Harness::start().await;
    let ls = ["s3", "ls", "s3://lake/sales/region=eu/"];

    let foreign = h
        .aws_with(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            &ls,
        )
        .await;
    expect_that!(foreign.success, eq(false));
    expect_that!(foreign.stderr, contains_substring("(InvalidAccessKeyId)"));

    // The lake's own root key is not a view key either.
    let root = h.aws_with(ROOT_KEY, ROOT_SECRET, &ls).await;
    expect_that!(root.success, eq(false));
    expect_that!(root.stderr, contains_substring("(InvalidAccessKeyId)"));
    expect_that!(h.counters.snapshot().invalid_key, eq(2));
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_version_2_is_refused() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));
    // The AWS CLI v1 presigns with SigV2 (HMAC-SHA1) unless told otherwise.
    write(
        &h.dir.0.join("aws-config"),
        "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
    );
    let url = h
        .presign(&sales, "lake/sales/region=eu/orders.csv", 600)
        .await;
    expect_that!(url, contains_substring("AWSAccessKeyId="));

    let refused = h.get_url(&url).await;
    expect_that!(refused.status, eq(403));
    expect_that!(
        refused.body,
        contains_substring("signature version 2 is refused")
    );
}

// ---------------------------------------------------------------------------
// DuckDB through the broker

/// DuckDB (Python, httpfs loaded from its PyPI package) with the view's
/// credentials as an S3 secret; prints the query's single value or the error.
async fn duckdb(h: &Harness, credentials: &ViewCredentials, sql: &str) -> Run {
    const SCRIPT: &str = r#"
import os, sys, duckdb, duckdb_extension_httpfs
ext = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions",
                   "v" + duckdb.__version__, "httpfs.duckdb_extension")
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute("""CREATE SECRET view (TYPE s3, KEY_ID $key, SECRET $secret, REGION 'us-east-1',
               ENDPOINT $endpoint, URL_STYLE 'path', USE_SSL false)""".replace("$key", repr(sys.argv[1]))
            .replace("$secret", repr(sys.argv[2])).replace("$endpoint", repr(sys.argv[3])))
print(con.execute(sys.argv[4]).fetchone()[0])
"#;
    let output = Command::new(&h.tools.duckdb_python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&credentials.access_key_id)
        .arg(&credentials.secret_access_key)
        .arg(h.endpoint.trim_start_matches("http://"))
        .arg(sql)
        .output()
        .await
        .expect("running DuckDB");
    Run::from(output)
}

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_in_subset_parquet_through_the_broker() {
    let h = Harness::start().await;
    let sales = h.mint("sales", minutes(10));
    // Parquet written by DuckDB itself into the lake's root.
    let eu = h.lake_file("lake/sales/region=eu/part-0.parquet");
    let private = h.lake_file("lake/sales-private/part-0.parquet");
    let written = Command::new(&h.tools.duckdb_python)
        .arg("-c")
        .arg(format!(
            "import duckdb; c = duckdb.connect(); \
             c.execute(\"COPY (SELECT range AS id, range * 2 AS total FROM range(1234)) TO '{}' (FORMAT parquet)\"); \
             c.execute(\"COPY (SELECT 'Ada' AS name) TO '{}' (FORMAT parquet)\")",
            eu.display(),
            private.display()
        ))
        .output()
        .await
        .expect("running DuckDB");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );

    let count = duckdb(
        &h,
        &sales,
        "SELECT count(*) FROM read_parquet('s3://lake/sales/region=eu/*.parquet')",
    )
    .await;
    expect_that!(count.success, eq(true), "{}", count.stderr);
    expect_that!(count.stdout.trim(), eq("1234"));

    let sum = duckdb(
        &h,
        &sales,
        "SELECT sum(total) FROM 's3://lake/sales/region=eu/part-0.parquet'",
    )
    .await;
    expect_that!(sum.success, eq(true), "{}", sum.stderr);
    expect_that!(sum.stdout.trim(), eq((1233 * 1234).to_string()));

    let refused = duckdb(
        &h,
        &sales,
        "SELECT count(*) FROM 's3://lake/sales-private/part-0.parquet'",
    )
    .await;
    expect_that!(refused.success, eq(false));
    expect_that!(refused.stderr, contains_substring("403"));

    let glob_outside = duckdb(
        &h,
        &sales,
        "SELECT count(*) FROM read_parquet('s3://lake/sales-private/*.parquet')",
    )
    .await;
    expect_that!(glob_outside.success, eq(false));
    expect_that!(glob_outside.stderr, contains_substring("403"));
}
