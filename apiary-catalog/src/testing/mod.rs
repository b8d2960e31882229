//! Helpers for tests of Apiary and of code built on it (feature `test-util`): the three storage
//! backends, an object store that counts requests, and one that injects faults ([`faults`]).
//!
//! The S3 backend needs `APIARY_TEST_S3_URL` (set by `./scripts/test.sh`, which starts the S3
//! test server).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;

use crate::Meadow;

pub mod faults;

/// One storage backend under test.
pub struct Backend {
    /// `local`, `memory` or `s3`.
    pub label: &'static str,
    /// The meadow's URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// The local folder of a local backend.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }
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

/// A fresh meadow of the backend named `label`: a local folder (`local`), a named in-memory store
/// (`memory`) or a prefix on the S3 test server (`s3`). A test case per backend
/// needs only its own (and the S3 test server only for `s3`).
pub fn backend(label: &str) -> Backend {
    match label {
        "local" => {
            let dir = tempfile::tempdir().expect("tempdir");
            Backend {
                label: "local",
                url: format!("file://{}", dir.path().display()),
                _dir: Some(dir),
            }
        }
        "memory" => Backend {
            label: "memory",
            url: format!("memory://t{}", uuid::Uuid::new_v4().simple()),
            _dir: None,
        },
        "s3" => Backend {
            label: "s3",
            url: s3_url(),
            _dir: None,
        },
        other => panic!("no test backend {other:?}: local, memory or s3"),
    }
}

/// One test case per backend for each named `async fn name(b: Backend)`: a module `name` of
/// `#[tokio::test]`s `local`, `memory` and `s3` (or the backends listed first, in brackets), so
/// that a failure on S3 never hides the local result and one backend runs alone
/// (`cargo test name::local`).
///
/// ```ignore
/// async fn appends_land(b: Backend) { /* … b.url … */ }
/// async fn survives_a_restart(b: Backend) { /* … */ }
/// apiary_catalog::each_backend!(appends_land);
/// apiary_catalog::each_backend!([local, s3] survives_a_restart);
/// ```
#[macro_export]
macro_rules! each_backend {
    (@on $backends:tt $($name:ident),+) => {$(
        $crate::each_backend!(@case $name $backends);
    )+};
    (@case $name:ident [$($backend:ident),+]) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $backend() {
                    super::$name($crate::testing::backend(stringify!($backend))).await;
                }
            )+
        }
    };
    ([$($backend:ident),+] $($name:ident),+ $(,)?) => {
        $crate::each_backend!(@on [$($backend),+] $($name),+);
    };
    ($($name:ident),+ $(,)?) => {
        $crate::each_backend!(@on [local, memory, s3] $($name),+);
    };
}

/// An object store that counts calls by kind, to check how much I/O an operation costs.
#[derive(Debug)]
pub struct Counting {
    /// The store counted.
    pub inner: Arc<dyn ObjectStore>,
    /// Calls by kind (`get`, `put`, `list`, …) since the last [`Counting::take`].
    pub calls: Mutex<BTreeMap<&'static str, usize>>,
    /// Keys read since the last [`Counting::take_reads`].
    pub reads: Mutex<BTreeSet<String>>,
    /// Every call ever counted.
    pub total: AtomicUsize,
}

impl Counting {
    /// Counts the calls to `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: Mutex::new(BTreeMap::new()),
            reads: Mutex::new(BTreeSet::new()),
            total: AtomicUsize::new(0),
        })
    }

    fn count(&self, what: &'static str) {
        self.total.fetch_add(1, Ordering::SeqCst);
        *self.calls.lock().entry(what).or_insert(0) += 1;
    }

    /// Calls by kind since the last `take`.
    pub fn take(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock())
    }

    /// Keys read (GET, including ranged reads) since the last `take_reads`.
    pub fn take_reads(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.reads.lock())
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
        if !o.head {
            self.reads.lock().insert(l.to_string());
        }
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

    async fn get_ranges(
        &self,
        l: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.count("get_ranges");
        self.reads.lock().insert(l.to_string());
        self.inner.get_ranges(l, ranges).await
    }
}

/// A memory meadow whose store counts calls.
pub fn counting_meadow() -> (Meadow, Arc<Counting>) {
    let counting = Counting::new(Arc::new(object_store::memory::InMemory::new()));
    let meadow = Meadow::from_store(
        "memory://counting",
        Arc::clone(&counting) as Arc<dyn ObjectStore>,
        datafusion::execution::object_store::ObjectStoreUrl::parse("memory://counting").unwrap(),
        Path::from("root"),
    );
    (meadow, counting)
}

/// A local-folder meadow whose store counts calls, registered under `file://` like any local one.
pub fn counting_local_meadow(dir: &std::path::Path) -> (Meadow, Arc<Counting>) {
    let counting = Counting::new(Arc::new(object_store::local::LocalFileSystem::new()));
    let root = Path::from_absolute_path(dir).expect("absolute path");
    let meadow = Meadow::from_store(
        format!("file://{}", dir.display()),
        Arc::clone(&counting) as Arc<dyn ObjectStore>,
        datafusion::execution::object_store::ObjectStoreUrl::parse("file://").unwrap(),
        root,
    );
    (meadow, counting)
}
