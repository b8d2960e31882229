//! The local cell cache (tier 2): an LRU of whole cells on local disk, read through.
//!
//! Cells are immutable (a cell's name is never reused), so a cached copy never goes stale. The
//! cache wraps the meadow's object store: a read of a `.parquet` object is served from the local
//! copy, fetched whole on first use; everything else goes straight through. The cache holds at
//! most `capacity` bytes, evicting the least recently used cells. Its cells are reported in
//! heartbeats, so that coordinators give a node the cells it already has.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::error::{Result, SwarmError};

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
}

/// An object store that keeps whole cells on local disk.
pub struct CellCache {
    inner: Arc<dyn ObjectStore>,
    local: LocalFileSystem,
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_cell(location: &Path) -> bool {
    location.as_ref().ends_with(".parquet")
}

/// Cache statistics for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub cells: usize,
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
}

impl CellCache {
    /// A cache in `dir` (created; cells left there by an earlier run are kept and indexed).
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, capacity: u64) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| SwarmError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let local =
            LocalFileSystem::new_with_prefix(&dir).map_err(|source| SwarmError::Storage {
                key: dir.display().to_string(),
                source,
            })?;
        let mut index = Index::default();
        index_existing(&dir, &dir, &mut index);
        Ok(Self {
            inner,
            local,
            dir,
            capacity,
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub fn status(&self) -> CacheStatus {
        let index = lock(&self.index);
        CacheStatus {
            cells: index.entries.len(),
            bytes: index.total,
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The cached cells, most recently used first, at most `limit`.
    pub fn cached_cells(&self, limit: usize) -> Vec<String> {
        let index = lock(&self.index);
        let mut cells: Vec<(&String, &Entry)> = index.entries.iter().collect();
        cells.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_used));
        cells
            .into_iter()
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn touch(&self, key: &str) -> bool {
        let mut index = lock(&self.index);
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

    /// Fetches `location` whole from the meadow into the cache.
    async fn fill(&self, location: &Path) -> object_store::Result<()> {
        let bytes = self.inner.get(location).await?.bytes().await?;
        let size = bytes.len() as u64;
        if size > self.capacity {
            return Ok(()); // larger than the whole cache: read through only
        }
        // A plain put: a staging file renamed into place, so a reader never sees half a cell.
        self.local
            .put(location, PutPayload::from_bytes(bytes))
            .await?;
        let evict = {
            let mut index = lock(&self.index);
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
        for key in evict {
            let _ = self.local.delete(&Path::from(key.as_str())).await;
        }
        Ok(())
    }
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
            && options.version.is_none();
        if !is_cell(location) || !plain || self.capacity == 0 {
            return self.inner.get_opts(location, options).await;
        }
        if self.touch(location.as_ref()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.fill(location).await?;
        }
        match self.local.get_opts(location, options.clone()).await {
            Ok(mut r) => {
                r.meta.location = location.clone();
                Ok(r)
            }
            // Evicted meanwhile, or too large to cache: read through.
            Err(_) => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if !is_cell(location) || self.capacity == 0 {
            return self.inner.get_ranges(location, ranges).await;
        }
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let got = self
                .get_opts(location, GetOptions::new().with_range(Some(r.clone())))
                .await?;
            out.push(got.bytes().await?);
        }
        Ok(out)
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
