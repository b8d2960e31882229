//! The meadow: where all durable state lives.
//!
//! One [`Meadow`] is an object store plus a root prefix inside it. It is opened from a URL
//! (`file:///abs/path`, a plain path, `memory://[name]`, `s3://bucket/prefix?endpoint=…&region=…`)
//! and offers the few primitives the rest of Apiary is built on:
//!
//! - [`Meadow::create`]: a conditional create, the *only* commit primitive. Two writers race on a
//!   key, exactly one gets [`Created::Yes`], the other [`Created::LostRace`].
//! - [`Meadow::get`], [`Meadow::put`], [`Meadow::list_after`], [`Meadow::list_dir`], deletes.
//!
//! Readers never see a partial object: S3 and memory objects appear whole; on a local disk an
//! object is written to a hidden staging file, flushed to disk, and linked (create) or renamed
//! (overwrite) into place.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::SpawnedReqwestConnector;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use parking_lot::Mutex;

use crate::sight::Sight;
use object_store::{
    Extensions, ListResult, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload,
};
use url::Url;

use crate::error::{CatalogError, Result};

mod durable;
mod metered;
mod upload;

pub(crate) use durable::StagingFile;
pub use upload::Upload;

/// Outcome of a conditional create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This writer created the object.
    Yes,
    /// The key already existed: another writer won the race (or this is a replay).
    LostRace,
}

/// Which kind of store backs a meadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeadowKind {
    /// A folder on this machine (a plain path or `file://`).
    Local,
    /// Memory of this process (`memory://`), gone when it ends.
    Memory,
    /// An S3 bucket or an S3-compatible store (`s3://`).
    S3,
    /// A store supplied by the caller ([`Meadow::from_store`]).
    Custom,
}

/// Object storage with a root prefix. Cheap to clone.
#[derive(Clone)]
pub struct Meadow {
    inner: Arc<Inner>,
}

/// Wraps a meadow's object store (a fault injector, a request counter, a rate limiter …).
pub type StoreLayer = Arc<dyn Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync>;

#[derive(Clone)]
struct Inner {
    url: String,
    kind: MeadowKind,
    /// The store every call goes through: the base store, metered, inside its layers.
    store: Arc<dyn ObjectStore>,
    /// The base store alone, for [`Meadow::with_own_sight`].
    base: Option<Arc<dyn ObjectStore>>,
    store_url: ObjectStoreUrl,
    root: Path,
    /// The local file system under the durable store, to map keys to files for fsync.
    local: Option<Arc<LocalFileSystem>>,
    /// The runtime driving a remote store's connections, for [`Meadow::dedicated`].
    io: Option<tokio::runtime::Handle>,
    /// The layers around the base store, outermost last, for [`Meadow::dedicated`].
    layers: Vec<StoreLayer>,
    /// An S3 store given no credentials: it asks the EC2 instance metadata service for them,
    /// which off EC2 fails with an error that does not say what is missing.
    instance_role: bool,
    /// The metrics every call of the store is counted in.
    sight: Sight,
}

impl std::fmt::Debug for Meadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meadow")
            .field("url", &self.inner.url)
            .field("root", &self.inner.root)
            .finish()
    }
}

/// Named `memory://name` stores of this process, so two opens of one name share their state.
static MEMORY_STORES: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether `builder` was given no credentials of any kind, so that the store will ask the EC2
/// instance metadata service (object_store's last resort) for them.
fn asks_instance_metadata(builder: &AmazonS3Builder) -> bool {
    use AmazonS3ConfigKey as K;
    let set = |key: K| builder.get_config_value(&key).is_some();
    let skip = builder
        .get_config_value(&K::SkipSignature)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !(skip
        || set(K::AccessKeyId)
        || set(K::SecretAccessKey)
        || (set(K::WebIdentityTokenFile) && set(K::RoleArn))
        || set(K::ContainerCredentialsRelativeUri)
        || set(K::ContainerCredentialsFullUri))
}

impl Meadow {
    /// Opens the meadow at `url` and checks that it is reachable.
    ///
    /// A local folder is created if missing; an S3 bucket must exist (its absence is an error
    /// naming it).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let meadow = apiary_catalog::Meadow::open(dir.path().to_str().unwrap()).await.unwrap();
    /// assert_eq!(meadow.kind(), apiary_catalog::MeadowKind::Local);
    /// # });
    /// ```
    pub async fn open(url: &str) -> Result<Meadow> {
        let meadow = Self::from_url(url)?;
        meadow.check_reachable().await?;
        Ok(meadow)
    }

    /// Like [`Meadow::open`], with the HTTP connections of a remote store driven by the runtime
    /// behind `io` (Apiary's own, so that they do not depend on any caller's runtime).
    pub async fn open_with(url: &str, io: &tokio::runtime::Handle) -> Result<Meadow> {
        let meadow = Self::build_from_url(url, Some(io), Sight::default())?;
        meadow.check_reachable().await?;
        Ok(meadow)
    }

    /// Builds the meadow for `url` without any I/O except creating a missing local folder.
    pub fn from_url(url: &str) -> Result<Meadow> {
        Self::build_from_url(url, None, Sight::default())
    }

    fn build_from_url(
        url: &str,
        io: Option<&tokio::runtime::Handle>,
        sight: Sight,
    ) -> Result<Meadow> {
        let mut meadow = Self::build_base(url, io)?.metered(sight);
        if let Some(io) = io {
            Arc::make_mut(&mut meadow.inner).io = Some(io.clone());
        }
        Ok(meadow)
    }

    fn build_base(url: &str, io: Option<&tokio::runtime::Handle>) -> Result<Meadow> {
        let invalid = |reason: &str| CatalogError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.trim().is_empty() {
            return Err(invalid("empty"));
        }
        let has_scheme = url.contains("://");
        if !has_scheme {
            return Self::local(url, std::path::Path::new(url));
        }
        let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(invalid("a file URL has no host: use file:///absolute/path"));
                }
                let path = parsed
                    .to_file_path()
                    .map_err(|_| invalid("not an absolute file path"))?;
                Self::local(url, &path)
            }
            "memory" => {
                let name = parsed.host_str().unwrap_or("").to_string();
                let (store, authority) = if name.is_empty() {
                    // A private store: give it a unique authority so that registering two of
                    // them in one DataFusion session never mixes them up.
                    (
                        Arc::new(InMemory::new()),
                        format!("apiary-{}", uuid::Uuid::new_v4().simple()),
                    )
                } else {
                    let mut stores = MEMORY_STORES.lock();
                    let store = Arc::clone(
                        stores
                            .entry(name.clone())
                            .or_insert_with(|| Arc::new(InMemory::new())),
                    );
                    (store, name)
                };
                let store_url = ObjectStoreUrl::parse(format!("memory://{authority}"))
                    .map_err(|e| invalid(&e.to_string()))?;
                let root = Self::root_from_url_path(url, parsed.path())?;
                Ok(Self::build(
                    url,
                    MeadowKind::Memory,
                    store,
                    store_url,
                    root,
                    None,
                ))
            }
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| invalid("missing bucket: use s3://bucket/prefix"))?
                    .to_string();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                for (key, value) in parsed.query_pairs() {
                    let config_key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                        invalid(&format!(
                            "unknown S3 option {key:?} (use endpoint, region, allow_http, access_key_id, …)"
                        ))
                    })?;
                    builder = builder.with_config(config_key, value.to_string());
                    if key == "endpoint" && value.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                }
                if let Some(io) = io {
                    builder = builder.with_http_connector(SpawnedReqwestConnector::new(io.clone()));
                }
                let instance_role = asks_instance_metadata(&builder);
                let store = builder
                    .build()
                    .map_err(|e| invalid(&format!("cannot configure S3: {e}")))?;
                let store_url = ObjectStoreUrl::parse(format!("s3://{bucket}"))
                    .map_err(|e| invalid(&e.to_string()))?;
                let root = Self::root_from_url_path(url, parsed.path())?;
                let mut meadow =
                    Self::build(url, MeadowKind::S3, Arc::new(store), store_url, root, None);
                Arc::make_mut(&mut meadow.inner).instance_role = instance_role;
                Ok(meadow)
            }
            other => Err(invalid(&format!(
                "unsupported scheme {other:?} (use file://, memory://, s3:// or a plain path)"
            ))),
        }
    }

    /// A meadow over any object store (GCS, Azure, a wrapper, …): `store` is known to DataFusion
    /// as `store_url` and Apiary keeps everything below `root`.
    pub fn from_store(
        url: impl Into<String>,
        store: Arc<dyn ObjectStore>,
        store_url: ObjectStoreUrl,
        root: Path,
    ) -> Meadow {
        Self::build(
            &url.into(),
            MeadowKind::Custom,
            store,
            store_url,
            root,
            None,
        )
        .metered(Sight::default())
    }

    /// Every call of the base store counted in `sight`, before any layer goes around it.
    fn metered(mut self, sight: Sight) -> Meadow {
        let inner = Arc::make_mut(&mut self.inner);
        inner.base = Some(Arc::clone(&inner.store));
        inner.store = metered::Metered::wrap(Arc::clone(&inner.store), sight.clone());
        inner.sight = sight;
        self
    }

    /// The same meadow (same store, same layers) counting its calls in `sight`: for a second
    /// node of a process built on a clone of this meadow, so that each node's metrics stay its
    /// own.
    pub fn with_own_sight(&self, sight: Sight) -> Meadow {
        let Some(base) = self.inner.base.clone() else {
            return self.clone();
        };
        let mut inner = (*self.inner).clone();
        inner.store = metered::Metered::wrap(base, sight.clone());
        for layer in &inner.layers {
            inner.store = layer(Arc::clone(&inner.store));
        }
        inner.sight = sight;
        Meadow {
            inner: Arc::new(inner),
        }
    }

    /// The metrics of the node using this meadow ([`crate::sight`]).
    pub fn sight(&self) -> &Sight {
        &self.inner.sight
    }

    fn local(url: &str, path: &std::path::Path) -> Result<Meadow> {
        let invalid = |reason: String| CatalogError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        std::fs::create_dir_all(path)
            .map_err(|e| invalid(format!("cannot create folder {}: {e}", path.display())))?;
        let path = path
            .canonicalize()
            .map_err(|e| invalid(format!("cannot resolve {}: {e}", path.display())))?;
        let root = Path::from_absolute_path(&path)
            .map_err(|e| invalid(format!("not usable as a root: {e}")))?;
        let local = Arc::new(LocalFileSystem::new());
        let store_url = ObjectStoreUrl::parse("file://").map_err(|e| invalid(e.to_string()))?;
        Ok(Self::build(
            url,
            MeadowKind::Local,
            Arc::new(durable::DurableFs::new(Arc::clone(&local))),
            store_url,
            root,
            Some(local),
        ))
    }

    fn root_from_url_path(url: &str, path: &str) -> Result<Path> {
        let decoded = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|e| CatalogError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let trimmed = decoded.trim_matches('/');
        if trimmed.split('/').any(|s| s == "." || s == "..") {
            return Err(CatalogError::InvalidUrl {
                url: url.to_string(),
                reason: "the prefix must not contain . or .. segments".into(),
            });
        }
        Path::parse(trimmed).map_err(|e| CatalogError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    fn build(
        url: &str,
        kind: MeadowKind,
        store: Arc<dyn ObjectStore>,
        store_url: ObjectStoreUrl,
        root: Path,
        local: Option<Arc<LocalFileSystem>>,
    ) -> Meadow {
        Meadow {
            inner: Arc::new(Inner {
                url: url.to_string(),
                kind,
                store,
                base: None,
                store_url,
                root,
                local,
                io: None,
                layers: vec![],
                instance_role: false,
                sight: Sight::default(),
            }),
        }
    }

    /// The same meadow with its store wrapped by `layer`: every call — commits included — goes
    /// through it. Layers stack, and [`Meadow::dedicated`] keeps them.
    pub fn with_store_layer(&self, layer: StoreLayer) -> Meadow {
        let mut inner = (*self.inner).clone();
        inner.store = layer(Arc::clone(&inner.store));
        inner.layers.push(layer);
        Meadow {
            inner: Arc::new(inner),
        }
    }

    /// The same meadow through a client of its own: for S3 a new HTTP client with its own
    /// connections, so that small, urgent requests (heartbeats) never wait in the pool behind
    /// the node's large uploads. Local and memory meadows have no connections to separate.
    pub fn dedicated(&self) -> Result<Meadow> {
        if self.inner.kind != MeadowKind::S3 {
            return Ok(self.clone());
        }
        let mut meadow = Self::build_from_url(
            &self.inner.url,
            self.inner.io.as_ref(),
            self.inner.sight.clone(),
        )?;
        for layer in &self.inner.layers {
            meadow = meadow.with_store_layer(Arc::clone(layer));
        }
        Ok(meadow)
    }

    /// A cheap call that fails when the store is unreachable (no bucket, no permission).
    async fn check_reachable(&self) -> Result<()> {
        if let Some(local) = &self.inner.local {
            let root = local
                .path_to_filesystem(&self.inner.root)
                .map_err(|e| CatalogError::storage(&self.inner.root, e))?;
            let url = self.inner.url.clone();
            tokio::task::spawn_blocking(move || durable::check_hard_links(&root))
                .await?
                .map_err(|reason| CatalogError::UnsupportedFileSystem { url, reason })?;
        }
        let prefix = self.key("_registry");
        self.inner
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|source| match self.inner.instance_role {
                true => CatalogError::NoCredentials {
                    url: self.inner.url.clone(),
                    source,
                },
                false => CatalogError::Unreachable {
                    url: self.inner.url.clone(),
                    source,
                },
            })
    }

    /// The URL this meadow was opened from.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Which kind of store backs this meadow.
    pub fn kind(&self) -> MeadowKind {
        self.inner.kind
    }

    /// The object store, to register with DataFusion under [`Meadow::object_store_url`].
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The scheme and authority DataFusion knows this store by (`file://`, `s3://bucket`, …).
    pub fn object_store_url(&self) -> &ObjectStoreUrl {
        &self.inner.store_url
    }

    /// The root prefix inside the store.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The full key of `rel`, a `/`-separated path below the root whose segments are already
    /// valid object-store path parts (names are validated, partition values escaped).
    pub fn key(&self, rel: &str) -> Path {
        let root = self.inner.root.as_ref();
        let rel = rel.trim_matches('/');
        let full = match (root.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => root.to_string(),
            (false, false) => format!("{root}/{rel}"),
        };
        // Both halves are made of valid parts, so this never encodes anything twice.
        Path::parse(&full).unwrap_or_else(|_| Path::from(full.as_str()))
    }

    /// The part of `key` below the root, or `None` if `key` is not below it.
    pub fn relative<'a>(&self, key: &'a Path) -> Option<&'a str> {
        let root = self.inner.root.as_ref();
        let key = key.as_ref();
        if root.is_empty() {
            return Some(key);
        }
        key.strip_prefix(root)?.strip_prefix('/')
    }

    /// Conditionally creates `rel` with `bytes`: exactly one of many racing writers wins.
    ///
    /// Both of object_store's "it is already there" outcomes (`AlreadyExists`, `Precondition`)
    /// mean the same thing here: this writer lost the race.
    pub async fn create(&self, rel: &str, bytes: Bytes) -> Result<Created> {
        self.create_with(rel, bytes, Extensions::new()).await
    }

    /// [`Meadow::create`] of an object that need not outlive a power cut (the swarm's query
    /// objects): as atomic — one racing writer wins — but on a local folder not flushed to disk.
    pub async fn create_ephemeral(&self, rel: &str, bytes: Bytes) -> Result<Created> {
        let mut extensions = Extensions::new();
        extensions.insert(durable::Ephemeral);
        self.create_with(rel, bytes, extensions).await
    }

    async fn create_with(
        &self,
        rel: &str,
        bytes: Bytes,
        extensions: Extensions,
    ) -> Result<Created> {
        let key = self.key(rel);
        let opts = PutOptions {
            mode: PutMode::Create,
            extensions,
            ..Default::default()
        };
        match self
            .inner
            .store
            .put_opts(&key, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Created::LostRace),
            Err(e) => Err(CatalogError::storage(&key, e)),
        }
    }

    /// Writes `rel` unconditionally (hints and other objects whose loss or staleness is harmless).
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let key = self.key(rel);
        self.inner
            .store
            .put(&key, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| CatalogError::storage(&key, e))
    }

    /// Reads `rel`, or `None` if it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let key = self.key(rel);
        match self.inner.store.get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| CatalogError::storage(&key, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(CatalogError::storage(&key, e)),
        }
    }

    /// The metadata of `rel` (a HEAD request), or `None` if it does not exist.
    pub async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>> {
        let key = self.key(rel);
        match self.inner.store.head(&key).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(CatalogError::storage(&key, e)),
        }
    }

    /// Whether `rel` exists (a HEAD request).
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        let key = self.key(rel);
        match self.inner.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(CatalogError::storage(&key, e)),
        }
    }

    /// Every object below `prefix` whose key sorts after `prefix/after` (exclusive), sorted.
    ///
    /// S3 pushes the offset down (`start-after`), so only the newer keys travel.
    pub async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>> {
        let prefix_key = self.key(prefix);
        let offset = self.key(&format!("{prefix}/{after}"));
        let mut objects: Vec<ObjectMeta> = self
            .inner
            .store
            .list_with_offset(Some(&prefix_key), &offset)
            .try_collect()
            .await
            .map_err(|e| CatalogError::storage(&prefix_key, e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// Every object below `prefix` (recursive), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix_key = self.key(prefix);
        let mut objects: Vec<ObjectMeta> = self
            .inner
            .store
            .list(Some(&prefix_key))
            .try_collect()
            .await
            .map_err(|e| CatalogError::storage(&prefix_key, e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The objects and sub-prefixes directly below `prefix` (one level).
    pub async fn list_dir(&self, prefix: &str) -> Result<ListResult> {
        let prefix_key = self.key(prefix);
        self.inner
            .store
            .list_with_delimiter(Some(&prefix_key))
            .await
            .map_err(|e| CatalogError::storage(&prefix_key, e))
    }

    /// Deletes the objects `keys` (full keys, as a listing returns them) with the store's bulk
    /// delete where it has one (S3's `DeleteObjects`); missing objects are not an error.
    pub async fn delete_many(&self, keys: Vec<Path>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
        let mut deleted = self.inner.store.delete_stream(stream);
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(CatalogError::storage(self.inner.root.as_ref(), e)),
            }
        }
        Ok(())
    }

    /// Deletes `rel`; a missing object is not an error.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        match self.inner.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(CatalogError::storage(&key, e)),
        }
    }

    /// The store's own clock now: the modification time of a probe object written for the
    /// purpose (a PUT's answer carries no time). Ages of objects are measured against it, so a
    /// board without a real-time clock neither expires objects early nor keeps them forever.
    pub async fn store_now(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        let rel = format!("_clock/probe_{}", uuid::Uuid::now_v7().simple());
        let key = self.key(&rel);
        self.put(&rel, Bytes::from_static(b"{}")).await?;
        let head = self.inner.store.head(&key).await;
        self.delete(&rel).await?;
        head.map(|m| m.last_modified)
            .map_err(|e| CatalogError::storage(&key, e))
    }

    /// Staging files of interrupted local writes below `rel` (object_store's `name#digits`
    /// pattern, which listings skip), with their size and age; empty for other stores.
    pub(crate) async fn staging_files(&self, rel: &str) -> Result<Vec<StagingFile>> {
        let Some(local) = &self.inner.local else {
            return Ok(vec![]);
        };
        let dir = local
            .path_to_filesystem(&self.key(rel))
            .map_err(|e| CatalogError::storage(rel, e))?;
        Ok(tokio::task::spawn_blocking(move || {
            let mut found = vec![];
            durable::staging_files(&dir, &mut found);
            found
        })
        .await?)
    }

    /// Starts streaming the object `key` (a full key, see [`Meadow::key`]) into the store.
    pub fn upload(&self, key: Path) -> Upload {
        Upload::new(Arc::clone(&self.inner.store), key)
    }

    /// Removes the folder `rel` of a local meadow when it is empty (a listing shows a local
    /// folder as a prefix even with nothing in it; object stores have no folders, so this is a
    /// no-op there). A folder that is not empty, or is already gone, stays as it is.
    pub async fn remove_empty_folder(&self, rel: &str) -> Result<()> {
        let Some(local) = &self.inner.local else {
            return Ok(());
        };
        let key = self.key(rel);
        let dir = local
            .path_to_filesystem(&key)
            .map_err(|e| CatalogError::storage(&key, e))?;
        // `remove_dir` refuses a folder that is not empty: nothing written meanwhile is lost.
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir(dir);
        })
        .await?;
        Ok(())
    }

    /// Makes an object written through [`Meadow::store`] durable before a commit refers to it.
    ///
    /// Object stores are durable once a write returns; a local file is flushed to disk with
    /// every folder up to the meadow's root, so that a power cut after the commit cannot leave a
    /// ledger pointing at a hole (a cell in a partition folder the write created included).
    pub async fn make_durable(&self, key: &Path) -> Result<()> {
        let Some(local) = &self.inner.local else {
            return Ok(());
        };
        let file = local
            .path_to_filesystem(key)
            .map_err(|e| CatalogError::storage(key, e))?;
        let root = local
            .path_to_filesystem(&self.inner.root)
            .map_err(|e| CatalogError::storage(&self.inner.root, e))?;
        let key = key.clone();
        tokio::task::spawn_blocking(move || durable::sync_file_and_ancestors(&file, &root))
            .await?
            .map_err(|source| CatalogError::Io {
                path: key.to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_joined_below_the_root() {
        let m = Meadow::from_url("memory://keys-test/some/prefix").unwrap();
        assert_eq!(m.key("a/b.json").as_ref(), "some/prefix/a/b.json");
        assert_eq!(m.key("").as_ref(), "some/prefix");
        let k = m.key("x/y");
        assert_eq!(m.relative(&k), Some("x/y"));
        assert_eq!(m.relative(&Path::from("elsewhere/x")), None);
    }

    #[test]
    fn bad_urls_are_refused_with_the_url_named() {
        for (url, needle) in [
            ("", "empty"),
            ("ftp://host/x", "unsupported scheme"),
            ("s3:///prefix", "missing bucket"),
            ("s3://bucket/p?nonsense=1", "unknown S3 option"),
            ("memory://m/a%00b", "illegal character"),
        ] {
            let err = Meadow::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains(&format!("{url:?}")), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn named_memory_meadows_share_state() {
        let a = Meadow::open("memory://shared-test").await.unwrap();
        let b = Meadow::open("memory://shared-test").await.unwrap();
        a.put("x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(b.get("x").await.unwrap().unwrap(), Bytes::from_static(b"1"));
        let private = Meadow::open("memory://").await.unwrap();
        assert!(private.get("x").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn local_create_is_exclusive_and_hides_staging() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meadow::open(dir.path().to_str().unwrap()).await.unwrap();
        assert_eq!(
            m.create("l/0.json", Bytes::from_static(b"a"))
                .await
                .unwrap(),
            Created::Yes
        );
        assert_eq!(
            m.create("l/0.json", Bytes::from_static(b"b"))
                .await
                .unwrap(),
            Created::LostRace
        );
        assert_eq!(m.get("l/0.json").await.unwrap().unwrap().as_ref(), b"a");
        let listed = m.list("l").await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        // No staging file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("l"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
