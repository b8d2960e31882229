//! A frame's declared sort order (`WITH ORDER (day ASC)`): the rows of a write are sorted by it
//! before cells are cut, so the cells of one write do not overlap; each cell records the order
//! its rows hold; and a scan whose every cell holds the frame's order declares it to DataFusion,
//! which then needs no sort of its own for `ORDER BY` on the key (or only a merge).
//!
//! ```text
//!  INSERT ──▶ DataSinkExec requires the order ──▶ DataFusion sorts (in the bees' budget, spilling)
//!                                                    │
//!                        cells, each `sorted_by` ◀───┘
//!  SELECT … ORDER BY day ──▶ scan: every cell sorted_by the frame's order?
//!                              yes: file groups in key order, `output_ordering` declared;
//!                                   DataFusion keeps it where the cells' min/max do not overlap
//!                              no:  nothing declared, DataFusion sorts
//! ```
//!
//! The order is the frame property [`SORT_ORDER`], a JSON list of keys, so that a writer that
//! does not know it still writes correct (merely unsorted, unmarked) cells.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::Schema;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, LexRequirement, PhysicalSortExpr};
use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Result};

/// The frame property holding the sort order.
pub const SORT_ORDER: &str = "apiary.sort_order";

/// One key of a sort order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// The column sorted by.
    pub column: String,
    /// `DESC` rather than `ASC`.
    #[serde(default)]
    pub descending: bool,
    /// Nulls before the values rather than after.
    #[serde(default)]
    pub nulls_first: bool,
}

impl SortKey {
    /// Ascending, nulls last (DataFusion's default for `ASC`).
    pub fn asc(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            descending: false,
            nulls_first: false,
        }
    }

    /// Descending, nulls first (DataFusion's default for `DESC`).
    pub fn desc(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            descending: true,
            nulls_first: true,
        }
    }
}

/// The keys a frame's rows are sorted by, first key first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortOrder(Vec<SortKey>);

impl fmt::Display for SortOrder {
    /// `day ASC NULLS LAST, id DESC NULLS FIRST`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{} {} NULLS {}",
                k.column,
                if k.descending { "DESC" } else { "ASC" },
                if k.nulls_first { "FIRST" } else { "LAST" }
            )?;
        }
        Ok(())
    }
}

impl SortOrder {
    /// The order by `keys`, first key first.
    pub fn new(keys: Vec<SortKey>) -> Self {
        Self(keys)
    }

    /// Its keys, first key first.
    pub fn keys(&self) -> &[SortKey] {
        &self.0
    }

    /// The order in `properties`, if any; an error names a value that is not one.
    pub fn of(
        properties: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<SortOrder>> {
        let Some(text) = properties.get(SORT_ORDER) else {
            return Ok(None);
        };
        let keys: Vec<SortKey> = serde_json::from_str(text).map_err(|e| {
            CatalogError::InvalidSchema(format!(
                "property {SORT_ORDER} = {text:?} is not a list of sort keys: {e}"
            ))
        })?;
        Ok((!keys.is_empty()).then_some(SortOrder(keys)))
    }

    /// The property value that stores this order.
    pub fn to_property(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// Every key names a stored column of `schema` (not a partition column: those are one value
    /// per cell already), once.
    pub fn check(&self, frame: &str, schema: &Schema, partition_by: &[String]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for k in &self.0 {
            if schema.field_with_name(&k.column).is_err() {
                return Err(CatalogError::InvalidSchema(format!(
                    "frame {frame}: the sort order names column {}, which the frame does not have",
                    k.column
                )));
            }
            if partition_by.contains(&k.column) {
                return Err(CatalogError::InvalidSchema(format!(
                    "frame {frame}: {} is a partition column; each cell holds one value of it \
                     already, so it cannot be a sort key",
                    k.column
                )));
            }
            if !seen.insert(&k.column) {
                return Err(CatalogError::InvalidSchema(format!(
                    "frame {frame}: sort key {} is listed twice",
                    k.column
                )));
            }
        }
        Ok(())
    }

    /// The order over `schema`'s columns, for DataFusion; `None` when a key's column is not
    /// in `schema` (a projection without it).
    pub fn lex_ordering(&self, schema: &Schema) -> Option<LexOrdering> {
        let exprs = self.0.iter().map(|k| {
            let index = schema.index_of(&k.column).ok()?;
            Some(PhysicalSortExpr::new(
                Arc::new(Column::new(&k.column, index)),
                SortOptions {
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                },
            ))
        });
        LexOrdering::new(exprs.collect::<Option<Vec<_>>>()?)
    }

    /// What a write requires of its input: rows in this order.
    pub fn lex_requirement(&self, schema: &Schema) -> Option<LexRequirement> {
        self.lex_ordering(schema).map(LexRequirement::from)
    }
}
