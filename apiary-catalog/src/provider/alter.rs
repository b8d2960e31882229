//! `ALTER TABLE … ADD COLUMN`, `… ALTER COLUMN … TYPE` and `… RENAME COLUMN`: schema evolution,
//! one `set_schema` commit per statement; and `ALTER TABLE … CLUSTER BY`, one `set_properties`
//! commit of the frame's sort order.
//!
//! Cells are immutable, so cells written before a change are read under the newer schema:
//! DataFusion's Parquet scan fills a column a file lacks with NULL and casts a narrower stored
//! type to the frame's. That is why an added column must be nullable, and why only widenings
//! that keep each value's stored form are taken (a wider integer, `float` to `double`, a string
//! or binary to its large or view form, a decimal's precision up at the same scale): the
//! ledger's statistics of old cells then stay true under the new type, and pruning with them
//! stays right. A rename gives the frame's columns stable ids first ([`crate::column_ids`]), so
//! that old cells are read by id rather than by name. Dropping a column is refused. A write can
//! add and widen columns itself ([`Frame::merge_schema`](crate::Frame::merge_schema)).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{Statement as SqlStatement, TableObject};

use super::ProviderState;
use super::statements::{SchemaChange, ident};
use crate::cell::conform::keeps_stored_values;
use crate::clustering::{SORT_ORDER, SortKey, SortOrder};
use crate::column_ids;
use crate::error::{CatalogError, Kind};
use crate::ledger::Action;
use crate::options::SessionOptions;

impl ProviderState {
    /// Applies `changes` to frame `name` (resolved with `ctx`'s default catalog and schema).
    pub(crate) async fn alter_table(
        &self,
        ctx: &SessionContext,
        name: &TableReference,
        changes: &[SchemaChange],
    ) -> Result<()> {
        let options = ctx.state().config_options().catalog.clone();
        let resolved = name
            .clone()
            .resolve(&options.default_catalog, &options.default_schema);
        let qualified = format!(
            "{}.{}.{}",
            resolved.catalog, resolved.schema, resolved.table
        );
        let frame = self
            .frame(&resolved.catalog, &resolved.schema, &resolved.table)
            .await?
            .ok_or_else(|| CatalogError::not_found(Kind::Frame, &qualified))?;
        frame.admit().await?;
        let read = frame.ledger().refresh().await?;
        let mut fields = column_ids::owned_fields(&read.schema);
        let refuse = |what: String| -> Result<()> {
            Err(DataFusionError::NotImplemented(format!(
                "ALTER TABLE {qualified}: {what}"
            )))
        };
        if let Some(columns) = changes.iter().find_map(|c| match c {
            SchemaChange::ClusterBy { columns } => Some(columns),
            _ => None,
        }) {
            if changes.len() > 1 {
                refuse(
                    "CLUSTER BY is a statement of its own, not combined with other changes".into(),
                )?;
            }
            let Some(columns) = columns else {
                return Err(DataFusionError::Plan(format!(
                    "ALTER TABLE {qualified}: CLUSTER BY takes column names"
                )));
            };
            return self.cluster_by(&frame, &read, &qualified, columns).await;
        }
        for change in changes {
            match change {
                SchemaChange::AddColumn {
                    name,
                    sql_type,
                    not_null,
                    if_not_exists,
                } => {
                    if fields.iter().any(|f| f.name() == name) {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(DataFusionError::Plan(format!(
                            "ALTER TABLE {qualified}: column {name} already exists"
                        )));
                    }
                    if *not_null {
                        refuse(format!(
                            "an added column must be nullable ({name} NOT NULL): the rows already \
                             written have no value for it"
                        ))?;
                    }
                    let field = Field::new(name, sql_type_of(ctx, sql_type).await?, true);
                    fields.push(column_ids::with_next_id(&fields, field));
                }
                SchemaChange::SetType { name, sql_type } => {
                    let to = sql_type_of(ctx, sql_type).await?;
                    let Some(field) = fields.iter_mut().find(|f| f.name() == name) else {
                        return Err(DataFusionError::Plan(format!(
                            "ALTER TABLE {qualified}: no column named {name}"
                        )));
                    };
                    if read.partition_by.contains(name) {
                        refuse(format!(
                            "{name} is a partition column, whose type cannot change"
                        ))?;
                    }
                    let from = field.data_type().clone();
                    if from == to {
                        continue;
                    }
                    if !keeps_stored_values(&from, &to) {
                        refuse(format!(
                            "column {name} cannot change from {from} to {to}: only widenings \
                             that keep every stored value (int8 → int16 → int32 → int64, float \
                             → double, a string or binary to its large or view form, a \
                             decimal's precision up at the same scale)"
                        ))?;
                    }
                    *field = field.clone().with_data_type(to);
                }
                SchemaChange::Rename { from, to } => {
                    if from == to {
                        continue;
                    }
                    if !fields.iter().any(|f| f.name() == from) {
                        return Err(DataFusionError::Plan(format!(
                            "ALTER TABLE {qualified}: no column named {from}"
                        )));
                    }
                    if fields.iter().any(|f| f.name() == to) {
                        return Err(DataFusionError::Plan(format!(
                            "ALTER TABLE {qualified}: column {to} already exists"
                        )));
                    }
                    if read.partition_by.contains(from) {
                        refuse(format!(
                            "{from} is a partition column, whose name is in every cell's path"
                        ))?;
                    }
                    let order = crate::clustering::SortOrder::of(&read.properties)?;
                    if order.is_some_and(|o| o.keys().iter().any(|k| &k.column == from)) {
                        refuse(format!(
                            "{from} is a key of the frame's sort order, which its cells record by \
                             name"
                        ))?;
                    }
                    if crate::cell::writer::bloom_filter_columns(&read.properties).contains(from) {
                        refuse(format!(
                            "{from} has a Bloom filter, which the frame's properties name"
                        ))?;
                    }
                    column_ids::give_ids(&mut fields);
                    if let Some(f) = fields.iter_mut().find(|f| f.name() == from) {
                        *f = f.clone().with_name(to);
                    }
                }
                SchemaChange::ClusterBy { .. } => {}
                SchemaChange::Other(op) => refuse(format!(
                    "{op} is not supported (ADD COLUMN, ALTER COLUMN … TYPE and RENAME COLUMN \
                     are)"
                ))?,
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            read.schema.metadata().clone(),
        ));
        if schema == read.schema {
            return Ok(());
        }
        frame
            .commit_action(&read, "ALTER TABLE", Action::SetSchema { schema })
            .await?;
        Ok(())
    }

    /// `ALTER TABLE … CLUSTER BY (columns)` (none: `DROP CLUSTERING KEY`): one
    /// `set_properties` commit of the frame's sort order. Nothing is rewritten: later writes
    /// sort by it, and `apiary_compact(frame, true)` reclusters the cells written before.
    async fn cluster_by(
        &self,
        frame: &crate::Frame,
        read: &crate::ledger::FrameSnapshot,
        qualified: &str,
        columns: &[String],
    ) -> Result<()> {
        let mut properties = read.properties.clone();
        if columns.is_empty() {
            properties.remove(SORT_ORDER);
        } else {
            let order = SortOrder::new(columns.iter().map(SortKey::asc).collect());
            order.check(qualified, &read.schema, &read.partition_by)?;
            properties.insert(SORT_ORDER.to_string(), order.to_property());
        }
        if properties == read.properties {
            return Ok(());
        }
        frame
            .commit_action(read, "ALTER TABLE", Action::SetProperties { properties })
            .await?;
        Ok(())
    }
}

impl ProviderState {
    /// Under `SET apiary.schema_mode = 'merge'`, evolves the frame an `INSERT` statement `sql`
    /// writes into so that its rows fit ([`Frame::merge_schema`](crate::Frame::merge_schema)):
    /// listed columns are matched by name, unlisted ones by position (extra trailing columns
    /// are added under their own names). Does nothing for any other statement or setting; the
    /// INSERT itself is planned afterwards as always. DataFusion's planner refuses an INSERT
    /// naming a column its table lacks before any provider sees it, hence this step before.
    pub async fn merge_schema_for_insert(&self, ctx: &SessionContext, sql: &str) -> Result<()> {
        let mode = ctx
            .state()
            .config_options()
            .extensions
            .get::<SessionOptions>()
            .map_or_else(|| "strict".to_string(), |o| o.schema_mode.clone());
        match mode.as_str() {
            "strict" => return Ok(()),
            "merge" => {}
            other => {
                return Err(DataFusionError::Configuration(format!(
                    "apiary.schema_mode must be 'strict' or 'merge', not '{other}'"
                )));
            }
        }
        let Some((name, columns, source)) = insert_of(sql) else {
            return Ok(());
        };
        let options = ctx.state().config_options().catalog.clone();
        let resolved = name.resolve(&options.default_catalog, &options.default_schema);
        let Some(frame) = self
            .frame(&resolved.catalog, &resolved.schema, &resolved.table)
            .await?
        else {
            return Ok(());
        };
        let rows = ctx.sql(&source).await?;
        let rows = Arc::clone(rows.schema().inner());
        let read = frame.ledger().refresh().await?;
        let names: Vec<String> = if columns.is_empty() {
            rows.fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    read.schema
                        .fields()
                        .get(i)
                        .map_or_else(|| f.name().clone(), |t| t.name().clone())
                })
                .collect()
        } else {
            columns
        };
        let fields: Vec<Field> = rows
            .fields()
            .iter()
            .zip(names)
            .map(|(f, name)| Field::new(name, f.data_type().clone(), true))
            .collect();
        frame.merge_schema(&Schema::new(fields), "INSERT").await?;
        Ok(())
    }
}

/// The target, listed columns and source query of an `INSERT` statement.
fn insert_of(sql: &str) -> Option<(TableReference, Vec<String>, String)> {
    if !sql.to_ascii_uppercase().contains("INSERT") {
        return None;
    }
    let mut statements = DFParser::parse_sql(sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let Some(Statement::Statement(statement)) = statements.pop_front() else {
        return None;
    };
    let SqlStatement::Insert(insert) = *statement else {
        return None;
    };
    let TableObject::TableName(table) = &insert.table else {
        return None;
    };
    let columns = insert
        .columns
        .iter()
        .map(|c| c.0.last().and_then(|p| p.as_ident()).map(ident))
        .collect::<Option<Vec<_>>>()?;
    let source = insert.source.as_ref()?.to_string();
    Some((
        TableReference::parse_str(&table.to_string()),
        columns,
        source,
    ))
}

/// The Arrow type DataFusion gives SQL type `sql_type`.
async fn sql_type_of(ctx: &SessionContext, sql_type: &str) -> Result<DataType> {
    let df = ctx
        .sql(&format!("SELECT CAST(NULL AS {sql_type}) AS t"))
        .await?;
    Ok(df.schema().field(0).data_type().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_widenings_that_keep_stored_values() {
        use DataType::*;
        for (from, to) in [
            (Int8, Int64),
            (Int32, Int64),
            (UInt16, Int32),
            (Float32, Float64),
            (Utf8, LargeUtf8),
            (Utf8, Utf8View),
            (Decimal128(10, 2), Decimal128(18, 2)),
        ] {
            assert!(keeps_stored_values(&from, &to), "{from} → {to}");
        }
        for (from, to) in [
            (Int64, Int32),
            (Int32, UInt64),
            (Int32, Float64),
            (Decimal128(10, 2), Decimal128(12, 3)),
            (Date32, Date64),
            (Utf8, Int64),
        ] {
            assert!(!keeps_stored_values(&from, &to), "{from} → {to}");
        }
    }
}
