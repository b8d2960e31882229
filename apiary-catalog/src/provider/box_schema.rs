//! A box as a DataFusion schema: its frames are the tables.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, exec_err, not_impl_err};
use datafusion::datasource::ViewTable;
use datafusion::error::Result;
use datafusion::logical_expr::TableType;

use super::{FrameTableProvider, ProviderState};
use crate::ledger::FrameSpec;
use crate::registry::{IfExists, IfMissing};

/// One box of a hive as a DataFusion schema: `CREATE TABLE` creates a frame in it.
#[derive(Debug)]
pub struct BoxSchemaProvider {
    apiary: ProviderState,
    hive: String,
    box_: String,
}

impl BoxSchemaProvider {
    /// The box `hive.box_`.
    pub fn new(apiary: ProviderState, hive: &str, box_: &str) -> Self {
        Self {
            apiary,
            hive: hive.into(),
            box_: box_.into(),
        }
    }

    /// The hive the box belongs to.
    pub fn hive(&self) -> &str {
        &self.hive
    }

    /// The box's name.
    pub fn name(&self) -> &str {
        &self.box_
    }

    fn qualified(&self, frame: &str) -> String {
        format!("{}.{}.{frame}", self.hive, self.box_)
    }

    /// `CREATE TABLE` (no rows) or `CREATE TABLE … AS SELECT` (rows collected by DataFusion):
    /// create the frame, then write the rows in one commit. If writing fails the frame is
    /// dropped again.
    fn create_from_memory(&self, name: &str, table: &MemTable) -> Result<()> {
        if table.constraints().is_some_and(|c| !c.is_empty()) {
            return not_impl_err!(
                "constraints (PRIMARY KEY, UNIQUE, …) are not supported on frame {}",
                self.qualified(name)
            );
        }
        let schema = table.schema();
        if let Some(f) = schema
            .fields()
            .iter()
            .find(|f| table.get_column_default(f.name()).is_some())
        {
            return not_impl_err!(
                "DEFAULT values are not supported yet (column {} of frame {})",
                f.name(),
                self.qualified(name)
            );
        }
        let mut batches = vec![];
        for partition in &table.batches {
            let guard = partition.try_read().map_err(|_| {
                DataFusionError::Execution(format!(
                    "the rows for frame {} are being written elsewhere",
                    self.qualified(name)
                ))
            })?;
            batches.extend(guard.iter().filter(|b| b.num_rows() > 0).cloned());
        }
        let (apiary, hive, box_, frame) = (
            self.apiary.clone(),
            self.hive.clone(),
            self.box_.clone(),
            name.to_string(),
        );
        self.apiary
            .block_on(async move {
                let registry = apiary.registry();
                registry
                    .create_frame(
                        &hive,
                        &box_,
                        &frame,
                        &FrameSpec::new(schema),
                        IfExists::Fail,
                    )
                    .await?;
                if batches.is_empty() {
                    return Ok(());
                }
                let written = match apiary.frame(&hive, &box_, &frame).await {
                    Ok(Some(f)) => {
                        let stream = futures::stream::iter(
                            batches.into_iter().map(Ok::<_, crate::CatalogError>),
                        );
                        f.append(stream, "CREATE TABLE AS SELECT").await.map(|_| ())
                    }
                    Ok(None) => Err(crate::CatalogError::not_found(
                        crate::Kind::Frame,
                        format!("{hive}.{box_}.{frame}"),
                    )),
                    Err(e) => Err(e),
                };
                // A write that provably committed nothing leaves no frame behind; one whose
                // outcome is unknown keeps it (its rows may be there).
                if let Err(e) = &written
                    && e.proves_nothing_committed()
                {
                    let _ = registry
                        .drop_frame(&hive, &box_, &frame, IfMissing::Ignore)
                        .await;
                }
                written
            })
            .map_err(DataFusionError::from)
    }
}

#[async_trait]
impl SchemaProvider for BoxSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.apiary
            .namespace()
            .frame_names(&self.hive, &self.box_)
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .apiary
            .frame_table(&self.hive, &self.box_, name)
            .await?
            .map(|t| t as Arc<dyn TableProvider>))
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        // Listings (information_schema) need no ledger: every frame is a base table.
        let exists = self.table_exist(name);
        Ok(exists.then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        let mut state = self.apiary.registry().snapshot();
        if state.frame(&self.hive, &self.box_, name).is_err() {
            state = self.apiary.refresh_blocking();
        }
        state.frame(&self.hive, &self.box_, name).is_ok()
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(frame) = table.downcast_ref::<FrameTableProvider>() {
            // Created by the APIARY table factory: the frame exists already.
            if frame.name() == self.qualified(&name) {
                return Ok(None);
            }
            return exec_err!(
                "frame {} cannot be registered as {}: frames are not renamed or shared",
                frame.name(),
                self.qualified(&name)
            );
        }
        if let Some(mem) = table.downcast_ref::<MemTable>() {
            self.create_from_memory(&name, mem)?;
            return Ok(None);
        }
        if table.is::<ViewTable>() {
            return not_impl_err!(
                "views are not stored in Apiary boxes: create view {} in the session's own catalog (e.g. datafusion.public)",
                self.qualified(&name)
            );
        }
        exec_err!(
            "box {}.{} holds only Apiary frames: create {name} with CREATE TABLE or CREATE EXTERNAL TABLE … STORED AS APIARY",
            self.hive,
            self.box_
        )
    }

    /// `DROP TABLE`: a soft drop; the name is free at once.
    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (registry, hive, box_, frame) = (
            self.apiary.registry().clone(),
            self.hive.clone(),
            self.box_.clone(),
            name.to_string(),
        );
        self.apiary
            .block_on(async move {
                registry
                    .drop_frame(&hive, &box_, &frame, IfMissing::Fail)
                    .await
            })
            .map_err(DataFusionError::from)?;
        Ok(None)
    }
}
