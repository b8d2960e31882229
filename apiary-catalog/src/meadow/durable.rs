//! Local-disk writes that survive a power cut, as an [`ObjectStore`] over `LocalFileSystem`.
//!
//! A conditional create — every commit point — is staged in a hidden file, flushed, hard-linked
//! into place (the link fails if the key exists: exactly one racing writer wins), and then every
//! folder the create made is flushed up to one that existed, so that neither the entry nor the
//! folders leading to it can vanish after the commit returned. Everything else is
//! `LocalFileSystem`'s own behaviour (staging file renamed into place; readers never see half an
//! object). Going through the store, rather than around it, lets a test wrap the whole meadow —
//! commits included — in a fault-injecting store.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Marks a conditional create (in [`PutOptions::extensions`]) whose object need not outlive a
/// power cut — the swarm's `_queries/` objects, which serve only the processes running when they
/// are written: it is created exactly as atomically, but not flushed (on an SD card a flush costs
/// milliseconds, several per task). Other stores ignore it.
#[derive(Debug, Clone, Copy)]
pub struct Ephemeral;

/// `LocalFileSystem` with durable conditional creates.
#[derive(Debug)]
pub(crate) struct DurableFs {
    inner: Arc<LocalFileSystem>,
}

impl std::fmt::Display for DurableFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableFs({})", self.inner)
    }
}

impl DurableFs {
    pub(crate) fn new(inner: Arc<LocalFileSystem>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl ObjectStore for DurableFs {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if opts.mode != PutMode::Create {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let file = self.inner.path_to_filesystem(location)?;
        let bytes: Bytes = payload.into();
        let flush = opts.extensions.get::<Ephemeral>().is_none();
        let outcome = tokio::task::spawn_blocking(move || create(&file, &bytes, flush))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "DurableFs",
                source: Box::new(e),
            })?;
        match outcome {
            Ok(true) => Ok(PutResult {
                e_tag: None,
                version: None,
            }),
            Ok(false) => Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "the key exists".into(),
            }),
            Err(e) => Err(object_store::Error::Generic {
                store: "DurableFs",
                source: Box::new(e),
            }),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
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

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Creates the folder `dir` and its missing ancestors; returns the ones this call made,
/// outermost first (a folder a racing writer made is listed too: flushing it again is harmless).
fn create_dirs(dir: &FsPath) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = vec![];
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` with `bytes` unless it exists: `Ok(true)` when this call created it. With
/// `flush`, the file and the folders leading to it are synced before it returns.
pub(crate) fn create(path: &FsPath, bytes: &[u8], flush: bool) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no parent folder"))?;
    let made = create_dirs(dir)?;
    // `name#digits` is object_store's staging pattern: listings skip it.
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!("#{}", rand::random::<u32>()));
    let staging = PathBuf::from(staging);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staging)?;
    let outcome = (|| {
        file.write_all(bytes)?;
        if flush {
            file.sync_all()?;
        }
        match fs::hard_link(&staging, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&staging);
    let created = outcome?;
    if created && flush {
        sync_dir(dir)?;
        // Each folder made here is an entry of its parent: flush those too, innermost last.
        for d in &made {
            if let Some(parent) = d.parent() {
                sync_dir(parent)?;
            }
        }
    }
    Ok(created)
}

/// Flushes `file` and every folder from its own up to `root`: a cell written into a partition
/// folder that did not exist before keeps its folder after a power cut.
pub(crate) fn sync_file_and_ancestors(file: &FsPath, root: &FsPath) -> std::io::Result<()> {
    File::open(file)?.sync_all()?;
    let mut at = file.parent();
    while let Some(dir) = at {
        sync_dir(dir)?;
        if dir == root || !dir.starts_with(root) {
            break;
        }
        at = dir.parent();
    }
    Ok(())
}

/// A staging file left by an interrupted local write.
#[derive(Debug, Clone)]
pub(crate) struct StagingFile {
    pub path: PathBuf,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// Collects the staging files (`name#digits`) below `dir`.
pub(crate) fn staging_files(dir: &FsPath, found: &mut Vec<StagingFile>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else {
            continue;
        };
        if meta.is_dir() {
            staging_files(&path, found);
            continue;
        }
        let staged = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, digits)| {
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            });
        if let (true, Ok(modified)) = (staged, meta.modified()) {
            found.push(StagingFile {
                path,
                size: meta.len(),
                modified: modified.into(),
            });
        }
    }
}

/// Checks that the folder's file system can hard-link, which conditional creates need. FAT and
/// exFAT (USB sticks, SD cards formatted on a camera) and some network mounts cannot.
pub(crate) fn check_hard_links(root: &FsPath) -> Result<(), String> {
    let probe = root.join(format!(".apiary-link-probe-{}", rand::random::<u64>()));
    let linked = probe.with_extension("linked");
    let outcome = (|| {
        File::create(&probe)?;
        fs::hard_link(&probe, &linked)
    })();
    let _ = fs::remove_file(&linked);
    let _ = fs::remove_file(&probe);
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => Err(refusal(root, &e.to_string())),
    }
}

fn refusal(root: &FsPath, why: &str) -> String {
    format!(
        "the {} file system of {} cannot hard-link files ({why}); Apiary commits by linking a \
         flushed file into place so that exactly one of two racing writers wins. Use a folder on \
         ext4, xfs, btrfs, APFS or NTFS, or an S3 bucket",
        fs_type(root).unwrap_or_else(|| "unknown".into()),
        root.display()
    )
}

/// The type of the file system holding `path`, from the mount table (Linux).
pub(crate) fn fs_type(path: &FsPath) -> Option<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            // The mount table escapes spaces and other octets as \ooo.
            let point = point.replace("\\040", " ");
            path.starts_with(&point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_makes_its_folders_and_only_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c/0.json");
        assert!(create(&deep, b"one", true).unwrap());
        assert!(!create(&deep, b"two", true).unwrap());
        // Unflushed, the same race: one create wins.
        let light = dir.path().join("q/1/claim.json");
        assert!(create(&light, b"one", false).unwrap());
        assert!(!create(&light, b"two", false).unwrap());
        assert_eq!(std::fs::read(&light).unwrap(), b"one");
        assert_eq!(fs::read(&deep).unwrap(), b"one");
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b/c"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no staging file is left: {names:?}");
        sync_file_and_ancestors(&deep, dir.path()).unwrap();
    }

    #[test]
    fn hard_links_are_probed_and_a_refusal_names_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        check_hard_links(dir.path()).unwrap();
        let message = refusal(dir.path(), "Operation not permitted");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("cannot hard-link"), "{message}");
        assert!(fs_type(dir.path()).is_some());
    }
}
