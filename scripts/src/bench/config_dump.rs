//! Envoy's admin `config_dump`, read to check that a static baseline runs
//! what the gateway's Envoy was pushed: finding a part of the dump, and
//! listing where two parts differ.

use anyhow::bail;
use serde_json::Value;

use super::gateway as gw;

pub async fn config_dump(http: &reqwest::Client, admin_port: u16) -> anyhow::Result<Value> {
    let url = format!("http://127.0.0.1:{admin_port}/config_dump");
    let (status, body) = gw::get_with(http, &url).await?;
    if status != 200 {
        bail!("Envoy admin {url}: status {status}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// The first value `pick` returns, depth first.
pub fn find<'a, T>(value: &'a Value, pick: &dyn Fn(&'a Value) -> Option<T>) -> Option<T> {
    if let Some(found) = pick(value) {
        return Some(found);
    }
    match value {
        Value::Object(map) => map.values().find_map(|v| find(v, pick)),
        Value::Array(items) => items.iter().find_map(|v| find(v, pick)),
        _ => None,
    }
}

/// Where the gateway's `a` and the static baseline's `b` differ, as JSON
/// pointers with both values.
pub fn differ(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let (x, y) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                differ(&format!("{at}/{key}"), x, y, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differ(&format!("{at}/{i}"), x, y, out);
            }
        }
        _ if a != b => out.push(format!("  {at}: gateway {a}, static {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn differences_are_listed_by_pointer_with_both_values() {
        let mut out = Vec::new();
        differ(
            "",
            &json!({"a": [1, 2], "b": {"c": true}, "d": 1}),
            &json!({"a": [1, 3], "b": {"c": true}, "e": 2}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                "  /a/1: gateway 2, static 3",
                "  /d: gateway 1, static null",
                "  /e: gateway null, static 2"
            ]
        );
    }
}
