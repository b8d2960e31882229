//! Conflict rules: may a commit that lost the race to `winner` be rebased on top of it?
//!
//! As in Delta Lake's write-serializable isolation:
//! - an append never conflicts (appends land on top of whatever won, silently);
//! - a rewrite conflicts when a winner already removed (or rewrote) any cell it removes: the data it
//!   read is gone, so replaying it would resurrect or double-count rows;
//! - a rewrite does not conflict with a concurrent append: the appended cells stay (the rewrite
//!   never read them, and only removes what it names).

use std::collections::HashSet;

use super::entry::{Action, LedgerEntry};
use crate::error::{CatalogError, Conflict, Result};

/// Checks `attempt` (labelled `operation`) against one `winner` entry of frame `frame`.
pub(crate) fn check(
    frame: &str,
    attempt: &Action,
    operation: &str,
    winner: &LedgerEntry,
) -> Result<()> {
    // A schema or properties change is computed from the schema and properties it read:
    // another one in between would be undone by it (or name a column it renamed).
    let changes_frame =
        |a: &Action| matches!(a, Action::SetSchema { .. } | Action::SetProperties { .. });
    if changes_frame(attempt) && changes_frame(&winner.action) {
        return Err(CatalogError::SchemaChanged {
            frame: frame.to_string(),
            version: winner.version,
            winner: winner.writer.clone(),
            attempted: operation.to_string(),
        });
    }
    let removed = attempt.removed();
    if removed.is_empty() {
        return Ok(());
    }
    let gone: HashSet<&str> = winner.action.removed().iter().map(String::as_str).collect();
    let cells: Vec<String> = removed
        .iter()
        .filter(|p| gone.contains(p.as_str()))
        .cloned()
        .collect();
    if cells.is_empty() {
        return Ok(());
    }
    Err(CatalogError::Conflict(Box::new(Conflict {
        frame: frame.to_string(),
        version: winner.version,
        winner: winner.writer.clone(),
        operation: winner.operation.clone(),
        attempted: operation.to_string(),
        cells,
    })))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::ledger::entry::CellRecord;

    fn cell(p: &str) -> Arc<CellRecord> {
        Arc::new(CellRecord {
            path: p.into(),
            size: 1,
            rows: 1,
            meta_size: None,
            partition: vec![],
            stats: BTreeMap::new(),
            sorted_by: None,
        })
    }

    fn entry(action: Action) -> LedgerEntry {
        LedgerEntry {
            version: 7,
            timestamp_ms: 0,
            writer: "w1".into(),
            commit_id: "c".into(),
            operation: "COMPACT".into(),
            protocol: None,
            action,
            metrics: BTreeMap::new(),
        }
    }

    fn append(p: &str) -> Action {
        Action::AddCells {
            cells: vec![cell(p)],
        }
    }

    fn rewrite(removed: &[&str], added: &str) -> Action {
        Action::RewriteCells {
            removed: removed.iter().map(|s| s.to_string()).collect(),
            added: vec![cell(added)],
        }
    }

    fn properties() -> Action {
        Action::SetProperties {
            properties: BTreeMap::new(),
        }
    }

    /// A properties change and a schema change are each computed from both: either one
    /// in between makes the other conflict; appends and rewrites pass both ways.
    #[test]
    fn frame_changes_conflict_with_each_other_only() {
        let schema = || Action::SetSchema {
            schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        };
        for (attempt, winner) in [
            (properties(), properties()),
            (properties(), schema()),
            (schema(), properties()),
        ] {
            let err = check("h.b.f", &attempt, "ALTER TABLE", &entry(winner)).unwrap_err();
            assert!(matches!(err, CatalogError::SchemaChanged { .. }), "{err}");
        }
        check("h.b.f", &properties(), "ALTER TABLE", &entry(append("a"))).unwrap();
        check("h.b.f", &append("a"), "WRITE", &entry(properties())).unwrap();
        check(
            "h.b.f",
            &rewrite(&["x"], "y"),
            "COMPACT",
            &entry(properties()),
        )
        .unwrap();
    }

    #[test]
    fn append_vs_append_rebases() {
        check("h.b.f", &append("a"), "WRITE", &entry(append("b"))).unwrap();
    }

    #[test]
    fn append_vs_rewrite_rebases() {
        check("h.b.f", &append("a"), "WRITE", &entry(rewrite(&["x"], "y"))).unwrap();
    }

    #[test]
    fn rewrite_vs_append_rebases() {
        check(
            "h.b.f",
            &rewrite(&["x"], "y"),
            "OVERWRITE",
            &entry(append("b")),
        )
        .unwrap();
    }

    #[test]
    fn rewrite_vs_disjoint_rewrite_rebases() {
        check(
            "h.b.f",
            &rewrite(&["x"], "y"),
            "COMPACT",
            &entry(rewrite(&["z"], "w")),
        )
        .unwrap();
    }

    #[test]
    fn rewrite_vs_rewrite_of_the_same_cell_conflicts_naming_it() {
        let err = check(
            "h.b.f",
            &rewrite(&["x", "q"], "y"),
            "OVERWRITE",
            &entry(rewrite(&["z", "x"], "w")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("h.b.f"), "{err}");
        assert!(err.contains("version 7"), "{err}");
        assert!(err.contains("\"x\""), "{err}");
        assert!(!err.contains("\"q\""), "{err}");
        assert!(err.contains("COMPACT") && err.contains("w1"), "{err}");
    }
}
