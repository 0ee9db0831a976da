//! A small safe layer over DuckDB's C API (`libduckdb-sys`, linked against
//! the prebuilt `libduckdb.so`): an in-memory database, connections that can
//! be interrupted from another thread, and statements executed one at a time
//! so that each can be checked ([`StatementCheck`]) before it runs — and,
//! where the check asks for it, verified inside a transaction of its own
//! before it commits — with the last one's result streamed as Arrow record
//! batches.
//!
//! Why not the `duckdb` crate: it executes all but the last statement of a
//! multi-statement string before the caller sees any of them, and hides both
//! the statement type and DuckDB's error type, which the view needs to
//! refuse statements and to map errors to HTTP statuses.
//!
//! Every `unsafe` block here follows the ownership rules in DuckDB's
//! `duckdb.h` (quoted next to each): what is created is destroyed exactly
//! once, in `Drop`, and nothing outlives the connection it came from.

use std::ffi::{CStr, CString, c_char};
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi};
use arrow_array::{RecordBatch, StructArray};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use libduckdb_sys as ffi;

/// Errors of this module: DuckDB's own (with its error class), refusals by
/// the caller's statement policy, and the few ways the glue itself can fail.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// DuckDB refused or failed the statement; `message` is DuckDB's text.
    #[error("{message}")]
    Duckdb { kind: ErrorKind, message: String },
    /// The statement check refused a statement: before it ran, or after it
    /// ran in its own transaction, which was then rolled back.
    #[error("{reason}")]
    Refused {
        /// What was refused, as people name it (`CREATE SECRET`, `ATTACH`…).
        statement: String,
        reason: String,
    },
    /// The caller asked to stop (cancel, timeout, client gone) between
    /// statements or result chunks.
    #[error("the query was stopped")]
    Stopped,
    /// SQL text cannot be passed to DuckDB's C API with a NUL character in it.
    #[error("the SQL text contains a NUL character")]
    Nul,
    /// The SQL text holds no statement (only whitespace or comments).
    #[error("there is no SQL statement to run")]
    Empty,
    /// A result could not be converted to Arrow.
    #[error("converting the result to Arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The result has a type the requested download format cannot hold
    /// (Parquet has no `INTERVAL` of months, days and nanoseconds…).
    #[error("{0}")]
    Unencodable(String),
}

impl DbError {
    fn duckdb(message: impl Into<String>) -> Self {
        let message = message.into();
        DbError::Duckdb {
            kind: ErrorKind::from_message(&message),
            message,
        }
    }
}

/// DuckDB's error classes that the view treats differently; the rest is
/// `Other`. Read from the message prefix DuckDB always writes ("Parser
/// Error: …"), because the C API reports the class for executed results
/// only, not for failed prepares (where permission errors surface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Parser,
    Binder,
    Catalog,
    Permission,
    Interrupt,
    OutOfMemory,
    Http,
    Io,
    InvalidInput,
    Other,
}

impl ErrorKind {
    pub fn from_message(message: &str) -> Self {
        let class = message.split_once(" Error:").map_or("", |(class, _)| class);
        match class {
            "Parser" | "Syntax" => ErrorKind::Parser,
            "Binder" => ErrorKind::Binder,
            "Catalog" => ErrorKind::Catalog,
            "Permission" => ErrorKind::Permission,
            "INTERRUPT" => ErrorKind::Interrupt,
            "Out of Memory" => ErrorKind::OutOfMemory,
            "HTTP" => ErrorKind::Http,
            "IO" => ErrorKind::Io,
            "Invalid Input" => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        }
    }
}

/// The kind of a SQL statement, as DuckDB's planner classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementType {
    Select,
    Insert,
    Update,
    Explain,
    Delete,
    Prepare,
    Create,
    Execute,
    Alter,
    Transaction,
    Copy,
    Analyze,
    VariableSet,
    CreateFunc,
    Drop,
    Export,
    Pragma,
    Vacuum,
    Call,
    Set,
    Load,
    Relation,
    Extension,
    LogicalPlan,
    Attach,
    Detach,
    Multi,
    CopyDatabase,
    UpdateExtensions,
    MergeInto,
    Invalid,
}

impl StatementType {
    fn from_ffi(value: ffi::duckdb_statement_type) -> Self {
        use StatementType::*;
        match value {
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => Select,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT => Insert,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE => Update,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => Explain,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE => Delete,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PREPARE => Prepare,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE => Create,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXECUTE => Execute,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER => Alter,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => Transaction,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY => Copy,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE => Analyze,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VARIABLE_SET => VariableSet,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC => CreateFunc,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP => Drop,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT => Export,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA => Pragma,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM => Vacuum,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CALL => Call,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SET => Set,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD => Load,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_RELATION => Relation,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXTENSION => Extension,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOGICAL_PLAN => LogicalPlan,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH => Attach,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DETACH => Detach,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MULTI => Multi,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY_DATABASE => CopyDatabase,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE_EXTENSIONS => UpdateExtensions,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MERGE_INTO => MergeInto,
            _ => Invalid,
        }
    }

    /// The SQL keyword(s) people know the statement by.
    pub fn as_str(self) -> &'static str {
        use StatementType::*;
        match self {
            Select => "SELECT",
            Insert => "INSERT",
            Update => "UPDATE",
            Explain => "EXPLAIN",
            Delete => "DELETE",
            Prepare => "PREPARE",
            Create => "CREATE",
            Execute => "EXECUTE",
            Alter => "ALTER",
            Transaction => "TRANSACTION",
            Copy => "COPY",
            Analyze => "ANALYZE",
            VariableSet => "SET VARIABLE",
            CreateFunc => "CREATE FUNCTION",
            Drop => "DROP",
            Export => "EXPORT",
            Pragma => "PRAGMA",
            Vacuum => "VACUUM",
            Call => "CALL",
            Set => "SET",
            Load => "LOAD/INSTALL",
            Relation => "RELATION",
            Extension => "EXTENSION",
            LogicalPlan => "LOGICAL PLAN",
            Attach => "ATTACH",
            Detach => "DETACH",
            Multi => "MULTI",
            CopyDatabase => "COPY FROM DATABASE",
            UpdateExtensions => "UPDATE EXTENSIONS",
            MergeInto => "MERGE INTO",
            Invalid => "INVALID",
        }
    }
}

/// How [`Connection::query`] runs a statement the check admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// As it is (reads: their result streams).
    Direct,
    /// Inside a transaction of its own: the check's
    /// [`StatementCheck::verify`] runs after it, before the commit, and a
    /// failed verification rolls it back. Its result is materialised (it must
    /// exist before the commit), which suits what such statements return.
    Verified,
}

/// What [`Connection::query`] asks about every statement of the SQL it runs,
/// once DuckDB has prepared it (so the type is DuckDB's own classification,
/// not a guess from the text) and before it runs.
pub trait StatementCheck {
    /// Refuse the statement (`DbError::Refused`), or say how to run it.
    fn admit(&self, kind: StatementType) -> Result<Execution, DbError>;

    /// For [`Execution::Verified`] statements: called on the same
    /// connection, inside the statement's transaction, after it ran. An error
    /// rolls the statement back and is returned.
    fn verify(&self, conn: &mut Connection, kind: StatementType) -> Result<(), DbError>;
}

/// Admits every statement, to run directly: for the view's own set-up and
/// catalog queries, never for user input.
pub struct Unchecked;

impl StatementCheck for Unchecked {
    fn admit(&self, _: StatementType) -> Result<Execution, DbError> {
        Ok(Execution::Direct)
    }

    fn verify(&self, _: &mut Connection, _: StatementType) -> Result<(), DbError> {
        Ok(())
    }
}

/// The version of the linked `libduckdb`, e.g. `v1.5.5`.
pub fn library_version() -> String {
    // duckdb.h: returns a static string; not to be freed.
    unsafe { CStr::from_ptr(ffi::duckdb_library_version()) }
        .to_string_lossy()
        .into_owned()
}

/// An in-memory DuckDB database. Connections keep it alive.
pub struct Database {
    raw: ffi::duckdb_database,
}

// SAFETY: a DuckDB database instance is internally synchronised: connections
// may be created from any thread, and `duckdb_close` runs once, in Drop.
unsafe impl Send for Database {}
unsafe impl Sync for Database {}

impl Database {
    /// Open an in-memory database with start-up options (`name`, `value`),
    /// as `duckdb_set_config` takes them.
    pub fn open_in_memory(options: &[(&str, String)]) -> Result<Arc<Self>, DbError> {
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // duckdb.h: "duckdb_destroy_config should always be called on the resulting config".
        let guard = ConfigGuard(&mut config as *mut _);
        if unsafe { ffi::duckdb_create_config(guard.get()) } != ffi::DuckDBSuccess {
            return Err(DbError::duckdb(
                "Connection Error: cannot allocate a DuckDB configuration",
            ));
        }
        for (name, value) in options {
            let c_name = CString::new(*name).map_err(|_| DbError::Nul)?;
            let c_value = CString::new(value.as_str()).map_err(|_| DbError::Nul)?;
            let state =
                unsafe { ffi::duckdb_set_config(config, c_name.as_ptr(), c_value.as_ptr()) };
            if state != ffi::DuckDBSuccess {
                return Err(DbError::duckdb(format!(
                    "Invalid Input Error: DuckDB refused the setting {name} = {value:?}"
                )));
            }
        }
        let mut raw: ffi::duckdb_database = ptr::null_mut();
        let mut error: *mut c_char = ptr::null_mut();
        let state = unsafe { ffi::duckdb_open_ext(ptr::null(), &mut raw, config, &mut error) };
        drop(guard);
        if state != ffi::DuckDBSuccess {
            let message = if error.is_null() {
                "Connection Error: cannot open DuckDB".to_string()
            } else {
                // duckdb.h: "the error message must be freed using duckdb_free".
                let text = unsafe { CStr::from_ptr(error) }
                    .to_string_lossy()
                    .into_owned();
                unsafe { ffi::duckdb_free(error.cast()) };
                text
            };
            if !raw.is_null() {
                unsafe { ffi::duckdb_close(&mut raw) };
            }
            return Err(DbError::duckdb(message));
        }
        Ok(Arc::new(Database { raw }))
    }

    /// A new connection (its own transaction state, its own interrupt).
    pub fn connect(self: &Arc<Self>) -> Result<Connection, DbError> {
        let mut raw: ffi::duckdb_connection = ptr::null_mut();
        if unsafe { ffi::duckdb_connect(self.raw, &mut raw) } != ffi::DuckDBSuccess {
            if !raw.is_null() {
                unsafe { ffi::duckdb_disconnect(&mut raw) };
            }
            return Err(DbError::duckdb(
                "Connection Error: cannot connect to DuckDB",
            ));
        }
        Ok(Connection {
            raw: Arc::new(RawConnection {
                raw,
                _db: Arc::clone(self),
            }),
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_close(&mut self.raw) };
    }
}

struct ConfigGuard(*mut ffi::duckdb_config);

impl ConfigGuard {
    fn get(&self) -> *mut ffi::duckdb_config {
        self.0
    }
}

impl Drop for ConfigGuard {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_destroy_config(self.0) };
    }
}

/// The connection handle, shared between the thread running statements and
/// whoever may interrupt them. Disconnects when the last holder is gone, and
/// keeps the database open until then.
struct RawConnection {
    raw: ffi::duckdb_connection,
    _db: Arc<Database>,
}

// SAFETY: `duckdb_interrupt` and `duckdb_query_progress` are meant to be
// called from another thread while the connection runs a query; everything
// else goes through `Connection`, whose methods take `&mut self`, so one
// thread at a time runs statements on it.
unsafe impl Send for RawConnection {}
unsafe impl Sync for RawConnection {}

impl Drop for RawConnection {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_disconnect(&mut self.raw) };
    }
}

/// A DuckDB connection: runs statements, one thread at a time.
pub struct Connection {
    raw: Arc<RawConnection>,
}

/// Stops the statement running on a connection, from any thread.
#[derive(Clone)]
pub struct Interrupter {
    raw: Arc<RawConnection>,
}

impl Interrupter {
    /// Interrupt the running statement: it fails with an INTERRUPT error.
    /// A no-op when nothing runs (so callers also keep their own stop flag).
    pub fn interrupt(&self) {
        unsafe { ffi::duckdb_interrupt(self.raw.raw) };
    }

    /// How far the running statement is, in percent (`None` when unknown).
    pub fn progress(&self) -> Option<f64> {
        let progress = unsafe { ffi::duckdb_query_progress(self.raw.raw) };
        (progress.percentage >= 0.0).then_some(progress.percentage)
    }
}

impl Connection {
    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            raw: Arc::clone(&self.raw),
        }
    }

    /// Run SQL (any number of statements) for its effect, without a policy:
    /// for the view's own set-up, never for user input.
    pub fn execute_batch(&mut self, sql: &str) -> Result<(), DbError> {
        let c_sql = CString::new(sql).map_err(|_| DbError::Nul)?;
        let mut result = ResultGuard::zeroed();
        let state = unsafe { ffi::duckdb_query(self.raw.raw, c_sql.as_ptr(), result.as_mut_ptr()) };
        if state != ffi::DuckDBSuccess {
            return Err(result.error());
        }
        Ok(())
    }

    /// Run SQL for its result, without a policy (set-up and catalog queries).
    pub fn query_all(&mut self, sql: &str) -> Result<Vec<RecordBatch>, DbError> {
        let mut cursor = self.query(sql, &Unchecked, &|| false)?;
        let mut batches = Vec::new();
        while let Some(batch) = cursor.next_batch()? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Run the statements of `sql` one by one. Each is prepared (parsed and
    /// bound) and admitted by `check` before it runs (see [`Execution`] for
    /// how); all but the last are executed to completion, the last is
    /// returned as a cursor. `stop` is asked between statements and chunks,
    /// so a cancel that arrives while no statement runs (an interrupt would
    /// be lost then) still stops the query.
    pub fn query(
        &mut self,
        sql: &str,
        check: &dyn StatementCheck,
        stop: &dyn Fn() -> bool,
    ) -> Result<Cursor<'_>, DbError> {
        let c_sql = CString::new(sql).map_err(|_| DbError::Nul)?;
        let mut extracted = ExtractedGuard(ptr::null_mut());
        let count = unsafe {
            ffi::duckdb_extract_statements(self.raw.raw, c_sql.as_ptr(), &mut extracted.0)
        };
        if count == 0 {
            let error = unsafe { ffi::duckdb_extract_statements_error(extracted.0) };
            if error.is_null() {
                return Err(DbError::Empty);
            }
            // duckdb.h: the error is owned by the extracted statements.
            let message = unsafe { CStr::from_ptr(error) }
                .to_string_lossy()
                .into_owned();
            if message.is_empty() {
                return Err(DbError::Empty);
            }
            return Err(DbError::duckdb(message));
        }
        for index in 0..count {
            if stop() {
                return Err(DbError::Stopped);
            }
            let mut prepared = PreparedGuard(ptr::null_mut());
            let state = unsafe {
                ffi::duckdb_prepare_extracted_statement(
                    self.raw.raw,
                    extracted.0,
                    index,
                    &mut prepared.0,
                )
            };
            if state != ffi::DuckDBSuccess {
                return Err(prepared.error());
            }
            let kind =
                StatementType::from_ffi(unsafe { ffi::duckdb_prepared_statement_type(prepared.0) });
            let last = index + 1 == count;
            let mut result = ResultGuard::zeroed();
            match check.admit(kind)? {
                Execution::Verified => {
                    self.execute_verified(&prepared, &mut result, check, kind)?
                }
                Execution::Direct if !last => {
                    let state =
                        unsafe { ffi::duckdb_execute_prepared(prepared.0, result.as_mut_ptr()) };
                    if state != ffi::DuckDBSuccess {
                        return Err(result.error());
                    }
                }
                Execution::Direct => {
                    // Streaming, so a large result is produced chunk by chunk
                    // as it is fetched (and a row limit stops the work), not
                    // materialised. The C API marks this call for removal in
                    // a future release; the pinned 1.5 has it, and duckdb-rs
                    // relies on it too.
                    let state = unsafe {
                        ffi::duckdb_execute_prepared_streaming(prepared.0, result.as_mut_ptr())
                    };
                    if state != ffi::DuckDBSuccess {
                        return Err(result.error());
                    }
                }
            }
            if last {
                return Cursor::new(result, kind);
            }
        }
        unreachable!("count > 0 and the last statement returns")
    }

    /// BEGIN, run, verify, COMMIT; ROLLBACK when the statement or its
    /// verification fails. Each request has a connection of its own and
    /// transaction statements are never admitted directly, so no transaction
    /// is open here. Until the COMMIT, other connections do not see the
    /// change (DuckDB's catalog, secrets included, is transactional).
    fn execute_verified(
        &mut self,
        prepared: &PreparedGuard,
        result: &mut ResultGuard,
        check: &dyn StatementCheck,
        kind: StatementType,
    ) -> Result<(), DbError> {
        self.execute_batch("BEGIN TRANSACTION")?;
        let state = unsafe { ffi::duckdb_execute_prepared(prepared.0, result.as_mut_ptr()) };
        let outcome = if state == ffi::DuckDBSuccess {
            check.verify(self, kind)
        } else {
            Err(result.error())
        };
        match outcome {
            Ok(()) => self.execute_batch("COMMIT"),
            Err(error) => {
                // A failed rollback leaves the transaction to the connection's
                // end, which rolls it back too; the statement's error is the news.
                if let Err(rollback) = self.execute_batch("ROLLBACK") {
                    tracing::warn!(%rollback, "rolling back a refused statement failed");
                }
                Err(error)
            }
        }
    }
}

struct ExtractedGuard(ffi::duckdb_extracted_statements);

impl Drop for ExtractedGuard {
    fn drop(&mut self) {
        // duckdb.h: "should always be destroyed … even if no statements were extracted".
        unsafe { ffi::duckdb_destroy_extracted(&mut self.0) };
    }
}

struct PreparedGuard(ffi::duckdb_prepared_statement);

impl PreparedGuard {
    fn error(&self) -> DbError {
        let error = unsafe { ffi::duckdb_prepare_error(self.0) };
        if error.is_null() {
            return DbError::duckdb("Invalid Error: preparing the statement failed");
        }
        // duckdb.h: owned by the prepared statement; not to be freed.
        DbError::duckdb(
            unsafe { CStr::from_ptr(error) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Drop for PreparedGuard {
    fn drop(&mut self) {
        // duckdb.h: "should always be destroyed … even if the prepare fails".
        unsafe { ffi::duckdb_destroy_prepare(&mut self.0) };
    }
}

/// A `duckdb_result` that is destroyed when dropped ("even if the query
/// fails", duckdb.h).
struct ResultGuard {
    result: ffi::duckdb_result,
}

impl ResultGuard {
    fn zeroed() -> Self {
        ResultGuard {
            // SAFETY: duckdb_result is a plain C struct; all-zero is the
            // state DuckDB expects to fill (and safely destroys).
            result: unsafe { std::mem::zeroed() },
        }
    }

    fn as_mut_ptr(&mut self) -> *mut ffi::duckdb_result {
        &mut self.result
    }

    fn error(&mut self) -> DbError {
        let error = unsafe { ffi::duckdb_result_error(&mut self.result) };
        if error.is_null() {
            return DbError::duckdb("Invalid Error: the statement failed");
        }
        let message = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        let kind = match unsafe { ffi::duckdb_result_error_type(&mut self.result) } {
            ffi::duckdb_error_type_DUCKDB_ERROR_INTERRUPT => ErrorKind::Interrupt,
            ffi::duckdb_error_type_DUCKDB_ERROR_PERMISSION => ErrorKind::Permission,
            ffi::duckdb_error_type_DUCKDB_ERROR_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
            ffi::duckdb_error_type_DUCKDB_ERROR_HTTP => ErrorKind::Http,
            ffi::duckdb_error_type_DUCKDB_ERROR_IO => ErrorKind::Io,
            _ => ErrorKind::from_message(&message),
        };
        DbError::Duckdb { kind, message }
    }
}

impl Drop for ResultGuard {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_destroy_result(&mut self.result) };
    }
}

/// A result column: its name and DuckDB type name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// The result of the last statement, fetched chunk by chunk as Arrow
/// record batches. Borrows its connection: nothing else runs on it meanwhile.
pub struct Cursor<'c> {
    result: ResultGuard,
    arrow_options: ffi::duckdb_arrow_options,
    ffi_schema: FFI_ArrowSchema,
    schema: SchemaRef,
    columns: Vec<Column>,
    statement_type: StatementType,
    done: bool,
    _connection: PhantomData<&'c mut Connection>,
}

impl Cursor<'_> {
    fn new(mut result: ResultGuard, statement_type: StatementType) -> Result<Self, DbError> {
        // duckdb.h: "must be destroyed with duckdb_destroy_arrow_options" (in Drop).
        let arrow_options = unsafe { ffi::duckdb_result_get_arrow_options(result.as_mut_ptr()) };
        let mut cursor = Cursor {
            result,
            arrow_options,
            ffi_schema: FFI_ArrowSchema::empty(),
            schema: Arc::new(Schema::empty()),
            columns: Vec::new(),
            statement_type,
            done: false,
            _connection: PhantomData,
        };
        if arrow_options.is_null() {
            return Err(DbError::duckdb(
                "Invalid Error: no Arrow options for the result",
            ));
        }
        let count = unsafe { ffi::duckdb_column_count(cursor.result.as_mut_ptr()) } as usize;
        let mut types = TypesGuard(Vec::with_capacity(count));
        let mut names = Vec::with_capacity(count);
        for index in 0..count {
            let name =
                unsafe { ffi::duckdb_column_name(cursor.result.as_mut_ptr(), index as ffi::idx_t) };
            // duckdb.h: the name is owned by the result; not to be freed.
            let name = if name.is_null() {
                CString::default()
            } else {
                unsafe { CStr::from_ptr(name) }.to_owned()
            };
            let logical = unsafe {
                ffi::duckdb_column_logical_type(cursor.result.as_mut_ptr(), index as ffi::idx_t)
            };
            if logical.is_null() {
                return Err(DbError::duckdb(format!(
                    "Invalid Error: no type for result column {index}"
                )));
            }
            types.0.push(logical);
            cursor.columns.push(Column {
                name: name.to_string_lossy().into_owned(),
                type_name: type_name(logical),
            });
            names.push(name);
        }
        let mut name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let error = unsafe {
            ffi::duckdb_to_arrow_schema(
                arrow_options,
                types.0.as_mut_ptr(),
                name_ptrs.as_mut_ptr(),
                count as ffi::idx_t,
                (&mut cursor.ffi_schema as *mut FFI_ArrowSchema).cast(),
            )
        };
        error_data(error)?;
        cursor.schema = Arc::new(Schema::try_from(&cursor.ffi_schema)?);
        Ok(cursor)
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn statement_type(&self) -> StatementType {
        self.statement_type
    }

    /// The next chunk of rows (up to DuckDB's vector size, 2048), or `None`
    /// at the end. Errors that happen while producing rows (a failed S3 read,
    /// an interrupt) surface here.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, DbError> {
        if self.done {
            return Ok(None);
        }
        // duckdb.h: "Returns NULL if the result has an error"; the chunk
        // "must be destroyed with duckdb_destroy_data_chunk".
        let chunk = unsafe { ffi::duckdb_fetch_chunk(self.result.result) };
        if chunk.is_null() {
            self.done = true;
            let error = unsafe { ffi::duckdb_result_error(self.result.as_mut_ptr()) };
            if !error.is_null() {
                return Err(self.result.error());
            }
            return Ok(None);
        }
        let chunk = ChunkGuard(chunk);
        if unsafe { ffi::duckdb_data_chunk_get_size(chunk.0) } == 0 {
            self.done = true;
            return Ok(None);
        }
        let mut array = FFI_ArrowArray::empty();
        let error = unsafe {
            ffi::duckdb_data_chunk_to_arrow(
                self.arrow_options,
                chunk.0,
                (&mut array as *mut FFI_ArrowArray).cast(),
            )
        };
        drop(chunk);
        error_data(error)?;
        // SAFETY: `array` was just filled by DuckDB for `ffi_schema`'s type
        // (a struct of the result's columns); from_ffi takes ownership and
        // releases it when the imported data is dropped.
        let data = unsafe { from_ffi(array, &self.ffi_schema) }?;
        let batch = RecordBatch::from(StructArray::from(data));
        // Keep the schema's field names (DuckDB may repeat a column name).
        Ok(Some(batch.with_schema(Arc::clone(&self.schema))?))
    }
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        if !self.arrow_options.is_null() {
            unsafe { ffi::duckdb_destroy_arrow_options(&mut self.arrow_options) };
        }
    }
}

struct ChunkGuard(ffi::duckdb_data_chunk);

impl Drop for ChunkGuard {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { ffi::duckdb_destroy_data_chunk(&mut self.0) };
        }
    }
}

struct TypesGuard(Vec<ffi::duckdb_logical_type>);

impl Drop for TypesGuard {
    fn drop(&mut self) {
        for logical in &mut self.0 {
            unsafe { ffi::duckdb_destroy_logical_type(logical) };
        }
    }
}

/// Turn a `duckdb_error_data` into a Result, destroying it.
fn error_data(mut error: ffi::duckdb_error_data) -> Result<(), DbError> {
    if error.is_null() {
        return Ok(());
    }
    let result = if unsafe { ffi::duckdb_error_data_has_error(error) } {
        let message = unsafe { ffi::duckdb_error_data_message(error) };
        let message = if message.is_null() {
            "Invalid Error: converting to Arrow failed".to_string()
        } else {
            unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned()
        };
        Err(DbError::duckdb(message))
    } else {
        Ok(())
    };
    unsafe { ffi::duckdb_destroy_error_data(&mut error) };
    result
}

/// A DuckDB type's SQL name, for the result's column list.
fn type_name(logical: ffi::duckdb_logical_type) -> String {
    // An alias (for example JSON for a VARCHAR) is what people wrote.
    let alias = unsafe { ffi::duckdb_logical_type_get_alias(logical) };
    if !alias.is_null() {
        let name = unsafe { CStr::from_ptr(alias) }
            .to_string_lossy()
            .into_owned();
        // duckdb.h: "must be freed with duckdb_free".
        unsafe { ffi::duckdb_free(alias.cast()) };
        if !name.is_empty() {
            return name;
        }
    }
    let id = unsafe { ffi::duckdb_get_type_id(logical) };
    let name = match id {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => "BOOLEAN",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => "TINYINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => "SMALLINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => "INTEGER",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => "BIGINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => "UTINYINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => "USMALLINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => "UINTEGER",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => "UBIGINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => "FLOAT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => "DOUBLE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => "TIMESTAMP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => "DATE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME => "TIME",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL => "INTERVAL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => "HUGEINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT => "UHUGEINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => "VARCHAR",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => "BLOB",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => {
            let width = unsafe { ffi::duckdb_decimal_width(logical) };
            let scale = unsafe { ffi::duckdb_decimal_scale(logical) };
            return format!("DECIMAL({width},{scale})");
        }
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S => "TIMESTAMP_S",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS => "TIMESTAMP_MS",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => "TIMESTAMP_NS",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM => "ENUM",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => "LIST",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => "STRUCT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_MAP => "MAP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ARRAY => "ARRAY",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID => "UUID",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UNION => "UNION",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIT => "BIT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_TZ => "TIME WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ => "TIMESTAMP WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGNUM => "BIGNUM",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => "NULL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_NS => "TIME_NS",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_GEOMETRY => "GEOMETRY",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARIANT => "VARIANT",
        _ => "UNKNOWN",
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Connection {
        Database::open_in_memory(&[("threads", "1".into())])
            .unwrap()
            .connect()
            .unwrap()
    }

    #[test]
    fn streams_a_result_in_chunks() {
        let mut conn = connect();
        let mut cursor = conn
            .query(
                "SELECT range AS n, 'x' || range AS s FROM range(5000)",
                &Unchecked,
                &|| false,
            )
            .unwrap();
        assert_eq!(cursor.columns()[0].type_name, "BIGINT");
        assert_eq!(cursor.columns()[1].type_name, "VARCHAR");
        assert_eq!(cursor.statement_type(), StatementType::Select);
        let mut rows = 0;
        while let Some(batch) = cursor.next_batch().unwrap() {
            rows += batch.num_rows();
        }
        assert_eq!(rows, 5000);
    }

    #[test]
    fn runs_statements_in_order_and_returns_the_last() {
        let mut conn = connect();
        let batches = conn
            .query_all("CREATE TABLE t AS SELECT 42 AS x; SELECT x FROM t")
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    }

    fn count(conn: &mut Connection, sql: &str) -> i64 {
        let batches = conn.query_all(sql).unwrap();
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap()
            .value(0)
    }

    /// Refuses ATTACH up front; runs CREATE verified, and refuses after the
    /// fact any that leaves a table named `guarded`.
    struct TestCheck;

    impl StatementCheck for TestCheck {
        fn admit(&self, kind: StatementType) -> Result<Execution, DbError> {
            match kind {
                StatementType::Attach => Err(DbError::Refused {
                    statement: "ATTACH".into(),
                    reason: "no ATTACH".into(),
                }),
                StatementType::Create => Ok(Execution::Verified),
                _ => Ok(Execution::Direct),
            }
        }

        fn verify(&self, conn: &mut Connection, _: StatementType) -> Result<(), DbError> {
            if count(
                conn,
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'guarded'",
            ) > 0
            {
                return Err(DbError::Refused {
                    statement: "CREATE TABLE".into(),
                    reason: "guarded is taken".into(),
                });
            }
            Ok(())
        }
    }

    #[test]
    fn the_check_sees_every_statement_before_it_runs() {
        let mut conn = connect();
        let refused = conn
            .query(
                "CREATE TABLE a AS SELECT 1; ATTACH ':memory:' AS other; SELECT 1",
                &TestCheck,
                &|| false,
            )
            .err()
            .unwrap();
        assert!(matches!(refused, DbError::Refused { reason, .. } if reason == "no ATTACH"));
        // The statement before the refused one ran; the refused one did not.
        assert_eq!(count(&mut conn, "SELECT count(*) FROM a"), 1);
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) FROM duckdb_databases() WHERE database_name = 'other'"
            ),
            0
        );
    }

    #[test]
    fn a_statement_that_fails_verification_is_rolled_back() {
        let db = Database::open_in_memory(&[("threads", "1".into())]).unwrap();
        let mut conn = db.connect().unwrap();
        let refused = conn
            .query("CREATE TABLE guarded AS SELECT 1 AS x", &TestCheck, &|| {
                false
            })
            .err()
            .unwrap();
        assert!(
            matches!(refused, DbError::Refused { statement, .. } if statement == "CREATE TABLE")
        );
        let mut other = db.connect().unwrap();
        let exists = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'guarded'";
        assert_eq!(count(&mut conn, exists), 0);
        assert_eq!(count(&mut other, exists), 0);

        // A verified statement that fails is rolled back too: the connection
        // is not left inside an aborted transaction.
        let failed = conn
            .query(
                "CREATE TABLE b AS SELECT * FROM nowhere",
                &TestCheck,
                &|| false,
            )
            .err()
            .unwrap();
        assert!(
            matches!(
                failed,
                DbError::Duckdb {
                    kind: ErrorKind::Catalog,
                    ..
                }
            ),
            "{failed:?}"
        );

        // One that passes commits (others see it), and as the last statement
        // its result is still returned.
        let mut cursor = conn
            .query("CREATE TABLE fine AS SELECT 42 AS x", &TestCheck, &|| false)
            .unwrap();
        assert_eq!(cursor.statement_type(), StatementType::Create);
        assert_eq!(cursor.columns()[0].name, "Count");
        assert!(cursor.next_batch().unwrap().is_some());
        drop(cursor);
        assert_eq!(count(&mut other, "SELECT sum(x)::BIGINT FROM fine"), 42);
    }

    #[test]
    fn classifies_errors() {
        let mut conn = connect();
        let parse = conn.query_all("SELEC 1").err().unwrap();
        assert!(
            matches!(
                parse,
                DbError::Duckdb {
                    kind: ErrorKind::Parser,
                    ..
                }
            ),
            "{parse:?}"
        );
        let bind = conn.query_all("SELECT nope").err().unwrap();
        assert!(
            matches!(
                bind,
                DbError::Duckdb {
                    kind: ErrorKind::Binder,
                    ..
                }
            ),
            "{bind:?}"
        );
        let catalog = conn.query_all("SELECT * FROM nowhere").err().unwrap();
        assert!(
            matches!(
                catalog,
                DbError::Duckdb {
                    kind: ErrorKind::Catalog,
                    ..
                }
            ),
            "{catalog:?}"
        );
        assert!(matches!(
            conn.query_all("  -- nothing\n").err().unwrap(),
            DbError::Empty
        ));
        assert!(matches!(
            conn.query_all("SELECT '\0'").err().unwrap(),
            DbError::Nul
        ));
    }

    #[test]
    fn interrupts_a_running_query_from_another_thread() {
        let mut conn = connect();
        let interrupter = conn.interrupter();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            interrupter.interrupt();
        });
        let started = std::time::Instant::now();
        let error = conn
            .query_all("SELECT sum(hash(i)) FROM range(1000000000000) t(i)")
            .err()
            .unwrap();
        handle.join().unwrap();
        assert!(
            matches!(
                error,
                DbError::Duckdb {
                    kind: ErrorKind::Interrupt,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        // The connection is usable again afterwards.
        assert_eq!(conn.query_all("SELECT 1").unwrap()[0].num_rows(), 1);
    }

    #[test]
    fn names_types() {
        let mut conn = connect();
        let cursor = conn
            .query(
                "SELECT 1.5::DECIMAL(10,2) d, DATE '2025-01-01' dt, [1,2] l, {'a': 1} s, '{}'::JSON j",
                &Unchecked,
                &|| false,
            )
            .unwrap();
        let names: Vec<_> = cursor
            .columns()
            .iter()
            .map(|c| c.type_name.as_str())
            .collect();
        assert_eq!(names, ["DECIMAL(10,2)", "DATE", "LIST", "STRUCT", "JSON"]);
    }
}
