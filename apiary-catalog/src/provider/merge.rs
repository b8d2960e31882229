//! `MERGE INTO` a frame: copy-on-write, one `RewriteCells` commit.
//!
//! DataFusion 55 plans the source (`USING …`) and hands `TableProvider::merge_into` its physical
//! plan, the `ON` expression and the `WHEN` clauses; Apiary builds the join itself.
//!
//! ```text
//!  source ─ collected once (held in memory: the changes, usually small)
//!  pass 1: every cell of the version read, each row with its cell's path
//!          ⟗ source ON …  → the first WHEN clause that applies to each joined row
//!          ├─ UPDATE / DELETE: its cell is touched
//!          └─ INSERT (source row matched no target row): the new row is written
//!  pass 2: only the touched cells ⟕ source ON … → each row kept, updated or dropped,
//!          written; every row of a touched cell is accounted for exactly once, or the
//!          statement fails (a target row matched several source rows)
//!  one RewriteCells commit: the touched cells out, the written cells in
//! ```
//!
//! Cells with no changed row are never rewritten. Rows appended meanwhile by others are kept
//! (the commit rebases over appends); a concurrent rewrite of a touched cell is a conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::catalog::memory::MemTable;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{
    Column, DFSchemaRef, JoinType, TableReference, internal_err, not_impl_err,
};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::dml::{MergeIntoAction, MergeIntoClause, MergeIntoClauseKind};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, lit, when};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties, common,
    execute_stream,
};
use futures::StreamExt;

use super::dml_guard::holds_subquery;
use super::frame_table::FrameTableProvider;
use super::scan::CELL_COLUMN;
use crate::cell::CellWriter;
use crate::ledger::Action;

const SOURCE: &str = "__apiary_merge_source";
const TARGET_SEEN: &str = "__apiary_target";
const SOURCE_SEEN: &str = "__apiary_source";
const CLAUSE: &str = "__apiary_clause";

/// The statement as DataFusion hands it over, checked.
#[derive(Debug, Clone)]
struct Merge {
    table: FrameTableProvider,
    /// How the target's columns are qualified in `on` and the clauses.
    target: TableReference,
    /// The source's columns: qualifier and name, as the expressions name them.
    source: Vec<(Option<TableReference>, String)>,
    on: Expr,
    clauses: Vec<MergeIntoClause>,
}

/// The plan of `MERGE INTO table USING source ON on clauses`.
pub(crate) fn plan(
    table: &FrameTableProvider,
    source: Arc<dyn ExecutionPlan>,
    merge_schema: &DFSchemaRef,
    on: Expr,
    clauses: Vec<MergeIntoClause>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let name = table.name();
    if table.is_historical() {
        return not_impl_err!(
            "frame {name} at version {} is a past version and cannot be changed (MERGE INTO)",
            table.snapshot().version
        );
    }
    let mut exprs = vec![&on];
    for c in &clauses {
        exprs.extend(&c.predicate);
        match &c.action {
            MergeIntoAction::Update(a) => exprs.extend(a.iter().map(|(_, e)| e)),
            MergeIntoAction::Insert { values, .. } => exprs.extend(values),
            MergeIntoAction::Delete => {}
        }
    }
    for e in exprs {
        if holds_subquery(e) {
            return not_impl_err!(
                "MERGE INTO frame {name}: a subquery in ON or WHEN is not supported; put it in \
                 the USING source"
            );
        }
        if e.is_volatile() {
            return not_impl_err!(
                "MERGE INTO frame {name}: a volatile expression in ON or WHEN ({e}) is not supported"
            );
        }
    }
    let columns = table.snapshot().schema.fields().len();
    let qualified: Vec<(Option<TableReference>, String)> = merge_schema
        .iter()
        .map(|(q, f)| (q.cloned(), f.name().clone()))
        .collect();
    let Some((Some(target), _)) = qualified.first().cloned() else {
        return internal_err!("MERGE INTO frame {name}: the target columns have no qualifier");
    };
    let source_columns = qualified[columns..].to_vec();
    let mut names = BTreeSet::new();
    for (_, n) in &source_columns {
        if !names.insert(n) {
            return not_impl_err!(
                "MERGE INTO frame {name}: the source has two columns named {n}; alias one"
            );
        }
    }
    let merge = Merge {
        table: table.clone(),
        target,
        source: source_columns,
        on,
        clauses,
    };
    Ok(Arc::new(MergeExec::new(Arc::new(merge), source)))
}

/// Runs the merge when executed; its child is the source, which DataFusion's optimizer plans
/// like any input.
#[derive(Debug)]
struct MergeExec {
    merge: Arc<Merge>,
    source: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl MergeExec {
    fn new(merge: Arc<Merge>, source: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            merge,
            source,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(count_schema()),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
        }
    }
}

impl DisplayAs for MergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MergeExec: MERGE INTO {}", self.merge.table.name())
    }
}

impl ExecutionPlan for MergeExec {
    fn name(&self) -> &str {
        "MergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.source]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [source] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("MergeExec has one child".into()))?;
        Ok(Arc::new(MergeExec::new(Arc::clone(&self.merge), source)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("MergeExec has one partition, not {partition}");
        }
        let (merge, source) = (Arc::clone(&self.merge), Arc::clone(&self.source));
        let work = async move {
            let rows = run(&merge, source, context).await?;
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(work),
        )))
    }
}

/// What a clause does, by its number (1-based; 0: no clause applies, the row stays as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    Update,
    Delete,
    Insert,
}

impl Merge {
    fn effect(&self, clause: i32) -> Effect {
        let Some(c) = usize::try_from(clause)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.clauses.get(i))
        else {
            return Effect::None;
        };
        match c.action {
            MergeIntoAction::Update(_) => Effect::Update,
            MergeIntoAction::Delete => Effect::Delete,
            MergeIntoAction::Insert { .. } => Effect::Insert,
        }
    }

    fn has(&self, kind: fn(MergeIntoClauseKind) -> bool) -> bool {
        self.clauses.iter().any(|c| kind(c.kind))
    }

    /// `CASE WHEN predicate THEN number …` over the clauses of one kind, first match wins.
    fn first_clause(&self, kind: fn(MergeIntoClauseKind) -> bool) -> Result<Expr> {
        let mut case: Option<datafusion::logical_expr::conditional_expressions::CaseBuilder> = None;
        for (i, c) in self.clauses.iter().enumerate() {
            if !kind(c.kind) {
                continue;
            }
            let p = c.predicate.clone().unwrap_or(lit(true));
            let n = lit(i as i32 + 1);
            case = Some(match case {
                None => when(p, n),
                Some(mut b) => b.when(p, n),
            });
        }
        match case {
            Some(mut b) => b.otherwise(lit(0i32)),
            None => Ok(lit(0i32)),
        }
    }

    fn target_column(&self, name: &str) -> Expr {
        Expr::Column(Column::new(Some(self.target.clone()), name))
    }

    /// The target's rows (of `table`), qualified as the statement names them, with a marker.
    fn target_plan(&self, table: FrameTableProvider) -> Result<LogicalPlanBuilder> {
        let mut exprs: Vec<Expr> = TableProvider::schema(&table)
            .fields()
            .iter()
            .map(|f| self.target_column(f.name()))
            .collect();
        exprs.push(lit(true).alias(TARGET_SEEN));
        LogicalPlanBuilder::scan(
            self.target.clone(),
            provider_as_source(Arc::new(table)),
            None,
        )?
        .project(exprs)
    }

    /// The source's rows, qualified as the statement names them, with a marker.
    fn source_plan(&self, source: &Arc<MemTable>) -> Result<LogicalPlanBuilder> {
        let mut exprs: Vec<Expr> = self
            .source
            .iter()
            .map(|(q, n)| {
                let column = Expr::Column(Column::new(Some(SOURCE), n));
                match q {
                    Some(q) => column.alias_qualified(Some(q.clone()), n),
                    None => column.alias(n),
                }
            })
            .collect();
        exprs.push(lit(true).alias(SOURCE_SEEN));
        LogicalPlanBuilder::scan(
            SOURCE,
            provider_as_source(Arc::clone(source) as Arc<dyn TableProvider>),
            None,
        )?
        .project(exprs)
    }

    /// The value of target column `field` after clause `CLAUSE` (an update or an insert).
    fn new_value(&self, field: &Field, updates: bool, inserts: bool) -> Result<Expr> {
        let old = if updates {
            self.target_column(field.name())
        } else {
            lit(datafusion::common::ScalarValue::try_from(
                field.data_type(),
            )?)
        };
        let mut case: Option<datafusion::logical_expr::conditional_expressions::CaseBuilder> = None;
        for (i, c) in self.clauses.iter().enumerate() {
            let value = match &c.action {
                MergeIntoAction::Update(a) if updates => a
                    .iter()
                    .find(|(n, _)| n == field.name())
                    .map(|(_, v)| v.clone()),
                MergeIntoAction::Insert { columns, values } if inserts => {
                    let at = if columns.is_empty() {
                        self.table.snapshot().schema.index_of(field.name()).ok()
                    } else {
                        columns.iter().position(|n| n == field.name())
                    };
                    Some(match at.and_then(|i| values.get(i)) {
                        Some(v) => v.clone(),
                        None => lit(datafusion::common::ScalarValue::Null),
                    })
                }
                _ => None,
            };
            let Some(value) = value else { continue };
            let p = Expr::Column(Column::from_name(CLAUSE)).eq(lit(i as i32 + 1));
            let value = cast(value, field.data_type().clone());
            case = Some(match case {
                None => when(p, value),
                Some(mut b) => b.when(p, value),
            });
        }
        Ok(match case {
            Some(mut b) => b.otherwise(old)?,
            None => old,
        }
        .alias(field.name()))
    }
}

async fn run(merge: &Merge, source: Arc<dyn ExecutionPlan>, ctx: Arc<TaskContext>) -> Result<u64> {
    let table = &merge.table;
    let frame = table.frame();
    frame.admit().await?;
    let read = Arc::clone(table.snapshot());
    let schema = Arc::clone(&read.schema);
    let state = SessionStateBuilder::new()
        .with_config(ctx.session_config().clone())
        .with_runtime_env(ctx.runtime_env())
        .build();

    let source_schema = source.schema();
    let batches = common::collect(source.execute(0, Arc::clone(&ctx))?).await?;
    let source = Arc::new(MemTable::try_new(source_schema, vec![batches])?);
    let by_source = merge.has(|k| k == MergeIntoClauseKind::NotMatchedBySource);
    let inserts = merge.has(|k| k.is_not_matched_by_target());
    let mut writer = frame.cell_writer(&read)?;

    // Pass 1: which cells hold a row that changes; the inserted rows.
    let join = match (by_source, inserts) {
        (true, true) => JoinType::Full,
        (true, false) => JoinType::Left,
        (false, true) => JoinType::Right,
        (false, false) => JoinType::Inner,
    };
    let target_seen = Expr::Column(Column::from_name(TARGET_SEEN)).is_not_null();
    let source_seen = Expr::Column(Column::from_name(SOURCE_SEEN)).is_not_null();
    let clause = when(
        target_seen.clone().and(source_seen.clone()),
        merge.first_clause(|k| k == MergeIntoClauseKind::Matched)?,
    )
    .when(
        target_seen,
        merge.first_clause(|k| k == MergeIntoClauseKind::NotMatchedBySource)?,
    )
    .otherwise(merge.first_clause(|k| k.is_not_matched_by_target())?)?;
    let mut outputs = vec![
        Expr::Column(Column::new(Some(merge.target.clone()), CELL_COLUMN)),
        Expr::Column(Column::from_name(CLAUSE)),
    ];
    if inserts {
        for f in schema.fields() {
            outputs.push(merge.new_value(f, false, true)?);
        }
    }
    let all = table.over((*read).clone()).with_cell_column();
    let plan = merge
        .target_plan(all)?
        .join_on(
            merge.source_plan(&source)?.build()?,
            join,
            vec![merge.on.clone()],
        )
        .and_then(|b| with_column(b, clause.alias(CLAUSE)))?
        .project(outputs)?
        .build()?;
    let mut stream = execute_stream(state.create_physical_plan(&plan).await?, Arc::clone(&ctx))?;
    let mut touched = BTreeSet::new();
    let mut inserted = 0u64;
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let cells = batch
                .column(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| unexpected("cell path"))?;
            let clauses = clause_numbers(&batch, 1)?;
            let mut insert = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let effect = merge.effect(clauses.value(row));
                if matches!(effect, Effect::Update | Effect::Delete) && cells.is_valid(row) {
                    touched.insert(cells.value(row).to_string());
                }
                insert.push(effect == Effect::Insert);
            }
            if inserts {
                let rows = filter_record_batch(&batch, &BooleanArray::from(insert))?;
                if rows.num_rows() > 0 {
                    inserted += rows.num_rows() as u64;
                    let values: Vec<usize> = (2..rows.num_columns()).collect();
                    writer.write(&rows.project(&values)?).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        writer.abort().await;
        return Err(e);
    }

    // Pass 2: the touched cells, row by row.
    let (mut updated, mut deleted) = (0u64, 0u64);
    if !touched.is_empty() {
        let result = rewrite(merge, &state, &ctx, &source, &touched, &mut writer).await;
        match result {
            Ok((u, d)) => (updated, deleted) = (u, d),
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        }
    }
    if touched.is_empty() && inserted == 0 {
        writer.abort().await;
        return Ok(0);
    }
    let added = writer.finish().await?;
    let action = Action::RewriteCells {
        removed: touched.into_iter().collect(),
        added,
    };
    let metrics = BTreeMap::from([
        ("rows_updated".to_string(), updated),
        ("rows_deleted".to_string(), deleted),
        ("rows_inserted".to_string(), inserted),
    ]);
    frame
        .commit_action_with_metrics(&read, "MERGE", action, metrics)
        .await?;
    Ok(updated + deleted + inserted)
}

/// Writes the rows of the `touched` cells as the clauses leave them; returns the rows updated
/// and deleted.
async fn rewrite(
    merge: &Merge,
    state: &datafusion::execution::SessionState,
    ctx: &Arc<TaskContext>,
    source: &Arc<MemTable>,
    touched: &BTreeSet<String>,
    writer: &mut CellWriter,
) -> Result<(u64, u64)> {
    let read = merge.table.snapshot();
    let subset = read.with_cells_where(|c| touched.contains(&c.path));
    let expected: u64 = subset.row_count();
    let source_seen = Expr::Column(Column::from_name(SOURCE_SEEN)).is_not_null();
    let clause = when(
        source_seen,
        merge.first_clause(|k| k == MergeIntoClauseKind::Matched)?,
    )
    .otherwise(merge.first_clause(|k| k == MergeIntoClauseKind::NotMatchedBySource)?)?;
    let mut outputs = vec![Expr::Column(Column::from_name(CLAUSE))];
    for f in read.schema.fields() {
        outputs.push(merge.new_value(f, true, false)?);
    }
    let plan = merge
        .target_plan(merge.table.over(subset))?
        .join_on(
            merge.source_plan(source)?.build()?,
            JoinType::Left,
            vec![merge.on.clone()],
        )
        .and_then(|b| with_column(b, clause.alias(CLAUSE)))?
        .project(outputs)?
        .build()?;
    let mut stream = execute_stream(state.create_physical_plan(&plan).await?, Arc::clone(ctx))?;
    let (mut seen, mut updated, mut deleted) = (0u64, 0u64, 0u64);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let clauses = clause_numbers(&batch, 0)?;
        let mut keep = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            match merge.effect(clauses.value(row)) {
                Effect::Update => updated += 1,
                Effect::Delete => deleted += 1,
                Effect::None | Effect::Insert => {}
            }
            keep.push(merge.effect(clauses.value(row)) != Effect::Delete);
        }
        seen += batch.num_rows() as u64;
        let rows = filter_record_batch(&batch, &BooleanArray::from(keep))?;
        let values: Vec<usize> = (1..rows.num_columns()).collect();
        writer.write(&rows.project(&values)?).await?;
    }
    if seen != expected {
        return Err(DataFusionError::Execution(format!(
            "MERGE INTO frame {}: a target row matched more than one source row ({seen} joined \
             rows for {expected} target rows); make ON match at most one source row per target \
             row. Nothing was committed",
            merge.table.name()
        )));
    }
    Ok((updated, deleted))
}

/// `plan`'s columns and `expr`.
fn with_column(plan: LogicalPlanBuilder, expr: Expr) -> Result<LogicalPlanBuilder> {
    let mut exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect();
    exprs.push(expr);
    plan.project(exprs)
}

fn unexpected(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!(
        "MergeExec: the {what} column has an unexpected type"
    ))
}

/// Column `i` of `batch`: the number of the clause that applies to each row.
fn clause_numbers(batch: &RecordBatch, i: usize) -> Result<&datafusion::arrow::array::Int32Array> {
    batch
        .column(i)
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| unexpected("clause"))
}
