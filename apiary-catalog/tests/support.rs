//! Shared helpers: the three backends, a small schema, data, and a read-back of a snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use apiary_catalog::testing::{backends, counting_meadow, local_and_s3, s3_url};
use apiary_catalog::{
    CommitOptions, Frame, FrameSnapshot, FrameSpec, IfExists, Meadow, Registry, WriteOptions,
};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn options() -> CommitOptions {
    CommitOptions::default()
}

pub async fn registry(url: &str) -> Registry {
    Registry::open(Meadow::open(url).await.expect("open meadow"), options())
        .await
        .expect("open registry")
}

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// Rows `ids` with `region` cycling through `regions`.
pub fn batch(ids: std::ops::Range<i64>, regions: &[&str]) -> RecordBatch {
    let n = (ids.end - ids.start) as usize;
    let region: Vec<&str> = (0..n).map(|i| regions[i % regions.len()]).collect();
    let note: Vec<Option<String>> = ids
        .clone()
        .map(|i| (i % 3 != 0).then(|| format!("note {i}")))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(region)),
            Arc::new(StringArray::from(note)),
        ],
    )
    .expect("batch")
}

pub fn stream(
    batches: Vec<RecordBatch>,
) -> impl futures::Stream<Item = Result<RecordBatch, apiary_catalog::CatalogError>> + Unpin {
    futures::stream::iter(batches.into_iter().map(Ok))
}

/// A hive `h`, box `b` and frame `f` with `spec`; returns the registry and the frame.
pub async fn frame(url: &str, spec: FrameSpec, write: WriteOptions) -> (Registry, Frame) {
    let reg = registry(url).await;
    reg.create_hive("h", IfExists::Keep).await.expect("hive");
    reg.create_box("h", "b", IfExists::Keep).await.expect("box");
    reg.create_frame("h", "b", "f", &spec, IfExists::Fail)
        .await
        .expect("frame");
    let ledger = reg.open_ledger("h", "b", "f").await.expect("ledger");
    (reg, Frame::new(ledger, write))
}

/// Reads every cell of `snap` back from storage: the ids, and rows per partition value tuple.
pub async fn read_back(frame: &Frame, snap: &FrameSnapshot) -> (Vec<i64>, BTreeMap<String, u64>) {
    let meadow = frame.ledger().meadow();
    let mut ids = vec![];
    let mut per_partition = BTreeMap::new();
    for cell in snap.cells() {
        let rel = format!("{}/{}", frame.ledger().location(), cell.path);
        let bytes = meadow
            .get(&rel)
            .await
            .expect("get cell")
            .expect("cell exists");
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("open cell")
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("read cell");
        let mut rows = 0;
        for b in &batches {
            let col = b
                .column_by_name("id")
                .expect("id column")
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64");
            ids.extend(col.values().iter().copied());
            rows += b.num_rows() as u64;
        }
        assert_eq!(rows, cell.rows, "row count of {}", cell.path);
        let key: Vec<String> = cell.partition.iter().map(|v| v.to_string()).collect();
        *per_partition.entry(key.join("/")).or_insert(0) += rows;
    }
    ids.sort_unstable();
    (ids, per_partition)
}

/// A plain DataFusion task context to run storage work in.
pub fn task_ctx() -> Arc<datafusion::execution::TaskContext> {
    datafusion::prelude::SessionContext::new().task_ctx()
}

/// Makes every object below `dir` look `age` old (local folders: the store's clock is the file
/// system's modification time).
pub fn age_files(dir: &std::path::Path, age: std::time::Duration) {
    let when = std::time::SystemTime::now() - age;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            age_files(&path, age);
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(when))
                .unwrap_or_else(|err| panic!("aging {}: {err}", path.display()));
        }
    }
}
