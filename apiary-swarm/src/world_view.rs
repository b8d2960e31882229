//! The world view: which nodes are alive, suspect or dead, as this node sees them.
//!
//! One listing of `_heartbeats/` per poll (its cost grows with the number of nodes, not the data),
//! and a GET of each heartbeat that changed. A node is judged by how long its heartbeat has been
//! unchanged *on the observer's clock* — so a node whose clock is minutes off is judged like any
//! other. Heartbeats dead for long enough are removed by whichever node sees them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apiary_catalog::Meadow;

use crate::config::SwarmConfig;
use crate::error::Result;
use crate::heartbeat::{HEARTBEATS, Heartbeat, node_of_key};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Alive,
    Suspect,
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
    pub heartbeat: Heartbeat,
    pub state: NodeState,
    /// How long its heartbeat has not changed, on this node's clock.
    pub unchanged_for: Duration,
}

#[derive(Debug)]
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorldView {
    pub fn new(meadow: Meadow, config: SwarmConfig) -> Self {
        Self {
            meadow,
            config,
            observed: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the heartbeats: one listing, plus a GET per changed heartbeat. Removes heartbeats
    /// dead for longer than `remove_dead_after`.
    pub async fn poll(&self) -> Result<Vec<NodeView>> {
        let listed = self.meadow.list_dir(HEARTBEATS).await?;
        let now = Instant::now();
        let mut seen = vec![];
        for object in &listed.objects {
            let Some(name) = object.location.filename() else {
                continue;
            };
            let Some(node) = node_of_key(name) else {
                continue;
            };
            let fingerprint = object.e_tag.clone().unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    object.last_modified.timestamp_micros(),
                    object.size
                )
            });
            seen.push(node.to_string());
            let unchanged = lock(&self.observed)
                .get(node)
                .is_some_and(|o| o.fingerprint == fingerprint);
            if unchanged {
                continue;
            }
            let key = format!("{HEARTBEATS}/{name}");
            let Some(bytes) = self.meadow.get(&key).await? else {
                continue; // removed meanwhile
            };
            let heartbeat = match Heartbeat::decode(&bytes, &key) {
                Ok(h) => h,
                Err(e) => {
                    log::warn!("ignoring unreadable heartbeat: {e}");
                    continue;
                }
            };
            lock(&self.observed).insert(
                node.to_string(),
                Observation {
                    fingerprint,
                    last_change: now,
                    heartbeat,
                },
            );
        }
        // Forget nodes whose heartbeat is gone (they left, or were swept).
        lock(&self.observed).retain(|node, _| seen.contains(node));
        // Sweep the long dead.
        let sweep: Vec<String> = lock(&self.observed)
            .iter()
            .filter(|(node, o)| {
                **node != self.config.node_id
                    && now.duration_since(o.last_change) >= self.config.remove_dead_after
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in sweep {
            log::info!("removing the heartbeat of dead node {node}");
            self.meadow
                .delete(&crate::heartbeat::heartbeat_key(&node))
                .await?;
            lock(&self.observed).remove(&node);
        }
        Ok(self.nodes())
    }

    /// The nodes as of the last poll, judged now.
    pub fn nodes(&self) -> Vec<NodeView> {
        let now = Instant::now();
        let mut nodes: Vec<NodeView> = lock(&self.observed)
            .iter()
            .map(|(node, o)| {
                let unchanged_for = now.duration_since(o.last_change);
                let state = if *node == self.config.node_id {
                    NodeState::Alive
                } else if unchanged_for >= self.config.dead_after {
                    NodeState::Dead
                } else if unchanged_for >= self.config.suspect_after {
                    NodeState::Suspect
                } else {
                    NodeState::Alive
                };
                NodeView {
                    heartbeat: o.heartbeat.clone(),
                    state,
                    unchanged_for,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.heartbeat.node_id.cmp(&b.heartbeat.node_id));
        nodes
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
        self.nodes()
            .into_iter()
            .find(|n| n.heartbeat.node_id == node)
            .map(|n| n.state)
    }

    /// Records this node's own heartbeat without reading it back.
    pub(crate) fn observe_own(&self, heartbeat: Heartbeat) {
        let mut observed = lock(&self.observed);
        let fingerprint = observed
            .get(&heartbeat.node_id)
            .map(|o| o.fingerprint.clone())
            .unwrap_or_default();
        observed.insert(
            heartbeat.node_id.clone(),
            Observation {
                fingerprint,
                last_change: Instant::now(),
                heartbeat,
            },
        );
    }

    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }
}
