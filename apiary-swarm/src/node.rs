//! A swarm member: its membership (heartbeats, world view), its worker, its exchange for the
//! queries it coordinates, and the local cell cache.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use apiary_catalog::Meadow;
use apiary_exec::Colony;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cache::{CacheFolder, CacheStatus, CellCache};
use crate::codec::ApiaryCodec;
use crate::config::SwarmConfig;
use crate::error::Result;
use crate::fragment::ScanMatcher;
use crate::local_node::LocalNode;
use crate::meadow_exchange::MeadowExchange;
use crate::membership::Membership;
use crate::rule::SwarmRule;
use crate::world_view::{NodeView, WorldView};

/// This node's membership of the swarm. Cheap to clone.
#[derive(Clone)]
pub struct SwarmNode {
    pub(crate) inner: Arc<LocalNode>,
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
    /// This node's id.
    pub node_id: String,
    /// Every node this node knows, as it sees them.
    pub nodes: Vec<NodeView>,
    /// This node's cell cache.
    pub cache: CacheStatus,
    /// Meadow tasks this node's worker runs now.
    pub running_tasks: usize,
    /// Parquet footers (with their page indexes) in DataFusion's metadata cache of this node's
    /// worker, kept across tasks and queries.
    pub footers_cached: usize,
    /// The bound of that cache, in bytes: sized from the node's bees, as for its own queries.
    pub footer_cache_limit: usize,
    /// Where this node serves the direct path (`http://host:port`), if it listens.
    pub endpoint: Option<String>,
    /// Direct-path requests this node's worker refused (no valid swarm token).
    pub refused_requests: u64,
    /// This node's direct-path queries that failed before their first batch (a worker lost, or
    /// refused by wait-die) and ran again over the meadow.
    pub direct_reruns: u64,
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
        let folder = CacheFolder::open(&config.cache_dir, &config.node_id, config.keep_cache)?;
        let cache = Arc::new(CellCache::in_folder(
            Arc::clone(meadow.store()),
            folder,
            config.cache_bytes,
        )?);
        // The worker keeps the footers of the cells it opened across tasks, in the same share
        // of the bees' memory as the node's own queries.
        let runtime = RuntimeEnvBuilder::new()
            .with_metadata_cache_limit(colony.pool().footer_cache_limit())
            .build_arc()?;
        runtime.register_object_store(meadow.object_store_url().as_ref(), Arc::clone(&cache) as _);
        let session = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let matcher = ScanMatcher::of(&meadow);
        let membership = Arc::new(Membership::new(
            config.clone(),
            meadow.dedicated()?,
            colony.clone(),
            Arc::clone(&cache),
        ));
        let codec = ApiaryCodec::new(Some(colony.pool().clone()));
        #[cfg(feature = "direct")]
        let (direct, server) = {
            let (direct, server) = crate::direct::Direct::start(
                &meadow,
                Arc::clone(&membership),
                colony.pool(),
                &session.runtime_env(),
                &codec,
                &config,
                io,
            )
            .await?;
            if let Some(endpoint) = &direct.endpoint {
                membership.set_endpoint(endpoint.clone());
            }
            (direct, server)
        };
        #[cfg(not(feature = "direct"))]
        if let Some(addr) = config.listen {
            return Err(crate::error::SwarmError::NoDirectPath {
                addr: addr.to_string(),
            });
        }
        let inner = Arc::new(LocalNode {
            codec,
            membership,
            config,
            meadow,
            colony,
            cache,
            session,
            matcher,
            nudge: Notify::new(),
            running: Arc::new(AtomicUsize::new(0)),
            stopping: AtomicBool::new(false),
            failed: Mutex::new(BTreeSet::new()),
            loops: Mutex::new(vec![]),
            #[cfg(feature = "direct")]
            direct,
        });
        let node = SwarmNode { inner };
        node.beat().await?;
        node.world().poll().await?;

        let stopping = {
            let inner = Arc::downgrade(&node.inner);
            move || {
                inner
                    .upgrade()
                    .is_none_or(|n| n.stopping.load(Ordering::SeqCst))
            }
        };
        let [beats, view] = node.inner.membership.spawn_loops(io, stopping);
        let worker = tokio::spawn(crate::worker::worker_loop(Arc::clone(&node.inner)));
        node.inner.loops.lock().extend([beats, view, worker]);
        #[cfg(feature = "direct")]
        {
            let mut loops = node.inner.loops.lock();
            loops.extend(server);
            loops.push(tokio::spawn(crate::direct::direct_loop(Arc::downgrade(
                &node.inner,
            ))));
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// `builder` with the direct path: datafusion-distributed's planner, choosing per query
    /// between it and the meadow (`swarm.path`; see `docs/swarm.md`).
    #[cfg(feature = "direct")]
    pub fn with_direct_path(
        &self,
        builder: datafusion::execution::SessionStateBuilder,
    ) -> datafusion::execution::SessionStateBuilder {
        self.inner.direct.install(builder)
    }

    /// The workers the direct path would plan with now: reached endpoints of alive nodes, once
    /// this node knows the swarm token (none before).
    #[cfg(feature = "direct")]
    pub fn direct_workers(&self) -> Vec<String> {
        use datafusion_distributed::WorkerResolver;
        if !self.inner.direct.token.is_known() {
            return vec![];
        }
        self.inner
            .direct
            .workers
            .get_urls()
            .unwrap_or_default()
            .into_iter()
            .map(|u| u.to_string())
            .collect()
    }

    /// Direct-path calls this node made, per worker endpoint (its queries' stages, and the
    /// stages its worker's tasks read from other workers).
    #[cfg(feature = "direct")]
    pub fn direct_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner.direct.channels.calls()
    }

    /// The configuration the node joined with.
    pub fn config(&self) -> &SwarmConfig {
        &self.inner.config
    }

    /// The swarm as this node sees it.
    pub fn world(&self) -> &WorldView {
        self.inner.world()
    }

    /// This node's cell cache.
    pub fn cache(&self) -> &CellCache {
        &self.inner.cache
    }

    /// The meadow's object store read through this node's cell cache: what a named node's own
    /// sessions read cells through once it joined (see `Apiary::join_swarm`).
    pub fn cached_store(&self) -> Arc<dyn object_store::ObjectStore> {
        Arc::clone(&self.inner.cache) as _
    }

    /// The physical optimizer rule that distributes this meadow's scans through this node.
    pub fn rule(&self) -> SwarmRule {
        let inner = &self.inner;
        SwarmRule::new(
            Arc::clone(&inner.membership),
            inner.matcher.clone(),
            inner.codec.clone(),
            inner.session.task_ctx(),
            Arc::new(MeadowExchange::new(Arc::clone(inner))),
        )
    }

    /// A snapshot of the node, for status displays.
    pub fn status(&self) -> SwarmStatus {
        SwarmStatus {
            node_id: self.id().to_string(),
            nodes: self.world().nodes(),
            cache: self.inner.cache.status(),
            running_tasks: self.inner.running.load(Ordering::SeqCst),
            footers_cached: self
                .inner
                .session
                .runtime_env()
                .cache_manager
                .get_file_metadata_cache()
                .len(),
            #[cfg(feature = "direct")]
            endpoint: self.inner.direct.endpoint.clone(),
            #[cfg(not(feature = "direct"))]
            endpoint: None,
            #[cfg(feature = "direct")]
            refused_requests: self.inner.direct.refused(),
            #[cfg(not(feature = "direct"))]
            refused_requests: 0,
            #[cfg(feature = "direct")]
            direct_reruns: self.inner.direct.workers.reruns(),
            #[cfg(not(feature = "direct"))]
            direct_reruns: 0,
            footer_cache_limit: self
                .inner
                .session
                .runtime_env()
                .cache_manager
                .get_metadata_cache_limit(),
        }
    }

    /// Writes one heartbeat now (after the cache index, if the cache changed).
    pub async fn beat(&self) -> Result<()> {
        self.inner.membership.beat().await
    }

    /// Leaves the swarm gracefully: stops the loops and deletes this node's heartbeat and cache
    /// index.
    pub async fn leave(&self) -> Result<()> {
        self.halt();
        self.inner.membership.leave().await
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
        let loops: Vec<JoinHandle<()>> = self.inner.loops.lock().drain(..).collect();
        for handle in loops {
            handle.abort();
        }
    }
}
