//! Ledger entries and cell records, and their JSON form (`docs/storage.md`).
//!
//! Typed values (partition values, statistics bounds) are stored without their type; the frame
//! schema types them on the way back in, so decoding an entry needs the frame's schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{CatalogError, Result};
use crate::protocol::Protocol;
use crate::schema_json::{schema_from_json, schema_to_json};
use crate::value;

/// Min, max and null count of one column in one cell, taken from the Parquet writer's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// Lower bound of the non-null values (`None`: unknown, e.g. all null or no statistics).
    pub min: Option<ScalarValue>,
    /// Upper bound of the non-null values.
    pub max: Option<ScalarValue>,
    /// Nulls in the column (`None`: unknown).
    pub null_count: Option<u64>,
    /// False when Parquet truncated the bound (long strings): it is then only a bound.
    pub min_exact: bool,
    /// As `min_exact`, for the upper bound.
    pub max_exact: bool,
    /// Uncompressed size of the column's data in the file: what DataFusion estimates a scan's
    /// memory and join sides with.
    pub bytes: Option<u64>,
    /// NaN values of a float column (Parquet leaves them out of min/max, while DataFusion orders
    /// NaN above every number). `None`: not a float column, or not counted (cells written before
    /// the count was kept) — then the maximum is not known.
    pub nan_count: Option<u64>,
}

impl ColumnStats {
    /// The upper bound a reader may use, with its exactness, for a column of type `data_type`:
    /// for floats, NaN when the cell holds one, and unknown when NaNs were not counted.
    pub fn effective_max(&self, data_type: &DataType) -> (Option<ScalarValue>, bool) {
        if !is_float(data_type) {
            return (self.max.clone(), self.max_exact);
        }
        match self.nan_count {
            Some(0) => (self.max.clone(), self.max_exact),
            Some(_) => (nan_of(data_type), true),
            None => (None, false),
        }
    }
}

/// Whether values of this type can be NaN.
pub(crate) fn is_float(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

fn nan_of(data_type: &DataType) -> Option<ScalarValue> {
    ScalarValue::Float64(Some(f64::NAN)).cast_to(data_type).ok()
}

/// One immutable Parquet cell as the ledger knows it: enough to plan and prune a scan without
/// opening the file.
#[derive(Debug, Clone, PartialEq)]
pub struct CellRecord {
    /// Path relative to the frame's folder, e.g. `region=eu/cell_<uuid>.parquet`.
    pub path: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Rows in the cell.
    pub rows: u64,
    /// Bytes at the end of the file holding the page index and footer: a reader fetches them in
    /// one ranged GET (`None`: unknown).
    pub meta_size: Option<u64>,
    /// One value per partition column, in the frame's `partition_by` order.
    pub partition: Vec<ScalarValue>,
    /// Statistics of the columns stored in the file, by column name.
    pub stats: BTreeMap<String, ColumnStats>,
    /// The order the cell's rows are in, when it was written sorted ([`SortOrder`](crate::SortOrder)).
    pub sorted_by: Option<crate::clustering::SortOrder>,
}

/// What a frame is created with.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// The frame's columns, partition columns included.
    pub schema: SchemaRef,
    /// The partition columns, outermost folder first.
    pub partition_by: Vec<String>,
    /// Named settings of the frame, e.g. its sort order (`apiary.sort_order`).
    pub properties: BTreeMap<String, String>,
}

impl FrameSpec {
    /// A frame of `schema`, unpartitioned, without properties.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            partition_by: vec![],
            properties: BTreeMap::new(),
        }
    }

    /// Partitioned by `cols`, outermost folder first.
    pub fn with_partition_by(mut self, cols: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.partition_by = cols.into_iter().map(Into::into).collect();
        self
    }

    /// With the property `key` set to `value`.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Rows of every write sorted by `order` ([`SortOrder`](crate::SortOrder)).
    pub fn with_sort_order(self, order: &crate::clustering::SortOrder) -> Self {
        self.with_property(crate::clustering::SORT_ORDER, order.to_property())
    }
}

/// The change one ledger entry makes.
#[derive(Debug, Clone)]
pub enum Action {
    /// Version 0 of every ledger.
    CreateFrame {
        /// The frame's id, also the last segment of its folder.
        frame_id: String,
        /// The first schema.
        schema: SchemaRef,
        /// The partition columns, outermost folder first.
        partition_by: Vec<String>,
        /// The first properties.
        properties: BTreeMap<String, String>,
    },
    /// Appends cells.
    AddCells {
        /// The new cells.
        cells: Vec<Arc<CellRecord>>,
    },
    /// Replaces cells (overwrite, compaction, copy-on-write changes) atomically.
    RewriteCells {
        /// Paths of the cells removed.
        removed: Vec<String>,
        /// The cells written in their place.
        added: Vec<Arc<CellRecord>>,
    },
    /// Changes the schema (`ALTER TABLE`): columns added, types widened, renamed. Cells
    /// written before are read under it by column name, or by column id once the frame has ids.
    SetSchema {
        /// The new schema.
        schema: SchemaRef,
    },
    /// Replaces the frame's properties (`ALTER TABLE … CLUSTER BY`: its sort order). Cells
    /// written before keep what they record; only later writes follow the new properties.
    SetProperties {
        /// The new properties, all of them.
        properties: BTreeMap<String, String>,
    },
}

impl Action {
    /// Its key in the entry's JSON: `create_frame`, `add_cells`, `rewrite_cells`, …
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateFrame { .. } => "create_frame",
            Action::AddCells { .. } => "add_cells",
            Action::RewriteCells { .. } => "rewrite_cells",
            Action::SetSchema { .. } => "set_schema",
            Action::SetProperties { .. } => "set_properties",
        }
    }

    /// The cells it adds.
    pub fn added(&self) -> &[Arc<CellRecord>] {
        match self {
            Action::CreateFrame { .. }
            | Action::SetSchema { .. }
            | Action::SetProperties { .. } => &[],
            Action::AddCells { cells } => cells,
            Action::RewriteCells { added, .. } => added,
        }
    }

    /// The paths of the cells it removes.
    pub fn removed(&self) -> &[String] {
        match self {
            Action::RewriteCells { removed, .. } => removed,
            _ => &[],
        }
    }

    /// The same action with the statistics of the cells it adds keyed by the new names of
    /// renamed columns: cells written before a rename, committed after it.
    pub(crate) fn follow_renames(&mut self, renames: &[(String, String)]) {
        if renames.is_empty() {
            return;
        }
        let cells = match self {
            Action::AddCells { cells } => cells,
            Action::RewriteCells { added, .. } => added,
            Action::CreateFrame { .. }
            | Action::SetSchema { .. }
            | Action::SetProperties { .. } => return,
        };
        for cell in cells.iter_mut() {
            *cell = Arc::new(cell.renamed(renames));
        }
    }
}

impl CellRecord {
    /// This cell with its statistics keyed by the new names of `renames` (`(old, new)`).
    pub(crate) fn renamed(&self, renames: &[(String, String)]) -> CellRecord {
        let mut record = self.clone();
        record.stats = self
            .stats
            .iter()
            .map(|(name, stats)| {
                let name = renames
                    .iter()
                    .find(|(old, _)| old == name)
                    .map_or(name, |(_, new)| new);
                (name.clone(), stats.clone())
            })
            .collect();
        record
    }
}

/// One committed ledger entry: `{frame}/_ledger/{version:020}.json`.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// Its version: 0 for the frame's creation, then one more per commit.
    pub version: u64,
    /// When the writer committed it, by the writer's clock (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// Who committed it (node id or `host:pid`).
    pub writer: String,
    /// Unique per commit (all its attempts share it): a writer whose create got an ambiguous
    /// answer reads the entry back and knows from this whether it won. Empty for entries written
    /// before commit ids.
    pub commit_id: String,
    /// A label for people: `CREATE`, `WRITE`, `INSERT`, `OVERWRITE`, `COMPACT`, …
    pub operation: String,
    /// What a client must understand from this version on: always on version 0, on a later
    /// entry when it raises the protocol.
    pub protocol: Option<Protocol>,
    /// The change it makes.
    pub action: Action,
    /// What the operation did, for people (`apiary_history`): `rows_deleted`, `rows_updated`,
    /// `rows_inserted` of a row-level change. Readers that do not know a key ignore it.
    pub metrics: BTreeMap<String, u64>,
}

/// A new commit id: time-ordered, unique.
pub(crate) fn new_commit_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Refuses a cell path that does not name a Parquet file inside the frame's own folder, in the
/// partition folders its partition columns give. Such a path in a ledger is a corrupt object:
/// reading it could reach a file of another frame, or outside the meadow.
pub(crate) fn check_cell_path(
    path: &str,
    partition_by: &[String],
) -> std::result::Result<(), String> {
    let segments: Vec<&str> = path.split('/').collect();
    let bad = |why: &str| Err(format!("cell path {path:?} {why}"));
    if path.is_empty() || path.starts_with('/') {
        return bad("is not relative to the frame folder");
    }
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\\'))
    {
        return bad("has an empty, '.', '..' or backslashed segment");
    }
    if segments[0] == "_ledger" {
        return bad("points into the ledger");
    }
    if !path.ends_with(".parquet") {
        return bad("does not name a .parquet cell");
    }
    if segments.len() != partition_by.len() + 1 {
        return bad(&format!(
            "has {} folder(s) but the frame has {} partition column(s)",
            segments.len() - 1,
            partition_by.len()
        ));
    }
    for (segment, column) in segments.iter().zip(partition_by) {
        if !segment
            .strip_prefix(column.as_str())
            .is_some_and(|rest| rest.starts_with('='))
        {
            return bad(&format!("is not in a {column}=… partition folder"));
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct RawStats {
    #[serde(default, skip_serializing_if = "Value::is_null")]
    min: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    max: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nulls: Option<u64>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    min_exact: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    max_exact: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nans: Option<u64>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Serialize, Deserialize)]
struct RawCell {
    path: String,
    size: u64,
    rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    partition: Map<String, Value>,
    #[serde(default)]
    stats: BTreeMap<String, RawStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sorted_by: Vec<crate::clustering::SortKey>,
}

impl CellRecord {
    pub(crate) fn to_json(&self, partition_by: &[String]) -> Value {
        let partition = partition_by
            .iter()
            .zip(&self.partition)
            .map(|(c, v)| (c.clone(), value::encode(v).unwrap_or(Value::Null)))
            .collect();
        let stats = self
            .stats
            .iter()
            .map(|(c, s)| {
                let enc = |v: &Option<ScalarValue>| {
                    v.as_ref().and_then(value::encode).unwrap_or(Value::Null)
                };
                (
                    c.clone(),
                    RawStats {
                        min: enc(&s.min),
                        max: enc(&s.max),
                        nulls: s.null_count,
                        min_exact: s.min_exact,
                        max_exact: s.max_exact,
                        bytes: s.bytes,
                        nans: s.nan_count,
                    },
                )
            })
            .collect();
        serde_json::to_value(RawCell {
            path: self.path.clone(),
            size: self.size,
            rows: self.rows,
            meta_size: self.meta_size,
            partition,
            stats,
            sorted_by: self
                .sorted_by
                .as_ref()
                .map(|o| o.keys().to_vec())
                .unwrap_or_default(),
        })
        .unwrap_or(Value::Null)
    }

    pub(crate) fn from_json(
        v: &Value,
        schema: &SchemaRef,
        partition_by: &[String],
        key: &str,
    ) -> Result<CellRecord> {
        let raw: RawCell = serde_json::from_value(v.clone())
            .map_err(|e| CatalogError::corrupt(key, format!("bad cell record: {e}")))?;
        check_cell_path(&raw.path, partition_by).map_err(|e| CatalogError::corrupt(key, e))?;
        let field_type = |c: &str| {
            schema
                .field_with_name(c)
                .map(|f| f.data_type().clone())
                .map_err(|_| {
                    CatalogError::corrupt(
                        key,
                        format!("cell {} names unknown column {c}", raw.path),
                    )
                })
        };
        let partition = partition_by
            .iter()
            .map(|c| {
                let v = raw.partition.get(c).ok_or_else(|| {
                    CatalogError::corrupt(
                        key,
                        format!("cell {} has no value for partition column {c}", raw.path),
                    )
                })?;
                value::decode(
                    v,
                    &field_type(c)?,
                    &format!("{key} (cell {}, column {c})", raw.path),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut stats = BTreeMap::new();
        for (c, s) in raw.stats {
            let t = field_type(&c)?;
            let what = format!("{key} (cell {}, column {c})", raw.path);
            let dec = |v: &Value| -> Result<Option<ScalarValue>> {
                if v.is_null() {
                    Ok(None)
                } else {
                    value::decode(v, &t, &what).map(Some)
                }
            };
            stats.insert(
                c.clone(),
                ColumnStats {
                    min: dec(&s.min)?,
                    max: dec(&s.max)?,
                    null_count: s.nulls,
                    min_exact: s.min_exact,
                    max_exact: s.max_exact,
                    bytes: s.bytes,
                    nan_count: s.nans,
                },
            );
        }
        Ok(CellRecord {
            path: raw.path,
            size: raw.size,
            rows: raw.rows,
            meta_size: raw.meta_size,
            partition,
            stats,
            sorted_by: (!raw.sorted_by.is_empty())
                .then(|| crate::clustering::SortOrder::new(raw.sorted_by)),
        })
    }
}

pub(crate) fn cells_to_json(cells: &[Arc<CellRecord>], partition_by: &[String]) -> Value {
    Value::Array(cells.iter().map(|c| c.to_json(partition_by)).collect())
}

pub(crate) fn cells_from_json(
    v: Option<&Value>,
    schema: &SchemaRef,
    partition_by: &[String],
    key: &str,
) -> Result<Vec<Arc<CellRecord>>> {
    let Some(v) = v else {
        return Ok(vec![]);
    };
    v.as_array()
        .ok_or_else(|| CatalogError::corrupt(key, "cells must be an array"))?
        .iter()
        .map(|c| CellRecord::from_json(c, schema, partition_by, key).map(Arc::new))
        .collect()
}

impl LedgerEntry {
    /// The JSON form. `partition_by` comes from the frame (or the action, for `CreateFrame`).
    pub(crate) fn to_json(&self, partition_by: &[String]) -> Result<Value> {
        let action = match &self.action {
            Action::CreateFrame {
                frame_id,
                schema,
                partition_by,
                properties,
            } => json!({"create_frame": {
                "frame_id": frame_id,
                "schema": schema_to_json(schema)?,
                "partition_by": partition_by,
                "properties": properties,
            }}),
            Action::AddCells { cells } => {
                json!({"add_cells": {"cells": cells_to_json(cells, partition_by)}})
            }
            Action::RewriteCells { removed, added } => json!({"rewrite_cells": {
                "removed": removed,
                "added": cells_to_json(added, partition_by),
            }}),
            Action::SetSchema { schema } => {
                json!({"set_schema": {"schema": schema_to_json(schema)?}})
            }
            Action::SetProperties { properties } => {
                json!({"set_properties": {"properties": properties}})
            }
        };
        let mut v = json!({
            "version": self.version,
            "timestamp_ms": self.timestamp_ms,
            "writer": self.writer,
            "operation": self.operation,
            "action": action,
        });
        if !self.commit_id.is_empty() {
            v["commit_id"] = json!(self.commit_id);
        }
        if !self.metrics.is_empty() {
            v["metrics"] = json!(self.metrics);
        }
        if let Some(p) = &self.protocol {
            v["protocol"] = serde_json::to_value(p)
                .map_err(|e| CatalogError::corrupt("protocol", e.to_string()))?;
        }
        Ok(v)
    }

    /// Parses an entry read from `key`. `frame` gives the schema for typed values; it is `None`
    /// only for version 0, which carries its own.
    pub(crate) fn from_json(
        bytes: &[u8],
        key: &str,
        frame: Option<(&SchemaRef, &[String])>,
    ) -> Result<LedgerEntry> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CatalogError::corrupt(key, format!("not valid JSON: {e}")))?;
        let field = |name: &str| {
            v.get(name)
                .ok_or_else(|| CatalogError::corrupt(key, format!("missing field {name:?}")))
        };
        let version = field("version")?
            .as_u64()
            .ok_or_else(|| CatalogError::corrupt(key, "version is not an integer"))?;
        let timestamp_ms = field("timestamp_ms")?.as_i64().unwrap_or_default();
        let writer = field("writer")?.as_str().unwrap_or_default().to_string();
        let operation = field("operation")?.as_str().unwrap_or_default().to_string();
        let commit_id = v
            .get("commit_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let metrics: BTreeMap<String, u64> = match v.get("metrics") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(m) => serde_json::from_value(m.clone())
                .map_err(|e| CatalogError::corrupt(key, format!("metrics: {e}")))?,
        };
        let protocol: Option<Protocol> = match v.get("protocol") {
            None | Some(Value::Null) => None,
            Some(p) => Some(
                serde_json::from_value(p.clone())
                    .map_err(|e| CatalogError::corrupt(key, format!("protocol: {e}")))?,
            ),
        };
        // A protocol this build does not know is refused before the action is even parsed: the
        // action may be one that only the newer protocol defines.
        if let Some(p) = &protocol {
            p.check_read(&format!("the log entry {key}"))?;
        }
        let action = field("action")?
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| CatalogError::corrupt(key, "action must be an object with one key"))?;
        let (tag, body) = action
            .iter()
            .next()
            .ok_or_else(|| CatalogError::corrupt(key, "empty action"))?;
        let action = match (tag.as_str(), frame) {
            ("create_frame", _) => {
                let schema = schema_from_json(body.get("schema").unwrap_or(&Value::Null))
                    .map_err(|e| CatalogError::corrupt(key, e))?;
                let partition_by: Vec<String> =
                    serde_json::from_value(body.get("partition_by").cloned().unwrap_or(json!([])))
                        .map_err(|e| CatalogError::corrupt(key, format!("partition_by: {e}")))?;
                let properties =
                    serde_json::from_value(body.get("properties").cloned().unwrap_or(json!({})))
                        .map_err(|e| CatalogError::corrupt(key, format!("properties: {e}")))?;
                let frame_id = body
                    .get("frame_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CatalogError::corrupt(key, "create_frame without frame_id"))?
                    .to_string();
                Action::CreateFrame {
                    frame_id,
                    schema,
                    partition_by,
                    properties,
                }
            }
            ("add_cells", Some((schema, pb))) => Action::AddCells {
                cells: cells_from_json(body.get("cells"), schema, pb, key)?,
            },
            ("rewrite_cells", Some((schema, pb))) => Action::RewriteCells {
                removed: serde_json::from_value(body.get("removed").cloned().unwrap_or(json!([])))
                    .map_err(|e| CatalogError::corrupt(key, format!("removed: {e}")))?,
                added: cells_from_json(body.get("added"), schema, pb, key)?,
            },
            ("set_schema", Some(_)) => Action::SetSchema {
                schema: schema_from_json(body.get("schema").unwrap_or(&Value::Null))
                    .map_err(|e| CatalogError::corrupt(key, e))?,
            },
            ("set_properties", Some(_)) => Action::SetProperties {
                properties: serde_json::from_value(
                    body.get("properties").cloned().unwrap_or(json!({})),
                )
                .map_err(|e| CatalogError::corrupt(key, format!("properties: {e}")))?,
            },
            (other, None) => {
                return Err(CatalogError::corrupt(
                    key,
                    format!("{other} entry found where create_frame was expected"),
                ));
            }
            (other, _) => {
                return Err(CatalogError::corrupt(
                    key,
                    format!("unknown action {other:?}"),
                ));
            }
        };
        Ok(LedgerEntry {
            version,
            timestamp_ms,
            writer,
            commit_id,
            operation,
            protocol,
            action,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `set_properties` entry reads back as it was written.
    #[test]
    fn set_properties_round_trips() {
        let properties: BTreeMap<String, String> = [(
            "apiary.sort_order".to_string(),
            r#"[{"column":"day"}]"#.to_string(),
        )]
        .into();
        let entry = LedgerEntry {
            version: 3,
            timestamp_ms: 1,
            writer: "w".into(),
            commit_id: "c".into(),
            operation: "ALTER TABLE".into(),
            protocol: None,
            action: Action::SetProperties {
                properties: properties.clone(),
            },
            metrics: BTreeMap::new(),
        };
        let json = serde_json::to_vec(&entry.to_json(&[]).unwrap()).unwrap();
        let schema: SchemaRef = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let back = LedgerEntry::from_json(&json, "k", Some((&schema, &[]))).unwrap();
        assert_eq!(back.action.name(), "set_properties");
        match back.action {
            Action::SetProperties { properties: read } => assert_eq!(read, properties),
            other => panic!("{other:?}"),
        }
    }
}
