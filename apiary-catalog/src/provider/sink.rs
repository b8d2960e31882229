//! `INSERT INTO` / `INSERT OVERWRITE`: one statement, one atomic commit.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::datasource::sink::DataSink;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};

use crate::clustering::SortOrder;
use crate::frame::Frame;
use crate::ledger::{Action, FrameSnapshot};
use crate::options::SessionOptions;

/// Whether the session asked `INSERT OVERWRITE` to replace only the partitions it writes.
fn dynamic_overwrite(context: &TaskContext) -> Result<bool> {
    let options = context.session_config().options();
    let mode = options
        .extensions
        .get::<SessionOptions>()
        .map_or("static", |o| o.overwrite.as_str());
    match mode {
        "static" => Ok(false),
        "dynamic" => Ok(true),
        other => Err(DataFusionError::Configuration(format!(
            "apiary.overwrite must be 'static' or 'dynamic', not '{other}'"
        ))),
    }
}

/// Writes the statement's rows as cells, then commits them in one ledger entry: `AddCells` for
/// `INSERT INTO`, `RewriteCells` of every cell of the version the statement read for
/// `INSERT OVERWRITE`.
#[derive(Debug)]
pub struct FrameSink {
    frame: Frame,
    read: Arc<FrameSnapshot>,
    op: InsertOp,
    metrics: ExecutionPlanMetricsSet,
    /// The order its input arrives in (the frame's sort order, which the plan enforces).
    sorted_by: Option<SortOrder>,
}

impl FrameSink {
    pub fn new(frame: Frame, read: Arc<FrameSnapshot>, op: InsertOp) -> Self {
        Self {
            frame,
            read,
            op,
            metrics: ExecutionPlanMetricsSet::new(),
            sorted_by: None,
        }
    }

    /// Input that arrives in `order` (the `DataSinkExec` above requires it): its cells record it.
    pub fn with_sorted_input(mut self, order: Option<SortOrder>) -> Self {
        self.sorted_by = order;
        self
    }
}

impl DisplayAs for FrameSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FrameSink: frame={}, op={}", self.frame.name(), self.op)
    }
}

#[async_trait]
impl DataSink for FrameSink {
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn schema(&self) -> &SchemaRef {
        &self.read.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        self.frame.admit().await?;
        let replace = self.op == InsertOp::Overwrite;
        let dynamic = replace && dynamic_overwrite(context)?;
        // An append rebases onto whatever is newest; an overwrite replaces what it read.
        let read = if replace {
            Arc::clone(&self.read)
        } else {
            self.frame.ledger().latest()
        };
        let mut writer = self.frame.cell_writer(&read)?;
        if let Some(order) = &self.sorted_by {
            writer = writer.with_sorted_input(order.clone());
        }
        let cells = writer.write_record_batch_stream(data).await?;
        let rows: u64 = cells.iter().map(|c| c.rows).sum();
        let operation = if replace {
            "INSERT OVERWRITE"
        } else {
            "INSERT"
        };
        let info = if dynamic {
            // Only the partitions the rows went to: the cells of `read` with those values.
            let written: Vec<&Vec<ScalarValue>> = cells.iter().map(|c| &c.partition).collect();
            let removed = read
                .cells()
                .filter(|c| written.contains(&&c.partition))
                .map(|c| c.path.clone())
                .collect();
            let action = Action::RewriteCells {
                removed,
                added: cells,
            };
            self.frame.commit_action(&read, operation, action).await?
        } else {
            self.frame
                .commit_cells(&read, operation, cells, replace)
                .await?
        };
        MetricBuilder::new(&self.metrics)
            .global_counter("cells_written")
            .add(info.cells_added);
        MetricBuilder::new(&self.metrics)
            .global_counter("ledger_version")
            .add(info.version as usize);
        Ok(rows)
    }
}
