//! Which statements an analyst may run in a view, and what no statement may
//! change: checked for every statement (see [`crate::db::Connection::query`]).
//!
//! Three layers, each DuckDB's own mechanism rather than a reading of the SQL
//! text:
//!
//! 1. DuckDB's lockdown (set up in [`crate::engine`]): no file system or URL
//!    outside the subsets' S3 prefixes, no local or plain-HTTP file systems at
//!    all, no extension installs or loads, configuration locked.
//! 2. The statement's type, as DuckDB's planner classifies it
//!    ([`Policy::admit`]): what a read-only workspace never needs is refused
//!    up front with a message that says why (ATTACH, INSTALL/LOAD, SET/RESET,
//!    EXPORT, PREPARE, transactions…), and COPY unless a subset is writable.
//! 3. The protected state ([`Protected`]): DuckDB's statement types do not
//!    say *what* a CREATE, DROP or ALTER touches, so every statement that is
//!    not a plain read runs in a transaction of its own and is verified
//!    before it commits ([`Policy::verify`]): the view's secrets, its lake
//!    tables and DuckDB's built-in function names must be exactly as the
//!    lockdown left them, or the statement is rolled back and refused.
//!    `CREATE SECRET`, `DROP SECRET`, `CREATE OR REPLACE VIEW <lake table>`,
//!    `DROP VIEW <lake table>`, a macro shadowing `read_parquet`… are caught
//!    however they are spelled, and change nothing.
//!
//! Behind all of it, the view's S3 credentials can read only its subsets and
//! its pod can reach only the gateway's S3 endpoint (NetworkPolicy).

use std::collections::{BTreeSet, HashSet};

use crate::db::{Connection, DbError, Execution, StatementCheck, StatementType};
use crate::encode::string_rows;

/// The statement policy of one view.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether COPY is allowed (some subset has `write: true`).
    pub allow_copy: bool,
    /// What no statement may change.
    pub protected: Protected,
}

impl StatementCheck for Policy {
    fn admit(&self, kind: StatementType) -> Result<Execution, DbError> {
        use StatementType::*;
        let reason = match kind {
            // Reads cannot change the catalog or the secrets: they stream.
            Select => return Ok(Execution::Direct),
            // Everything else that is allowed is verified before it commits.
            // EXPLAIN too: EXPLAIN ANALYZE runs its statement.
            Explain | Create | CreateFunc | Drop | Alter | Insert | Update | Delete | MergeInto
            | Analyze | Vacuum | Pragma | Call | Multi | VariableSet => {
                return Ok(Execution::Verified);
            }
            Copy if self.allow_copy => return Ok(Execution::Verified),
            Copy => "COPY is not allowed: this view's subsets are read-only",
            Attach | Detach => "ATTACH and DETACH are not allowed: a view reads only its subsets",
            Load => "INSTALL and LOAD are not allowed: the view's extensions are fixed",
            Set => {
                // DuckDB 1.5 classifies SET VARIABLE as SET too: refused with it.
                "SET, RESET and USE are not allowed: the view's configuration (its S3 endpoint, \
                 region and credentials among it) is fixed"
            }
            Export | CopyDatabase => "EXPORT and COPY FROM DATABASE are not allowed in a view",
            UpdateExtensions => "UPDATE EXTENSIONS is not allowed: the view's extensions are fixed",
            // A prepared statement would run later without this check.
            Prepare | Execute => "PREPARE and EXECUTE are not allowed: send the statement itself",
            Transaction => {
                "BEGIN, COMMIT and ROLLBACK are not allowed: every statement that changes \
                 something runs in a transaction of its own, checked before it commits"
            }
            Relation | Extension | LogicalPlan | Invalid => {
                "this kind of statement is not allowed in a view"
            }
        };
        Err(DbError::Refused {
            statement: kind.as_str().to_string(),
            reason: format!("{} refused: {reason}", kind.as_str()),
        })
    }

    fn verify(&self, conn: &mut Connection, kind: StatementType) -> Result<(), DbError> {
        let now = self.protected.read(conn)?;
        let Some(changed) = self.protected.expected.symmetric_difference(&now).next() else {
            return Ok(());
        };
        // DuckDB names CREATE FUNCTION/MACRO statements "CREATE FUNCTION":
        // the verb is what people wrote, the object is what was touched.
        let verb = kind.as_str().split(' ').next().unwrap_or_default();
        let statement = match kind {
            StatementType::Create
            | StatementType::CreateFunc
            | StatementType::Drop
            | StatementType::Alter => format!("{verb} {}", changed.kind),
            _ => kind.as_str().to_string(),
        };
        let why = match changed.kind.as_str() {
            "SECRET" => "the view's S3 credentials and storage endpoint are fixed (the gateway \
                         sets them, scoped to the view's subsets)"
                .to_string(),
            "MACRO" => format!(
                "\"{}\" is one of DuckDB's built-in functions; a macro of that name would change \
                 what it means for everyone using this view",
                changed.name
            ),
            _ => format!(
                "\"{}\" is one of the view's lake tables, which are fixed; create your own \
                 tables and views under other names",
                changed.name
            ),
        };
        Err(DbError::Refused {
            reason: format!("{statement} refused: {why}. Nothing was changed."),
            statement,
        })
    }
}

/// One protected object as DuckDB's catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    /// `SECRET`, `VIEW`, `TABLE` or `MACRO`.
    kind: String,
    name: String,
    /// The secret's redacted definition (scope, endpoint, key id…), the
    /// view's or table's SQL, the macro's schema.
    definition: String,
}

/// The state no analyst's statement may change, read from DuckDB's own
/// catalog functions, and its value when the lockdown finished.
#[derive(Debug, Clone)]
pub struct Protected {
    sql: String,
    /// The names of DuckDB's built-in functions: fixed once the lockdown
    /// forbids loading extensions, so read once (listing them costs a scan
    /// of every function, the bulk of a check).
    builtins: HashSet<String>,
    expected: BTreeSet<Entry>,
}

impl Protected {
    /// Read the protected state of a started engine as the reference:
    /// `tables` are the names of the view's lake tables, mounted or not (a
    /// table that could not be mounted keeps its name, so nobody can put
    /// something else there).
    pub fn capture(conn: &mut Connection, tables: &[String]) -> Result<Protected, DbError> {
        let names = crate::engine::list_literal(
            &tables.iter().map(|t| t.to_lowercase()).collect::<Vec<_>>(),
        );
        // Temporary objects are left out: they live in the one connection
        // (one request) that made them and shadow nothing for anybody else.
        // Functions outside the system catalog are the analysts' macros; only
        // those named like a built-in are protected state (see `read`).
        let sql = format!(
            "SELECT 'SECRET', name, secret_string FROM duckdb_secrets() \
             UNION ALL \
             SELECT 'VIEW', view_name, sql FROM duckdb_views() \
              WHERE NOT temporary AND list_contains({names}::VARCHAR[], lower(view_name)) \
             UNION ALL \
             SELECT 'TABLE', table_name, sql FROM duckdb_tables() \
              WHERE NOT temporary AND list_contains({names}::VARCHAR[], lower(table_name)) \
             UNION ALL \
             SELECT DISTINCT 'MACRO', function_name, database_name || '.' || schema_name \
               FROM duckdb_functions() WHERE database_name NOT IN ('system', 'temp')"
        );
        let builtins = string_rows(&conn.query_all(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE database_name = 'system'",
        )?)
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .map(|name| name.to_lowercase())
        .collect();
        let mut protected = Protected {
            sql,
            builtins,
            expected: BTreeSet::new(),
        };
        protected.expected = protected.read(conn)?;
        Ok(protected)
    }

    /// The protected state as `conn` sees it now (inside its transaction).
    fn read(&self, conn: &mut Connection) -> Result<BTreeSet<Entry>, DbError> {
        Ok(string_rows(&conn.query_all(&self.sql)?)
            .into_iter()
            .map(|row| {
                let mut cells = row.into_iter().map(Option::unwrap_or_default);
                let mut next = || cells.next().unwrap_or_default();
                Entry {
                    kind: next(),
                    name: next(),
                    definition: next(),
                }
            })
            // DuckDB's names are case-insensitive: READ_PARQUET shadows too.
            .filter(|entry| {
                entry.kind != "MACRO" || self.builtins.contains(&entry.name.to_lowercase())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::db::Database;
    use crate::engine::quote_literal;

    /// A database with an S3 secret (httpfs defines the type) and a lake
    /// table, protected.
    fn workspace() -> (Arc<Database>, Connection, Policy) {
        let db = Database::open_in_memory(&[("threads", "1".into())]).unwrap();
        let mut conn = db.connect().unwrap();
        let httpfs = std::path::Path::new(env!("DUCKDB_VIEW_DEFAULT_EXTENSION_DIR"))
            .join("httpfs.duckdb_extension");
        conn.execute_batch(&format!(
            "LOAD {}",
            quote_literal(&httpfs.display().to_string())
        ))
        .unwrap();
        conn.execute_batch(
            "CREATE TEMPORARY SECRET view_s3 (TYPE s3, KEY_ID 'AK', SECRET 'SK', \
               ENDPOINT 'lake.invalid:9000', SCOPE 's3://lake/sales/'); \
             CREATE VIEW orders AS SELECT * FROM system.main.range(3)",
        )
        .unwrap();
        let protected = Protected::capture(&mut conn, &["orders".into(), "ghosts".into()]).unwrap();
        (
            db,
            conn,
            Policy {
                allow_copy: false,
                protected,
            },
        )
    }

    fn run(conn: &mut Connection, policy: &Policy, sql: &str) -> Result<(), DbError> {
        let mut cursor = conn.query(sql, policy, &|| false)?;
        while cursor.next_batch()?.is_some() {}
        Ok(())
    }

    #[test]
    fn the_reference_holds_the_secret_and_the_mounted_table() {
        let (_, _, policy) = workspace();
        let kinds: Vec<(&str, &str)> = policy
            .protected
            .expected
            .iter()
            .map(|e| (e.kind.as_str(), e.name.as_str()))
            .collect();
        assert_eq!(kinds, [("SECRET", "view_s3"), ("VIEW", "orders")]);
    }

    #[test]
    fn refuses_by_type_before_anything_runs() {
        let (_db, mut conn, policy) = workspace();
        for (sql, statement) in [
            ("ATTACH ':memory:' AS other", "ATTACH"),
            ("SET s3_endpoint = 'elsewhere:1'", "SET"),
            ("RESET s3_region", "SET"),
            ("SET VARIABLE n = 3", "SET"),
            ("BEGIN TRANSACTION", "TRANSACTION"),
            ("PREPARE p AS SELECT 1", "PREPARE"),
            ("COPY (SELECT 1) TO 's3://lake/sales/x.csv'", "COPY"),
        ] {
            match run(&mut conn, &policy, sql) {
                Err(DbError::Refused {
                    statement: refused,
                    reason,
                }) => {
                    assert_eq!(refused, statement, "{sql}");
                    assert!(
                        reason.starts_with(&format!("{statement} refused")),
                        "{reason}"
                    );
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_and_rolls_back_changes_to_secrets_lake_tables_and_builtins() {
        let (_db, mut conn, policy) = workspace();
        for (sql, statement) in [
            (
                "CREATE SECRET elsewhere (TYPE s3, ENDPOINT 'evil.invalid:1', SCOPE 's3://lake/sales/o')",
                "CREATE SECRET",
            ),
            ("DROP SECRET view_s3", "DROP SECRET"),
            (
                "CREATE OR REPLACE TEMPORARY SECRET view_s3 (TYPE s3, ENDPOINT 'evil.invalid:1')",
                "CREATE SECRET",
            ),
            ("CREATE OR REPLACE VIEW orders AS SELECT 42", "CREATE VIEW"),
            ("CREATE OR REPLACE VIEW ORDERS AS SELECT 42", "CREATE VIEW"),
            ("DROP VIEW orders", "DROP VIEW"),
            ("ALTER VIEW orders RENAME TO old_orders", "ALTER VIEW"),
            ("CREATE TABLE ghosts AS SELECT 1 AS x", "CREATE TABLE"),
            (
                "CREATE MACRO read_parquet(p) AS TABLE SELECT 42 AS x",
                "CREATE MACRO",
            ),
            ("CREATE MACRO Upper(s) AS 'shouting'", "CREATE MACRO"),
        ] {
            match run(&mut conn, &policy, sql) {
                Err(DbError::Refused {
                    statement: refused,
                    reason,
                }) => {
                    assert_eq!(refused, statement, "{sql}: {reason}");
                    assert!(reason.contains("Nothing was changed"), "{reason}");
                }
                other => panic!("{sql}: {other:?}"),
            }
            // Exactly as before: the same secret, the same table.
            assert_eq!(
                policy.protected.read(&mut conn).unwrap(),
                policy.protected.expected,
                "{sql}"
            );
        }
        let rows = conn.query_all("SELECT count(*) FROM orders").unwrap();
        assert_eq!(rows[0].num_rows(), 1);
    }

    #[test]
    fn the_analysts_own_objects_are_fine() {
        let (db, mut conn, policy) = workspace();
        for sql in [
            "CREATE TABLE mine AS SELECT * FROM orders",
            "CREATE VIEW my_view AS SELECT count(*) AS n FROM mine",
            "CREATE MACRO twice(x) AS x * 2",
            "INSERT INTO mine VALUES (7)",
            "ALTER TABLE mine RENAME TO my_table",
            "DROP VIEW my_view",
            // Temporary objects live in this connection only: shadowing a
            // lake table there changes nothing for anybody else.
            "CREATE TEMP VIEW orders AS SELECT 42 AS x",
            "SUMMARIZE my_table",
            "PRAGMA table_info('my_table')",
            "EXPLAIN SELECT * FROM orders",
        ] {
            run(&mut conn, &policy, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let rows = |conn: &mut Connection| {
            string_rows(
                &conn
                    .query_all("SELECT count(*)::VARCHAR FROM orders")
                    .unwrap(),
            )
        };
        // This connection sees its TEMP orders (one row), another the lake's.
        assert_eq!(rows(&mut conn), [[Some("1".to_string())]]);
        let mut other = db.connect().unwrap();
        assert_eq!(rows(&mut other), [[Some("3".to_string())]]);
    }
}
