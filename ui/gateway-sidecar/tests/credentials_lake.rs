//! View credentials over the sample lake `cargo xtask lake up` runs
//! (s3s-fs on the pod network with TPC-H sf0.01 as Parquet): DuckDB reads a
//! view's tables through the broker with the expected row counts, is refused
//! outside them, and a representative aggregate (TPC-H Q1) is timed direct
//! against the lake and through the credential path.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_sidecar::credentials::{
    Broker, Endpoint, InMemoryViews, MasterKey, Upstream, ViewCredentials,
};
use googletest::prelude::*;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::process::Command;

use test_support::cache_dir;

fn read_json(path: PathBuf, hint: &str) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run `{hint}`", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// DuckDB (Python + httpfs) with an S3 secret, in a fresh process; prints
/// the first value of each query and the seconds it took, one query a line.
async fn duckdb(
    python: &str,
    endpoint: &str,
    key: &str,
    secret: &str,
    queries: &[&str],
) -> (bool, String, String) {
    const SCRIPT: &str = r#"
import json, os, sys, time, duckdb, duckdb_extension_httpfs
ext = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions",
                   "v" + duckdb.__version__, "httpfs.duckdb_extension")
key, secret, endpoint, queries = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"CREATE SECRET lake (TYPE s3, KEY_ID '{key}', SECRET '{secret}', REGION 'us-east-1', "
            f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)")
for query in queries:
    started = time.monotonic()
    value = con.execute(query).fetchone()[0]
    print(f"{value}\t{time.monotonic() - started:.3f}")
"#;
    let output = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args([key, secret, endpoint.trim_start_matches("http://")])
        .arg(serde_json::to_string(queries).expect("JSON"))
        .output()
        .await
        .expect("running DuckDB");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const Q1: &str = "SELECT count(*) FROM (
    SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice),
           sum(l_extendedprice * (1 - l_discount)), avg(l_quantity), avg(l_discount), count(*)
    FROM 's3://lake/tpch/sf0.01/lineitem/*.parquet'
    WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL 90 DAY
    GROUP BY ALL)";

#[gtest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_sample_lake_through_view_credentials() {
    let lake = read_json(cache_dir().join("lake/lake.json"), "cargo xtask lake up");
    let tools = read_json(
        cache_dir().join("tools/lake-tools.json"),
        "cargo xtask lake tools",
    );
    let python = tools["duckdb_python"].as_str().expect("python");
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    let rows = |table: &str| {
        lake["tables"][table]
            .as_u64()
            .expect("row count")
            .to_string()
    };

    let broker = Arc::new(Broker::new(
        MasterKey::from_bytes(b"a master key for this test only, 32+ bytes").unwrap(),
    ));
    let views = Arc::new(InMemoryViews::new());
    views.insert(
        "tpch",
        serde_json::from_value(serde_json::json!([
            { "bucket": "lake", "prefixes": ["tpch/sf0.01/"] }
        ]))
        .unwrap(),
    );
    views.insert(
        "eu",
        serde_json::from_value(serde_json::json!([
            { "bucket": "lake", "prefixes": ["sales/region=eu/"] }
        ]))
        .unwrap(),
    );
    let endpoint = Endpoint::new(
        broker.clone(),
        views,
        &Upstream {
            endpoint: text(&lake["endpoint"]),
            access_key_id: text(&lake["access_key_id"]),
            secret_access_key: text(&lake["secret_access_key"]),
            region: text(&lake["region"]),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(endpoint.serve(listener, std::future::pending()));
    let mint = |view: &str| -> ViewCredentials {
        broker
            .mint(
                view,
                "activation-1",
                Timestamp::now() + SignedDuration::from_mins(10),
            )
            .unwrap()
    };
    let (tpch, eu) = (mint("tpch"), mint("eu"));

    let (ok, out, err) = duckdb(
        python,
        &address,
        &tpch.access_key_id,
        &tpch.secret_access_key,
        &[
            "SELECT count(*) FROM 's3://lake/tpch/sf0.01/lineitem/*.parquet'",
            "SELECT count(*) FROM 's3://lake/tpch/sf0.01/orders/orders.parquet'",
        ],
    )
    .await;
    expect_that!(ok, eq(true), "{err}");
    let values = first_column(&out);
    expect_that!(values.first(), some(eq(&rows("tpch/sf0.01/lineitem/"))));
    expect_that!(values.get(1), some(eq(&rows("tpch/sf0.01/orders/"))));

    let (ok, out, err) = duckdb(
        python,
        &address,
        &eu.access_key_id,
        &eu.secret_access_key,
        &["SELECT count(*) FROM read_parquet('s3://lake/sales/region=eu/*.parquet')"],
    )
    .await;
    expect_that!(ok, eq(true), "{err}");
    expect_that!(
        first_column(&out).first(),
        some(eq(&rows("sales/region=eu/")))
    );

    for outside in [
        "SELECT count(*) FROM read_parquet('s3://lake/sales/region=us/*.parquet')",
        "SELECT count(*) FROM 's3://lake/sales-private/customers.parquet'",
        "SELECT count(*) FROM 's3://lake/tpch/sf0.01/lineitem/lineitem.parquet'",
    ] {
        let (ok, _, err) = duckdb(
            python,
            &address,
            &eu.access_key_id,
            &eu.secret_access_key,
            &[outside],
        )
        .await;
        expect_that!(ok, eq(false), "{outside}");
        expect_that!(err, contains_substring("403"), "{outside}");
    }

    // TPC-H Q1 over lineitem, direct and through the broker: each run is a
    // fresh DuckDB (cold: the Parquet is fetched), then the same query again
    // in that process (warm: DuckDB's caches). Best of 3, reported, not
    // asserted: timings on a shared 2-core machine are noisy.
    let (mut direct, mut brokered) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..3 {
        let (ok, out, err) = duckdb(
            python,
            &text(&lake["endpoint"]),
            &text(&lake["access_key_id"]),
            &text(&lake["secret_access_key"]),
            &[Q1, Q1],
        )
        .await;
        expect_that!(ok, eq(true), "{err}");
        direct.push(seconds(&out));
        let (ok, out, err) = duckdb(
            python,
            &address,
            &tpch.access_key_id,
            &tpch.secret_access_key,
            &[Q1, Q1],
        )
        .await;
        expect_that!(ok, eq(true), "{err}");
        expect_that!(first_column(&out).first(), some(eq("4")));
        brokered.push(seconds(&out));
    }
    let best = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        runs.iter().map(pick).fold(f64::INFINITY, f64::min)
    };
    eprintln!(
        "TPC-H Q1 over sf0.01 lineitem (1.8 MB Parquet), best of 3: \
         cold direct {:.3}s, cold through view credentials {:.3}s; \
         warm direct {:.3}s, warm through view credentials {:.3}s ({:.1?} in all)",
        best(&direct, |r| r.0),
        best(&brokered, |r| r.0),
        best(&direct, |r| r.1),
        best(&brokered, |r| r.1),
        started.elapsed()
    );
    expect_that!(started.elapsed(), lt(Duration::from_secs(120)));
}

fn first_column(out: &str) -> Vec<String> {
    out.lines()
        .map(|line| line.split('\t').next().unwrap_or("").to_owned())
        .collect()
}

/// The seconds of the first two queries of a run.
fn seconds(out: &str) -> (f64, f64) {
    let times: Vec<f64> = out
        .lines()
        .map(|line| {
            line.split('\t')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0)
        })
        .collect();
    (
        times.first().copied().unwrap_or(0.0),
        times.get(1).copied().unwrap_or(0.0),
    )
}
