//! A direct-path query whose workers fail before its first batch runs again over the meadow.
//!
//! datafusion-distributed 4 does not retry: one failed task fails the query. [`DirectPathExec`]
//! sits on top of a direct-path plan and holds the query's logical plan and session: if the
//! distributed run ends in an error before any batch reached the caller (a worker killed, a
//! network cut, a refused connection, a worker whose bees an older query holds), the query is
//! planned again with `swarm.path = 'storage'` — the meadow's exchange, or local — and that
//! plan's batches are returned. After the first batch a rerun would repeat rows: the error goes
//! to the caller, naming the workers that no longer answer.

use std::fmt;
use std::sync::Arc;

use apiary_exec::{ChamberExec, bee_options};
use datafusion::arrow::array::RecordBatch;
use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    execute_stream,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use http::HeaderMap;

use super::admission::{self, Admissions, Ticket};
use super::planner::on_path;
use super::resolver::SwarmWorkers;
use super::settings;
use crate::config::SwarmPath;

/// The direct path's plan of a query, with the way back to the meadow: see the module docs.
pub struct DirectPathExec {
    direct: Arc<dyn ExecutionPlan>,
    logical: LogicalPlan,
    state: SessionState,
    workers: Arc<SwarmWorkers>,
    /// The session's settings that differ from the node's, sent to the workers with the plan.
    settings: HeaderMap,
    /// This node's worker's queries, when it listens: the query is registered there so that
    /// its tasks on this node run in the chamber it holds.
    admissions: Option<Arc<Admissions>>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for DirectPathExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectPathExec").finish_non_exhaustive()
    }
}

impl DirectPathExec {
    pub(crate) fn new(
        direct: Arc<dyn ExecutionPlan>,
        logical: LogicalPlan,
        state: SessionState,
        workers: Arc<SwarmWorkers>,
        settings: HeaderMap,
        admissions: Option<Arc<Admissions>>,
    ) -> Self {
        let properties = Arc::clone(direct.properties());
        Self {
            direct,
            logical,
            state,
            workers,
            settings,
            admissions,
            properties,
        }
    }
}

impl DisplayAs for DirectPathExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "path=direct\nfallback=storage"),
            _ => write!(f, "DirectPathExec: path=direct, fallback=storage"),
        }
    }
}

impl ExecutionPlan for DirectPathExec {
    fn name(&self) -> &str {
        "DirectPathExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.direct]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([direct]) => Ok(Arc::new(DirectPathExec::new(
                direct,
                self.logical.clone(),
                self.state.clone(),
                Arc::clone(&self.workers),
                self.settings.clone(),
                self.admissions.clone(),
            ))),
            Err(_) => internal_err!("DirectPathExec has exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("DirectPathExec has one partition, asked for {partition}");
        }
        // The query's ticket: its age and the bees it asks of each worker (`apiary.*`).
        let bees = bee_options(&context);
        let ticket = Ticket::new(bees.bees_per_query, bees.spill);
        let held = self
            .admissions
            .as_ref()
            .map(|a| a.coordinating(&ticket, &context.runtime_env()));
        let mut headers = self.settings.clone();
        headers.insert(admission::HEADER, ticket.header());
        let mut direct = self
            .direct
            .execute(0, settings::sending(&context, &headers)?)?;
        let (logical, state, workers) = (
            self.logical.clone(),
            self.state.clone(),
            Arc::clone(&self.workers),
        );
        let first = async move {
            type Batches = futures::stream::BoxStream<'static, Result<RecordBatch>>;
            let e = match direct.next().await {
                None => return Ok::<Batches, DataFusionError>(futures::stream::empty().boxed()),
                Some(Ok(batch)) => {
                    let rest = direct.then(move |next| {
                        let workers = Arc::clone(&workers);
                        async move {
                            match next {
                                Err(e) => Err(lost(e, &workers).await),
                                batch => batch,
                            }
                        }
                    });
                    return Ok(futures::stream::once(async { Ok(batch) })
                        .chain(rest)
                        .boxed());
                }
                Some(Err(e)) => e,
            };
            // Nothing reached the caller: this one goes over the meadow, and workers that no
            // longer answer are left out of the next queries until probed again.
            drop(direct);
            log::warn!(
                "a direct-path query failed before its first batch ({e}); it runs again over the meadow"
            );
            workers.rerun().await;
            let state = on_path(&state, SwarmPath::Storage);
            let plan = DefaultPhysicalPlanner::default()
                .create_physical_plan(&logical, &state)
                .await?;
            // It runs in the chamber this plan already runs in.
            let plan = match plan.downcast_ref::<ChamberExec>() {
                Some(chamber) => Arc::clone(chamber.input()),
                None => plan,
            };
            let plan: Arc<dyn ExecutionPlan> = if plan.output_partitioning().partition_count() > 1 {
                Arc::new(CoalescePartitionsExec::new(plan))
            } else {
                plan
            };
            Ok(execute_stream(plan, context)?.boxed())
        };
        // The query keeps its place on this node's worker while its batches flow.
        let stream = futures::stream::once(first)
            .try_flatten()
            .inspect(move |_| {
                let _ = &held;
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// The error of a direct-path query that failed after its first batch, naming the workers that
/// no longer answer: it cannot run again without repeating the rows already returned.
async fn lost(e: DataFusionError, workers: &SwarmWorkers) -> DataFusionError {
    let lost = workers.unanswering().await;
    let what = match lost.is_empty() {
        true => "a worker failed (every worker still answers)".to_string(),
        false => format!("lost {}", lost.join(", ")),
    };
    DataFusionError::Context(
        format!(
            "the direct path {what} after the query's first batch; it was not run again, which \
             would repeat rows"
        ),
        Box::new(e),
    )
}
