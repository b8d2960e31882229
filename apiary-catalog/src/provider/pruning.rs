//! Pruning cells from the ledger alone: no footer of a pruned cell is ever read.
//!
//! Two mechanisms, both over cell records only:
//! - filters that reference partition columns only are *evaluated* on the cells' partition values
//!   (one row per cell), which decides them exactly — Apiary reports them as `Exact` pushdown;
//! - every filter feeds DataFusion's `PruningPredicate`, evaluated on [`CellStatistics`]:
//!   per-cell min / max / null counts (partition values count as min = max).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt64Array,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;

use crate::ledger::CellRecord;

/// Whether `expr` references only partition columns (and is deterministic), so that evaluating
/// it on partition values decides it exactly. A constant (no column at all, e.g. the `NULL` that
/// `p NOT IN ('a', NULL)` simplifies to) is decided exactly too — and must be: DataFusion 55
/// re-asks after simplifying a filter it already pushed down as exact, and drops one that has
/// become inexact instead of filtering the rows again.
pub(crate) fn is_partition_filter(expr: &Expr, partition_by: &[String]) -> bool {
    !expr.is_volatile()
        && expr
            .column_refs()
            .iter()
            .all(|c| partition_by.contains(&c.name))
}

/// The ledger statistics of a list of cells, seen as pruning containers.
pub(crate) struct CellStatistics<'a> {
    cells: &'a [Arc<CellRecord>],
    schema: &'a SchemaRef,
    partition_by: &'a [String],
}

impl<'a> CellStatistics<'a> {
    pub(crate) fn new(
        cells: &'a [Arc<CellRecord>],
        schema: &'a SchemaRef,
        partition_by: &'a [String],
    ) -> Self {
        Self {
            cells,
            schema,
            partition_by,
        }
    }

    fn partition_index(&self, column: &Column) -> Option<usize> {
        self.partition_by.iter().position(|p| p == &column.name)
    }

    fn bound(&self, column: &Column, min: bool) -> Option<ArrayRef> {
        let field = self.schema.field_with_name(&column.name).ok()?;
        let null = ScalarValue::try_from(field.data_type()).ok()?;
        let values = self
            .cells
            .iter()
            .map(|c| match self.partition_index(column) {
                Some(p) => c.partition.get(p).cloned().unwrap_or_else(|| null.clone()),
                None => c
                    .stats
                    .get(&column.name)
                    .and_then(|s| {
                        if min {
                            s.min.clone()
                        } else {
                            s.effective_max(field.data_type()).0
                        }
                    })
                    .unwrap_or_else(|| null.clone()),
            });
        ScalarValue::iter_to_array(values).ok()
    }
}

impl PruningStatistics for CellStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn num_containers(&self) -> usize {
        self.cells.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let partition = self.partition_index(column).is_some();
        let counts: UInt64Array = self
            .cells
            .iter()
            .map(|c| {
                if partition {
                    Some(0)
                } else {
                    c.stats.get(&column.name).and_then(|s| s.null_count)
                }
            })
            .collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let rows: UInt64Array = self.cells.iter().map(|c| Some(c.rows)).collect();
        Some(Arc::new(rows))
    }

    fn contained(&self, column: &Column, values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        // Exactly known for partition columns: every row of a cell has its partition value.
        let p = self.partition_index(column)?;
        Some(
            self.cells
                .iter()
                .map(|c| c.partition.get(p).map(|v| values.contains(v)))
                .collect(),
        )
    }
}

/// Keeps the cells that may hold rows matching `predicate` (a physical expression over
/// `schema`), judged from their statistics. `None` keeps everything.
pub(crate) fn prune_by_statistics(
    cells: &[Arc<CellRecord>],
    schema: &SchemaRef,
    partition_by: &[String],
    predicate: Option<&Arc<dyn PhysicalExpr>>,
) -> Result<Vec<bool>> {
    let Some(predicate) = predicate else {
        return Ok(vec![true; cells.len()]);
    };
    let Some(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .build(Arc::clone(predicate))
    else {
        // Always true, or not usable for pruning: keep every cell.
        return Ok(vec![true; cells.len()]);
    };
    pruning.prune(&CellStatistics::new(cells, schema, partition_by))
}

/// `expr` as a physical expression that pruning can analyse. A session of another DataFusion
/// library — datafusion-ffi's `ForeignSession`, when datafusion-python hosts Apiary — plans
/// expressions on its own side and hands back opaque ones, which prune nothing; so only a local
/// `SessionState` plans it (with its simplifier), anything else is planned here with the
/// session's execution properties.
pub(crate) fn physical_expr(
    state: &dyn Session,
    expr: Expr,
    schema: &DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    if state.as_any().is::<SessionState>() {
        state.create_physical_expr(expr, schema)
    } else {
        create_physical_expr(
            &expr,
            schema,
            state.execution_props(),
            &PhysicalPlanningContext::default(),
        )
    }
}

/// Evaluates partition-only `filters` on the cells' partition values: exact, per cell.
pub(crate) fn prune_by_partition_values(
    state: &dyn Session,
    cells: &[Arc<CellRecord>],
    partition_schema: &SchemaRef,
    filters: &[Expr],
) -> Result<Vec<bool>> {
    let mut keep = vec![true; cells.len()];
    if filters.is_empty() || cells.is_empty() {
        return Ok(keep);
    }
    let columns = (0..partition_schema.fields().len())
        .map(|p| ScalarValue::iter_to_array(cells.iter().map(|c| c.partition[p].clone())))
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new_with_options(
        Arc::clone(partition_schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(cells.len())),
    )?;
    let df_schema = DFSchema::try_from(Schema::clone(partition_schema))?;
    for filter in filters {
        let physical = physical_expr(state, filter.clone(), &df_schema)?;
        let result = physical.evaluate(&batch)?.into_array(cells.len())?;
        let Some(result) = result.as_any().downcast_ref::<BooleanArray>() else {
            continue;
        };
        for (i, k) in keep.iter_mut().enumerate() {
            // NULL is not true: the row would be filtered out.
            *k &= result.is_valid(i) && result.value(i);
        }
    }
    Ok(keep)
}
