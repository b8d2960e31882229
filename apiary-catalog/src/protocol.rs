//! The format's own version: what a client must understand to read or to write a frame's ledger
//! (or the registry).
//!
//! Version 0 of every ledger carries a protocol — reader and writer versions and named features
//! — and later entries may raise it. A client refuses, naming what it lacks, a log whose reader
//! protocol it does not know (to read it) or whose writer protocol it does not know (to commit to
//! it): an older binary can never write into a frame that a newer feature would make it corrupt.
//! Logs written before protocols existed read as protocol 1 without features.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Result};

/// The reader protocol this build understands.
pub const READER_VERSION: u32 = 1;
/// The writer protocol this build understands.
pub const WRITER_VERSION: u32 = 1;

/// Named features, reserved so that every build agrees on their meaning. A log lists a feature
/// when it uses it: readers must know every reader feature, writers every writer feature.
pub mod feature {
    /// The schema changes between versions (`set_schema` entries: columns added, types
    /// widened); cells written before are read under the newer schema by column name. Readers
    /// and writers must know it.
    pub const SCHEMA_EVOLUTION: &str = "schema_evolution";
    /// The frame's columns carry stable ids (`PARQUET:field_id`), and cells are read by id, not
    /// by name: a column can be renamed without rewriting a cell. Readers must know it (a reader
    /// by name would read a renamed column as NULL, or another column's values in its place);
    /// writers must know it (a cell written without ids would be misread).
    pub const COLUMN_IDS: &str = "column_ids";
    /// Copy-on-write `DELETE`, `UPDATE` and `MERGE` with their row counts in the ledger. Writers
    /// must know it.
    pub const ROW_LEVEL_CHANGES: &str = "row_level_changes";
    /// The frame's properties change between versions (`set_properties` entries, e.g. a new
    /// sort order). Readers must know it (to parse the entries and to read the properties in
    /// force); writers must know it (a write follows the properties in force: its sort order).
    pub const FRAME_PROPERTIES: &str = "frame_properties";
}

/// The features this build can read, and the ones it can write with.
const READABLE_FEATURES: &[&str] = &[
    feature::SCHEMA_EVOLUTION,
    feature::COLUMN_IDS,
    feature::FRAME_PROPERTIES,
];
const WRITABLE_FEATURES: &[&str] = &[
    feature::SCHEMA_EVOLUTION,
    feature::COLUMN_IDS,
    feature::FRAME_PROPERTIES,
];

/// What a client must understand. Serialized inside version 0 of a log (and any entry raising it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protocol {
    /// The reader protocol a client must know to read the log.
    pub min_reader_version: u32,
    /// The writer protocol a client must know to commit to it.
    pub min_writer_version: u32,
    /// Features ([`feature`]) a reader must know.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub reader_features: BTreeSet<String>,
    /// Features ([`feature`]) a writer must know.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub writer_features: BTreeSet<String>,
}

impl Default for Protocol {
    /// Protocol 1 without features: what logs written before protocols existed mean.
    fn default() -> Self {
        Self {
            min_reader_version: 1,
            min_writer_version: 1,
            reader_features: BTreeSet::new(),
            writer_features: BTreeSet::new(),
        }
    }
}

impl Protocol {
    /// What this build writes into new logs.
    pub fn current() -> Self {
        Self::default()
    }

    /// Refuses, naming the feature or version, a log this build cannot read.
    pub fn check_read(&self, what: &str) -> Result<()> {
        if self.min_reader_version > READER_VERSION {
            return Err(CatalogError::UnsupportedProtocol {
                what: what.to_string(),
                detail: format!(
                    "it needs reader version {} and this build reads version {READER_VERSION}",
                    self.min_reader_version
                ),
            });
        }
        if let Some(f) = self
            .reader_features
            .iter()
            .find(|f| !READABLE_FEATURES.contains(&f.as_str()))
        {
            return Err(CatalogError::UnsupportedProtocol {
                what: what.to_string(),
                detail: format!("it uses the feature {f:?}, which this build cannot read"),
            });
        }
        Ok(())
    }

    /// Refuses, naming the feature or version, a log this build must not commit to.
    pub fn check_write(&self, what: &str) -> Result<()> {
        self.check_read(what)?;
        if self.min_writer_version > WRITER_VERSION {
            return Err(CatalogError::UnsupportedProtocol {
                what: what.to_string(),
                detail: format!(
                    "it needs writer version {} and this build writes version {WRITER_VERSION}",
                    self.min_writer_version
                ),
            });
        }
        if let Some(f) = self
            .writer_features
            .iter()
            .find(|f| !WRITABLE_FEATURES.contains(&f.as_str()))
        {
            return Err(CatalogError::UnsupportedProtocol {
                what: what.to_string(),
                detail: format!("it uses the feature {f:?}, which this build cannot write"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_versions_and_features_are_refused_by_name() {
        Protocol::current().check_write("frame h.b.f").unwrap();
        let newer = Protocol {
            min_reader_version: 2,
            ..Protocol::default()
        };
        let err = newer.check_read("frame h.b.f").unwrap_err().to_string();
        assert!(
            err.contains("frame h.b.f") && err.contains("reader version 2"),
            "{err}"
        );

        let unknown = Protocol {
            reader_features: ["deletion_vectors".to_string()].into(),
            ..Protocol::default()
        };
        let err = unknown.check_read("frame h.b.f").unwrap_err().to_string();
        assert!(err.contains("\"deletion_vectors\""), "{err}");
        let evolving = Protocol {
            reader_features: [feature::SCHEMA_EVOLUTION.to_string()].into(),
            writer_features: [feature::SCHEMA_EVOLUTION.to_string()].into(),
            ..Protocol::default()
        };
        evolving.check_write("frame h.b.f").unwrap();

        // A writer-only feature leaves the frame readable, and fences this build's writes.
        let dml = Protocol {
            writer_features: [feature::ROW_LEVEL_CHANGES.to_string()].into(),
            ..Protocol::default()
        };
        dml.check_read("frame h.b.f").unwrap();
        let err = dml.check_write("frame h.b.f").unwrap_err().to_string();
        assert!(
            err.contains("\"row_level_changes\"") && err.contains("cannot write"),
            "{err}"
        );
    }
}
