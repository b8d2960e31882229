//! The local cell cache: read through once, then local; bounded; least recently used goes.

use std::sync::Arc;

use apiary_catalog::testing::Counting;
use apiary_swarm::CellCache;
use bytes::Bytes;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

#[tokio::test]
async fn cells_are_fetched_once_served_locally_and_evicted_least_recent_first() {
    let dir = tempfile::tempdir().unwrap();
    let meadow = Counting::new(Arc::new(InMemory::new()));
    for i in 0..3 {
        let body = Bytes::from(vec![i as u8; 1000]);
        meadow
            .put(
                &Path::from(format!("h/b/f/cell_{i}.parquet")),
                PutPayload::from_bytes(body),
            )
            .await
            .unwrap();
    }
    meadow
        .put(
            &Path::from("h/b/f/_ledger/00000000000000000000.json"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .unwrap();
    meadow.take();
    let cache = CellCache::new(Arc::clone(&meadow) as _, dir.path().to_path_buf(), 2500).unwrap();
    let cell = |i: usize| Path::from(format!("h/b/f/cell_{i}.parquet"));

    // First read fetches the whole cell; later ranged reads are local.
    let r = cache
        .get_opts(&cell(0), GetOptions::new().with_range(Some(10..20)))
        .await
        .unwrap();
    assert_eq!(r.meta.location, cell(0));
    assert_eq!(r.bytes().await.unwrap(), Bytes::from(vec![0u8; 10]));
    assert_eq!(meadow.take().get("get"), Some(&1));
    let r = cache.get_range(&cell(0), 990..1000).await.unwrap();
    assert_eq!(r.len(), 10);
    assert!(meadow.take().is_empty(), "served from the cache");
    // Non-cell objects always go to the meadow.
    cache
        .get(&Path::from("h/b/f/_ledger/00000000000000000000.json"))
        .await
        .unwrap();
    assert_eq!(meadow.take().get("get"), Some(&1));

    // Two cells fit (2 × 1000 ≤ 2500); the third evicts the least recently used.
    cache.get(&cell(1)).await.unwrap();
    cache.get(&cell(0)).await.unwrap(); // cell 0 used more recently than cell 1
    cache.get(&cell(2)).await.unwrap();
    let status = cache.status();
    assert_eq!((status.cells, status.bytes), (2, 2000));
    assert_eq!(
        cache.cached_cells(10),
        vec![cell(2).to_string(), cell(0).to_string()]
    );
    meadow.take();
    cache.get(&cell(1)).await.unwrap();
    assert_eq!(meadow.take().get("get"), Some(&1), "cell 1 was evicted");
    assert_eq!(status.hits, 2);

    // A new cache over the same folder knows what is there.
    let again = CellCache::new(Arc::clone(&meadow) as _, dir.path().to_path_buf(), 2500).unwrap();
    assert_eq!(again.status().cells, 2);
}

/// A cell of `size` bytes whose byte `i` is `i % 251`, so that a wrong range shows.
async fn patterned_cell(meadow: &Counting, name: &str, size: usize) -> (Path, Vec<u8>) {
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let cell = Path::from(format!("h/b/f/{name}.parquet"));
    meadow
        .put(&cell, PutPayload::from(Bytes::from(body.clone())))
        .await
        .unwrap();
    meadow.take();
    (cell, body)
}

/// Seen: every reader that missed one cell at once downloaded the whole cell for itself (each
/// into memory). Readers that miss together wait for one download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_missing_one_cell_at_once_download_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let meadow = Counting::new(Arc::new(InMemory::new()));
    let (cell, body) = patterned_cell(&meadow, "big", 200_000).await;
    let cache = Arc::new(
        CellCache::new(Arc::clone(&meadow) as _, dir.path().to_path_buf(), 1 << 20).unwrap(),
    );
    let reads = (0..8u64).map(|i| {
        let (cache, cell) = (Arc::clone(&cache), cell.clone());
        tokio::spawn(async move {
            let range = i * 20_000..i * 20_000 + 100;
            (range.clone(), cache.get_range(&cell, range).await.unwrap())
        })
    });
    for read in futures::future::join_all(reads).await {
        let (range, got) = read.unwrap();
        assert_eq!(got, body[range.start as usize..range.end as usize]);
    }
    assert_eq!(
        meadow.take().get("get"),
        Some(&1),
        "one download for eight readers"
    );
    assert_eq!(cache.status().cells, 1);
    // Ranged reads of several pieces at once are local too.
    let pieces = cache
        .get_ranges(&cell, &[0..10, 199_990..200_000])
        .await
        .unwrap();
    assert_eq!(pieces[1], body[199_990..]);
    assert!(meadow.take().is_empty(), "served from the cache");
}

/// Seen: a cell larger than the whole cache was downloaded whole on every read, thrown away, and
/// then read again. Such a cell is remembered and read by ranges, as if there were no cache.
#[tokio::test]
async fn a_cell_larger_than_the_cache_is_read_by_range_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let meadow = Counting::new(Arc::new(InMemory::new()));
    let (cell, body) = patterned_cell(&meadow, "huge", 10_000).await;
    let cache = CellCache::new(Arc::clone(&meadow) as _, dir.path().to_path_buf(), 4_000).unwrap();
    for _ in 0..3 {
        let got = cache.get_range(&cell, 5_000..5_100).await.unwrap();
        assert_eq!(got, body[5_000..5_100]);
    }
    // The first read learns the size (a download stopped at its first bytes), then reads its
    // range; the others read only their range.
    assert_eq!(meadow.take().get("get"), Some(&4));
    assert_eq!(cache.status().cells, 0);
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        let p = e.unwrap().path();
        p.is_dir() || p.extension().is_none_or(|x| x != "parquet")
    }));
}

/// A store whose cell downloads send their first `first` bytes, then wait for `release`.
#[derive(Debug)]
struct Gated {
    inner: InMemory,
    first: usize,
    release: Arc<tokio::sync::Notify>,
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }

    async fn get_opts(
        &self,
        l: &Path,
        o: GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        let got = self.inner.get_opts(l, o).await?;
        let (meta, range, attributes) =
            (got.meta.clone(), got.range.clone(), got.attributes.clone());
        let body = got.bytes().await?;
        let (head, tail) = (body.slice(..self.first), body.slice(self.first..));
        let release = Arc::clone(&self.release);
        let chunks = futures::stream::once(async move { Ok(head) }).chain(futures::stream::once(
            async move {
                release.notified().await;
                Ok(tail)
            },
        ));
        Ok(object_store::GetResult {
            payload: object_store::GetResultPayload::Stream(Box::pin(chunks)),
            meta,
            range,
            attributes,
        })
    }

    fn delete_stream(
        &self,
        l: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(l)
    }

    fn list(
        &self,
        p: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(p)
    }

    async fn list_with_delimiter(
        &self,
        p: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(p).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        o: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

/// A download goes to disk as it arrives: its first bytes are in the staging file while the
/// rest is still on the way (a whole cell is never held in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_streams_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let store = Arc::new(Gated {
        inner: InMemory::new(),
        first: 1_000,
        release: Arc::clone(&release),
    });
    let body: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    let cell = Path::from("h/b/f/streamed.parquet");
    store
        .put(&cell, PutPayload::from(Bytes::from(body.clone())))
        .await
        .unwrap();
    let cache = Arc::new(CellCache::new(store, dir.path().to_path_buf(), 1 << 20).unwrap());
    let read = {
        let (cache, cell) = (Arc::clone(&cache), cell.clone());
        tokio::spawn(async move { cache.get_range(&cell, 99_000..99_010).await.unwrap() })
    };
    let staged = || -> u64 {
        std::fs::read_dir(dir.path().join(".staging"))
            .map(|entries| entries.flatten().map(|e| e.metadata().unwrap().len()).sum())
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while staged() < 1_000 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the first bytes never reached the staging file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!read.is_finished());
    release.notify_one();
    assert_eq!(read.await.unwrap(), body[99_000..99_010]);
    assert_eq!(staged(), 0, "renamed into place");
    assert_eq!(cache.status().cells, 1);
}

/// Seen: every `apiary --swarm -c …` process (a node named `{host}-{pid}`: a new name every run)
/// left its cache folder behind with the cells it had cached — up to the cache's size per
/// process. A node without a name of its own now caches in `process_{id}`, removed when the cache
/// goes, or by the next cache opened there once its process was killed; a named node keeps
/// `node_{id}` for its next run, and a second process of that name is refused while it runs.
#[tokio::test]
async fn a_nameless_nodes_cache_goes_with_it_and_a_named_nodes_stays() {
    use apiary_exec::FolderLock;
    use apiary_swarm::CacheFolder;
    let parent = tempfile::tempdir().unwrap();
    let parent = parent.path();
    let (meadow, _) = patterned_meadow().await;
    // Left by a killed process (no lock held), and one of a live process (its lock held).
    std::fs::create_dir_all(parent.join("process_killed-1/h")).unwrap();
    let live = FolderLock::take(parent, "process_live-2").unwrap();
    std::fs::create_dir_all(parent.join("process_live-2/h")).unwrap();

    let folder = CacheFolder::open(parent, "shell-3", false).unwrap();
    assert!(
        !parent.join("process_killed-1").exists(),
        "a killed process's folder stayed"
    );
    assert!(
        parent.join("process_live-2").exists(),
        "a live process's folder went"
    );
    let dir = folder.path().to_path_buf();
    let cache = CellCache::in_folder(Arc::clone(&meadow) as _, folder, 1 << 20).unwrap();
    read_all(&cache, "h/b/f/cell_0.parquet").await;
    assert_eq!(cache.status().cells, 1);
    assert!(dir.exists());
    drop(cache);
    assert!(!dir.exists(), "a nameless node's cache stayed after it");
    drop(live);

    let named = CellCache::in_folder(
        Arc::clone(&meadow) as _,
        CacheFolder::open(parent, "board-1", true).unwrap(),
        1 << 20,
    )
    .unwrap();
    read_all(&named, "h/b/f/cell_0.parquet").await;
    let err = CacheFolder::open(parent, "board-1", true).unwrap_err();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(named);
    let again = CellCache::in_folder(
        meadow,
        CacheFolder::open(parent, "board-1", true).unwrap(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(
        again.status().cells,
        1,
        "a named node's cells were not kept"
    );
}

/// A store holding `h/b/f/cell_0.parquet` (1000 bytes).
async fn patterned_meadow() -> (Arc<Counting>, Path) {
    let meadow = Counting::new(Arc::new(InMemory::new()));
    let key = Path::from("h/b/f/cell_0.parquet");
    meadow
        .put(&key, PutPayload::from_bytes(Bytes::from(vec![7u8; 1000])))
        .await
        .unwrap();
    (meadow, key)
}

async fn read_all(cache: &CellCache, key: &str) {
    let got = cache
        .get(&Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), 1000);
}
