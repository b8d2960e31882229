//! Shared helpers: the three backends, a small schema, data, and a read-back of a snapshot.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apiary_catalog::{
    CommitOptions, Frame, FrameSnapshot, FrameSpec, IfExists, Meadow, Registry, WriteOptions,
};
use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// One storage backend under test.
pub struct Backend {
    pub label: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, self.url)
    }
}

/// A fresh, empty root on S3: a unique prefix in the test bucket.
pub fn s3_url() -> String {
    let base = std::env::var("APIARY_TEST_S3_URL").unwrap_or_else(|_| {
        panic!(
            "APIARY_TEST_S3_URL is not set. Run the tests with ./scripts/test.sh, which starts the \
             S3 test server; or run `scripts/s3-test-server start` and source the env file it prints."
        )
    });
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    )
}

/// A fresh local folder, a fresh named in-memory store, a fresh S3 prefix.
pub fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    vec![
        Backend {
            label: "local",
            url: format!("file://{}", dir.path().display()),
            _dir: Some(dir),
        },
        Backend {
            label: "memory",
            url: format!("memory://t{}", uuid::Uuid::new_v4().simple()),
            _dir: None,
        },
        Backend {
            label: "s3",
            url: s3_url(),
            _dir: None,
        },
    ]
}

pub fn local_and_s3() -> Vec<Backend> {
    backends()
        .into_iter()
        .filter(|b| b.label != "memory")
        .collect()
}

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
) -> impl futures::Stream<Item = Result<RecordBatch, apiary_catalog::Error>> + Unpin {
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

/// An object store that counts calls by kind, to check how much I/O an operation costs.
#[derive(Debug)]
pub struct Counting {
    pub inner: Arc<dyn ObjectStore>,
    pub calls: Mutex<BTreeMap<&'static str, usize>>,
    pub total: AtomicUsize,
}

impl Counting {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: Mutex::new(BTreeMap::new()),
            total: AtomicUsize::new(0),
        })
    }

    fn count(&self, what: &'static str) {
        self.total.fetch_add(1, Ordering::SeqCst);
        *self.calls.lock().unwrap().entry(what).or_insert(0) += 1;
    }

    pub fn take(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.count("put");
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.count("put_multipart");
        self.inner.put_multipart_opts(l, o).await
    }

    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        self.count(if o.head { "head" } else { "get" });
        self.inner.get_opts(l, o).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.count("delete");
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.count("list");
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.count("list_with_offset");
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.count("list_with_delimiter");
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.count("copy");
        self.inner.copy_opts(from, to, o).await
    }
}

/// A memory meadow whose store counts calls.
pub fn counting_meadow() -> (Meadow, Arc<Counting>) {
    let counting = Counting::new(Arc::new(object_store::memory::InMemory::new()));
    let meadow = Meadow::from_store(
        "memory://counting",
        counting.clone(),
        datafusion::execution::object_store::ObjectStoreUrl::parse("memory://counting").unwrap(),
        Path::from("root"),
    );
    (meadow, counting)
}
