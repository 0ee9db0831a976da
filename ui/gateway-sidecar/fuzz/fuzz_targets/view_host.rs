//! The Host header → view name parser (the progress page and status stream
//! on view hosts): never panics, and a name it returns is a valid view name
//! whose host, with the gateway's hostname, is the one given (any case, any
//! port).
#![no_main]

use gateway_sidecar::activator::page::view_of_host;
use libfuzzer_sys::fuzz_target;

const GATEWAY: &str = "views.example.com";

fuzz_target!(|host: &str| {
    if let Some(view) = view_of_host(host, GATEWAY) {
        assert!(
            views_types::ViewName::try_from(view.as_str()).is_ok(),
            "{view:?}"
        );
        let bare = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let expected = format!("{view}.{GATEWAY}");
        assert!(
            bare.eq_ignore_ascii_case(&expected) || host.eq_ignore_ascii_case(&expected),
            "{host:?} → {view:?}"
        );
    }
});
