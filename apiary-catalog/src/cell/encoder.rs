//! The cell encoder: Parquet encoding of one cell, its columns encoded in parallel and in step
//! with the rows arriving.
//!
//! Parquet's `AsyncArrowWriter` encodes every column of a batch one after the other on the
//! calling task, so a write of one large cell used one core however many the node has. This
//! encoder gives each leaf column of a row group a task of its own, fed batch by batch through a
//! short queue: a column that encodes fast runs ahead of a slow one, and the caller goes on
//! reading and conforming the next batch meanwhile, instead of every batch waiting for its
//! slowest column. When a row group is full its columns are closed on their tasks while the
//! next row group already encodes; the closed one is spliced into the file and its bytes passed
//! on to the upload, so at most two row groups are held in memory.
//!
//! Row groups end exactly where Parquet's `ArrowWriter` would end them (by rows and by estimated
//! bytes, from the same [`WriterProperties`]). The byte rule needs the columns' settled sizes;
//! the encoder asks for them (and waits) only when an upper bound of what it has sent since the
//! last answer could reach the limit, which for the default limits is never.

use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::runtime::SpawnedTask;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use datafusion::parquet::arrow::async_writer::AsyncFileWriter;
use datafusion::parquet::errors::{ParquetError, Result};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use tokio::sync::{mpsc, oneshot};

use crate::meadow::Upload;

/// Batches a column's task may hold before the caller waits for it.
const COLUMN_QUEUE: usize = 4;

/// Encodes one cell, row group by row group, into an [`Upload`].
pub struct CellEncoder {
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    sink: Upload,
    in_progress: Option<RowGroup>,
    /// The row group before it, whose columns are being closed on their tasks.
    closing: Option<Closing>,
    max_rows: Option<usize>,
    max_bytes: Option<usize>,
}

/// The row group being encoded.
struct RowGroup {
    columns: Vec<ColumnTask>,
    rows: usize,
    /// The columns' estimated encoded bytes when they last answered, all caught up.
    settled_bytes: usize,
    /// An upper bound of the encoded bytes of what was sent since.
    unsettled_bytes: usize,
}

/// One leaf column's writer, on its task for one row group.
struct ColumnTask {
    inbox: mpsc::Sender<Message>,
    task: SpawnedTask<Result<ArrowColumnChunk>>,
}

enum Message {
    Leaf(ArrowLeafColumn),
    /// Answer the estimated encoded bytes once every leaf sent before is written.
    Settle(oneshot::Sender<usize>),
}

/// A row group whose columns are closing: their tasks, in column order.
struct Closing {
    columns: Vec<SpawnedTask<Result<ArrowColumnChunk>>>,
    estimated_bytes: usize,
}

/// Writes the leaves it receives, then closes the writer when its inbox closes.
async fn encode_column(
    mut writer: ArrowColumnWriter,
    mut inbox: mpsc::Receiver<Message>,
) -> Result<ArrowColumnChunk> {
    while let Some(message) = inbox.recv().await {
        match message {
            Message::Leaf(leaf) => writer.write(&leaf)?,
            Message::Settle(answer) => {
                // The caller may have gone; then nobody needs the figure.
                let _ = answer.send(writer.get_estimated_total_bytes());
            }
        }
    }
    writer.close()
}

/// The error a column task ended with, or its panic; `None` if it closed its writer.
async fn column_failure(task: SpawnedTask<Result<ArrowColumnChunk>>) -> Option<ParquetError> {
    match task.join().await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(ParquetError::External(Box::new(e))),
    }
}

/// The bytes Parquet's estimate is taken to grow by at most when `batch` is encoded: twice its
/// Arrow bytes (a value's plain encoding is no larger than its Arrow form, and a dictionary with
/// its plain fallback at most doubles it), plus a byte per row and a page header per leaf for the
/// levels. Row groups match `ArrowWriter`'s as long as this holds.
fn encoded_bound(batch: &RecordBatch, leaves: usize) -> usize {
    let values: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum();
    2 * values + leaves * (batch.num_rows() + 1024)
}

/// How many of `rows` fit into a row group of `rows_in` rows and `bytes` estimated bytes under
/// `max` bytes — `ArrowWriter`'s rule, from the average row so far (all of them while that
/// average rounds to zero bytes).
fn rows_under(max: usize, bytes: usize, rows_in: usize, rows: usize) -> usize {
    if bytes >= max {
        return 0;
    }
    match bytes.checked_div(rows_in).filter(|b| *b > 0) {
        Some(per_row) => rows.min((max - bytes) / per_row),
        None => rows,
    }
}

/// A column task stopped early (its error is in its task).
struct Broken;

impl RowGroup {
    /// An upper bound of the row group's estimated encoded bytes.
    fn bytes_at_most(&self) -> usize {
        self.settled_bytes + self.unsettled_bytes
    }

    /// Waits until every column has written what it was sent, and takes their estimate.
    async fn settle(&mut self) -> std::result::Result<(), Broken> {
        let mut answers = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let (answer, answered) = oneshot::channel();
            column
                .inbox
                .send(Message::Settle(answer))
                .await
                .map_err(|_| Broken)?;
            answers.push(answered);
        }
        let mut total = 0;
        for answered in answers {
            total += answered.await.map_err(|_| Broken)?;
        }
        self.settled_bytes = total;
        self.unsettled_bytes = 0;
        Ok(())
    }

    /// Closes the columns' inboxes: each task closes its writer once it has written the rest.
    fn into_closing(self) -> Closing {
        Closing {
            estimated_bytes: self.bytes_at_most(),
            columns: self.columns.into_iter().map(|c| c.task).collect(),
        }
    }

    /// The error that broke a column task.
    async fn failure(self) -> ParquetError {
        for column in self.columns {
            drop(column.inbox);
            if let Some(e) = column_failure(column.task).await {
                return e;
            }
        }
        ParquetError::General("a column writer ended before its row group".into())
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
            closing: None,
            max_rows,
            max_bytes,
        })
    }

    /// Bytes of finished row groups (and the header) passed to the upload.
    pub fn bytes_written(&self) -> usize {
        self.file.bytes_written()
    }

    /// Whether the cell's estimated encoded size has reached `target` bytes: first from an
    /// upper bound, and only where that bound reaches it from the columns' settled sizes.
    pub async fn reaches(&mut self, target: usize) -> Result<bool> {
        let pending = self.in_progress.as_ref().map_or(0, RowGroup::bytes_at_most)
            + self.closing.as_ref().map_or(0, |c| c.estimated_bytes);
        if self.bytes_written() + pending < target {
            return Ok(false);
        }
        self.finish_closing().await?;
        let settled = match self.in_progress.as_mut() {
            Some(group) => match group.settle().await {
                Ok(()) => group.settled_bytes,
                Err(Broken) => return Err(self.broken().await),
            },
            None => 0,
        };
        Ok(self.bytes_written() + settled >= target)
    }

    /// Encodes `batch`, closing row groups where `ArrowWriter` would.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let take = self.rows_that_fit(rest.num_rows()).await?;
            if take == 0 {
                self.cut().await?;
                continue;
            }
            let part = rest.slice(0, take);
            rest = rest.slice(take, rest.num_rows() - take);
            self.encode(&part).await?;
            if self.is_full().await? {
                self.cut().await?;
            }
        }
        Ok(())
    }

    /// The row group in progress, opened (its column tasks started) if there is none.
    fn open_row_group(&mut self) -> Result<&mut RowGroup> {
        if self.in_progress.is_none() {
            // Its index: those in the file, and the one closing.
            let index = self.file.flushed_row_groups().len() + usize::from(self.closing.is_some());
            let writers = self.factory.create_column_writers(index)?;
            let columns = writers
                .into_iter()
                .map(|writer| {
                    let (inbox, received) = mpsc::channel(COLUMN_QUEUE);
                    ColumnTask {
                        inbox,
                        task: SpawnedTask::spawn(encode_column(writer, received)),
                    }
                })
                .collect();
            self.in_progress = Some(RowGroup {
                columns,
                rows: 0,
                settled_bytes: 0,
                unsettled_bytes: 0,
            });
        }
        self.in_progress
            .as_mut()
            .ok_or_else(|| ParquetError::General("no row group in progress".into()))
    }

    /// How many of `rows` go into the row group in progress (0: close it first); opens one.
    async fn rows_that_fit(&mut self, rows: usize) -> Result<usize> {
        let (max_rows, max_bytes) = (self.max_rows, self.max_bytes);
        let group = self.open_row_group()?;
        let mut fit = rows;
        if let Some(max) = max_rows {
            fit = fit.min(max.saturating_sub(group.rows));
        }
        let Some(max) = max_bytes.filter(|_| group.rows > 0 && fit > 0) else {
            return Ok(fit);
        };
        // The rule allows fewer rows the more bytes there are: if the bound allows them all,
        // the settled size does too.
        if rows_under(max, group.bytes_at_most(), group.rows, fit) == fit {
            return Ok(fit);
        }
        if group.settle().await.is_err() {
            return Err(self.broken().await);
        }
        Ok(rows_under(max, group.settled_bytes, group.rows, fit))
    }

    /// Whether the row group in progress is full, as `ArrowWriter` judges after a write.
    async fn is_full(&mut self) -> Result<bool> {
        let Some(group) = self.in_progress.as_mut() else {
            return Ok(false);
        };
        if self.max_rows.is_some_and(|max| group.rows >= max) {
            return Ok(true);
        }
        let Some(max) = self.max_bytes.filter(|max| group.bytes_at_most() >= *max) else {
            return Ok(false);
        };
        if group.settle().await.is_err() {
            return Err(self.broken().await);
        }
        Ok(group.settled_bytes >= max)
    }

    /// Sends every leaf column of `batch` to its column's task.
    async fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves: Vec<ArrowLeafColumn> = vec![];
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field.as_ref(), column)?);
        }
        let bound = encoded_bound(batch, leaves.len());
        let Some(group) = self.in_progress.as_mut() else {
            return Err(ParquetError::General("no row group in progress".into()));
        };
        group.rows += batch.num_rows();
        group.unsettled_bytes += bound;
        for (column, leaf) in group.columns.iter().zip(leaves) {
            if column.inbox.send(Message::Leaf(leaf)).await.is_err() {
                return Err(self.broken().await);
            }
        }
        Ok(())
    }

    /// The error of the row group in progress, whose column task stopped; the encoder is done.
    async fn broken(&mut self) -> ParquetError {
        match self.in_progress.take() {
            Some(group) => group.failure().await,
            None => ParquetError::General("no row group in progress".into()),
        }
    }

    /// Starts closing the row group in progress, after the one before it is in the file.
    async fn cut(&mut self) -> Result<()> {
        let Some(group) = self.in_progress.take() else {
            return Ok(());
        };
        let closing = group.into_closing();
        self.finish_closing().await?;
        self.closing = Some(closing);
        Ok(())
    }

    /// Splices the closing row group into the file and passes its bytes to the upload.
    async fn finish_closing(&mut self) -> Result<()> {
        let Some(closing) = self.closing.take() else {
            return Ok(());
        };
        let mut row_group = self.file.next_row_group()?;
        for column in closing.columns {
            let chunk = column
                .join()
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))??;
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.pass_on().await
    }

    /// Closes every row group begun and passes their bytes to the upload.
    pub async fn flush(&mut self) -> Result<()> {
        self.cut().await?;
        self.finish_closing().await
    }

    /// Closes the cell: the last row group, then the footer; completes the upload.
    pub async fn finish(&mut self) -> Result<ParquetMetaData> {
        self.flush().await?;
        let metadata = self.file.finish()?;
        self.pass_on().await?;
        self.sink.complete().await?;
        Ok(metadata)
    }

    /// The upload, for aborting it (nothing is flushed; the column tasks are stopped).
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
    async fn same_as_arrow_writer(props: WriterProperties, batches: Vec<RecordBatch>) {
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

    fn batches() -> Vec<RecordBatch> {
        (0..12).map(|i| batch(i * 1500, 1500)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_cut_by_rows_match_arrow_writer() {
        same_as_arrow_writer(props(4000, None), batches()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_cut_by_bytes_match_arrow_writer() {
        same_as_arrow_writer(props(1 << 20, Some(64 * 1024)), batches()).await;
    }

    /// Rows that grow from a few bytes to hundreds within batches: the average row of a row
    /// group's start says little about its end, so the encoder must settle before the cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_of_widening_rows_cut_by_bytes_match_arrow_writer() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        let widening = |from: usize, rows: usize| {
            // Distinct, hardly compressible text of i / 40 characters; every fifth is null.
            let noise = |i: usize| {
                let mut x = i as u64 | 1;
                (0..i / 40)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        char::from(b'a' + (x >> 59) as u8)
                    })
                    .collect::<String>()
            };
            let text = (from..from + rows).map(|i| (i % 5 != 0).then(|| noise(i)));
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(
                        (from..from + rows).map(|i| i as i64),
                    )),
                    Arc::new(StringArray::from_iter(text)),
                ],
            )
            .unwrap()
        };
        let batches = vec![
            widening(0, 1000),
            widening(1000, 9000),
            widening(10_000, 4000),
        ];
        for cap in [16 * 1024, 200 * 1024] {
            same_as_arrow_writer(props(1 << 20, Some(cap)), batches.clone()).await;
        }
        // Without a byte cap, the rows alone cut them (and no column is ever asked its size).
        same_as_arrow_writer(props(3000, None), batches).await;
    }

    /// Row groups are spliced into the file as the next ones encode: never more than two are
    /// held back (one encoding, one closing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_two_row_groups_are_held() {
        let meadow = Meadow::open("memory://").await.unwrap();
        let key = meadow.key("cell.parquet");
        let schema = batch(0, 1).schema();
        let mut encoder =
            CellEncoder::try_new(meadow.upload(key), schema, props(1000, None)).unwrap();
        for i in 0..20 {
            encoder.write(&batch(i * 1500, 1500)).await.unwrap();
            let in_file = encoder.file.flushed_row_groups().len() as i64;
            let held = (i + 1) * 1500 - in_file * 1000;
            assert!(
                held <= 2 * 1000,
                "{held} rows held back, {in_file} row groups in the file"
            );
        }
        assert_eq!(encoder.finish().await.unwrap().num_row_groups(), 30);
    }

    /// The rows of a cell whose columns were never asked their size come back whole when the
    /// column tasks lag far behind the caller (more batches than a column's queue holds).
    #[tokio::test(flavor = "current_thread")]
    async fn a_single_threaded_runtime_encodes_every_batch() {
        let many: Vec<RecordBatch> = (0..40).map(|i| batch(i * 100, 100)).collect();
        same_as_arrow_writer(props(1500, None), many).await;
    }
}
