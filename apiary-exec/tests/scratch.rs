//! A pool's scratch folder is its own while it lives, and reclaimed once its process is gone —
//! told by a lock the live pool holds, not by process ids (which macOS, or a container in
//! another PID namespace sharing the folder, does not show in `/proc`).

use std::fs::File;
use std::path::Path;

use apiary_exec::{BeePool, NodeConfig};

fn pool(scratch: &Path) -> BeePool {
    BeePool::new(NodeConfig::fixed(1, 64 << 20, scratch)).unwrap()
}

/// A pool folder as another process leaves it: `{name}/bee-0` and `{name}.lock`.
fn foreign_pool(scratch: &Path, name: &str) -> (std::path::PathBuf, File) {
    let dir = scratch.join(name);
    std::fs::create_dir_all(dir.join("bee-0")).unwrap();
    let lock = File::create(scratch.join(format!("{name}.lock"))).unwrap();
    (dir, lock)
}

#[test]
fn a_pools_folder_is_kept_while_its_lock_is_held_and_reclaimed_once_free() {
    let scratch = tempfile::tempdir().unwrap();
    // A live pool of a process this one cannot see (its pid is not in this /proc): locked.
    let (live_dir, live_lock) = foreign_pool(scratch.path(), "node-4000000000-0-aaaaaaaa");
    live_lock.lock().unwrap();
    // A pool whose process died (its pid reused by a live process, here this one): unlocked.
    let dead = format!("node-{}-77-bbbbbbbb", std::process::id());
    let (dead_dir, _unlocked) = foreign_pool(scratch.path(), &dead);

    let first = pool(scratch.path());
    assert!(live_dir.exists(), "a live pool's folder was removed");
    assert!(!dead_dir.exists(), "a dead pool's folder was kept");
    assert!(!scratch.path().join(format!("{dead}.lock")).exists());

    // A second pool starting beside the first leaves it alone.
    let second = pool(scratch.path());
    assert!(first.scratch().join("bee-0").exists());
    drop(second);

    // Once the other process is gone (its lock released), its folder goes with the next pool.
    drop(live_lock);
    let third = pool(scratch.path());
    assert!(!live_dir.exists(), "a released pool's folder was kept");

    // A pool removes its own folder and lock when dropped.
    let root = first.scratch().to_path_buf();
    drop(first);
    assert!(!root.exists());
    let lock = format!("{}.lock", root.file_name().unwrap().to_string_lossy());
    assert!(!scratch.path().join(lock).exists());
    drop(third);
}
