//! Keeps a scan that declares an output order reading its files in that order.
//!
//! DataFusion 55's `LimitPushdown` hands the fetch of a `SortPreservingMergeExec` to the scan
//! below it as if the order did not matter (apache/datafusion#24272): it calls
//! `with_preserve_order(false)` on a scan that declares `output_ordering`. Two things then break
//! `ORDER BY … LIMIT` over a clustered frame: sibling partitions steal each other's files from
//! one shared queue, so a partition's first rows may come from any group, and Parquet's
//! limit-based row-group pruning skips a row group that matches the filter in part for a later
//! one that matches in full. Both returned rows from the middle of the order.
//!
//! [`KeepScanOrder`] runs after DataFusion's rules and puts `preserve_order` back on every file
//! scan that declares an order — what `FileScanConfigBuilder::build` sets for such a scan in
//! the first place. A frame scan declares its order only in a session that runs this rule
//! ([`keeps_scan_order`]); elsewhere DataFusion sorts, and answers stay right.

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

const NAME: &str = "apiary_keep_scan_order";

/// The physical optimizer rule that undoes apache/datafusion#24272 (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepScanOrder;

impl PhysicalOptimizerRule for KeepScanOrder {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let lost = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
                .is_some_and(|scan| !scan.output_ordering.is_empty() && !scan.preserve_order);
            match lost.then(|| node.with_preserve_order(true)).flatten() {
                Some(kept) => Ok(Transformed::yes(kept)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `session` runs [`KeepScanOrder`]: only then may a frame scan declare its order.
pub(crate) fn keeps_scan_order(session: &dyn Session) -> bool {
    session
        .physical_optimizers()
        .iter()
        .any(|rule| rule.name() == NAME)
}

/// Adds [`KeepScanOrder`] to `state`'s physical optimizer rules, after DataFusion's, if missing.
pub(crate) fn install(state: &mut SessionState) {
    if !keeps_scan_order(state) {
        *state = SessionStateBuilder::new_from_existing(state.clone())
            .with_physical_optimizer_rule(Arc::new(KeepScanOrder))
            .build();
    }
}
