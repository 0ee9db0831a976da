//! The `static-edge` baseline of `bench warm`: a static Envoy with the same
//! authentication as the `static` one plus the gateway's edge settings and
//! access log ([`FRAGMENT`]), which any Envoy at an organisation's edge
//! needs, dynamic or not. gateway/static-edge is then what the gateway's
//! dynamic routing itself costs on the warm path (scoped routes, the view's
//! virtual host, EDS); gateway/static keeps what the edge costs too.
//!
//! This module owns the fragment's insertion into the static templates and
//! the check that the two Envoys really run the same edge settings.

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use super::config_dump::{config_dump, differ, find};
use crate::paths;

/// The HttpConnectionManager fields the templates get at `{{EDGE}}`.
pub const FRAGMENT: &str = "scripts/bench/envoy-edge.yaml";
/// How deep the templates' `{{EDGE}}` line is indented (the manager's
/// fields).
const INDENT: usize = 10;
/// The fields [`FRAGMENT`] sets, compared between the two Envoys.
const FIELDS: [&str; 12] = [
    "strip_trailing_host_dot",
    "use_remote_address",
    "xff_num_trusted_hops",
    "normalize_path",
    "merge_slashes",
    "max_request_headers_kb",
    "request_headers_timeout",
    "common_http_protocol_options",
    "http2_protocol_options",
    "stream_idle_timeout",
    "early_header_mutation_extensions",
    "access_log",
];

/// The `{{EDGE}}` value of a static template: [`FRAGMENT`] indented to its
/// place, or nothing for the `static` baseline.
pub fn template_value(edge: bool) -> anyhow::Result<String> {
    if !edge {
        return Ok(String::new());
    }
    let path = paths::repo_root().join(FRAGMENT);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(indent(&text))
}

/// The lines after the first indented by [`INDENT`]: the first replaces the
/// placeholder, which is indented already.
fn indent(text: &str) -> String {
    let pad = " ".repeat(INDENT);
    text.lines()
        .enumerate()
        .map(|(i, line)| match i {
            0 => line.to_string(),
            _ if line.is_empty() => String::new(),
            _ => format!("{pad}{line}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fail unless the gateway's Envoy and the `static-edge` one have the same
/// edge settings and access log, from their config dumps.
pub async fn check_same_edge(
    http: &reqwest::Client,
    gateway_admin: u16,
    static_admin: u16,
) -> anyhow::Result<()> {
    let gateway = edge_fields(&config_dump(http, gateway_admin).await?)
        .context("the gateway's Envoy has no HTTP connection manager")?;
    let static_edge = edge_fields(&config_dump(http, static_admin).await?)
        .context("the static-edge Envoy has no HTTP connection manager")?;
    let mut differences = Vec::new();
    differ("", &gateway, &static_edge, &mut differences);
    if !differences.is_empty() {
        bail!(
            "the static-edge baseline's edge settings differ from the gateway's (fix {FRAGMENT} \
             to match ui/gateway-sidecar/src/xds/resources.rs):\n{}",
            differences.join("\n")
        );
    }
    Ok(())
}

/// [`FIELDS`] of the first HTTP connection manager in `dump`.
fn edge_fields(dump: &Value) -> Option<Value> {
    let manager = find(dump, &|v| {
        (v.get("http_filters").is_some() && v.get("stat_prefix").is_some()).then_some(v)
    })?;
    let fields: Map<String, Value> = FIELDS
        .iter()
        .filter_map(|&name| Some((name.to_string(), manager.get(name)?.clone())))
        .collect();
    Some(Value::Object(fields))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_fragment_is_indented_to_the_placeholder_s_depth() {
        assert_eq!(
            indent("a: 1\nb:\n  c: 2\n\nd: 3\n"),
            "a: 1\n          b:\n            c: 2\n\n          d: 3"
        );
    }

    #[test]
    fn only_the_edge_fields_of_the_connection_manager_are_compared() {
        let dump = json!({"configs": [{"listener": {"filter_chains": [{"filters": [{"typed_config": {
            "stat_prefix": "gateway", "http_filters": [], "merge_slashes": true,
            "scoped_routes": {"name": "gateway"}, "access_log": [{"name": "stdout"}]}}]}]}}]});
        assert_eq!(
            edge_fields(&dump),
            Some(json!({"merge_slashes": true, "access_log": [{"name": "stdout"}]}))
        );
    }
}
