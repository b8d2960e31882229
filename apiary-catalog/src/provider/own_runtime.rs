//! Scans that bring their own runtime.
//!
//! A host that reaches Apiary through datafusion-ffi (datafusion-python) executes our plans with a
//! task context whose `RuntimeEnv` is a fresh default: it knows only `file://` and has an
//! unbounded memory pool. [`OwnRuntimeExec`] executes its input with Apiary's runtime instead —
//! the meadow's object store and the memory budget Apiary gives foreign queries.
//!
//! To the host it is a leaf: a host optimizer that sees children rewrites them (it puts its own
//! `RepartitionExec` between this node and the scan, which then runs on the host's runtime).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Statistics, internal_err};
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs, StatisticsContext,
    displayable,
};

/// `base` with `runtime` in place of its own; everything else (session config, functions) kept.
pub fn with_runtime(base: &TaskContext, runtime: Arc<RuntimeEnv>) -> Arc<TaskContext> {
    Arc::new(TaskContext::new(
        base.task_id(),
        base.session_id(),
        base.session_config().clone(),
        base.scalar_functions().clone(),
        base.higher_order_functions().clone(),
        base.aggregate_functions().clone(),
        base.window_functions().clone(),
        runtime,
    ))
}

/// Executes `input` with `runtime` in place of the task context's runtime; everything else of
/// the task context (session config, functions) is kept. Shows no children, so that no optimizer
/// moves anything between it and its input.
#[derive(Debug)]
pub struct OwnRuntimeExec {
    input: Arc<dyn ExecutionPlan>,
    runtime: Arc<RuntimeEnv>,
}

impl OwnRuntimeExec {
    /// Runs `input` with `runtime` (the meadow's store, Apiary's memory budget).
    pub fn new(input: Arc<dyn ExecutionPlan>, runtime: Arc<RuntimeEnv>) -> Self {
        Self { input, runtime }
    }

    /// The plan it runs (not shown to optimizers as a child).
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The runtime the input runs with.
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }
}

impl DisplayAs for OwnRuntimeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "OwnRuntimeExec: memory={}, input={}",
            self.runtime.memory_pool,
            displayable(self.input.as_ref()).one_line()
        )
    }
}

impl ExecutionPlan for OwnRuntimeExec {
    fn name(&self) -> &str {
        "OwnRuntimeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
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
        if !children.is_empty() {
            return internal_err!("OwnRuntimeExec shows no children");
        }
        Ok(self)
    }

    /// The input's statistics: the input is hidden from the walk that would provide them.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        StatisticsContext::new().compute(self.input.as_ref(), args)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let context = with_runtime(&context, Arc::clone(&self.runtime));
        self.input.execute(partition, context)
    }
}
