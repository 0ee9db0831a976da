//! The view's HTTP interface (axum): the offline page, the query API, the
//! catalog, cancel, the running-queries list and the health endpoints.
//!
//! Every error is a JSON body `{error, message}` (the shape of the gateway's
//! `ApiError`) with a 4xx/5xx status; nothing a client sends makes a handler
//! panic. DuckDB work runs on blocking threads, never on the async runtime.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::caller::Caller;
use crate::db::{Column, Cursor, DbError};
use crate::encode::CsvEncoder;
use crate::engine::ENGINE_VERSION;
use crate::queries::{
    Health, QueryError, QueryService, Registration, RunningQuery, StopReason, collect_json,
};

/// Errors of the HTTP layer: the request itself, or the query it asked for.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("there is nothing at this path")]
    NotFound,
    #[error("this path does not take that method")]
    MethodNotAllowed,
    #[error("the view is still starting")]
    Starting,
    #[error("the view's database failed and the view must be restarted")]
    Failed,
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Starting => (StatusCode::SERVICE_UNAVAILABLE, "view_starting"),
            ApiError::Failed => (StatusCode::SERVICE_UNAVAILABLE, "view_failed"),
            ApiError::Query(error) => (
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                error.code(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut body = json!({ "error": code, "message": self.to_string() });
        if let ApiError::Query(error) = &self
            && let Some(details) = error.details()
        {
            body["details"] = details;
        }
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, ApiError::Starting) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Shared by all handlers. The query service appears once the engine has
/// started; until then the API answers 503 and `/healthz` is not ready.
pub struct AppState {
    pub name: String,
    pub service: OnceLock<Arc<QueryService>>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// The claim of the verified identity that names a person ([`Caller`]).
    pub user_claim: String,
    /// The database's; a failed one ends the process ([`shutdown_signal`]).
    pub health: Arc<Health>,
}

impl AppState {
    fn caller(&self, headers: &HeaderMap) -> Caller {
        Caller::from_headers(headers, &self.user_claim)
    }

    fn service(&self) -> Result<&Arc<QueryService>, ApiError> {
        let service = self.service.get().ok_or(ApiError::Starting)?;
        if !service.healthy() {
            return Err(ApiError::Failed);
        }
        Ok(service)
    }
}

type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/", get(page))
        .route("/static/app.js", get(app_js))
        .route("/static/chart.js", get(chart_js))
        .route("/static/banner.js", get(banner_js))
        .route("/static/style.css", get(style_css))
        .route("/healthz", get(healthz))
        .route("/livez", get(|| async { "ok" }))
        .route("/api/catalog", get(catalog))
        .route("/api/query", post(query))
        .route("/api/cancel", post(cancel))
        .route("/api/queries", get(list_queries))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |request, next| {
            refuse_oversized(max_body, request, next)
        }))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// How much of a refused body is read before answering anyway.
const DRAIN_CAP: usize = 64 << 20;
/// How long reading a refused body may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A body announced larger than `max_body` is refused with 413, but read
/// (up to [`DRAIN_CAP`] and [`DRAIN_TIME`]) before the answer: a server that
/// closes with the client's bytes unread resets the connection, and the
/// client may then lose the answer and see only a broken pipe.
async fn refuse_oversized(max_body: usize, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_none_or(|length| length <= max_body) {
        return next.run(request).await;
    }
    let mut body = request.into_body().into_data_stream();
    let drain = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = futures::StreamExt::next(&mut body).await {
            read += chunk.len();
            if read > DRAIN_CAP {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    ApiError::PayloadTooLarge(max_body).into_response()
}

/// The page is self-contained and talks only to this origin; say so, so a
/// browser refuses anything else (inline script, other hosts, framing).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small and embedded in the binary: always revalidate, never stale after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", include_str!("page/index.html"))
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    )
}

async fn chart_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("page/chart.js"),
    )
}

async fn banner_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("page/banner.js"),
    )
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("page/style.css"))
}

/// Readiness: 200 once the engine has started and locked down.
async fn healthz(State(state): State<Shared>) -> Response {
    match state.service() {
        Ok(_) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogResponse<'a> {
    view: &'a str,
    engine: String,
    subsets: Vec<SubsetInfo>,
    tables: &'a [crate::engine::TableInfo],
    workspace: Vec<crate::engine::WorkspaceObject>,
    limits: LimitsInfo,
}

#[derive(Serialize)]
struct SubsetInfo {
    bucket: String,
    /// As `s3://bucket/prefix/`, ready to paste into SQL.
    prefixes: Vec<String>,
    write: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LimitsInfo {
    max_rows: usize,
    statement_timeout_seconds: f64,
}

async fn catalog(State(state): State<Shared>) -> Result<Response, ApiError> {
    let service = Arc::clone(state.service()?);
    let for_workspace = Arc::clone(&service);
    let workspace = tokio::task::spawn_blocking(move || for_workspace.engine().workspace())
        .await
        .map_err(|e| QueryError::Internal(format!("catalog task failed: {e}")))?
        .map_err(|e| QueryError::Internal(format!("reading the catalog: {e}")))?;
    let engine = service.engine();
    let body = CatalogResponse {
        view: &state.name,
        engine: format!("DuckDB v{ENGINE_VERSION}"),
        subsets: engine
            .lake
            .subsets
            .iter()
            .map(|s| SubsetInfo {
                bucket: s.bucket.to_string(),
                prefixes: s
                    .prefixes
                    .iter()
                    .map(|p| format!("s3://{}/{}", *s.bucket, p.as_str()))
                    .collect(),
                write: s.write,
            })
            .collect(),
        tables: &engine.tables,
        workspace,
        limits: LimitsInfo {
            max_rows: service.limits.max_rows,
            statement_timeout_seconds: service.limits.statement_timeout.as_secs_f64(),
        },
    };
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QueryRequest {
    sql: String,
    /// Chosen by the client so it can cancel the query while it runs.
    query_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CancelRequest {
    query_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Arrow,
    Csv,
    Parquet,
}

fn format_of(raw_query: Option<&str>) -> Result<Format, ApiError> {
    let mut format = Format::Json;
    for pair in raw_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "format" => {
                format = match value {
                    "json" => Format::Json,
                    "arrow" => Format::Arrow,
                    "csv" => Format::Csv,
                    "parquet" => Format::Parquet,
                    other => {
                        return Err(ApiError::InvalidRequest(format!(
                            "format must be json, arrow, csv or parquet, not {other:?}"
                        )));
                    }
                }
            }
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(format)
}

/// Parse a JSON body, with the API's errors for every way it can be wrong.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max_body: usize,
    empty_default: Option<T>,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    // Requiring JSON also keeps cross-site HTML forms out (they cannot send it
    // without a CORS preflight, which this server never grants).
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(max_body),
        _ => ApiError::InvalidRequest(format!("reading the request body: {rejection}")),
    })?;
    if let Some(default) = empty_default
        && body.iter().all(u8::is_ascii_whitespace)
    {
        return Ok(default);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the request body: {e}")))
}

fn check_query_id(id: &Option<String>) -> Result<(), ApiError> {
    if let Some(id) = id {
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ApiError::InvalidRequest(
                "queryId has 1 to 64 characters: letters, digits, '-' and '_'".into(),
            ));
        }
    }
    Ok(())
}

/// Stops the query if the handler is dropped before it finished (the client
/// closed the connection): nobody would read the answer.
struct StopOnDrop {
    service: Arc<QueryService>,
    owner: Caller,
    id: String,
    armed: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.service
                .stop(&self.owner, &self.id, StopReason::ClientGone);
        }
    }
}

/// Interrupts the query when the statement timeout passes.
fn start_timer(service: &Arc<QueryService>, owner: &Caller, id: &str) -> tokio::task::AbortHandle {
    let service = Arc::clone(service);
    let owner = owner.clone();
    let id = id.to_string();
    let timeout = service.limits.statement_timeout;
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if service.stop(&owner, &id, StopReason::TimedOut) {
            tracing::info!(query_id = %id, ?timeout, "statement timeout: stopping the query");
        }
    })
    .abort_handle()
}

async fn query(
    State(state): State<Shared>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let format = format_of(raw_query.as_deref())?;
    let request: QueryRequest = json_body(&headers, body, state.max_body, None)?;
    check_query_id(&request.query_id)?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::InvalidRequest("sql is empty".into()));
    }
    let service = Arc::clone(state.service()?);
    let owner = state.caller(&headers);
    let registration = service.register(&owner, request.query_id, &request.sql)?;
    let id = registration.query.id.clone();
    let timer = start_timer(&service, &owner, &id);
    let mut guard = StopOnDrop {
        service: Arc::clone(&service),
        owner,
        id: id.clone(),
        armed: true,
    };
    let response = match format {
        Format::Json => run_json(&service, registration, request.sql).await,
        Format::Arrow | Format::Csv | Format::Parquet => {
            run_streaming(
                &service,
                registration,
                request.sql,
                format,
                timer.clone(),
                &state.name,
            )
            .await
        }
    };
    if format == Format::Json {
        timer.abort();
    }
    guard.armed = false;
    response
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryResponse {
    query_id: String,
    statement_type: &'static str,
    columns: Vec<Column>,
    rows: Vec<Vec<serde_json::Value>>,
    row_count: usize,
    /// More rows existed than `VIEW_MAX_ROWS`; use `?format=arrow` or `csv` for all.
    truncated: bool,
    /// Seconds the query took, from start to the last row.
    elapsed: f64,
}

async fn run_json(
    service: &Arc<QueryService>,
    registration: Registration,
    sql: String,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let max_rows = service.limits.max_rows;
    let worker = Arc::clone(service);
    let id = registration.query.id.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let registration = registration;
        worker.run(&registration.query, &sql, |cursor, should_stop| {
            let (rows, truncated) = collect_json(cursor, should_stop, max_rows)?;
            Ok((
                cursor.statement_type(),
                cursor.columns().to_vec(),
                rows,
                truncated,
            ))
        })
    })
    .await
    .map_err(|e| QueryError::Internal(format!("the query task failed: {e}")))?;
    let elapsed = started.elapsed().as_secs_f64();
    match outcome {
        Ok((statement_type, columns, rows, truncated)) => {
            tracing::info!(
                query_id = %id,
                statement = statement_type.as_str(),
                rows = rows.len(),
                truncated,
                elapsed_ms = elapsed * 1e3,
                "query answered"
            );
            Ok(axum::Json(QueryResponse {
                query_id: id,
                statement_type: statement_type.as_str(),
                columns,
                row_count: rows.len(),
                rows,
                truncated,
                elapsed,
            })
            .into_response())
        }
        Err(error) => {
            log_failure(&id, &error, elapsed);
            Err(error.into())
        }
    }
}

fn log_failure(id: &str, error: &QueryError, elapsed: f64) {
    let elapsed_ms = elapsed * 1e3;
    match error {
        QueryError::Internal(_) | QueryError::Upstream(_) => {
            tracing::warn!(query_id = %id, code = error.code(), %error, elapsed_ms, "query failed")
        }
        _ => {
            tracing::info!(query_id = %id, code = error.code(), %error, elapsed_ms, "query refused or failed")
        }
    }
}

/// Arrow IPC stream or CSV: headers go out once the first chunk of rows is
/// there (so most errors still get a proper status), then rows stream as
/// DuckDB produces them, with no row limit. An error after that aborts the
/// body (the client sees a truncated stream, never a silent short result).
async fn run_streaming(
    service: &Arc<QueryService>,
    registration: Registration,
    sql: String,
    format: Format,
    timer: tokio::task::AbortHandle,
    view_name: &str,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), QueryError>>();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let worker = Arc::clone(service);
    let id = registration.query.id.clone();
    tokio::task::spawn_blocking(move || {
        let registration = registration;
        let query = &registration.query;
        let mut ready_tx = Some(ready_tx);
        let outcome = worker.run(query, &sql, |cursor, should_stop| {
            let first = cursor.next_batch()?;
            if format == Format::Parquet {
                // Refused with a proper status, before the answer starts.
                check_parquet(cursor)?;
            }
            if let Some(ready) = ready_tx.take() {
                let _ = ready.send(Ok(()));
            }
            let sink = Sink { tx: &tx, query };
            match format {
                Format::Arrow => stream_arrow(cursor, first, should_stop, &sink),
                Format::Parquet => stream_parquet(cursor, first, should_stop, &sink),
                _ => stream_csv(cursor, first, should_stop, &sink),
            }
        });
        timer.abort();
        let elapsed = started.elapsed().as_secs_f64();
        match outcome {
            Ok(rows) => tracing::info!(
                query_id = %query.id,
                rows,
                elapsed_ms = elapsed * 1e3,
                format = ?format,
                "query streamed"
            ),
            Err(error) => {
                log_failure(&query.id, &error, elapsed);
                match ready_tx.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(error));
                    }
                    None => {
                        let _ = tx.blocking_send(Err(std::io::Error::other(error.to_string())));
                    }
                }
            }
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => {
            return Err(
                QueryError::Internal("the query task ended without an answer".into()).into(),
            );
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (content_type, extension) = match format {
        Format::Arrow => ("application/vnd.apache.arrow.stream", None),
        Format::Parquet => ("application/vnd.apache.parquet", Some("parquet")),
        _ => ("text/csv; charset=utf-8", Some("csv")),
    };
    let disposition = extension.map(|extension| {
        format!(
            "attachment; filename=\"{}-{id}.{extension}\"",
            safe_file_name(view_name)
        )
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        "x-query-id",
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("")),
    );
    if let Some(disposition) = disposition.and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(32)
        .collect();
    if cleaned.is_empty() {
        "result".into()
    } else {
        cleaned
    }
}

/// Sends body chunks to the client from the blocking thread.
struct Sink<'a> {
    tx: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
    query: &'a RunningQuery,
}

impl Sink<'_> {
    fn send(&self, bytes: Vec<u8>) -> Result<(), DbError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.tx.blocking_send(Ok(Bytes::from(bytes))).map_err(|_| {
            // The response body was dropped: the client is gone.
            QueryService::note_stop(self.query, StopReason::ClientGone);
            DbError::Stopped
        })
    }
}

/// Hands `first` and every later batch of `cursor` to `write`, checking for a
/// stop before each; returns the rows handed over.
fn each_batch(
    cursor: &mut Cursor<'_>,
    first: Option<arrow_array::RecordBatch>,
    should_stop: &dyn Fn() -> bool,
    mut write: impl FnMut(&arrow_array::RecordBatch) -> Result<(), DbError>,
) -> Result<usize, DbError> {
    let mut rows = 0;
    let mut next = first;
    while let Some(batch) = next {
        if should_stop() {
            return Err(DbError::Stopped);
        }
        rows += batch.num_rows();
        write(&batch)?;
        next = cursor.next_batch()?;
    }
    Ok(rows)
}

fn stream_arrow(
    cursor: &mut Cursor<'_>,
    first: Option<arrow_array::RecordBatch>,
    should_stop: &dyn Fn() -> bool,
    sink: &Sink<'_>,
) -> Result<usize, DbError> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &cursor.schema())?;
    sink.send(std::mem::take(writer.get_mut()))?;
    let rows = each_batch(cursor, first, should_stop, |batch| {
        writer.write(batch)?;
        sink.send(std::mem::take(writer.get_mut()))
    })?;
    writer.finish()?;
    sink.send(std::mem::take(writer.get_mut()))?;
    Ok(rows)
}

fn check_parquet(cursor: &Cursor<'_>) -> Result<(), DbError> {
    let Some(index) = crate::encode::parquet_unsupported(&cursor.schema()) else {
        return Ok(());
    };
    let column = &cursor.columns()[index];
    Err(DbError::Unencodable(format!(
        "column {:?} is {}, which Parquet cannot hold; cast it (e.g. to VARCHAR) or download CSV",
        column.name, column.type_name
    )))
}

/// Parquet: one row group at a time goes out as the writer finishes it
/// (the writer holds at most one row group, see `encode::parquet_writer`).
fn stream_parquet(
    cursor: &mut Cursor<'_>,
    first: Option<arrow_array::RecordBatch>,
    should_stop: &dyn Fn() -> bool,
    sink: &Sink<'_>,
) -> Result<usize, DbError> {
    // A failed write is the client gone (the sink noted it): say so rather
    // than report the writer's error.
    let failed = |error: parquet::errors::ParquetError| {
        if should_stop() {
            DbError::Stopped
        } else {
            DbError::Arrow(error.into())
        }
    };
    let out = SinkWriter {
        sink,
        buffer: Vec::new(),
    };
    let mut writer = crate::encode::parquet_writer(out, cursor.schema()).map_err(failed)?;
    let rows = each_batch(cursor, first, should_stop, |batch| {
        writer.write(batch).map_err(failed)
    })?;
    let mut out = writer.into_inner().map_err(failed)?;
    sink.send(std::mem::take(&mut out.buffer))?;
    Ok(rows)
}

/// `std::io::Write` over a [`Sink`], in chunks of at least 64 KiB.
struct SinkWriter<'a> {
    sink: &'a Sink<'a>,
    buffer: Vec<u8>,
}

impl std::io::Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink
            .send(std::mem::take(&mut self.buffer))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// Bytes gathered before a chunk of a streamed answer goes out.
const FLUSH_AT: usize = 64 * 1024;

fn stream_csv(
    cursor: &mut Cursor<'_>,
    first: Option<arrow_array::RecordBatch>,
    should_stop: &dyn Fn() -> bool,
    sink: &Sink<'_>,
) -> Result<usize, DbError> {
    let encoder = CsvEncoder::default();
    let mut buffer = Vec::with_capacity(FLUSH_AT * 2);
    encoder.header(
        cursor.columns().iter().map(|c| c.name.as_str()),
        &mut buffer,
    );
    let rows = each_batch(cursor, first, should_stop, |batch| {
        encoder.rows(batch, &mut buffer)?;
        if buffer.len() >= FLUSH_AT {
            sink.send(std::mem::take(&mut buffer))?;
        }
        Ok(())
    })?;
    sink.send(buffer)?;
    Ok(rows)
}

async fn cancel(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CancelRequest = json_body(
        &headers,
        body,
        state.max_body,
        Some(CancelRequest::default()),
    )?;
    check_query_id(&request.query_id)?;
    let service = state.service()?;
    // Only the caller's own queries: another person's are not theirs to stop.
    let caller = state.caller(&headers);
    let cancelled = match &request.query_id {
        Some(id) => usize::from(service.stop(&caller, id, StopReason::Cancelled)),
        None => service.stop_all(Some(&caller), StopReason::Cancelled),
    };
    tracing::info!(query_id = ?request.query_id, %caller, cancelled, "cancel requested");
    Ok(axum::Json(json!({ "cancelled": cancelled })).into_response())
}

async fn list_queries(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let service = Arc::clone(state.service()?);
    let caller = state.caller(&headers);
    // Progress asks DuckDB, which may take a lock briefly: off the runtime.
    let queries = tokio::task::spawn_blocking(move || service.list(&caller))
        .await
        .map_err(|e| QueryError::Internal(format!("listing queries: {e}")))?;
    Ok(axum::Json(json!({ "queries": queries })).into_response())
}

/// For `axum::serve(...).with_graceful_shutdown`: resolves on SIGTERM or
/// Ctrl-C, or once the database has failed, after telling running queries
/// to stop.
pub async fn shutdown_signal(state: Shared) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
        () = state.health.failed() => {},
    }
    tracing::info!("shutting down");
    if let Some(service) = state.service.get() {
        let stopped = service.stop_all(None, StopReason::ShuttingDown);
        if stopped > 0 {
            tracing::info!(stopped, "stopped running queries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_database_shuts_the_server_down() {
        let state = Arc::new(AppState {
            name: "v".into(),
            service: OnceLock::new(),
            max_body: 1,
            user_claim: "sub".into(),
            health: Arc::default(),
        });
        let shutdown = tokio::spawn(shutdown_signal(Arc::clone(&state)));
        tokio::task::yield_now().await;
        assert!(!shutdown.is_finished());
        state.health.fail();
        tokio::time::timeout(std::time::Duration::from_secs(5), shutdown)
            .await
            .expect("the shutdown signal fired")
            .expect("no panic");
    }

    #[test]
    fn formats() {
        assert_eq!(format_of(None).unwrap(), Format::Json);
        assert_eq!(format_of(Some("format=arrow")).unwrap(), Format::Arrow);
        assert_eq!(format_of(Some("format=csv")).unwrap(), Format::Csv);
        assert_eq!(format_of(Some("format=parquet")).unwrap(), Format::Parquet);
        assert!(format_of(Some("format=xml")).is_err());
        assert!(format_of(Some("limit=3")).is_err());
    }

    #[test]
    fn query_ids() {
        assert!(check_query_id(&Some("abc-1_2".into())).is_ok());
        assert!(check_query_id(&Some(String::new())).is_err());
        assert!(check_query_id(&Some("a b".into())).is_err());
        assert!(check_query_id(&Some("x".repeat(65))).is_err());
        assert!(check_query_id(&None).is_ok());
    }

    #[test]
    fn file_names() {
        assert_eq!(safe_file_name("sales"), "sales");
        assert_eq!(safe_file_name("../\"x"), "x");
        assert_eq!(safe_file_name(""), "result");
    }
}
