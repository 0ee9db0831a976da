//! The lake browser: what the hub's "New view" form shows of the data lake,
//! with the caller's rights. This module owns `/_api/lake…` (where a person
//! may start browsing, one level of keys under a prefix, the first rows of a
//! table path), its errors and its metrics; the entitlements it checks are
//! [`crate::entitlements`]'s.
//!
//! ```text
//! browser ──► Envoy (sign-in) ──► /_api/lake/{bucket}?prefix=sales/
//!                                   │ 1. entitlements (the index's): may the caller read
//!                                   │    every key under `sales/` of `lake`? else 403
//!                                   │ 2. the lake, with the sidecar's own keys (LAKE_*),
//!                                   ▼    never seen by the browser
//!                                  S3: ListObjectsV2 / HeadObject / ranged GetObject
//! ```
//!
//! # Decisions
//!
//! - **Checked before the lake is touched, on the request's own text**: the
//!   bucket must be a bucket name, the prefix `""` or a key prefix (segments
//!   ending with `/`, none `.` or `..`), a table path a [`TablePath`]; then
//!   the caller must be entitled to read every key under the prefix (for a
//!   table path, its directory: the part before the last `/` ahead of any
//!   glob character). `sales` is not a prefix (it would also list
//!   `sales-private/`), `%2e%2e` decodes to `..` and is refused.
//! - **403, not 404, outside one's entitlements**, as `POST /_api/views`
//!   answers for a subset one may not read: the refusal depends only on the
//!   request and the caller's grants, never on what the lake holds, so it
//!   says nothing about other people's data (`lake/secret/` is refused the
//!   same whether it exists or not), and it names what was refused
//!   (`not_entitled`, `details` as create's). A 404 is for what does not
//!   exist *within* one's entitlements (a key, a bucket).
//! - **Bounded**: a listing is one page of at most 1000 entries (S3's own
//!   page; `after` continues), and keeps only entries under the prefix even
//!   if the lake sent others. A preview shows at most [`MAX_ROWS`] rows and
//!   [`MAX_COLUMNS`] columns, cells cut at [`MAX_CELL_CHARS`] characters,
//!   reads at most [`preview::PARQUET_BYTES`] of a Parquet object by range
//!   reads (its footer, then the first row group's chunks of the columns
//!   shown; only the pages holding the first rows when the file has an
//!   offset index, which DuckDB's writer does not add: then whole chunks;
//!   a row group too wide for the budget shows its leading columns that
//!   fit) or [`preview::TEXT_BYTES`] of a CSV/JSON one, and everything
//!   gives up after [`LAKE_TIMEOUT`]. A glob is resolved to its first matching key
//!   within [`MAX_GLOB_SCAN`] keys.
//! - **Sign-in off** (development only): everything the lake keys reach.

mod preview;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use views_types::{
    Access, ApiErrorCode, BucketName, Grant, GrantPrefixesItem, KeyPrefix, LakeListing, LakeObject,
    LakeRoots, TableFormat, TablePath,
};

use crate::api::{Failure, error, error_with_details};
use crate::auth::Caller;
use crate::credentials::{Upstream, s3_client};
use crate::entitlements::Refused;
use crate::index::Index;

/// At most this many rows in a preview (and its default: [`DEFAULT_ROWS`]).
pub const MAX_ROWS: usize = 100;
pub const DEFAULT_ROWS: usize = 20;
/// At most this many columns in a preview; the rest are counted.
pub const MAX_COLUMNS: usize = 50;
/// A preview's cell text is cut after this many characters.
pub const MAX_CELL_CHARS: usize = 200;
/// Entries in a listing page (S3's own maximum), and the default.
pub const MAX_LIST: i32 = 1000;
/// Keys scanned for the first match of a glob.
pub const MAX_GLOB_SCAN: usize = 10_000;
/// Every call to the lake (a listing, a whole preview) ends by then.
pub const LAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a lake request is refused or failed; each maps to an API error.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("this gateway browses no lake (LAKE_ENDPOINT_URL and its keys are not set)")]
    NotConfigured,
    #[error("{parameter}: {problem}")]
    InvalidParameter {
        parameter: &'static str,
        problem: String,
    },
    #[error(transparent)]
    NotEntitled(Box<Refused>),
    #[error("there is no bucket `{0}` in the lake")]
    NoSuchBucket(String),
    #[error("there is no object `{0}`")]
    NoSuchKey(String),
    #[error("no object matches `{path}` (looked at the first {scanned} keys under `{under}`)")]
    NoMatch {
        path: String,
        under: String,
        scanned: usize,
    },
    #[error("{message}")]
    NotPreviewable {
        /// Machine-readable: `not_parquet`, `too_large`, `row_too_long`, `not_text`, `not_json`.
        reason: &'static str,
        message: String,
    },
    #[error("the lake did not answer within {} s", LAKE_TIMEOUT.as_secs())]
    Timeout,
    #[error("the lake failed: {0}")]
    Lake(String),
}

impl LakeError {
    /// The metrics' outcome label.
    fn outcome(&self) -> &'static str {
        match self {
            LakeError::NotConfigured | LakeError::NoSuchBucket(_) | LakeError::NoSuchKey(_) => {
                "not_found"
            }
            LakeError::NoMatch { .. } => "not_found",
            LakeError::InvalidParameter { .. } => "invalid",
            LakeError::NotEntitled(_) => "not_entitled",
            LakeError::NotPreviewable { .. } => "not_previewable",
            LakeError::Timeout | LakeError::Lake(_) => "lake_error",
        }
    }

    fn invalid(parameter: &'static str, problem: impl Into<String>) -> Self {
        LakeError::InvalidParameter {
            parameter,
            problem: problem.into(),
        }
    }
}

impl From<LakeError> for Failure {
    fn from(lake_error: LakeError) -> Failure {
        let message = lake_error.to_string();
        match lake_error {
            LakeError::NotConfigured | LakeError::NoSuchBucket(_) | LakeError::NoSuchKey(_) => {
                error(StatusCode::NOT_FOUND, ApiErrorCode::NotFound, message)
            }
            LakeError::NoMatch { under, scanned, .. } => error_with_details(
                StatusCode::NOT_FOUND,
                ApiErrorCode::NotFound,
                message,
                serde_json::json!({"parameter": "path", "under": under, "scanned": scanned}),
            ),
            LakeError::InvalidParameter { parameter, .. } => error_with_details(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                message,
                serde_json::json!({"parameter": parameter}),
            ),
            LakeError::NotEntitled(refused) => crate::api::not_entitled(*refused),
            LakeError::NotPreviewable { reason, .. } => error_with_details(
                StatusCode::UNPROCESSABLE_ENTITY,
                ApiErrorCode::Unprocessable,
                message,
                serde_json::json!({"reason": reason, "parameter": "path"}),
            ),
            LakeError::Timeout | LakeError::Lake(_) => {
                // The lake's own words (addresses, its errors) go to the log only.
                tracing::warn!(%message, "lake browser");
                let message = match lake_error {
                    LakeError::Timeout => message,
                    _ => "the lake did not answer the gateway as expected (the gateway's log says why)"
                        .to_string(),
                };
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiErrorCode::LakeUnavailable,
                    message,
                )
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    operation: &'static str,
    outcome: &'static str,
}

/// `views_gateway_lake_requests_total{operation, outcome}` and
/// `views_gateway_lake_preview_bytes_read_total`.
#[derive(Default)]
pub struct Metrics {
    requests: Family<RequestLabel, Counter>,
    preview_bytes: Counter,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let lake = registry.sub_registry_with_prefix("lake");
        lake.register(
            "requests",
            "Lake browser requests (roots, list, preview), by outcome",
            self.requests.clone(),
        );
        lake.register(
            "preview_bytes_read",
            "Bytes the lake browser's previews read from the lake",
            self.preview_bytes.clone(),
        );
    }
}

/// The lake as the browser reaches it: the sidecar's own S3 client (none
/// when the lake is not configured), the entitlements (in the index's
/// snapshots) and the metrics.
pub struct Lake {
    client: Option<aws_sdk_s3::Client>,
    index: Index,
    metrics: Arc<Metrics>,
}

impl Lake {
    pub fn new(upstream: Option<&Upstream>, index: Index, metrics: Arc<Metrics>) -> Self {
        Lake {
            client: upstream.map(s3_client),
            index,
            metrics,
        }
    }

    fn client(&self) -> Result<&aws_sdk_s3::Client, LakeError> {
        self.client.as_ref().ok_or(LakeError::NotConfigured)
    }

    /// May `caller` read every key under `prefix` of `bucket`?
    fn check(&self, caller: &Caller, bucket: &str, prefix: &str) -> Result<(), LakeError> {
        let Some(identity) = caller.identity() else {
            return Ok(());
        };
        self.index
            .snapshot()
            .entitlements
            .check_read(identity, bucket, prefix)
            .map_err(|refused| LakeError::NotEntitled(Box::new(refused)))
    }

    fn count<T>(&self, operation: &'static str, result: &Result<T, LakeError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabel { operation, outcome })
            .inc();
    }
}

/// `/_api/lake…`, for the API's router (behind its authentication).
pub fn router<S: Clone + Send + Sync + 'static>(lake: Arc<Lake>) -> Router<S> {
    Router::new()
        .route("/_api/lake", get(roots))
        .route("/_api/lake/{bucket}", get(list))
        .route("/_api/lake/{bucket}/preview", get(preview))
        .with_state(lake)
}

/// `GET /_api/lake`: the caller's readable grants, or with sign-in off every bucket.
async fn roots(
    State(lake): State<Arc<Lake>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<LakeRoots>, Failure> {
    let result = match caller.identity() {
        Some(identity) => Ok(lake.index.snapshot().entitlements.readable(identity)),
        None => within_time(all_buckets(&lake)).await,
    };
    lake.count("roots", &result);
    Ok(Json(LakeRoots { roots: result? }))
}

async fn all_buckets(lake: &Lake) -> Result<Vec<Grant>, LakeError> {
    let answer = lake
        .client()?
        .list_buckets()
        .send()
        .await
        .map_err(|e| LakeError::Lake(error_text(&e)))?;
    let whole = GrantPrefixesItem::from_str("").expect("\"\" is the whole bucket");
    Ok(answer
        .buckets()
        .iter()
        .filter_map(|b| BucketName::from_str(b.name()?).ok())
        .map(|bucket| Grant {
            bucket,
            prefixes: vec![whole.clone()],
            access: Access::Read,
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<i32>,
}

/// `GET /_api/lake/{bucket}?prefix=…&after=…&limit=…`: one page of the
/// sub-prefixes and objects directly under `prefix`.
async fn list(
    State(lake): State<Arc<Lake>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(bucket): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<LakeListing>, Failure> {
    let result = async {
        let Query(query) = query.map_err(|e| LakeError::invalid("query", e.body_text()))?;
        let bucket = parse_bucket(&bucket)?;
        let prefix = parse_prefix(&query.prefix)?;
        let limit = query.limit.unwrap_or(MAX_LIST);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(LakeError::invalid("limit", format!("1 to {MAX_LIST}")));
        }
        if let Some(after) = &query.after
            && (after.len() > 1024 || after.chars().any(char::is_control))
        {
            return Err(LakeError::invalid(
                "after",
                "not a continuation from a listing",
            ));
        }
        lake.check(&caller, &bucket, &prefix)?;
        within_time(list_page(
            lake.client()?,
            &bucket,
            &prefix,
            query.after,
            limit,
        ))
        .await
    }
    .await;
    lake.count("list", &result);
    Ok(Json(result?))
}

async fn list_page(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    after: Option<String>,
    limit: i32,
) -> Result<LakeListing, LakeError> {
    let page = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .max_keys(limit)
        .set_continuation_token(after)
        .send()
        .await
        .map_err(|e| s3_failure(e, bucket, prefix))?;
    // Only what lies under the prefix, whatever the lake sent.
    let under = |key: &str| key.starts_with(prefix) && key.len() > prefix.len();
    let prefixes = page
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .filter(|p| under(p))
        .map(str::to_owned)
        .collect();
    let objects = page
        .contents()
        .iter()
        .filter_map(|o| {
            let key = o.key().filter(|k| under(k))?;
            Some(LakeObject {
                key: key.to_owned(),
                size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                last_modified: o
                    .last_modified()
                    .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
            })
        })
        .collect();
    Ok(LakeListing {
        bucket: BucketName::from_str(bucket).expect("checked"),
        prefix: prefix.to_owned(),
        prefixes,
        objects,
        next: page
            .is_truncated()
            .unwrap_or(false)
            .then(|| page.next_continuation_token().map(str::to_owned))
            .flatten(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    path: String,
    format: String,
    rows: Option<usize>,
}

/// `GET /_api/lake/{bucket}/preview?path=…&format=…&rows=…`: the first rows
/// of the first object a table path names.
async fn preview(
    State(lake): State<Arc<Lake>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(bucket): Path<String>,
    query: Result<Query<PreviewQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let result = async {
        let Query(query) = query.map_err(|e| LakeError::invalid("query", e.body_text()))?;
        let bucket = parse_bucket(&bucket)?;
        let path = TablePath::from_str(&query.path).map_err(|_| {
            LakeError::invalid(
                "path",
                "not a table path: a key or glob of \"/\"-separated segments, none empty, \".\" or \"..\"",
            )
        })?;
        let format = TableFormat::from_str(&query.format)
            .map_err(|_| LakeError::invalid("format", "parquet, csv or json"))?;
        let rows = query.rows.unwrap_or(DEFAULT_ROWS);
        if !(1..=MAX_ROWS).contains(&rows) {
            return Err(LakeError::invalid("rows", format!("1 to {MAX_ROWS}")));
        }
        lake.check(&caller, &bucket, directory_of(&path))?;
        let client = lake.client()?;
        within_time(async {
            let (key, size) = preview::resolve(client, &bucket, &path).await?;
            let counted = &lake.metrics.preview_bytes;
            let shown =
                preview::read(client, &bucket, &key, size, format, rows, counted).await?;
            Ok(shown.into_api(bucket.clone(), path.clone(), key, format))
        })
        .await
    }
    .await;
    lake.count("preview", &result);
    Ok(Json(result?).into_response())
}

fn parse_bucket(bucket: &str) -> Result<BucketName, LakeError> {
    BucketName::from_str(bucket).map_err(|_| LakeError::invalid("bucket", "not an S3 bucket name"))
}

/// `""` (the whole bucket) or a key prefix.
fn parse_prefix(prefix: &str) -> Result<String, LakeError> {
    if prefix.is_empty() || KeyPrefix::from_str(prefix).is_ok() {
        Ok(prefix.to_owned())
    } else {
        Err(LakeError::invalid(
            "prefix",
            "neither \"\" (the whole bucket) nor a key prefix: \"/\"-terminated segments, none \
             empty, \".\" or \"..\", no leading \"/\", no glob characters",
        ))
    }
}

/// The literal directory of a table path: up to its last `/` before any
/// glob character (`""` when there is none). Every key the path can name
/// lies under it.
pub fn directory_of(path: &str) -> &str {
    let literal = path
        .find(['*', '?', '[', '{'])
        .map_or(path, |at| &path[..at]);
    literal.rfind('/').map_or("", |slash| &path[..=slash])
}

async fn within_time<T>(work: impl Future<Output = Result<T, LakeError>>) -> Result<T, LakeError> {
    tokio::time::timeout(LAKE_TIMEOUT, work)
        .await
        .unwrap_or(Err(LakeError::Timeout))
}

/// An SDK error as one line (the service's code and message when it answered).
fn error_text<E: std::error::Error + 'static>(error: &E) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An S3 error: `NoSuchBucket`/`NoSuchKey` are 404s, anything else the lake's failure.
fn s3_failure<E>(
    error: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    bucket: &str,
    key: &str,
) -> LakeError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    let not_found = error
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 404);
    match code.as_deref() {
        Some("NoSuchBucket") => LakeError::NoSuchBucket(bucket.to_owned()),
        Some("NoSuchKey" | "NotFound") => LakeError::NoSuchKey(key.to_owned()),
        _ if not_found => LakeError::NoSuchKey(key.to_owned()),
        _ => LakeError::Lake(error_text(&error)),
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn a_table_paths_directory_is_its_literal_part_up_to_a_slash() {
        expect_that!(
            directory_of("sales/region=eu/data_0.parquet"),
            eq("sales/region=eu/")
        );
        expect_that!(directory_of("sales/**/*.parquet"), eq("sales/"));
        expect_that!(directory_of("sales/r*/x/*.csv"), eq("sales/"));
        expect_that!(directory_of("sales*/x.csv"), eq(""));
        expect_that!(directory_of("orders.csv"), eq(""));
        expect_that!(directory_of("sales/{a,b}/x.csv"), eq("sales/"));
    }

    #[gtest]
    fn prefixes_are_whole_segments() {
        expect_that!(parse_prefix(""), ok(eq("")));
        expect_that!(parse_prefix("sales/"), ok(eq("sales/")));
        for bad in [
            "sales",
            "sales/../x/",
            "../",
            "/sales/",
            "sales//",
            "sales/*/",
        ] {
            expect_that!(parse_prefix(bad), err(anything()), "{bad}");
        }
    }
}
