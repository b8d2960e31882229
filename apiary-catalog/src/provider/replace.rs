//! `CREATE OR REPLACE` of a frame in one atomic step, for Apiary's own doors.
//!
//! DataFusion 55 runs `CREATE OR REPLACE TABLE` / `… EXTERNAL TABLE` as "deregister the old
//! table, then create the new one": through a plain `SessionContext` the provider cannot stop
//! the drop, so a create that then fails leaves the name gone (the old frame is only dropped,
//! and `apiary_undrop` brings it back). Apiary's doors — [`ProviderState::execute_replace`],
//! used by `Apiary::sql`, the `apiary` command and the Python wheel — instead build the new frame
//! in a folder of its own, unregistered, fill it, and give it the name in one registry commit
//! that drops the old one. Until that commit readers see the old frame; if anything fails before
//! it, the old frame is untouched and the unregistered folder is a leftover cleansing reclaims.

use std::sync::Arc;

use datafusion::common::{TableReference, not_impl_err};
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;

use super::ProviderState;
use super::factory::frame_spec;
use crate::frame::Frame;
use crate::ledger::FrameSpec;

impl ProviderState {
    /// Runs `plan` if it is a `CREATE OR REPLACE` of an existing frame of this meadow, atomically;
    /// `None` when it is not (the caller hands it to DataFusion).
    pub async fn execute_replace(
        &self,
        ctx: &SessionContext,
        plan: &LogicalPlan,
    ) -> Result<Option<DataFrame>> {
        let LogicalPlan::Ddl(ddl) = plan else {
            return Ok(None);
        };
        let options = ctx.state().config_options().catalog.clone();
        let (default_catalog, default_schema) = (
            options.default_catalog.as_str(),
            options.default_schema.as_str(),
        );
        match ddl {
            DdlStatement::CreateMemoryTable(cmd) if cmd.or_replace && !cmd.temporary => {
                let name = cmd.name.clone().resolve(default_catalog, default_schema);
                let Some(table) = self
                    .existing_name(&cmd.name, default_catalog, default_schema)
                    .await?
                else {
                    return Ok(None);
                };
                if !cmd.constraints.is_empty() {
                    return not_impl_err!(
                        "constraints (PRIMARY KEY, UNIQUE, …) are not supported on frame {table}"
                    );
                }
                if !cmd.column_defaults.is_empty() {
                    return not_impl_err!("DEFAULT values are not supported yet (frame {table})");
                }
                let input = DataFrame::new(ctx.state(), (*cmd.input).clone());
                let schema = Arc::new(input.schema().as_arrow().clone());
                let stream = input.execute_stream().await?;
                let registry = self.registry();
                let ledger = registry
                    .prepare_frame(
                        &name.catalog,
                        &name.schema,
                        &name.table,
                        &FrameSpec::new(schema),
                    )
                    .await?;
                let frame = Frame::new(ledger.clone(), self.options().write)
                    .with_admission(self.options().admission.clone());
                frame.admit().await?;
                let cells = frame
                    .cell_writer(&ledger.latest())?
                    .write_record_batch_stream(stream)
                    .await?;
                if !cells.is_empty() {
                    frame
                        .commit_cells(
                            &ledger.latest(),
                            "CREATE OR REPLACE TABLE AS SELECT",
                            cells,
                            false,
                        )
                        .await?;
                }
                registry
                    .publish_frame(&name.catalog, &name.schema, &name.table, &ledger, true)
                    .await?;
                Ok(Some(empty(ctx)?))
            }
            DdlStatement::CreateExternalTable(cmd)
                if cmd.or_replace && cmd.file_type.eq_ignore_ascii_case("APIARY") =>
            {
                if self
                    .existing_name(&cmd.name, default_catalog, default_schema)
                    .await?
                    .is_none()
                {
                    return Ok(None);
                }
                let (name, spec) = frame_spec(cmd, default_catalog, default_schema)?;
                let registry = self.registry();
                let ledger = registry
                    .prepare_frame(&name.catalog, &name.schema, &name.table, &spec)
                    .await?;
                registry
                    .publish_frame(&name.catalog, &name.schema, &name.table, &ledger, true)
                    .await?;
                Ok(Some(empty(ctx)?))
            }
            _ => Ok(None),
        }
    }

    /// `hive.box.frame` if `name` resolves to a frame of this meadow that exists.
    async fn existing_name(
        &self,
        name: &TableReference,
        default_catalog: &str,
        default_schema: &str,
    ) -> Result<Option<String>> {
        let name = name.clone().resolve(default_catalog, default_schema);
        let state = self.refresh().await?;
        Ok(state
            .frame(&name.catalog, &name.schema, &name.table)
            .is_ok()
            .then(|| format!("{}.{}.{}", name.catalog, name.schema, name.table)))
    }
}

/// What a DDL statement returns: no rows.
fn empty(ctx: &SessionContext) -> Result<DataFrame> {
    Ok(DataFrame::new(
        ctx.state(),
        LogicalPlanBuilder::empty(false).build()?,
    ))
}
