//! The coordinator's side of a distributed scan: [`SwarmExec`], and the [`Exchange`] it hands
//! the scan's tasks to.
//!
//! [`SwarmExec`] replaces a distributable subtree (see [`crate::fragment`]). It knows the plan
//! (its tasks, the fragment, the output partitioning) and nothing of how tasks reach other nodes:
//! that is the exchange's. The meadow exchange (`crate::meadow_exchange`) writes
//! the fragment and the manifest to `_queries/{id}/`, works tasks on this node's free bees
//! inside the query's own chamber (pulled like any node's), and streams every task's partial result back as soon as
//! its `done_{n}` appears — task `n` feeds output partition `n mod P`, so the operators above see
//! the partitioning they were planned with. Failed attempts (an error, a dead claimant, a missed
//! deadline) are offered again until task abandonment gives up; then the query fails with the
//! diagnostic. When the query ends — finished, failed or cancelled — `finished.json` tells the
//! workers, and the folder is removed.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::codec::ApiaryCodec;
use crate::error::Result;
use crate::fragment::fragment_of_all;

/// Where a coordinator's distributed scan runs: the seam between planning ([`crate::SwarmRule`],
/// [`SwarmExec`]) and the way tasks reach other nodes. The meadow exchange (`_queries/`
/// objects) is one; the direct path between reachable nodes will be another.
pub trait Exchange: Send + Sync + fmt::Debug {
    /// Starts running `job` for a query executing under `ctx`: one receiver per output partition
    /// (task `n` feeds partition `n mod P`), each ending when its tasks are delivered or the run
    /// failed (an error batch). Dropping every receiver cancels the run everywhere.
    fn start(
        &self,
        job: ScanJob,
        ctx: Arc<TaskContext>,
    ) -> Vec<mpsc::Receiver<DfResult<RecordBatch>>>;
}

/// One run of a distributed scan, as the exchange receives it.
#[derive(Debug, Clone)]
pub struct ScanJob {
    /// The tasks, in order.
    pub tasks: Vec<PlannedTask>,
    /// The fragment over every cell of the tasks (datafusion-proto bytes).
    pub fragment: Bytes,
    /// Output partitions of the scan (at least one).
    pub partitions: usize,
    /// Where the run counts its tasks, retries and tasks on other nodes.
    pub metrics: ExecutionPlanMetricsSet,
}

/// One task as planned: the cells it reads, and the node that caches some of them, which claims
/// it first (`None`: whoever has a free bee).
#[derive(Debug, Clone)]
pub struct PlannedTask {
    /// The node that caches some of the cells, which claims the task first.
    pub preferred: Option<String>,
    /// The cells (or ranges of them) it reads.
    pub files: Vec<PartitionedFile>,
}

impl PlannedTask {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.effective_size()).sum()
    }
}

type Receivers = Vec<Mutex<Option<mpsc::Receiver<DfResult<RecordBatch>>>>>;

/// A scan (with the partition-local work above it) run by the swarm.
pub struct SwarmExec {
    input: Arc<dyn ExecutionPlan>,
    tasks: Vec<PlannedTask>,
    /// The fragment over every cell of the tasks, as datafusion-proto bytes.
    fragment: Bytes,
    exchange: Arc<dyn Exchange>,
    properties: Arc<PlanProperties>,
    receivers: Mutex<Option<Arc<Receivers>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for SwarmExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmExec")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl SwarmExec {
    /// The run of `input` over `tasks` through `exchange`. Fails when the fragment does not
    /// survive the trip to another node (a session UDF, a plan node no codec knows): it is
    /// encoded with `codec` and decoded again under `decoding` here, and the caller keeps the plan
    /// local when that fails.
    pub(crate) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        tasks: Vec<PlannedTask>,
        codec: &ApiaryCodec,
        decoding: &TaskContext,
        exchange: Arc<dyn Exchange>,
    ) -> Result<Self> {
        let files: Vec<Vec<PartitionedFile>> = tasks.iter().map(|t| t.files.clone()).collect();
        let plan = fragment_of_all(&input, &files)?;
        let fragment = physical_plan_to_bytes_with_extension_codec(plan, codec)?;
        physical_plan_from_bytes_with_extension_codec(&fragment, decoding, codec)?;
        Ok(Self::with_fragment(input, tasks, exchange, fragment))
    }

    fn with_fragment(
        input: Arc<dyn ExecutionPlan>,
        tasks: Vec<PlannedTask>,
        exchange: Arc<dyn Exchange>,
        fragment: Bytes,
    ) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            tasks,
            fragment,
            exchange,
            properties,
            receivers: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The tasks this scan is cut into.
    pub fn tasks(&self) -> &[PlannedTask] {
        &self.tasks
    }

    fn start(&self, ctx: Arc<TaskContext>) -> Arc<Receivers> {
        let job = ScanJob {
            tasks: self.tasks.clone(),
            fragment: self.fragment.clone(),
            partitions: self
                .properties
                .output_partitioning()
                .partition_count()
                .max(1),
            metrics: self.metrics.clone(),
        };
        let receivers = self.exchange.start(job, ctx);
        Arc::new(receivers.into_iter().map(|r| Mutex::new(Some(r))).collect())
    }
}

impl DisplayAs for SwarmExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mut per_node: Vec<(&str, usize)> = vec![];
        for node in self.tasks.iter().filter_map(|t| t.preferred.as_deref()) {
            match per_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, c)) => *c += 1,
                None => per_node.push((node, 1)),
            }
        }
        let cells: usize = self.tasks.iter().map(|t| t.files.len()).sum();
        write!(f, "SwarmExec: tasks={}, cells={cells}", self.tasks.len())?;
        if !per_node.is_empty() {
            let nodes: Vec<String> = per_node.iter().map(|(n, c)| format!("{n}={c}")).collect();
            write!(f, ", preferred=[{}]", nodes.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SwarmExec {
    fn name(&self) -> &str {
        "SwarmExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    /// The local subtree the swarm runs, shown for `EXPLAIN`; it is never executed here.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(SwarmExec::with_fragment(
                input,
                self.tasks.clone(),
                Arc::clone(&self.exchange),
                self.fragment.clone(),
            ))),
            Err(_) => internal_err!("SwarmExec has exactly one child"),
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        // One run serves every partition once; a partition asked for again starts a new run
        // (the plan is executed again), so the plan holds no state a second execution trips on.
        let rx = {
            let mut running = self.receivers.lock();
            let take =
                |run: &Arc<Receivers>| run.get(partition).and_then(|slot| slot.lock().take());
            match running.as_ref().and_then(take) {
                Some(rx) => rx,
                None => {
                    if partition
                        >= self
                            .properties
                            .output_partitioning()
                            .partition_count()
                            .max(1)
                    {
                        return internal_err!("SwarmExec has no partition {partition}");
                    }
                    let run = self.start(context);
                    let rx = take(&run);
                    *running = Some(run);
                    match rx {
                        Some(rx) => rx,
                        None => return internal_err!("SwarmExec has no partition {partition}"),
                    }
                }
            }
        };
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}
