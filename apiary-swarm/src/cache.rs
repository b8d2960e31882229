//! The local cell cache (tier 2): an LRU of whole cells on local disk, read through.
//!
//! Cells are immutable (a cell's name is never reused), so a cached copy never goes stale. The
//! cache wraps the meadow's object store: a read of a `.parquet` object is served from the local
//! copy, fetched whole on first use; everything else goes straight through. A download streams
//! into a staging file (never a whole cell in memory), synced and renamed into place, and readers
//! that miss one cell at once wait for a single download. A cell larger than the whole cache is
//! remembered and read by ranges. The cache holds at most `capacity` bytes, evicting the least
//! recently used cells. Its cells are listed in the node's cache index (`_caches/node_{id}.json`),
//! so that coordinators give a node the cells it already has.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;

use apiary_exec::FolderLock;

use crate::error::{Result, SwarmError};

/// The folder, inside the cache's, where downloads land before they are renamed into place.
const STAGING: &str = ".staging";

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
    /// Cells larger than the whole cache: read through by range, never downloaded whole.
    too_large: HashSet<String>,
}

/// The folder of a node's cache below the configured one, held with a [`FolderLock`] while
/// the node lives. A node with a name of its own (`keep`) has `node_{id}`, found again by its
/// next run; any other has `process_{id}`, removed when the cache goes — and, if its process was
/// killed first, by the next node that opens a cache there. So short-lived shells (`apiary
/// --swarm -c …`, one node name per process) never pile up cached cells.
#[derive(Debug)]
pub struct CacheFolder {
    dir: PathBuf,
    lock: FolderLock,
    keep: bool,
}

impl CacheFolder {
    /// Takes this process's cache folder under `parent`: `node_{id}` kept across runs when `keep`,
    /// else `process_{id}` (removed at exit); fails if a live process holds it.
    pub fn open(parent: &std::path::Path, node_id: &str, keep: bool) -> Result<Self> {
        FolderLock::reclaim_unlocked(parent, "process_");
        let name = match keep {
            true => format!("node_{node_id}"),
            false => format!("process_{node_id}"),
        };
        let dir = parent.join(&name);
        let exists = parent.join(format!("{name}.lock")).exists();
        let lock = match exists.then(|| FolderLock::try_existing(parent, &name)) {
            Some(Some(lock)) => lock,
            Some(None) => {
                return Err(SwarmError::CacheInUse {
                    path: dir.display().to_string(),
                });
            }
            None => FolderLock::take(parent, &name).map_err(|(path, source)| SwarmError::Io {
                path: path.display().to_string(),
                source,
            })?,
        };
        Ok(Self { dir, lock, keep })
    }

    /// The folder the cached cells are in.
    pub fn path(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for CacheFolder {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
            // Still locked (released after this): no one takes the name meanwhile.
            self.lock.remove();
        }
    }
}

/// An object store that keeps whole cells on local disk.
pub struct CellCache {
    inner: Arc<dyn ObjectStore>,
    local: LocalFileSystem,
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    /// One gate per cell being downloaded: readers that miss it meanwhile wait for that download.
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Bytes read from cached cells on local disk.
    bytes_read: AtomicU64,
    /// Grows with every cell cached or evicted: the version of the node's cache index.
    version: AtomicU64,
    /// The folder's owner, when the cache has one (dropped with the cache, after all readers).
    _folder: Option<CacheFolder>,
}

impl fmt::Debug for CellCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellCache")
            .field("dir", &self.dir)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl fmt::Display for CellCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CellCache({}, {})", self.dir.display(), self.inner)
    }
}

fn is_cell(location: &Path) -> bool {
    location.as_ref().ends_with(".parquet")
}

/// Cache statistics for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    /// Cells cached.
    pub cells: usize,
    /// Bytes cached.
    pub bytes: u64,
    /// The cache's size bound, in bytes.
    pub capacity: u64,
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that went to the meadow.
    pub misses: u64,
    /// Bytes read from cached cells on local disk instead of the meadow.
    pub bytes_read: u64,
}

impl CellCache {
    /// A cache in `dir` (created; cells left there by an earlier run are kept and indexed).
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, capacity: u64) -> Result<Self> {
        Self::build(inner, dir, capacity, None)
    }

    /// A cache in a node's own folder, which goes (or stays) with the cache.
    pub fn in_folder(
        inner: Arc<dyn ObjectStore>,
        folder: CacheFolder,
        capacity: u64,
    ) -> Result<Self> {
        let dir = folder.path().to_path_buf();
        Self::build(inner, dir, capacity, Some(folder))
    }

    fn build(
        inner: Arc<dyn ObjectStore>,
        dir: PathBuf,
        capacity: u64,
        folder: Option<CacheFolder>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| SwarmError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let local =
            LocalFileSystem::new_with_prefix(&dir).map_err(|source| SwarmError::Storage {
                key: dir.display().to_string(),
                source,
            })?;
        // Downloads a stopped process left half-way.
        let _ = std::fs::remove_dir_all(dir.join(STAGING));
        let mut index = Index::default();
        index_existing(&dir, &dir, &mut index);
        let index_is_empty = index.entries.is_empty();
        Ok(Self {
            inner,
            local,
            dir,
            capacity,
            index: Mutex::new(index),
            fills: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            // Cells left by an earlier run are news to the swarm.
            version: AtomicU64::new(u64::from(!index_is_empty)),
            _folder: folder,
        })
    }

    /// A snapshot of the cache, for status displays.
    pub fn status(&self) -> CacheStatus {
        let index = self.index.lock();
        CacheStatus {
            cells: index.entries.len(),
            bytes: index.total,
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    /// The cache's version: it grows with every cell cached or evicted.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The cached cells, most recently used first, at most `limit`.
    pub fn cached_cells(&self, limit: usize) -> Vec<String> {
        let index = self.index.lock();
        let mut cells: Vec<(&String, &Entry)> = index.entries.iter().collect();
        cells.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_used));
        cells
            .into_iter()
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn touch(&self, key: &str) -> bool {
        let mut index = self.index.lock();
        index.tick += 1;
        let tick = index.tick;
        match index.entries.get_mut(key) {
            Some(e) => {
                e.last_used = tick;
                true
            }
            None => false,
        }
    }

    /// Whether `location` is in the cache now: fetched if need be — once, however many readers
    /// miss it at the same time. False for a cell larger than the cache (read it through).
    async fn ensure(&self, location: &Path) -> object_store::Result<bool> {
        let key = location.as_ref();
        if self.touch(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        if self.index.lock().too_large.contains(key) {
            return Ok(false);
        }
        let gate = Arc::clone(self.fills.lock().entry(key.to_string()).or_default());
        let turn = gate.lock().await;
        let cached = if self.touch(key) {
            // Downloaded by the reader that held the gate before.
            self.hits.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        } else if self.index.lock().too_large.contains(key) {
            Ok(false)
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.fill(location).await
        };
        drop(turn);
        let mut fills = self.fills.lock();
        // The map's reference and this one: nobody else waits at this gate.
        if Arc::strong_count(&gate) == 2 {
            fills.remove(key);
        }
        cached
    }

    /// Downloads `location` into the cache, streaming it to a staging file that is synced and
    /// renamed into place (a reader never sees half a cell). False, and remembered, when the cell
    /// is larger than the whole cache: the download stops at its first bytes.
    async fn fill(&self, location: &Path) -> object_store::Result<bool> {
        let got = self.inner.get(location).await?;
        let size = got.meta.size;
        if size > self.capacity {
            self.index.lock().too_large.insert(location.to_string());
            return Ok(false);
        }
        let target = self.local.path_to_filesystem(location)?;
        let staging = self
            .dir
            .join(STAGING)
            .join(uuid::Uuid::new_v4().simple().to_string());
        let written = stream_to_file(got.into_stream(), &staging, &target).await;
        match written {
            Ok(n) if n == size => {}
            Ok(n) => {
                let _ = tokio::fs::remove_file(&target).await;
                return Err(cache_error(
                    location,
                    &std::io::Error::other(format!("downloaded {n} of {size} bytes")),
                ));
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&staging).await;
                return Err(e.into_object_store(location));
            }
        }
        let evict = {
            let mut index = self.index.lock();
            index.tick += 1;
            let tick = index.tick;
            if index
                .entries
                .insert(
                    location.to_string(),
                    Entry {
                        size,
                        last_used: tick,
                    },
                )
                .is_none()
            {
                index.total += size;
            }
            let mut evict = vec![];
            while index.total > self.capacity {
                let Some(oldest) = index
                    .entries
                    .iter()
                    .filter(|(k, _)| k.as_str() != location.as_ref())
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(e) = index.entries.remove(&oldest) {
                    index.total -= e.size;
                }
                evict.push(oldest);
            }
            evict
        };
        self.version.fetch_add(1, Ordering::SeqCst);
        for key in evict {
            let _ = self.local.delete(&Path::from(key.as_str())).await;
        }
        Ok(true)
    }
}

/// What went wrong while streaming a download to disk.
enum StreamError {
    Store(object_store::Error),
    Io(std::io::Error),
}

impl StreamError {
    fn into_object_store(self, location: &Path) -> object_store::Error {
        match self {
            StreamError::Store(e) => e,
            StreamError::Io(e) => cache_error(location, &e),
        }
    }
}

fn cache_error(location: &Path, e: &std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "CellCache",
        source: format!("caching {location}: {e}").into(),
    }
}

/// Writes `chunks` to `staging` as they come, syncs it and renames it to `target`; the bytes
/// written.
async fn stream_to_file(
    mut chunks: BoxStream<'static, object_store::Result<Bytes>>,
    staging: &std::path::Path,
    target: &std::path::Path,
) -> std::result::Result<u64, StreamError> {
    use tokio::io::AsyncWriteExt;
    let io = StreamError::Io;
    if let Some(parent) = staging.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    let mut file = tokio::fs::File::create(staging).await.map_err(io)?;
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(StreamError::Store)?;
        file.write_all(&chunk).await.map_err(io)?;
        written += chunk.len() as u64;
    }
    // Synced before the rename: after a power cut the cache holds whole cells or none.
    file.sync_all().await.map_err(io)?;
    drop(file);
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    tokio::fs::rename(staging, target).await.map_err(io)?;
    Ok(written)
}

fn index_existing(root: &std::path::Path, dir: &std::path::Path, index: &mut Index) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            index_existing(root, &p, index);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            let (Ok(rel), Ok(meta)) = (p.strip_prefix(root), e.metadata()) else {
                continue;
            };
            if let Some(key) = rel.to_str() {
                index.total += meta.len();
                index.entries.insert(
                    key.to_string(),
                    Entry {
                        size: meta.len(),
                        last_used: 0,
                    },
                );
            }
        }
    }
}

#[async_trait]
impl ObjectStore for CellCache {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none()
            && !options.head;
        if !is_cell(location) || !plain || self.capacity == 0 || !self.ensure(location).await? {
            return self.inner.get_opts(location, options).await;
        }
        match self.local.get_opts(location, options.clone()).await {
            Ok(mut r) => {
                r.meta.location = location.clone();
                self.bytes_read
                    .fetch_add(r.range.end - r.range.start, Ordering::Relaxed);
                Ok(r)
            }
            // Evicted meanwhile: read through.
            Err(_) => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if !is_cell(location) || self.capacity == 0 || !self.ensure(location).await? {
            return self.inner.get_ranges(location, ranges).await;
        }
        match self.local.get_ranges(location, ranges).await {
            Ok(pieces) => {
                let bytes: u64 = pieces.iter().map(|p| p.len() as u64).sum();
                self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
                Ok(pieces)
            }
            Err(_) => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}
