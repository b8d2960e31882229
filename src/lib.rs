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
//!   the DataFusion providers;
//! - [`exec`] (`apiary-exec`): the bees — per-core memory budgets, chambers, colony
//!   temperature, task abandonment;
//! - [`swarm`] (`apiary-swarm`): heartbeats, the world view, and queries distributed through the
//!   meadow.

#![warn(missing_docs)]

mod error;
mod explain;
#[cfg(feature = "status")]
mod status;

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use apiary_catalog::{CatalogOptions, CommitOptions, IoRuntime, Meadow, ProviderState, Registry};
use apiary_catalog::{FilterJoinedRows, KeepScanOrder};
use apiary_exec::{BeePool, ChamberRule, Colony, NodeConfig, Regulation};
use apiary_swarm::{SwarmConfig, SwarmNode, SwarmOptions};
use datafusion::catalog::CatalogProvider;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

pub use apiary_catalog as catalog;
pub use apiary_exec as exec;
pub use apiary_swarm as swarm;
pub use error::{ApiaryError, Result};
#[cfg(feature = "status")]
pub use status::{
    StatusOptions, StatusServer, frames_json, prometheus, status_json, swarm_node_json,
};

/// Where an Apiary named `name` keeps its data when no storage is given: `~/.apiary/{name}`
/// (the `apiary` command uses `default`, the Python `Apiary(name)` its name). `None` without
/// `HOME`.
pub fn default_storage(name: &str) -> Option<String> {
    let home = std::env::var_os("HOME")?;
    Some(
        std::path::Path::new(&home)
            .join(".apiary")
            .join(name)
            .display()
            .to_string(),
    )
}

/// A Tokio runtime for a node's queries, as the `apiary` command and the Python wheel run them:
/// one worker thread per core the process may use, and never fewer than two. On a node of one
/// core a single thread hands a plan or a request of the direct path to another worker only when
/// the query's own tasks yield — tens of milliseconds per stage. A thread more than the cores
/// everywhere was measured too, and costs a query on two cores about a tenth of its speed
/// (`BENCHMARKS.md`, "The direct path, 2026-12-07").
///
/// ```
/// let runtime = apiary::node_runtime()?;
/// let cores = std::thread::available_parallelism()?.get();
/// assert_eq!(runtime.metrics().num_workers(), cores.max(2));
/// assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn node_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(2))
        .enable_all()
        .build()
}

/// The swarm membership of an [`Apiary`] and all its clones: the last one dropped leaves the
/// swarm (its heartbeat is removed), so that no process that joined leaves a heartbeat behind.
#[derive(Debug)]
struct SwarmSlot {
    node: Mutex<Option<SwarmNode>>,
    io: tokio::runtime::Handle,
}

impl Drop for SwarmSlot {
    fn drop(&mut self) {
        let node = self.node.get_mut().take();
        if let Some(node) = node {
            node.leave_blocking(&self.io);
        }
    }
}

/// How an [`Apiary`] is opened.
#[derive(Debug, Clone, Default)]
pub struct ApiaryOptions {
    /// Who signs commits, how lost races are retried, how often state is checkpointed.
    pub commit: CommitOptions,
    /// How the DataFusion providers write and refresh. The cell size follows the bees' budget
    /// unless `catalog.write.leafcutter` names a bee size or a target of its own.
    pub catalog: CatalogOptions,
    /// This node's resources; `None` detects them (see [`NodeConfig::detect`]).
    pub node: Option<NodeConfig>,
    /// How the colony temperature regulates writes.
    pub regulation: Regulation,
    /// The object-store registry of Apiary's sessions (the meadow's store is added to it);
    /// `None` uses DataFusion's default. The `apiary` shell passes datafusion-cli's instrumented
    /// registry here, so that `\object_store_profiling` sees Apiary's requests.
    pub object_store_registry: Option<Arc<dyn ObjectStoreRegistry>>,
}

/// One meadow, opened: its registry cache, object store, I/O runtime and bees, shared by every
/// clone.
#[derive(Debug, Clone)]
pub struct Apiary {
    /// This node's membership of the swarm, once joined; dropped first (before the runtime the
    /// catalog holds), leaving the swarm.
    swarm: Arc<SwarmSlot>,
    catalog: ProviderState,
    colony: Colony,
    /// What every pooled session's chambers share: object stores and file caches.
    runtime: Arc<RuntimeEnv>,
    /// The providers handed to hosts with a runtime of their own ([`Apiary::catalog_with_own_runtime`]).
    own_runtime: Arc<OnceLock<ProviderState>>,
}

impl Apiary {
    /// Opens the Apiary stored at `url`: `file:///abs/path`, a plain path, `memory://[name]` or
    /// `s3://bucket/prefix` (credentials and endpoint from `AWS_*`, overridable with
    /// `?endpoint=…&region=…`).
    pub async fn open(url: &str) -> Result<Apiary> {
        Self::open_with(url, ApiaryOptions::default()).await
    }

    /// Opens the meadow at `url` with `options` (bees, write and commit settings).
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
        let node = match options.node {
            Some(n) => n,
            None => NodeConfig::detect()?,
        };
        let pool = BeePool::new(node)?;
        // Every Apiary of a process after the first gets a metrics label of its own.
        static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let label = || format!("{}-{}", apiary_catalog::sight::default_node(), n + 1);
        let meadow = if !meadow.sight().claim() {
            // Another Apiary counts in this meadow's sight: this one gets its own.
            meadow.with_own_sight(apiary_catalog::Sight::new(label()))
        } else {
            if n > 0 && *meadow.sight().node() == apiary_catalog::sight::default_node() {
                meadow.sight().set_node(label());
            }
            meadow
        };
        pool.set_sight(meadow.sight().clone());
        let colony = Colony::new(pool.clone(), options.regulation);
        let mut catalog = options.catalog;
        catalog.write.leafcutter = catalog
            .write
            .leafcutter
            .or_for_bee_memory(pool.budget_per_bee() as u64);
        catalog.admission = Some(Arc::new(colony.clone()));
        // Footers and page indexes of every cell a query opened stay cached across queries,
        // in a share of the bees' memory.
        let mut runtime =
            RuntimeEnvBuilder::new().with_metadata_cache_limit(pool.footer_cache_limit());
        if let Some(registry) = options.object_store_registry {
            runtime = runtime.with_object_store_registry(registry);
        }
        let runtime = runtime.build_arc()?;
        runtime.register_object_store(
            meadow.object_store_url().as_ref(),
            Arc::clone(meadow.store()),
        );
        let registry = Registry::open(meadow, options.commit).await?;
        let io_handle = io.handle().clone();
        Ok(Apiary {
            catalog: ProviderState::new(registry, io, catalog),
            colony,
            runtime,
            swarm: Arc::new(SwarmSlot {
                node: Mutex::new(None),
                io: io_handle,
            }),
            own_runtime: Arc::new(OnceLock::new()),
        })
    }

    /// Installs Apiary in `ctx`: every hive becomes a catalog (the session's own catalogs keep
    /// working), `CREATE DATABASE` makes a hive, `STORED AS APIARY` creates partitioned frames,
    /// and the table functions `apiary_cells`, `apiary_history`, `apiary_version`,
    /// `apiary_compact` and `apiary_cleanse` are added. Queries of `ctx` run on its own runtime:
    /// use [`Apiary::session`] for sessions whose queries run on the bees.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        self.catalog.register(ctx);
        Ok(())
    }

    /// Runs one SQL statement in `ctx` the way Apiary's own doors do (the `apiary` command, the
    /// Python `Apiary.sql`): planned and run by DataFusion, except
    /// - `CREATE OR REPLACE TABLE` and `CREATE OR REPLACE EXTERNAL TABLE … STORED AS APIARY` of an
    ///   existing frame, which Apiary makes one atomic step — readers see the old frame until the
    ///   new one is complete, and a failing statement leaves the old one as it was. (Through a
    ///   plain `ctx.sql`, DataFusion drops the old frame first; `apiary_undrop` brings it back if
    ///   the create then fails.)
    /// - `CREATE DATABASE`, which fails at once with its reason (through a plain `ctx.sql` the
    ///   reason comes with the next use of the name);
    /// - the statements DataFusion lacks: `USE hive[.box]`, `SHOW DATABASES`, `SHOW HIVES`,
    ///   `SHOW SCHEMAS [IN hive]`, `SHOW BOXES [IN hive]`.
    ///
    /// ```no_run
    /// # async fn demo(ap: apiary::Apiary) -> apiary::Result<()> {
    /// let ctx = ap.session()?;
    /// ap.sql(&ctx, "CREATE OR REPLACE TABLE sales.eu.top AS SELECT * FROM sales.eu.orders WHERE amount > 100")
    ///     .await?
    ///     .collect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn sql(&self, ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
        if let Some(statement) = apiary_catalog::own_statement(sql) {
            return Ok(self.catalog.execute_own(ctx, &statement).await?);
        }
        self.catalog.merge_schema_for_insert(ctx, sql).await?;
        self.bees()
            .queries()
            .note_sql(ctx.session_id().as_str(), sql);
        let plan = ctx.state().create_logical_plan(sql).await?;
        self.execute_logical_plan(ctx, plan).await
    }

    /// [`Apiary::sql`] for a plan already built.
    pub async fn execute_logical_plan(
        &self,
        ctx: &SessionContext,
        plan: LogicalPlan,
    ) -> Result<DataFrame> {
        if let Some(df) = self.catalog.execute_create_database(ctx, &plan).await? {
            return Ok(df);
        }
        if let Some(df) = self.catalog.execute_replace(ctx, &plan).await? {
            return Ok(df);
        }
        if let LogicalPlan::Explain(explain) = &plan {
            // The explained statement is planned once more, for what only Apiary's planning
            // knows (`explain`); nothing of it runs.
            let inner = explain.plan.as_ref().clone();
            let df = ctx.execute_logical_plan(plan).await?;
            let schema = Arc::clone(df.schema().inner());
            let batches = df.collect().await?;
            let mut state = ctx.state();
            let empties = Arc::new(apiary_catalog::EmptyScans::default());
            state.config_mut().set_extension(Arc::clone(&empties));
            let mut notes = match state.create_physical_plan(&inner).await {
                Ok(physical) => explain::scan_notes(&physical),
                // A statement that plans no physical plan of its own (DDL): nothing to add.
                Err(_) => vec![],
            };
            notes.extend(empties.take().iter().map(explain::empty_scan_note));
            let batches = explain::with_notes(Arc::clone(&schema), batches, &notes)?;
            let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
            return Ok(ctx.read_table(Arc::new(table))?);
        }
        Ok(ctx.execute_logical_plan(plan).await?)
    }

    /// The catalog provider of one hive, to register by hand:
    /// `ctx.register_catalog("sales", ap.catalog("sales").await?)`.
    pub async fn catalog(&self, hive: &str) -> Result<Arc<dyn CatalogProvider>> {
        Ok(self.catalog.existing_hive(hive).await?)
    }

    /// The catalog provider of one hive for a host that executes our plans with a runtime of
    /// its own — datafusion-python through datafusion-ffi, whose task contexts carry a default
    /// `RuntimeEnv`. Its scans run on Apiary's runtime instead: the meadow's object store, and a
    /// memory pool bounded by this node's bees' budget together.
    pub async fn catalog_with_own_runtime(&self, hive: &str) -> Result<Arc<dyn CatalogProvider>> {
        let catalog = self.own_runtime.get_or_init(|| {
            let mut runtime = (*self.runtime).clone();
            let pool = self.bees();
            runtime.memory_pool = Arc::new(GreedyMemoryPool::new(
                pool.budget_per_bee().saturating_mul(pool.bees()),
            ));
            let mut options = self.catalog.options().clone();
            options.scan_runtime = Some(Arc::new(runtime));
            ProviderState::new(
                self.registry().clone(),
                Arc::clone(self.catalog.io()),
                options,
            )
        });
        Ok(catalog.existing_hive(hive).await?)
    }

    /// A new `SessionContext` with Apiary registered, `information_schema` enabled, and every
    /// query run in a chamber of this node's bees: a memory budget of the bees it holds, spill
    /// files in their scratch folders, `target_partitions` = those bees, and the deadline and
    /// options of `SET apiary.*` ([`exec::BeeOptions`]).
    pub fn session(&self) -> Result<SessionContext> {
        let pool = self.colony.pool();
        let config = pool
            .session_config()
            .with_information_schema(true)
            .with_option_extension(SwarmOptions::default());
        // Order kept before the swarm rule reads the plan (`KeepScanOrder`).
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_physical_optimizer_rule(Arc::new(KeepScanOrder));
        // Not where a plan may travel to other nodes: no codec carries `JoinFilterExec`.
        if self.swarm().is_none() {
            builder = builder.with_physical_optimizer_rule(Arc::new(FilterJoinedRows));
        }
        if let Some(node) = self.swarm() {
            builder = builder.with_physical_optimizer_rule(Arc::new(node.rule()));
            // Queries whose nodes all reach each other go by datafusion-distributed.
            #[cfg(feature = "direct")]
            {
                builder = node.with_direct_path(builder);
            }
        }
        let state = builder
            .with_physical_optimizer_rule(Arc::new(ChamberRule::new(pool.clone())))
            .build();
        let ctx = SessionContext::new_with_state(state);
        self.register(&ctx)?;
        // `register` put the meadow's own store in the shared runtime.
        if let Some(node) = self.swarm() {
            self.read_through_cache(&node);
        }
        Ok(ctx)
    }

    /// A named node's own queries (plain ones, and its tasks as a coordinator) read cells
    /// through its cell cache too: the seeds' tier 2. A nameless one's cache is thrown away when
    /// it goes (a shell's `-c`: one query), and filling it would fetch whole cells where the query
    /// reads a few columns; its own queries read the store directly.
    fn read_through_cache(&self, node: &SwarmNode) {
        if node.config().keep_cache {
            let url = self.meadow().object_store_url().clone();
            self.runtime
                .register_object_store(url.as_ref(), node.cached_store());
        }
    }

    /// Joins the swarm of this meadow: this node writes heartbeats, works other nodes' tasks,
    /// sessions made afterwards by [`Apiary::session`] distribute large scans (`docs/swarm.md`),
    /// and, for a node with a name of its own, every query of this Apiary reads cells through
    /// the node's cell cache.
    pub async fn join_swarm(&self, config: SwarmConfig) -> Result<SwarmNode> {
        let node = SwarmNode::join(
            self.meadow().clone(),
            self.colony.clone(),
            self.catalog.io().handle(),
            config,
        )
        .await?;
        self.read_through_cache(&node);
        // Its metrics under the name the swarm knows it by.
        self.meadow().sight().set_node(node.id());
        *self.swarm.node.lock() = Some(node.clone());
        Ok(node)
    }

    /// Leaves the swarm gracefully (this node's heartbeat is removed).
    pub async fn leave_swarm(&self) -> Result<()> {
        let node = self.swarm.node.lock().take();
        if let Some(node) = node {
            let meadow = self.meadow();
            self.runtime.register_object_store(
                meadow.object_store_url().as_ref(),
                Arc::clone(meadow.store()),
            );
            node.leave().await?;
        }
        Ok(())
    }

    /// This node's membership of the swarm, if it joined.
    pub fn swarm(&self) -> Option<SwarmNode> {
        self.swarm.node.lock().clone()
    }

    /// The bees of this node and how they regulate writes.
    pub fn colony(&self) -> &Colony {
        &self.colony
    }

    /// The bees of this node.
    pub fn bees(&self) -> &BeePool {
        self.colony.pool()
    }

    /// The shared provider state (registry, meadow, I/O runtime).
    pub fn providers(&self) -> &ProviderState {
        &self.catalog
    }

    /// The registry of hives, boxes and frames.
    pub fn registry(&self) -> &Registry {
        self.catalog.registry()
    }

    /// The meadow this node stores its data in.
    pub fn meadow(&self) -> &Meadow {
        self.catalog.meadow()
    }
}
