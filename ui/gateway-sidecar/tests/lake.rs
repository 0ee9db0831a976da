//! The lake browser (`/_api/lake…`) end to end: the real OpenID Connect
//! provider's tokens, the real Envoy, the sidecar reading the real lake
//! (`cargo xtask lake up`: s3s-fs with the sample data) with its own keys.
//! ana (analysts) browses and previews `sales/`, never `sales-private/` or
//! `tpch/`; bob (finance) does; what an attacker tries is refused before the
//! lake is asked; every answer is as the OpenAPI document says.
//!
//! The test's own objects (a CSV, a CSV whose first line is 3 MiB, text in a
//! `.parquet`, 1,200 objects to page through) go under prefixes of this
//! test's namespace, granted in this test's entitlements only, and are
//! removed afterwards.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use gateway_sidecar::credentials::{Upstream, s3_client};
use googletest::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::gateway::Gateway;
use test_support::openapi::as_documented;
use test_support::proxy::TcpProxy;
use test_support::{TestNamespace, cache_dir, oidc};

const ENTITLEMENTS: &str = "views-gateway-entitlements";
/// Objects under the test's own many/ prefix: more than one listing page.
const MANY: usize = 1200;

/// The running sample lake and its root keys (`cargo xtask lake up`).
fn lake() -> Upstream {
    let path = cache_dir().join("lake/lake.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run `cargo xtask lake up`", path.display()));
    let lake: Value = serde_json::from_str(&text).expect("lake.json");
    let text = |key: &str| lake[key].as_str().expect(key).to_owned();
    Upstream {
        endpoint: text("endpoint"),
        access_key_id: text("access_key_id"),
        secret_access_key: text("secret_access_key"),
        region: text("region"),
    }
}

/// The sidecar's settings for the lake at `endpoint`.
fn lake_settings<'a>(upstream: &'a Upstream, endpoint: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("LAKE_ENDPOINT_URL", endpoint),
        ("LAKE_REGION", &upstream.region),
        ("LAKE_ACCESS_KEY_ID", &upstream.access_key_id),
        ("LAKE_SECRET_ACCESS_KEY", &upstream.secret_access_key),
    ]
}

async fn token(user: &str) -> String {
    oidc::token(user, "views-cli", "urn:views-gateway")
        .await
        .unwrap_or_else(|e| panic!("a token for {user}: {e:#}"))
}

/// GET `path` as `token`; the status and the body.
async fn get(gateway: &Gateway, token: Option<&str>, path: &str) -> (StatusCode, String) {
    let mut request = gateway.client().get(gateway.url("localhost", path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    (response.status(), response.text().await.unwrap_or_default())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Puts the test's objects under `<mine>/` and `<mine>-private/`.
async fn put_objects(client: &aws_sdk_s3::Client, mine: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut put = async |key: String, body: Vec<u8>| {
        client
            .put_object()
            .bucket("lake")
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("putting {key}: {e:?}"));
        keys.push(key);
    };
    put(
        format!("{mine}/orders.csv"),
        b"id;city;amount\n1;Oslo;10.5\n2;\"Rome; Italy\";7\n3;Lima;\n".to_vec(),
    )
    .await;
    let mut long = b"a,".to_vec();
    long.resize(3 * 1024 * 1024, b'x');
    long.extend_from_slice(b"\n1,2\n");
    put(format!("{mine}/long-line.csv"), long).await;
    put(
        format!("{mine}/fake.parquet"),
        b"this is not Parquet at all, just text, PAR1".to_vec(),
    )
    .await;
    put(
        format!("{mine}/events.json"),
        b"{\"id\":1,\"kind\":\"open\"}\n{\"id\":2,\"kind\":null,\"extra\":[1,2]}\n".to_vec(),
    )
    .await;
    put(format!("{mine}-private/secret.csv"), b"a\n1\n".to_vec()).await;
    let many: Vec<_> = (0..MANY)
        .map(|i| {
            let key = format!("{mine}/many/object-{i:05}.csv");
            let client = client.clone();
            async move {
                client
                    .put_object()
                    .bucket("lake")
                    .key(&key)
                    .body(ByteStream::from_static(b"a\n1\n"))
                    .send()
                    .await
                    .map(|_| key)
            }
        })
        .collect();
    for chunk in futures::future::join_all(many).await {
        keys.push(chunk.expect("putting one of many"));
    }
    keys
}

#[gtest]
#[tokio::test]
async fn people_browse_and_preview_only_what_they_may_read() {
    let upstream = lake();
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    // The test's own prefixes: `<ns>/` for analysts, `<ns>-private/` (a
    // sibling sharing its text) for finance only.
    let mine = format!("browse-{}", namespace.name());
    let grants = format!(
        "grants:\n\
         - groups: [analysts]\n  bucket: lake\n  prefixes: [sales/, {mine}/]\n\
         - groups: [finance]\n  bucket: lake\n  prefixes: [tpch/, sales-private/, {mine}-private/]\n"
    );
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": ENTITLEMENTS},
        "data": {"entitlements.yaml": grants},
    }))
    .expect("ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), namespace.name())
        .patch(
            ENTITLEMENTS,
            &PatchParams::apply("lake-test").force(),
            &Patch::Apply(&config_map),
        )
        .await
        .expect("entitlements");
    let lake_client = s3_client(&upstream);
    let keys = put_objects(&lake_client, &mine).await;

    let issuer = oidc::provider().issuer;
    let mut settings = vec![("OIDC_ISSUER", issuer.as_str())];
    settings.extend(lake_settings(&upstream, &upstream.endpoint));
    let gateway = Gateway::start_with("lake", namespace.name(), &settings).await;
    let (ana, bob) = (token("ana").await, token("bob").await);
    let (_, document) = get(&gateway, Some(&ana), "/_api/openapi.json").await;
    let document = json_of(&document);
    let bytes_before = gateway
        .metric("views_gateway_lake_preview_bytes_read_total", "")
        .await;

    // Every call: its answer as documented, and (status, body) to look at.
    let mut calls = Vec::new();
    let mut call = async |who: Option<&str>, template: &'static str, path: String| {
        let (status, body) = get(&gateway, who, &path).await;
        expect_that!(
            as_documented(&document, &Method::GET, template, status, &body),
            ok(anything()),
            "{path}"
        );
        calls.push(format!("{path} {}", status.as_u16()));
        (status, json_of(&body))
    };
    const ROOTS: &str = "/_api/lake";
    const LIST: &str = "/_api/lake/{bucket}";
    const PREVIEW: &str = "/_api/lake/{bucket}/preview";

    // ana: where she may start, one level at a time, and previews.
    let (status, roots) = call(Some(&ana), ROOTS, "/_api/lake".into()).await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        roots["roots"],
        eq(
            &json!([{"bucket": "lake", "prefixes": [format!("{mine}/"), "sales/"], "access": "read"}])
        )
    );
    let (status, sales) = call(Some(&ana), LIST, "/_api/lake/lake?prefix=sales/".into()).await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        sales["prefixes"],
        eq(&json!([
            "sales/region=africa/",
            "sales/region=asia/",
            "sales/region=eu/",
            "sales/region=mideast/",
            "sales/region=us/"
        ]))
    );
    let (_, eu) = call(
        Some(&ana),
        LIST,
        "/_api/lake/lake?prefix=sales/region%3Deu/".into(),
    )
    .await;
    expect_that!(
        eu["objects"][0]["key"],
        eq(&json!("sales/region=eu/data_0.parquet"))
    );
    let eu_size = eu["objects"][0]["size"].as_u64().unwrap_or(0);
    expect_that!(eu_size, gt(0));

    let (status, rows) = call(
        Some(&ana),
        PREVIEW,
        "/_api/lake/lake/preview?path=sales/region%3Deu/data_0.parquet&format=parquet&rows=5"
            .into(),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(rows["rows"].as_array().map(Vec::len), some(eq(5)));
    expect_that!(rows["columns"].as_array().map(Vec::len), some(gt(2)));
    expect_that!(rows["columns"][0]["name"], eq(&json!("order_key")));
    expect_that!(rows["bytesRead"].as_u64(), some(le(eu_size)));
    // A glob: its first key in key order, as DuckDB would read it.
    let (status, glob) = call(
        Some(&ana),
        PREVIEW,
        "/_api/lake/lake/preview?path=sales/**/*.parquet&format=parquet".into(),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        glob["key"],
        eq(&json!("sales/region=africa/data_0.parquet"))
    );
    expect_that!(glob["rows"].as_array().map(Vec::len), some(eq(20)));
    // CSV (delimiter sniffed, quotes, an empty value) and JSON lines.
    let (status, csv) = call(
        Some(&ana),
        PREVIEW,
        format!("/_api/lake/lake/preview?path={mine}/orders.csv&format=csv"),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        csv["columns"],
        eq(&json!([{"name": "id"}, {"name": "city"}, {"name": "amount"}]))
    );
    expect_that!(
        csv["rows"],
        eq(&json!([
            ["1", "Oslo", "10.5"],
            ["2", "Rome; Italy", "7"],
            ["3", "Lima", ""]
        ]))
    );
    let (status, events) = call(
        Some(&ana),
        PREVIEW,
        format!("/_api/lake/lake/preview?path={mine}/events.json&format=json"),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        events["rows"],
        eq(&json!([["1", "open", null], ["2", null, "[1,2]"]]))
    );

    // A huge listing comes in pages of at most 1000.
    let (_, first) = call(
        Some(&ana),
        LIST,
        format!("/_api/lake/lake?prefix={mine}/many/"),
    )
    .await;
    expect_that!(first["objects"].as_array().map(Vec::len), some(eq(1000)));
    let next = first["next"].as_str().unwrap_or_default().to_owned();
    expect_that!(next, not(eq("")));
    let (_, second) = call(
        Some(&ana),
        LIST,
        format!("/_api/lake/lake?prefix={mine}/many/&after={next}"),
    )
    .await;
    expect_that!(
        second["objects"].as_array().map(Vec::len),
        some(eq(MANY - 1000))
    );
    expect_that!(second["next"], eq(&Value::Null));

    // Bytes that are not what they claim: refused with the reason, bounded.
    let (status, fake) = call(
        Some(&ana),
        PREVIEW,
        format!("/_api/lake/lake/preview?path={mine}/fake.parquet&format=parquet"),
    )
    .await;
    expect_that!(status, eq(StatusCode::UNPROCESSABLE_ENTITY));
    expect_that!(fake["details"]["reason"], eq(&json!("not_parquet")));
    let before_long = gateway
        .metric("views_gateway_lake_preview_bytes_read_total", "")
        .await;
    let (status, long) = call(
        Some(&ana),
        PREVIEW,
        format!("/_api/lake/lake/preview?path={mine}/long-line.csv&format=csv"),
    )
    .await;
    expect_that!(status, eq(StatusCode::UNPROCESSABLE_ENTITY));
    expect_that!(long["details"]["reason"], eq(&json!("row_too_long")));
    let long_read = gateway
        .metric("views_gateway_lake_preview_bytes_read_total", "")
        .await
        - before_long;
    // The first MiB of a 3 MiB line, not the object.
    expect_that!(long_read, eq(1024.0 * 1024.0));

    // Outside ana's entitlements: 403 naming what, before the lake is asked.
    for prefix in ["sales-private/", "tpch/", "", &format!("{mine}-private/")] {
        let (status, refused) =
            call(Some(&ana), LIST, format!("/_api/lake/lake?prefix={prefix}")).await;
        expect_that!(status, eq(StatusCode::FORBIDDEN), "{prefix}");
        expect_that!(
            refused["details"],
            eq(&json!({"bucket": "lake", "prefix": prefix, "access": "read", "user": "ana"}))
        );
    }
    for path in [
        "sales-private/customers.parquet",
        "tpch/sf0.01/nation/nation.parquet",
        "sales*/**/*.parquet",
        "*/customers.parquet",
    ] {
        let (status, refused) = call(
            Some(&ana),
            PREVIEW,
            format!("/_api/lake/lake/preview?path={path}&format=parquet"),
        )
        .await;
        expect_that!(status, eq(StatusCode::FORBIDDEN), "{path}");
        expect_that!(refused["error"], eq(&json!("not_entitled")));
    }
    // Another bucket with an entitled prefix's name.
    let (status, _) = call(Some(&ana), LIST, "/_api/lake/other?prefix=sales/".into()).await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));
    // Not prefixes at all: 400 naming the parameter (never a listing).
    for prefix in [
        "sales",
        "sales/../sales-private/",
        "sales/%2e%2e/sales-private/",
        "sales%2F..%2Fsales-private%2F",
        "/sales/",
        "sales//",
        "sales/*/",
    ] {
        let (status, bad) =
            call(Some(&ana), LIST, format!("/_api/lake/lake?prefix={prefix}")).await;
        expect_that!(status, eq(StatusCode::BAD_REQUEST), "{prefix}");
        expect_that!(
            bad["details"]["parameter"],
            eq(&json!("prefix")),
            "{prefix}"
        );
    }
    for (query, parameter) in [
        (
            "path=sales/../sales-private/customers.parquet&format=parquet",
            "path",
        ),
        (
            "path=sales/%2e%2e/sales-private/customers.parquet&format=parquet",
            "path",
        ),
        (
            "path=/sales-private/customers.parquet&format=parquet",
            "path",
        ),
        (
            "path=sales/region%3Deu/data_0.parquet&format=xlsx",
            "format",
        ),
        (
            "path=sales/region%3Deu/data_0.parquet&format=parquet&rows=101",
            "rows",
        ),
    ] {
        let (status, bad) = call(
            Some(&ana),
            PREVIEW,
            format!("/_api/lake/lake/preview?{query}"),
        )
        .await;
        expect_that!(status, eq(StatusCode::BAD_REQUEST), "{query}");
        expect_that!(
            bad["details"]["parameter"],
            eq(&json!(parameter)),
            "{query}"
        );
    }
    let (status, _) = call(
        Some(&ana),
        LIST,
        format!("/_api/lake/lake?prefix={mine}/many/&limit=1001"),
    )
    .await;
    expect_that!(status, eq(StatusCode::BAD_REQUEST));
    // Path tricks reach no listing: Envoy or the router refuse them.
    for path in [
        "/_api/lake/..%2Flake?prefix=sales-private/",
        "/_api/lake/%2e%2e?prefix=sales-private/",
        "/_api/lake/lake%2Fsales-private?prefix=",
    ] {
        let (status, body) = get(&gateway, Some(&ana), path).await;
        expect_that!(
            status.as_u16(),
            any![eq(400), eq(403), eq(404)],
            "{path}: {body}"
        );
        expect_that!(body, not(contains_substring("customers")), "{path}");
    }
    // Nobody signed in: nothing.
    let (status, _) = call(None, LIST, "/_api/lake/lake?prefix=sales/".into()).await;
    expect_that!(status, eq(StatusCode::UNAUTHORIZED));

    // bob (finance) reads what ana may not.
    let (status, private) = call(
        Some(&bob),
        LIST,
        "/_api/lake/lake?prefix=sales-private/".into(),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        private["objects"][0]["key"],
        eq(&json!("sales-private/customers.parquet"))
    );
    let (status, customers) = call(
        Some(&bob),
        PREVIEW,
        "/_api/lake/lake/preview?path=sales-private/customers.parquet&format=parquet&rows=3".into(),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(customers["rows"].as_array().map(Vec::len), some(eq(3)));
    let (status, _) = call(Some(&bob), LIST, "/_api/lake/lake?prefix=tpch/".into()).await;
    expect_that!(status, eq(StatusCode::OK));
    // The largest sample object: its footer and the first row group's
    // columns (DuckDB writes no offset index, so whole column chunks), once.
    let (_, lineitem) = call(
        Some(&bob),
        LIST,
        "/_api/lake/lake?prefix=tpch/sf0.01/lineitem/".into(),
    )
    .await;
    let lineitem_size = lineitem["objects"][0]["size"].as_u64().unwrap_or(0);
    let (status, first) = call(
        Some(&bob),
        PREVIEW,
        "/_api/lake/lake/preview?path=tpch/sf0.01/lineitem/*.parquet&format=parquet&rows=3".into(),
    )
    .await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(first["rows"].as_array().map(Vec::len), some(eq(3)));
    let read = first["bytesRead"].as_u64().unwrap_or(u64::MAX);
    println!("lineitem: {read} of {lineitem_size} bytes read for 3 rows");
    expect_that!(read, le(lineitem_size + 64 * 1024));
    let (status, _) = call(Some(&bob), LIST, "/_api/lake/lake?prefix=sales/".into()).await;
    expect_that!(status, eq(StatusCode::FORBIDDEN));

    // What previews read is counted.
    let bytes_after = gateway
        .metric("views_gateway_lake_preview_bytes_read_total", "")
        .await;
    expect_that!(bytes_after - bytes_before, gt(1024.0 * 1024.0));
    expect_that!(
        gateway
            .metric(
                "views_gateway_lake_requests_total",
                "operation=\"list\",outcome=\"not_entitled\""
            )
            .await,
        ge(6.0)
    );
    println!("{}", calls.join("\n"));

    let deletes = keys
        .iter()
        .map(|key| lake_client.delete_object().bucket("lake").key(key).send());
    for deleted in futures::future::join_all(deletes).await {
        expect_that!(deleted.is_ok(), eq(true));
    }
}

#[gtest]
#[tokio::test]
async fn without_sign_in_the_whole_lake_a_wide_row_group_in_part_and_a_silent_lake_in_time() {
    let upstream = lake();
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    // The lake behind a proxy the test can silence.
    let address = upstream
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("the lake's address");
    let mut proxy = TcpProxy::start(address).await;
    let endpoint = format!("http://{}", proxy.address());
    let gateway = Gateway::start_with(
        "lake-open",
        namespace.name(),
        &lake_settings(&upstream, &endpoint),
    )
    .await;

    // Sign-in off (development): every bucket the keys list, whole.
    let (status, roots) = get(&gateway, None, "/_api/lake").await;
    expect_that!(status, eq(StatusCode::OK));
    expect_that!(
        json_of(&roots)["roots"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        contains(eq(
            &json!({"bucket": "lake", "prefixes": [""], "access": "read"})
        ))
    );
    let (status, top) = get(&gateway, None, "/_api/lake/lake?prefix=").await;
    expect_that!(status, eq(StatusCode::OK));
    let prefixes = json_of(&top)["prefixes"].clone();
    for prefix in ["sales/", "sales-private/", "tpch/"] {
        expect_that!(
            prefixes.as_array().cloned().unwrap_or_default(),
            contains(eq(&json!(prefix)))
        );
    }

    // A row group wider than the preview's 32 MiB: the leading columns
    // that fit (one of four 19.5 MB chunks), the others counted.
    let wide = format!("browse-{}/wide.parquet", namespace.name());
    let file = std::env::temp_dir().join(format!("{}-wide.parquet", namespace.name()));
    let tools: Value = serde_json::from_str(
        &std::fs::read_to_string(cache_dir().join("tools/lake-tools.json"))
            .expect("run `cargo xtask lake tools`"),
    )
    .expect("lake-tools.json");
    let made = tokio::process::Command::new(tools["duckdb_python"].as_str().expect("python"))
        .arg("-c")
        .arg(format!(
            "import duckdb; duckdb.sql(\"COPY (SELECT md5(i::VARCHAR) a, md5((i*7)::VARCHAR) b, \
             md5((i*13)::VARCHAR) c, md5((i*17)::VARCHAR) d FROM range(600000) t(i)) \
             TO '{}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)\")",
            file.display()
        ))
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("DuckDB");
    assert!(made.success(), "DuckDB wrote the wide file");
    let lake_client = s3_client(&upstream);
    lake_client
        .put_object()
        .bucket("lake")
        .key(&wide)
        .body(ByteStream::from_path(&file).await.expect("the wide file"))
        .send()
        .await
        .expect("putting the wide file");
    let (status, body) = get(
        &gateway,
        None,
        &format!("/_api/lake/lake/preview?path={wide}&format=parquet"),
    )
    .await;
    let shown = json_of(&body);
    expect_that!(status, eq(StatusCode::OK), "{body}");
    expect_that!(
        shown["columns"],
        eq(&json!([{"name": "a", "type": "Utf8"}]))
    );
    expect_that!(shown["columnsOmitted"], eq(&json!(3)));
    expect_that!(shown["rows"].as_array().map(Vec::len), some(eq(20)));
    expect_that!(shown["bytesRead"].as_u64(), some(le(32 * 1024 * 1024)));
    println!("wide: {} bytes read", shown["bytesRead"]);
    let _ = lake_client
        .delete_object()
        .bucket("lake")
        .key(&wide)
        .send()
        .await;
    let _ = std::fs::remove_file(&file);

    // A lake that answers nothing: 503 lake_unavailable once LAKE_TIMEOUT
    // (10 s) is up, not a request held for ever.
    proxy.stall();
    let asked = Instant::now();
    let (status, body) = get(&gateway, None, "/_api/lake/lake?prefix=sales/").await;
    let waited = asked.elapsed();
    expect_that!(status, eq(StatusCode::SERVICE_UNAVAILABLE), "{body}");
    expect_that!(json_of(&body)["error"], eq(&json!("lake_unavailable")));
    expect_that!(waited, ge(Duration::from_secs(9)));
    expect_that!(waited, lt(Duration::from_secs(15)));
    // A lake that is gone: the same, at once.
    proxy.cut().await;
    let asked = Instant::now();
    let (status, body) = get(
        &gateway,
        None,
        "/_api/lake/lake/preview?path=sales/**/*.parquet&format=parquet",
    )
    .await;
    expect_that!(status, eq(StatusCode::SERVICE_UNAVAILABLE), "{body}");
    expect_that!(json_of(&body)["error"], eq(&json!("lake_unavailable")));
    expect_that!(asked.elapsed(), lt(Duration::from_secs(11)));
}
