//! Stable column ids: how a renamed column is still found in the cells written before.
//!
//! DataFusion's Parquet scan finds a file's columns by name, and cells are immutable. A frame
//! whose columns are renamed therefore gives every column an id — Arrow field metadata
//! `PARQUET:field_id`, which the Parquet writer stores as the file's field id and the reader
//! hands back — and its scans read cells through [`ColumnIdAdapterFactory`], which finds each
//! column by id. Ids are given at the first rename (1, 2, … in column order; a column added
//! later takes the next): cells written before then carry none, and hold their columns under
//! the names the columns had at that moment, which each column keeps in
//! [`NAME_IN_CELLS_WITHOUT_IDS`]. A frame with ids declares the protocol feature
//! [`COLUMN_IDS`](crate::protocol::feature::COLUMN_IDS).
//!
//! The ledger's statistics are keyed by column name; a `set_schema` that renames moves them
//! with the column ([`renames`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::error::Result;
use datafusion::parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapter, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};

/// The field metadata key of a column's id (the one the Parquet writer and reader use).
pub const FIELD_ID: &str = PARQUET_FIELD_ID_META_KEY;

/// The field metadata key of the name a column has in cells written before the frame had ids.
pub const NAME_IN_CELLS_WITHOUT_IDS: &str = "apiary.name_in_cells_without_ids";

/// A column's id, if it has one.
pub fn id_of(field: &Field) -> Option<i32> {
    field.metadata().get(FIELD_ID)?.parse().ok()
}

/// Whether the columns of `schema` carry ids.
pub fn has_ids(schema: &Schema) -> bool {
    schema.fields().iter().any(|f| id_of(f).is_some())
}

/// `schema` without column ids (as a new frame starts, whatever a schema was copied from).
pub(crate) fn without_ids(schema: &SchemaRef) -> SchemaRef {
    let marked = |f: &Field| {
        f.metadata().contains_key(FIELD_ID) || f.metadata().contains_key(NAME_IN_CELLS_WITHOUT_IDS)
    };
    if !schema.fields().iter().any(|f| marked(f)) {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut metadata = f.metadata().clone();
            metadata.remove(FIELD_ID);
            metadata.remove(NAME_IN_CELLS_WITHOUT_IDS);
            f.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `fields` with ids given, when they have none: 1, 2, … in order, each column remembering its
/// present name as the one it has in the cells already written.
pub(crate) fn give_ids(fields: &mut [Field]) {
    if fields.iter().any(|f| id_of(f).is_some()) {
        return;
    }
    for (i, f) in fields.iter_mut().enumerate() {
        let mut metadata = f.metadata().clone();
        metadata.insert(FIELD_ID.to_string(), (i + 1).to_string());
        metadata.insert(NAME_IN_CELLS_WITHOUT_IDS.to_string(), f.name().clone());
        *f = f.clone().with_metadata(metadata);
    }
}

/// `field`, a column new to `fields`, with the next id when the others have ids (and never an
/// id it came with).
/// The fields of `schema`, owned, to edit before they make a new schema.
pub(crate) fn owned_fields(schema: &Schema) -> Vec<Field> {
    schema.fields().iter().map(|f| f.as_ref().clone()).collect()
}

pub(crate) fn with_next_id(fields: &[Field], field: Field) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.remove(FIELD_ID);
    metadata.remove(NAME_IN_CELLS_WITHOUT_IDS);
    if let Some(last) = fields.iter().filter_map(id_of).max() {
        metadata.insert(FIELD_ID.to_string(), (last + 1).to_string());
    }
    field.with_metadata(metadata)
}

/// The column of `old` that `field` of a newer schema is: the one with its id; in a schema from
/// before ids, the one with the name it had then; else the one with its name.
pub(crate) fn same_column<'a>(old: &'a Schema, field: &Field) -> Option<&'a Field> {
    match id_of(field) {
        Some(id) if has_ids(old) => old
            .fields()
            .iter()
            .find(|f| id_of(f) == Some(id))
            .map(|f| f.as_ref()),
        Some(_) => field
            .metadata()
            .get(NAME_IN_CELLS_WITHOUT_IDS)
            .and_then(|name| old.field_with_name(name).ok()),
        None => old.field_with_name(field.name()).ok(),
    }
}

/// The columns renamed from `old` to `new`: `(old name, new name)`.
pub(crate) fn renames(old: &Schema, new: &Schema) -> Vec<(String, String)> {
    new.fields()
        .iter()
        .filter_map(|f| {
            let before = same_column(old, f)?;
            (before.name() != f.name()).then(|| (before.name().clone(), f.name().clone()))
        })
        .collect()
}

/// What changed from schema `old` to `new`, for people: `add c Utf8`, `rename a to b`,
/// `n Int32 → Int64`.
pub fn schema_changes(old: &Schema, new: &Schema) -> Vec<String> {
    let mut changes = vec![];
    for f in new.fields() {
        let Some(before) = same_column(old, f) else {
            changes.push(format!("add {} {}", f.name(), f.data_type()));
            continue;
        };
        if before.name() != f.name() {
            changes.push(format!("rename {} to {}", before.name(), f.name()));
        }
        if before.data_type() != f.data_type() {
            changes.push(format!(
                "{} {} → {}",
                f.name(),
                before.data_type(),
                f.data_type()
            ));
        }
    }
    changes
}

/// A frame scan's configuration with what datafusion-proto does not carry put back: the
/// adapter that finds columns by id, when the frame has them. The scan installs it when it is
/// planned; a swarm worker calls this on every scan it decodes.
pub fn restore_frame_scan(config: FileScanConfig) -> FileScanConfig {
    if config.expr_adapter_factory.is_some() || !has_ids(config.file_schema()) {
        return config;
    }
    FileScanConfigBuilder::from(config)
        .with_expr_adapter(Some(Arc::new(ColumnIdAdapterFactory)))
        .build()
}

/// Rewrites a scan's expressions onto a cell's own columns by column id (see the module doc).
/// Columns a cell does not hold read as NULL; a stored type narrower than the frame's is cast,
/// as DataFusion's default adapter does (it does the rest of the work).
#[derive(Debug, Clone, Copy, Default)]
pub struct ColumnIdAdapterFactory;

impl PhysicalExprAdapterFactory for ColumnIdAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let physical = physical_file_schema.as_ref();
        let by_id = has_ids(physical);
        // Each frame column under the name this cell stores it by, or a name the cell does not
        // hold (so that it reads as NULL, even where its frame name is another column's here).
        let mut renames = HashMap::new();
        let fields: Vec<Field> = logical_file_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let stored = match id_of(f) {
                    Some(id) if by_id => physical
                        .fields()
                        .iter()
                        .find(|p| id_of(p) == Some(id))
                        .map(|p| p.name().clone()),
                    Some(_) => f
                        .metadata()
                        .get(NAME_IN_CELLS_WITHOUT_IDS)
                        .filter(|n| physical.field_with_name(n).is_ok())
                        .cloned(),
                    None => Some(f.name().clone()),
                };
                let name = stored.unwrap_or_else(|| format!("\u{0}apiary: not in this cell {i}"));
                if &name != f.name() {
                    renames.insert(f.name().clone(), name.clone());
                }
                f.as_ref().clone().with_name(name)
            })
            .collect();
        let logical = Arc::new(Schema::new_with_metadata(
            fields,
            logical_file_schema.metadata().clone(),
        ));
        Ok(Arc::new(ColumnIdAdapter {
            renames,
            inner: DefaultPhysicalExprAdapter::new(logical, physical_file_schema),
        }))
    }
}

#[derive(Debug)]
struct ColumnIdAdapter {
    /// frame column name → its name in the cell
    renames: HashMap<String, String>,
    inner: DefaultPhysicalExprAdapter,
}

impl PhysicalExprAdapter for ColumnIdAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = if self.renames.is_empty() {
            expr
        } else {
            expr.transform_up(|e| {
                let Some(c) = e.downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                Ok(match self.renames.get(c.name()) {
                    Some(to) => Transformed::yes(Arc::new(Column::new(to, c.index())) as _),
                    None => Transformed::no(e),
                })
            })
            .data()?
        };
        self.inner.rewrite(expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    fn with_id(name: &str, id: i32) -> Field {
        Field::new(name, DataType::Int32, true)
            .with_metadata([(FIELD_ID.to_string(), id.to_string())].into())
    }

    #[test]
    fn ids_are_given_once_and_renames_follow_them() {
        let mut fields = vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ];
        give_ids(&mut fields);
        assert_eq!(
            fields.iter().map(id_of).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
        let before = fields.clone();
        give_ids(&mut fields);
        assert_eq!(fields, before);
        let c = with_next_id(&fields, Field::new("c", DataType::Int32, true));
        assert_eq!(id_of(&c), Some(3));
        // Ids a field or schema came with (from another table's Parquet files, say) are dropped.
        let plain = [Field::new("a", DataType::Int32, true)];
        assert_eq!(id_of(&with_next_id(&plain, with_id("x", 9))), None);
        let copied = Arc::new(Schema::new(vec![with_id("a", 7)]));
        assert!(!has_ids(&without_ids(&copied)));

        let before_ids = Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ]);
        let mut renamed = fields.clone();
        renamed[0] = renamed[0].clone().with_name("x");
        assert_eq!(
            renames(&before_ids, &Schema::new(renamed)),
            [("a".into(), "x".into())]
        );

        let old = Schema::new(vec![with_id("a", 1), with_id("b", 2)]);
        let new = Schema::new(vec![with_id("b", 1), with_id("a", 2), with_id("x", 3)]);
        assert_eq!(
            renames(&old, &new),
            [("a".into(), "b".into()), ("b".into(), "a".into())]
        );
    }
}
