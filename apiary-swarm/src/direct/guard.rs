//! A worker runs plans that read its meadow only.
//!
//! The swarm token keeps strangers out; this keeps a token holder to the meadow. A decoded plan
//! whose file scan reads another store, or keys outside the meadow's root, is refused before it
//! is registered — the worker's process could read any file it can open, the meadow's holders
//! only the meadow. The worker's runtime also knows no store but the meadow's ([`MeadowStores`]),
//! so that a plan naming another store fails as soon as it is decoded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{exec_datafusion_err, exec_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use datafusion::object_store::ObjectStore;
use datafusion_distributed::{
    WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse, WorkerPlanRewriteHandler,
};
use url::Url;

use crate::fragment::ScanMatcher;

/// Refuses, and counts, a stage plan that reads outside the meadow.
pub(crate) struct MeadowGuard {
    pub matcher: ScanMatcher,
    pub refused: Arc<AtomicU64>,
}

impl WorkerPlanRewriteHandler for MeadowGuard {
    fn rewrite_worker_plan(
        &self,
        ev: WorkerPlanRewriteEvent,
    ) -> Result<WorkerPlanRewriteEventResponse> {
        let mut outside = None;
        ev.plan.apply(|node| {
            let config = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>());
            outside = config.and_then(|config| self.matcher.outside(config));
            Ok(match outside {
                Some(_) => TreeNodeRecursion::Stop,
                None => TreeNodeRecursion::Continue,
            })
        })?;
        if let Some(file) = outside {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return exec_err!(
                "this worker runs plans that read its meadow only ({}{}): the plan reads {file}, \
                 outside its meadow",
                self.matcher.store_url.as_str(),
                self.matcher.root
            );
        }
        Ok(WorkerPlanRewriteEventResponse::new(ev.plan))
    }
}

/// The object stores of a worker's runtime: the meadow's, and no other — not DataFusion's default
/// `file://` (unless the meadow is a local folder). A request for another store is refused and
/// counted.
#[derive(Debug)]
pub(crate) struct MeadowStores {
    pub store_url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
    pub refused: Arc<AtomicU64>,
}

impl ObjectStoreRegistry for MeadowStores {
    /// Nothing is registered on a worker's runtime but the meadow's store it was made with.
    fn register_store(
        &self,
        url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        log::warn!("a worker's runtime keeps to its meadow's store: {url} not registered");
        None
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let meadow: &Url = self.store_url.as_ref();
        let same = url.scheme() == meadow.scheme()
            && url.host_str() == meadow.host_str()
            && url.port() == meadow.port();
        if same {
            return Ok(Arc::clone(&self.store));
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(exec_datafusion_err!(
            "this worker runs plans that read its meadow only ({}): the plan reads {url}, \
             outside its meadow",
            self.store_url.as_str()
        ))
    }
}
