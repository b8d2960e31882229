//! `INSERT INTO` / `INSERT OVERWRITE`: one statement, one atomic commit.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};

use crate::frame::Frame;
use crate::ledger::FrameSnapshot;

/// Writes the statement's rows as cells, then commits them in one ledger entry: `AddCells` for
/// `INSERT INTO`, `RewriteCells` of every cell of the version the statement read for
/// `INSERT OVERWRITE`.
#[derive(Debug)]
pub struct FrameSink {
    frame: Frame,
    read: Arc<FrameSnapshot>,
    op: InsertOp,
    metrics: ExecutionPlanMetricsSet,
}

impl FrameSink {
    pub fn new(frame: Frame, read: Arc<FrameSnapshot>, op: InsertOp) -> Self {
        Self {
            frame,
            read,
            op,
            metrics: ExecutionPlanMetricsSet::new(),
        }
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
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        self.frame.admit().await?;
        let replace = self.op == InsertOp::Overwrite;
        // An append rebases onto whatever is newest; an overwrite replaces what it read.
        let read = if replace {
            self.read.clone()
        } else {
            self.frame.ledger().latest()
        };
        let cells = self
            .frame
            .cell_writer(&read)?
            .write_record_batch_stream(data)
            .await?;
        let rows: u64 = cells.iter().map(|c| c.rows).sum();
        let operation = if replace {
            "INSERT OVERWRITE"
        } else {
            "INSERT"
        };
        let info = self
            .frame
            .commit_cells(&read, operation, cells, replace)
            .await?;
        MetricBuilder::new(&self.metrics)
            .global_counter("cells_written")
            .add(info.cells_added);
        MetricBuilder::new(&self.metrics)
            .global_counter("ledger_version")
            .add(info.version as usize);
        Ok(rows)
    }
}
