//! Table functions that change things (compaction, cleansing, undrop) do their work when their
//! output is read, never while a statement is planned.
//!
//! DataFusion calls `TableFunctionImpl::call_with_args` while it *plans* — also for `EXPLAIN`,
//! `CREATE VIEW`, prepared statements, or a planner that plans twice — and plain `EXPLAIN` builds
//! the physical plan too, so `TableProvider::scan` must not act either. An [`ActionTable`] plans to
//! an [`ActionExec`] whose stream runs the work on first poll, in the task context it executes
//! with: the session's memory budget (a chamber of the bees, in Apiary's sessions).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::future::BoxFuture;

/// The work: given the task context it runs in, the rows to report.
pub type Action =
    Arc<dyn Fn(Arc<TaskContext>) -> BoxFuture<'static, Result<RecordBatch>> + Send + Sync>;

/// A table whose one batch is produced by running `action` when it is read.
pub struct ActionTable {
    name: String,
    schema: SchemaRef,
    action: Action,
}

impl fmt::Debug for ActionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionTable")
            .field("name", &self.name)
            .finish()
    }
}

impl ActionTable {
    /// `name` is what `EXPLAIN` shows, e.g. `apiary_compact(h.b.f)`.
    pub fn new(name: impl Into<String>, schema: SchemaRef, action: Action) -> Self {
        Self {
            name: name.into(),
            schema,
            action,
        }
    }
}

#[async_trait]
impl TableProvider for ActionTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let mut exec = ActionExec::new(self.name.clone(), schema, Arc::clone(&self.action));
        exec.projection = projection.cloned();
        Ok(Arc::new(exec))
    }
}

/// Runs an action on its first poll and yields its report.
pub struct ActionExec {
    name: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    action: Action,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for ActionExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionExec")
            .field("name", &self.name)
            .finish()
    }
}

impl ActionExec {
    /// A plan whose one batch of `schema` is what `action` reports; `name` is what `EXPLAIN`
    /// shows.
    pub fn new(name: impl Into<String>, schema: SchemaRef, action: Action) -> Self {
        Self {
            name: name.into(),
            schema: Arc::clone(&schema),
            projection: None,
            action,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
        }
    }
}

impl DisplayAs for ActionExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ActionExec: {}", self.name)
    }
}

impl ExecutionPlan for ActionExec {
    fn name(&self) -> &str {
        "ActionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("ActionExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("ActionExec has one partition, not {partition}");
        }
        let (action, projection) = (Arc::clone(&self.action), self.projection.clone());
        let work = async move {
            let batch = action(context).await?;
            match projection {
                Some(p) => Ok(batch.project(&p)?),
                None => Ok(batch),
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(work),
        )))
    }
}
