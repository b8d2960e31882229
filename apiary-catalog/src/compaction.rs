//! Compaction: the leafcutter's second half. Many small cells of a partition (left by small
//! writes) are rewritten into cells of the target size, in one `RewriteCells` commit.
//!
//! A cell is *small* when it holds less than half the target size. In every partition with at
//! least two small cells, all of them are read (through DataFusion's Parquet scan) and written
//! again by the cell writer, which closes cells at the target. Larger cells are left alone.
//! Appends that commit meanwhile are kept; a concurrent rewrite of the same cells makes one of
//! the two fail with a conflict error.
//!
//! A frame with a sort order ([`crate::clustering`]) keeps it. Its small cells are merged only
//! with their neighbours in the order of the first key (runs that no larger cell interrupts),
//! each run sorted on its own (in the query's budget, spilling) and written as cells that
//! record the order: they overlap neither each other nor the cells left alone, so a clustered
//! frame stays declared to DataFusion. [`Compaction::Recluster`] rewrites every cell of each
//! partition whose cells are not all sorted or overlap — the way to cluster cells written
//! before the order or by row changes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::sorts::sort::SortExec;

use crate::cell::partition::partition_label;
use crate::clustering::SortOrder;
use crate::error::Result;
use crate::frame::Frame;
use crate::ledger::{Action, CellRecord, FrameSnapshot};
use crate::provider::FrameTableProvider;

/// What one partition's compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactedPartition {
    /// `col=value/…`, empty for an unpartitioned frame.
    pub partition: String,
    /// Cells rewritten.
    pub cells_before: usize,
    /// Cells written in their place.
    pub cells_after: usize,
    /// Rows rewritten.
    pub rows: u64,
}

/// What a compaction did; `version` is `None` when there was nothing to compact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// The frame, `hive.box.frame`.
    pub frame: String,
    /// The version its commit made.
    pub version: Option<u64>,
    /// The partitions compacted.
    pub partitions: Vec<CompactedPartition>,
}

/// Which cells a compaction rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compaction {
    /// The small cells of each partition that has at least two.
    #[default]
    SmallCells,
    /// Every cell of each partition whose cells are not all in the frame's sort order, or whose
    /// key ranges overlap (a frame without a sort order: as [`Compaction::SmallCells`]).
    Recluster,
}

/// Compacts the cells `how` chooses of every partition of `frame` (newest version) in one
/// commit.
///
/// The cells are read in `ctx` — the calling query's task context, so its memory budget (a
/// chamber of the bees, in Apiary's sessions) bounds the work.
pub async fn compact(
    frame: &Frame,
    ctx: Arc<TaskContext>,
    how: Compaction,
) -> Result<CompactionReport> {
    frame.admit().await?;
    let read = frame.ledger().refresh().await?;
    let order = SortOrder::of(&read.properties)?;
    let target = frame.write_options().leafcutter.target_cell_bytes();
    let mut partitions: BTreeMap<String, Vec<Arc<CellRecord>>> = BTreeMap::new();
    for c in read.cells() {
        partitions
            .entry(partition_label(&read.partition_by, &c.partition))
            .or_default()
            .push(Arc::clone(c));
    }
    // Each partition's runs: the cells rewritten together into cells of the target size.
    let mut groups: BTreeMap<String, Vec<Vec<Arc<CellRecord>>>> = BTreeMap::new();
    for (partition, cells) in partitions {
        let runs = match (how, &order) {
            (Compaction::Recluster, Some(order)) if !clustered(&cells, order) => vec![cells],
            (Compaction::Recluster, Some(_)) => vec![],
            (_, Some(order)) => neighbour_runs(cells, order, target),
            (_, None) => vec![cells.into_iter().filter(|c| c.size < target / 2).collect()],
        };
        // Reclustering rewrites even one cell (it comes out sorted, and marked so); else a run
        // is worth rewriting from two cells.
        let least = if how == Compaction::Recluster && order.is_some() {
            1
        } else {
            2
        };
        let runs: Vec<_> = runs.into_iter().filter(|run| run.len() >= least).collect();
        if !runs.is_empty() {
            groups.insert(partition, runs);
        }
    }
    let mut report = CompactionReport {
        frame: frame.name().to_string(),
        version: None,
        partitions: vec![],
    };
    if groups.is_empty() {
        return Ok(report);
    }
    let state = SessionStateBuilder::new()
        .with_config(ctx.session_config().clone())
        .with_runtime_env(ctx.runtime_env())
        .build();
    // A clustered frame's runs are written one by one, each sorted, so that no written cell
    // spans two runs (and the cells between them); an unclustered frame's in one stream.
    let writes: Vec<Vec<&Arc<CellRecord>>> = if order.is_some() {
        groups
            .values()
            .flatten()
            .map(|run| run.iter().collect())
            .collect()
    } else {
        vec![groups.values().flatten().flatten().collect()]
    };
    let mut added = vec![];
    for cells in writes {
        let chosen: HashSet<&str> = cells.iter().map(|c| c.path.as_str()).collect();
        added.extend(rewrite(frame, &read, &state, &ctx, &order, &chosen).await?);
    }
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    for c in &added {
        *after
            .entry(partition_label(&read.partition_by, &c.partition))
            .or_default() += 1;
    }
    let removed: Vec<String> = groups
        .values()
        .flatten()
        .flatten()
        .map(|c| c.path.clone())
        .collect();
    let action = Action::RewriteCells { removed, added };
    let info = frame.commit_action(&read, "COMPACT", action).await?;
    report.version = Some(info.version);
    report.partitions = groups
        .into_iter()
        .map(|(partition, runs)| CompactedPartition {
            cells_after: after.get(&partition).copied().unwrap_or(0),
            cells_before: runs.iter().map(Vec::len).sum(),
            rows: runs.iter().flatten().map(|c| c.rows).sum(),
            partition,
        })
        .collect();
    frame
        .ledger()
        .meadow()
        .sight()
        .count(crate::sight::COMPACTIONS, 1);
    Ok(report)
}

/// Reads the cells of `read` named in `chosen` through the same scan queries use and writes
/// them again as new cells, sorted by `order` if the frame has one.
async fn rewrite(
    frame: &Frame,
    read: &Arc<FrameSnapshot>,
    state: &SessionState,
    ctx: &Arc<TaskContext>,
    order: &Option<SortOrder>,
    chosen: &HashSet<&str>,
) -> Result<Vec<Arc<CellRecord>>> {
    let subset = Arc::new(read.with_cells_where(|c| chosen.contains(c.path.as_str())));
    let table = FrameTableProvider::at_version(frame.clone(), subset);
    let mut plan = table.scan(state, None, &[], None).await?;
    let mut writer = frame.cell_writer(read)?;
    if let Some(order) = order
        && let Some(ordering) = order.lex_ordering(&plan.schema())
    {
        plan = Arc::new(SortExec::new(ordering, plan));
        writer = writer.with_sorted_input(order.clone());
    }
    let stream = execute_stream(plan, Arc::clone(ctx))?;
    writer.write_record_batch_stream(stream).await
}

/// One partition's small cells of a clustered frame, in runs of neighbours: the cells in the
/// order of their first key's range, a run cut wherever a cell of at least half the target
/// lies between. Sorted together, a run overlaps no cell left alone. Cells with no range of the
/// key (no statistics) make one run of their own.
fn neighbour_runs(
    cells: Vec<Arc<CellRecord>>,
    order: &SortOrder,
    target: u64,
) -> Vec<Vec<Arc<CellRecord>>> {
    let key = &order.keys()[0].column;
    let range = |c: &CellRecord| {
        let s = c.stats.get(key)?;
        Some((s.min.clone()?, s.max.clone()?))
    };
    let (mut ranged, unranged): (Vec<_>, Vec<_>) = cells
        .into_iter()
        .map(|c| (range(&c), c))
        .partition(|(r, _)| r.is_some());
    ranged.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let small = |c: &CellRecord| c.size < target / 2;
    let mut runs = vec![vec![]];
    for (_, c) in ranged {
        match runs.last_mut() {
            Some(run) if small(&c) => run.push(c),
            Some(run) if !run.is_empty() => runs.push(vec![]),
            _ => {}
        }
    }
    runs.push(
        unranged
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| small(c))
            .collect(),
    );
    runs
}

/// Whether `cells` (one partition's) are all in `order` and their ranges of its first key do
/// not overlap (touching ends are fine).
fn clustered(cells: &[Arc<CellRecord>], order: &SortOrder) -> bool {
    if cells.iter().any(|c| c.sorted_by.as_ref() != Some(order)) {
        return false;
    }
    let key = &order.keys()[0].column;
    let mut ranges = vec![];
    for c in cells {
        match c.stats.get(key) {
            Some(s) if s.null_count == Some(0) => match (&s.min, &s.max) {
                (Some(min), Some(max)) => ranges.push((min.clone(), max.clone())),
                _ => return false,
            },
            _ => return false,
        }
    }
    ranges.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    ranges.windows(2).all(|w| w[0].1 <= w[1].0)
}
