//! Drops, right above a scan, the rows a join's dynamic filter rules out — while it rules out most.
//!
//! DataFusion 55 hands a hash join's build-side keys (and a TopK's bound) to the scans below it as
//! a dynamic filter. A Parquet scan prunes row groups with it, but drops rows by it only when
//! `datafusion.execution.parquet.pushdown_filters` is on, which also decodes every static filter
//! row by row and costs most queries more than it saves (`BENCHMARKS.md`). Without it, a join
//! that keeps a few of many keys still repartitions and probes every row of its probe side: TPC-H
//! q18 at SF10 joins all 60 M `lineitem` rows to 15 M orders before its `IN` keeps 624 of them.
//!
//! [`FilterJoinedRows`] puts a [`JoinFilterExec`] on a Parquet scan below a hash join's probe side
//! whose predicate holds a dynamic filter that pays there: one whose rows would otherwise reach
//! work before the join that owns it (a shuffle, another join, an aggregation, a costly filter).
//! A join whose probe reads the scan through nothing but projections and cheap filters checks
//! its keys itself; checking them above the scan too would look each row up twice (TPC-H q4:
//! 6 M lookups instead of 3.8 M); that join's filter is only judged above the scan. The operator
//! evaluates its filters on each batch once they are set, and stops doing so for the rest of its
//! partition when its first 64 Ki rows show they keep more than half, or that the join right
//! above drops most of them itself (TPC-H q8: its part keys keep 0.7 % of `lineitem`, the farther
//! joins' 13 %, so checking theirs on every row costs lookups that join makes unnecessary). Its
//! answers are the join's: a dynamic filter only rules out rows the join would drop. It runs
//! only in sessions that send no plan to other nodes (no codec carries it).

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
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, DynamicFilterPhysicalExpr, InListExpr, LikeExpr, Literal,
};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::replace_children_if_necessary;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    RecordBatchStream,
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
        wrap(plan, Route::default())
    }

    fn name(&self) -> &str {
        "apiary_filter_joined_rows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Where a node sits, seen from the joins above it.
#[derive(Debug, Clone, Copy, Default)]
struct Route {
    /// Below some hash join's probe side.
    probe: bool,
    /// The dynamic filter of the join whose probe reads this node through nothing but
    /// projections, round-robin repartitions and filters.
    direct: Option<u64>,
    /// One of those filters costs more than looking a key up.
    costly: bool,
}

impl Route {
    /// Below a node that does real work on every row: no join reads it directly.
    fn through_work(self) -> Self {
        Self {
            probe: self.probe,
            ..Self::default()
        }
    }
}

/// Puts a [`JoinFilterExec`] on each Parquet scan below a hash join's probe side whose predicate
/// holds dynamic filters that pay there (see the module doc). Right on the scan, below any
/// `FilterExec` of its own: where that filter is costly, the join's keys are the cheaper check
/// (TPC-H q19: a few part keys before a long `OR` of string comparisons). Scans outside every
/// probe side — with at most a TopK's bound, which the TopK checks itself — are left alone.
fn wrap(plan: Arc<dyn ExecutionPlan>, route: Route) -> Result<Arc<dyn ExecutionPlan>> {
    if route.probe {
        let schema = plan.schema();
        let (mut next_join, mut farther) = (None, vec![]);
        for filter in join_filters(&plan) {
            let Some(filter) = over_output(&filter, &schema) else {
                continue;
            };
            match route.direct {
                Some(id) if !route.costly && filter.expression_id() == Some(id) => {
                    next_join = Some(filter)
                }
                _ => farther.push(filter),
            }
        }
        if !farther.is_empty() {
            return Ok(Arc::new(JoinFilterExec::new(plan, next_join, farther)));
        }
    }
    let join = plan.downcast_ref::<HashJoinExec>();
    let below = |i: usize| match join {
        Some(join) if i == 1 => Route {
            probe: true,
            direct: join
                .dynamic_expressions_produced()
                .first()
                .and_then(|f| f.expression_id()),
            costly: false,
        },
        Some(_) => route.through_work(),
        None => passed_through(&plan, route),
    };
    let children = plan
        .children()
        .into_iter()
        .enumerate()
        .map(|(i, child)| wrap(Arc::clone(child), below(i)))
        .collect::<Result<Vec<_>>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    replace_children_if_necessary(plan, children)
}

/// The route below `node` (not a join): rows pass a projection or a round-robin repartition
/// untouched, a filter at its cost; anything else works on each row.
fn passed_through(node: &Arc<dyn ExecutionPlan>, route: Route) -> Route {
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        return Route {
            costly: route.costly || costly(filter.predicate()),
            ..route
        };
    }
    let round_robin = node
        .downcast_ref::<RepartitionExec>()
        .is_some_and(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)));
    if round_robin || node.downcast_ref::<ProjectionExec>().is_some() {
        return route;
    }
    route.through_work()
}

/// Whether a filter costs more per row than a join's key lookup: a `LIKE`, a function call, or
/// more than two comparisons and arithmetic operations.
fn costly(predicate: &Arc<dyn PhysicalExpr>) -> bool {
    let mut operations = 0;
    let mut calls = false;
    let _ = predicate.apply(|e| {
        if e.downcast_ref::<LikeExpr>().is_some()
            || e.downcast_ref::<ScalarFunctionExpr>().is_some()
        {
            calls = true;
        } else if e
            .downcast_ref::<BinaryExpr>()
            .is_some_and(|b| !b.op().is_logic_operator())
            || e.downcast_ref::<InListExpr>().is_some()
        {
            operations += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    calls || operations > 2
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
    /// The filter of the join whose probe reads this operator's rows next: checked only to judge
    /// whether that join drops most rows itself (then nothing here pays).
    next_join: Option<Arc<dyn PhysicalExpr>>,
    /// The filters of joins farther up, which rows reach only after work: what drops rows here.
    farther: Vec<Arc<dyn PhysicalExpr>>,
    metrics: ExecutionPlanMetricsSet,
}

impl JoinFilterExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        next_join: Option<Arc<dyn PhysicalExpr>>,
        farther: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        Self {
            input,
            next_join,
            farther,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for JoinFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let farther: Vec<String> = self.farther.iter().map(|e| e.to_string()).collect();
        write!(f, "JoinFilterExec: {}", farther.join(" AND "))?;
        match &self.next_join {
            Some(next) => write!(f, ", next_join={next}"),
            None => Ok(()),
        }
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
        for filter in self.next_join.iter().chain(&self.farther) {
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
            Some(input) if children.is_empty() => Ok(Arc::new(Self::new(
                input,
                self.next_join.clone(),
                self.farther.clone(),
            ))),
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
            next_join: self.next_join.clone(),
            farther: self.farther.clone(),
            checking: true,
            next_join_rows: Tally::default(),
            farther_rows: Tally::default(),
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
    /// Until judged: the next join's filter (see [`JoinFilterExec`]).
    next_join: Option<Arc<dyn PhysicalExpr>>,
    farther: Vec<Arc<dyn PhysicalExpr>>,
    /// False once the first rows showed that checking here does not pay.
    checking: bool,
    next_join_rows: Tally,
    farther_rows: Tally,
    /// This partition's rows checked and dropped here (what `EXPLAIN ANALYZE` shows).
    rows_checked: Count,
    rows_dropped: Count,
}

/// Rows a filter saw and kept in this partition.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    seen: usize,
    kept: usize,
}

impl Tally {
    fn add(&mut self, seen: usize, kept: usize) {
        self.seen += seen;
        self.kept += kept;
    }

    /// Judged on enough rows and found to keep more than half of them.
    fn keeps_most(&self) -> bool {
        self.seen >= PROBE_ROWS && 2 * self.kept > self.seen
    }

    /// Judged on enough rows and found to drop at least half of them.
    fn drops_most(&self) -> bool {
        self.seen >= PROBE_ROWS && 2 * self.kept <= self.seen
    }
}

impl JoinFilterStream {
    fn drop_ruled_out(&mut self, mut batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        if let Some(next) = &self.next_join
            && let Some(kept) = apply(next, &batch)?
        {
            self.next_join_rows.add(batch.num_rows(), kept.num_rows());
            batch = kept;
        }
        let reaching = batch.num_rows();
        let mut set = false;
        for filter in &self.farther {
            if let Some(kept) = apply(filter, &batch)? {
                set = true;
                batch = kept;
            }
        }
        if set {
            self.farther_rows.add(reaching, batch.num_rows());
        }
        if set || self.next_join_rows.seen > 0 {
            self.rows_checked.add(rows);
            self.rows_dropped.add(rows - batch.num_rows());
        }
        self.judge();
        Ok(batch)
    }

    /// After the first rows: if the next join drops most of them itself, checking anything here
    /// only repeats its lookups on rows it would drop anyway; if it keeps most (or holds no
    /// filter), the farther joins' filters pay while they drop most.
    fn judge(&mut self) {
        if self.next_join.is_some() {
            if self.next_join_rows.drops_most() {
                self.checking = false;
            } else if self.next_join_rows.keeps_most()
                || (self.next_join_rows.seen == 0 && self.rows_checked.value() >= PROBE_ROWS)
            {
                self.next_join = None;
            }
        } else if self.farther_rows.keeps_most() {
            self.checking = false;
        }
    }
}

/// `batch` without the rows `filter` rules out; `None` while its join has not set it yet.
fn apply(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
    let Some(dynamic) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() else {
        return Ok(None);
    };
    // Until its join has built its side, a dynamic filter is `true`.
    if is_true(&dynamic.current()?) {
        return Ok(None);
    }
    let keep = filter.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(Some(filter_record_batch(batch, as_boolean_array(&keep)?)?))
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
