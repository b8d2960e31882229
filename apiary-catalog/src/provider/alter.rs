//! `ALTER TABLE … ADD COLUMN` and `… ALTER COLUMN … TYPE`: schema evolution, one `set_schema`
//! commit per statement.
//!
//! Cells are immutable, so cells written before a change are read under the newer schema by
//! column name: DataFusion's Parquet scan fills a column a file lacks with NULL and casts a
//! narrower stored type to the frame's. That is why an added column must be nullable, and why
//! only widenings that keep each value's stored form are taken (a wider integer, `float` to
//! `double`, a string or binary to its large or view form, a decimal's precision up at the same
//! scale): the ledger's statistics of old cells then stay true under the new type, and pruning
//! with them stays right. Renaming needs stable column ids and is refused. A write can make the
//! same changes itself ([`Frame::merge_schema`](crate::Frame::merge_schema)).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use super::ApiaryCatalog;
use super::statements::SchemaChange;
use crate::cell::conform::keeps_stored_values;
use crate::error::{Error, Kind};
use crate::ledger::Action;

impl ApiaryCatalog {
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
            .ok_or_else(|| Error::not_found(Kind::Frame, &qualified))?;
        frame.admit().await?;
        let read = frame.ledger().refresh().await?;
        let mut fields: Vec<Field> = read
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let refuse = |what: String| -> Result<()> {
            Err(DataFusionError::NotImplemented(format!(
                "ALTER TABLE {qualified}: {what}"
            )))
        };
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
                    fields.push(Field::new(name, sql_type_of(ctx, sql_type).await?, true));
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
                SchemaChange::Other(op) => refuse(format!(
                    "{op} is not supported (ADD COLUMN and ALTER COLUMN … TYPE are; RENAME \
                     COLUMN needs stable column ids, which frames do not have yet)"
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
