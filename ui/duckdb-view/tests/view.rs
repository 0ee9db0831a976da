//! The view binary against a real S3 server (s3s-fs) with data DuckDB wrote:
//! its catalog, its answers (JSON, Arrow IPC, CSV, Parquet), its lockdown, cancel and
//! timeout, and its handling of malformed requests.

mod common;

use std::time::{Duration, Instant};

use common::{CUSTOMERS, EVENTS, Fixture, ORDERS};
use googletest::prelude::*;
use serde_json::json;

#[gtest]
#[tokio::test]
async fn lists_its_tables_and_answers_in_json_arrow_and_csv() {
    let view = Fixture::start(&[]).await;

    // The catalog: the four tables, three with columns, the one without
    // objects reported unavailable (the view still started).
    let catalog = view.http.get("/api/catalog").await.unwrap();
    expect_that!(catalog.status, eq(200));
    let catalog = catalog.json();
    let tables = catalog["tables"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = tables.iter().filter_map(|t| t["name"].as_str()).collect();
    expect_that!(
        names,
        unordered_elements_are![
            eq(&"orders"),
            eq(&"customers"),
            eq(&"events"),
            eq(&"ghosts")
        ]
    );
    let orders = tables
        .iter()
        .find(|t| t["name"] == "orders")
        .cloned()
        .unwrap_or_default();
    expect_that!(
        orders["source"],
        eq(&json!("s3://lake/sales/orders/*.parquet"))
    );
    let columns: Vec<&str> = orders["columns"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    expect_that!(
        columns,
        elements_are![eq(&"o_id"), eq(&"amount"), eq(&"region")]
    );
    let ghosts = tables
        .iter()
        .find(|t| t["name"] == "ghosts")
        .cloned()
        .unwrap_or_default();
    expect_that!(
        ghosts["error"].as_str().unwrap_or_default(),
        contains_substring("No files found")
    );
    expect_that!(
        catalog["subsets"][0]["prefixes"],
        eq(&json!(["s3://lake/sales/"]))
    );
    expect_that!(catalog["engine"], eq(&json!("DuckDB v1.5.5")));

    // JSON: counts over each table, and a direct read inside the prefix.
    for (sql, expected) in [
        ("SELECT count(*) AS n FROM orders", ORDERS),
        ("SELECT count(*) AS n FROM customers", CUSTOMERS),
        ("SELECT count(*) AS n FROM events", EVENTS),
        (
            "SELECT count(*) AS n FROM read_parquet('s3://lake/sales/orders/*.parquet')",
            ORDERS,
        ),
        ("SELECT count(*) AS n FROM glob('s3://lake/sales/**')", 4),
    ] {
        let reply = view.query(sql).await;
        expect_that!(reply.status, eq(200), "{sql}: {}", reply.text());
        let body = reply.json();
        expect_that!(body["rows"], eq(&json!([[expected]])), "{sql}");
        expect_that!(body["rowCount"], eq(&json!(1)), "{sql}");
        expect_that!(
            body["columns"],
            eq(&json!([{"name": "n", "type": "BIGINT"}])),
            "{sql}"
        );
        expect_that!(body["elapsed"].as_f64().unwrap_or(-1.0), ge(0.0));
    }

    // JSON is cut at VIEW_MAX_ROWS (1000 here) and says so.
    let all = view
        .query("SELECT * FROM orders ORDER BY o_id")
        .await
        .json();
    expect_that!(all["rowCount"], eq(&json!(1000)));
    expect_that!(all["rows"].as_array().map(Vec::len), some(eq(1000)));
    expect_that!(all["truncated"], eq(&json!(true)));
    expect_that!(all["rows"][0], eq(&json!([0, "0.0", "north"])));
    let grouped = view
        .query("SELECT region, count(*) AS n FROM orders GROUP BY region ORDER BY region")
        .await
        .json();
    expect_that!(
        grouped["rows"],
        eq(&json!([
            ["east", 333],
            ["north", 334],
            ["south", 333],
            ["west", 500]
        ]))
    );
    expect_that!(grouped["truncated"], eq(&json!(false)));

    // Arrow IPC stream: every row, no row limit, decoded with arrow-ipc.
    let arrow = view
        .http
        .post_json(
            "/api/query?format=arrow",
            &json!({"sql": "SELECT * FROM orders"}),
        )
        .await
        .unwrap();
    expect_that!(arrow.status, eq(200));
    expect_that!(
        arrow.header("content-type"),
        eq("application/vnd.apache.arrow.stream")
    );
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body.to_vec()), None)
            .unwrap();
    let fields: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    expect_that!(
        fields,
        elements_are![eq("o_id"), eq("amount"), eq("region")]
    );
    let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
    expect_that!(rows, eq(ORDERS));

    // CSV download: a header and every row.
    let csv = view
        .http
        .post_json(
            "/api/query?format=csv",
            &json!({"sql": "SELECT o_id, region FROM orders ORDER BY o_id"}),
        )
        .await
        .unwrap();
    expect_that!(csv.status, eq(200));
    expect_that!(
        csv.header("content-disposition"),
        starts_with("attachment; filename=\"test-")
    );
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    expect_that!(lines.len(), eq(ORDERS + 1));
    expect_that!(lines[0], eq("o_id,region"));
    expect_that!(lines[1], eq("0,north"));

    // Workspace objects the analyst creates appear in the catalog.
    let created = view
        .query("CREATE TABLE top_regions AS SELECT region FROM orders LIMIT 2")
        .await;
    expect_that!(created.status, eq(200), "{}", created.text());
    let catalog = view.http.get("/api/catalog").await.unwrap().json();
    expect_that!(catalog["workspace"][0]["name"], eq(&json!("top_regions")));

    eprintln!("startup to ready: {:?}", view.startup);
}

/// A query that runs until it is stopped.
const ENDLESS: &str = "SELECT sum(hash(i)) FROM range(1000000000000) t(i)";

/// Sends `ENDLESS` as `http`'s caller with id `id` to `path` in the
/// background, and waits until `GET /api/queries` lists it.
async fn start_endless(
    http: &common::Http,
    path: &'static str,
    id: &'static str,
) -> tokio::task::JoinHandle<common::Reply> {
    let sender = http.clone();
    let running = tokio::spawn(async move {
        sender
            .post_json(path, &json!({"sql": ENDLESS, "queryId": id}))
            .await
            .unwrap()
    });
    test_support::eventually(Duration::from_secs(10), || async {
        let list = http.get("/api/queries").await?.json();
        let queries = list["queries"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            queries.iter().any(|q| q["id"] == id),
            "not running yet: {list}"
        );
        Ok(())
    })
    .await;
    running
}

/// The rows of a Parquet answer, read back with arrow-rs's reader.
fn parquet_batches(body: &hyper::body::Bytes) -> Vec<arrow_array::RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body.clone())
        .expect("a Parquet file")
        .build()
        .unwrap()
        .map(|batch| batch.unwrap())
        .collect()
}

#[gtest]
#[tokio::test]
async fn exports_parquet_with_every_row_under_the_same_rules_as_queries() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    let view = Fixture::start(&[]).await;
    let parquet = |sql: &str| {
        let http = view.http.clone();
        let body = json!({ "sql": sql });
        async move {
            http.post_json("/api/query?format=parquet", &body)
                .await
                .unwrap()
        }
    };

    // A lake table: every row, its columns and values, as a download.
    let orders = parquet("SELECT o_id, amount, region FROM orders ORDER BY o_id").await;
    expect_that!(orders.status, eq(200), "{}", orders.text());
    expect_that!(
        orders.header("content-type"),
        eq("application/vnd.apache.parquet")
    );
    expect_that!(
        orders.header("content-disposition"),
        matches_regex(r#"^attachment; filename="test-q\d+\.parquet"$"#)
    );
    let batches = parquet_batches(&orders.body);
    let schema = batches[0].schema();
    let fields: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    expect_that!(
        fields,
        elements_are![eq(&"o_id"), eq(&"amount"), eq(&"region")]
    );
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    expect_that!(rows, eq(ORDERS));
    let regions = arrow_cast::display::ArrayFormatter::try_new(
        batches[0].column(2).as_ref(),
        &Default::default(),
    )
    .unwrap();
    expect_that!(regions.value(0).to_string(), eq("north"));
    expect_that!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        eq(0)
    );

    // Larger than a row group (122,880 rows): streamed in several, all there.
    let big = parquet("SELECT i, i * 2 AS j FROM range(300000) t(i)").await;
    expect_that!(big.status, eq(200), "{}", big.text());
    let batches = parquet_batches(&big.body);
    let (mut count, mut sum) = (0usize, 0i64);
    for batch in &batches {
        count += batch.num_rows();
        sum += batch
            .column(1)
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .sum::<i64>();
    }
    expect_that!(count, eq(300_000));
    expect_that!(sum, eq(299_999 * 300_000));
    let metadata =
        parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&big.body, Default::default())
            .unwrap();
    expect_that!(metadata.metadata().num_row_groups(), eq(3));

    // The query rules hold: the lockdown, the statement policy, COPY … TO.
    let cases = [
        ("SELECT * FROM read_csv('/etc/passwd')", 403, "forbidden"),
        (
            "COPY (SELECT 1) TO '/tmp/out.parquet' (FORMAT parquet)",
            403,
            "forbidden",
        ),
        (
            "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
            403,
            "statement_refused",
        ),
        ("SELEC 1", 400, "sql_error"),
        // A type Parquet lacks: refused before the answer starts, naming it.
        (
            "SELECT 1 AS n, INTERVAL 1 DAY AS span",
            400,
            "unsupported_type",
        ),
    ];
    for (sql, status, code) in cases {
        let reply = parquet(sql).await;
        expect_that!(reply.status, eq(status), "{sql}: {}", reply.text());
        expect_that!(reply.json()["error"], eq(&json!(code)), "{sql}");
    }
    let interval = parquet("SELECT 1 AS n, INTERVAL 1 DAY AS span").await;
    expect_that!(
        interval.json()["message"].as_str().unwrap_or_default(),
        contains_substring("\"span\" is INTERVAL")
    );
    // And nothing was written where the caller asked.
    expect_that!(std::path::Path::new("/tmp/out.parquet").exists(), eq(false));

    // A running export is the caller's query like any other: listed, and
    // stopped by cancel.
    let endless = start_endless(&view.http, "/api/query?format=parquet", "export").await;
    let cancel = view
        .http
        .post_json("/api/cancel", &json!({"queryId": "export"}))
        .await
        .unwrap();
    expect_that!(cancel.json(), eq(&json!({"cancelled": 1})));
    let stopped = endless.await.unwrap();
    expect_that!(stopped.status, eq(409));
    expect_that!(stopped.json()["error"], eq(&json!("cancelled")));
}

/// Every query in `cases` must be refused with 403 and the error `code`,
/// with a message containing the given text.
async fn expect_refused(view: &Fixture, code: &str, cases: &[(&str, &str)]) {
    for (sql, because) in cases {
        let reply = view.query(sql).await;
        expect_that!(reply.status, eq(403), "{sql}: {}", reply.text());
        if reply.status == 403 {
            let body = reply.json();
            expect_that!(body["error"], eq(&json!(code)), "{sql}");
            expect_that!(
                body["message"].as_str().unwrap_or_default(),
                contains_substring(*because),
                "{sql}"
            );
        }
    }
}

#[gtest]
#[tokio::test]
async fn after_lockdown_refuses_local_files_attach_install_set_and_other_s3_paths() {
    let view = Fixture::start(&[]).await;
    let s3 = view.s3_addr;
    let outside_over_http =
        format!("SELECT * FROM read_parquet('http://{s3}/lake/other/x.parquet')");
    // DuckDB's lockdown: paths and URLs outside the subsets.
    expect_refused(
        &view,
        "forbidden",
        &[
            // Local files, however they are read or written.
            ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
            (
                "SELECT * FROM read_text('/etc/hostname')",
                "Permission Error",
            ),
            ("SELECT * FROM glob('/*')", "Permission Error"),
            (
                "COPY (SELECT 1) TO '/tmp/duckdb-view-escape.csv'",
                "Permission Error",
            ),
            // S3 outside the subsets: another prefix, a sibling sharing its
            // first letters, and the same object over plain HTTP.
            (
                "SELECT * FROM read_parquet('s3://lake/other/x.parquet')",
                "Permission Error",
            ),
            (
                "SELECT * FROM read_parquet('s3://lake/sales-private/salaries.parquet')",
                "Permission Error",
            ),
            (
                "SELECT * FROM read_parquet('s3://lake/*/*.parquet')",
                "Permission Error",
            ),
            (&outside_over_http, "Permission Error"),
            (
                "SELECT * FROM read_csv('hf://datasets/someone/something/x.csv')",
                "Permission Error",
            ),
        ],
    )
    .await;
    // The statement policy, by statement type.
    expect_refused(
        &view,
        "statement_refused",
        &[
            // Other databases.
            (
                "ATTACH '/tmp/duckdb-view-escape.duckdb' AS escape",
                "ATTACH and DETACH are not allowed",
            ),
            (
                "ATTACH ':memory:' AS scratch",
                "ATTACH and DETACH are not allowed",
            ),
            // Extensions.
            ("INSTALL httpfs", "INSTALL and LOAD are not allowed"),
            ("LOAD json", "INSTALL and LOAD are not allowed"),
            ("FORCE INSTALL spatial", "INSTALL and LOAD are not allowed"),
            // Configuration.
            (
                "SET enable_external_access = true",
                "SET, RESET and USE are not allowed",
            ),
            ("SET threads = 1", "SET, RESET and USE are not allowed"),
            ("RESET memory_limit", "SET, RESET and USE are not allowed"),
            ("PRAGMA threads = 1", "SET, RESET and USE are not allowed"),
            (
                "SELECT 1; SET allowed_directories = ['/']",
                "SET, RESET and USE are not allowed",
            ),
            ("EXPORT DATABASE 's3://lake/sales/dump'", "EXPORT"),
            // Writes into a read-only subset.
            (
                "COPY (SELECT 1 AS x) TO 's3://lake/sales/out.parquet'",
                "read-only",
            ),
            // Running something later, unchecked.
            (
                "PREPARE p AS SELECT 1",
                "PREPARE and EXECUTE are not allowed",
            ),
        ],
    )
    .await;

    // Nothing was written and the view still works afterwards.
    expect_that!(
        std::path::Path::new("/tmp/duckdb-view-escape.csv").exists(),
        eq(false)
    );
    expect_that!(
        view.dir.0.join("s3/lake/sales/out.parquet").exists(),
        eq(false)
    );
    let settings = view
        .query(
            "SELECT current_setting('enable_external_access') AS external, \
                    current_setting('lock_configuration') AS locked",
        )
        .await
        .json();
    expect_that!(settings["rows"], eq(&json!([[false, true]])));
    let count = view.query("SELECT count(*) FROM orders").await.json();
    expect_that!(count["rows"], eq(&json!([[ORDERS]])));
}

/// What the issue found: any visitor could replace a lake table, drop the
/// view's S3 secret (DuckDB then tried AWS itself) or add one pointing
/// anywhere (DuckDB then sent requests there). Each is refused, changes
/// nothing, and the view keeps reading its lake through its own endpoint.
#[gtest]
#[tokio::test]
async fn refuses_statements_that_change_its_credentials_or_lake_tables() {
    let view = Fixture::start(&[]).await;
    // Where a planted secret would send DuckDB: nothing may connect here.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();

    let plant = format!(
        "CREATE SECRET elsewhere (TYPE s3, KEY_ID 'k', SECRET 's', ENDPOINT '{elsewhere_addr}', \
         USE_SSL false, URL_STYLE 'path', SCOPE 's3://lake/sales/orders/')"
    );
    let replace = format!(
        "CREATE OR REPLACE TEMPORARY SECRET view_s3 (TYPE s3, ENDPOINT '{elsewhere_addr}', \
         USE_SSL false, URL_STYLE 'path')"
    );
    let set_endpoint = format!("SET s3_endpoint = '{elsewhere_addr}'");
    let cases: Vec<(&str, &str)> = vec![
        (&plant, "CREATE SECRET"),
        (&replace, "CREATE SECRET"),
        ("DROP SECRET view_s3", "DROP SECRET"),
        ("DROP TEMPORARY SECRET IF EXISTS view_s3", "DROP SECRET"),
        ("CREATE OR REPLACE VIEW orders AS SELECT 42", "CREATE VIEW"),
        ("DROP VIEW orders", "DROP VIEW"),
        ("ALTER VIEW orders RENAME TO old_orders", "ALTER VIEW"),
        // A declared table that could not be mounted keeps its name too.
        ("CREATE VIEW ghosts AS SELECT 1 AS x", "CREATE VIEW"),
        (
            "CREATE MACRO read_parquet(p) AS TABLE SELECT 42 AS x",
            "CREATE MACRO",
        ),
        // The statements before a refused one run; it does not.
        (
            "CREATE TABLE scratch AS SELECT 1 AS x; DROP SECRET view_s3",
            "DROP SECRET",
        ),
        (&set_endpoint, "SET"),
        ("SET s3_access_key_id = 'someone-elses'", "SET"),
        ("RESET s3_region", "SET"),
        ("BEGIN TRANSACTION", "TRANSACTION"),
    ];
    for (sql, statement) in &cases {
        let reply = view.query(sql).await;
        expect_that!(reply.status, eq(403), "{sql}: {}", reply.text());
        let body = reply.json();
        expect_that!(body["error"], eq(&json!("statement_refused")), "{sql}");
        expect_that!(body["details"]["statement"], eq(&json!(statement)), "{sql}");
        expect_that!(
            body["message"].as_str().unwrap_or_default(),
            starts_with(format!("{statement} refused")),
            "{sql}"
        );
    }
    // DuckDB has no ALTER SECRET: its parser refuses it.
    let alter = view.query("ALTER SECRET view_s3 SET endpoint = 'x'").await;
    expect_that!(alter.status, eq(400));
    expect_that!(alter.json()["error"], eq(&json!("sql_error")));

    // Nothing changed: one secret, still pointing at the lake; the lake
    // tables read through it; the statement before the refused one ran.
    let secrets = view
        .query(&format!(
            "SELECT name, contains(secret_string, 'endpoint={}') AS ours FROM duckdb_secrets()",
            view.s3_addr
        ))
        .await;
    expect_that!(secrets.json()["rows"], eq(&json!([["view_s3", true]])));
    let count = view.query("SELECT count(*) FROM orders").await;
    expect_that!(
        count.json()["rows"],
        eq(&json!([[ORDERS]])),
        "{}",
        count.text()
    );
    let ghosts = view.query("SELECT * FROM ghosts").await;
    expect_that!(ghosts.status, eq(400));
    let scratch = view.query("SELECT x FROM scratch").await;
    expect_that!(scratch.json()["rows"], eq(&json!([[1]])));
    expect_that!(
        elsewhere.accept().map(|_| ()).err().map(|e| e.kind()),
        some(eq(std::io::ErrorKind::WouldBlock)),
        "DuckDB connected to the planted endpoint"
    );

    // Analysts' own objects are fine, TEMP ones for the request that makes
    // them (each request has its own connection): shadowing a lake table
    // there changes nothing for the next request or anybody else.
    let own = view
        .query(
            "CREATE TABLE mine AS SELECT region FROM orders LIMIT 3; \
             CREATE VIEW my_regions AS SELECT DISTINCT region FROM mine; \
             CREATE MACRO twice(x) AS x * 2; \
             SELECT twice(count(*)) AS n FROM my_regions",
        )
        .await;
    expect_that!(own.status, eq(200), "{}", own.text());
    let shadowed = view
        .query("CREATE TEMP VIEW orders AS SELECT 42 AS x; SELECT * FROM orders")
        .await;
    expect_that!(
        shadowed.json()["rows"],
        eq(&json!([[42]])),
        "{}",
        shadowed.text()
    );
    let count = view.query("SELECT count(*) FROM orders").await;
    expect_that!(count.json()["rows"], eq(&json!([[ORDERS]])));
    let dropped = view.query("DROP VIEW my_regions; DROP TABLE mine").await;
    expect_that!(dropped.status, eq(200), "{}", dropped.text());
}

#[gtest]
#[tokio::test]
async fn cancels_a_running_query_and_stops_one_past_the_statement_timeout() {
    // With a spill directory, so the local file system stays enabled: the
    // lockdown must hold without disabling it.
    let spill = common::TempDir::new("spill");
    let spill_dir = spill.0.display().to_string();
    let view = Fixture::start(&[
        ("VIEW_STATEMENT_TIMEOUT", "3s"),
        ("VIEW_TEMP_DIR", &spill_dir),
    ])
    .await;
    expect_refused(
        &view,
        "forbidden",
        &[("SELECT * FROM read_csv('/etc/passwd')", "Permission Error")],
    )
    .await;

    // Cancel: start a query with our own id, see it listed, cancel it.
    let running = start_endless(&view.http, "/api/query", "endless-1").await;
    // The id is taken while it runs.
    let duplicate = view
        .http
        .post_json(
            "/api/query",
            &json!({"sql": "SELECT 1", "queryId": "endless-1"}),
        )
        .await
        .unwrap();
    expect_that!(duplicate.status, eq(409));
    let cancelled_at = Instant::now();
    let cancel = view
        .http
        .post_json("/api/cancel", &json!({"queryId": "endless-1"}))
        .await
        .unwrap();
    expect_that!(cancel.json(), eq(&json!({"cancelled": 1})));
    let reply = running.await.unwrap();
    expect_that!(reply.status, eq(409));
    expect_that!(reply.json()["error"], eq(&json!("cancelled")));
    expect_that!(cancelled_at.elapsed(), lt(Duration::from_secs(2)));

    // Timeout: the same query is stopped after VIEW_STATEMENT_TIMEOUT.
    let started = Instant::now();
    let reply = view.query(ENDLESS).await;
    let took = started.elapsed();
    expect_that!(reply.status, eq(422));
    expect_that!(reply.json()["error"], eq(&json!("timeout")));
    expect_that!(took, ge(Duration::from_secs(3)));
    expect_that!(took, lt(Duration::from_secs(8)));

    // And the view keeps answering.
    let after = view.query("SELECT 42 AS answer").await.json();
    expect_that!(after["rows"], eq(&json!([[42]])));
    let idle = view.http.get("/api/queries").await.unwrap().json();
    expect_that!(idle["queries"], eq(&json!([])));
}

#[gtest]
#[tokio::test]
async fn timestamps_with_time_zones_answer_in_json_and_csv() {
    // DuckDB's session time zone is a name (`Etc/UTC`, or the machine's):
    // converting its TIMESTAMPTZ columns needs the time zone database.
    let view = Fixture::start(&[]).await;
    let sql = "SELECT TIMESTAMPTZ '2024-01-01 10:00:00+02' AS t, now() IS NOT NULL AS has_now";
    let json = view.query(sql).await;
    expect_that!(json.status, eq(200), "{}", json.text());
    expect_that!(
        json.json()["rows"],
        eq(&json!([["2024-01-01T08:00:00Z", true]]))
    );
    let csv = view
        .http
        .post_json("/api/query?format=csv", &json!({ "sql": sql }))
        .await
        .unwrap();
    expect_that!(csv.status, eq(200), "{}", csv.text());
    expect_that!(csv.text(), eq("t,has_now\n2024-01-01T08:00:00Z,true\n"));
}

#[gtest]
#[tokio::test]
async fn people_sharing_a_view_see_and_cancel_only_their_own_queries() {
    let view = Fixture::start(&[]).await;
    let ana = view
        .http
        .as_caller(&json!({"sub": "ana-1", "groups": ["analysts"]}));
    let bob = view
        .http
        .as_caller(&json!({"sub": "bob-2", "groups": ["analysts"]}));
    let running = start_endless(&ana, "/api/query", "mine").await;

    // Bob sees none of it, cannot stop it, and may use the same id himself.
    let theirs = bob.get("/api/queries").await.unwrap().json();
    expect_that!(theirs["queries"], eq(&json!([])));
    let cancel_one = bob
        .post_json("/api/cancel", &json!({"queryId": "mine"}))
        .await
        .unwrap();
    expect_that!(cancel_one.json(), eq(&json!({"cancelled": 0})));
    let cancel_all = bob.post_json("/api/cancel", &json!({})).await.unwrap();
    expect_that!(cancel_all.json(), eq(&json!({"cancelled": 0})));
    let same_id = bob
        .post_json(
            "/api/query",
            &json!({"sql": "SELECT 1 AS one", "queryId": "mine"}),
        )
        .await
        .unwrap();
    expect_that!(same_id.status, eq(200), "{}", same_id.text());
    // Nor does a caller without an identity.
    let nobody = view.http.get("/api/queries").await.unwrap().json();
    expect_that!(nobody["queries"], eq(&json!([])));

    // Ana's query ran on all along; she stops it.
    let still = ana.get("/api/queries").await.unwrap().json();
    expect_that!(still["queries"][0]["id"], eq(&json!("mine")));
    let cancel = ana
        .post_json("/api/cancel", &json!({"queryId": "mine"}))
        .await
        .unwrap();
    expect_that!(cancel.json(), eq(&json!({"cancelled": 1})));
    let reply = running.await.unwrap();
    expect_that!(reply.json()["error"], eq(&json!("cancelled")));
}

#[gtest]
#[tokio::test]
async fn answers_every_malformed_request_with_a_json_error() {
    let view = Fixture::start(&[]).await;
    let http = &view.http;

    let bad_sql = view.query("SELEC 1").await;
    expect_that!(bad_sql.status, eq(400));
    expect_that!(bad_sql.json()["error"], eq(&json!("sql_error")));
    expect_that!(
        bad_sql.json()["message"].as_str().unwrap_or_default(),
        contains_substring("Parser Error")
    );
    let unknown = view.query("SELECT * FROM nowhere").await;
    expect_that!(unknown.status, eq(400));
    expect_that!(
        unknown.json()["message"].as_str().unwrap_or_default(),
        contains_substring("Catalog Error")
    );
    let missing_object = view
        .query("SELECT * FROM read_parquet('s3://lake/sales/nothing.parquet')")
        .await;
    expect_that!(missing_object.status, eq(400), "{}", missing_object.text());

    // (method, path, content type, body, status, error code)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/query",
            None,
            br#"{"sql":"SELECT 1"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/query",
            Some("text/plain"),
            b"SELECT 1".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            b"{not json".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            br#"{"sql": 1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            br#"{"sql":"SELECT 1","x":1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            br#"{"sql":"   "}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            b"".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            br#"{"sql":"SELECT '\u0000'"}"#.to_vec(),
            400,
            "sql_error",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            b"\xff\xfe".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query?format=xml",
            Some("application/json"),
            br#"{"sql":"SELECT 1"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            br#"{"sql":"SELECT 1","queryId":"no spaces"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/query",
            Some("application/json"),
            format!(r#"{{"sql":"SELECT '{}'"}}"#, "x".repeat(2 << 20)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "GET",
            "/api/query",
            None,
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        ("GET", "/nothing/here", None, Vec::new(), 404, "not_found"),
        (
            "POST",
            "/api/cancel",
            None,
            Vec::new(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let reply = http.send(method, path, content_type, body).await.unwrap();
        expect_that!(
            reply.status,
            eq(status),
            "{method} {path}: {}",
            reply.text()
        );
        expect_that!(reply.json()["error"], eq(&json!(code)), "{method} {path}");
    }

    // Cancel with nothing running is fine; so is an empty JSON body.
    let cancel = http
        .send("POST", "/api/cancel", Some("application/json"), "")
        .await
        .unwrap();
    expect_that!(cancel.json(), eq(&json!({"cancelled": 0})));

    // The page: self-contained, with a policy that forbids anything else.
    let page = http.get("/").await.unwrap();
    expect_that!(page.status, eq(200));
    expect_that!(page.header("content-type"), starts_with("text/html"));
    expect_that!(page.text(), contains_substring("static/app.js"));
    expect_that!(page.text(), not(contains_substring("http://")));
    expect_that!(page.text(), not(contains_substring("https://")));
    expect_that!(
        page.header("content-security-policy"),
        contains_substring("default-src 'none'")
    );
    for asset in ["/static/app.js", "/static/style.css"] {
        let reply = http.get(asset).await.unwrap();
        expect_that!(reply.status, eq(200), "{asset}");
        expect_that!(reply.text(), not(contains_substring("https://")), "{asset}");
    }
    let health = http.get("/healthz").await.unwrap();
    expect_that!(health.json(), eq(&json!({"status": "ready"})));

    // Still healthy, and the process never panicked.
    let ok = view.query("SELECT 1 AS one").await;
    expect_that!(ok.status, eq(200));
    expect_that!(view.log(), not(contains_substring("panicked")));
}
