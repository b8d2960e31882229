//! DataFusion providers: hives as catalogs, boxes as schemas, frames as tables.
//!
//! [`ProviderState`] is the shared state behind every provider: one registry cache, one meadow,
//! Apiary's I/O runtime and a cache of open ledgers. [`ProviderState::register`] installs it in a
//! `SessionContext`: a [`MeadowCatalogProviderList`] wrapping the session's own list (so
//! `datafusion.public` keeps working and `CREATE DATABASE` makes a hive), the `APIARY` table
//! factory (`CREATE EXTERNAL TABLE … STORED AS APIARY PARTITIONED BY (…)`), the table functions
//! `apiary_cells`, `apiary_history`, `apiary_version`, `apiary_compact` and `apiary_cleanse`,
//! and the meadow's object store.

mod action;
mod alter;
mod box_schema;
mod catalog_list;
mod dml_guard;
mod factory;
mod frame_table;
mod functions;
mod hive;
mod join_filters;
mod merge;
mod own_runtime;
mod pruning;
mod replace;
mod row_change;
mod scan;
mod scan_order;
pub use scan::{EmptyScan, EmptyScans, SCAN_FRAME_LABEL, SCAN_VERSION};
mod sink;
mod statements;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;

pub use action::ActionExec;
pub use box_schema::BoxSchemaProvider;
pub use catalog_list::MeadowCatalogProviderList;
pub use dml_guard::DmlGuard;
pub use factory::FrameTableProviderFactory;
pub use frame_table::FrameTableProvider;
use functions::ApiaryFunction;
pub use hive::HiveCatalogProvider;
pub use join_filters::{FilterJoinedRows, JoinFilterExec};
pub use own_runtime::{OwnRuntimeExec, with_runtime};
pub use scan::PruneCounts;
pub use scan_order::KeepScanOrder;
pub use statements::{OwnStatement, SchemaChange, own_statement};

use crate::cell::WriteOptions;
use crate::error::{CatalogError, Kind, Result};
use crate::frame::{Frame, WriteAdmission};
use crate::io::IoRuntime;
use crate::ledger::Ledger;
use crate::meadow::Meadow;
use crate::name;
use crate::options::SessionOptions;
use crate::registry::{Registry, RegistryState};

/// How the providers behave.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// How `INSERT` and `CREATE TABLE … AS SELECT` write cells.
    pub write: WriteOptions,
    /// Asked before every write (the bees' colony regulates writes through it).
    pub admission: Option<Arc<dyn WriteAdmission>>,
    /// Listings (`SHOW TABLES`, `information_schema`) re-read the namespace when the cached one
    /// is older than this; a lookup of an unknown name always re-reads it. Default 1 s.
    pub refresh_interval: Duration,
    /// The runtime frame scans execute with, instead of the task context's. For hosts whose
    /// runtime is not Apiary's — datafusion-python over datafusion-ffi hands our plans a default
    /// `RuntimeEnv` without the meadow's store or a memory bound. `None`: the task's runtime.
    pub scan_runtime: Option<Arc<RuntimeEnv>>,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        Self {
            write: WriteOptions::default(),
            admission: None,
            refresh_interval: Duration::from_secs(1),
            scan_runtime: None,
        }
    }
}

/// The state every Apiary provider shares. Cheap to clone.
#[derive(Clone)]
pub struct ProviderState {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    io: Arc<IoRuntime>,
    options: CatalogOptions,
    last_refresh: Mutex<Instant>,
    /// Open ledgers by frame id: a query refreshes one (one GET) instead of loading it.
    ledgers: Mutex<HashMap<String, Ledger>>,
    /// Why a `CREATE DATABASE` failed; DataFusion's `register_catalog` cannot return an error,
    /// so the reason is given at the next use of the name.
    failed_hives: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for ProviderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderState")
            .field("meadow", self.meadow())
            .finish()
    }
}

impl ProviderState {
    /// The state over `registry`, reaching storage from synchronous calls through `io`.
    pub fn new(registry: Registry, io: Arc<IoRuntime>, options: CatalogOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                io,
                options,
                last_refresh: Mutex::new(Instant::now()),
                ledgers: Mutex::new(HashMap::new()),
                failed_hives: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The namespace the providers show.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The meadow the registry is stored in.
    pub fn meadow(&self) -> &Meadow {
        self.inner.registry.meadow()
    }

    /// Apiary's I/O runtime, on which synchronous callers' storage work runs.
    pub fn io(&self) -> &Arc<IoRuntime> {
        &self.inner.io
    }

    /// How the providers behave.
    pub fn options(&self) -> &CatalogOptions {
        &self.inner.options
    }

    /// The namespace for synchronous callers: cached, re-read when older than the refresh
    /// interval. A failed re-read keeps the cached namespace (and logs why).
    pub(crate) fn namespace(&self) -> Arc<RegistryState> {
        let stale = self.inner.last_refresh.lock().elapsed() >= self.inner.options.refresh_interval;
        if stale {
            self.refresh_blocking()
        } else {
            self.inner.registry.snapshot()
        }
    }

    /// Re-reads the namespace now, from synchronous code.
    pub(crate) fn refresh_blocking(&self) -> Arc<RegistryState> {
        let registry = self.inner.registry.clone();
        match self
            .inner
            .io
            .block_on(async move { registry.refresh().await })
        {
            Ok(Ok(state)) => {
                *self.inner.last_refresh.lock() = Instant::now();
                state
            }
            Ok(Err(e)) | Err(e) => {
                log::warn!("could not refresh the Apiary namespace: {e}");
                self.inner.registry.snapshot()
            }
        }
    }

    /// Re-reads the namespace now.
    pub(crate) async fn refresh(&self) -> Result<Arc<RegistryState>> {
        let state = self.inner.registry.refresh().await?;
        *self.inner.last_refresh.lock() = Instant::now();
        Ok(state)
    }

    /// Runs storage work from a synchronous DataFusion callback.
    pub(crate) fn block_on<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.inner.io.block_on(fut)?
    }

    /// The frame `hive.box.frame` at its newest version, or `None` if there is no such frame.
    ///
    /// The name is resolved against the newest namespace (one GET when nothing changed), so a
    /// long-lived session sees a frame that another process dropped and created again; and the
    /// frame's commits check that the name is still its own.
    pub async fn frame(&self, hive: &str, box_: &str, frame: &str) -> Result<Option<Frame>> {
        let state = self.refresh().await?;
        let Ok(record) = state.frame(hive, box_, frame) else {
            return Ok(None);
        };
        let cached = self.inner.ledgers.lock().get(&record.id).cloned();
        let ledger = match cached {
            Some(l) => {
                l.refresh().await?;
                l
            }
            None => {
                let l = self.inner.registry.open_ledger(hive, box_, frame).await?;
                self.inner
                    .ledgers
                    .lock()
                    .insert(record.id.clone(), l.clone());
                l
            }
        };
        Ok(Some(
            Frame::new(ledger, self.inner.options.write)
                .with_admission(self.inner.options.admission.clone())
                .with_name_check(self.inner.registry.clone(), hive, box_, frame),
        ))
    }

    /// The frame at its newest version as a table, or `None`.
    pub async fn frame_table(
        &self,
        hive: &str,
        box_: &str,
        frame: &str,
    ) -> Result<Option<Arc<FrameTableProvider>>> {
        Ok(self.frame(hive, box_, frame).await?.map(|f| {
            let snapshot = f.ledger().latest();
            let table = FrameTableProvider::new(f, snapshot);
            Arc::new(match &self.inner.options.scan_runtime {
                Some(runtime) => table.with_scan_runtime(Arc::clone(runtime)),
                None => table,
            })
        }))
    }

    /// The provider of hive `name` (it may not exist: its listings are then empty).
    pub fn hive(&self, name: &str) -> Arc<HiveCatalogProvider> {
        Arc::new(HiveCatalogProvider::new(self.clone(), name))
    }

    /// The provider of hive `name`, checking that it exists.
    pub async fn existing_hive(&self, name: &str) -> Result<Arc<HiveCatalogProvider>> {
        let mut state = self.inner.registry.snapshot();
        if state.hive(name).is_err() {
            state = self.refresh().await?;
        }
        state.hive(name)?;
        Ok(self.hive(name))
    }

    pub(crate) fn remember_failed_hive(&self, name: &str, reason: String) {
        self.inner
            .failed_hives
            .lock()
            .insert(name.to_string(), reason);
    }

    pub(crate) fn failed_hive(&self, name: &str) -> Option<String> {
        self.inner.failed_hives.lock().get(name).cloned()
    }

    pub(crate) fn forget_failed_hive(&self, name: &str) {
        self.inner.failed_hives.lock().remove(name);
    }

    /// Installs Apiary in `ctx`: every hive becomes a catalog (the session's own catalogs keep
    /// working), plus the `APIARY` table factory, the table functions and the object store.
    pub fn register(&self, ctx: &SessionContext) {
        let state = ctx.state_ref();
        let mut state = state.write();
        let current = Arc::clone(state.catalog_list());
        let already = current
            .downcast_ref::<MeadowCatalogProviderList>()
            .is_some_and(|l| Arc::ptr_eq(&l.apiary().inner, &self.inner));
        if !already {
            state.register_catalog_list(Arc::new(MeadowCatalogProviderList::new(
                current,
                self.clone(),
            )));
        }
        state.table_factories_mut().insert(
            "APIARY".into(),
            Arc::new(FrameTableProviderFactory::new(self.clone())),
        );
        for (name, call) in functions::FUNCTIONS {
            state.register_udtf(name, Arc::new(ApiaryFunction::new(self.clone(), call)));
        }
        DmlGuard::install(&mut state);
        scan_order::install(&mut state);
        // `SET apiary.*` (e.g. `apiary.overwrite`) in any session Apiary is registered in.
        let extensions = &mut state.config_mut().options_mut().extensions;
        if extensions.get::<SessionOptions>().is_none() {
            extensions.insert(SessionOptions::default());
        }
        let meadow = self.meadow();
        state.runtime_env().register_object_store(
            meadow.object_store_url().as_ref(),
            Arc::clone(meadow.store()),
        );
    }
}

/// Splits `hive.box.frame` (as given to the table functions), naming the argument in errors.
pub(crate) fn split_frame_name(qualified: &str) -> Result<(String, String, String)> {
    let parts: Vec<&str> = qualified.split('.').collect();
    let [hive, box_, frame] = parts[..] else {
        return Err(CatalogError::InvalidName {
            kind: Kind::Frame,
            name: qualified.to_string(),
            reason: "give the frame as 'hive.box.frame'",
        });
    };
    name::validate(Kind::Hive, hive)?;
    name::validate(Kind::Box, box_)?;
    name::validate(Kind::Frame, frame)?;
    Ok((hive.into(), box_.into(), frame.into()))
}
