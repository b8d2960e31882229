//! What a node lets you see of itself: the counters, gauges and histograms Apiary records
//! through the `metrics` facade, every one labelled by node.
//!
//! Without a recorder installed (a library used on its own) every call here costs next to
//! nothing; the `apiary` crate's status server installs a Prometheus recorder. The recorder is
//! one per process, so the `node` label keeps apart several nodes of one process (tests, a
//! program that opens two meadows). [`METRICS`] lists every name with its meaning; the docs
//! (`docs/observability.md`) are checked against it.

use std::sync::Arc;

use parking_lot::RwLock;

/// A metric's kind, as Prometheus shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A total that only grows.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Durations in seconds, counted in buckets.
    Histogram,
}

/// Every metric Apiary records: name, kind, meaning.
pub const METRICS: &[(&str, MetricKind, &str)] = &[
    (
        QUERIES_STARTED,
        MetricKind::Counter,
        "queries that began executing in a chamber",
    ),
    (
        QUERIES_FINISHED,
        MetricKind::Counter,
        "queries whose results were delivered in full",
    ),
    (
        QUERIES_FAILED,
        MetricKind::Counter,
        "queries that ended with an error (a timeout included)",
    ),
    (
        QUERIES_CANCELLED,
        MetricKind::Counter,
        "queries dropped before their last batch",
    ),
    (
        ROWS_RETURNED,
        MetricKind::Counter,
        "rows the queries of this node returned",
    ),
    (
        CELLS_SCANNED,
        MetricKind::Counter,
        "cells a frame scan planned to read",
    ),
    (
        ROWS_SCANNED,
        MetricKind::Counter,
        "rows of the cells a frame scan planned to read",
    ),
    (
        CELL_BYTES_SCANNED,
        MetricKind::Counter,
        "bytes of the cells a frame scan planned to read",
    ),
    (
        CELLS_PRUNED,
        MetricKind::Counter,
        "cells a frame scan ruled out without reading them, by `by` (partition, statistics)",
    ),
    (
        COMMITS,
        MetricKind::Counter,
        "ledger entries this node committed",
    ),
    (
        LOST_RACES,
        MetricKind::Counter,
        "commits that found their version taken and were rebased (each retry)",
    ),
    (
        COMMIT_RETRIES,
        MetricKind::Counter,
        "commit attempts after the first: a lost race, or an answer that did not say whether the write landed",
    ),
    (
        CONFLICTS,
        MetricKind::Counter,
        "commits refused because a concurrent one changed what they read",
    ),
    (
        CELLS_WRITTEN,
        MetricKind::Counter,
        "cells written (committed or not)",
    ),
    (
        CELL_BYTES_WRITTEN,
        MetricKind::Counter,
        "bytes of the cells written",
    ),
    (
        STORAGE_CALLS,
        MetricKind::Counter,
        "calls to the object store, by `kind` (get, head, put, list, delete, copy, rename)",
    ),
    (
        STORAGE_ERRORS,
        MetricKind::Counter,
        "object-store calls that failed, by `kind` (not a missing object, not a refused conditional write)",
    ),
    (
        STORAGE_SECONDS,
        MetricKind::Histogram,
        "latency of object-store calls to their answer (a GET: its headers; a listing: its last entry; deletes are not timed), by `kind`",
    ),
    (BEES, MetricKind::Gauge, "bees of this node"),
    (BEES_BUSY, MetricKind::Gauge, "bees held by running queries"),
    (
        MEMORY_RESERVED,
        MetricKind::Gauge,
        "bytes reserved in this node's chambers",
    ),
    (MEMORY_BUDGET, MetricKind::Gauge, "bytes the bees share"),
    (
        TEMPERATURE,
        MetricKind::Gauge,
        "colony temperature, 0 (idle) to 1 (critical)",
    ),
    (
        CHAMBER_MEMORY_RESERVED,
        MetricKind::Gauge,
        "bytes reserved by the chamber whose first bee is `bee` (0 while the bee is idle or a later bee of a chamber)",
    ),
    (
        SPILLED_BYTES,
        MetricKind::Counter,
        "bytes the queries and swarm tasks of this node spilled to its scratch folders",
    ),
    (
        BAND,
        MetricKind::Gauge,
        "colony temperature band: 0 cold, 1 ideal, 2 warm, 3 hot, 4 critical",
    ),
    (
        COMPACTIONS,
        MetricKind::Counter,
        "compactions this node committed",
    ),
    (
        CLEANSES,
        MetricKind::Counter,
        "cleanses (removal of unreferenced and expired objects) this node ran",
    ),
    (
        CACHE_HITS,
        MetricKind::Counter,
        "reads of a cell the swarm node's cell cache already held",
    ),
    (
        CACHE_MISSES,
        MetricKind::Counter,
        "reads of a cell the cell cache had to download first",
    ),
    (
        CACHE_BYTES,
        MetricKind::Gauge,
        "bytes of the cells in the cell cache",
    ),
    (
        CACHE_BYTES_READ,
        MetricKind::Counter,
        "bytes read from cells on the cell cache's disk instead of the meadow",
    ),
    (
        SWARM_TASKS,
        MetricKind::Counter,
        "swarm tasks of other nodes' (or its own) queries, by `outcome`: claimed, retried (a claim of a later attempt, after a failure, a lost lease or a dead node), done, failed, abandoned (the query ended first)",
    ),
];

/// Counter: queries that began executing in a chamber.
pub const QUERIES_STARTED: &str = "apiary_queries_started_total";
/// Counter: queries whose results were delivered in full.
pub const QUERIES_FINISHED: &str = "apiary_queries_finished_total";
/// Counter: queries that ended with an error (a timeout included).
pub const QUERIES_FAILED: &str = "apiary_queries_failed_total";
/// Counter: queries dropped before their last batch.
pub const QUERIES_CANCELLED: &str = "apiary_queries_cancelled_total";
/// Counter: rows the queries of this node returned.
pub const ROWS_RETURNED: &str = "apiary_rows_returned_total";
/// Counter: cells a frame scan planned to read.
pub const CELLS_SCANNED: &str = "apiary_cells_scanned_total";
/// Counter: bytes of the cells a frame scan planned to read.
pub const CELL_BYTES_SCANNED: &str = "apiary_cell_bytes_scanned_total";
/// Counter: rows of the cells a frame scan planned to read.
pub const ROWS_SCANNED: &str = "apiary_rows_scanned_total";
/// Counter: commit attempts after the first (a lost race, or an answer that did not say whether
/// the write landed).
pub const COMMIT_RETRIES: &str = "apiary_commit_retries_total";
/// Counter: cells a frame scan ruled out without reading them, by `by` (partition, statistics).
pub const CELLS_PRUNED: &str = "apiary_cells_pruned_total";
/// Counter: ledger entries this node committed.
pub const COMMITS: &str = "apiary_commits_total";
/// Counter: commits that found their version taken and were rebased (each retry).
pub const LOST_RACES: &str = "apiary_commit_lost_races_total";
/// Counter: commits refused because a concurrent one changed what they read.
pub const CONFLICTS: &str = "apiary_commit_conflicts_total";
/// Counter: cells written (committed or not).
pub const CELLS_WRITTEN: &str = "apiary_cells_written_total";
/// Counter: bytes of the cells written.
pub const CELL_BYTES_WRITTEN: &str = "apiary_cell_bytes_written_total";
/// Counter: calls to the object store, by `kind` (get, head, put, list, delete, copy, rename).
pub const STORAGE_CALLS: &str = "apiary_storage_calls_total";
/// Counter: object-store calls that failed, by `kind` (not a missing object, not a refused
/// conditional write).
pub const STORAGE_ERRORS: &str = "apiary_storage_errors_total";
/// Histogram: latency of object-store calls, by `kind` (deletes are not timed).
pub const STORAGE_SECONDS: &str = "apiary_storage_call_seconds";
/// Gauge: bees of this node.
pub const BEES: &str = "apiary_bees";
/// Gauge: bees held by running queries.
pub const BEES_BUSY: &str = "apiary_bees_busy";
/// Gauge: bytes reserved in this node's chambers.
pub const MEMORY_RESERVED: &str = "apiary_memory_reserved_bytes";
/// Gauge: bytes the bees share.
pub const MEMORY_BUDGET: &str = "apiary_memory_budget_bytes";
/// Gauge: colony temperature, 0 (idle) to 1 (critical).
pub const TEMPERATURE: &str = "apiary_temperature";
/// Gauge: colony temperature band: 0 cold, 1 ideal, 2 warm, 3 hot, 4 critical.
pub const BAND: &str = "apiary_temperature_band";
/// Counter: compactions this node committed.
pub const COMPACTIONS: &str = "apiary_compactions_total";
/// Counter: cleanses (removal of unreferenced and expired objects) this node ran.
pub const CLEANSES: &str = "apiary_cleanses_total";
/// Counter: reads of a cell the swarm node's cell cache already held.
pub const CACHE_HITS: &str = "apiary_cache_hits_total";
/// Counter: reads of a cell the cell cache had to download first.
pub const CACHE_MISSES: &str = "apiary_cache_misses_total";
/// Gauge: bytes of the cells in the cell cache.
pub const CACHE_BYTES: &str = "apiary_cache_bytes";
/// Counter: bytes read from cells on the cell cache's disk instead of the meadow.
pub const CACHE_BYTES_READ: &str = "apiary_cache_bytes_read_total";
/// Gauge: bytes reserved by the chamber whose first bee is `bee`.
pub const CHAMBER_MEMORY_RESERVED: &str = "apiary_chamber_memory_reserved_bytes";
/// Counter: bytes the queries and swarm tasks of this node spilled to its scratch folders.
pub const SPILLED_BYTES: &str = "apiary_spilled_bytes_total";
/// Counter: swarm tasks this node took on, by `outcome` (claimed, retried, done, failed,
/// abandoned).
pub const SWARM_TASKS: &str = "apiary_swarm_tasks_total";

/// Buckets of [`STORAGE_SECONDS`]: from a local folder's half millisecond to a slow bucket's
/// ten seconds.
pub const STORAGE_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Says the meaning of every metric to the installed recorder (`# HELP` lines).
pub fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(*name, *help),
            MetricKind::Gauge => metrics::describe_gauge!(*name, *help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
            }
        }
    }
}

/// The node label of one node's metrics. Cheap to clone; clones share the label, which
/// changes when the node joins the swarm under a name of its own.
#[derive(Clone, Debug)]
pub struct Sight {
    node: Arc<RwLock<Arc<str>>>,
    /// Whether a node already counts in this sight (see [`Sight::claim`]).
    claimed: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Sight {
    /// `host-pid`, what a swarm node is called by default.
    fn default() -> Self {
        Sight::new(default_node())
    }
}

/// `host-pid`.
pub fn default_node() -> String {
    format!("{}-{}", host(), std::process::id())
}

/// This machine's host name (read once; `$HOSTNAME` where the kernel does not say, else
/// `unknown`).
pub fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into())
    })
}

impl Sight {
    /// A sight labelling its metrics `node`.
    pub fn new(node: impl Into<Arc<str>>) -> Self {
        Sight {
            node: Arc::new(RwLock::new(node.into())),
            claimed: Arc::default(),
        }
    }

    /// Takes this sight for one node: false when another node took it first (a second node of
    /// the process on a clone of the same meadow, which then needs a sight of its own).
    pub fn claim(&self) -> bool {
        !self.claimed.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// The node these metrics are labelled with.
    pub fn node(&self) -> Arc<str> {
        self.node.read().clone()
    }

    /// Labels what this sight and its clones record from now on `node` (a node joining the swarm
    /// under a name of its own).
    pub fn set_node(&self, node: impl Into<Arc<str>>) {
        *self.node.write() = node.into();
    }

    /// Adds `n` to the counter `name` of this node.
    pub fn count(&self, name: &'static str, n: u64) {
        metrics::counter!(name, "node" => self.node().to_string()).increment(n);
    }

    /// Adds `n` to the counter `name` of this node, with one more label.
    pub fn count_by(&self, name: &'static str, label: &'static str, value: &'static str, n: u64) {
        metrics::counter!(name, "node" => self.node().to_string(), label => value).increment(n);
    }

    /// Sets the counter `name` of this node to a total counted elsewhere.
    pub fn total(&self, name: &'static str, value: u64) {
        metrics::counter!(name, "node" => self.node().to_string()).absolute(value);
    }

    /// Sets the gauge `name` of this node.
    pub fn set(&self, name: &'static str, value: f64) {
        metrics::gauge!(name, "node" => self.node().to_string()).set(value);
    }

    /// Sets the gauge `name` of this node, with one more label.
    pub fn set_by(&self, name: &'static str, label: &'static str, value: String, to: f64) {
        metrics::gauge!(name, "node" => self.node().to_string(), label => value).set(to);
    }

    /// Counts what `plan` (executed) spilled: the `spilled_bytes` of every operator in it.
    pub fn count_spills(&self, plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) {
        fn spilled(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> usize {
            // (`sum_by_name` skips DataFusion's built-in metrics, spilled bytes among them.)
            let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0);
            own + plan.children().into_iter().map(spilled).sum::<usize>()
        }
        let bytes = spilled(plan);
        if bytes > 0 {
            self.count(SPILLED_BYTES, bytes as u64);
        }
    }

    /// One object-store call of `kind` that took `seconds`.
    pub fn storage_call(&self, kind: &'static str, seconds: f64, failed: bool) {
        self.count_by(STORAGE_CALLS, "kind", kind, 1);
        self.storage_answer(kind, seconds, failed);
    }

    /// The answer to an object-store call already counted: its latency, and whether it failed.
    pub fn storage_answer(&self, kind: &'static str, seconds: f64, failed: bool) {
        let node = self.node().to_string();
        if failed {
            metrics::counter!(STORAGE_ERRORS, "node" => node.clone(), "kind" => kind).increment(1);
        }
        metrics::histogram!(STORAGE_SECONDS, "node" => node, "kind" => kind).record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric name declared in this file is in [`METRICS`] (which the docs are checked
    /// against), once.
    #[test]
    fn every_metric_is_listed_once() {
        let declared: Vec<&str> = include_str!("sight.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": &str = \"").map(|(_, rest)| rest))
            .filter_map(|rest| rest.strip_suffix("\";"))
            .collect();
        assert!(declared.len() > 20, "{declared:?}");
        for name in &declared {
            let listed = METRICS.iter().filter(|(n, _, _)| n == name).count();
            assert_eq!(listed, 1, "{name} is listed {listed} times in METRICS");
        }
        assert_eq!(declared.len(), METRICS.len());
    }
}
