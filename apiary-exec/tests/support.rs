//! A session whose queries run in chambers of a small pool.

use std::sync::Arc;

use apiary_exec::{BeePool, ChamberRule, NodeConfig};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

pub const MIB: u64 = 1024 * 1024;

pub fn pool(bees: usize, memory_per_bee: u64, scratch: &std::path::Path) -> BeePool {
    BeePool::new(NodeConfig::fixed(bees, memory_per_bee, scratch)).expect("pool")
}

/// A session of `pool`, as `Apiary::session` builds it.
pub fn session(pool: &BeePool) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(pool.session_config())
        .with_physical_optimizer_rule(Arc::new(ChamberRule::new(pool.clone())))
        .build();
    SessionContext::new_with_state(state)
}

/// Files below `dir`, recursively.
pub fn files_below(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { files_below(&p) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}
