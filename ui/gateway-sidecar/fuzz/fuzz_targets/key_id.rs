//! The view access key id (the `Credential=` of every SigV4 request to the
//! views' S3 endpoint, before any signature is checked): parsing never
//! panics, and what parses is canonical (encodes back to the same bytes, so
//! one key has one id).
#![no_main]

use gateway_sidecar::credentials::KeyId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|id: &str| {
    if let Ok(key) = KeyId::parse(id) {
        assert_eq!(key.encode(), id);
        assert_eq!(KeyId::parse(&key.encode()).ok(), Some(key));
    }
});
