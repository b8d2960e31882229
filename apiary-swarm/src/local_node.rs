//! The state of this node that its worker loop and its meadow exchange share (the public face is
//! [`crate::SwarmNode`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use apiary_catalog::Meadow;
use apiary_exec::Colony;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cache::CellCache;
use crate::codec::ApiaryCodec;
use crate::config::SwarmConfig;
use crate::fragment::ScanMatcher;
use crate::membership::Membership;
use crate::world_view::WorldView;

/// This node as its worker and its meadow exchange see it: its settings, stores, bees, cache,
/// decoding session and membership.
pub(crate) struct LocalNode {
    pub config: SwarmConfig,
    /// The meadow, for coordination objects and partial results.
    pub meadow: Meadow,
    pub membership: Arc<Membership>,
    pub colony: Colony,
    pub cache: Arc<CellCache>,
    /// Decodes fragments and lends its functions to tasks; reads cells through the cache.
    pub session: SessionContext,
    pub codec: ApiaryCodec,
    /// Wakes the worker at once (a query was written, a task finished).
    pub nudge: Notify,
    /// Tasks this node's worker runs now.
    pub running: Arc<AtomicUsize>,
    pub stopping: AtomicBool,
    /// Tasks (query, task) whose attempts failed on this node: it leaves their retries to others.
    pub failed: Mutex<BTreeSet<(String, usize)>>,
    pub matcher: ScanMatcher,
    pub loops: Mutex<Vec<JoinHandle<()>>>,
    /// The direct path: this node's listening worker, if any, and what its coordinator plans
    /// with.
    #[cfg(feature = "direct")]
    pub direct: crate::direct::Direct,
}

impl LocalNode {
    /// This node's clock (with the fault-injection skew, if any), for informative timestamps.
    pub(crate) fn clock_ms(&self) -> i64 {
        self.membership.clock_ms()
    }

    pub(crate) fn world(&self) -> &WorldView {
        &self.membership.world
    }
}
