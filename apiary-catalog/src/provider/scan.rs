//! The scan of one frame snapshot: prune cells from the ledger, then hand the survivors to
//! DataFusion's `DataSourceExec` with a `ParquetSource` and per-file statistics from the ledger.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaBuilder, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::MetricBuilder;
use datafusion_datasource::compute_all_files_statistics;

use super::pruning::{
    is_partition_filter, physical_expr, prune_by_partition_values, prune_by_statistics,
};
use super::scan_order::keeps_scan_order;
use crate::clustering::SortOrder;
use crate::column_ids::restore_frame_scan;
use crate::ledger::{CellRecord, FrameSnapshot};
use crate::meadow::Meadow;
use crate::sight;

/// The frame's columns as DataFusion's file scan lays them out: stored columns first, then the
/// partition columns, and how the frame's own column order maps onto that.
#[derive(Debug, Clone)]
pub(crate) struct ScanLayout {
    pub file_schema: SchemaRef,
    pub partition_fields: Vec<Field>,
    /// file columns, then partition columns
    pub scan_schema: SchemaRef,
    /// frame column index → scan column index
    pub to_scan: Vec<usize>,
    pub partition_schema: SchemaRef,
    /// Whether each row carries the path of its cell, as a last column [`CELL_COLUMN`] (a
    /// partition value of every file, as DataFusion's scan adds them): for rewrites that must
    /// know which cells hold the rows they change.
    pub cell_column: bool,
}

/// The column holding each row's cell path, in scans that ask for it.
pub(crate) const CELL_COLUMN: &str = "__apiary_cell";

impl ScanLayout {
    pub(crate) fn new(schema: &SchemaRef, partition_by: &[String]) -> Self {
        let mut file_fields = vec![];
        let mut to_scan = vec![0; schema.fields().len()];
        for (i, f) in schema.fields().iter().enumerate() {
            if !partition_by.contains(f.name()) {
                to_scan[i] = file_fields.len();
                file_fields.push(f.as_ref().clone());
            }
        }
        let partition_fields: Vec<Field> = partition_by
            .iter()
            .filter_map(|p| schema.field_with_name(p).ok().cloned())
            .collect();
        for (p, name) in partition_by.iter().enumerate() {
            if let Ok(i) = schema.index_of(name) {
                to_scan[i] = file_fields.len() + p;
            }
        }
        let scan_fields: Vec<Field> = file_fields
            .iter()
            .chain(&partition_fields)
            .cloned()
            .collect();
        Self {
            file_schema: Arc::new(Schema::new(file_fields)),
            partition_schema: Arc::new(Schema::new(partition_fields.clone())),
            partition_fields,
            scan_schema: Arc::new(Schema::new(scan_fields)),
            to_scan,
            cell_column: false,
        }
    }

    /// The layout whose rows also carry their cell's path ([`CELL_COLUMN`], last).
    pub(crate) fn with_cell_column(mut self) -> Self {
        let field = Field::new(CELL_COLUMN, DataType::Utf8, false);
        self.to_scan.push(self.scan_schema.fields().len());
        self.partition_fields.push(field.clone());
        let mut fields = SchemaBuilder::from(self.scan_schema.fields());
        fields.push(field);
        self.scan_schema = Arc::new(fields.finish());
        self.cell_column = true;
        self
    }
}

/// What pruning did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Cells of the snapshot scanned.
    pub total: usize,
    /// Cells ruled out by their partition values.
    pub by_partition: usize,
    /// Cells ruled out, of the rest, by their statistics.
    pub by_statistics: usize,
}

/// The outcome of pruning: the cells to read and what was skipped.
pub(crate) struct Survivors {
    pub cells: Vec<Arc<CellRecord>>,
    pub counts: PruneCounts,
    /// The filters pruning could not decide exactly, over the scan schema.
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
}

/// The cells of `snapshot` that may match `filters`.
pub(crate) fn surviving_cells(
    state: &dyn Session,
    snapshot: &FrameSnapshot,
    layout: &ScanLayout,
    filters: &[Expr],
) -> Result<Survivors> {
    let cells: Vec<Arc<CellRecord>> = snapshot.cells().cloned().collect();
    let (partition_filters, other_filters): (Vec<Expr>, Vec<Expr>) = filters
        .iter()
        .cloned()
        .partition(|f| is_partition_filter(f, &snapshot.partition_by));

    let exact =
        prune_by_partition_values(state, &cells, &layout.partition_schema, &partition_filters)?;
    let after_partition: Vec<Arc<CellRecord>> = cells
        .iter()
        .zip(&exact)
        .filter(|(_, k)| **k)
        .map(|(c, _)| Arc::clone(c))
        .collect();

    let predicate = match conjunction(other_filters) {
        Some(expr) => {
            let df_schema = DFSchema::try_from(Schema::clone(&layout.scan_schema))?;
            Some(physical_expr(state, expr, &df_schema)?)
        }
        None => None,
    };
    let keep = prune_by_statistics(
        &after_partition,
        &layout.scan_schema,
        &snapshot.partition_by,
        predicate.as_ref(),
    )?;
    let survivors: Vec<Arc<CellRecord>> = after_partition
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| Arc::clone(c))
        .collect();
    let counts = PruneCounts {
        total: cells.len(),
        by_partition: cells.len() - after_partition.len(),
        by_statistics: after_partition.len() - survivors.len(),
    };
    Ok(Survivors {
        cells: survivors,
        counts,
        predicate,
    })
}

/// Ledger statistics of one cell, for its stored columns (DataFusion appends the partition
/// columns from the partition values). Built as DataFusion builds them from a Parquet footer, so
/// that the optimizer (join sides, aggregates from statistics) decides exactly as it does for a
/// ListingTable: exact row count, bounds, null counts, and per-column sizes — exact for
/// fixed-width types, the uncompressed Parquet size otherwise.
fn file_statistics(cell: &CellRecord, file_schema: &Schema) -> Statistics {
    let rows = cell.rows as usize;
    let columns = file_schema
        .fields()
        .iter()
        .map(|f| {
            let stats = cell.stats.get(f.name());
            let byte_size = match (f.data_type().primitive_width(), stats.and_then(|s| s.bytes)) {
                (Some(width), _) => Precision::Exact(width * rows),
                (None, Some(bytes)) => Precision::Inexact(bytes as usize),
                (None, None) => Precision::Absent,
            };
            let Some(s) = stats else {
                return ColumnStatistics::new_unknown().with_byte_size(byte_size);
            };
            let bound = |v: &Option<_>, exact: bool| match v {
                Some(v) if exact => Precision::Exact(Clone::clone(v)),
                Some(v) => Precision::Inexact(Clone::clone(v)),
                None => Precision::Absent,
            };
            ColumnStatistics {
                null_count: s
                    .null_count
                    .map_or(Precision::Absent, |n| Precision::Exact(n as usize)),
                min_value: bound(&s.min, s.min_exact),
                max_value: {
                    let (max, exact) = s.effective_max(f.data_type());
                    bound(&max, exact)
                },
                byte_size,
                ..ColumnStatistics::new_unknown()
            }
        })
        .collect();
    Statistics {
        num_rows: Precision::Exact(rows),
        total_byte_size: Precision::Absent,
        column_statistics: columns,
    }
}

/// The frame's sort order over `schema`, when every cell to scan was written in it
/// ([`crate::clustering`]); `cells` are then put in key order (by the first key's min, or max
/// when it descends), so that each file group lists them in order and DataFusion — which keeps
/// a declared order only for groups whose cells' min/max do not overlap — can keep it.
fn declared_ordering(
    snapshot: &FrameSnapshot,
    cells: &mut [Arc<CellRecord>],
    schema: &Schema,
) -> Result<Option<LexOrdering>> {
    let Some(order) = SortOrder::of(&snapshot.properties)? else {
        return Ok(None);
    };
    if cells.is_empty() || cells.iter().any(|c| c.sorted_by.as_ref() != Some(&order)) {
        return Ok(None);
    }
    // DataFusion's overlap check reads min/max only: a cell's nulls would sort outside them.
    let no_nulls = |c: &Arc<CellRecord>| {
        order.keys().iter().all(|k| {
            c.stats
                .get(&k.column)
                .is_some_and(|s| s.null_count == Some(0))
        })
    };
    if !cells.iter().all(no_nulls) {
        return Ok(None);
    }
    let Some(ordering) = order.lex_ordering(schema) else {
        return Ok(None);
    };
    let first = &order.keys()[0];
    let bound = |c: &Arc<CellRecord>| {
        let stats = c.stats.get(&first.column);
        if first.descending {
            stats.and_then(|s| s.max.clone())
        } else {
            stats.and_then(|s| s.min.clone())
        }
    };
    cells.sort_by(|a, b| {
        let (a, b) = (bound(a), bound(b));
        let ord = match (&a, &b) {
            (Some(a), Some(b)) => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
            // Cells of nulls only (no bound) go where the nulls sort.
            (None, Some(_)) if first.nulls_first => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) if first.nulls_first => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, None) => std::cmp::Ordering::Equal,
        };
        if first.descending { ord.reverse() } else { ord }
    });
    Ok(Some(ordering))
}

/// Spreads cells over at most `n` groups of balanced total size (largest first, each to the
/// lightest group), keeping cell order within a group.
fn balance(cells: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, cells.len().max(1));
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|i| Reverse(cells[*i].object_meta.size));
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..n).map(|g| Reverse((0, g))).collect();
    let mut assigned: Vec<Vec<usize>> = vec![vec![]; n];
    for i in order {
        if let Some(Reverse((load, g))) = heap.pop() {
            assigned[g].push(i);
            heap.push(Reverse((load + cells[i].object_meta.size, g)));
        }
    }
    let mut slots: Vec<Option<PartitionedFile>> = cells.into_iter().map(Some).collect();
    assigned
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|mut g| {
            g.sort_unstable();
            FileGroup::new(g.into_iter().filter_map(|i| slots[i].take()).collect())
        })
        .collect()
}

/// The scan metric holding the ledger version a frame scan reads, labelled with the frame.
pub const SCAN_VERSION: &str = "ledger_version";
/// The label of [`SCAN_VERSION`] naming the frame.
pub const SCAN_FRAME_LABEL: &str = "frame";

/// Frame scans whose every cell was pruned: planned as an `EmptyExec`, which has no metrics to
/// carry their figures. A door that wants them for `EXPLAIN` puts one of these in the session's
/// config extensions before it plans; each such scan adds itself.
#[derive(Debug, Default)]
pub struct EmptyScans(parking_lot::Mutex<Vec<EmptyScan>>);

/// One frame scan that pruned every cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyScan {
    /// The frame, `hive.box.frame`.
    pub frame: String,
    /// The version scanned.
    pub version: u64,
    /// What pruning did.
    pub counts: PruneCounts,
    /// Bytes of the version's cells, none of which is read.
    pub bytes_total: u64,
}

impl EmptyScans {
    /// The scans noted so far, in planning order.
    pub fn take(&self) -> Vec<EmptyScan> {
        std::mem::take(&mut *self.0.lock())
    }

    fn push(&self, scan: EmptyScan) {
        self.0.lock().push(scan);
    }
}

/// Everything a scan needs besides the session.
pub(crate) struct ScanRequest<'a> {
    pub meadow: &'a Meadow,
    /// The frame's name (`hive.box.frame`), for `EXPLAIN`.
    pub frame: &'a str,
    /// The frame folder below the meadow root.
    pub location: &'a str,
    pub snapshot: &'a FrameSnapshot,
    pub layout: &'a ScanLayout,
    /// Frame column indices.
    pub projection: Option<&'a Vec<usize>>,
    pub filters: &'a [Expr],
    pub limit: Option<usize>,
    /// Whether the filters' predicate goes into the Parquet source here: for hosts whose
    /// optimizer cannot push filters into the plan (datafusion-ffi hands it an opaque plan).
    pub predicate_in_source: bool,
}

/// Plans the scan: pruning, then `DataSourceExec` (or an `EmptyExec` when nothing survives).
pub(crate) async fn plan_scan(
    state: &dyn Session,
    req: ScanRequest<'_>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let layout = req.layout;
    let frame_columns: Vec<usize> = match req.projection {
        Some(p) => p.clone(),
        None => (0..layout.to_scan.len()).collect(),
    };
    let scan_projection: Vec<usize> = frame_columns.iter().map(|i| layout.to_scan[*i]).collect();

    let Survivors {
        cells: mut survivors,
        counts,
        predicate,
    } = surviving_cells(state, req.snapshot, layout, req.filters)?;
    // Declared only where DataFusion 55 is kept from reading it out of order (`scan_order`).
    let ordering = if keeps_scan_order(state) {
        declared_ordering(req.snapshot, &mut survivors, &layout.scan_schema)?
    } else {
        None
    };

    // The session must know the meadow's store, also when only a hive was registered by hand.
    let runtime = state.runtime_env();
    let store_url = req.meadow.object_store_url();
    if runtime.object_store(store_url).is_err() {
        runtime.register_object_store(store_url.as_ref(), Arc::clone(req.meadow.store()));
    }

    let sight = req.meadow.sight();
    sight.count(sight::CELLS_SCANNED, survivors.len() as u64);
    sight.count(
        sight::CELL_BYTES_SCANNED,
        survivors.iter().map(|c| c.size).sum(),
    );
    sight.count(sight::ROWS_SCANNED, survivors.iter().map(|c| c.rows).sum());
    sight.count_by(
        sight::CELLS_PRUNED,
        "by",
        "partition",
        counts.by_partition as u64,
    );
    sight.count_by(
        sight::CELLS_PRUNED,
        "by",
        "statistics",
        counts.by_statistics as u64,
    );

    if survivors.is_empty() {
        if let Some(empties) = state.config().get_extension::<EmptyScans>() {
            empties.push(EmptyScan {
                frame: req.frame.to_string(),
                version: req.snapshot.version,
                counts,
                bytes_total: req.snapshot.total_bytes(),
            });
        }
        let projected = Arc::new(layout.scan_schema.project(&scan_projection)?);
        return Ok(Arc::new(EmptyExec::new(projected)));
    }

    let files: Vec<PartitionedFile> = survivors
        .iter()
        .map(|c| {
            let key = req.meadow.key(&format!("{}/{}", req.location, c.path));
            let mut values = c.partition.clone();
            if layout.cell_column {
                values.push(ScalarValue::Utf8(Some(c.path.clone())));
            }
            let mut file = PartitionedFile::new(key.to_string(), c.size)
                .with_partition_values(values)
                .with_statistics(Arc::new(file_statistics(c, &layout.file_schema)));
            if let Some(meta) = c.meta_size {
                file = file.with_metadata_size_hint(meta as usize);
            }
            file
        })
        .collect();
    let groups = balance(files, state.config().target_partitions());
    let (groups, statistics) =
        compute_all_files_statistics(groups, Arc::clone(&layout.scan_schema), true, false)?;

    let table_schema = TableSchema::builder(Arc::clone(&layout.file_schema))
        .with_table_partition_cols(layout.partition_fields.clone())
        .build();
    let parquet_options = state.default_table_options().parquet;
    // The filters pruning could not decide stay in a FilterExec above this scan, and DataFusion's
    // FilterPushdown rule installs them as this source's predicate (row groups, pages, and row
    // filters when `pushdown_filters` is on), exactly as for its own ListingTable. Setting it here
    // too would install every conjunct twice — unless the host's optimizer cannot reach this
    // scan (`predicate_in_source`).
    let mut source =
        ParquetSource::new(table_schema).with_table_parquet_options(parquet_options.clone());
    if let (true, Some(predicate)) = (req.predicate_in_source, predicate) {
        source = source.with_predicate(predicate);
    }
    let metrics = datafusion::datasource::physical_plan::FileSource::metrics(&source).clone();
    MetricBuilder::new(&metrics)
        .global_counter("cells_total")
        .add(counts.total);
    MetricBuilder::new(&metrics)
        .global_counter("cells_pruned_by_partition")
        .add(counts.by_partition);
    MetricBuilder::new(&metrics)
        .global_counter("cells_pruned_by_statistics")
        .add(counts.by_statistics);
    MetricBuilder::new(&metrics)
        .global_counter("cells_scanned")
        .add(survivors.len());
    // Known at planning, so a plain `EXPLAIN` can tell them (`apiary::explain`): which frame
    // and version, and the bytes before and after pruning.
    MetricBuilder::new(&metrics)
        .with_new_label(SCAN_FRAME_LABEL, req.frame.to_string())
        .global_gauge(SCAN_VERSION)
        .set(req.snapshot.version as usize);
    MetricBuilder::new(&metrics)
        .global_counter("cell_bytes_total")
        .add(req.snapshot.total_bytes() as usize);
    MetricBuilder::new(&metrics)
        .global_counter("cell_bytes_scanned")
        .add(survivors.iter().map(|c| c.size as usize).sum());
    let config = FileScanConfigBuilder::new(store_url.clone(), Arc::new(source))
        .with_file_groups(groups)
        .with_statistics(statistics)
        .with_projection_indices(Some(scan_projection))?
        .with_limit(req.limit)
        .with_output_ordering(ordering.into_iter().collect())
        .build();
    let config = restore_frame_scan(config);
    // ParquetFormat installs the session's Parquet options and its footer cache, as it does for
    // DataFusion's own ListingTable.
    ParquetFormat::default()
        .with_options(parquet_options)
        .create_physical_plan(state, config)
        .await
}
