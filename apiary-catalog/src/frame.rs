//! A frame handle: its ledger plus the writes that end in one commit each.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use futures::Stream;

use crate::cell::{CellWriter, WriteOptions};
use crate::error::{Error, Result};
use crate::ledger::{Action, CellRecord, CommitInfo, FrameSnapshot, Ledger};

/// Decides whether a write may start now: the hook through which the node's load (the bees'
/// colony temperature) throttles or refuses writes. A refusal is a retryable error.
#[async_trait]
pub trait WriteAdmission: Send + Sync + Debug {
    async fn admit(&self, frame: &str) -> Result<()>;
}

/// One frame: read its snapshots, append or overwrite with one atomic commit per call.
#[derive(Debug, Clone)]
pub struct Frame {
    ledger: Ledger,
    write: WriteOptions,
    admission: Option<Arc<dyn WriteAdmission>>,
}

impl Frame {
    pub fn new(ledger: Ledger, write: WriteOptions) -> Self {
        Self {
            ledger,
            write,
            admission: None,
        }
    }

    /// Writes of this frame first ask `admission`.
    pub fn with_admission(mut self, admission: Option<Arc<dyn WriteAdmission>>) -> Self {
        self.admission = admission;
        self
    }

    /// Waits for (or is refused) permission to write, when an admission is installed.
    pub async fn admit(&self) -> Result<()> {
        match &self.admission {
            Some(a) => a.admit(self.ledger.name()).await,
            None => Ok(()),
        }
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
        self.admit().await?;
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
        self.admit().await?;
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
                added: cells,
            }
        } else {
            Action::AddCells { cells }
        };
        self.commit_action(read, operation, action).await
    }

    /// Commits `action`, whose added cells are already written; if the commit fails they are
    /// removed again.
    pub async fn commit_action(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        action: Action,
    ) -> Result<CommitInfo> {
        let added = action.added().to_vec();
        let outcome = self.ledger.commit(read, operation, action).await;
        if outcome.is_err() {
            crate::cell::remove_cells(self.ledger.meadow(), self.ledger.location(), &added).await;
        }
        outcome
    }
}
