//! The physical optimizer rule that hands Apiary's scans to the swarm.
//!
//! Installable on any `SessionState` (before Apiary's `ChamberRule`). For each distributable
//! subtree (see [`crate::fragment`]) it decides from what planning already knows — the cells'
//! sizes (from the ledger) and the world view — whether the swarm helps: with fewer than two
//! alive nodes or less than `swarm.min_bytes` to read, the plan stays local, so the swarm never
//! slows a small query down. Otherwise the cells are cut into tasks of equal bytes, several per
//! free bee of the alive nodes (see [`assign`]); the nodes' free bees pull them (see the worker),
//! and a task holding cells a node reports cached waits a short while for that node.

use std::collections::HashSet;
use std::sync::Arc;

use apiary_exec::Band;
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::metrics::MetricBuilder;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, replace_children_if_necessary};

use crate::codec::ApiaryCodec;
use crate::config::SwarmOptions;
use crate::fragment::ScanMatcher;
use crate::fragment::{bytes_read, files_of, ships};
use crate::heartbeat::Heartbeat;
use crate::membership::Membership;
use crate::swarm_exec::{Exchange, PlannedTask, SwarmExec};

/// An alive node as the rule sees it: its last heartbeat, and the cells its cache index lists.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub heartbeat: Heartbeat,
    pub cached: Arc<HashSet<String>>,
}

/// Installable on any `SessionState` (before Apiary's `ChamberRule`): see the module docs.
#[derive(Clone)]
pub struct SwarmRule {
    /// Which nodes are alive, and what they cache.
    membership: Arc<Membership>,
    matcher: ScanMatcher,
    /// Encodes fragments, which are decoded again under `decoding` to check they travel.
    codec: ApiaryCodec,
    decoding: Arc<TaskContext>,
    exchange: Arc<dyn Exchange>,
}

impl std::fmt::Debug for SwarmRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmRule")
            .field("exchange", &self.exchange)
            .finish()
    }
}

impl SwarmRule {
    pub(crate) fn new(
        membership: Arc<Membership>,
        matcher: ScanMatcher,
        codec: ApiaryCodec,
        decoding: Arc<TaskContext>,
        exchange: Arc<dyn Exchange>,
    ) -> Self {
        Self {
            membership,
            matcher,
            codec,
            decoding,
            exchange,
        }
    }

    fn rewrite(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        options: &SwarmOptions,
        nodes: &[Candidate],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(split) = self.split_single_aggregate(&plan, options, nodes)? {
            return Ok(split);
        }
        if let Some(scan) = self.matcher.distributable(&plan) {
            if !ships(&plan) {
                note_local(
                    &scan,
                    "a subquery in its plan cannot be sent to other nodes".into(),
                );
                return Ok(plan);
            }
            // Tasks land in any order on any partition: operators above that were planned on a
            // sorted or hash-partitioned input must keep their local input.
            let properties = plan.properties();
            if properties.output_ordering().is_some()
                || matches!(properties.output_partitioning(), Partitioning::Hash(..))
            {
                note_local(
                    &scan,
                    "the operators above it need its order or hash partitioning".into(),
                );
                return Ok(plan);
            }
            let bytes = bytes_read(&scan);
            let files = files_of(&scan);
            if bytes < options.min_bytes {
                note_local(
                    &scan,
                    format!(
                        "it reads {:.1} MiB, below swarm.min_bytes ({:.1} MiB)",
                        bytes as f64 / 1048576.0,
                        options.min_bytes as f64 / 1048576.0
                    ),
                );
                return Ok(plan);
            }
            let tasks = assign(files, nodes, options.tasks_per_bee, options.min_task_bytes);
            if tasks.len() < 2 {
                note_local(&scan, "it makes fewer than two tasks".into());
                return Ok(plan);
            }
            let task_count = tasks.len();
            let fetch = chain_fetch(&plan);
            let made = SwarmExec::try_new(
                Arc::clone(&plan),
                tasks,
                &self.codec,
                &self.decoding,
                Arc::clone(&self.exchange),
            );
            let swarm: Arc<dyn ExecutionPlan> = match made {
                Ok(exec) => Arc::new(exec),
                Err(e) => {
                    // What cannot travel runs here: a slower query, never a failed one.
                    log::debug!("keeping a scan local: its fragment does not travel: {e}");
                    note_local(&scan, format!("its fragment does not travel: {e}"));
                    return Ok(plan);
                }
            };
            MetricBuilder::new(scan.file_source().metrics())
                .with_new_label(SWARM_NODES_LABEL, nodes.len().to_string())
                .global_counter(SWARM_TASKS)
                .add(task_count);
            return Ok(match fetch {
                Some(fetch) => limit_above(swarm, fetch),
                None => swarm,
            });
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let rewritten = children
            .into_iter()
            .map(|c| self.rewrite(c, options, nodes))
            .collect::<Result<Vec<_>>>()?;
        replace_children_if_necessary(plan, rewritten)
    }
}

/// The scan metric a distributed scan's task count goes in (labelled with the nodes alive),
/// and the one that says why a scan stays local: a plain `EXPLAIN` shows both (`apiary::explain`).
pub const SWARM_TASKS: &str = "swarm_tasks";
/// The label of [`SWARM_TASKS`] with the nodes alive.
pub const SWARM_NODES_LABEL: &str = "nodes";
/// The scan metric a local scan notes why it stayed local in.
pub const SWARM_LOCAL: &str = "swarm_local";
/// The label of [`SWARM_LOCAL`] with the reason.
pub const SWARM_REASON_LABEL: &str = "reason";

fn note_local(scan: &FileScanConfig, reason: String) {
    MetricBuilder::new(scan.file_source().metrics())
        .with_new_label(SWARM_REASON_LABEL, reason)
        .global_counter(SWARM_LOCAL)
        .add(1);
}

impl SwarmRule {
    fn note_every_scan(&self, plan: &Arc<dyn ExecutionPlan>, reason: &'static str) {
        if let Some(scan) = self.matcher.scan_of(plan) {
            note_local(&scan, reason.into());
        }
        for child in plan.children() {
            self.note_every_scan(child, reason);
        }
    }

    /// An aggregation DataFusion planned in one step (`Single`: one input partition, as on a
    /// node of one bee) over a distributable scan, planned again in two — the partial step goes
    /// to the swarm with the scan, the final one stays here — so that tasks send back their
    /// groups, not their rows. The inverse of DataFusion's `CombinePartialFinalAggregate`.
    fn split_single_aggregate(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        options: &SwarmOptions,
        nodes: &[Candidate],
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(agg) = plan.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        if *agg.mode() != AggregateMode::Single
            || agg.limit_options().is_some()
            || self.matcher.distributable(agg.input()).is_none()
        {
            return Ok(None);
        }
        let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            agg.group_expr().clone(),
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            Arc::clone(agg.input()),
            agg.input_schema(),
        )?);
        let below = self.rewrite(Arc::clone(&partial), options, nodes)?;
        if Arc::ptr_eq(&below, &partial) {
            return Ok(None); // stays local: keep DataFusion's plan as it was
        }
        Ok(Some(Arc::new(AggregateExec::try_new(
            AggregateMode::Final,
            agg.group_expr().as_final(),
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            below,
            agg.input_schema(),
        )?)))
    }
}

/// The fetch (a `LIMIT` folded into the chain by DataFusion's `LimitPushdown`: `DataSourceExec
/// limit=`, `FilterExec fetch=`) nearest the top of a distributable chain: every task applies it
/// to its own cells, so it must be applied again above their union.
fn chain_fetch(top: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let mut node = Arc::clone(top);
    loop {
        if let Some(fetch) = node.fetch() {
            return Some(fetch);
        }
        let child = node.children().first().map(|c| Arc::clone(*c))?;
        node = child;
    }
}

/// `fetch` rows of `input`, whatever its partitioning (the limit DataFusion's `LimitPushdown`
/// dropped because it had folded it into a one-partition chain).
fn limit_above(input: Arc<dyn ExecutionPlan>, fetch: usize) -> Arc<dyn ExecutionPlan> {
    let single = if input.properties().output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(input).with_fetch(Some(fetch)))
            as Arc<dyn ExecutionPlan>
    } else {
        input
    };
    Arc::new(GlobalLimitExec::new(single, 0, Some(fetch)))
}

/// How many bees a node offers a new query by its last heartbeat: those it has free (at least
/// one), one when its colony is hot, none when it is critical — unless every node is critical,
/// when each offers all its bees (the query must run somewhere).
fn offered_bees(node: &Heartbeat, all_critical: bool) -> usize {
    if all_critical {
        return node.bees.max(1);
    }
    match node.band {
        Band::Critical => 0,
        Band::Hot => 1,
        _ => node.bees.saturating_sub(node.busy_bees).max(1),
    }
}

/// Cuts `files` into tasks of equal bytes: `tasks_per_bee` for every bee the nodes offer
/// (`offered_bees`), fewer when the tasks would be smaller than `min_task_bytes`, never fewer
/// than the bees. Each node has a share of the tasks in proportion to its bees; a cell a node
/// reports cached goes whole into its share while there is room, and a task holding one prefers
/// that node. The rest fill the tasks in turn, a cell split into byte ranges at a task's boundary
/// (Parquet assigns each row group to the range holding its midpoint, as in DataFusion's own file
/// repartitioning). Tasks are not dealt: free bees pull them.
pub fn assign(
    files: Vec<PartitionedFile>,
    nodes: &[Candidate],
    tasks_per_bee: usize,
    min_task_bytes: u64,
) -> Vec<PlannedTask> {
    let all_critical = nodes.iter().all(|n| n.heartbeat.band == Band::Critical);
    let offered: Vec<usize> = nodes
        .iter()
        .map(|n| offered_bees(&n.heartbeat, all_critical))
        .collect();
    let bees: usize = offered.iter().sum();
    if bees == 0 {
        return vec![];
    }
    let mut files = whole_cells(files);
    files.sort_by_key(|f| std::cmp::Reverse(f.effective_size()));
    let total: u64 = files.iter().map(|f| f.effective_size()).sum();
    let wanted = bees.saturating_mul(tasks_per_bee.max(1));
    let count = wanted
        .min(usize::try_from(total.div_ceil(min_task_bytes.max(1))).unwrap_or(usize::MAX))
        .max(bees);
    // Each task belongs to one node's share (in proportion to its bees) for placing cached cells.
    let mut shares: Vec<usize> = offered.iter().map(|o| count * o / bees).collect();
    let mut left = count - shares.iter().sum::<usize>();
    for (share, o) in shares.iter_mut().zip(&offered) {
        if left > 0 && *o > 0 {
            *share += 1;
            left -= 1;
        }
    }
    let mut tasks: Vec<(PlannedTask, u64, &str)> = nodes
        .iter()
        .zip(&shares)
        .flat_map(|(n, share)| {
            (0..*share).map(|_| {
                (
                    PlannedTask {
                        preferred: None,
                        files: vec![],
                    },
                    0u64,
                    n.heartbeat.node_id.as_str(),
                )
            })
        })
        .collect();
    let Some(last) = tasks.len().checked_sub(1) else {
        return vec![];
    };
    let target = total.div_ceil(tasks.len() as u64).max(1);
    // Close enough to the target not to split a cell for it.
    let slack = target / 16;

    let mut rest = vec![];
    for file in files {
        let size = file.effective_size();
        let key = file.object_meta.location.to_string();
        let cached_at = (0..tasks.len())
            .filter(|i| {
                let owner = tasks[*i].2;
                tasks[*i].1 + size <= target + slack
                    && nodes
                        .iter()
                        .any(|n| n.heartbeat.node_id == owner && n.cached.contains(&key))
            })
            .min_by_key(|i| tasks[*i].1);
        match cached_at {
            Some(i) => {
                tasks[i].0.preferred = Some(tasks[i].2.to_string());
                tasks[i].0.files.push(file);
                tasks[i].1 += size;
            }
            None => rest.push(file),
        }
    }

    let mut i = 0;
    for file in rest {
        let mut piece = file;
        loop {
            while i < last && tasks[i].1 + slack >= target {
                i += 1;
            }
            let room = target.saturating_sub(tasks[i].1);
            let size = piece.effective_size();
            if size <= room + slack || i == last {
                tasks[i].0.files.push(piece);
                tasks[i].1 += size;
                break;
            }
            let (start, end) = piece.range();
            let cut = start + room;
            tasks[i]
                .0
                .files
                .push(piece.clone().with_range(start as i64, cut as i64));
            tasks[i].1 += room;
            piece = piece.with_range(cut as i64, end as i64);
        }
    }
    tasks
        .into_iter()
        .map(|(t, _, _)| t)
        .filter(|t| !t.files.is_empty())
        .collect()
}

/// The scan's files with the byte ranges of one cell (DataFusion's own repartitioning of the local
/// plan) joined again, so that cells are split only where the swarm needs it.
fn whole_cells(files: Vec<PartitionedFile>) -> Vec<PartitionedFile> {
    let mut by_cell: Vec<(String, Vec<PartitionedFile>)> = vec![];
    for f in files {
        let key = f.object_meta.location.to_string();
        match by_cell.iter_mut().find(|(k, _)| *k == key) {
            Some((_, pieces)) => pieces.push(f),
            None => by_cell.push((key, vec![f])),
        }
    }
    let mut out = vec![];
    for (_, mut pieces) in by_cell {
        pieces.sort_by_key(|p| p.range().0);
        let mut joined: Vec<PartitionedFile> = vec![];
        for p in pieces {
            match joined.last_mut() {
                Some(prev) if prev.range().1 >= p.range().0 => {
                    let (start, end) = (prev.range().0, prev.range().1.max(p.range().1));
                    *prev = if start == 0 && end == prev.object_meta.size {
                        let mut whole = prev.clone();
                        whole.range = None;
                        whole
                    } else {
                        prev.clone().with_range(start as i64, end as i64)
                    };
                }
                _ => joined.push(p),
            }
        }
        out.extend(joined);
    }
    out
}

impl PhysicalOptimizerRule for SwarmRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let options = config
            .extensions
            .get::<SwarmOptions>()
            .cloned()
            .unwrap_or_default();
        if !options.enabled {
            self.note_every_scan(&plan, "swarm.enabled is false");
            return Ok(plan);
        }
        // The direct path's planner chose datafusion-distributed for this query.
        if options.path.eq_ignore_ascii_case("direct") {
            self.note_every_scan(&plan, "the query takes the direct path");
            return Ok(plan);
        }
        let world = &self.membership.world;
        let nodes: Vec<Candidate> = world
            .alive()
            .into_iter()
            .map(|heartbeat| Candidate {
                cached: world.cached(&heartbeat.node_id),
                heartbeat,
            })
            .collect();
        if nodes.len() < 2 {
            self.note_every_scan(&plan, "no other node is alive");
            return Ok(plan);
        }
        self.rewrite(plan, &options, &nodes)
    }

    fn name(&self) -> &str {
        "apiary_swarm"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;
    /// The default `swarm.min_task_bytes`.
    const FLOOR: u64 = 8 << 20;

    fn node(id: &str, bees: usize, cached: &[&str]) -> Candidate {
        let heartbeat = Heartbeat {
            node_id: id.into(),
            host: "test".into(),
            seq: 1,
            clock_ms: 0,
            started_ms: 0,
            bees,
            budget_per_bee: 1 << 30,
            busy_bees: 0,
            waiting: 0,
            temperature: 0.0,
            band: Band::Cold,
            cache_bytes: 0,
            cache_cells: cached.len(),
            cache_version: 1,
            version: "test".into(),
            queries: vec![],
            endpoint: None,
        };
        Candidate {
            heartbeat,
            cached: Arc::new(cached.iter().map(|c| c.to_string()).collect()),
        }
    }

    fn cell(name: &str, size: u64) -> PartitionedFile {
        PartitionedFile::new(name, size)
    }

    /// Every byte of every cell is read by exactly one task.
    fn assert_covers(tasks: &[PlannedTask], cells: &[(&str, u64)]) {
        for (name, size) in cells {
            let mut ranges: Vec<(u64, u64)> = tasks
                .iter()
                .flat_map(|t| &t.files)
                .filter(|f| f.object_meta.location.as_ref() == *name)
                .map(|f| f.range())
                .collect();
            ranges.sort();
            let mut at = 0;
            for (start, end) in ranges {
                assert_eq!(start, at, "{name}: a gap or an overlap at {at}");
                at = end;
            }
            assert_eq!(at, *size, "{name} is read to its end");
        }
    }

    #[test]
    fn uneven_cells_make_even_tasks() {
        let cells = [("a.parquet", 134 * MB), ("b.parquet", 78 * MB)];
        let files = cells.iter().map(|(n, s)| cell(n, *s)).collect();
        let tasks = assign(files, &[node("x", 1, &[]), node("y", 1, &[])], 1, FLOOR);
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].bytes(), 106 * MB);
        assert_eq!(tasks[1].bytes(), 106 * MB);
        // Nothing cached anywhere: every task is anyone's.
        assert!(tasks.iter().all(|t| t.preferred.is_none()));
        assert_covers(&tasks, &cells);

        let many: Vec<(String, u64)> = (0..7)
            .map(|i| (format!("c{i}.parquet"), (i + 1) * 9 * MB))
            .collect();
        let cells: Vec<(&str, u64)> = many.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let files = cells.iter().map(|(n, s)| cell(n, *s)).collect();
        let tasks = assign(files, &[node("x", 2, &[]), node("y", 3, &[])], 1, FLOOR);
        assert_eq!(tasks.len(), 5);
        let total: u64 = cells.iter().map(|(_, s)| s).sum();
        for t in &tasks {
            assert!(
                t.bytes().abs_diff(total / 5) <= total / 5 / 16,
                "{}",
                t.bytes()
            );
        }
        assert_covers(&tasks, &cells);
    }

    #[test]
    fn a_scan_is_cut_into_several_tasks_per_bee_but_not_into_crumbs() {
        let cells: Vec<(String, u64)> = (0..12)
            .map(|i| (format!("c{i}.parquet"), 40 * MB))
            .collect();
        let files = |n: usize| cells[..n].iter().map(|(c, s)| cell(c, *s)).collect();
        let nodes = [node("x", 2, &[]), node("y", 2, &[])];
        // 480 MB over four bees, three tasks each.
        let tasks = assign(files(12), &nodes, 3, FLOOR);
        assert_eq!(tasks.len(), 12);
        assert!(tasks.iter().all(|t| t.bytes() == 40 * MB), "{tasks:?}");
        // 40 MB: five tasks of at least 8 MiB rather than twelve of 3.3 MB.
        let tasks = assign(files(1), &nodes, 3, FLOOR);
        assert_eq!(tasks.len(), 5);
        // A small scan still gets one task per bee.
        let tiny: Vec<PartitionedFile> = (0..4).map(|i| cell(&format!("t{i}"), 1000)).collect();
        assert_eq!(assign(tiny.clone(), &nodes, 3, FLOOR).len(), 4);
        // … unless the floor is lowered (`swarm.min_task_bytes`).
        assert_eq!(assign(tiny, &nodes, 3, 0).len(), 12);
    }

    #[test]
    fn busy_and_hot_nodes_offer_fewer_bees() {
        let cells: Vec<(String, u64)> = (0..12)
            .map(|i| (format!("c{i}.parquet"), 10 * MB))
            .collect();
        let files = || cells.iter().map(|(n, s)| cell(n, *s)).collect::<Vec<_>>();
        let load = |mut n: Candidate, busy: usize, band: Band| {
            n.heartbeat.busy_bees = busy;
            n.heartbeat.band = band;
            n
        };
        let nodes = [
            node("idle", 4, &[]),
            load(node("busy", 4, &[]), 3, Band::Warm),
            load(node("hot", 4, &[]), 4, Band::Hot),
            load(node("critical", 4, &[]), 4, Band::Critical),
        ];
        // 4 + 1 + 1 + 0 bees offered.
        let tasks = assign(files(), &nodes, 1, FLOOR);
        assert_eq!(tasks.len(), 6);
        assert!(tasks.iter().all(|t| t.bytes() == 20 * MB), "{tasks:?}");

        // Every node critical: the query still runs, over every bee.
        let nodes = [
            load(node("x", 2, &[]), 2, Band::Critical),
            load(node("y", 2, &[]), 2, Band::Critical),
        ];
        assert_eq!(assign(files(), &nodes, 1, FLOOR).len(), 4);
    }

    #[test]
    fn cached_cells_go_whole_to_a_task_their_node_prefers() {
        let cells = [
            ("a.parquet", 40 * MB),
            ("b.parquet", 40 * MB),
            ("c.parquet", 40 * MB),
            ("d.parquet", 40 * MB),
        ];
        let files = cells.iter().map(|(n, s)| cell(n, *s)).collect();
        let nodes = [
            node("x", 1, &["c.parquet"]),
            node("y", 1, &["a.parquet", "b.parquet"]),
        ];
        let tasks = assign(files, &nodes, 1, FLOOR);
        let names = |node: &str| -> Vec<String> {
            let mut names: Vec<String> = tasks
                .iter()
                .filter(|t| t.preferred.as_deref() == Some(node))
                .flat_map(|t| &t.files)
                .map(|f| f.object_meta.location.to_string())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names("y"), ["a.parquet", "b.parquet"]);
        assert_eq!(names("x"), ["c.parquet", "d.parquet"]);
        assert!(
            tasks
                .iter()
                .flat_map(|t| &t.files)
                .all(|f| f.range.is_none())
        );
    }

    #[test]
    fn ranges_of_the_local_plan_are_joined_first() {
        let whole = cell("a.parquet", 100 * MB);
        let pieces = vec![
            whole.clone().with_range(50_000_000, 100_000_000),
            whole.clone().with_range(0, 50_000_000),
            cell("b.parquet", 10 * MB),
        ];
        let joined = whole_cells(pieces);
        assert_eq!(joined.len(), 2);
        assert!(joined.iter().all(|f| f.range.is_none()));
        // Small remainders are not split off: within 1/16 of the target, a cell stays whole.
        let tasks = assign(
            vec![cell("a.parquet", 51 * MB), cell("b.parquet", 49 * MB)],
            &[node("x", 1, &[]), node("y", 1, &[])],
            1,
            FLOOR,
        );
        assert!(
            tasks
                .iter()
                .all(|t| t.files.len() == 1 && t.files[0].range.is_none())
        );
    }
}
