//! Plain `EXPLAIN` that tells what only Apiary knows: for each frame scan, the ledger version
//! read, the cells and bytes before and after pruning, and whether the swarm runs it (over how
//! many tasks and nodes) or why not.
//!
//! The plan itself is not changed for it: the frame scan stays a bare `DataSourceExec` over a
//! `ParquetSource`, which the swarm's scan matcher and file-scan splitting rely on. Planning
//! already knows these figures and writes them into the scan's own metrics (the frame scan its
//! pruning, `SwarmRule` its decision); Apiary's doors (`Apiary::sql`, `execute_logical_plan`,
//! hence the shell) plan the explained statement once more, read them, and add one row,
//! `apiary_scans`, to DataFusion's `EXPLAIN` output. A scan that pruned every cell plans an
//! `EmptyExec`, which has no metrics: it notes itself in an
//! [`EmptyScans`](apiary_catalog::EmptyScans) the door puts in the session for that
//! planning.

use std::sync::Arc;

use apiary_catalog::{EmptyScan, SCAN_FRAME_LABEL, SCAN_VERSION};
use apiary_swarm::{SWARM_LOCAL, SWARM_NODES_LABEL, SWARM_REASON_LABEL, SWARM_TASKS};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{Metric, MetricValue};

/// The `plan_type` of the row Apiary adds.
pub const APIARY_SCANS: &str = "apiary_scans";

/// One line per frame scan of `plan`, in plan order.
pub fn scan_notes(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut out = vec![];
    collect(plan, &mut out);
    out
}

fn collect(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if plan.downcast_ref::<DataSourceExec>().is_some()
        && let Some(metrics) = plan.metrics()
        && let Some(note) = note(&metrics.iter().map(|m| m.as_ref()).collect::<Vec<_>>())
    {
        out.push(note);
    }
    for child in plan.children() {
        collect(child, out);
    }
}

/// The line of a frame scan that pruned every cell (planned as an `EmptyExec`, which carries
/// no metrics; the scan noted itself in the session's [`apiary_catalog::EmptyScans`]).
pub fn empty_scan_note(scan: &EmptyScan) -> String {
    format!(
        "{} at version {}: {} cells ({}); pruned {} by partition, {} by statistics; 0 to scan \
         (0 B)",
        scan.frame,
        scan.version,
        scan.counts.total,
        size(scan.bytes_total as usize),
        scan.counts.by_partition,
        scan.counts.by_statistics,
    )
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.labels()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

fn note(metrics: &[&Metric]) -> Option<String> {
    let mut frame = None;
    let count = |name: &str| -> usize {
        metrics
            .iter()
            .filter(|m| m.value().name() == name)
            .map(|m| m.value().as_usize())
            .sum()
    };
    for m in metrics {
        if let MetricValue::Gauge { name, gauge } = m.value()
            && name == SCAN_VERSION
        {
            frame = Some((label(m, SCAN_FRAME_LABEL)?.to_string(), gauge.value()));
        }
    }
    let (frame, version) = frame?;
    let mut line = format!(
        "{frame} at version {version}: {} cells ({}); pruned {} by partition, {} by statistics; \
         {} to scan ({})",
        count("cells_total"),
        size(count("cell_bytes_total")),
        count("cells_pruned_by_partition"),
        count("cells_pruned_by_statistics"),
        count("cells_scanned"),
        size(count("cell_bytes_scanned")),
    );
    let distributed = metrics.iter().find(|m| m.value().name() == SWARM_TASKS);
    let mut reasons: Vec<&str> = metrics
        .iter()
        .filter(|m| m.value().name() == SWARM_LOCAL)
        .filter_map(|m| label(m, SWARM_REASON_LABEL))
        .collect();
    reasons.dedup();
    if let Some(d) = distributed {
        let nodes = label(d, SWARM_NODES_LABEL).unwrap_or("?");
        line.push_str(&format!(
            "; swarm: distributed over {} tasks, {nodes} nodes alive",
            d.value().as_usize()
        ));
    } else if !reasons.is_empty() {
        line.push_str(&format!("; swarm: local, {}", reasons.join("; ")));
    }
    Some(line)
}

/// `512 B`, `3.2 KiB`, `41.0 MiB`, `1.2 GiB`.
fn size(bytes: usize) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

/// DataFusion's `EXPLAIN` output (`plan_type`, `plan`) with the `apiary_scans` row added.
pub fn with_notes(
    schema: SchemaRef,
    mut batches: Vec<RecordBatch>,
    notes: &[String],
) -> Result<Vec<RecordBatch>> {
    if notes.is_empty() || schema.fields().len() != 2 {
        return Ok(batches);
    }
    batches.push(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![APIARY_SCANS])),
            Arc::new(StringArray::from(vec![notes.join("\n")])),
        ],
    )?);
    Ok(batches)
}
