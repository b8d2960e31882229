//! A frame as a DataFusion table, pinned to one ledger version (snapshot isolation).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchemaRef, not_impl_err};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::dml::{InsertOp, MergeIntoClause};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::merge;
use super::own_runtime::OwnRuntimeExec;
use super::pruning::is_partition_filter;
use super::row_change::{self, RowChange};
use super::scan::{CELL_COLUMN, PruneCounts, ScanLayout, ScanRequest, plan_scan, surviving_cells};
use super::sink::FrameSink;
use crate::frame::Frame;
use crate::ledger::{CellRecord, FrameSnapshot};

/// One frame at one ledger version. A query plans and runs against exactly this version.
#[derive(Debug, Clone)]
pub struct FrameTableProvider {
    frame: Frame,
    snapshot: Arc<FrameSnapshot>,
    layout: ScanLayout,
    /// What DataFusion sees: the frame's columns, and the cell column when asked for.
    schema: SchemaRef,
    /// A past version (time travel): read-only.
    historical: bool,
    /// Scans execute with this runtime rather than the task's ([`OwnRuntimeExec`]).
    scan_runtime: Option<Arc<RuntimeEnv>>,
}

impl FrameTableProvider {
    /// The frame as of `snapshot`, its newest version: `INSERT` and the row-level changes write
    /// to it.
    pub fn new(frame: Frame, snapshot: Arc<FrameSnapshot>) -> Self {
        Self::with_history(frame, snapshot, false)
    }

    /// The frame as it was at `snapshot`: a past version (time travel) or a version's subset of
    /// cells (a rewrite reading them). Read-only: every write is refused.
    pub fn at_version(frame: Frame, snapshot: Arc<FrameSnapshot>) -> Self {
        Self::with_history(frame, snapshot, true)
    }

    fn with_history(frame: Frame, snapshot: Arc<FrameSnapshot>, historical: bool) -> Self {
        let layout = ScanLayout::new(&snapshot.schema, &snapshot.partition_by);
        Self {
            frame,
            schema: Arc::clone(&snapshot.schema),
            snapshot,
            layout,
            historical,
            scan_runtime: None,
        }
    }

    /// Scans of this table execute with `runtime` whatever the task context brings (see
    /// [`CatalogOptions::scan_runtime`](super::CatalogOptions::scan_runtime)).
    pub fn with_scan_runtime(mut self, runtime: Arc<RuntimeEnv>) -> Self {
        self.scan_runtime = Some(runtime);
        self
    }

    /// `hive.box.frame`.
    pub fn name(&self) -> &str {
        self.frame.name()
    }

    /// The frame behind this table.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The version this table is pinned to.
    pub fn snapshot(&self) -> &Arc<FrameSnapshot> {
        &self.snapshot
    }

    /// How many cells a scan with `filters` would read (pruning from the ledger alone).
    pub fn prune(&self, state: &dyn Session, filters: &[Expr]) -> Result<PruneCounts> {
        Ok(surviving_cells(state, &self.snapshot, &self.layout, filters)?.counts)
    }

    /// A past version (time travel): read-only.
    pub fn is_historical(&self) -> bool {
        self.historical
    }

    /// The same frame reading only `snapshot` (a subset of cells, for rewrites), read-only.
    pub(crate) fn over(&self, snapshot: FrameSnapshot) -> FrameTableProvider {
        FrameTableProvider {
            snapshot: Arc::new(snapshot),
            historical: true,
            ..self.clone()
        }
    }

    /// The same table whose rows also carry their cell's path, as a last column named
    /// [`CELL_COLUMN`].
    pub(crate) fn with_cell_column(mut self) -> FrameTableProvider {
        self.layout = self.layout.with_cell_column();
        let mut fields: Vec<_> = self.schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(CELL_COLUMN, DataType::Utf8, false)));
        self.schema = Arc::new(Schema::new(fields));
        self
    }

    /// The cells the ledger cannot rule out for `filters`.
    pub(crate) fn surviving_cells(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Result<Vec<Arc<CellRecord>>> {
        Ok(surviving_cells(state, &self.snapshot, &self.layout, filters)?.cells)
    }
}

#[async_trait]
impl TableProvider for FrameTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan_scan(
            state,
            ScanRequest {
                meadow: self.frame.ledger().meadow(),
                frame: self.frame.ledger().name(),
                location: self.frame.ledger().location(),
                snapshot: &self.snapshot,
                layout: &self.layout,
                projection,
                filters,
                limit,
                predicate_in_source: self.scan_runtime.is_some(),
            },
        )
        .await?;
        Ok(match &self.scan_runtime {
            Some(runtime) => Arc::new(OwnRuntimeExec::new(plan, Arc::clone(runtime))),
            None => plan,
        })
    }

    /// Partition-only filters are decided exactly from the ledger; the rest prune cells, row
    /// groups and pages, and DataFusion still applies them to the rows.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if is_partition_filter(f, &self.snapshot.partition_by) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.historical {
            return not_impl_err!(
                "frame {} at version {} is a past version and cannot be written",
                self.name(),
                self.snapshot.version
            );
        }
        if insert_op == InsertOp::Replace {
            return not_impl_err!("REPLACE INTO frame {} is not supported", self.name());
        }
        // A frame with a sort order has DataFusion sort the rows first (in the bees' budget,
        // spilling), and its cells record the order.
        let order = crate::clustering::SortOrder::of(&self.snapshot.properties)?;
        let requirement = order
            .as_ref()
            .and_then(|o| o.lex_requirement(&input.schema()));
        let sorted = order.filter(|_| requirement.is_some());
        let sink = FrameSink::new(self.frame.clone(), Arc::clone(&self.snapshot), insert_op)
            .with_sorted_input(sorted);
        Ok(Arc::new(DataSinkExec::new(
            input,
            Arc::new(sink),
            requirement,
        )))
    }

    /// Copy-on-write, one commit (`row_change`); `filters` are refused where DataFusion may
    /// have lost part of the WHERE (`dml_guard`).
    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        row_change::plan(self, state, RowChange::Delete { filters })
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        row_change::plan(
            self,
            state,
            RowChange::Update {
                assignments,
                filters,
            },
        )
    }

    async fn truncate(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        row_change::plan(self, state, RowChange::Truncate)
    }

    /// Copy-on-write through Apiary's own join of the frame and `source` (`merge`).
    async fn merge_into(
        &self,
        _state: &dyn Session,
        source: Arc<dyn ExecutionPlan>,
        merge_schema: DFSchemaRef,
        on: Expr,
        clauses: Vec<MergeIntoClause>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        merge::plan(self, source, &merge_schema, on, clauses)
    }
}
