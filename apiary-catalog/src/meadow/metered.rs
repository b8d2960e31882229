//! The meadow's store, counted: every call reaches the node's metrics ([`crate::sight`]) by
//! kind, with its latency. It is the innermost layer, so scans, commits and the swarm's objects
//! all pass through it, and it survives [`crate::Meadow::dedicated`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::sight::{STORAGE_CALLS, Sight};

#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn ObjectStore>,
    sight: Sight,
}

impl Metered {
    pub(crate) fn wrap(inner: Arc<dyn ObjectStore>, sight: Sight) -> Arc<dyn ObjectStore> {
        Arc::new(Metered { inner, sight })
    }

    /// `call`, counted as one call of `kind` and timed to its answer.
    async fn timed<T>(
        &self,
        kind: &'static str,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = Instant::now();
        let r = call.await;
        self.sight
            .storage_call(kind, started.elapsed().as_secs_f64(), failed(&r));
        r
    }

    /// A listing is one call however many pages it takes, counted when it starts; its latency
    /// is to its last entry (none for a listing dropped before its end).
    fn listed<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let started = Instant::now();
        self.sight.count_by(STORAGE_CALLS, "kind", "list", 1);
        let sight = self.sight.clone();
        let any_failed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&any_failed);
        let mut done = false;
        stream
            .inspect(move |item| {
                if failed(item) {
                    seen.store(true, Ordering::Relaxed);
                }
            })
            .chain(futures::stream::poll_fn(move |_| {
                if !done {
                    done = true;
                    let failed = any_failed.load(Ordering::Relaxed);
                    sight.storage_answer("list", started.elapsed().as_secs_f64(), failed);
                }
                std::task::Poll::Ready(None)
            }))
            .boxed()
    }
}

/// An error that is not an answer: a missing object (a HEAD that finds none) and a refused
/// conditional write (a lost race, counted as such by the ledger) are answers.
fn failed<T>(r: &object_store::Result<T>) -> bool {
    use object_store::Error as E;
    match r {
        Ok(_) => false,
        Err(E::NotFound { .. } | E::AlreadyExists { .. } | E::Precondition { .. }) => false,
        Err(E::NotModified { .. }) => false,
        Err(_) => true,
    }
}

impl fmt::Display for Metered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.timed("put", self.inner.put_opts(l, p, o)).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.timed("put", self.inner.put_multipart_opts(l, o)).await
    }

    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        let kind = if o.head { "head" } else { "get" };
        self.timed(kind, self.inner.get_opts(l, o)).await
    }

    async fn get_ranges(
        &self,
        l: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.timed("get", self.inner.get_ranges(l, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Counted when asked; its answers stream back (many paths, bulk requests on S3).
        self.sight.count_by(STORAGE_CALLS, "kind", "delete", 1);
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listed(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listed(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.timed("list", self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.timed("copy", self.inner.copy_opts(from, to, o)).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        o: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        // The inner store's own rename (atomic where it has one), not the trait's copy + delete.
        self.timed("rename", self.inner.rename_opts(from, to, o))
            .await
    }
}
