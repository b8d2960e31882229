//! A frame handle: its ledger plus the writes that end in one commit each.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::Stream;

use crate::cell::{CellWriter, WriteOptions};
use crate::error::{Error, Result};
use crate::ledger::{Action, CellRecord, CommitInfo, FrameSnapshot, Ledger};

/// One frame: read its snapshots, append or overwrite with one atomic commit per call.
#[derive(Debug, Clone)]
pub struct Frame {
    ledger: Ledger,
    write: WriteOptions,
}

impl Frame {
    pub fn new(ledger: Ledger, write: WriteOptions) -> Self {
        Self { ledger, write }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn name(&self) -> &str {
        self.ledger.name()
    }

    pub fn write_options(&self) -> &WriteOptions {
        &self.write
    }

    /// A writer for cells of the frame as of `snapshot`.
    pub fn cell_writer(&self, snapshot: &FrameSnapshot) -> Result<CellWriter> {
        CellWriter::new(
            self.ledger.meadow().clone(),
            self.ledger.location(),
            self.ledger.name(),
            snapshot,
            self.write,
        )
    }

    /// Appends every batch of `batches` in one commit (`AddCells`).
    pub async fn append<S, E>(&self, batches: S, operation: &str) -> Result<CommitInfo>
    where
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Unpin,
        Error: From<E>,
    {
        let read = self.ledger.refresh().await?;
        let cells = self.cell_writer(&read)?.write_stream(batches).await?;
        self.commit_cells(&read, operation, cells, false).await
    }

    /// Replaces all cells with the batches of `batches` in one commit (`RewriteCells`).
    pub async fn overwrite<S, E>(&self, batches: S, operation: &str) -> Result<CommitInfo>
    where
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Unpin,
        Error: From<E>,
    {
        let read = self.ledger.refresh().await?;
        let cells = self.cell_writer(&read)?.write_stream(batches).await?;
        self.commit_cells(&read, operation, cells, true).await
    }

    /// Commits cells already written: appended, or replacing every cell of `read`.
    /// If the commit fails the cells are removed again.
    pub async fn commit_cells(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        cells: Vec<Arc<CellRecord>>,
        replace_all: bool,
    ) -> Result<CommitInfo> {
        let action = if replace_all {
            Action::RewriteCells {
                removed: read.cells().map(|c| c.path.clone()).collect(),
                added: cells.clone(),
            }
        } else {
            Action::AddCells {
                cells: cells.clone(),
            }
        };
        match self.ledger.commit(read, operation, action).await {
            Ok(info) => Ok(info),
            Err(e) => {
                for c in &cells {
                    let rel = format!("{}/{}", self.ledger.location(), c.path);
                    if let Err(d) = self.ledger.meadow().delete(&rel).await {
                        log::warn!("could not remove uncommitted cell {rel}: {d}");
                    }
                }
                Err(e)
            }
        }
    }
}
