//! How a node takes part in the swarm; every interval is a duration on the node's own clock.

use std::path::PathBuf;
use std::time::Duration;

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

/// The direct path's TLS, as PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmTls {
    /// This node's certificate (chain) and private key, served when it listens; both or none.
    pub cert: Option<PathBuf>,
    /// This node's private key for `cert`.
    pub key: Option<PathBuf>,
    /// The CA certificate(s) a worker's certificate is checked against (default: `cert`, for
    /// a swarm that shares one certificate).
    pub ca: Option<PathBuf>,
}

/// A node's swarm settings. The defaults suit a LAN of small boards and a cloud bucket alike.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// This node's name in heartbeats, manifests and claims. Default `{host}-{pid}`.
    pub node_id: String,
    /// How often this node writes its heartbeat. Default 2 s.
    pub heartbeat_interval: Duration,
    /// A node whose heartbeat has not changed for this long (on the observer's clock) is suspect.
    /// Default 3 heartbeat intervals.
    pub suspect_after: Duration,
    /// … and dead after this long: its tasks are offered again. Default 6 intervals.
    pub dead_after: Duration,
    /// … and its heartbeat is removed after this long, by any node. Default 60 s.
    pub remove_dead_after: Duration,
    /// How often the world view is read. Default: the heartbeat interval.
    pub view_interval: Duration,
    /// Poll interval for new queries while queries run (the shortest) …
    pub poll_min: Duration,
    /// … growing to this while the swarm is idle. Defaults 50 ms and 500 ms. An idle node looks
    /// at one object then (`_queries/latest.json`, rewritten by every coordinator that publishes
    /// a query) and lists `_queries/` only when it changed, or every `list_every`.
    pub poll_max: Duration,
    /// How often an idle node lists `_queries/` all the same (to sweep what others left).
    /// Default 10 s.
    pub list_every: Duration,
    /// How long a node that just worked stays quick to see the next query: queries come in
    /// bursts, and the next one should not wait `poll_max` for it. Default 10 s.
    pub poll_linger: Duration,
    /// How often a node looks at `_queries/latest.json` during `poll_linger` (a HEAD; it lists
    /// `_queries/` when that changed), at most: on a slower store, four times as long as the last
    /// look took. Default 10 ms.
    pub linger_probe: Duration,
    /// A task that prefers another node (it caches the task's cells) may be claimed by anyone
    /// after this. Longer than `poll_max`, so that an idle node notices a new query before the
    /// tasks it caches are taken from it. Default 1.5 s.
    pub steal_after: Duration,
    /// A claimed task that has not finished after this is offered again. Default 5 min.
    pub task_deadline: Duration,
    /// A query folder still without a manifest this long after it was first seen (its
    /// coordinator died while publishing it), or a finished one kept by `keep_queries`, is removed
    /// by any node. A running query is swept only when its coordinator's heartbeat has not listed
    /// it for `dead_after`, never for its age. Default 30 min.
    pub stale_query_after: Duration,
    /// Failures of one task (on distinct nodes or bees) before the query is abandoned. Default 3.
    pub max_task_failures: usize,
    /// The local cell cache (tier 2): folder, and its size bound (default 2 GiB; 0 = no cache).
    pub cache_dir: PathBuf,
    /// The cache's size bound, in bytes.
    pub cache_bytes: u64,
    /// Keep the cached cells for this node's next run (`{cache_dir}/node_{id}`): set by
    /// [`SwarmConfig::with_node_id`], for a node with a name of its own. Otherwise (the default,
    /// a name made of host and pid: a new one every run) the cache's folder is removed when the
    /// node goes, or by the next node that starts after its process was killed.
    pub keep_cache: bool,
    /// Keep finished query folders (for inspection and tests) instead of removing them.
    pub keep_queries: bool,
    /// Where this node serves the direct path's worker (`apiary node --listen ADDR`; port 0
    /// takes a free port). `None`: the node takes part through the meadow only. Needs the
    /// `direct` feature.
    pub listen: Option<std::net::SocketAddr>,
    /// TLS of the direct path (`apiary node --tls-cert/--tls-key/--tls-ca`): a node that
    /// listens serves it, and every node checks workers' certificates against the swarm's CA.
    /// `None`: plain HTTP/2.
    pub tls: Option<SwarmTls>,
    /// Fault injection for tests: each task waits this long before it runs.
    #[doc(hidden)]
    pub debug_task_delay: Duration,
    /// Fault injection for tests: each task first holds its thread this long without yielding
    /// (an operator whose one poll runs long), so a stop can land in the middle of a poll.
    #[doc(hidden)]
    pub debug_task_block: Duration,
    /// Fault injection for tests: this node reports a clock this far off.
    #[doc(hidden)]
    pub debug_clock_skew_ms: i64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        let interval = Duration::from_secs(2);
        Self {
            node_id: apiary_catalog::sight::default_node(),
            heartbeat_interval: interval,
            suspect_after: interval * 3,
            dead_after: interval * 6,
            remove_dead_after: Duration::from_secs(60),
            view_interval: interval,
            poll_min: Duration::from_millis(50),
            poll_max: Duration::from_millis(500),
            list_every: Duration::from_secs(10),
            poll_linger: Duration::from_secs(10),
            linger_probe: Duration::from_millis(10),
            steal_after: Duration::from_millis(1500),
            task_deadline: Duration::from_secs(300),
            stale_query_after: Duration::from_secs(1800),
            max_task_failures: 3,
            cache_dir: std::env::temp_dir().join("apiary-cell-cache"),
            cache_bytes: 2 * 1024 * 1024 * 1024,
            keep_cache: false,
            keep_queries: false,
            listen: None,
            tls: None,
            debug_task_delay: Duration::ZERO,
            debug_task_block: Duration::ZERO,
            debug_clock_skew_ms: 0,
        }
    }
}

impl SwarmConfig {
    /// The same settings with every interval derived from one heartbeat interval.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.suspect_after = interval * 3;
        self.dead_after = interval * 6;
        self.view_interval = interval;
        self
    }

    /// This node's name; a node with a name of its own keeps its cell cache across runs.
    pub fn with_node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self.keep_cache = true;
        self
    }
}

extensions_options! {
    /// How the queries of a session use the swarm (`SET swarm.<name> = <value>`).
    pub struct SwarmOptions {
        /// Whether scans may be distributed at all.
        pub enabled: bool, default = true
        /// Scans reading fewer bytes than this run locally (the swarm never slows them down):
        /// the in-memory size of the columns they read, from the cells' statistics.
        pub min_bytes: u64, default = 64 * 1024 * 1024
        /// Tasks a distributed scan is cut into per bee the nodes offer (fewer when they would
        /// read less than `min_task_bytes` each, never fewer than the bees): free bees pull
        /// them, so a faster or less busy node takes more.
        pub tasks_per_bee: usize, default = 3
        /// Beyond one task per bee, a scan is not cut into tasks smaller than this: each task
        /// costs a handful of storage calls.
        pub min_task_bytes: u64, default = 8 * 1024 * 1024
        /// Which path distributes a query: `'auto'` (the direct path when every alive node
        /// listens and is reached, else the meadow), `'direct'` or `'storage'`.
        pub path: String, default = "auto".to_string()
    }
}

/// The values of `swarm.path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmPath {
    /// The direct path when every alive node listens and is reached, else the meadow.
    Auto,
    /// The direct path (datafusion-distributed between the nodes that listen).
    Direct,
    /// The storage path: tasks and partial results through the meadow.
    Storage,
}

impl std::str::FromStr for SwarmPath {
    type Err = datafusion::error::DataFusionError;

    fn from_str(s: &str) -> datafusion::error::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(SwarmPath::Auto),
            "direct" => Ok(SwarmPath::Direct),
            "storage" => Ok(SwarmPath::Storage),
            _ => datafusion::common::plan_err!(
                "swarm.path must be 'auto', 'direct' or 'storage', not '{s}'"
            ),
        }
    }
}

impl std::fmt::Display for SwarmPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwarmPath::Auto => "auto",
            SwarmPath::Direct => "direct",
            SwarmPath::Storage => "storage",
        })
    }
}

impl ConfigExtension for SwarmOptions {
    const PREFIX: &'static str = "swarm";
}
