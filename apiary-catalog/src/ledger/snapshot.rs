//! The state of a frame at one ledger version, built by replaying entries onto a checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use serde_json::{Value, json};

use super::entry::{Action, CellRecord, LedgerEntry, cells_from_json, cells_to_json};
use crate::column_ids;
use crate::error::{CatalogError, Result};
use crate::protocol::Protocol;
use crate::schema_json::{schema_from_json, schema_to_json};

/// A frame at one version: its schema, layout and active cells. Immutable; shared as `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSnapshot {
    /// The ledger version.
    pub version: u64,
    /// The frame's id, set at its creation.
    pub frame_id: String,
    /// The schema in force.
    pub schema: SchemaRef,
    /// The partition columns, outermost folder first.
    pub partition_by: Vec<String>,
    /// The properties in force (e.g. the sort order).
    pub properties: BTreeMap<String, String>,
    /// Timestamp of the entry that produced this version.
    pub timestamp_ms: i64,
    /// What a client must understand to read and to write the frame at this version.
    pub protocol: Protocol,
    /// Active cells by path (relative to the frame folder).
    cells: BTreeMap<String, Arc<CellRecord>>,
    /// Only some of the version's cells ([`FrameSnapshot::with_cells_where`]): readable, but
    /// never the base of a commit, which would take the subset for the frame's whole state.
    subset: bool,
}

impl FrameSnapshot {
    /// The state after version 0.
    pub(crate) fn from_create(entry: &LedgerEntry, key: &str) -> Result<Self> {
        let Action::CreateFrame {
            frame_id,
            schema,
            partition_by,
            properties,
        } = &entry.action
        else {
            return Err(CatalogError::corrupt(
                key,
                "version 0 is not a create_frame entry",
            ));
        };
        if entry.version != 0 {
            return Err(CatalogError::corrupt(
                key,
                "create_frame at a version other than 0",
            ));
        }
        let protocol = entry.protocol.clone().unwrap_or_default();
        protocol.check_read(&format!("the ledger {key}"))?;
        Ok(Self {
            version: 0,
            frame_id: frame_id.clone(),
            schema: Arc::clone(schema),
            partition_by: partition_by.clone(),
            properties: properties.clone(),
            timestamp_ms: entry.timestamp_ms,
            protocol,
            cells: BTreeMap::new(),
            subset: false,
        })
    }

    /// Applies the next entry in place. The entry must be exactly `version + 1`.
    pub(crate) fn apply(&mut self, entry: &LedgerEntry, key: &str) -> Result<()> {
        if entry.version != self.version + 1 {
            return Err(CatalogError::corrupt(
                key,
                format!(
                    "entry has version {} but follows version {}",
                    entry.version, self.version
                ),
            ));
        }
        match &entry.action {
            Action::CreateFrame { .. } => {
                return Err(CatalogError::corrupt(key, "create_frame after version 0"));
            }
            Action::AddCells { cells } => {
                for c in cells {
                    self.cells.insert(c.path.clone(), Arc::clone(c));
                }
            }
            Action::RewriteCells { removed, added } => {
                for p in removed {
                    self.cells.remove(p);
                }
                for c in added {
                    self.cells.insert(c.path.clone(), Arc::clone(c));
                }
            }
            Action::SetSchema { schema } => {
                let renames = column_ids::renames(&self.schema, schema);
                if !renames.is_empty() {
                    for cell in self.cells.values_mut() {
                        *cell = Arc::new(cell.renamed(&renames));
                    }
                }
                self.retype_stats(schema, key)?;
                self.schema = Arc::clone(schema);
            }
            Action::SetProperties { properties } => {
                self.properties = properties.clone();
            }
        }
        if let Some(p) = &entry.protocol {
            p.check_read(&format!("the ledger entry {key}"))?;
            self.protocol = p.clone();
        }
        self.version = entry.version;
        self.timestamp_ms = entry.timestamp_ms;
        Ok(())
    }

    /// Casts the statistics of the active cells to the types of `schema` (a widening
    /// `set_schema`: every bound stays the same value), so that scans hand DataFusion bounds of
    /// the column's type.
    fn retype_stats(&mut self, schema: &SchemaRef, key: &str) -> Result<()> {
        let changed: Vec<(String, DataType)> = schema
            .fields()
            .iter()
            .filter(|f| {
                column_ids::same_column(&self.schema, f)
                    .is_some_and(|old| old.data_type() != f.data_type())
            })
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let cast = |v: &Option<ScalarValue>, t: &DataType| -> Result<Option<ScalarValue>> {
            v.as_ref()
                .map(|v| {
                    v.cast_to(t)
                        .map_err(|e| CatalogError::corrupt(key, format!("statistics as {t}: {e}")))
                })
                .transpose()
        };
        for cell in self.cells.values_mut() {
            if !changed.iter().any(|(c, _)| cell.stats.contains_key(c)) {
                continue;
            }
            let mut record = CellRecord::clone(cell);
            for (column, t) in &changed {
                if let Some(stats) = record.stats.get_mut(column) {
                    stats.min = cast(&stats.min, t)?;
                    stats.max = cast(&stats.max, t)?;
                }
            }
            *cell = Arc::new(record);
        }
        Ok(())
    }

    /// The active cells, ordered by path.
    pub fn cells(&self) -> impl ExactSizeIterator<Item = &Arc<CellRecord>> {
        self.cells.values()
    }

    /// The active cell at `path` (relative to the frame folder), if any.
    pub fn cell(&self, path: &str) -> Option<&Arc<CellRecord>> {
        self.cells.get(path)
    }

    /// The same version with only the cells `keep` accepts (to read a chosen subset).
    pub fn with_cells_where(&self, keep: impl Fn(&CellRecord) -> bool) -> FrameSnapshot {
        FrameSnapshot {
            version: self.version,
            frame_id: self.frame_id.clone(),
            schema: Arc::clone(&self.schema),
            partition_by: self.partition_by.clone(),
            properties: self.properties.clone(),
            timestamp_ms: self.timestamp_ms,
            protocol: self.protocol.clone(),
            cells: self
                .cells
                .iter()
                .filter(|(_, c)| keep(c))
                .map(|(p, c)| (p.clone(), Arc::clone(c)))
                .collect(),
            subset: true,
        }
    }

    /// Whether this is a subset of its version's cells ([`FrameSnapshot::with_cells_where`]).
    pub fn is_subset(&self) -> bool {
        self.subset
    }

    /// How many cells are active.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    /// Rows in the active cells.
    pub fn row_count(&self) -> u64 {
        self.cells.values().map(|c| c.rows).sum()
    }

    /// Bytes of the active cells' files.
    pub fn total_bytes(&self) -> u64 {
        self.cells.values().map(|c| c.size).sum()
    }

    pub(crate) fn checkpoint_json(&self) -> Result<Value> {
        let cells: Vec<Arc<CellRecord>> = self.cells.values().cloned().collect();
        Ok(json!({
            "version": self.version,
            "timestamp_ms": self.timestamp_ms,
            "frame_id": self.frame_id,
            "schema": schema_to_json(&self.schema)?,
            "partition_by": self.partition_by,
            "properties": self.properties,
            "protocol": self.protocol,
            "cells": cells_to_json(&cells, &self.partition_by),
        }))
    }

    pub(crate) fn from_checkpoint_json(bytes: &[u8], key: &str) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CatalogError::corrupt(key, format!("not valid JSON: {e}")))?;
        let get = |name: &str| {
            v.get(name)
                .ok_or_else(|| CatalogError::corrupt(key, format!("missing field {name:?}")))
        };
        let schema = schema_from_json(get("schema")?).map_err(|e| CatalogError::corrupt(key, e))?;
        let partition_by: Vec<String> = serde_json::from_value(get("partition_by")?.clone())
            .map_err(|e| CatalogError::corrupt(key, format!("partition_by: {e}")))?;
        let protocol: Protocol = match v.get("protocol") {
            None | Some(Value::Null) => Protocol::default(),
            Some(p) => serde_json::from_value(p.clone())
                .map_err(|e| CatalogError::corrupt(key, format!("protocol: {e}")))?,
        };
        protocol.check_read(&format!("the checkpoint {key}"))?;
        let cells = cells_from_json(Some(get("cells")?), &schema, &partition_by, key)?;
        Ok(Self {
            version: get("version")?
                .as_u64()
                .ok_or_else(|| CatalogError::corrupt(key, "version is not an integer"))?,
            frame_id: get("frame_id")?.as_str().unwrap_or_default().to_string(),
            timestamp_ms: v
                .get("timestamp_ms")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            properties: serde_json::from_value(v.get("properties").cloned().unwrap_or(json!({})))
                .map_err(|e| CatalogError::corrupt(key, format!("properties: {e}")))?,
            schema,
            partition_by,
            protocol,
            cells: cells.into_iter().map(|c| (c.path.clone(), c)).collect(),
            subset: false,
        })
    }
}
