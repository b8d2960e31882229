//! Apiary: a lakehouse for small compute, as Apache DataFusion extension crates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use datafusion::prelude::SessionContext;
//!
//! let ap = apiary::Apiary::open("file:///data/apiary").await?; // also a plain path, memory://, s3://…
//! let ctx = SessionContext::new();
//! ap.register(&ctx)?; // every hive becomes a catalog; `datafusion.public` keeps working
//! ctx.sql("CREATE DATABASE IF NOT EXISTS sales").await?;
//! ctx.sql("SELECT * FROM sales.eu.orders WHERE region = 'fr'").await?.show().await?;
//! # Ok(()) }
//! ```
//!
//! The parts live in crates of their own; this facade wires them:
//! - [`catalog`] (`apiary-catalog`): the meadow (object storage), registry, ledger, cells and
//!   the DataFusion providers.

mod error;

use std::sync::Arc;

use apiary_catalog::{ApiaryCatalog, CatalogOptions, CommitOptions, IoRuntime, Meadow, Registry};
use datafusion::catalog::CatalogProvider;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use apiary_catalog as catalog;
pub use error::{Error, Result};

/// How an [`Apiary`] is opened.
#[derive(Debug, Clone, Default)]
pub struct ApiaryOptions {
    /// Who signs commits, how lost races are retried, how often state is checkpointed.
    pub commit: CommitOptions,
    /// How the DataFusion providers write and refresh.
    pub catalog: CatalogOptions,
}

/// One meadow, opened: its registry cache, object store and I/O runtime, shared by every clone.
#[derive(Debug, Clone)]
pub struct Apiary {
    catalog: ApiaryCatalog,
}

impl Apiary {
    /// Opens the Apiary stored at `url`: `file:///abs/path`, a plain path, `memory://[name]` or
    /// `s3://bucket/prefix` (credentials and endpoint from `AWS_*`, overridable with
    /// `?endpoint=…&region=…`).
    pub async fn open(url: &str) -> Result<Apiary> {
        Self::open_with(url, ApiaryOptions::default()).await
    }

    pub async fn open_with(url: &str, options: ApiaryOptions) -> Result<Apiary> {
        let io = IoRuntime::new()?;
        let meadow = Meadow::open_with(url, io.handle()).await?;
        Self::from_meadow(meadow, io, options).await
    }

    /// An Apiary over an already built meadow (any object store: see [`Meadow::from_store`]).
    pub async fn from_meadow(
        meadow: Meadow,
        io: Arc<IoRuntime>,
        options: ApiaryOptions,
    ) -> Result<Apiary> {
        let registry = Registry::open(meadow, options.commit).await?;
        Ok(Apiary {
            catalog: ApiaryCatalog::new(registry, io, options.catalog),
        })
    }

    /// Installs Apiary in `ctx`: every hive becomes a catalog (the session's own catalogs keep
    /// working), `CREATE DATABASE` makes a hive, `STORED AS APIARY` creates partitioned frames,
    /// and the table functions `apiary_cells`, `apiary_history`, `apiary_version` are added.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        self.catalog.register(ctx);
        Ok(())
    }

    /// The catalog provider of one hive, to register by hand:
    /// `ctx.register_catalog("sales", ap.catalog("sales").await?)`.
    pub async fn catalog(&self, hive: &str) -> Result<Arc<dyn CatalogProvider>> {
        Ok(self.catalog.existing_hive(hive).await?)
    }

    /// A new `SessionContext` with Apiary registered and `information_schema` enabled.
    pub fn session(&self) -> Result<SessionContext> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        self.register(&ctx)?;
        Ok(ctx)
    }

    /// The shared provider state (registry, meadow, I/O runtime).
    pub fn providers(&self) -> &ApiaryCatalog {
        &self.catalog
    }

    pub fn registry(&self) -> &Registry {
        self.catalog.registry()
    }

    pub fn meadow(&self) -> &Meadow {
        self.catalog.meadow()
    }
}
