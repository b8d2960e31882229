//! A node's parts for tests.

use std::time::Duration;

use apiary_catalog::Meadow;
use apiary_exec::{BeePool, Colony, NodeConfig, Regulation};
use apiary_swarm::{SwarmConfig, SwarmNode};

pub fn colony(scratch: &std::path::Path) -> Colony {
    let pool = BeePool::new(NodeConfig::fixed(1, 64 << 20, scratch)).unwrap();
    Colony::new(pool, Regulation::default())
}

/// Fast intervals: beats every 100 ms, suspect after 300 ms, dead after 600 ms.
pub fn config(id: &str, scratch: &std::path::Path) -> SwarmConfig {
    let mut c = SwarmConfig::default()
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_node_id(id);
    c.remove_dead_after = Duration::from_millis(1500);
    c.cache_dir = scratch.join("cache");
    c
}

pub async fn join(meadow: &Meadow, id: &str, scratch: &std::path::Path, skew_ms: i64) -> SwarmNode {
    let mut config = config(id, scratch);
    config.debug_clock_skew_ms = skew_ms;
    SwarmNode::join(
        meadow.clone(),
        colony(&scratch.join(id)),
        &tokio::runtime::Handle::current(),
        config,
    )
    .await
    .unwrap()
}
