//! A frame handle: its ledger plus the writes that end in one commit each.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::Stream;

use crate::cell::conform::keeps_stored_values;
use crate::cell::{CellWriter, WriteOptions};
use crate::clustering::SortOrder;
use crate::column_ids;
use crate::error::{CatalogError, Result};
use crate::ledger::{Action, CellRecord, CommitInfo, FrameSnapshot, Ledger};
use crate::registry::Registry;

/// Decides whether a write may start now: the hook through which the node's load (the bees'
/// colony temperature) throttles or refuses writes. A refusal is a retryable error.
#[async_trait]
pub trait WriteAdmission: Send + Sync + Debug {
    /// Returns when a write to `frame` (`hive.box.frame`) may start, perhaps after a wait, or
    /// refuses it ([`CatalogError::Backpressure`]).
    async fn admit(&self, frame: &str) -> Result<()>;
}

/// One frame: read its snapshots, append or overwrite with one atomic commit per call.
#[derive(Debug, Clone)]
pub struct Frame {
    ledger: Ledger,
    write: WriteOptions,
    admission: Option<Arc<dyn WriteAdmission>>,
    /// The registry and name under which this frame was resolved: commits check that the name
    /// still belongs to this frame (another process may have dropped or replaced it).
    name: Option<(Registry, [String; 3])>,
}

impl Frame {
    /// The frame of `ledger`, writing cells with `write`, without admission or name check.
    pub fn new(ledger: Ledger, write: WriteOptions) -> Self {
        Self {
            ledger,
            write,
            admission: None,
            name: None,
        }
    }

    /// Commits of this frame check, before and after, that `hive.box.frame` in `registry` is
    /// still this frame: a write never reports success into a frame dropped or replaced
    /// meanwhile.
    pub fn with_name_check(
        mut self,
        registry: Registry,
        hive: &str,
        box_: &str,
        frame: &str,
    ) -> Self {
        self.name = Some((registry, [hive.into(), box_.into(), frame.into()]));
        self
    }

    /// Whether the name still belongs to this frame (`committed`: whether the write landed).
    async fn check_name(&self, committed: bool) -> Result<()> {
        let Some((registry, [hive, box_, frame])) = &self.name else {
            return Ok(());
        };
        let state = registry.refresh().await?;
        let id = &self.ledger.latest().frame_id;
        let now = match state.frame(hive, box_, frame) {
            Ok(r) if r.id == *id => return Ok(()),
            Ok(r) => format!("names frame id {}", r.id),
            Err(_) => "is free".to_string(),
        };
        Err(CatalogError::FrameReplaced {
            frame: self.ledger.name().to_string(),
            id: id.clone(),
            now,
            committed,
        })
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

    /// The frame's ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// `hive.box.frame`.
    pub fn name(&self) -> &str {
        self.ledger.name()
    }

    /// How this frame's writes cut and compress cells.
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
        CatalogError: From<E>,
    {
        self.write(batches, operation, false).await
    }

    /// [`Frame::append`] (or, with `replace`, [`Frame::overwrite`]) of a frame that may have a
    /// sort order ([`SortOrder`](crate::SortOrder)): the rows are sorted by it first, in `ctx` — whose
    /// memory pool bounds the sort and whose disk manager takes its spills (a chamber of the
    /// bees) — and the cells record it. Without an order (or when `batches` lack its first key)
    /// the rows are written as they come.
    pub async fn write_sorted(
        &self,
        batches: SendableRecordBatchStream,
        ctx: Arc<TaskContext>,
        operation: &str,
        replace: bool,
    ) -> Result<CommitInfo> {
        self.admit().await?;
        let read = self.ledger.refresh().await?;
        let mut writer = self.cell_writer(&read)?;
        let schema = batches.schema();
        let order = SortOrder::of(&read.properties)?;
        let batches = match order
            .as_ref()
            .and_then(|o| Some((o, o.lex_ordering(&schema)?)))
        {
            Some((order, ordering)) => {
                let source = StreamingTableExec::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(OnceStream::new(batches))],
                    None,
                    vec![],
                    false,
                    None,
                )?;
                writer = writer.with_sorted_input(order.clone());
                SortExec::new(ordering, Arc::new(source)).execute(0, ctx)?
            }
            None => batches,
        };
        let cells = writer.write_record_batch_stream(batches).await?;
        self.commit_cells(&read, operation, cells, replace).await
    }

    /// Replaces all cells with the batches of `batches` in one commit (`RewriteCells`).
    pub async fn overwrite<S, E>(&self, batches: S, operation: &str) -> Result<CommitInfo>
    where
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Unpin,
        CatalogError: From<E>,
    {
        self.write(batches, operation, true).await
    }

    /// Writes `batches` into cells and commits them, added to the frame's or (`replace`) in
    /// place of them.
    async fn write<S, E>(&self, batches: S, operation: &str, replace: bool) -> Result<CommitInfo>
    where
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Unpin,
        CatalogError: From<E>,
    {
        self.admit().await?;
        let read = self.ledger.refresh().await?;
        let cells = self.cell_writer(&read)?.write_stream(batches).await?;
        self.commit_cells(&read, operation, cells, replace).await
    }

    /// Evolves the frame so that data of schema `incoming` fits it, as delta-rs's
    /// `schema_mode="merge"`: columns the frame lacks are added (nullable: the rows already
    /// written have no value), and a column whose type `incoming` widens while keeping every
    /// stored value (int32 → int64, float → double, …) is widened, in one `set_schema` commit
    /// of its own (`None` when nothing changes). Narrower types, missing columns and mismatches
    /// are left to the write, which casts or refuses them as always.
    pub async fn merge_schema(
        &self,
        incoming: &Schema,
        operation: &str,
    ) -> Result<Option<CommitInfo>> {
        let read = self.ledger.refresh().await?;
        let mut fields = column_ids::owned_fields(&read.schema);
        for f in incoming.fields() {
            match fields.iter_mut().find(|t| t.name() == f.name()) {
                None => {
                    if f.data_type() == &DataType::Null {
                        return Err(CatalogError::InvalidSchema(format!(
                            "column {} has no type to add to frame {} (every value is NULL): \
                             give it one, e.g. CAST(NULL AS BIGINT)",
                            f.name(),
                            self.ledger.name()
                        )));
                    }
                    let field = f.as_ref().clone().with_nullable(true);
                    fields.push(column_ids::with_next_id(&fields, field));
                }
                Some(t)
                    if !read.partition_by.contains(t.name())
                        && keeps_stored_values(t.data_type(), f.data_type()) =>
                {
                    *t = t.clone().with_data_type(f.data_type().clone());
                }
                Some(_) => {}
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            read.schema.metadata().clone(),
        ));
        if schema == read.schema {
            return Ok(None);
        }
        self.admit().await?;
        let action = Action::SetSchema { schema };
        Ok(Some(self.commit_action(&read, operation, action).await?))
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

    /// Commits `action`, whose added cells are already written; if the commit provably did not
    /// land they are removed again. When its outcome is unknown ([`CatalogError::CommitUnknown`]) they
    /// stay: the entry may name them, and cleansing reclaims them after retention if not.
    pub async fn commit_action(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        action: Action,
    ) -> Result<CommitInfo> {
        self.commit_action_with_metrics(read, operation, action, BTreeMap::new())
            .await
    }

    /// [`Frame::commit_action`], recording what the operation did (`rows_deleted`, …).
    pub async fn commit_action_with_metrics(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        action: Action,
        metrics: BTreeMap<String, u64>,
    ) -> Result<CommitInfo> {
        let added = action.added().to_vec();
        let outcome = match self.check_name(false).await {
            Ok(()) => {
                self.ledger
                    .commit_with_metrics(read, operation, action, metrics)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome
            && e.proves_nothing_committed()
        {
            crate::cell::remove_cells(self.ledger.meadow(), self.ledger.location(), &added).await;
        }
        let info = outcome?;
        // A drop that raced the commit: the rows are in the dropped frame, not under the name.
        self.check_name(true).await?;
        Ok(info)
    }
}

/// A stream offered once as the one partition of a plan (the rows of a write to sort).
struct OnceStream {
    schema: SchemaRef,
    stream: parking_lot::Mutex<Option<SendableRecordBatchStream>>,
}

impl OnceStream {
    fn new(stream: SendableRecordBatchStream) -> Self {
        Self {
            schema: stream.schema(),
            stream: parking_lot::Mutex::new(Some(stream)),
        }
    }
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnceStream")
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().take();
        match taken {
            Some(stream) => stream,
            None => Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    Arc::clone(&self.schema),
                    futures::stream::once(async {
                        Err(datafusion::error::DataFusionError::Internal(
                            "the rows of a write can be read once".into(),
                        ))
                    }),
                ),
            ),
        }
    }
}
