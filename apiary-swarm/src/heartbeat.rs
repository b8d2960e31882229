//! Heartbeats: each node writes `_heartbeats/node_{id}.json` every few seconds.
//!
//! A heartbeat says what the node can do (bees, budget), how loaded it is (busy bees, colony
//! temperature) and how much it has cached (the cells themselves are in its cache index). Its `seq` grows with every beat: readers judge
//! liveness from whether the object changed on *their own* clock, never from `clock_ms`, which is
//! the writer's clock and only informative.

use apiary_exec::Band;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SwarmError};

/// The folder of the heartbeats in the meadow.
pub const HEARTBEATS: &str = "_heartbeats";

/// What a node writes to `_heartbeats/node_{id}.json` every beat: who it is, its bees, load and
/// cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node's id, unique in the swarm.
    pub node_id: String,
    /// The machine the node runs on: `apiary status` shows the nodes of its own machine.
    #[serde(default)]
    pub host: String,
    /// Grows by one with every beat.
    pub seq: u64,
    /// The writer's clock at this beat (informative only).
    pub clock_ms: i64,
    /// When the node started (its clock, milliseconds since the epoch).
    pub started_ms: i64,
    /// Bees on the node.
    pub bees: usize,
    /// Each bee's memory budget, in bytes.
    pub budget_per_bee: u64,
    /// Bees held by a task now.
    pub busy_bees: usize,
    /// Tasks waiting for bees.
    pub waiting: usize,
    /// The colony's temperature, 0 to 1.
    pub temperature: f64,
    /// The colony's band (`cold` … `critical`): the swarm deals a hot node less work.
    #[serde(with = "band_name")]
    pub band: Band,
    /// Bytes and cells held by the node's cell cache.
    pub cache_bytes: u64,
    /// Cells held by the node's cell cache.
    #[serde(default)]
    pub cache_cells: usize,
    /// The version of the node's cache index (`_caches/node_{id}.json`) last written: readers
    /// fetch the index when it moves. 0: none written.
    #[serde(default)]
    pub cache_version: u64,
    /// Apiary's version on the node.
    pub version: String,
    /// The distributed queries this node coordinates now: its lease on their folders, which no
    /// node sweeps while a live heartbeat lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<String>,
    /// Where this node serves the direct path's worker (`http://host:port`), if it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

pub fn heartbeat_key(node_id: &str) -> String {
    format!("{HEARTBEATS}/node_{node_id}.json")
}

/// The node id a heartbeat key names.
pub fn node_of_key(name: &str) -> Option<&str> {
    name.strip_prefix("node_")?.strip_suffix(".json")
}

impl Heartbeat {
    /// The heartbeat as its JSON object.
    pub fn encode(&self) -> Result<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| SwarmError::corrupt(heartbeat_key(&self.node_id), e))
    }

    /// A heartbeat from its JSON object at `key` (named in the error).
    pub fn decode(bytes: &[u8], key: &str) -> Result<Heartbeat> {
        serde_json::from_slice(bytes).map_err(|e| SwarmError::corrupt(key, e))
    }
}

/// A band as its name (`"hot"`), as `Band`'s `Display` and `FromStr` spell it.
mod band_name {
    use apiary_exec::Band;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(band: &Band, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(band)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Band, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
