//! The world view: which nodes are alive, suspect or dead, as this node sees them.
//!
//! One listing of `_heartbeats/` per poll (its cost grows with the number of nodes, not the data),
//! and a GET of each heartbeat that changed. A node is judged by how long its heartbeat has been
//! unchanged *on the observer's clock* — so a node whose clock is minutes off is judged like any
//! other. Heartbeats dead for long enough are removed by whichever node sees them. A node's cache
//! index is read when its heartbeat's `cache_version` moves.
//!
//! A slow store is not a dead node. Silence is measured up to the start of the last successful
//! poll (what happened after it is not known yet), and a node's silence is excused by the
//! *store's lag*: how late the freshest other heartbeat is — this node's own among them, whose
//! lateness is the time since its own last beat landed. If every heartbeat is late, the store
//! is slow and nobody is judged for it; if any other node (or this one) beats on time, a
//! silent node has no excuse.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_catalog::Meadow;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::cache_index::{CacheIndex, cache_index_key};
use crate::config::SwarmConfig;
use crate::error::Result;
use crate::heartbeat::{HEARTBEATS, Heartbeat, node_of_key};

/// How a node looks from here, by whether its heartbeat changes on this node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Its heartbeat changed within `suspect_after` (beyond the store's lag): it gets tasks.
    Alive,
    /// Silent for `suspect_after`: no new tasks, not yet given up.
    Suspect,
    /// Silent for `dead_after`: its tasks are offered again.
    Dead,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Dead => "dead",
        })
    }
}

/// One node as seen now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Its last heartbeat.
    pub heartbeat: Heartbeat,
    /// Alive, suspect or dead.
    pub state: NodeState,
    /// How long its heartbeat has not changed, on this node's clock, up to the last poll.
    pub unchanged_for: Duration,
    /// How much of that silence the store's lag excuses (see the module docs).
    pub store_lag: Duration,
}

#[derive(Debug, Clone)]
struct Observation {
    /// What identifies the heartbeat object's content: its e-tag, else modification time + size.
    fingerprint: String,
    last_change: Instant,
    heartbeat: Heartbeat,
}

/// This node's view of the swarm, refreshed by [`WorldView::poll`].
#[derive(Debug)]
pub struct WorldView {
    meadow: Meadow,
    config: SwarmConfig,
    observed: Mutex<HashMap<String, Observation>>,
    /// The cache indexes read, per node.
    indexes: Mutex<HashMap<String, IndexRead>>,
    /// When the last successful poll started: silences are measured up to it.
    last_poll: Mutex<Option<Instant>>,
}

/// A node's cache index as read: its version and its cells.
type IndexRead = (u64, Arc<HashSet<String>>);

/// How many changed heartbeats one poll fetches at once.
const FETCH_CONCURRENCY: usize = 8;

impl WorldView {
    /// A view of the swarm in `meadow`, judging nodes by `config`'s intervals.
    pub fn new(meadow: Meadow, config: SwarmConfig) -> Self {
        Self {
            meadow,
            config,
            observed: Mutex::new(HashMap::new()),
            indexes: Mutex::new(HashMap::new()),
            last_poll: Mutex::new(None),
        }
    }

    /// Reads the heartbeats: one listing, plus a GET per changed heartbeat (fetched at once).
    /// Removes heartbeats dead for longer than `remove_dead_after`.
    pub async fn poll(&self) -> Result<Vec<NodeView>> {
        let started = Instant::now();
        let listed = self.meadow.list_dir(HEARTBEATS).await?;
        let mut seen = vec![];
        let mut changed = vec![];
        for object in &listed.objects {
            let Some(name) = object.location.filename() else {
                continue;
            };
            let Some(node) = node_of_key(name) else {
                continue;
            };
            seen.push(node.to_string());
            let own = node == self.config.node_id && self.observed.lock().contains_key(node);
            if own {
                continue; // this node knows its own beats without reading them back
            }
            let fingerprint = object.e_tag.clone().unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    object.last_modified.timestamp_micros(),
                    object.size
                )
            });
            let unchanged = self
                .observed
                .lock()
                .get(node)
                .is_some_and(|o| o.fingerprint == fingerprint);
            if !unchanged {
                let first = !self.observed.lock().contains_key(node);
                changed.push((
                    node.to_string(),
                    format!("{HEARTBEATS}/{name}"),
                    fingerprint,
                    first.then_some(object.last_modified),
                ));
            }
        }
        // A heartbeat seen for the first time is judged at once by its age on the store's own
        // clock — a process that died long ago is not taken for alive until it has been watched
        // for `dead_after`. The store's "now" is this node's own heartbeat, just written, or a
        // probe object for an observer that does not beat.
        let store_now = if changed.iter().any(|c| c.3.is_some()) {
            match listed.objects.iter().find(|o| {
                o.location.filename().and_then(node_of_key) == Some(self.config.node_id.as_str())
                    && self.observed.lock().contains_key(&self.config.node_id)
            }) {
                Some(own) => Some(own.last_modified),
                None => self.meadow.store_now().await.ok(),
            }
        } else {
            None
        };
        let fetched: Vec<_> = futures::stream::iter(changed)
            .map(|(node, key, fingerprint, first)| async move {
                let body = self.meadow.get(&key).await;
                (node, key, fingerprint, first, body)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        for (node, key, fingerprint, first, body) in fetched {
            let Some(bytes) = body? else {
                continue; // removed meanwhile
            };
            let heartbeat = match Heartbeat::decode(&bytes, &key) {
                Ok(h) => h,
                Err(e) => {
                    log::warn!("ignoring unreadable heartbeat: {e}");
                    continue;
                }
            };
            // Its age on the store's clock, when first seen; else it changed just now.
            let age = match (first, store_now) {
                (Some(written), Some(now)) => (now - written).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            self.observed.lock().insert(
                node,
                Observation {
                    fingerprint,
                    last_change: started.checked_sub(age).unwrap_or(started),
                    heartbeat,
                },
            );
        }
        // Forget nodes whose heartbeat is gone (they left, or were swept); this node's own
        // observation stays while it beats.
        self.observed
            .lock()
            .retain(|node, _| seen.contains(node) || *node == self.config.node_id);
        self.read_cache_indexes().await;
        *self.last_poll.lock() = Some(started);
        // Sweep the long dead.
        let sweep: Vec<String> = self
            .nodes()
            .into_iter()
            .filter(|n| {
                n.state == NodeState::Dead
                    && n.unchanged_for.saturating_sub(n.store_lag) >= self.config.remove_dead_after
            })
            .map(|n| n.heartbeat.node_id)
            .collect();
        for node in sweep {
            log::info!("removing the heartbeat of dead node {node}");
            self.meadow
                .delete(&crate::heartbeat::heartbeat_key(&node))
                .await?;
            self.meadow.delete(&cache_index_key(&node)).await?;
            self.observed.lock().remove(&node);
        }
        Ok(self.nodes())
    }

    /// Reads the cache index of every node whose heartbeat names a version this view does not
    /// hold (a GET each, at once); forgets those of nodes gone. An unreadable index is skipped
    /// (tried again at the next poll): it only steers where cached cells go.
    async fn read_cache_indexes(&self) {
        let wanted: Vec<(String, u64)> = {
            let observed = self.observed.lock();
            let mut indexes = self.indexes.lock();
            indexes.retain(|node, _| {
                observed
                    .get(node)
                    .is_some_and(|o| o.heartbeat.cache_version > 0)
            });
            observed
                .iter()
                .map(|(node, o)| (node.clone(), o.heartbeat.cache_version))
                .filter(|(node, v)| *v > 0 && indexes.get(node).map(|(have, _)| *have) != Some(*v))
                .collect()
        };
        let fetched: Vec<_> = futures::stream::iter(wanted)
            .map(|(node, _)| async move {
                let key = cache_index_key(&node);
                let body = self.meadow.get(&key).await;
                (node, key, body)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        for (node, key, body) in fetched {
            let index = match body {
                Ok(Some(bytes)) => CacheIndex::decode(&bytes, &key),
                Ok(None) => continue, // not written yet, or removed meanwhile
                Err(e) => Err(e.into()),
            };
            match index {
                Ok(index) => {
                    let cells = Arc::new(index.cells.into_iter().collect());
                    self.indexes.lock().insert(node, (index.version, cells));
                }
                Err(e) => log::debug!("cache index of {node}: {e}"),
            }
        }
    }

    /// The cells `node`'s cache index lists, as last read (empty when none was read).
    pub fn cached(&self, node: &str) -> Arc<HashSet<String>> {
        self.indexes
            .lock()
            .get(node)
            .map(|(_, cells)| Arc::clone(cells))
            .unwrap_or_default()
    }

    /// The nodes as of the last poll, judged now.
    pub fn nodes(&self) -> Vec<NodeView> {
        let now = Instant::now();
        let observed: Vec<(String, Observation)> = self
            .observed
            .lock()
            .iter()
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        let polled = self.last_poll.lock().unwrap_or(now);
        let me = &self.config.node_id;
        // Silence: up to the last poll for others; for this node, up to now since its own last
        // beat landed (a beat stuck in a slow store makes this node late too).
        let silence: Vec<Duration> = observed
            .iter()
            .map(|(node, o)| {
                let until = if node == me { now } else { polled };
                until.saturating_duration_since(o.last_change)
            })
            .collect();
        let interval = self.config.heartbeat_interval;
        let mut nodes: Vec<NodeView> = observed
            .iter()
            .enumerate()
            .map(|(i, (node, o))| {
                // The store's lag, as far as the other heartbeats tell: the freshest of them.
                let store_lag = silence
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, s)| s.saturating_sub(interval))
                    .min()
                    .unwrap_or(Duration::ZERO);
                let unexcused = silence[i].saturating_sub(store_lag);
                let state = if node == me {
                    NodeState::Alive
                } else if unexcused >= self.config.dead_after {
                    NodeState::Dead
                } else if unexcused >= self.config.suspect_after {
                    NodeState::Suspect
                } else {
                    NodeState::Alive
                };
                NodeView {
                    heartbeat: o.heartbeat.clone(),
                    state,
                    unchanged_for: silence[i],
                    store_lag,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.heartbeat.node_id.cmp(&b.heartbeat.node_id));
        nodes
    }

    /// How late the freshest heartbeat is now (this node's own among them): the part of any
    /// silence the store, not the silent node, is to blame for.
    pub fn store_lag(&self) -> Duration {
        let nodes = self.nodes();
        let interval = self.config.heartbeat_interval;
        nodes
            .iter()
            .map(|n| n.unchanged_for.saturating_sub(interval))
            .min()
            .unwrap_or(Duration::ZERO)
    }

    /// The nodes judged alive.
    pub fn alive(&self) -> Vec<Heartbeat> {
        self.nodes()
            .into_iter()
            .filter(|n| n.state == NodeState::Alive)
            .map(|n| n.heartbeat)
            .collect()
    }

    /// How `node` is judged now; `None` if it has no heartbeat (it left, or never came).
    pub fn state_of(&self, node: &str) -> Option<NodeState> {
        self.node(node).map(|n| n.state)
    }

    /// `node` as seen now; `None` if it has no heartbeat.
    pub fn node(&self, node: &str) -> Option<NodeView> {
        self.nodes()
            .into_iter()
            .find(|n| n.heartbeat.node_id == node)
    }

    /// Records this node's own heartbeat without reading it back.
    /// Beats may land out of order (a slow one overtaken): the newest heartbeat is kept, the
    /// time of landing always counts.
    pub(crate) fn observe_own(&self, heartbeat: Heartbeat) {
        let mut observed = self.observed.lock();
        match observed.get_mut(&heartbeat.node_id) {
            Some(o) => {
                o.last_change = Instant::now();
                if heartbeat.seq > o.heartbeat.seq {
                    o.heartbeat = heartbeat;
                }
            }
            None => {
                observed.insert(
                    heartbeat.node_id.clone(),
                    Observation {
                        fingerprint: String::new(),
                        last_change: Instant::now(),
                        heartbeat,
                    },
                );
            }
        }
    }

    /// The configuration the view judges with.
    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }
}
