//! Running analysts' queries: one DuckDB connection per query, a registry of
//! what runs (for cancel, the statement timeout and the running-queries
//! list), a limit on how many run at once, and the translation of DuckDB's
//! failures into errors the HTTP layer can answer with.
//!
//! Each query belongs to its [`Caller`]: people sharing a view see, cancel
//! and reuse the ids of their own queries only.
//!
//! Queries are blocking DuckDB calls: [`QueryService::run`] must be called on
//! a blocking thread (`spawn_blocking`); stopping them ([`QueryService::stop`])
//! is cheap and safe from anywhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::caller::Caller;
use crate::db::{Cursor, DbError, ErrorKind, Interrupter};
use crate::engine::Engine;

/// How a query can fail, each with the HTTP status the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// DuckDB rejected the SQL (syntax, unknown table or column, type error…).
    #[error("{0}")]
    Sql(String),
    /// DuckDB's lockdown refused it (a path outside the subsets, a locked
    /// setting), or S3 refused the view's credentials.
    #[error("{0}")]
    Forbidden(String),
    /// The statement policy refused a statement: by its type, or because it
    /// would have changed the view's credentials or lake tables (then it was
    /// rolled back). `statement` names it (`CREATE SECRET`, `DROP VIEW`…).
    #[error("{reason}")]
    StatementRefused { statement: String, reason: String },
    #[error("the query was cancelled")]
    Cancelled,
    #[error("the query ran longer than the statement timeout of {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("{0}")]
    OutOfMemory(String),
    /// S3 (or the network to it) failed.
    #[error("{0}")]
    Upstream(String),
    #[error("{0} queries are running already; wait for one to finish or cancel one")]
    TooMany(usize),
    #[error("a query with id {0:?} is running already")]
    DuplicateId(String),
    /// The result holds a type the requested format cannot (Parquet).
    #[error("{0}")]
    Unencodable(String),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    /// The machine-readable code of the error body (`{error, message}`).
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Sql(_) => "sql_error",
            QueryError::Forbidden(_) => "forbidden",
            QueryError::StatementRefused { .. } => "statement_refused",
            QueryError::Cancelled => "cancelled",
            QueryError::TimedOut(_) => "timeout",
            QueryError::OutOfMemory(_) => "out_of_memory",
            QueryError::Upstream(_) => "upstream_error",
            QueryError::TooMany(_) => "too_many_queries",
            QueryError::DuplicateId(_) => "conflict",
            QueryError::Unencodable(_) => "unsupported_type",
            QueryError::Internal(_) => "internal",
        }
    }

    /// Specifics for the error body's `details`, where there are any.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            QueryError::StatementRefused { statement, .. } => {
                Some(serde_json::json!({ "statement": statement }))
            }
            _ => None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            QueryError::Sql(_) | QueryError::Unencodable(_) => 400,
            QueryError::Forbidden(_) | QueryError::StatementRefused { .. } => 403,
            QueryError::Cancelled | QueryError::DuplicateId(_) => 409,
            QueryError::TimedOut(_) | QueryError::OutOfMemory(_) => 422,
            QueryError::TooMany(_) => 429,
            QueryError::Internal(_) => 500,
            QueryError::Upstream(_) => 502,
        }
    }
}

/// Why a query was told to stop; the first reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut,
    /// The client went away (closed the connection or stopped reading).
    ClientGone,
    ShuttingDown,
}

/// Limits of the service (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub statement_timeout: Duration,
    pub max_concurrent: usize,
}

/// One running query, as the registry holds it.
pub struct RunningQuery {
    pub id: String,
    pub owner: Caller,
    sql: String,
    started: Instant,
    stop: Mutex<Option<StopReason>>,
    interrupter: Mutex<Option<Interrupter>>,
}

impl RunningQuery {
    fn stop_reason(&self) -> Option<StopReason> {
        *lock(&self.stop)
    }

    fn should_stop(&self) -> bool {
        self.stop_reason().is_some()
    }
}

/// A running query as `GET /api/queries` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryInfo {
    pub id: String,
    /// The first 200 characters of the SQL.
    pub sql: String,
    /// Seconds since it started.
    pub elapsed: f64,
    /// DuckDB's progress estimate in percent, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

/// Removes the query from the registry when the run ends, however it ends.
pub struct Registration {
    service: Arc<QueryService>,
    pub query: Arc<RunningQuery>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.service.running).remove(&(self.query.owner.clone(), self.query.id.clone()));
    }
}

pub struct QueryService {
    engine: Arc<Engine>,
    pub limits: Limits,
    /// By owner and id: ids are per caller.
    running: Mutex<HashMap<(Caller, String), Arc<RunningQuery>>>,
    next_id: AtomicU64,
    health: Arc<Health>,
}

/// Whether the database is still usable. DuckDB invalidates it for good
/// after a fatal or internal error: the view then stops being ready, stops
/// serving and exits with an error, so that its container restarts with a
/// fresh database (restartPolicy OnFailure; the Job's backoff limit ends a
/// view that keeps failing) instead of staying unready until its deadline.
#[derive(Debug)]
pub struct Health(tokio::sync::watch::Sender<bool>);

impl Default for Health {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }
}

impl Health {
    pub fn fail(&self) {
        self.0.send_replace(true);
    }

    pub fn is_failed(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the database has failed.
    pub async fn failed(&self) {
        let _ = self.0.subscribe().wait_for(|failed| *failed).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn every later request into a panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl QueryService {
    pub fn new(engine: Arc<Engine>, limits: Limits, health: Arc<Health>) -> Arc<Self> {
        Arc::new(QueryService {
            engine,
            limits,
            running: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            health,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether the engine is still usable (no fatal DuckDB error so far).
    pub fn healthy(&self) -> bool {
        !self.health.is_failed()
    }

    /// Register `owner`'s query before it runs: refuses when too many run,
    /// or when `owner` uses a client-chosen id already.
    pub fn register(
        self: &Arc<Self>,
        owner: &Caller,
        id: Option<String>,
        sql: &str,
    ) -> Result<Registration, QueryError> {
        let mut running = lock(&self.running);
        if running.len() >= self.limits.max_concurrent {
            return Err(QueryError::TooMany(running.len()));
        }
        let id = match id {
            Some(id) if running.contains_key(&(owner.clone(), id.clone())) => {
                return Err(QueryError::DuplicateId(id));
            }
            Some(id) => id,
            None => format!("q{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
        };
        let query = Arc::new(RunningQuery {
            id: id.clone(),
            owner: owner.clone(),
            sql: sql.chars().take(200).collect(),
            started: Instant::now(),
            stop: Mutex::new(None),
            interrupter: Mutex::new(None),
        });
        running.insert((owner.clone(), id), Arc::clone(&query));
        Ok(Registration {
            service: Arc::clone(self),
            query,
        })
    }

    /// Tell `owner`'s query `id` to stop: records why (first reason wins)
    /// and interrupts DuckDB if it is inside a statement. Returns whether
    /// `owner` had such a query running.
    pub fn stop(&self, owner: &Caller, id: &str, reason: StopReason) -> bool {
        let Some(query) = lock(&self.running)
            .get(&(owner.clone(), id.to_owned()))
            .cloned()
        else {
            return false;
        };
        Self::stop_query(&query, reason);
        true
    }

    fn stop_query(query: &RunningQuery, reason: StopReason) {
        lock(&query.stop).get_or_insert(reason);
        if let Some(interrupter) = lock(&query.interrupter).as_ref() {
            interrupter.interrupt();
        }
    }

    /// Stop every running query of `owner`, or of everyone (shutting down);
    /// returns how many.
    pub fn stop_all(&self, owner: Option<&Caller>, reason: StopReason) -> usize {
        let queries: Vec<_> = lock(&self.running)
            .values()
            .filter(|query| owner.is_none_or(|owner| query.owner == *owner))
            .cloned()
            .collect();
        for query in &queries {
            Self::stop_query(query, reason);
        }
        queries.len()
    }

    /// `owner`'s running queries, the longest-running first.
    pub fn list(&self, owner: &Caller) -> Vec<QueryInfo> {
        let mut infos: Vec<QueryInfo> = lock(&self.running)
            .values()
            .filter(|q| q.owner == *owner)
            .map(|q| QueryInfo {
                id: q.id.clone(),
                sql: q.sql.clone(),
                elapsed: q.started.elapsed().as_secs_f64(),
                progress: lock(&q.interrupter)
                    .as_ref()
                    .and_then(Interrupter::progress),
            })
            .collect();
        infos.sort_by(|a, b| b.elapsed.total_cmp(&a.elapsed));
        infos
    }

    /// Run `sql` for a registered query on a fresh connection and hand its
    /// result cursor to `consume` (with a "should I stop" check for its
    /// loop). Blocking.
    pub fn run<T>(
        &self,
        query: &RunningQuery,
        sql: &str,
        consume: impl FnOnce(&mut Cursor<'_>, &dyn Fn() -> bool) -> Result<T, DbError>,
    ) -> Result<T, QueryError> {
        let mut conn = self
            .engine
            .connect()
            .map_err(|e| self.translate(e, query))?;
        *lock(&query.interrupter) = Some(conn.interrupter());
        // A stop that came before the interrupter was set must still count.
        if query.should_stop() {
            return Err(self.translate(DbError::Stopped, query));
        }
        let should_stop = || query.should_stop();
        let result = conn
            .query(sql, &self.engine.policy, &should_stop)
            .and_then(|mut cursor| consume(&mut cursor, &should_stop));
        *lock(&query.interrupter) = None;
        result.map_err(|error| self.translate(error, query))
    }

    /// Mark a query stopped for `reason` (used by consumers that notice the
    /// client is gone), so the error it ends with says why.
    pub fn note_stop(query: &RunningQuery, reason: StopReason) {
        lock(&query.stop).get_or_insert(reason);
    }

    /// DuckDB's error, in the API's terms.
    pub fn translate(&self, error: DbError, query: &RunningQuery) -> QueryError {
        match error {
            DbError::Duckdb {
                kind: ErrorKind::Interrupt,
                ..
            }
            | DbError::Stopped => match query.stop_reason() {
                Some(StopReason::TimedOut) => QueryError::TimedOut(self.limits.statement_timeout),
                _ => QueryError::Cancelled,
            },
            DbError::Refused { statement, reason } => {
                QueryError::StatementRefused { statement, reason }
            }
            DbError::Nul => QueryError::Sql(DbError::Nul.to_string()),
            DbError::Empty => QueryError::Sql(DbError::Empty.to_string()),
            DbError::Unencodable(message) => QueryError::Unencodable(message),
            DbError::Arrow(error) => {
                QueryError::Internal(format!("converting the result: {error}"))
            }
            DbError::Duckdb { kind, message } => self.translate_duckdb(kind, message),
        }
    }

    fn translate_duckdb(&self, kind: ErrorKind, message: String) -> QueryError {
        match kind {
            ErrorKind::Permission => QueryError::Forbidden(format!(
                "{message}\n(The view reads only its subsets: {}.)",
                self.engine.lake.prefix_urls().join(", ")
            )),
            ErrorKind::InvalidInput if message.contains("configuration has been locked") => {
                QueryError::Forbidden(format!("{message}\n(The view's configuration is fixed.)"))
            }
            ErrorKind::OutOfMemory => QueryError::OutOfMemory(message),
            ErrorKind::Http if message.contains("(HTTP 403") => QueryError::Forbidden(format!(
                "{message}\n(S3 refused the view's credentials for this object.)"
            )),
            ErrorKind::Http if message.contains("(HTTP 404") => QueryError::Sql(message),
            ErrorKind::Http => QueryError::Upstream(message),
            ErrorKind::Other if is_fatal(&message) => {
                // DuckDB invalidates the database after a fatal or internal
                // error (see `Health`).
                self.health.fail();
                tracing::error!(%message, "DuckDB reported a fatal error; the view stops and restarts");
                QueryError::Internal(message)
            }
            _ => QueryError::Sql(message),
        }
    }
}

fn is_fatal(message: &str) -> bool {
    message.starts_with("FATAL Error") || message.starts_with("INTERNAL Error")
}

/// Collect up to `max_rows` rows as JSON; fetches one more chunk when the
/// limit is reached exactly, to tell whether the result was cut.
pub fn collect_json(
    cursor: &mut Cursor<'_>,
    should_stop: &dyn Fn() -> bool,
    max_rows: usize,
) -> Result<(Vec<Vec<serde_json::Value>>, bool), DbError> {
    let mut rows = Vec::new();
    let mut truncated = false;
    while let Some(batch) = cursor.next_batch()? {
        if should_stop() {
            return Err(DbError::Stopped);
        }
        let room = max_rows - rows.len();
        if room == 0 {
            truncated = batch.num_rows() > 0;
            break;
        }
        rows.extend(crate::encode::json_rows(&batch, room)?);
        if batch.num_rows() > room {
            truncated = true;
            break;
        }
    }
    Ok((rows, truncated))
}
