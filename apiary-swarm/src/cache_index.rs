//! A node's cache index: `_caches/node_{id}.json`, the cells its cell cache holds.
//!
//! Kept out of the heartbeat, which every node rereads at every beat: the index is written only
//! when the cache changed (at most every few beats), and read by the others only when the
//! `cache_version` in the heartbeat moves past the one they hold.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SwarmError};

pub const CACHES: &str = "_caches";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheIndex {
    pub node_id: String,
    /// The cache's version when the index was written (it grows with every cell cached or
    /// evicted); the node's heartbeats name the version of the index last written.
    pub version: u64,
    /// The cached cells, most recently used first.
    pub cells: Vec<String>,
}

pub fn cache_index_key(node_id: &str) -> String {
    format!("{CACHES}/node_{node_id}.json")
}

impl CacheIndex {
    pub fn encode(&self) -> Result<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| SwarmError::corrupt(cache_index_key(&self.node_id), e))
    }

    pub fn decode(bytes: &[u8], key: &str) -> Result<CacheIndex> {
        serde_json::from_slice(bytes).map_err(|e| SwarmError::corrupt(key, e))
    }
}
