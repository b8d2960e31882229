//! The bee pool and its mason chambers.
//!
//! A mason bee seals each egg in a chamber of its own. A task runs in a [`Chamber`]: the bees it
//! holds, a DataFusion `RuntimeEnv` whose memory pool is exactly their budget (a `FairSpillPool`,
//! or a `GreedyMemoryPool` if the node asks) and whose disk manager spills into their scratch
//! folders, within the node's spill limit. Object stores and file caches are
//! the session's, shared by every chamber. Dropping the chamber frees the bees at once and
//! removes its scratch files, whatever the outcome of the task.
//!
//! Bees are handed out by a fair (first come, first served) semaphore; at most `queue_capacity`
//! tasks wait, later ones are refused with a retryable error.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use apiary_catalog::Sight;
use datafusion::common::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::chamber_exec::BeeOptions;
use crate::error::{ExecError, Result};
use crate::folder_lock::FolderLock;
use crate::node::{MemoryPoolKind, NodeConfig};
use crate::queries::QueryLog;

/// Where hash joins run (a query's memory of [`HASH_JOIN_MIN_QUERY_MEMORY`] or more), a join's
/// build side estimated below this many bytes (or, its bytes unknown, rows of 32 bytes) is
/// collected whole — one hash table the probe side's partitions share, and on the direct path one
/// sent to every task — rather than both sides repartitioned by the key. At most a sixteenth of
/// such a query's memory. DataFusion's default is 1 MiB; TPC-H SF1 with 64 MiB: 1.06× faster on
/// one node (plain frames), and its joins on two nodes of the direct path no longer shuffle
/// `lineitem` (`BENCHMARKS.md`, "Settings chosen by evidence").
pub const BROADCAST_BYTES: u64 = 64 * 1024 * 1024;

/// Below this memory per query, sessions prefer sort-merge joins (they spill; DataFusion 55's
/// hash join cannot spill its build side).
pub const HASH_JOIN_MIN_QUERY_MEMORY: u64 = 1024 * 1024 * 1024;

/// The bees of one node. Cheap to clone.
#[derive(Clone)]
pub struct BeePool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    node: NodeConfig,
    /// This pool's own folder below the node's scratch folder: `node-{pid}-{n}-{random}`.
    root: PathBuf,
    /// `{root}.lock`, locked for the pool's life: what tells other processes the folder is in use.
    lock: FolderLock,
    budget: usize,
    permits: Arc<Semaphore>,
    /// Which bees are free (index = bee id).
    free: Mutex<Vec<bool>>,
    waiting: AtomicUsize,
    /// Bytes reserved in every chamber's memory pool together.
    reserved: AtomicUsize,
    /// Bytes reserved by each chamber, on the chamber's first bee (index = bee id).
    reserved_by_bee: Vec<AtomicUsize>,
    tasks: AtomicU64,
    /// The node's metrics label (the meadow's, once the pool serves one).
    sight: parking_lot::RwLock<Sight>,
    queries: QueryLog,
}

impl fmt::Debug for BeePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeePool")
            .field("bees", &self.inner.node.bees)
            .field("budget", &self.inner.budget)
            .field("busy", &self.busy())
            .finish()
    }
}

/// A snapshot of the pool for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Bees on this node.
    pub bees: usize,
    /// Bees held by a task now.
    pub busy: usize,
    /// Each bee's budget in bytes.
    pub budget_per_bee: usize,
    /// Bytes reserved by running tasks, all chambers together.
    pub reserved: usize,
    /// Tasks waiting for bees.
    pub waiting: usize,
    /// How many tasks may wait before more are refused.
    pub queue_capacity: usize,
    /// Tasks run since the pool started.
    pub tasks: u64,
}

/// What a chamber does with work over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spill {
    /// Operators that can spill (sorts, aggregations, sort-merge joins) write to the bees'
    /// scratch folders, within the node's spill limit.
    ToScratch,
    /// Over-budget work fails with the budget named (`SET apiary.spill = false`).
    Never,
}

impl Spill {
    /// The policy of the `apiary.spill` setting.
    pub fn when(enabled: bool) -> Self {
        if enabled {
            Spill::ToScratch
        } else {
            Spill::Never
        }
    }
}

/// DataFusion's 8192 rows per batch from 32 MiB bees up; fewer below (2048 at 8 MiB), never
/// fewer than 1024.
fn batch_rows(budget_per_bee: usize) -> usize {
    (budget_per_bee / 4096).clamp(1024, 8192)
}

/// How budget errors name their chamber.
const CHAMBER_MARK: &str = "— in the chamber of";

pub(crate) fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl BeePool {
    /// The metrics this pool's queries are counted in.
    pub fn sight(&self) -> Sight {
        self.inner.sight.read().clone()
    }

    /// Counts this pool's queries in `sight` (the meadow's, so that they share its node label).
    pub fn set_sight(&self, sight: Sight) {
        *self.inner.sight.write() = sight;
    }

    /// The queries running in this pool's chambers, and the recent ones.
    pub fn queries(&self) -> &QueryLog {
        &self.inner.queries
    }

    /// A pool for `node`: creates its scratch folder (one per pool, so that pools never touch
    /// each other's files) with a folder per bee, and removes the folders of pools whose
    /// process is gone.
    pub fn new(node: NodeConfig) -> Result<Self> {
        node.validate()?;
        FolderLock::reclaim_unlocked(&node.scratch, "node-");
        let seq = POOLS.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "node-{}-{seq}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let root = node.scratch.join(&name);
        // The lock first, the folder second: a folder without a lock is never a live pool's.
        let lock = FolderLock::take(&node.scratch, &name).map_err(|(path, source)| {
            ExecError::Scratch {
                path: path.display().to_string(),
                source,
            }
        })?;
        for b in 0..node.bees {
            let dir = root.join(format!("bee-{b}"));
            std::fs::create_dir_all(&dir).map_err(|source| ExecError::Scratch {
                path: dir.display().to_string(),
                source,
            })?;
        }
        Ok(Self {
            inner: Arc::new(PoolInner {
                root,
                lock,
                budget: node.memory_per_bee() as usize,
                permits: Arc::new(Semaphore::new(node.bees)),
                free: Mutex::new(vec![true; node.bees]),
                waiting: AtomicUsize::new(0),
                reserved: AtomicUsize::new(0),
                reserved_by_bee: (0..node.bees).map(|_| AtomicUsize::new(0)).collect(),
                tasks: AtomicU64::new(0),
                sight: parking_lot::RwLock::new(Sight::default()),
                queries: QueryLog::default(),
                node,
            }),
        })
    }

    /// The node's settings the pool was built from.
    pub fn node(&self) -> &NodeConfig {
        &self.inner.node
    }

    /// The DataFusion settings of a session whose queries run on this pool's bees (with
    /// [`crate::ChamberRule`]): `target_partitions` = the bees a query holds, the `apiary.*`
    /// options, sort-merge joins when a query's memory is below
    /// [`HASH_JOIN_MIN_QUERY_MEMORY`] (DataFusion 55's hash join cannot spill its build side; a
    /// sort-merge join can) and build sides up to [`BROADCAST_BYTES`] collected whole above it,
    /// and a sort's merge reservation scaled to the budget (DataFusion's
    /// 10 MB default would not fit a small bee).
    pub fn session_config(&self) -> SessionConfig {
        let query_memory = self.inner.budget as u64 * self.bees() as u64;
        let mut config = SessionConfig::new()
            .with_target_partitions(self.bees())
            .with_option_extension(BeeOptions::default());
        let execution = &mut config.options_mut().execution;
        execution.sort_spill_reservation_bytes = execution
            .sort_spill_reservation_bytes
            .min((query_memory / 16).max(64 * 1024) as usize);
        let optimizer = &mut config.options_mut().optimizer;
        if query_memory < HASH_JOIN_MIN_QUERY_MEMORY {
            optimizer.prefer_hash_join = false;
        } else {
            optimizer.hash_join_single_partition_threshold = BROADCAST_BYTES as usize;
            optimizer.hash_join_single_partition_threshold_rows = (BROADCAST_BYTES / 32) as usize;
        }
        // Batches sized to the bee: a merge of spilled sort runs holds a batch per run, and
        // at 8192 rows a sort on 8 MiB bees could not reserve them (it can at 2048).
        config.with_batch_size(batch_rows(self.inner.budget))
    }

    /// This pool's scratch folder (a folder per bee below it).
    pub fn scratch(&self) -> &std::path::Path {
        &self.inner.root
    }

    /// How many bees the node has.
    pub fn bees(&self) -> usize {
        self.inner.node.bees
    }

    /// Each bee's memory budget, in bytes.
    pub fn budget_per_bee(&self) -> usize {
        self.inner.budget
    }

    /// The bound of DataFusion's file metadata cache (Parquet footers and page indexes, kept
    /// across queries) on a node with these bees: a 32nd of their memory, at least DataFusion's
    /// default (50 MiB) and at most 1 GiB. Every runtime a node scans cells in (its own
    /// queries', its swarm worker's) takes it, as the default is small next to thousands of
    /// cells on a large node.
    pub fn footer_cache_limit(&self) -> usize {
        const DEFAULT: usize =
            datafusion::execution::cache::cache_manager::DEFAULT_METADATA_CACHE_LIMIT;
        (self.inner.budget * self.bees() / 32).clamp(DEFAULT, 1 << 30)
    }

    /// How many bees a task holds now.
    pub fn busy(&self) -> usize {
        self.inner.free.lock().iter().filter(|f| !**f).count()
    }

    /// Which bees are in a chamber now (index = bee id).
    pub fn busy_bees(&self) -> Vec<bool> {
        self.inner.free.lock().iter().map(|free| !free).collect()
    }

    /// How many tasks wait for bees now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Bytes reserved by running tasks, all chambers together.
    pub fn reserved(&self) -> usize {
        self.inner.reserved.load(Ordering::SeqCst)
    }

    /// Bytes reserved by each chamber now, on its first bee (index = bee id; 0 for an idle bee
    /// and for the later bees of a chamber).
    pub fn reserved_by_bee(&self) -> Vec<usize> {
        self.inner
            .reserved_by_bee
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect()
    }

    /// A snapshot of the pool, for status displays.
    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            bees: self.bees(),
            busy: self.busy(),
            budget_per_bee: self.inner.budget,
            reserved: self.reserved(),
            waiting: self.waiting(),
            queue_capacity: self.inner.node.queue_capacity,
            tasks: self.inner.tasks.load(Ordering::SeqCst),
        }
    }

    /// Waits (fairly) for `n` bees and seals them in a chamber built on `base` (whose object
    /// stores and caches the chamber shares), spilling as `spill` says. Dropping the future while
    /// it waits leaves the queue.
    pub async fn acquire(&self, n: usize, base: &RuntimeEnv, spill: Spill) -> Result<Chamber> {
        self.acquire_avoiding(n, base, spill, &[]).await
    }

    /// `n` bees now, or `None` when they are not free at once (or others wait in the queue):
    /// for work that should go elsewhere rather than wait — a swarm task is claimed only once a
    /// bee is held for it.
    pub fn try_acquire(
        &self,
        n: usize,
        base: &RuntimeEnv,
        spill: Spill,
    ) -> Result<Option<Chamber>> {
        let inner = &self.inner;
        if n == 0 || n > inner.node.bees {
            return Err(ExecError::TooManyBees {
                asked: n,
                bees: inner.node.bees,
            });
        }
        if inner.waiting.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        let Ok(permit) = Arc::clone(&inner.permits).try_acquire_many_owned(n as u32) else {
            return Ok(None);
        };
        let bees = {
            let mut free = inner.free.lock();
            let chosen: Vec<usize> = (0..free.len()).filter(|b| free[*b]).take(n).collect();
            for b in &chosen {
                free[*b] = false;
            }
            chosen
        };
        inner.tasks.fetch_add(1, Ordering::SeqCst);
        Chamber::seal(Arc::clone(&self.inner), bees, permit, base, spill).map(Some)
    }

    /// Like [`BeePool::acquire`], preferring bees not in `avoid` (a retry goes elsewhere).
    pub async fn acquire_avoiding(
        &self,
        n: usize,
        base: &RuntimeEnv,
        spill: Spill,
        avoid: &[usize],
    ) -> Result<Chamber> {
        let inner = &self.inner;
        if n == 0 || n > inner.node.bees {
            return Err(ExecError::TooManyBees {
                asked: n,
                bees: inner.node.bees,
            });
        }
        // Refused when it would have to wait behind a full queue.
        let would_wait = inner.permits.available_permits() < n;
        let already = inner.waiting.fetch_add(1, Ordering::SeqCst);
        let _queued = Queued(&inner.waiting);
        if would_wait && already >= inner.node.queue_capacity {
            return Err(ExecError::QueueFull {
                waiting: already,
                capacity: inner.node.queue_capacity,
            });
        }
        let permit = Arc::clone(&inner.permits)
            .acquire_many_owned(n as u32)
            .await
            .map_err(|_| ExecError::InvalidSetting {
                name: "pool".into(),
                reason: "the bee pool was shut down".into(),
            })?;
        let bees = {
            let mut free = inner.free.lock();
            let mut chosen: Vec<usize> = (0..free.len())
                .filter(|b| free[*b] && !avoid.contains(b))
                .take(n)
                .collect();
            if chosen.len() < n {
                let more: Vec<usize> = (0..free.len())
                    .filter(|b| free[*b] && !chosen.contains(b))
                    .take(n - chosen.len())
                    .collect();
                chosen.extend(more);
            }
            for b in &chosen {
                free[*b] = false;
            }
            chosen
        };
        inner.tasks.fetch_add(1, Ordering::SeqCst);
        Chamber::seal(Arc::clone(&self.inner), bees, permit, base, spill)
    }
}

/// Counts a waiting task while it is alive.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Pools created by this process, to name their folders.
static POOLS: AtomicUsize = AtomicUsize::new(0);

fn bee_dir(pool: &PoolInner, bee: usize) -> PathBuf {
    pool.root.join(format!("bee-{bee}"))
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        // Still locked (the file closes after this): no one takes the name meanwhile.
        self.lock.remove();
    }
}

/// The bees of one task, with the runtime that confines it.
pub struct Chamber {
    pool: Arc<PoolInner>,
    bees: Vec<usize>,
    /// `bee 2` or `bees 0, 1`, for messages.
    label: String,
    runtime: Arc<RuntimeEnv>,
    dirs: Vec<PathBuf>,
    budget: usize,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Chamber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chamber")
            .field("bees", &self.bees)
            .field("budget", &self.budget)
            .finish()
    }
}

impl Chamber {
    fn seal(
        pool: Arc<PoolInner>,
        bees: Vec<usize>,
        permit: OwnedSemaphorePermit,
        base: &RuntimeEnv,
        spill: Spill,
    ) -> Result<Chamber> {
        let budget = pool.budget * bees.len();
        let task = uuid::Uuid::new_v4().simple().to_string();
        let mut dirs = vec![];
        for b in &bees {
            let bee = bee_dir(&pool, *b);
            // Leftovers of earlier tasks of this bee (files still open when they ended).
            if let Ok(entries) = std::fs::read_dir(&bee) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            let dir = bee.join(format!("task-{task}"));
            std::fs::create_dir_all(&dir).map_err(|source| ExecError::Scratch {
                path: dir.display().to_string(),
                source,
            })?;
            dirs.push(dir);
        }
        let label = match bees.as_slice() {
            [one] => format!("bee {one}"),
            many => format!(
                "bees {}",
                many.iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mode = match spill {
            Spill::ToScratch => DiskManagerMode::Directories(dirs.clone()),
            Spill::Never => DiskManagerMode::Disabled,
        };
        let inner: Box<dyn MemoryPool> = match pool.node.memory_pool {
            MemoryPoolKind::Fair => Box::new(FairSpillPool::new(budget)),
            MemoryPoolKind::Greedy => Box::new(GreedyMemoryPool::new(budget)),
        };
        let mut runtime = base.clone();
        runtime.memory_pool = Arc::new(ChamberPool {
            inner,
            pool: Arc::clone(&pool),
            first: bees[0],
            label: label.clone(),
            budget,
            spill_cap: budget - budget / UNSPILLABLE_SHARE,
            spillable: AtomicUsize::new(0),
        });
        let mut disk = DiskManagerBuilder::default().with_mode(mode);
        if let Some(limit) = pool.node.scratch_limit {
            // This chamber's share of the node's spill space.
            let share = limit / pool.node.bees.max(1) as u64 * bees.len() as u64;
            disk = disk.with_max_temp_directory_size(share);
        }
        runtime.disk_manager = Arc::new(disk.build()?);
        Ok(Chamber {
            pool,
            bees,
            label,
            runtime: Arc::new(runtime),
            dirs,
            budget,
            _permit: permit,
        })
    }

    /// The bees held, by id.
    pub fn bees(&self) -> &[usize] {
        &self.bees
    }

    /// The runtime to execute the task with.
    pub fn runtime(&self) -> Arc<RuntimeEnv> {
        Arc::clone(&self.runtime)
    }

    /// `base` (a session's task context) with this chamber's runtime: what a plan executes with
    /// to stay inside the chamber.
    pub fn task_context(&self, base: &TaskContext) -> Arc<TaskContext> {
        apiary_catalog::with_runtime(base, Arc::clone(&self.runtime))
    }

    /// The memory budget of the chamber (its bees' budgets together).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The folders this task spills into (one per bee).
    pub fn scratch_dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Names the bees and their budget in a "resources exhausted" error (whichever operator
    /// raised it); other errors pass unchanged.
    pub fn explain(&self, e: DataFusionError) -> DataFusionError {
        let exhausted = matches!(e.find_root(), DataFusionError::ResourcesExhausted(_));
        if !exhausted || e.to_string().contains(CHAMBER_MARK) {
            return e;
        }
        let text = match &e {
            DataFusionError::ResourcesExhausted(msg) => msg.clone(),
            other => other.to_string(),
        };
        DataFusionError::ResourcesExhausted(format!(
            "{text} {CHAMBER_MARK} {}, whose budget is {}",
            self.label,
            mib(self.budget)
        ))
    }
}

impl Drop for Chamber {
    fn drop(&mut self) {
        for d in &self.dirs {
            if let Err(e) = std::fs::remove_dir_all(d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("could not remove scratch folder {}: {e}", d.display());
            }
        }
        let mut free = self.pool.free.lock();
        for b in &self.bees {
            free[*b] = true;
        }
        // The permit is released right after, when the field is dropped.
    }
}

/// The part of a chamber's budget (one in this many bytes) that operators which can spill may
/// not take: it is kept for those that cannot. A `SortPreservingMergeExec` over the sorts of
/// several partitions holds a batch of each and cannot spill; with the sorts free to fill the
/// whole budget, it failed whenever one partition's sort was still gathering when another's
/// first batch came (`a_merge_above_spilling_sorts_finds_memory`, 1 in 12 clustered writes on
/// 8 MiB bees of a busy machine).
const UNSPILLABLE_SHARE: usize = 4;

/// The memory pool of a chamber: a fair or greedy pool of the chamber's budget that keeps the pool's
/// total of reserved bytes (for the colony temperature), keeps a share of the budget from the
/// operators that can spill ([`UNSPILLABLE_SHARE`]), and names the bees in its errors.
struct ChamberPool {
    inner: Box<dyn MemoryPool>,
    pool: Arc<PoolInner>,
    /// The chamber's first bee, whose slot of `reserved_by_bee` is this chamber's.
    first: usize,
    label: String,
    budget: usize,
    /// What the reservations of spilling operators may hold together.
    spill_cap: usize,
    /// What they hold.
    spillable: AtomicUsize,
}

impl fmt::Debug for ChamberPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChamberPool")
            .field("inner", &self.inner)
            .field("label", &self.label)
            .field("budget", &self.budget)
            .finish()
    }
}

impl fmt::Display for ChamberPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chamber of {} ({} budget)", self.label, mib(self.budget))
    }
}

impl ChamberPool {
    /// Counts `bytes` more reserved in the bee pool's totals (the colony temperature).
    fn add(&self, bytes: usize) {
        self.pool.reserved.fetch_add(bytes, Ordering::SeqCst);
        self.pool.reserved_by_bee[self.first].fetch_add(bytes, Ordering::SeqCst);
    }

    /// Takes `additional` bytes of the spilling operators' cap for `reservation`, or says why not
    /// (the operator then spills). Bytes of operators that cannot spill are not capped here.
    fn take_spillable(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if !reservation.consumer().can_spill() {
            return Ok(());
        }
        let cap = self.spill_cap;
        self.spillable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held + additional <= cap).then_some(held + additional)
            })
            .map(|_| ())
            .map_err(|held| {
                DataFusionError::ResourcesExhausted(format!(
                    "Failed to allocate additional {} for {} with {} already allocated for this \
                     reservation - operators that can spill hold {} of the {} they may hold \
                     {CHAMBER_MARK} {}, whose budget is {}",
                    mib(additional),
                    reservation.consumer().name(),
                    mib(reservation.size()),
                    mib(held),
                    mib(cap),
                    self.label,
                    mib(self.budget)
                ))
            })
    }
}

impl MemoryPool for ChamberPool {
    fn name(&self) -> &str {
        "apiary_chamber"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.add(additional);
        if reservation.consumer().can_spill() {
            self.spillable.fetch_add(additional, Ordering::SeqCst);
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.pool.reserved.fetch_sub(shrink, Ordering::SeqCst);
        self.pool.reserved_by_bee[self.first].fetch_sub(shrink, Ordering::SeqCst);
        if reservation.consumer().can_spill() {
            self.spillable.fetch_sub(shrink, Ordering::SeqCst);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        self.take_spillable(reservation, additional)?;
        match self.inner.try_grow(reservation, additional) {
            Ok(()) => {
                self.add(additional);
                Ok(())
            }
            Err(e) => {
                if reservation.consumer().can_spill() {
                    self.spillable.fetch_sub(additional, Ordering::SeqCst);
                }
                Err(match e.find_root() {
                    DataFusionError::ResourcesExhausted(msg) => {
                        DataFusionError::ResourcesExhausted(format!(
                            "{msg} — in the chamber of {}, whose budget is {}",
                            self.label,
                            mib(self.budget)
                        ))
                    }
                    _ => e,
                })
            }
        }
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}
