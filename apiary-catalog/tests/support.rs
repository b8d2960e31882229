//! Shared helpers: the three backends, a small schema, data, and a read-back of a snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use apiary_catalog::testing::{Backend, counting_meadow, s3_url};
use apiary_catalog::{
    CatalogError, CellRecord, CommitInfo, CommitOptions, Frame, FrameSnapshot, FrameSpec, IfExists,
    Ledger, Meadow, Registry, WriteOptions,
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

/// A hive `h` and a box `b` in it.
pub async fn create_hive_and_box(reg: &Registry, if_exists: IfExists) {
    reg.create_hive("h", if_exists).await.expect("hive");
    reg.create_box("h", "b", if_exists).await.expect("box");
}

/// A hive `h` and box `b` (kept if there) and a new frame `f` with `spec` in them.
pub async fn create_frame(reg: &Registry, spec: &FrameSpec) {
    create_hive_and_box(reg, IfExists::Keep).await;
    reg.create_frame("h", "b", "f", spec, IfExists::Fail)
        .await
        .expect("frame");
}

/// A hive `h`, box `b` and frame `f` with `spec`; returns the registry and the frame.
pub async fn frame(url: &str, spec: FrameSpec, write: WriteOptions) -> (Registry, Frame) {
    let reg = registry(url).await;
    create_frame(&reg, &spec).await;
    let ledger = reg.open_ledger("h", "b", "f").await.expect("ledger");
    (reg, Frame::new(ledger, write))
}

/// [`frame`] with [`schema`], unpartitioned, and the default write options.
pub async fn plain_frame(url: &str) -> (Registry, Frame) {
    frame(url, FrameSpec::new(schema()), WriteOptions::default()).await
}

/// [`frame`] in a fresh local folder (a plain path, not a `file://` URL), kept while the folder
/// lives.
pub async fn local_frame(
    spec: FrameSpec,
    write: WriteOptions,
) -> (tempfile::TempDir, Registry, Frame) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (reg, frame) = frame(dir.path().to_str().expect("utf-8 path"), spec, write).await;
    (dir, reg, frame)
}

/// [`local_frame`] with [`schema`], unpartitioned, and the default write options.
pub async fn local_plain_frame() -> (tempfile::TempDir, Registry, Frame) {
    local_frame(FrameSpec::new(schema()), WriteOptions::default()).await
}

/// A meadow on a fresh local folder (a plain path).
pub async fn local_meadow() -> (tempfile::TempDir, Meadow) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meadow = Meadow::open(dir.path().to_str().expect("utf-8 path"))
        .await
        .expect("open meadow");
    (dir, meadow)
}

/// A ledger of frame `h.b.f` (id `id`) in folder `f` of `meadow`, with no registry.
pub async fn bare_ledger(meadow: &Meadow, spec: &FrameSpec, opts: CommitOptions) -> Ledger {
    Ledger::create(meadow.clone(), "f", "h.b.f", "id", spec, opts)
        .await
        .expect("create ledger")
}

/// Opens [`bare_ledger`]'s ledger again from storage.
pub async fn reopen(meadow: &Meadow, opts: CommitOptions) -> Result<Ledger, CatalogError> {
    Ledger::open(meadow.clone(), "f", "h.b.f", opts).await
}

/// Appends rows `ids` (region `eu`) in one commit.
pub async fn append_rows(frame: &Frame, ids: std::ops::Range<i64>) -> CommitInfo {
    try_append(frame, ids).await.expect("append")
}

/// [`append_rows`], its error kept.
pub async fn try_append(
    frame: &Frame,
    ids: std::ops::Range<i64>,
) -> Result<CommitInfo, CatalogError> {
    frame
        .append(stream(vec![batch(ids, &["eu"])]), "WRITE")
        .await
}

/// A frame of `h.b.f` opened by a registry of its own on `url` (as another process would).
pub async fn open_frame(url: &str) -> Frame {
    let ledger = registry(url)
        .await
        .open_ledger("h", "b", "f")
        .await
        .expect("open ledger");
    Frame::new(ledger, WriteOptions::default())
}

/// Overwrites the frame with rows `ids` (region `eu`) in one commit.
pub async fn overwrite_rows(frame: &Frame, ids: std::ops::Range<i64>) -> CommitInfo {
    frame
        .overwrite(stream(vec![batch(ids, &["eu"])]), "OVERWRITE")
        .await
        .expect("overwrite")
}

/// Writes rows `ids` (region `eu`) as cells against `read`, without committing them.
pub async fn write_cells(
    frame: &Frame,
    read: &FrameSnapshot,
    ids: std::ops::Range<i64>,
) -> Vec<Arc<CellRecord>> {
    frame
        .cell_writer(read)
        .expect("cell writer")
        .write_stream(stream(vec![batch(ids, &["eu"])]))
        .await
        .expect("write cells")
}

/// Asserts that `text` (an error message, say) contains each of `needles`.
#[track_caller]
pub fn assert_mentions(text: &str, needles: &[&str]) {
    let missing: Vec<&str> = needles
        .iter()
        .copied()
        .filter(|n| !text.contains(n))
        .collect();
    assert!(missing.is_empty(), "{missing:?} not in {text}");
}

/// Runs `task(i, start)` for each `i` in `0..n`, each on a tokio task of its own; every task
/// waits on `start` (a barrier of `n`), so that what follows the wait races. Returns the outcomes
/// in the order of `i`.
pub async fn race<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    F: Fn(usize, Arc<tokio::sync::Barrier>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(task(i, Arc::clone(&start))))
        .collect();
    let mut outcomes = Vec::with_capacity(n);
    for t in tasks {
        outcomes.push(t.await.expect("racing task"));
    }
    outcomes
}

/// The keys of the objects below `prefix` of `meadow`, relative to its root, as listed.
pub async fn keys_below(meadow: &Meadow, prefix: &str) -> Vec<String> {
    meadow
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .filter_map(|o| meadow.relative(&o.location).map(str::to_string))
        .collect()
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
