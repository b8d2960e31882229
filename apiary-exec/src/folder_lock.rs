//! Folders owned by a live process: a bee pool's scratch folder, a node's cell cache.
//!
//! The owner holds an advisory lock on `{parent}/{name}.lock` for its life; the system releases it
//! when the process ends, however it ends. So a folder whose lock no one holds belongs to no live
//! process — found without `/proc`, which works on macOS and across PID namespaces (a container
//! sharing the folder).

use std::fs::File;
use std::path::{Path, PathBuf};

/// The lock a live process holds on `{parent}/{name}.lock`.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    _file: File,
}

impl FolderLock {
    /// Creates and locks `{name}.lock` under a temporary name, then renames it into place, so
    /// that no other process ever sees it unlocked. The error names the file it is about.
    pub fn take(parent: &Path, name: &str) -> Result<Self, (PathBuf, std::io::Error)> {
        std::fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), e))?;
        let path = parent.join(format!("{name}.lock"));
        let fresh = parent.join(format!("{name}.lock.new"));
        let file = File::create(&fresh).map_err(|e| (fresh.clone(), e))?;
        file.lock().map_err(|e| (fresh.clone(), e))?;
        std::fs::rename(&fresh, &path).map_err(|e| (path.clone(), e))?;
        Ok(Self { path, _file: file })
    }

    /// Locks an existing `{name}.lock` if no other process holds it (`None` when one does):
    /// for taking over a folder a stopped process left, without racing a live one.
    pub fn try_existing(parent: &Path, name: &str) -> Option<Self> {
        let path = parent.join(format!("{name}.lock"));
        let file = File::open(&path).ok()?;
        file.try_lock().ok()?;
        Some(Self { path, _file: file })
    }

    /// Removes the lock file (the folder it guards is gone; the lock itself is released when
    /// this is dropped, after).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Removes the folders below `parent` whose name starts with `prefix` and whose lock no live
    /// process holds (or that have none), with their lock files.
    pub fn reclaim_unlocked(parent: &Path, prefix: &str) {
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with(prefix) || !entry.path().is_dir() {
                continue;
            }
            let lock = parent.join(format!("{name}.lock"));
            // Held while the folder goes, so that no one else reclaims it at the same time.
            let _held = match File::open(&lock) {
                Ok(file) => match file.try_lock() {
                    Ok(()) => Some(file),
                    Err(_) => continue, // a live owner's, or another process reclaiming it now
                },
                Err(_) => None, // never locked: its owner died before, or is from an older version
            };
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                let path = entry.path();
                log::warn!(
                    "could not remove {}, left by a stopped process: {e}",
                    path.display()
                );
                continue;
            }
            let _ = std::fs::remove_file(&lock);
        }
    }
}
