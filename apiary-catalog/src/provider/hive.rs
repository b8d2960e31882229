//! A hive as a DataFusion catalog: its boxes are the schemas.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::common::{DataFusionError, exec_err};
use datafusion::error::Result;

use super::{BoxSchemaProvider, ProviderState};
use crate::registry::{IfExists, IfMissing};

/// One hive as a DataFusion catalog: `CREATE SCHEMA` creates a box in it.
#[derive(Debug)]
pub struct HiveCatalogProvider {
    apiary: ProviderState,
    hive: String,
}

impl HiveCatalogProvider {
    /// The hive named `hive`.
    pub fn new(apiary: ProviderState, hive: impl Into<String>) -> Self {
        Self {
            apiary,
            hive: hive.into(),
        }
    }

    /// The hive's name.
    pub fn name(&self) -> &str {
        &self.hive
    }

    fn check_not_failed(&self) -> Result<()> {
        match self.apiary.failed_hive(&self.hive) {
            Some(reason) if self.apiary.registry().snapshot().hive(&self.hive).is_err() => {
                exec_err!("hive {} was not created: {reason}", self.hive)
            }
            _ => Ok(()),
        }
    }
}

impl CatalogProvider for HiveCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        self.apiary
            .namespace()
            .box_names(&self.hive)
            .unwrap_or_default()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let mut state = self.apiary.registry().snapshot();
        if state.get_box(&self.hive, name).is_err() {
            state = self.apiary.refresh_blocking();
        }
        state.get_box(&self.hive, name).ok().map(|_| {
            Arc::new(BoxSchemaProvider::new(
                self.apiary.clone(),
                &self.hive,
                name,
            )) as _
        })
    }

    /// `CREATE SCHEMA hive.box` hands over an empty in-memory schema: that becomes a box.
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.check_not_failed()?;
        if let Some(b) = schema.downcast_ref::<BoxSchemaProvider>()
            && b.hive() == self.hive
            && b.name() == name
        {
            return Ok(None);
        }
        let empty = schema
            .downcast_ref::<MemorySchemaProvider>()
            .is_some_and(|s| s.table_names().is_empty());
        if !empty {
            return exec_err!(
                "hive {} holds only Apiary boxes: create one with CREATE SCHEMA {}.{name}",
                self.hive,
                self.hive
            );
        }
        let (registry, hive, name) = (
            self.apiary.registry().clone(),
            self.hive.clone(),
            name.to_string(),
        );
        self.apiary
            .block_on(async move { registry.create_box(&hive, &name, IfExists::Fail).await })
            .map_err(DataFusionError::from)?;
        Ok(None)
    }

    /// `DROP SCHEMA hive.box [CASCADE]`: a soft drop of the box (and, with CASCADE, its frames).
    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let (registry, hive, box_) = (
            self.apiary.registry().clone(),
            self.hive.clone(),
            name.to_string(),
        );
        let dropped = self
            .apiary
            .block_on(async move {
                registry
                    .drop_box(&hive, &box_, IfMissing::Ignore, cascade)
                    .await
            })
            .map_err(DataFusionError::from)?;
        Ok(dropped.then(|| {
            Arc::new(BoxSchemaProvider::new(
                self.apiary.clone(),
                &self.hive,
                name,
            )) as _
        }))
    }
}
