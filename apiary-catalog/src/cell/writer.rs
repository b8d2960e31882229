//! The cell writer: a stream of batches in, Parquet cells in the meadow and their records out.
//!
//! Batches are conformed to the frame schema, split by partition, and streamed into one open
//! cell per partition (a multipart upload, so a cell never sits whole in memory). A cell is
//! closed when it reaches the leafcutter target; when too many partitions are open at once, the
//! least recently used cell is closed early. Nothing becomes visible until the ledger commit that
//! names the cells; on failure [`CellWriter::abort`] removes what was written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, Float64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use futures::{Stream, StreamExt};

use object_store::path::Path;

use super::WriteOptions;
use super::conform::Conformer;
use super::encoder::CellEncoder;
use super::partition::{partition_path, split};
use super::stats::cell_stats;
use crate::clustering::SortOrder;
use crate::error::{CatalogError, Result};
use crate::ledger::entry::is_float;
use crate::ledger::{CellRecord, ColumnStats, FrameSnapshot};
use crate::meadow::Meadow;

struct OpenCell {
    rel_path: String,
    key: Path,
    writer: CellEncoder,
    rows: u64,
    last_used: u64,
    /// Statistics of the float columns, kept here (the file has none for them).
    floats: BTreeMap<String, FloatStats>,
}

/// NaN-aware statistics of one float column of one cell.
#[derive(Debug, Clone, Copy, Default)]
struct FloatStats {
    /// Bounds of the values that are neither null nor NaN.
    min: Option<f64>,
    max: Option<f64>,
    nulls: u64,
    nans: u64,
}

impl FloatStats {
    /// Adds the values of `array` (any float type).
    fn add(&mut self, array: &dyn Array) -> Result<()> {
        let wide = cast(array, &DataType::Float64)?;
        let Some(values) = wide.as_any().downcast_ref::<Float64Array>() else {
            return Ok(());
        };
        self.nulls += values.null_count() as u64;
        for v in values.iter().flatten() {
            if v.is_nan() {
                self.nans += 1;
            } else {
                self.min = Some(self.min.map_or(v, |m| m.min(v)));
                self.max = Some(self.max.map_or(v, |m| m.max(v)));
            }
        }
        Ok(())
    }

    /// As ledger statistics of a column of type `data_type` (`bytes` from the file).
    fn to_column_stats(self, data_type: &DataType, bytes: Option<u64>) -> ColumnStats {
        let typed =
            |v: Option<f64>| v.and_then(|v| ScalarValue::Float64(Some(v)).cast_to(data_type).ok());
        ColumnStats {
            min: typed(self.min),
            max: typed(self.max),
            null_count: Some(self.nulls),
            min_exact: true,
            max_exact: true,
            bytes,
            nan_count: Some(self.nans),
        }
    }
}

/// How many of a cell's first rows are looked at to judge a column's cardinality.
const DICTIONARY_SAMPLE_ROWS: usize = 1024;

/// `props` with dictionary encoding turned off for each top-level column whose first rows (of
/// the cell's first batch) are mostly distinct — an id, a measurement. Parquet would otherwise
/// hash every value into a dictionary until the dictionary page outgrows its limit, then throw
/// it away: work for nothing on every row group, and a larger file. Columns with repeats keep
/// their dictionary (it is what makes them small and fast to filter).
fn dictionary_where_it_pays(
    props: &WriterProperties,
    schema: &SchemaRef,
    first: &RecordBatch,
) -> WriterProperties {
    let rows = first.num_rows().min(DICTIONARY_SAMPLE_ROWS);
    if rows < 64 {
        return props.clone(); // too few rows to judge
    }
    let mut builder = props.clone().into_builder();
    for field in schema.fields() {
        if field.data_type().is_nested() || *field.data_type() == DataType::Boolean {
            continue;
        }
        let Some(column) = first.column_by_name(field.name()) else {
            continue;
        };
        let mut seen = std::collections::HashSet::with_capacity(rows);
        for i in 0..rows {
            if let Ok(value) = ScalarValue::try_from_array(column.as_ref(), i) {
                seen.insert(value);
            }
        }
        if seen.len() * 2 > rows {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    builder.build()
}

/// Writes the cells of one write (one future commit) of one frame.
pub struct CellWriter {
    meadow: Meadow,
    location: String,
    conformer: Conformer,
    file_schema: SchemaRef,
    partition_by: Vec<String>,
    partition_idx: Vec<usize>,
    options: WriteOptions,
    props: WriterProperties,
    open: HashMap<Vec<ScalarValue>, OpenCell>,
    done: Vec<Arc<CellRecord>>,
    tick: u64,
    /// The order the input's rows arrive in, recorded in every cell.
    sorted_by: Option<SortOrder>,
}

impl std::fmt::Debug for CellWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellWriter")
            .field("location", &self.location)
            .field("open", &self.open.len())
            .field("done", &self.done.len())
            .finish()
    }
}

impl CellWriter {
    /// A writer for the frame at `location` (named `frame` in errors) as of `snapshot`.
    pub fn new(
        meadow: Meadow,
        location: impl Into<String>,
        frame: &str,
        snapshot: &FrameSnapshot,
        options: WriteOptions,
    ) -> Result<Self> {
        let schema = Arc::clone(&snapshot.schema);
        let partition_idx = snapshot
            .partition_by
            .iter()
            .map(|c| {
                schema
                    .index_of(c)
                    .map_err(|_| CatalogError::UnknownPartitionColumn { column: c.clone() })
            })
            .collect::<Result<Vec<_>>>()?;
        let data_fields: Vec<_> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| !partition_idx.contains(i))
            .map(|(_, f)| Arc::clone(f))
            .collect();
        let file_schema = Arc::new(Schema::new(data_fields));
        let bloom_columns = bloom_filter_columns(&snapshot.properties);
        let leafcutter = options.leafcutter;
        let mut props = WriterProperties::builder()
            .set_compression(options.compression)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_bytes(Some(leafcutter.row_group_bytes() as usize))
            .set_max_row_group_row_count(Some(leafcutter.row_group_rows()))
            .set_created_by(format!("apiary {}", env!("CARGO_PKG_VERSION")));
        // Parquet leaves NaN out of a float column's min/max, while DataFusion orders NaN above
        // every number: a reader pruning row groups or pages on `f > 5` would skip a NaN it must
        // return. Float columns get no statistics in the file; the ledger keeps NaN-aware ones
        // (counted by this writer) and prunes cells with them.
        for f in file_schema
            .fields()
            .iter()
            .filter(|f| is_float(f.data_type()))
        {
            props = props.set_column_statistics_enabled(
                ColumnPath::from(f.name().as_str()),
                EnabledStatistics::None,
            );
        }
        // Declared columns get a Bloom filter per row group, which DataFusion's Parquet reader
        // checks for `=` and `IN` before it reads the row group.
        for column in &bloom_columns {
            props = props.set_column_bloom_filter_enabled(ColumnPath::from(column.as_str()), true);
        }
        let props = props.build();
        Ok(Self {
            meadow,
            location: location.into(),
            conformer: Conformer::new(frame, schema),
            file_schema,
            partition_by: snapshot.partition_by.clone(),
            partition_idx,
            options,
            props,
            open: HashMap::new(),
            done: vec![],
            tick: 0,
            sorted_by: None,
        })
    }

    /// Records in every cell that its rows are in `order`: the caller promises the input
    /// arrives sorted by it (a partition's rows keep their order, so its cells are sorted too).
    pub fn with_sorted_input(mut self, order: SortOrder) -> Self {
        self.sorted_by = Some(order);
        self
    }

    /// The frame schema input is conformed to.
    pub fn schema(&self) -> &SchemaRef {
        self.conformer.target()
    }

    /// Checks an input schema up front (before any data is read).
    pub fn check_schema(&self, input: &SchemaRef) -> Result<()> {
        self.conformer.check_schema(input)
    }

    /// Writes one batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.conformer.conform(batch)?;
        // Feed cells at most a quarter of the target at a time, so none exceeds twice it.
        let bytes_per_row = (batch.get_array_memory_size() / batch.num_rows()).max(1) as u64;
        let chunk_rows =
            ((self.options.leafcutter.target_cell_bytes() / 4) / bytes_per_row).max(1) as usize;
        for group in split(&batch, &self.partition_idx, &self.partition_by)? {
            let mut offset = 0;
            while offset < group.batch.num_rows() {
                let len = chunk_rows.min(group.batch.num_rows() - offset);
                self.write_to_cell(&group.key, &group.batch.slice(offset, len), bytes_per_row)
                    .await?;
                offset += len;
            }
        }
        Ok(())
    }

    async fn write_to_cell(
        &mut self,
        key: &[ScalarValue],
        chunk: &RecordBatch,
        row_bytes: u64,
    ) -> Result<()> {
        self.tick += 1;
        if !self.open.contains_key(key) {
            if self.open.len() >= self.options.leafcutter.open_cells(row_bytes) {
                self.close_least_recent().await?;
            }
            let cell = self.open_cell(key, chunk)?;
            self.open.insert(key.to_vec(), cell);
        }
        let target = self.options.leafcutter.target_cell_bytes();
        let Some(cell) = self.open.get_mut(key) else {
            return Ok(());
        };
        cell.writer.write(chunk).await?;
        for (column, stats) in cell.floats.iter_mut() {
            if let Some(array) = chunk.column_by_name(column) {
                stats.add(array.as_ref())?;
            }
        }
        cell.rows += chunk.num_rows() as u64;
        cell.last_used = self.tick;
        if cell.writer.reaches(target as usize).await?
            && let Some(cell) = self.open.remove(key)
        {
            self.close(key.to_vec(), cell).await?;
        }
        Ok(())
    }

    fn open_cell(&self, key: &[ScalarValue], first: &RecordBatch) -> Result<OpenCell> {
        let name = format!("cell_{}.parquet", uuid::Uuid::now_v7().simple());
        let rel_path = if key.is_empty() {
            name
        } else {
            format!("{}/{name}", partition_path(&self.partition_by, key)?)
        };
        let key_path = self.meadow.key(&format!("{}/{rel_path}", self.location));
        let sink = self.meadow.upload(key_path.clone());
        let props = dictionary_where_it_pays(&self.props, &self.file_schema, first);
        let writer = CellEncoder::try_new(sink, Arc::clone(&self.file_schema), props)?;
        Ok(OpenCell {
            rel_path,
            key: key_path,
            writer,
            rows: 0,
            last_used: self.tick,
            floats: self
                .file_schema
                .fields()
                .iter()
                .filter(|f| is_float(f.data_type()))
                .map(|f| (f.name().clone(), FloatStats::default()))
                .collect(),
        })
    }

    async fn close_least_recent(&mut self) -> Result<()> {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, c)| c.last_used)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest
            && let Some(cell) = self.open.remove(&k)
        {
            self.close(k, cell).await?;
        }
        Ok(())
    }

    async fn close(&mut self, key: Vec<ScalarValue>, mut cell: OpenCell) -> Result<()> {
        // Flush the last row group first: what finish() adds after it is the metadata.
        let finished = match cell.writer.flush().await {
            Ok(()) => {
                let data_end = cell.writer.bytes_written() as u64;
                cell.writer.finish().await.map(|m| (m, data_end))
            }
            Err(e) => Err(e),
        };
        let (meta, data_end) = match finished {
            Ok(m) => m,
            Err(e) => {
                abort_cell(cell).await;
                return Err(e.into());
            }
        };
        let size = cell.writer.bytes_written() as u64;
        self.meadow.make_durable(&cell.key).await?;
        let sight = self.meadow.sight();
        sight.count(crate::sight::CELLS_WRITTEN, 1);
        sight.count(crate::sight::CELL_BYTES_WRITTEN, size);
        let mut stats = cell_stats(&self.file_schema, &meta)?;
        for (column, floats) in &cell.floats {
            let Ok(field) = self.file_schema.field_with_name(column) else {
                continue;
            };
            let bytes = stats.get(column).and_then(|s| s.bytes);
            stats.insert(
                column.clone(),
                floats.to_column_stats(field.data_type(), bytes),
            );
        }
        self.done.push(Arc::new(CellRecord {
            path: cell.rel_path,
            size,
            rows: cell.rows,
            meta_size: Some(size - data_end),
            partition: key,
            stats,
            sorted_by: self.sorted_by.clone(),
        }));
        Ok(())
    }

    /// Closes every open cell and returns the records of all cells written, ready to commit.
    pub async fn finish(mut self) -> Result<Vec<Arc<CellRecord>>> {
        let open: Vec<_> = self.open.drain().collect();
        let mut result = Ok(());
        for (k, cell) in open {
            if result.is_ok() {
                result = self.close(k, cell).await;
            } else {
                abort_cell(cell).await;
            }
        }
        match result {
            Ok(()) => Ok(std::mem::take(&mut self.done)),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Throws away everything written so far (best effort; cleanup reclaims leftovers).
    pub async fn abort(mut self) {
        for (_, cell) in self.open.drain() {
            abort_cell(cell).await;
        }
        let done = std::mem::take(&mut self.done);
        super::remove_cells(&self.meadow, &self.location, &done).await;
    }

    /// Writes every batch of `stream` and returns the cell records; on error nothing remains.
    pub async fn write_stream<S, E>(mut self, mut stream: S) -> Result<Vec<Arc<CellRecord>>>
    where
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Unpin,
        CatalogError: From<E>,
    {
        while let Some(batch) = stream.next().await {
            let written = match batch {
                Ok(b) => self.write(&b).await,
                Err(e) => Err(CatalogError::from(e)),
            };
            if let Err(e) = written {
                self.abort().await;
                return Err(e);
            }
        }
        self.finish().await
    }

    /// [`CellWriter::write_stream`] for a DataFusion stream, checking its schema first.
    pub async fn write_record_batch_stream(
        self,
        stream: SendableRecordBatchStream,
    ) -> Result<Vec<Arc<CellRecord>>> {
        self.check_schema(&stream.schema())?;
        self.write_stream(stream).await
    }
}

async fn abort_cell(cell: OpenCell) {
    cell.writer.into_inner().abort().await;
}

/// The frame property naming the columns whose cells carry Bloom filters: `'c1,c2'`.
pub const BLOOM_FILTER_COLUMNS: &str = "apiary.bloom_filter_columns";

/// The columns [`BLOOM_FILTER_COLUMNS`] names, trimmed, in order.
pub fn bloom_filter_columns(properties: &BTreeMap<String, String>) -> Vec<String> {
    properties
        .get(BLOOM_FILTER_COLUMNS)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn mostly_distinct_columns_are_written_without_a_dictionary() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("k", DataType::Int32, false),
        ]));
        let rows = 2000;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(Int32Array::from_iter_values(
                    (0..rows as i32).map(|i| i % 10),
                )),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder().build();
        let chosen = dictionary_where_it_pays(&props, &schema, &batch);
        assert!(!chosen.dictionary_enabled(&ColumnPath::from("id")));
        assert!(chosen.dictionary_enabled(&ColumnPath::from("k")));
        // Too few rows to judge: the frame's own properties.
        let few = dictionary_where_it_pays(&props, &schema, &batch.slice(0, 10));
        assert!(few.dictionary_enabled(&ColumnPath::from("id")));
    }
}
