//! Splitting a plan at Apiary's scans.
//!
//! A *distributable* subtree is an Apiary scan (a `DataSourceExec` reading Parquet cells of this
//! meadow) with the chain of partition-local operators right above it — filters, projections
//! and a partial aggregation. Each task runs that chain over a group of cells;
//! everything above (final aggregation, joins, sorts, limits) stays on the coordinator.

use std::sync::Arc;

use apiary_catalog::restore_frame_scan;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::replace_children_if_necessary;

use crate::manifest::TaskCell;

/// Recognises the scans of one meadow.
#[derive(Debug, Clone)]
pub struct ScanMatcher {
    /// The meadow's object store URL, as scans name it.
    pub store_url: ObjectStoreUrl,
    /// The meadow's root key prefix (cells are below it).
    pub root: String,
}

/// Operators that work on each partition alone, so they can run wherever the cells are read.
pub fn is_partition_local(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial)
}

impl ScanMatcher {
    /// The matcher of `meadow`'s scans.
    pub fn of(meadow: &apiary_catalog::Meadow) -> Self {
        Self {
            store_url: meadow.object_store_url().clone(),
            root: meadow.root().to_string(),
        }
    }

    /// The scan config if `plan` is an Apiary scan of this meadow.
    pub fn scan_of(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<FileScanConfig> {
        let exec = plan.downcast_ref::<DataSourceExec>()?;
        let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
        config.file_source().downcast_ref::<ParquetSource>()?;
        self.outside(config).is_none().then(|| config.clone())
    }

    /// The first file `config` reads that is not a file of this meadow (another store, or a
    /// key not below the root), as a URL; `None` when it reads the meadow only.
    pub fn outside(&self, config: &FileScanConfig) -> Option<String> {
        let root = self.root.as_str();
        let below_root = |key: &str| {
            root.is_empty()
                || key
                    .strip_prefix(root)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .map(|f| f.object_meta.location.as_ref())
            .find(|key| config.object_store_url != self.store_url || !below_root(key))
            .map(|key| format!("{}{key}", config.object_store_url.as_str()))
    }

    /// If `plan` heads a chain of partition-local operators ending in an Apiary scan: the scan.
    pub fn distributable(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<FileScanConfig> {
        let mut node = Arc::clone(plan);
        loop {
            if let Some(config) = self.scan_of(&node) {
                return Some(config);
            }
            let children = node.children();
            if !is_partition_local(&node) || children.len() != 1 {
                return None;
            }
            let child = Arc::clone(children[0]);
            node = child;
        }
    }
}

/// Whether the chain headed by `top` can be sent to another node. Expressions that read state of
/// the coordinator's plan — a scalar subquery's result — cannot: datafusion-proto decodes them
/// only inside their `ScalarSubqueryExec`.
pub fn ships(top: &Arc<dyn ExecutionPlan>) -> bool {
    let mut node = Arc::clone(top);
    loop {
        let mut local_only = false;
        let visited = node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                local_only |= e.downcast_ref::<ScalarSubqueryExpr>().is_some();
                Ok(if local_only {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        });
        if visited.is_err() || local_only {
            return false;
        }
        let Some(child) = node.children().first().map(|c| Arc::clone(*c)) else {
            return true;
        };
        node = child;
    }
}

/// The cells a scan reads, every group together.
pub fn files_of(config: &FileScanConfig) -> Vec<PartitionedFile> {
    config
        .file_groups
        .iter()
        .flat_map(|g| g.iter().cloned())
        .collect()
}

/// The bytes `config` reads: per file, the in-memory size of the columns it projects (the
/// cell's statistics in the ledger), for the file's range. A scan of two narrow columns of a
/// wide cell reads their column chunks, not the cell. Where a size is unknown, the file's own
/// bytes count.
pub fn bytes_read(config: &FileScanConfig) -> u64 {
    // The file columns the scan's projection reads (it may hold expressions over them).
    let file_columns = config.file_schema().fields().len();
    let columns: Vec<usize> = match config.file_source().projection() {
        Some(p) => p
            .column_indices()
            .into_iter()
            .filter(|&i| i < file_columns)
            .collect(),
        None => (0..file_columns).collect(),
    };
    files_of(config)
        .iter()
        .map(|file| {
            let size = file.effective_size();
            let whole = file.object_meta.size;
            let (Some(stats), true) = (&file.statistics, whole > 0) else {
                return size;
            };
            let sizes: Option<Vec<usize>> = columns
                .iter()
                .map(|&i| {
                    stats
                        .column_statistics
                        .get(i)
                        .and_then(|c| c.byte_size.get_value().copied())
                })
                .collect();
            match sizes {
                Some(sizes) => {
                    let bytes: usize = sizes.iter().sum();
                    (bytes as f64 * size as f64 / whole as f64).ceil() as u64
                }
                None => size,
            }
        })
        .sum()
}

/// The chain headed by `top`, with its scan reading only `files` (as one partition).
pub fn fragment(
    top: &Arc<dyn ExecutionPlan>,
    files: Vec<PartitionedFile>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(exec) = top.downcast_ref::<DataSourceExec>() {
        let config = exec
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .ok_or_else(|| DataFusionError::Internal("not a file scan".into()))?;
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(files)])
            .build();
        // A decoded fragment lost what datafusion-proto does not carry; it is put back here,
        // where every task's scan is rebuilt.
        let config = restore_frame_scan(config);
        return Ok(DataSourceExec::from_data_source(config));
    }
    let children = top.children();
    let [child] = children.as_slice() else {
        return Err(DataFusionError::Internal(format!(
            "{} is not a single-child operator",
            top.name()
        )));
    };
    let child = fragment(child, files)?;
    replace_children_if_necessary(Arc::clone(top), vec![child])
}

/// The fragment of a whole distributed scan: the chain over every cell the tasks read, each cell
/// once and whole. It is written once per query; each task narrows it to its own cells
/// ([`narrow`]) from the manifest.
pub fn fragment_of_all(
    top: &Arc<dyn ExecutionPlan>,
    tasks: &[Vec<PartitionedFile>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut cells: Vec<PartitionedFile> = vec![];
    for f in tasks.iter().flatten() {
        if !cells
            .iter()
            .any(|c| c.object_meta.location == f.object_meta.location)
        {
            let mut whole = f.clone();
            whole.range = None;
            cells.push(whole);
        }
    }
    fragment(top, cells)
}

/// `plan` (a decoded [`fragment_of_all`]) reading only `cells`, with their byte ranges. A cell
/// the fragment does not hold is an error naming it.
pub fn narrow(plan: &Arc<dyn ExecutionPlan>, cells: &[TaskCell]) -> Result<Arc<dyn ExecutionPlan>> {
    let scan = ScanOf(plan);
    let files = scan.files()?;
    let mut chosen = Vec::with_capacity(cells.len());
    for c in cells {
        let file = files
            .iter()
            .find(|f| f.object_meta.location.as_ref() == c.key)
            .ok_or_else(|| {
                DataFusionError::Internal(format!("cell {} is not in the query's fragment", c.key))
            })?;
        chosen.push(match c.range {
            Some([start, end]) => file.clone().with_range(start as i64, end as i64),
            None => file.clone(),
        });
    }
    fragment(plan, chosen)
}

/// The scan at the bottom of a single-child chain.
struct ScanOf<'a>(&'a Arc<dyn ExecutionPlan>);

impl ScanOf<'_> {
    fn files(&self) -> Result<Vec<PartitionedFile>> {
        let mut node = Arc::clone(self.0);
        loop {
            if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
                let config = exec
                    .data_source()
                    .downcast_ref::<FileScanConfig>()
                    .ok_or_else(|| DataFusionError::Internal("not a file scan".into()))?;
                return Ok(files_of(config));
            }
            let child = node
                .children()
                .first()
                .map(|c| Arc::clone(*c))
                .ok_or_else(|| DataFusionError::Internal("a fragment without a scan".into()))?;
            node = child;
        }
    }
}
