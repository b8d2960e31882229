//! The cell encoder: Parquet encoding of one cell with its columns encoded in parallel.
//!
//! Parquet's `AsyncArrowWriter` encodes every column of a batch one after the other on the
//! calling task, so a write of one large cell used one core however many the node has. This
//! encoder cuts row groups exactly as `ArrowWriter` does (by rows and by estimated bytes, from
//! the same [`WriterProperties`]), but hands each column of a batch to a task of its own and
//! waits for all of them before the next batch: the columns of a batch are encoded at once,
//! and every row-group decision is taken on exact, settled sizes. Each finished row group is
//! spliced into the file and its bytes passed on to the upload, so no more than one row group
//! is ever held in memory, as before.

use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use datafusion::parquet::arrow::async_writer::AsyncFileWriter;
use datafusion::parquet::errors::{ParquetError, Result};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;

use crate::meadow::Upload;

/// Encodes one cell, row group by row group, into an [`Upload`].
pub struct CellEncoder {
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    sink: Upload,
    in_progress: Option<RowGroup>,
    max_rows: Option<usize>,
    max_bytes: Option<usize>,
}

/// The row group being encoded: a writer per leaf column.
struct RowGroup {
    /// `None` only while the writer is away in its encoding task.
    writers: Vec<Option<ArrowColumnWriter>>,
    rows: usize,
}

impl RowGroup {
    fn estimated_bytes(&self) -> usize {
        self.writers
            .iter()
            .flatten()
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum()
    }
}

impl CellEncoder {
    pub fn try_new(sink: Upload, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let max_rows = props.max_row_group_row_count();
        let max_bytes = props.max_row_group_bytes();
        let (file, factory) = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))?
            .into_serialized_writer()?;
        Ok(Self {
            file,
            factory,
            schema,
            sink,
            in_progress: None,
            max_rows,
            max_bytes,
        })
    }

    /// Bytes of finished row groups (and the header) passed to the upload.
    pub fn bytes_written(&self) -> usize {
        self.file.bytes_written()
    }

    /// The estimated encoded size of the row group in progress.
    pub fn in_progress_size(&self) -> usize {
        self.in_progress
            .as_ref()
            .map_or(0, RowGroup::estimated_bytes)
    }

    /// Encodes `batch`, closing row groups where `ArrowWriter` would.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let take = self.rows_that_fit(rest.num_rows())?;
            if take == 0 {
                self.flush().await?;
                continue;
            }
            let part = rest.slice(0, take);
            rest = rest.slice(take, rest.num_rows() - take);
            self.encode(&part).await?;
            let full = self.in_progress.as_ref().is_some_and(|g| {
                self.max_rows.is_some_and(|max| g.rows >= max)
                    || self.max_bytes.is_some_and(|max| g.estimated_bytes() >= max)
            });
            if full {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// How many of `rows` go into the row group in progress (0: close it first); opens one.
    fn rows_that_fit(&mut self, rows: usize) -> Result<usize> {
        if self.in_progress.is_none() {
            let index = self.file.flushed_row_groups().len();
            let writers = self.factory.create_column_writers(index)?;
            self.in_progress = Some(RowGroup {
                writers: writers.into_iter().map(Some).collect(),
                rows: 0,
            });
        }
        let Some(group) = self.in_progress.as_ref() else {
            return Ok(rows);
        };
        let mut fit = rows;
        if let Some(max) = self.max_rows {
            fit = fit.min(max.saturating_sub(group.rows));
        }
        if let Some(max) = self.max_bytes
            && group.rows > 0
        {
            let current = group.estimated_bytes();
            if current >= max {
                return Ok(0);
            }
            if let Some(per_row) = current.checked_div(group.rows).filter(|b| *b > 0) {
                fit = fit.min((max - current) / per_row);
            }
        }
        Ok(fit)
    }

    /// Encodes every leaf column of `batch` at once, each on a task of its own.
    async fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves: Vec<ArrowLeafColumn> = vec![];
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field.as_ref(), column)?);
        }
        let Some(group) = self.in_progress.as_mut() else {
            return Err(ParquetError::General("no row group in progress".into()));
        };
        group.rows += batch.num_rows();
        if leaves.len() < 2 || tokio::runtime::Handle::try_current().is_err() {
            for (writer, leaf) in group.writers.iter_mut().zip(&leaves) {
                if let Some(writer) = writer.as_mut() {
                    writer.write(leaf)?;
                }
            }
            return Ok(());
        }
        let tasks: Vec<_> = group
            .writers
            .iter_mut()
            .zip(leaves)
            .map(|(slot, leaf)| {
                let writer = slot.take();
                tokio::spawn(async move {
                    let mut writer = writer
                        .ok_or_else(|| ParquetError::General("a column writer was lost".into()))?;
                    writer.write(&leaf)?;
                    Ok::<_, ParquetError>(writer)
                })
            })
            .collect();
        let mut failure = None;
        for (slot, task) in group.writers.iter_mut().zip(tasks) {
            match task.await {
                Ok(Ok(writer)) => *slot = Some(writer),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(e) => failure = failure.or(Some(ParquetError::External(Box::new(e)))),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Closes the row group in progress and passes its bytes to the upload.
    pub async fn flush(&mut self) -> Result<()> {
        let Some(group) = self.in_progress.take() else {
            return Ok(());
        };
        let mut row_group = self.file.next_row_group()?;
        for writer in group.writers {
            let writer =
                writer.ok_or_else(|| ParquetError::General("a column writer was lost".into()))?;
            writer.close()?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.pass_on().await
    }

    /// Closes the cell: the last row group, then the footer; completes the upload.
    pub async fn finish(&mut self) -> Result<ParquetMetaData> {
        self.flush().await?;
        let metadata = self.file.finish()?;
        self.pass_on().await?;
        self.sink.complete().await?;
        Ok(metadata)
    }

    /// The upload, for aborting it (nothing is flushed).
    pub fn into_inner(self) -> Upload {
        self.sink
    }

    async fn pass_on(&mut self) -> Result<()> {
        let buffer = mem::take(self.file.inner_mut());
        if buffer.is_empty() {
            return Ok(());
        }
        AsyncFileWriter::write(&mut self.sink, Bytes::from(buffer)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, StructArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::basic::Compression;

    use super::*;
    use crate::meadow::Meadow;

    fn batch(from: i64, rows: usize) -> RecordBatch {
        let ids: Vec<i64> = (from..from + rows as i64).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("n{}", i % 97)).collect();
        let inner = Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, false),
        ]);
        let nested = StructArray::new(
            inner.clone(),
            vec![
                Arc::new(Int32Array::from_iter(
                    ids.iter().map(|i| (i % 3 != 0).then_some(*i as i32)),
                )) as ArrayRef,
                Arc::new(StringArray::from_iter_values(&names)),
            ],
            None,
        );
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Float64, false),
            Field::new("s", DataType::Struct(inner), false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| *i as f64 / 7.0),
                )),
                Arc::new(nested),
            ],
        )
        .unwrap()
    }

    fn props(max_rows: usize, max_bytes: Option<usize>) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::LZ4_RAW)
            .set_max_row_group_row_count(Some(max_rows))
            .set_max_row_group_bytes(max_bytes)
            .build()
    }

    /// The row counts of the row groups of `bytes`, and all its rows as one batch.
    fn read(bytes: Bytes) -> (Vec<i64>, RecordBatch) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let groups = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        let schema = Arc::clone(reader.schema());
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let all = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
        (groups, all)
    }

    /// The same batches through `ArrowWriter` and through the encoder: the same rows back and
    /// the same row groups — the encoder decides where a row group ends as `ArrowWriter` does.
    async fn same_as_arrow_writer(props: WriterProperties) {
        let batches: Vec<RecordBatch> = (0..12).map(|i| batch(i * 1500, 1500)).collect();
        let schema = batches[0].schema();

        let mut plain =
            ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props.clone())).unwrap();
        for b in &batches {
            plain.write(b).unwrap();
        }
        let expected = read(Bytes::from(plain.into_inner().unwrap()));

        let meadow = Meadow::open("memory://").await.unwrap();
        let key = meadow.key("cell.parquet");
        let mut encoder = CellEncoder::try_new(meadow.upload(key), schema, props).unwrap();
        for b in &batches {
            encoder.write(b).await.unwrap();
        }
        let meta = encoder.finish().await.unwrap();
        let written = meadow.get("cell.parquet").await.unwrap().unwrap();
        let (groups, rows) = read(written);

        assert!(groups.len() > 1, "the test must cut row groups: {groups:?}");
        assert_eq!(groups, expected.0);
        assert_eq!(meta.num_row_groups(), groups.len());
        assert_eq!(rows, expected.1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_cut_by_rows_match_arrow_writer() {
        same_as_arrow_writer(props(4000, None)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_cut_by_bytes_match_arrow_writer() {
        same_as_arrow_writer(props(1 << 20, Some(64 * 1024))).await;
    }
}
