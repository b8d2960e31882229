//! `CREATE EXTERNAL TABLE hive.box.frame (…) STORED AS APIARY PARTITIONED BY (…) LOCATION ''`:
//! the way to declare partition columns from SQL (DataFusion's `CREATE TABLE` has no
//! `PARTITIONED BY`) and a sort order (`WITH ORDER (…)`, [`crate::clustering`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{DataFusionError, ResolvedTableReference, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{CreateExternalTable, Expr, SortExpr};

use super::ProviderState;
use crate::clustering::{SORT_ORDER, SortKey, SortOrder};
use crate::ledger::FrameSpec;
use crate::registry::IfExists;

/// Creates frames for `STORED AS APIARY`.
#[derive(Debug)]
pub struct FrameTableProviderFactory {
    apiary: ProviderState,
}

impl FrameTableProviderFactory {
    /// The factory creating frames in the registry of `apiary`.
    pub fn new(apiary: ProviderState) -> Self {
        Self { apiary }
    }
}

#[async_trait]
impl TableProviderFactory for FrameTableProviderFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let catalog = &state.config_options().catalog;
        let (name, spec) = frame_spec(cmd, &catalog.default_catalog, &catalog.default_schema)?;
        let qualified = format!("{}.{}.{}", name.catalog, name.schema, name.table);
        if self
            .apiary
            .registry()
            .snapshot()
            .hive(&name.catalog)
            .is_err()
            && self.apiary.refresh().await?.hive(&name.catalog).is_err()
        {
            return plan_err!(
                "{} is not an Apiary hive: create it with CREATE DATABASE {}",
                name.catalog,
                name.catalog
            );
        }
        self.apiary
            .registry()
            .create_frame(
                &name.catalog,
                &name.schema,
                &name.table,
                &spec,
                IfExists::Fail,
            )
            .await?;
        let table = self
            .apiary
            .frame_table(&name.catalog, &name.schema, &name.table)
            .await?
            .ok_or_else(|| {
                DataFusionError::Plan(format!("frame {qualified} vanished after its creation"))
            })?;
        Ok(table)
    }
}

/// The frame a `CREATE EXTERNAL TABLE … STORED AS APIARY` declares: its resolved name and spec,
/// or an error naming what Apiary does not take.
pub(crate) fn frame_spec(
    cmd: &CreateExternalTable,
    default_catalog: &str,
    default_schema: &str,
) -> Result<(ResolvedTableReference, FrameSpec)> {
    let name = cmd.name.clone().resolve(default_catalog, default_schema);
    let qualified = format!("{}.{}.{}", name.catalog, name.schema, name.table);
    if cmd.locations.iter().any(|l| !l.is_empty()) {
        return plan_err!(
            "frame {qualified}: write LOCATION '' — Apiary chooses where a frame's cells live"
        );
    }
    if !cmd.constraints.is_empty() {
        return plan_err!(
            "frame {qualified}: constraints (PRIMARY KEY, UNIQUE, …) are not supported"
        );
    }
    if cmd.unbounded {
        return plan_err!("frame {qualified}: UNBOUNDED is not supported");
    }
    if !cmd.column_defaults.is_empty() {
        return plan_err!("frame {qualified}: DEFAULT values are not supported yet");
    }
    let schema = Arc::new(cmd.schema.as_arrow().clone());
    let mut properties: BTreeMap<String, String> = cmd.options.clone().into_iter().collect();
    if let Some(order) = sort_order(&qualified, &cmd.order_exprs)? {
        properties.insert(SORT_ORDER.to_string(), order.to_property());
    }
    Ok((
        name,
        FrameSpec {
            schema,
            partition_by: cmd.table_partition_cols.clone(),
            properties,
        },
    ))
}

/// `WITH ORDER (a ASC, b DESC NULLS LAST)`: one order of plain columns.
fn sort_order(frame: &str, orders: &[Vec<SortExpr>]) -> Result<Option<SortOrder>> {
    let order = match orders {
        [] => return Ok(None),
        [one] => one,
        _ => {
            return plan_err!("frame {frame}: give one WITH ORDER (a frame has one sort order)");
        }
    };
    let keys = order
        .iter()
        .map(|s| match &s.expr {
            Expr::Column(c) => Ok(SortKey {
                column: c.name.clone(),
                descending: !s.asc,
                nulls_first: s.nulls_first,
            }),
            other => plan_err!(
                "frame {frame}: WITH ORDER takes columns, not {other} (sort by a column that \
                 holds it)"
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(SortOrder::new(keys)))
}
