//! Which path a query takes: `swarm.path` = `'auto'` (the default), `'direct'` or `'storage'`.

use std::sync::Arc;

use apiary_exec::ChamberExec;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::format::ExplainFormat;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, plan_err};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{
    Explain, LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan,
};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_distributed::{DistributedConfig, DistributedExec, WorkerResolver};

use super::admission::Admissions;
use super::fallback::DirectPathExec;
use super::settings;

use super::resolver::SwarmWorkers;
use super::secret::SwarmToken;
use crate::config::{SwarmOptions, SwarmPath};
use crate::fragment::{ScanMatcher, bytes_read, is_partition_local};

/// Plans a query on the direct path (datafusion-distributed's planner) when it can take it,
/// else as usual — where the storage swarm's `SwarmRule` distributes its scans. The choice is
/// written into the query's `swarm.path`, so that the rule leaves direct-path plans alone.
///
/// Only queries that read a table take a path (statements, DDL and DML are planned as usual);
/// an `EXPLAIN` takes the path of the query it explains and shows it.
/// `'auto'` takes the direct path when the swarm token is known, another node is alive and every
/// other alive node listens and has been reached; `'direct'` takes it whenever a worker is
/// reached, and fails with a clear error otherwise; `'storage'` never takes it.
pub struct PathPlanner {
    direct: Arc<dyn QueryPlanner + Send + Sync>,
    workers: Arc<SwarmWorkers>,
    /// Known once a node that listens has created it; until then no worker would take a plan.
    token: SwarmToken,
    /// The meadow's scans, whose bytes decide whether a query is worth distributing.
    matcher: ScanMatcher,
    /// The node's own settings: a session's changes from them travel to the workers.
    node_settings: Arc<settings::NodeSettings>,
    /// This node's worker's queries, when it listens: its own queries' tasks there join them.
    admissions: Option<Arc<Admissions>>,
}

impl std::fmt::Debug for PathPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathPlanner")
            .field("workers", &self.workers)
            .finish()
    }
}

impl PathPlanner {
    pub(crate) fn new(
        direct: Arc<dyn QueryPlanner + Send + Sync>,
        workers: Arc<SwarmWorkers>,
        token: SwarmToken,
        matcher: ScanMatcher,
        node_settings: Arc<settings::NodeSettings>,
        admissions: Option<Arc<Admissions>>,
    ) -> Self {
        Self {
            direct,
            workers,
            token,
            matcher,
            node_settings,
            admissions,
        }
    }

    /// The path of `plan`; an `EXPLAIN [ANALYZE]` takes the path of the query it explains.
    fn choose(&self, plan: &LogicalPlan, asked: SwarmPath) -> Result<SwarmPath> {
        let plan = match plan {
            LogicalPlan::Explain(e) => e.plan.as_ref(),
            LogicalPlan::Analyze(a) => a.input.as_ref(),
            plan => plan,
        };
        Ok(match asked {
            // Statements (a `SET` among them), DDL and DML take no path.
            _ if !is_query(plan) => SwarmPath::Storage,
            SwarmPath::Storage => SwarmPath::Storage,
            SwarmPath::Direct => {
                if self.workers.get_urls()?.is_empty() || !self.token.is_known() {
                    return plan_err!(
                        "swarm.path = 'direct', but no node of the swarm listens and has been \
                         reached (start nodes with `apiary node --listen ADDR`)"
                    );
                }
                SwarmPath::Direct
            }
            SwarmPath::Auto if self.token.is_known() && self.workers.all_reached() => {
                SwarmPath::Direct
            }
            SwarmPath::Auto => SwarmPath::Storage,
        })
    }
}

/// Whether `plan` is a query that reads a table (which may be distributed): not a statement,
/// DDL or DML, nor a query of constants (a `SET` comes here as an empty relation).
fn is_query(plan: &LogicalPlan) -> bool {
    let statement = matches!(
        plan,
        LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
    );
    !statement
        && plan
            .exists(|p| Ok(matches!(p, LogicalPlan::TableScan(_))))
            .unwrap_or(false)
}

#[async_trait]
impl QueryPlanner for PathPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let asked = match session.config().options().extensions.get::<SwarmOptions>() {
            // `swarm.enabled = false` keeps the whole query local, whichever path was asked.
            Some(o) if !o.enabled => SwarmPath::Storage,
            Some(o) => o.path.parse::<SwarmPath>()?,
            None => SwarmPath::Auto,
        };
        let path = self.choose(plan, asked)?;
        let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
            return internal_err!("Apiary's PathPlanner needs a SessionState");
        };
        let state = on_path(state, path);
        match (path, plan) {
            (SwarmPath::Direct, LogicalPlan::Explain(e)) if shows_physical(e) => {
                let physical = self.direct_plan(&e.plan, &state).await?;
                Ok(explain(e, &physical, &state))
            }
            // datafusion-distributed's planner runs an `EXPLAIN ANALYZE`'s stages itself.
            (SwarmPath::Direct, _) => self.direct_plan(plan, &state).await,
            _ => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(plan, &state)
                    .await
            }
        }
    }
}

impl PathPlanner {
    /// `plan` planned by datafusion-distributed, under a [`DirectPathExec`] when it was
    /// distributed.
    ///
    /// The plan is made as usual first: a query that reads less than `swarm.min_bytes` of the
    /// meadow's cells stays local, as on the storage path. Otherwise that plan is handed to
    /// datafusion-distributed (through [`Prepared`]) to be cut into stages. The plan's chamber
    /// goes on top of it all: the coordinator holds its bees for the whole query — its own
    /// worker's tasks of the query run in them, and a rerun over the meadow stays in them.
    async fn direct_plan(
        &self,
        plan: &LogicalPlan,
        state: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let local = DefaultPhysicalPlanner::default()
            .create_physical_plan(plan, state)
            .await?;
        let (pool, local) = match local.downcast_ref::<ChamberExec>() {
            Some(chamber) => (Some(chamber.pool().clone()), Arc::clone(chamber.input())),
            None => (None, local),
        };
        let in_chamber = |plan: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
            match &pool {
                Some(pool) => Arc::new(ChamberExec::new(plan, pool.clone())),
                None => plan,
            }
        };
        let min_bytes = state
            .config()
            .options()
            .extensions
            .get::<SwarmOptions>()
            .map_or_else(|| SwarmOptions::default().min_bytes, |o| o.min_bytes);
        let broadcasts = DistributedConfig::from_config_options(state.config().options())
            .is_ok_and(|c| c.broadcast_joins);
        if !splits_safely(&local, broadcasts) {
            log::debug!("a query stays local: an operator above a scan needs the scan whole");
            return Ok(in_chamber(local));
        }
        let bytes = self.meadow_bytes(&local)?;
        if bytes < min_bytes {
            log::debug!(
                "a query stays local: it reads {bytes} bytes, below swarm.min_bytes ({min_bytes})"
            );
            return Ok(in_chamber(local));
        }
        let mut prepared = state.clone();
        prepared
            .config_mut()
            .set_extension(Arc::new(Prepared(Some(local))));
        let physical = self.direct.create_physical_plan(plan, &prepared).await?;
        // An `EXPLAIN ANALYZE` comes back as datafusion-distributed's analyze over the query.
        let distributed = physical.is::<DistributedExec>()
            || matches!(plan, LogicalPlan::Analyze(_))
                && physical
                    .children()
                    .first()
                    .is_some_and(|c| c.is::<DistributedExec>());
        if !distributed {
            // Too small to distribute: as it was planned.
            return Ok(in_chamber(physical));
        }
        Ok(in_chamber(Arc::new(DirectPathExec::new(
            physical,
            plan.clone(),
            state.clone(),
            Arc::clone(&self.workers),
            self.node_settings.changed(state.config_options())?,
            self.admissions.clone(),
        ))))
    }

    /// The bytes of the meadow's cells `plan` reads (after the ledger's pruning; of the columns
    /// it reads).
    fn meadow_bytes(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<u64> {
        let mut bytes = 0;
        plan.apply(|node| {
            if let Some(config) = self.matcher.scan_of(node) {
                bytes += bytes_read(&config);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(bytes)
    }
}

/// Whether datafusion-distributed may spread `plan`'s file scans over tasks. It cuts stages at
/// repartitions and merges, and spreads a stage's leaf scan over several tasks whatever sits
/// above it in the stage; an operator there that needs all of its input — an aggregation in
/// `Single` mode, which DataFusion plans over one partition (one bee), a sort, a limit — would
/// see a part of it in each task and answer wrong (TPC-H q15 on one-bee nodes came back empty).
/// So between every scan and the first repartition or merge (or the root) only operators that
/// work on each partition alone are allowed; otherwise the query is planned locally.
fn splits_safely(plan: &Arc<dyn ExecutionPlan>, broadcasts: bool) -> bool {
    open_scans(plan, broadcasts).is_some()
}

/// Whether `plan` has a file scan not yet closed by a repartition or merge above it; `None`
/// when an operator that needs its whole input is above such a scan. The build side of a join
/// that collects it whole is closed too when datafusion-distributed broadcasts it.
fn open_scans(plan: &Arc<dyn ExecutionPlan>, broadcasts: bool) -> Option<bool> {
    let boundary = plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>();
    let children = plan.children();
    if children.is_empty() {
        return Some(plan.is::<DataSourceExec>());
    }
    let mut open = false;
    let collects_left = plan
        .downcast_ref::<HashJoinExec>()
        .is_some_and(|j| *j.partition_mode() == PartitionMode::CollectLeft);
    for (i, child) in children.into_iter().enumerate() {
        if !open_scans(child, broadcasts)? || boundary {
            continue;
        }
        match (collects_left, i) {
            (true, 0) if broadcasts => {}
            (true, 1) => open = true,
            _ if passes_through(plan) => open = true,
            _ => return None,
        }
    }
    Some(open)
}

/// Whether a scan split over tasks may run below `plan`: operators that work on each partition
/// alone.
fn passes_through(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(sort) = plan.downcast_ref::<SortExec>() {
        return sort.preserve_partitioning() && sort.fetch().is_none();
    }
    is_partition_local(plan) || plan.is::<ChamberExec>() || plan.is::<UnionExec>()
}

/// The planner datafusion-distributed's planner starts from: it returns the plan
/// [`PathPlanner`] already made for the query (in the session's config), so that a query is
/// planned once; without one, it plans as usual.
#[derive(Debug, Default)]
pub(crate) struct Prepared(Option<Arc<dyn ExecutionPlan>>);

#[async_trait]
impl QueryPlanner for Prepared {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let prepared = session.config().get_extension::<Prepared>();
        if let Some(physical) = prepared.and_then(|p| p.0.clone()) {
            return Ok(physical);
        }
        DefaultPhysicalPlanner::default()
            .create_physical_plan(plan, session)
            .await
    }
}

/// Whether `e` shows a physical plan (the formats that show only the logical plan, and an
/// explanation of a failed optimization, are DataFusion's to make).
fn shows_physical(e: &Explain) -> bool {
    e.logical_optimization_succeeded
        && matches!(
            e.explain_format,
            ExplainFormat::Indent | ExplainFormat::Tree
        )
}

/// `EXPLAIN` of a direct-path query: DataFusion's planner would explain the plan it makes
/// itself, without the stages, which datafusion-distributed cuts after physical optimization.
/// This shows the final physical plan as it runs — the path, `DistributedExec` and its stages —
/// with the logical plans as DataFusion shows them (the physical optimizer's passes are not
/// listed).
fn explain(
    e: &Explain,
    physical: &Arc<dyn ExecutionPlan>,
    state: &SessionState,
) -> Arc<dyn ExecutionPlan> {
    let config = &state.config_options().explain;
    let mut plans = vec![];
    if e.explain_format == ExplainFormat::Tree {
        plans.push(StringifiedPlan::new(
            PlanType::FinalPhysicalPlan,
            displayable(physical.as_ref())
                .set_tree_maximum_render_width(config.tree_maximum_render_width)
                .tree_render()
                .to_string(),
        ));
    } else {
        if !config.physical_plan_only {
            plans.extend(e.stringified_plans.iter().cloned());
            plans.push(e.plan.to_stringified(PlanType::FinalLogicalPlan));
        }
        if !config.logical_plan_only {
            plans.push(StringifiedPlan::new(
                PlanType::FinalPhysicalPlan,
                displayable(physical.as_ref())
                    .set_show_statistics(e.show_statistics.unwrap_or(config.show_statistics))
                    .set_show_schema(config.show_schema)
                    .indent(e.verbose)
                    .to_string(),
            ));
        }
    }
    Arc::new(ExplainExec::new(
        Arc::clone(e.schema.inner()),
        plans,
        e.verbose,
    ))
}

/// `state` for a query that takes `path`: the choice travels in the query's own `swarm.path`,
/// for the `SwarmRule` to read.
pub(crate) fn on_path(state: &SessionState, path: SwarmPath) -> SessionState {
    let mut state = state.clone();
    if let Some(o) = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<SwarmOptions>()
    {
        o.path = path.to_string();
    }
    state
}
