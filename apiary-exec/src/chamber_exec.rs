//! Queries in chambers: a physical optimizer rule puts every plan under a [`ChamberExec`], which
//! waits for bees, runs the plan in their chamber, and enforces the query's deadline.
//!
//! Per-session settings (`SET apiary.timeout_ms = 30000` and so on) are a DataFusion config
//! extension, [`BeeOptions`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::Sleep;

use apiary_catalog::sight;

use crate::error::ExecError;
use crate::pool::{BeePool, Chamber, Spill, mib};
use crate::queries::{QueryOutcome, QueryShape};

/// How the queries of a session use the bees (`SET apiary.timeout_ms`, `bees_per_query`,
/// `spill`): the `apiary.*` settings, defined with the catalog's own in one extension.
pub use apiary_catalog::SessionOptions as BeeOptions;

/// The `apiary.*` settings a task runs with (their defaults when its session has none).
pub fn bee_options(context: &TaskContext) -> BeeOptions {
    context
        .session_config()
        .options()
        .extensions
        .get::<BeeOptions>()
        .cloned()
        .unwrap_or_default()
}

/// Runs its input inside a chamber of the pool's bees.
#[derive(Debug)]
pub struct ChamberExec {
    input: Arc<dyn ExecutionPlan>,
    pool: BeePool,
    properties: Arc<PlanProperties>,
}

impl ChamberExec {
    /// `input` must have a single output partition (the rule coalesces it).
    pub fn new(input: Arc<dyn ExecutionPlan>, pool: BeePool) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            pool,
            properties,
        }
    }

    /// The plan this node runs in the chamber.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The bees the plan runs in.
    pub fn pool(&self) -> &BeePool {
        &self.pool
    }
}

impl DisplayAs for ChamberExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ChamberExec: bees={}, budget_per_bee={}",
            self.pool.bees(),
            mib(self.pool.budget_per_bee())
        )
    }
}

impl ExecutionPlan for ChamberExec {
    fn name(&self) -> &str {
        "ChamberExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
            Ok([input]) => Ok(Arc::new(ChamberExec::new(input, self.pool.clone()))),
            Err(_) => internal_err!("ChamberExec has exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("ChamberExec has one partition, asked for {partition}");
        }
        let options = bee_options(&context);
        let bees = match options.bees_per_query {
            0 => self.pool.bees(),
            n => n.min(self.pool.bees()),
        };
        let tracker = Tracker::start(
            &self.pool,
            context.session_id().as_str(),
            Arc::clone(&self.input),
        );
        let (pool, input) = (self.pool.clone(), Arc::clone(&self.input));
        let start: BoxFuture<'static, Result<(SendableRecordBatchStream, Chamber)>> = async move {
            let chamber = pool
                .acquire(bees, &context.runtime_env(), Spill::when(options.spill))
                .await?;
            let ctx = chamber.task_context(&context);
            let stream = input.execute(0, ctx)?;
            Ok((stream, chamber))
        }
        .boxed();
        let timeout = (options.timeout_ms > 0).then(|| Duration::from_millis(options.timeout_ms));
        let stream = InChamber {
            state: State::Starting(start),
            deadline: timeout.map(|t| (Box::pin(tokio::time::sleep(t)), t)),
            tracker,
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

enum State {
    Starting(BoxFuture<'static, Result<(SendableRecordBatchStream, Chamber)>>),
    /// The stream is declared before the chamber: it is dropped first, then the bees are freed.
    Running {
        stream: SendableRecordBatchStream,
        chamber: Chamber,
    },
    Done,
}

/// The query's batches; when the deadline passes, the query is dropped (which cancels its work)
/// and its bees are freed.
struct InChamber {
    state: State,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    tracker: Tracker,
}

/// The query in the node's metrics and query log: started when planned to run, then finished,
/// failed, or — dropped before its end — cancelled.
struct Tracker {
    pool: BeePool,
    id: u64,
    rows: u64,
    ended: bool,
    /// The plan, for what its scans pruned and whether the swarm ran a part of it.
    plan: Arc<dyn ExecutionPlan>,
}

impl Tracker {
    fn start(pool: &BeePool, session_id: &str, plan: Arc<dyn ExecutionPlan>) -> Self {
        pool.sight().count(sight::QUERIES_STARTED, 1);
        let id = pool.queries().start(session_id);
        pool.queries().set_shape(id, shape(&plan));
        Tracker {
            id,
            pool: pool.clone(),
            rows: 0,
            ended: false,
            plan,
        }
    }

    fn end(&mut self, outcome: QueryOutcome, error: Option<String>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let sight = self.pool.sight();
        sight.count(sight::ROWS_RETURNED, self.rows);
        sight.count_spills(&self.plan);
        sight.count(
            match outcome {
                QueryOutcome::Finished => sight::QUERIES_FINISHED,
                QueryOutcome::Failed => sight::QUERIES_FAILED,
                _ => sight::QUERIES_CANCELLED,
            },
            1,
        );
        self.pool.queries().set_shape(self.id, shape(&self.plan));
        self.pool.queries().end(self.id, self.rows, outcome, error);
    }
}

/// The frame scans' cell counts (their scan metrics, known from planning on) and whether a
/// part of `plan` runs on the swarm.
fn shape(plan: &Arc<dyn ExecutionPlan>) -> QueryShape {
    let mut shape = QueryShape::default();
    fn walk(plan: &Arc<dyn ExecutionPlan>, shape: &mut QueryShape) {
        shape.swarm |= plan.name() == "SwarmExec";
        if let Some(metrics) = plan.metrics() {
            let sum = |name: &str| metrics.sum_by_name(name).map(|v| v.as_usize()).unwrap_or(0);
            shape.cells_total += sum("cells_total") as u64;
            shape.cells_pruned +=
                (sum("cells_pruned_by_partition") + sum("cells_pruned_by_statistics")) as u64;
        }
        for child in plan.children() {
            walk(child, shape);
        }
    }
    walk(plan, &mut shape);
    shape
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.end(QueryOutcome::Cancelled, None);
    }
}

impl Stream for InChamber {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if matches!(this.state, State::Done) {
            return Poll::Ready(None);
        }
        if let Some((sleep, timeout)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let while_ = match this.state {
                State::Starting(_) => "waiting for bees",
                _ => "running",
            };
            let timeout = *timeout;
            this.state = State::Done;
            let e = DataFusionError::from(ExecError::Deadline {
                deadline_ms: timeout.as_millis(),
                while_,
            });
            this.tracker.end(QueryOutcome::Failed, Some(e.to_string()));
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            match &mut this.state {
                State::Starting(start) => match start.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok((stream, chamber))) => {
                        this.state = State::Running { stream, chamber }
                    }
                    Poll::Ready(Err(e)) => {
                        this.state = State::Done;
                        this.tracker.end(QueryOutcome::Failed, Some(e.to_string()));
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                State::Running { stream, chamber } => {
                    return match stream.poll_next_unpin(cx) {
                        Poll::Ready(None) => {
                            this.state = State::Done;
                            this.tracker.end(QueryOutcome::Finished, None);
                            Poll::Ready(None)
                        }
                        Poll::Ready(Some(Err(e))) => {
                            let e = chamber.explain(e);
                            this.state = State::Done;
                            this.tracker.end(QueryOutcome::Failed, Some(e.to_string()));
                            Poll::Ready(Some(Err(e)))
                        }
                        Poll::Ready(Some(Ok(batch))) => {
                            this.tracker.rows += batch.num_rows() as u64;
                            Poll::Ready(Some(Ok(batch)))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Puts every physical plan of a session under a [`ChamberExec`] of `pool`.
#[derive(Debug)]
pub struct ChamberRule {
    pool: BeePool,
}

impl ChamberRule {
    /// A rule that puts each plan of a session into a chamber of `pool`'s bees.
    pub fn new(pool: BeePool) -> Self {
        Self { pool }
    }
}

impl PhysicalOptimizerRule for ChamberRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.is::<ChamberExec>() {
            return Ok(plan);
        }
        let input = if plan.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(plan)) as Arc<dyn ExecutionPlan>
        } else {
            plan
        };
        Ok(Arc::new(ChamberExec::new(input, self.pool.clone())))
    }

    fn name(&self) -> &str {
        "apiary_chamber"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
