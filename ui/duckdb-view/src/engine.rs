//! The view's DuckDB: started once, in this order, and then locked.
//!
//! 1. Check the linked `libduckdb` is the version the build pinned (the
//!    httpfs extension only loads into the exact release it was built for).
//! 2. Open an in-memory database with start-up options: threads, memory
//!    limit, spilling, no extension auto-install/auto-load, no community
//!    extensions, no persistent secrets (nothing is written under `$HOME`).
//! 3. LOAD the signed httpfs extension from the extension directory.
//! 4. CREATE the S3 secret from the injected credentials, scoped to the
//!    subsets' prefixes.
//! 5. CREATE one DuckDB VIEW per table of the subsets, over the system
//!    catalog's readers (`system.main.read_parquet`…), so no macro an analyst
//!    creates can change what a lake table reads.
//! 6. Lock down: `allowed_directories` = the subsets' `s3://bucket/prefix/`,
//!    `enable_external_access = false` (no local files, no other URLs, no
//!    INSTALL/LOAD of files, no ATTACH of files), `disabled_filesystems`
//!    (plain HTTP(S) and Hugging Face always; the local file system too
//!    unless spilling needs it), `lock_configuration = true` (no SET/RESET of
//!    any option, so none of this can be undone); then prove it by trying to
//!    list the local root, which must fail.
//! 7. Capture what no statement may change afterwards (the secret, the lake
//!    tables: [`crate::policy::Protected`]).
//!
//! What this module owns: that sequence, the S3 secret, the table views and
//! their column lists, and the live catalog of what else the analyst created.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use serde::Serialize;
use views_types::TableFormat;

use crate::config::{Lake, S3Settings, UrlStyle};
use crate::db::{Column, Connection, Database, DbError, ErrorKind, library_version};
use crate::encode::string_rows;
use crate::policy::{Policy, Protected};

/// The DuckDB release this binary was built against (from duckdb-runtime.toml).
pub const ENGINE_VERSION: &str = env!("DUCKDB_VIEW_ENGINE_VERSION");

/// Why the view could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the linked libduckdb is {found}, but this build pins DuckDB v{expected}")]
    Version {
        found: String,
        expected: &'static str,
    },
    #[error(
        "the httpfs extension is not at {0} (set VIEW_EXTENSION_DIR to the directory holding \
         httpfs.duckdb_extension of DuckDB {ENGINE_VERSION})"
    )]
    MissingExtension(PathBuf),
    #[error("{what}: {source}")]
    Duckdb {
        what: &'static str,
        #[source]
        source: DbError,
    },
    #[error("the lockdown did not take effect: {0}")]
    Lockdown(String),
}

/// How to start the engine (from [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub threads: Option<u16>,
    pub memory_limit: Option<String>,
    pub temp_dir: Option<PathBuf>,
    pub extension_dir: PathBuf,
}

/// A named table of the lake as the catalog shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub name: String,
    /// `s3://bucket/path`.
    pub source: String,
    pub format: TableFormat,
    pub columns: Vec<Column>,
    /// Why the table is not available (its VIEW could not be created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something the analyst created in the workspace (in memory).
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceObject {
    pub name: String,
    /// `table` or `view`.
    pub kind: String,
    pub columns: Vec<Column>,
}

/// The started, locked-down engine.
pub struct Engine {
    db: Arc<Database>,
    pub lake: Lake,
    pub tables: Vec<TableInfo>,
    pub policy: Policy,
}

impl Engine {
    /// Run the start-up sequence of the module docs. Blocking (DuckDB and
    /// S3 calls): call it off the async runtime.
    pub fn start(
        options: &EngineOptions,
        lake: Lake,
        s3: &S3Settings,
    ) -> Result<Engine, EngineError> {
        let found = library_version();
        if found != format!("v{ENGINE_VERSION}") {
            return Err(EngineError::Version {
                found,
                expected: ENGINE_VERSION,
            });
        }
        let httpfs = options.extension_dir.join("httpfs.duckdb_extension");
        if !httpfs.is_file() {
            return Err(EngineError::MissingExtension(httpfs));
        }

        let mut settings: Vec<(&str, String)> = vec![
            // Extensions come from our verified files only, never a repository.
            ("autoinstall_known_extensions", "false".into()),
            ("autoload_known_extensions", "false".into()),
            ("allow_community_extensions", "false".into()),
            ("allow_unsigned_extensions", "false".into()),
            // Secrets live in memory; nothing is read from or written to ~/.duckdb.
            ("allow_persistent_secrets", "false".into()),
            // Spill only where the operator said (an emptyDir), else nowhere:
            // the root file system may be read-only.
            (
                "temp_directory",
                options
                    .temp_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
        ];
        if let Some(threads) = options.threads {
            settings.push(("threads", threads.to_string()));
        }
        if let Some(limit) = &options.memory_limit {
            settings.push(("memory_limit", limit.clone()));
        }
        let fail = |what| move |source| EngineError::Duckdb { what, source };
        let db = Database::open_in_memory(&settings).map_err(fail("opening DuckDB"))?;
        let mut conn = db.connect().map_err(fail("connecting to DuckDB"))?;

        conn.execute_batch(&format!(
            "LOAD {}",
            quote_literal(&httpfs.display().to_string())
        ))
        .map_err(fail("loading the httpfs extension"))?;
        conn.execute_batch(&secret_sql(&lake, s3))
            .map_err(fail("creating the S3 secret"))?;

        let mut tables = Vec::with_capacity(lake.tables.len());
        for table in &lake.tables {
            let mut info = TableInfo {
                name: table.name.clone(),
                source: table.url.clone(),
                format: table.format,
                columns: Vec::new(),
                error: None,
            };
            match create_table_view(&mut conn, &table.name, &table.url, table.format) {
                Ok(columns) => {
                    tracing::info!(table = %table.name, source = %table.url, columns = columns.len(), "table ready");
                    info.columns = columns;
                }
                Err(error) => {
                    // One missing or unreadable table should not take the
                    // whole view down: the catalog shows why it is missing.
                    tracing::warn!(table = %table.name, source = %table.url, %error, "table unavailable");
                    info.error = Some(error.to_string());
                }
            }
            tables.push(info);
        }

        lock_down(&mut conn, &lake.prefix_urls(), options.temp_dir.is_some())?;
        let names: Vec<String> = lake.tables.iter().map(|t| t.name.clone()).collect();
        let policy = Policy {
            allow_copy: lake.writable(),
            protected: Protected::capture(&mut conn, &names)
                .map_err(fail("reading the state the lockdown protects"))?,
        };
        Ok(Engine {
            db,
            lake,
            tables,
            policy,
        })
    }

    /// A new connection for one query.
    pub fn connect(&self) -> Result<Connection, DbError> {
        self.db.connect()
    }

    /// What the analyst created beyond the lake tables (live: tables and
    /// views in memory). Reads only DuckDB's catalog, never S3.
    pub fn workspace(&self) -> Result<Vec<WorkspaceObject>, DbError> {
        let mut conn = self.connect()?;
        let rows = string_rows(&conn.query_all(
            "SELECT c.table_name, CASE WHEN v.view_name IS NULL THEN 'table' ELSE 'view' END, \
                    c.column_name, c.data_type \
             FROM duckdb_columns() c \
             LEFT JOIN duckdb_views() v \
               ON v.database_name = c.database_name AND v.schema_name = c.schema_name \
              AND v.view_name = c.table_name \
             WHERE NOT c.internal AND c.database_name = current_database() \
               AND c.schema_name = 'main' \
             ORDER BY c.table_name, c.column_index",
        )?);
        let mut objects: Vec<WorkspaceObject> = Vec::new();
        for row in rows {
            let Ok([Some(name), Some(kind), Some(column), Some(data_type)]) =
                <[Option<String>; 4]>::try_from(row)
            else {
                continue;
            };
            if self.tables.iter().any(|t| t.name == name) {
                continue;
            }
            match objects.last_mut() {
                Some(last) if last.name == name => {}
                _ => objects.push(WorkspaceObject {
                    name: name.clone(),
                    kind,
                    columns: Vec::new(),
                }),
            }
            if let Some(last) = objects.last_mut() {
                last.columns.push(Column {
                    name: column,
                    type_name: data_type,
                });
            }
        }
        Ok(objects)
    }
}

/// CREATE SECRET for S3 with the injected credentials, scoped to the
/// subsets (DuckDB picks the secret whose scope matches a path).
fn secret_sql(lake: &Lake, s3: &S3Settings) -> String {
    let mut parts = vec!["TYPE s3".to_string(), "PROVIDER config".to_string()];
    if let Some(credentials) = &s3.credentials {
        parts.push(format!(
            "KEY_ID {}",
            quote_literal(&credentials.access_key_id)
        ));
        parts.push(format!(
            "SECRET {}",
            quote_literal(&credentials.secret_access_key)
        ));
        if let Some(token) = &credentials.session_token {
            parts.push(format!("SESSION_TOKEN {}", quote_literal(token)));
        }
    }
    parts.push(format!("REGION {}", quote_literal(&s3.region)));
    if let Some(endpoint) = &s3.endpoint {
        parts.push(format!("ENDPOINT {}", quote_literal(endpoint)));
    }
    parts.push(format!("USE_SSL {}", s3.use_ssl));
    let style = match s3.url_style {
        UrlStyle::Path => "path",
        UrlStyle::Vhost => "vhost",
    };
    parts.push(format!("URL_STYLE {}", quote_literal(style)));
    parts.push(format!("SCOPE {}", list_literal(&lake.prefix_urls())));
    format!(
        "CREATE OR REPLACE TEMPORARY SECRET view_s3 ({})",
        parts.join(", ")
    )
}

/// CREATE VIEW for one table, retrying transient S3 failures (the S3
/// endpoint may start at the same time as the view). Returns its columns.
fn create_table_view(
    conn: &mut Connection,
    name: &str,
    url: &str,
    format: TableFormat,
) -> Result<Vec<Column>, DbError> {
    // Qualified: an analyst's macro named read_parquet (refused anyway, see
    // policy.rs) could otherwise take the reader's place for everyone.
    let reader = match format {
        TableFormat::Parquet => "system.main.read_parquet",
        TableFormat::Csv => "system.main.read_csv",
        TableFormat::Json => "system.main.read_json",
    };
    let sql = format!(
        "CREATE OR REPLACE VIEW {} AS SELECT * FROM {reader}({})",
        quote_ident(name),
        quote_literal(url)
    );
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match conn.execute_batch(&sql) {
            Ok(()) => break,
            Err(DbError::Duckdb {
                kind: ErrorKind::Http | ErrorKind::Io,
                message,
            }) if attempt < 4 && is_transient(&message) => {
                tracing::info!(table = name, attempt, %message, "S3 not reachable yet, retrying");
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
    let rows = string_rows(&conn.query_all(&format!(
        "SELECT column_name, data_type FROM duckdb_columns() \
         WHERE schema_name = 'main' AND table_name = {} ORDER BY column_index",
        quote_literal(name)
    ))?);
    Ok(rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(name), Some(data_type)] => Some(Column {
                name: name.clone(),
                type_name: data_type.clone(),
            }),
            _ => None,
        })
        .collect())
}

/// Connection-level failures worth a retry; a 403 or a missing object is not.
fn is_transient(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "connect",
        "timed out",
        "timeout",
        "(http 5",
        "reset by peer",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// DuckDB's names for the file systems a view never reads through: plain
/// HTTP(S) URLs (S3 goes through httpfs's own S3 file system) and Hugging
/// Face; and, when nothing may spill, the local file system.
fn disabled_filesystems(spills: bool) -> String {
    let mut names = vec!["HTTPFileSystem", "HuggingFaceFileSystem"];
    if !spills {
        names.push("LocalFileSystem");
    }
    names.join(",")
}

fn lock_down(
    conn: &mut Connection,
    prefix_urls: &[String],
    spills: bool,
) -> Result<(), EngineError> {
    let fail = |source| EngineError::Duckdb {
        what: "locking DuckDB down",
        source,
    };
    // In this order: DuckDB refuses to change enable_external_access once
    // the local file system is disabled, and anything once locked.
    conn.execute_batch(&format!(
        "SET allowed_directories = {}; \
         SET enable_external_access = false; \
         SET disabled_filesystems = {}; \
         SET lock_configuration = true;",
        list_literal(prefix_urls),
        quote_literal(&disabled_filesystems(spills)),
    ))
    .map_err(fail)?;

    // Prove it, rather than trust it: settings read back, and a local read refused.
    let rows = string_rows(
        &conn
            .query_all(
                "SELECT current_setting('enable_external_access')::VARCHAR, \
                        current_setting('lock_configuration')::VARCHAR",
            )
            .map_err(fail)?,
    );
    let expected = vec![Some("false".to_string()), Some("true".to_string())];
    if rows.first() != Some(&expected) {
        return Err(EngineError::Lockdown(format!(
            "enable_external_access/lock_configuration read back as {rows:?}"
        )));
    }
    match conn.query_all("SELECT * FROM glob('/*')") {
        Err(DbError::Duckdb {
            kind: ErrorKind::Permission,
            ..
        }) => {}
        Ok(batches) => {
            return Err(EngineError::Lockdown(format!(
                "listing / still worked ({} rows)",
                batches.iter().map(RecordBatch::num_rows).sum::<usize>()
            )));
        }
        Err(other) => {
            return Err(EngineError::Lockdown(format!(
                "listing / failed, but not with a permission error: {other}"
            )));
        }
    }
    Ok(())
}

/// A SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A SQL identifier, always quoted (table names may be keywords).
pub fn quote_ident(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

pub(crate) fn list_literal(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| quote_literal(v)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credentials;

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(list_literal(&["a".into(), "b'".into()]), "['a', 'b''']");
    }

    #[test]
    fn secret_is_scoped_to_the_subsets_and_quotes_credentials() {
        let lake = Lake::new(
            serde_json::from_str(r#"[{"bucket":"lake","prefixes":["sales/","ref/"]}]"#).unwrap(),
        )
        .unwrap();
        let s3 = S3Settings {
            endpoint: Some("127.0.0.1:9000".into()),
            use_ssl: false,
            region: "eu-north-1".into(),
            url_style: UrlStyle::Path,
            credentials: Some(Credentials {
                access_key_id: "AK".into(),
                secret_access_key: "s'cret".into(),
                session_token: Some("tok".into()),
            }),
        };
        let sql = secret_sql(&lake, &s3);
        assert!(sql.contains("SECRET 's''cret'"), "{sql}");
        assert!(sql.contains("SESSION_TOKEN 'tok'"), "{sql}");
        assert!(sql.contains("USE_SSL false"), "{sql}");
        assert!(
            sql.contains("SCOPE ['s3://lake/ref/', 's3://lake/sales/']"),
            "{sql}"
        );
    }
}
