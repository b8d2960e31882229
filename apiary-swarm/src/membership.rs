//! Membership: this node's heartbeats (and cache index), its world view of the others, and the
//! leases its heartbeats carry on the queries it coordinates.
//!
//! Everything here goes through the membership client — a client of the meadow of its own — so
//! that a beat never waits for a connection behind the node's large uploads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apiary_catalog::Meadow;
use apiary_exec::Colony;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cache::CellCache;
use crate::cache_index::{CacheIndex, cache_index_key};
use crate::config::SwarmConfig;
use crate::error::Result;
use crate::heartbeat::{Heartbeat, heartbeat_key};
use crate::world_view::WorldView;

/// A changed cache index is written again at most every this many beats: a cache filling
/// during a query changes with every cell.
const CACHE_INDEX_EVERY: u64 = 5;

/// Heartbeat writes that may be under way at once when the store is slow.
const MAX_BEATS_IN_FLIGHT: usize = 3;

/// The cache index this node last wrote: its version, and at which beat.
#[derive(Debug, Default, Clone, Copy)]
struct IndexWritten {
    version: u64,
    at_seq: Option<u64>,
}

/// This node's place in the swarm, as the other nodes see it.
pub(crate) struct Membership {
    config: SwarmConfig,
    /// The membership client.
    pub store: Meadow,
    pub world: WorldView,
    /// What a heartbeat reports of the node: its bees and their load, and its cell cache.
    colony: Colony,
    cache: Arc<CellCache>,
    /// The queries this node coordinates now, listed in its heartbeats (see [`Lease`]).
    coordinating: Mutex<BTreeSet<String>>,
    /// One permit per heartbeat write under way; leaving takes them all, so that no late beat
    /// lands after the heartbeat is deleted.
    beats: Arc<Semaphore>,
    seq: AtomicU64,
    index: Mutex<IndexWritten>,
    started_ms: i64,
    /// Where this node serves the direct path, once it listens: told in every heartbeat.
    endpoint: std::sync::OnceLock<String>,
}

impl Membership {
    pub(crate) fn new(
        config: SwarmConfig,
        store: Meadow,
        colony: Colony,
        cache: Arc<CellCache>,
    ) -> Self {
        Self {
            world: WorldView::new(store.clone(), config.clone()),
            config,
            store,
            colony,
            cache,
            coordinating: Mutex::new(BTreeSet::new()),
            beats: Arc::new(Semaphore::new(MAX_BEATS_IN_FLIGHT)),
            seq: AtomicU64::new(0),
            index: Mutex::new(IndexWritten::default()),
            started_ms: chrono::Utc::now().timestamp_millis(),
            endpoint: std::sync::OnceLock::new(),
        }
    }

    /// Tells the swarm, from the next heartbeat on, where this node serves the direct path.
    #[cfg_attr(not(feature = "direct"), allow(dead_code))]
    pub(crate) fn set_endpoint(&self, endpoint: String) {
        let _ = self.endpoint.set(endpoint);
    }

    pub(crate) fn id(&self) -> &str {
        &self.config.node_id
    }

    /// This node's clock (with the fault-injection skew, if any), for informative timestamps.
    pub(crate) fn clock_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.config.debug_clock_skew_ms
    }

    /// Whether this node coordinates `query` now (its heartbeats list it).
    pub(crate) fn coordinates(&self, query: &str) -> bool {
        self.coordinating.lock().contains(query)
    }

    /// Starts the heartbeat and view loops on `io` (Apiary's own runtime, so that a busy node
    /// keeps beating). `stopping` says when a beat is no longer to be written.
    pub(crate) fn spawn_loops(
        self: &Arc<Self>,
        io: &Handle,
        stopping: impl Fn() -> bool + Send + Sync + 'static,
    ) -> [JoinHandle<()>; 2] {
        let stopping = Arc::new(stopping);
        let beats = {
            let me = Arc::clone(self);
            io.spawn(async move {
                // Beats keep their own schedule: a slow one does not hold back the next (up to
                // a few in flight), so a slow store delays them without thinning them out.
                let mut ticks = tokio::time::interval(me.config.heartbeat_interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    let Ok(permit) = Arc::clone(&me.beats).try_acquire_owned() else {
                        continue; // as many beats in flight as allowed
                    };
                    let (me, stopping) = (Arc::clone(&me), Arc::clone(&stopping));
                    tokio::spawn(async move {
                        if stopping() {
                            return;
                        }
                        if let Err(e) = me.beat().await {
                            log::warn!("node {}: heartbeat failed: {e}", me.id());
                        }
                        drop(permit);
                    });
                }
            })
        };
        let view = {
            let me = Arc::clone(self);
            io.spawn(async move {
                loop {
                    tokio::time::sleep(me.config.view_interval).await;
                    if let Err(e) = me.world.poll().await {
                        log::warn!("node {}: reading the world view failed: {e}", me.id());
                    }
                }
            })
        };
        [beats, view]
    }

    fn heartbeat(&self) -> Heartbeat {
        let t = self.colony.temperature();
        let cache = self.cache.status();
        Heartbeat {
            node_id: self.id().to_string(),
            host: apiary_catalog::sight::host().to_string(),
            seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
            clock_ms: self.clock_ms(),
            started_ms: self.started_ms,
            bees: t.bees,
            budget_per_bee: self.colony.pool().budget_per_bee() as u64,
            busy_bees: t.busy_bees,
            waiting: t.waiting,
            temperature: t.value,
            band: t.band,
            cache_bytes: cache.bytes,
            cache_cells: cache.cells,
            cache_version: self.index.lock().version,
            version: env!("CARGO_PKG_VERSION").to_string(),
            queries: self.coordinating.lock().iter().cloned().collect(),
            endpoint: self.endpoint.get().cloned(),
        }
    }

    /// Writes one heartbeat now (after the cache index, if the cache changed).
    pub(crate) async fn beat(&self) -> Result<()> {
        if let Err(e) = self.write_cache_index().await {
            log::warn!("node {}: writing the cache index failed: {e}", self.id());
        }
        let hb = self.heartbeat();
        self.store
            .put(&heartbeat_key(self.id()), hb.encode()?)
            .await?;
        self.world.observe_own(hb);
        Ok(())
    }

    /// Writes the cache index if the cache changed since the last one, and that one is at least
    /// [`CACHE_INDEX_EVERY`] beats old.
    async fn write_cache_index(&self) -> Result<()> {
        let version = self.cache.version();
        let seq = self.seq.load(Ordering::SeqCst);
        let written = *self.index.lock();
        let recent = written
            .at_seq
            .is_some_and(|at| seq < at + CACHE_INDEX_EVERY);
        if version == written.version || recent {
            return Ok(());
        }
        let index = CacheIndex {
            node_id: self.id().to_string(),
            version,
            cells: self.cache.cached_cells(usize::MAX),
        };
        self.store
            .put(&cache_index_key(self.id()), index.encode()?)
            .await?;
        let mut written = self.index.lock();
        if version > written.version {
            *written = IndexWritten {
                version,
                at_seq: Some(seq),
            };
        }
        Ok(())
    }

    /// Deletes this node's heartbeat and cache index, once the beats under way have landed (none
    /// may land after the delete). The loops must be stopped first.
    pub(crate) async fn leave(&self) -> Result<()> {
        let _all = self.beats.acquire_many(MAX_BEATS_IN_FLIGHT as u32).await;
        self.store.delete(&heartbeat_key(self.id())).await?;
        self.store.delete(&cache_index_key(self.id())).await?;
        Ok(())
    }
}

/// A coordinator's lease on one query folder, held while the query runs: the node's heartbeats
/// list the query, and no node sweeps a folder a live heartbeat lists. Dropping it (the query
/// ended, or its coordination was dropped half-way) ends the lease.
pub(crate) struct Lease {
    membership: Arc<Membership>,
    query: String,
}

impl Lease {
    pub(crate) fn take(membership: &Arc<Membership>, query: &str) -> Self {
        membership.coordinating.lock().insert(query.to_string());
        Self {
            membership: Arc::clone(membership),
            query: query.to_string(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.membership.coordinating.lock().remove(&self.query);
    }
}
