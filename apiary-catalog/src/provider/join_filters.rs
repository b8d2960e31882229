//! Drops, right above a scan, the rows a join's dynamic filter rules out — while it rules out most.
//!
//! DataFusion 55 hands a hash join's build-side keys (and a TopK's bound) to the scans below it as
//! a dynamic filter. A Parquet scan prunes row groups with it, but drops rows by it only when
//! `datafusion.execution.parquet.pushdown_filters` is on, which also decodes every static filter
//! row by row and costs most queries more than it saves (`BENCHMARKS.md`). Without it, a join
//! that keeps a few of many keys still repartitions and probes every row of its probe side: TPC-H
//! q18 at SF10 joins all 60 M `lineitem` rows to 15 M orders before its `IN` keeps 624 of them.
//!
//! [`FilterJoinedRows`] puts a [`JoinFilterExec`] on every Parquet scan below a hash join's probe
//! side whose predicate holds a dynamic filter. It evaluates the filters on each batch once they
//! are set, and stops doing so for the rest of its partition when its first 64 Ki rows show they
//! keep more than half — where checking the keys twice (here and in the join) is all it would
//! do. Its answers are the join's: a dynamic filter only rules out rows the join would drop. It
//! runs only in sessions that send no plan to other nodes (no codec carries it).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::replace_children_if_necessary;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties, RecordBatchStream,
};
use futures::{Stream, StreamExt};

use crate::options::SessionOptions;

/// Rows a partition checks before it judges whether the filter pays.
const PROBE_ROWS: usize = 64 * 1024;

/// The physical optimizer rule (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct FilterJoinedRows;

impl PhysicalOptimizerRule for FilterJoinedRows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let on = config
            .extensions
            .get::<SessionOptions>()
            .is_none_or(|options| options.scan_join_filters);
        if !on {
            return Ok(plan);
        }
        wrap(plan, false)
    }

    fn name(&self) -> &str {
        "apiary_filter_joined_rows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Puts a [`JoinFilterExec`] on each Parquet scan below a hash join's probe side (`probe`: this
/// node is) whose predicate holds dynamic filters. Right on the scan, below any `FilterExec` of
/// its own: a join's keys are often the cheaper check (TPC-H q19: a few part keys before a long
/// `OR` of string comparisons). Scans outside every probe side — with at most a TopK's bound,
/// which the TopK checks itself — are left alone.
fn wrap(plan: Arc<dyn ExecutionPlan>, probe: bool) -> Result<Arc<dyn ExecutionPlan>> {
    if probe {
        let filters: Vec<_> = join_filters(&plan)
            .iter()
            .filter_map(|f| over_output(f, &plan.schema()))
            .collect();
        if !filters.is_empty() {
            return Ok(Arc::new(JoinFilterExec::new(plan, filters)));
        }
    }
    let join = plan.downcast_ref::<HashJoinExec>().is_some();
    let children = plan
        .children()
        .into_iter()
        .enumerate()
        .map(|(i, child)| wrap(Arc::clone(child), probe || (join && i == 1)))
        .collect::<Result<Vec<_>>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    replace_children_if_necessary(plan, children)
}

/// The dynamic filters in a Parquet scan's predicate (over its file's columns).
fn join_filters(node: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn PhysicalExpr>> {
    let Some(predicate) = node
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        .and_then(|scan| scan.file_source().downcast_ref::<ParquetSource>())
        .and_then(|parquet| parquet.filter())
    else {
        return vec![];
    };
    split_conjunction(&predicate)
        .into_iter()
        .filter(|e| e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some())
        .cloned()
        .collect()
}

/// `expr` with its columns found by name in `schema` (`None` if one is not there).
fn over_output(expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| match e.downcast_ref::<Column>() {
            Some(column) => {
                let index = schema.index_of(column.name())?;
                Ok(Transformed::yes(
                    Arc::new(Column::new(column.name(), index)) as Arc<dyn PhysicalExpr>,
                ))
            }
            None => Ok(Transformed::no(e)),
        })
        .ok()
        .map(|t| t.data)
}

/// Filters its input by the dynamic filters of the scan below it while they drop most rows.
#[derive(Debug)]
pub struct JoinFilterExec {
    input: Arc<dyn ExecutionPlan>,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    metrics: ExecutionPlanMetricsSet,
}

impl JoinFilterExec {
    fn new(input: Arc<dyn ExecutionPlan>, filters: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Self {
            input,
            filters,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for JoinFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let filters: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
        write!(f, "JoinFilterExec: {}", filters.join(" AND "))
    }
}

impl ExecutionPlan for JoinFilterExec {
    fn name(&self) -> &str {
        "JoinFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for filter in &self.filters {
            if f(filter)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => {
                Ok(Arc::new(Self::new(input, self.filters.clone())))
            }
            _ => datafusion::common::internal_err!("JoinFilterExec takes one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let metric =
            |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, partition);
        Ok(Box::pin(JoinFilterStream {
            input,
            filters: self.filters.clone(),
            checking: true,
            rows_checked: metric("rows_checked"),
            rows_dropped: metric("rows_dropped"),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct JoinFilterStream {
    input: SendableRecordBatchStream,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// False once the first rows showed the filters keep most of them.
    checking: bool,
    /// This partition's rows checked and dropped: also what judges whether the filters pay.
    rows_checked: Count,
    rows_dropped: Count,
}

impl JoinFilterStream {
    fn drop_ruled_out(&mut self, mut batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut set = false;
        for filter in &self.filters {
            let Some(dynamic) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() else {
                continue;
            };
            // Until its join has built its side, a dynamic filter is `true`.
            let current = dynamic.current()?;
            if is_true(&current) {
                continue;
            }
            set = true;
            let keep = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
            batch = filter_record_batch(&batch, as_boolean_array(&keep)?)?;
        }
        if set {
            self.rows_checked.add(rows);
            self.rows_dropped.add(rows - batch.num_rows());
            let (checked, dropped) = (self.rows_checked.value(), self.rows_dropped.value());
            if checked >= PROBE_ROWS && 2 * (checked - dropped) > checked {
                self.checking = false;
            }
        }
        Ok(batch)
    }
}

fn is_true(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<Literal>()
        .is_some_and(|l| l.value() == &ScalarValue::Boolean(Some(true)))
}

impl Stream for JoinFilterStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) if self.checking => {
                    let kept = self.drop_ruled_out(batch);
                    match kept {
                        Ok(b) if b.num_rows() == 0 => continue,
                        other => return Poll::Ready(Some(other)),
                    }
                }
                other => return other,
            }
        }
    }
}

impl RecordBatchStream for JoinFilterStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
