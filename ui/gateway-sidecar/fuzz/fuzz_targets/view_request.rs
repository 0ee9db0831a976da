//! The views API's create body (`POST /_api/views`): never panics, and a
//! spec it accepts reads back to itself (what is stored is what is checked).
#![no_main]

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use gateway_sidecar::api::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(spec) = parse_request(&headers, Ok(Bytes::copy_from_slice(body))) {
        let stored = serde_json::to_vec(&spec).expect("a spec serializes");
        let again = parse_request(&headers, Ok(Bytes::from(stored)))
            .unwrap_or_else(|_| panic!("an accepted spec is refused when read back: {spec:?}"));
        assert_eq!(again, spec);
    }
});
