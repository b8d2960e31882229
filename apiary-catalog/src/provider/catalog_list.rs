//! The session's catalog list with every hive added as a catalog.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProvider};

use super::ProviderState;
use crate::registry::IfExists;

/// Wraps the session's own catalog list: its catalogs (`datafusion`, …) come first and keep
/// working; every hive of the meadow is a catalog too. `CREATE DATABASE name` creates a hive.
#[derive(Debug)]
pub struct MeadowCatalogProviderList {
    inner: Arc<dyn CatalogProviderList>,
    apiary: ProviderState,
}

impl MeadowCatalogProviderList {
    /// The session's list `inner` with the hives of `apiary` added.
    pub fn new(inner: Arc<dyn CatalogProviderList>, apiary: ProviderState) -> Self {
        Self { inner, apiary }
    }

    /// The state the hives' providers share.
    pub fn apiary(&self) -> &ProviderState {
        &self.apiary
    }

    /// The session's own catalogs.
    pub fn inner(&self) -> &Arc<dyn CatalogProviderList> {
        &self.inner
    }
}

impl CatalogProviderList for MeadowCatalogProviderList {
    /// `CREATE DATABASE` hands over an empty in-memory catalog: that becomes a hive. Anything
    /// else (a catalog registered by hand) goes to the session's own list.
    ///
    /// DataFusion gives this method no way to fail; when the hive cannot be created the reason
    /// is logged and reported by the next statement that uses the name.
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        let is_create_database = catalog
            .downcast_ref::<MemoryCatalogProvider>()
            .is_some_and(|c| c.schema_names().is_empty());
        if !is_create_database || self.inner.catalog(&name).is_some() {
            return self.inner.register_catalog(name, catalog);
        }
        let registry = self.apiary.registry().clone();
        let hive = name.clone();
        match self
            .apiary
            .block_on(async move { registry.create_hive(&hive, IfExists::Fail).await })
        {
            Ok(_) => self.apiary.forget_failed_hive(&name),
            Err(e) => {
                log::error!("CREATE DATABASE {name}: {e}");
                self.apiary.remember_failed_hive(&name, e.to_string());
            }
        }
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        let mut names = self.inner.catalog_names();
        for hive in self.apiary.namespace().hive_names() {
            if !names.contains(&hive) {
                names.push(hive);
            }
        }
        names
    }

    /// The session's own catalog of that name — unless it is the empty one DataFusion creates
    /// for a default catalog (`SessionConfig::with_default_catalog_and_schema("sales", "eu")`)
    /// and a hive has the name: the hive, then.
    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let own = self.inner.catalog(name);
        if let Some(c) = &own
            && !is_empty_default(c.as_ref())
        {
            return own;
        }
        let mut state = self.apiary.registry().snapshot();
        if state.hive(name).is_err() {
            state = self.apiary.refresh_blocking();
        }
        if state.hive(name).is_ok() || self.apiary.failed_hive(name).is_some() {
            return Some(self.apiary.hive(name));
        }
        own
    }
}

/// An in-memory catalog whose schemas hold no table: what DataFusion creates for the default
/// catalog and schema.
fn is_empty_default(catalog: &dyn CatalogProvider) -> bool {
    catalog
        .downcast_ref::<MemoryCatalogProvider>()
        .is_some_and(|c| {
            c.schema_names()
                .iter()
                .all(|s| c.schema(s).is_some_and(|s| s.table_names().is_empty()))
        })
}
