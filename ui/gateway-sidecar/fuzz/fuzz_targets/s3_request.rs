//! The views' S3 endpoint, whole: s3s' request parser, SigV4 verification
//! with the derived keys (header and presigned-URL forms, for a key the
//! broker really minted), the subset policy on the parsed operation. Never
//! panics; a request this target makes is never signed right, so none may
//! reach the lake (an address nothing listens on) with a 200.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use gateway_sidecar::credentials::{Broker, Endpoint, InMemoryViews, MasterKey, Upstream};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    method: u8,
    path: String,
    query: String,
    /// Signed as the minted key, in a header or in the query, with this
    /// (wrong) signature.
    signing: Option<(bool, String)>,
    headers: Vec<(u8, String)>,
    body: Vec<u8>,
}

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"];
const HEADERS: [&str; 10] = [
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "host",
    "content-type",
    "x-amz-copy-source",
    "range",
    "x-amz-security-token",
    "content-md5",
    "x-amz-decoded-content-length",
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    endpoint: Endpoint,
    key_id: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let master: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let broker = Arc::new(Broker::new(
            MasterKey::from_bytes(&master).expect("a master key"),
        ));
        let views = Arc::new(InMemoryViews::new());
        views.insert(
            "sales",
            serde_json::from_value(serde_json::json!([
                {"bucket": "lake", "prefixes": ["sales/"], "write": true}
            ]))
            .expect("subsets"),
        );
        views.set_activation("sales", "sales-1");
        let minted = broker
            .mint(
                "sales",
                "sales-1",
                jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
            )
            .expect("minted");
        let upstream = Upstream {
            endpoint: "http://127.0.0.1:9".into(),
            access_key_id: "lake".into(),
            secret_access_key: "lake-secret".into(),
            region: "us-east-1".into(),
        };
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            endpoint: Endpoint::new(broker, views, &upstream),
            key_id: minted.access_key_id,
        }
    })
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let now = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let scope = format!("{}/{}/us-east-1/s3/aws4_request", fixture.key_id, &now[..8]);
    let mut query = input.query.clone();
    let mut request =
        axum::http::Request::builder().method(METHODS[usize::from(input.method) % METHODS.len()]);
    match &input.signing {
        Some((true, signature)) => {
            request = request
                .header("x-amz-date", &now)
                .header(
                    "authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={signature}"
                    ),
                );
        }
        Some((false, signature)) => {
            query = format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={now}&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}&{query}",
                scope.replace('/', "%2F")
            );
        }
        None => {}
    }
    for (name, value) in &input.headers {
        request = request.header(HEADERS[usize::from(*name) % HEADERS.len()], value.as_str());
    }
    let uri = format!(
        "http://127.0.0.1:9000/{}?{query}",
        input.path.trim_start_matches('/')
    );
    let Ok(request) = request
        .uri(uri.as_str())
        .body(s3s::Body::from(input.body.clone()))
    else {
        return; // not an HTTP request at all: hyper would not parse it
    };
    if let Ok(response) = fixture.runtime.block_on(fixture.endpoint.handle(request)) {
        assert!(
            !response.status().is_success(),
            "an unsigned or badly signed request succeeded: {input:?} → {}",
            response.status()
        );
    }
});
