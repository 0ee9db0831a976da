//! The view's configuration: command-line flags, each with an environment
//! variable (how the gateway configures the pod), and the parsed, checked
//! form of what the view may read — its subsets — as [`Lake`].
//!
//! Every flag is documented in the crate's README; keep the two in step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use views_types::{Subset, TableFormat};

/// Errors in the configuration, found before DuckDB starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("VIEW_SUBSETS is not a JSON array of Subset objects: {0}")]
    SubsetsJson(#[source] serde_json::Error),
    #[error("VIEW_SUBSETS: {0}")]
    Subsets(String),
    #[error("the S3 endpoint {0:?} is not a URL like http://host:port or https://host")]
    Endpoint(String),
    #[error("AWS_SECRET_ACCESS_KEY is required with AWS_ACCESS_KEY_ID (and the other way round)")]
    PartialCredentials,
    #[error("{name}: {message}")]
    Value { name: &'static str, message: String },
}

/// How the view is run. Flags override environment variables.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "duckdb-view",
    version,
    about = "DuckDB over a view's subsets of the S3 data lake, locked down, with a web page and a query API."
)]
pub struct Config {
    /// Address to serve HTTP on.
    #[arg(long, env = "VIEW_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The view's subsets: a JSON array of `Subset` (ui/types/src/Subset.type.js).
    #[arg(long, env = "VIEW_SUBSETS")]
    pub subsets: String,

    /// The view's name, shown on the page and in logs.
    #[arg(long, env = "VIEW_NAME", default_value = "view")]
    pub name: String,

    /// The claim of the caller's verified identity (passed by the gateway's
    /// Envoy in `x-views-identity`) that names a person: each sees and
    /// cancels only their own running queries. The gateway sets it to its
    /// `OIDC_USER_CLAIM`.
    #[arg(long, env = "VIEW_USER_CLAIM", default_value = "sub")]
    pub user_claim: String,

    /// S3 endpoint URL (`http://host:port` or `https://host`); AWS S3 when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL_S3")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 access key id (the view's own, scoped credentials).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// S3 session token, for temporary credentials.
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,

    /// S3 URL style: `path` (http://endpoint/bucket/key) or `vhost` (http://bucket.endpoint/key).
    #[arg(long, env = "VIEW_S3_URL_STYLE", value_enum, default_value_t = UrlStyle::Path)]
    pub s3_url_style: UrlStyle,

    /// DuckDB memory limit (e.g. `2GB`, or bytes); DuckDB's default (80% of RAM) when unset.
    #[arg(long, env = "VIEW_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,

    /// DuckDB worker threads; the number of CPUs when unset.
    #[arg(long, env = "VIEW_THREADS")]
    pub threads: Option<u16>,

    /// Directory DuckDB may spill to when a query exceeds the memory limit; no spilling when unset.
    #[arg(long, env = "VIEW_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,

    /// Directory holding `httpfs.duckdb_extension` of the linked DuckDB version.
    #[arg(long, env = "VIEW_EXTENSION_DIR", default_value = env!("DUCKDB_VIEW_DEFAULT_EXTENSION_DIR"))]
    pub extension_dir: PathBuf,

    /// Rows a JSON query response holds at most (the rest is cut, `truncated: true`).
    #[arg(long, env = "VIEW_MAX_ROWS", default_value_t = 10_000)]
    pub max_rows: usize,

    /// How long one query may run (e.g. `300s`, `5m`, `1h`) before it is interrupted.
    #[arg(long, env = "VIEW_STATEMENT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// Queries that may run at once; more are refused with 429.
    #[arg(long, env = "VIEW_MAX_CONCURRENT_QUERIES", default_value_t = 4)]
    pub max_concurrent_queries: usize,

    /// Log format: `json`, `text`, or `auto` (JSON unless stderr is a terminal).
    #[arg(long, env = "VIEW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UrlStyle {
    Path,
    Vhost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// `300`, `300s`, `500ms`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 300s, 5m or 1h"))?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(format!("{text:?} is not a duration like 300s, 5m or 1h")),
    };
    if duration.is_zero() {
        return Err("a timeout of zero would refuse every query".into());
    }
    Ok(duration)
}

/// Where and how to reach S3, checked.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `host[:port]` for DuckDB's ENDPOINT, or None for AWS.
    pub endpoint: Option<String>,
    pub use_ssl: bool,
    pub region: String,
    pub url_style: UrlStyle,
    pub credentials: Option<Credentials>,
}

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

// Never print secrets, even in debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Config {
    pub fn s3(&self) -> Result<S3Settings, ConfigError> {
        let (endpoint, use_ssl) = match self.s3_endpoint.as_deref().map(str::trim) {
            None | Some("") => (None, true),
            Some(url) => {
                let (endpoint, use_ssl) = parse_endpoint(url)?;
                (Some(endpoint), use_ssl)
            }
        };
        let non_empty = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
        let credentials = match (
            non_empty(&self.s3_access_key_id),
            non_empty(&self.s3_secret_access_key),
        ) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: non_empty(&self.s3_session_token),
            }),
            (None, None) => None,
            _ => return Err(ConfigError::PartialCredentials),
        };
        if self.s3_region.is_empty() {
            return Err(ConfigError::Value {
                name: "AWS_REGION",
                message: "must not be empty".into(),
            });
        }
        Ok(S3Settings {
            endpoint,
            use_ssl,
            region: self.s3_region.clone(),
            url_style: self.s3_url_style,
            credentials,
        })
    }

    pub fn lake(&self) -> Result<Lake, ConfigError> {
        let subsets: Vec<Subset> =
            serde_json::from_str(&self.subsets).map_err(ConfigError::SubsetsJson)?;
        Lake::new(subsets)
    }

    /// DuckDB's memory_limit value: plain numbers are bytes (what the
    /// Kubernetes downward API gives for `limits.memory`).
    pub fn memory_limit_setting(&self) -> Option<String> {
        let limit = self.memory_limit.as_deref()?.trim();
        if limit.is_empty() {
            return None;
        }
        if limit.chars().all(|c| c.is_ascii_digit()) {
            return Some(format!("{limit}B"));
        }
        Some(limit.to_string())
    }
}

/// `http://host:port` → (`host:port`, false); `https://host` → (`host`, true);
/// a bare `host:port` means HTTPS.
fn parse_endpoint(url: &str) -> Result<(String, bool), ConfigError> {
    let bad = || ConfigError::Endpoint(url.to_string());
    let (rest, use_ssl) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else if url.contains("://") {
        return Err(bad());
    } else {
        (url, true)
    };
    // DuckDB's ENDPOINT is host[:port] only: no path, query or credentials.
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return Err(bad());
    }
    Ok((host.to_string(), use_ssl))
}

/// A named table of the lake, as the view exposes it.
#[derive(Debug, Clone)]
pub struct LakeTable {
    pub name: String,
    /// `s3://bucket/path` (a key or a glob).
    pub url: String,
    pub format: TableFormat,
}

/// What the view may read: its subsets, checked, with the table list and
/// the `s3://bucket/prefix` URLs DuckDB is limited to.
#[derive(Debug, Clone)]
pub struct Lake {
    pub subsets: Vec<Subset>,
    pub tables: Vec<LakeTable>,
}

impl Lake {
    /// Check what the generated types cannot: counts, unique table names
    /// across subsets, and every table path inside its subset's prefixes.
    pub fn new(subsets: Vec<Subset>) -> Result<Self, ConfigError> {
        let fail = |message: String| Err(ConfigError::Subsets(message));
        if subsets.is_empty() {
            return fail("a view needs at least one subset".into());
        }
        if subsets.len() > 16 {
            return fail(format!("at most 16 subsets, got {}", subsets.len()));
        }
        let mut tables: Vec<LakeTable> = Vec::new();
        for subset in &subsets {
            if subset.prefixes.is_empty() || subset.prefixes.len() > 64 {
                return fail(format!(
                    "bucket {}: 1 to 64 prefixes, got {}",
                    *subset.bucket,
                    subset.prefixes.len()
                ));
            }
            for (name, table) in &subset.tables {
                if tables.iter().any(|t| t.name == **name) {
                    return fail(format!("the table name {:?} is used twice", **name));
                }
                // Prefixes end with "/", so starts_with respects segment
                // boundaries ("data/" does not admit "data-private/").
                let inside = subset
                    .prefixes
                    .iter()
                    .any(|p| table.path.starts_with(p.as_str()));
                if !inside {
                    return fail(format!(
                        "table {:?}: the path {:?} is not under any of bucket {}'s prefixes {:?}",
                        **name,
                        *table.path,
                        *subset.bucket,
                        subset
                            .prefixes
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                    ));
                }
                tables.push(LakeTable {
                    name: name.to_string(),
                    url: format!("s3://{}/{}", *subset.bucket, *table.path),
                    format: table.format,
                });
            }
        }
        Ok(Lake { subsets, tables })
    }

    /// Every `s3://bucket/prefix` of every subset: all DuckDB may touch.
    pub fn prefix_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .subsets
            .iter()
            .flat_map(|s| {
                s.prefixes
                    .iter()
                    .map(move |p| format!("s3://{}/{}", *s.bucket, p.as_str()))
            })
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    /// Whether any subset allows writes (then COPY … TO is allowed; the
    /// credentials still decide which prefixes take writes).
    pub fn writable(&self) -> bool {
        self.subsets.iter().any(|s| s.write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use googletest::prelude::*;

    fn lake(json: &str) -> std::result::Result<Lake, ConfigError> {
        Lake::new(serde_json::from_str(json).unwrap())
    }

    #[gtest]
    fn tables_map_to_s3_urls_and_prefixes_are_the_allowed_urls() {
        let lake = lake(
            r#"[{"bucket":"lake","prefixes":["sales/","ref/"],
                 "tables":{"orders":{"path":"sales/orders/*.parquet","format":"parquet"}}},
                {"bucket":"other","prefixes":["x/"],"write":true}]"#,
        )
        .unwrap();
        expect_that!(lake.tables.len(), eq(1));
        expect_that!(lake.tables[0].url, eq("s3://lake/sales/orders/*.parquet"));
        expect_that!(
            lake.prefix_urls(),
            elements_are![
                eq("s3://lake/ref/"),
                eq("s3://lake/sales/"),
                eq("s3://other/x/")
            ]
        );
        expect_that!(lake.writable(), eq(true));
    }

    #[gtest]
    fn a_table_outside_its_prefixes_is_refused() {
        let error = lake(
            r#"[{"bucket":"lake","prefixes":["data/"],
                 "tables":{"t":{"path":"data-private/x.parquet","format":"parquet"}}}]"#,
        )
        .unwrap_err();
        expect_that!(
            error.to_string(),
            contains_substring("not under any of bucket lake")
        );
    }

    #[gtest]
    fn table_names_are_unique_across_subsets() {
        let error = lake(
            r#"[{"bucket":"a-1","prefixes":["p/"],"tables":{"t":{"path":"p/x.csv","format":"csv"}}},
                {"bucket":"b-2","prefixes":["p/"],"tables":{"t":{"path":"p/y.csv","format":"csv"}}}]"#,
        )
        .unwrap_err();
        expect_that!(error.to_string(), contains_substring("used twice"));
    }

    #[gtest]
    fn no_subsets_is_refused_and_bad_json_says_what_is_wrong() {
        expect_that!(
            lake("[]").unwrap_err().to_string(),
            contains_substring("at least one")
        );
        let bad: std::result::Result<Vec<Subset>, _> =
            serde_json::from_str(r#"[{"bucket":"lake","prefixes":["../"]}]"#);
        expect_that!(bad.is_err(), eq(true));
    }

    #[gtest]
    fn endpoints() {
        expect_that!(
            parse_endpoint("http://127.0.0.1:9000").unwrap(),
            eq(&("127.0.0.1:9000".to_string(), false))
        );
        expect_that!(
            parse_endpoint("https://s3.example.com/").unwrap(),
            eq(&("s3.example.com".to_string(), true))
        );
        expect_that!(
            parse_endpoint("minio:9000").unwrap(),
            eq(&("minio:9000".to_string(), true))
        );
        expect_that!(parse_endpoint("ftp://x").is_err(), eq(true));
        expect_that!(parse_endpoint("http://x/path").is_err(), eq(true));
        expect_that!(parse_endpoint("http://a'b").is_err(), eq(true));
    }

    #[gtest]
    fn durations() {
        expect_that!(parse_duration("300").unwrap(), eq(Duration::from_secs(300)));
        expect_that!(parse_duration("5m").unwrap(), eq(Duration::from_secs(300)));
        expect_that!(
            parse_duration("250ms").unwrap(),
            eq(Duration::from_millis(250))
        );
        expect_that!(parse_duration("1h").unwrap(), eq(Duration::from_secs(3600)));
        expect_that!(parse_duration("0s").is_err(), eq(true));
        expect_that!(parse_duration("soon").is_err(), eq(true));
    }
}
