//! Which statements an analyst may run in a view, checked for every
//! statement before it runs (see [`crate::db::Connection::query`]).
//!
//! The security boundary is DuckDB's own lockdown (set up in
//! [`crate::engine`]: no external access outside the subsets, configuration
//! locked) and, behind it, the view's scoped S3 credentials. This policy is
//! the layer in front: it refuses what a read-only workspace never needs with
//! a message that says why, instead of whatever DuckDB happens to report, and
//! it refuses writes (COPY) when no subset allows them, which DuckDB's path
//! allow-list cannot express.

use crate::db::StatementType;

/// The statement policy of one view.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Whether COPY is allowed (some subset has `write: true`).
    pub allow_copy: bool,
}

impl Policy {
    /// `Ok` when `kind` may run; otherwise the reason, for people.
    pub fn check(&self, kind: StatementType) -> Result<(), String> {
        use StatementType::*;
        let reason = match kind {
            // Reading, and working with in-memory objects of one's own.
            Select | Explain | Create | CreateFunc | Drop | Alter | Insert | Update | Delete
            | MergeInto | Transaction | Analyze | Vacuum | Pragma | Call | VariableSet | Multi => {
                return Ok(());
            }
            Copy if self.allow_copy => return Ok(()),
            Copy => "COPY is not allowed: this view's subsets are read-only",
            Attach | Detach => "ATTACH and DETACH are not allowed: a view reads only its subsets",
            Load => "INSTALL and LOAD are not allowed: the view's extensions are fixed",
            Set => {
                "SET, RESET and USE are not allowed: the view's configuration is fixed (SET VARIABLE is fine)"
            }
            Export | CopyDatabase => "EXPORT and COPY FROM DATABASE are not allowed in a view",
            UpdateExtensions => "UPDATE EXTENSIONS is not allowed: the view's extensions are fixed",
            // A prepared statement would run later without this check.
            Prepare | Execute => "PREPARE and EXECUTE are not allowed: send the statement itself",
            Relation | Extension | LogicalPlan | Invalid => {
                "this kind of statement is not allowed in a view"
            }
        };
        Err(format!("{reason} ({} statement refused)", kind.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_escapes_are_refused() {
        let read_only = Policy { allow_copy: false };
        assert!(read_only.check(StatementType::Select).is_ok());
        assert!(read_only.check(StatementType::Create).is_ok());
        for kind in [
            StatementType::Attach,
            StatementType::Load,
            StatementType::Set,
            StatementType::Copy,
            StatementType::Export,
            StatementType::Prepare,
            StatementType::Execute,
        ] {
            let reason = read_only.check(kind).unwrap_err();
            assert!(reason.contains(kind.as_str()), "{reason}");
        }
        assert!(
            Policy { allow_copy: true }
                .check(StatementType::Copy)
                .is_ok()
        );
    }
}
