//! A swarm member: heartbeat, world view, worker, and the local cell cache.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apiary_catalog::Meadow;
use apiary_exec::Colony;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::cache::{CacheStatus, CellCache};
use crate::cache_index::{CacheIndex, cache_index_key};
use crate::codec::ApiaryCodec;
use crate::config::SwarmConfig;
use crate::error::Result;
use crate::fragment::ScanMatcher;
use crate::heartbeat::{Heartbeat, heartbeat_key};
use crate::rule::SwarmRule;
use crate::world_view::{NodeView, WorldView};

/// A changed cache index is written again at most every this many beats: a cache filling
/// during a query changes with every cell.
const CACHE_INDEX_EVERY: u64 = 5;

/// The cache index this node last wrote: its version, and at which beat.
#[derive(Debug, Default, Clone, Copy)]
struct IndexWritten {
    version: u64,
    at_seq: Option<u64>,
}

/// Heartbeat writes that may be under way at once when the store is slow.
const MAX_BEATS_IN_FLIGHT: usize = 3;

impl NodeInner {
    /// Whether this node coordinates `query` now (its heartbeats list it).
    pub(crate) fn coordinates(&self, query: &str) -> bool {
        lock(&self.coordinating).contains(query)
    }

    /// This node's clock (with the fault-injection skew, if any), for informative timestamps.
    pub(crate) fn clock_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.config.debug_clock_skew_ms
    }
}

pub(crate) struct NodeInner {
    pub config: SwarmConfig,
    /// The meadow, for coordination objects and partial results.
    pub meadow: Meadow,
    /// The same meadow through a client of its own, for heartbeats: a beat never waits for a
    /// connection behind this node's large uploads.
    pub membership: Meadow,
    pub colony: Colony,
    pub cache: Arc<CellCache>,
    pub world: WorldView,
    /// Decodes fragments and lends its functions to tasks; reads cells through the cache.
    pub session: SessionContext,
    pub codec: ApiaryCodec,
    pub matcher: ScanMatcher,
    /// Wakes the worker at once (a query was written, a task finished).
    pub nudge: Notify,
    /// Tasks this node's worker runs now.
    pub running: Arc<AtomicUsize>,
    pub stopping: AtomicBool,
    /// The queries this node coordinates now, listed in its heartbeats (see [`Lease`]).
    coordinating: Mutex<BTreeSet<String>>,
    /// Tasks (query, task) whose attempts failed on this node: it leaves their retries to others.
    pub failed: Mutex<BTreeSet<(String, usize)>>,
    /// One permit per heartbeat write under way; leaving takes them all, so that no late beat
    /// lands after the heartbeat is deleted.
    beats: Arc<Semaphore>,
    seq: AtomicU64,
    index: Mutex<IndexWritten>,
    started_ms: i64,
    loops: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A coordinator's lease on one query folder, held while the query runs: the node's heartbeats
/// list the query, and no node sweeps a folder a live heartbeat lists. Dropping it (the query
/// ended, or its coordination was dropped half-way) ends the lease.
pub(crate) struct Lease {
    node: Arc<NodeInner>,
    query: String,
}

impl Lease {
    pub(crate) fn take(node: &Arc<NodeInner>, query: &str) -> Self {
        lock(&node.coordinating).insert(query.to_string());
        Self {
            node: node.clone(),
            query: query.to_string(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.node.coordinating).remove(&self.query);
    }
}

/// This node's membership of the swarm. Cheap to clone.
#[derive(Clone)]
pub struct SwarmNode {
    pub(crate) inner: Arc<NodeInner>,
}

impl std::fmt::Debug for SwarmNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmNode")
            .field("id", &self.inner.config.node_id)
            .finish()
    }
}

/// A snapshot for status displays.
#[derive(Debug, Clone)]
pub struct SwarmStatus {
    pub node_id: String,
    pub nodes: Vec<NodeView>,
    pub cache: CacheStatus,
    pub running_tasks: usize,
    /// Parquet footers (with their page indexes) in DataFusion's metadata cache of this node's
    /// worker, kept across tasks and queries.
    pub footers_cached: usize,
}

impl SwarmNode {
    /// Joins the swarm of `meadow`: writes this node's first heartbeat, reads the world view, and
    /// starts the heartbeat and view loops (on `io`, Apiary's own runtime, so that a busy node
    /// keeps beating) and the worker (on the caller's runtime, where the bees' work runs).
    pub async fn join(
        meadow: Meadow,
        colony: Colony,
        io: &Handle,
        config: SwarmConfig,
    ) -> Result<SwarmNode> {
        let cache_dir = config.cache_dir.join(format!("node_{}", config.node_id));
        let cache = Arc::new(CellCache::new(
            meadow.store().clone(),
            cache_dir,
            config.cache_bytes,
        )?);
        let runtime = RuntimeEnvBuilder::new().build_arc()?;
        runtime.register_object_store(meadow.object_store_url().as_ref(), cache.clone());
        let session = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let matcher = ScanMatcher {
            store_url: meadow.object_store_url().clone(),
            root: meadow.root().to_string(),
        };
        let membership = meadow.dedicated()?;
        let inner = Arc::new(NodeInner {
            world: WorldView::new(membership.clone(), config.clone()),
            membership,
            codec: ApiaryCodec::new(Some(colony.pool().clone())),
            config,
            meadow,
            colony,
            cache,
            session,
            matcher,
            nudge: Notify::new(),
            running: Arc::new(AtomicUsize::new(0)),
            stopping: AtomicBool::new(false),
            coordinating: Mutex::new(BTreeSet::new()),
            failed: Mutex::new(BTreeSet::new()),
            beats: Arc::new(Semaphore::new(MAX_BEATS_IN_FLIGHT)),
            seq: AtomicU64::new(0),
            index: Mutex::new(IndexWritten::default()),
            started_ms: chrono::Utc::now().timestamp_millis(),
            loops: Mutex::new(vec![]),
        });
        let node = SwarmNode { inner };
        node.beat().await?;
        node.inner.world.poll().await?;

        let beats = {
            let node = node.clone();
            io.spawn(async move {
                // Beats keep their own schedule: a slow one does not hold back the next (up to
                // a few in flight), so a slow store delays them without thinning them out.
                let mut ticks = tokio::time::interval(node.inner.config.heartbeat_interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    let Ok(permit) = node.inner.beats.clone().try_acquire_owned() else {
                        continue; // as many beats in flight as allowed
                    };
                    let node = node.clone();
                    tokio::spawn(async move {
                        if node.inner.stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        if let Err(e) = node.beat().await {
                            log::warn!("node {}: heartbeat failed: {e}", node.id());
                        }
                        drop(permit);
                    });
                }
            })
        };
        let view = {
            let node = node.clone();
            io.spawn(async move {
                loop {
                    tokio::time::sleep(node.inner.config.view_interval).await;
                    if let Err(e) = node.inner.world.poll().await {
                        log::warn!("node {}: reading the world view failed: {e}", node.id());
                    }
                }
            })
        };
        let worker = tokio::spawn(crate::worker::worker_loop(node.inner.clone()));
        node.inner
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([beats, view, worker]);
        Ok(node)
    }

    pub fn id(&self) -> &str {
        &self.inner.config.node_id
    }

    pub fn config(&self) -> &SwarmConfig {
        &self.inner.config
    }

    pub fn world(&self) -> &WorldView {
        &self.inner.world
    }

    pub fn cache(&self) -> &CellCache {
        &self.inner.cache
    }

    /// The physical optimizer rule that distributes this meadow's scans through this node.
    pub fn rule(&self) -> SwarmRule {
        SwarmRule::new(self.inner.clone())
    }

    pub fn status(&self) -> SwarmStatus {
        SwarmStatus {
            node_id: self.id().to_string(),
            nodes: self.inner.world.nodes(),
            cache: self.inner.cache.status(),
            running_tasks: self.inner.running.load(Ordering::SeqCst),
            footers_cached: self
                .inner
                .session
                .runtime_env()
                .cache_manager
                .get_file_metadata_cache()
                .len(),
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        let t = self.inner.colony.temperature();
        let cache = self.inner.cache.status();
        Heartbeat {
            node_id: self.id().to_string(),
            seq: self.inner.seq.fetch_add(1, Ordering::SeqCst) + 1,
            clock_ms: self.inner.clock_ms(),
            started_ms: self.inner.started_ms,
            bees: t.bees,
            budget_per_bee: self.inner.colony.pool().budget_per_bee() as u64,
            busy_bees: t.busy_bees,
            waiting: t.waiting,
            temperature: t.value,
            band: t.band,
            cache_bytes: cache.bytes,
            cache_cells: cache.cells,
            cache_version: lock(&self.inner.index).version,
            version: env!("CARGO_PKG_VERSION").to_string(),
            queries: lock(&self.inner.coordinating).iter().cloned().collect(),
        }
    }

    /// Writes one heartbeat now (after the cache index, if the cache changed).
    pub async fn beat(&self) -> Result<()> {
        if let Err(e) = self.write_cache_index().await {
            log::warn!("node {}: writing the cache index failed: {e}", self.id());
        }
        let hb = self.heartbeat();
        self.inner
            .membership
            .put(&heartbeat_key(self.id()), hb.encode()?)
            .await?;
        self.inner.world.observe_own(hb);
        Ok(())
    }

    /// Writes the cache index if the cache changed since the last one, and that one is at least
    /// [`CACHE_INDEX_EVERY`] beats old.
    async fn write_cache_index(&self) -> Result<()> {
        let version = self.inner.cache.version();
        let seq = self.inner.seq.load(Ordering::SeqCst);
        let written = *lock(&self.inner.index);
        let recent = written
            .at_seq
            .is_some_and(|at| seq < at + CACHE_INDEX_EVERY);
        if version == written.version || recent {
            return Ok(());
        }
        let index = CacheIndex {
            node_id: self.id().to_string(),
            version,
            cells: self.inner.cache.cached_cells(usize::MAX),
        };
        self.inner
            .membership
            .put(&cache_index_key(self.id()), index.encode()?)
            .await?;
        let mut written = lock(&self.inner.index);
        if version > written.version {
            *written = IndexWritten {
                version,
                at_seq: Some(seq),
            };
        }
        Ok(())
    }

    /// Leaves the swarm gracefully: stops the loops and deletes this node's heartbeat and cache
    /// index.
    pub async fn leave(&self) -> Result<()> {
        self.halt();
        // Wait for the beats under way: none may land after the delete.
        let _all = self
            .inner
            .beats
            .acquire_many(MAX_BEATS_IN_FLIGHT as u32)
            .await;
        self.inner
            .membership
            .delete(&heartbeat_key(self.id()))
            .await?;
        self.inner
            .membership
            .delete(&cache_index_key(self.id()))
            .await?;
        Ok(())
    }

    /// [`SwarmNode::leave`] from synchronous code (a `Drop`): runs on `io`, Apiary's own
    /// runtime, from a thread of its own, and gives up after a few seconds — best effort, as a
    /// dropped node's heartbeat would otherwise be judged dead and swept anyway.
    pub fn leave_blocking(&self, io: &Handle) {
        let (node, io) = (self.clone(), io.clone());
        let left = std::thread::spawn(move || {
            io.block_on(async move {
                tokio::time::timeout(std::time::Duration::from_secs(5), node.leave()).await
            })
        })
        .join();
        match left {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => log::warn!("leaving the swarm: {e}"),
            _ => log::warn!("leaving the swarm did not finish in time"),
        }
    }

    /// Stops beating and working without a word, as a crashed node would (for tests).
    #[doc(hidden)]
    pub fn halt(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.nudge.notify_one();
        let loops: Vec<JoinHandle<()>> = self
            .inner
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for handle in loops {
            handle.abort();
        }
    }
}
