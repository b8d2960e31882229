//! `DELETE`, `UPDATE` and `TRUNCATE` on a frame: copy-on-write, one `RewriteCells` commit per
//! statement.
//!
//! ```text
//!  the version the statement read
//!    │ ledger pruning (partition values, statistics: the scans' own code)
//!    ▼
//!  candidate cells ── probe each: a matching row? ──────┬─ none: left as it is
//!    (DELETE: and a row that does not match?)           ├─ all (DELETE): removed, not rewritten
//!                                                       └─ some: rewritten without the rows
//!                                                          (UPDATE: with the new values),
//!                                                          counting them as it goes
//!    │ one RewriteCells commit against the version read: rebased over appends committed
//!    ▼ meanwhile (their rows are not touched); a concurrent rewrite of a cell is a conflict
//!  rows affected
//! ```
//!
//! The work runs when the plan executes (so `EXPLAIN` changes nothing), in the task context it
//! executes with — a chamber of the bees in Apiary's sessions — and streams: rewritten rows go
//! from DataFusion's scan straight to the cell writer, which conforms them to the frame schema
//! (NOT NULL and types, the same errors as INSERT) and cuts cells by partition, so an UPDATE of a
//! partition column moves the row. A statement that fails commits nothing and removes what it
//! wrote.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{AsArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{Column, not_impl_err};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, when};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use futures::{StreamExt, TryStreamExt};

use super::ActionExec;
use super::dml_guard::has_guard;
use super::frame_table::FrameTableProvider;
use crate::frame::Frame;
use crate::ledger::{Action, CellRecord, FrameSnapshot};

/// One row-level statement.
#[derive(Debug, Clone)]
pub(crate) enum RowChange {
    Delete {
        filters: Vec<Expr>,
    },
    Update {
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    },
    Truncate,
}

impl RowChange {
    fn operation(&self) -> &'static str {
        match self {
            RowChange::Delete { .. } => "DELETE",
            RowChange::Update { .. } => "UPDATE",
            RowChange::Truncate => "TRUNCATE",
        }
    }

    fn filters(&self) -> &[Expr] {
        match self {
            RowChange::Delete { filters } | RowChange::Update { filters, .. } => filters,
            RowChange::Truncate => &[],
        }
    }
}

/// DataFusion's schema for the result of DML: one row, the count of rows affected.
fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

/// The plan of `change` on `table`: an [`ActionExec`] that does the work when executed.
pub(crate) fn plan(
    table: &FrameTableProvider,
    state: &dyn Session,
    change: RowChange,
) -> Result<Arc<dyn ExecutionPlan>> {
    let operation = change.operation();
    if table.is_historical() {
        return not_impl_err!(
            "frame {} at version {} is a past version and cannot be changed ({operation})",
            table.name(),
            table.snapshot().version
        );
    }
    if !matches!(change, RowChange::Truncate) {
        // Without the guard a subquery or a constant WHERE would arrive here as "every row".
        let guarded = state
            .as_any()
            .downcast_ref::<SessionState>()
            .is_some_and(has_guard);
        if !guarded {
            return not_impl_err!(
                "{operation} on frame {} needs Apiary's statement guard in this session: call \
                 Apiary::register(&ctx) (or use Apiary::session()) rather than registering the \
                 hive's catalog by hand",
                table.name()
            );
        }
    }
    if let Some(f) = change.filters().iter().find(|f| f.is_volatile()) {
        return not_impl_err!(
            "{operation} on frame {} refused: its WHERE is volatile ({f}), so the rows it \
             matches could differ between reading and rewriting a cell",
            table.name()
        );
    }
    let name = format!("{operation} {}", table.name());
    let (table, change) = (table.clone(), Arc::new(change));
    Ok(Arc::new(ActionExec::new(
        name,
        count_schema(),
        Arc::new(move |ctx| {
            let (table, change) = (table.clone(), Arc::clone(&change));
            Box::pin(async move {
                let rows = run(&table, &change, ctx).await?;
                Ok(RecordBatch::try_new(
                    count_schema(),
                    vec![Arc::new(UInt64Array::from(vec![rows]))],
                )?)
            })
        }),
    )))
}

/// What the probes of a candidate cell found of the rows its statement matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matches {
    None,
    Some,
    All,
}

/// A cell that may hold matching rows.
struct Candidate {
    cell: Arc<CellRecord>,
    matches: Matches,
}

async fn run(table: &FrameTableProvider, change: &RowChange, ctx: Arc<TaskContext>) -> Result<u64> {
    let frame = table.frame();
    frame.admit().await?;
    let read = Arc::clone(table.snapshot());
    let state = SessionStateBuilder::new()
        .with_config(ctx.session_config().clone())
        .with_runtime_env(ctx.runtime_env())
        .build();
    let predicate = conjunction(change.filters().to_vec());
    let deletes = matches!(change, RowChange::Delete { .. } | RowChange::Truncate);

    let candidates: Vec<Candidate> = match &predicate {
        // No WHERE: every row of every cell.
        None => read
            .cells()
            .map(|c| Candidate {
                cell: Arc::clone(c),
                matches: Matches::All,
            })
            .collect(),
        Some(predicate) => {
            let cells = table.surviving_cells(&state, change.filters())?;
            let parallel = ctx.session_config().target_partitions().max(1);
            futures::stream::iter(cells)
                .map(|cell| {
                    let (state, ctx) = (&state, Arc::clone(&ctx));
                    async move {
                        let matches = probe(table, state, ctx, &cell, predicate, deletes).await?;
                        Ok::<_, DataFusionError>(Candidate { cell, matches })
                    }
                })
                .buffer_unordered(parallel)
                .try_filter(|c| futures::future::ready(c.matches != Matches::None))
                .try_collect()
                .await?
        }
    };
    if candidates.is_empty() {
        return Ok(0);
    }

    // A DELETE drops a cell whose rows all match without reading it; the rest is rewritten.
    let dropped = |c: &Candidate| deletes && c.matches == Matches::All;
    let dropped_rows: u64 = candidates
        .iter()
        .filter(|c| dropped(c))
        .map(|c| c.cell.rows)
        .sum();
    let rewrite: Vec<&Candidate> = candidates.iter().filter(|c| !dropped(c)).collect();
    let read_rows: u64 = rewrite.iter().map(|c| c.cell.rows).sum();
    // Rows the rewrite found matching (deleted, or updated).
    let mut matched_rows = 0;
    let added = if rewrite.is_empty() {
        vec![]
    } else {
        let paths: HashSet<&str> = rewrite.iter().map(|c| c.cell.path.as_str()).collect();
        let subset = table.over(read.with_cells_where(|c| paths.contains(c.path.as_str())));
        let source = provider_as_source(Arc::new(subset));
        let scan = LogicalPlanBuilder::scan(table.name(), source, None)?;
        let column = |name: &str| Expr::Column(Column::from_name(name));
        let mut exprs = read
            .schema
            .fields()
            .iter()
            .map(|f| {
                let name = f.name();
                let assigned = match change {
                    RowChange::Update { assignments, .. } => {
                        assignments.iter().find(|(c, _)| c == name)
                    }
                    _ => None,
                };
                let Some((_, new)) = assigned else {
                    return Ok(column(name));
                };
                Ok(match &predicate {
                    Some(p) => when(p.clone(), new.clone()).otherwise(column(name))?,
                    None => new.clone(),
                }
                .alias(name))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(p) = &predicate {
            exprs.push(p.clone().is_true().alias(MATCHED));
        }
        let plan = scan.project(exprs)?.build()?;
        let physical = state.create_physical_plan(&plan).await?;
        let matched = Arc::new(AtomicU64::new(0));
        let added = write_partitions(frame, &read, physical, &ctx, &matched, deletes).await?;
        matched_rows = match predicate {
            Some(_) => matched.load(Ordering::Relaxed),
            None => read_rows,
        };
        added
    };
    let affected = dropped_rows + matched_rows;

    // The rows written must be exactly the rows kept: anything else is a bug, never a commit.
    let expected = if deletes {
        read_rows - matched_rows
    } else {
        read_rows
    };
    let written: u64 = added.iter().map(|c| c.rows).sum();
    if written != expected || affected == 0 {
        crate::cell::remove_cells(frame.ledger().meadow(), frame.ledger().location(), &added).await;
        if written == expected {
            return Ok(0);
        }
        return Err(DataFusionError::Internal(format!(
            "{} on frame {}: {written} rows were written where {expected} were kept; nothing was committed",
            change.operation(),
            table.name()
        )));
    }

    let action = Action::RewriteCells {
        removed: candidates.iter().map(|c| c.cell.path.clone()).collect(),
        added,
    };
    let key = match change {
        RowChange::Update { .. } => "rows_updated",
        _ => "rows_deleted",
    };
    let metrics = BTreeMap::from([(key.to_string(), affected)]);
    frame
        .commit_action_with_metrics(&read, change.operation(), action, metrics)
        .await?;
    Ok(affected)
}

/// The column a rewrite carries to count (and, for a DELETE, drop) the rows its WHERE matches.
const MATCHED: &str = "__apiary_matched";

/// `stream` without its [`MATCHED`] column (when it has one), whose true values are added to
/// `matched` as the batches pass; with `drop_matching`, without those rows too.
fn count_matched(
    stream: SendableRecordBatchStream,
    matched: Arc<AtomicU64>,
    drop_matching: bool,
) -> Result<SendableRecordBatchStream> {
    let schema = stream.schema();
    let Ok(at) = schema.index_of(MATCHED) else {
        return Ok(stream);
    };
    let keep: Vec<usize> = (0..schema.fields().len()).filter(|i| *i != at).collect();
    let projected = Arc::new(schema.project(&keep)?);
    let batches = stream.map(move |batch| {
        let batch = batch?;
        let column = batch.column(at);
        let flags = column.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal(format!("{MATCHED} is {}", column.data_type()))
        })?;
        matched.fetch_add(flags.true_count() as u64, Ordering::Relaxed);
        let kept = batch.project(&keep)?;
        if !drop_matching {
            return Ok(kept);
        }
        Ok(filter_record_batch(&kept, &not(flags)?)?)
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(projected, batches)))
}

/// Writes each partition of `plan` through a cell writer of its own, all at once: encoding
/// Parquet is most of a rewrite's work, and one writer would do it on one core. The writers run
/// as tasks aborted with the statement; if one fails, what the others wrote is removed.
async fn write_partitions(
    frame: &Frame,
    read: &FrameSnapshot,
    plan: Arc<dyn ExecutionPlan>,
    ctx: &Arc<TaskContext>,
    matched: &Arc<AtomicU64>,
    drop_matching: bool,
) -> Result<Vec<Arc<CellRecord>>> {
    let partitions = plan.properties().output_partitioning().partition_count();
    let mut writers = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let stream = count_matched(
            plan.execute(i, Arc::clone(ctx))?,
            Arc::clone(matched),
            drop_matching,
        )?;
        let writer = frame.cell_writer(read)?;
        writers.push(SpawnedTask::spawn(writer.write_record_batch_stream(stream)));
    }
    let mut added = vec![];
    let mut failed: Option<DataFusionError> = None;
    for writer in writers {
        match writer.join_unwind().await {
            Ok(Ok(cells)) => added.extend(cells),
            Ok(Err(e)) => {
                failed.get_or_insert(e.into());
            }
            Err(e) => {
                failed.get_or_insert(DataFusionError::External(Box::new(e)));
            }
        }
    }
    if let Some(e) = failed {
        crate::cell::remove_cells(frame.ledger().meadow(), frame.ledger().location(), &added).await;
        return Err(e);
    }
    Ok(added)
}

/// Whether `cell` holds rows `predicate` matches: none, some, or (asked `whole`) all. Each
/// answer is a scan that stops at its first row, with its filter pushed into DataFusion's
/// Parquet scan (row groups and pages that cannot hold such a row are skipped): one for a
/// matching row, and with `whole` one for a row that does not match.
async fn probe(
    table: &FrameTableProvider,
    state: &SessionState,
    ctx: Arc<TaskContext>,
    cell: &Arc<CellRecord>,
    predicate: &Expr,
    whole: bool,
) -> Result<Matches> {
    if !any_row(table, state, Arc::clone(&ctx), cell, predicate.clone()).await? {
        return Ok(Matches::None);
    }
    if whole && !any_row(table, state, ctx, cell, predicate.clone().is_not_true()).await? {
        return Ok(Matches::All);
    }
    Ok(Matches::Some)
}

/// Whether a row of `cell` passes `filter`.
async fn any_row(
    table: &FrameTableProvider,
    state: &SessionState,
    ctx: Arc<TaskContext>,
    cell: &Arc<CellRecord>,
    filter: Expr,
) -> Result<bool> {
    let one = table.over(table.snapshot().with_cells_where(|c| c.path == cell.path));
    let columns: Vec<Expr> = filter
        .column_refs()
        .into_iter()
        .map(|c| Expr::Column(c.clone()))
        .collect();
    let mut plan = LogicalPlanBuilder::scan(table.name(), provider_as_source(Arc::new(one)), None)?
        .filter(filter)?;
    if !columns.is_empty() {
        plan = plan.project(columns)?;
    }
    let physical = state
        .create_physical_plan(&plan.limit(0, Some(1))?.build()?)
        .await?;
    let mut stream = execute_stream(physical, ctx)?;
    while let Some(batch) = stream.next().await {
        if batch?.num_rows() > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}
