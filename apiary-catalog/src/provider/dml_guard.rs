//! Refuses the `DELETE` and `UPDATE` statements on frames that DataFusion 55 would hand to the
//! frame as "every row".
//!
//! DataFusion calls `TableProvider::delete_from` / `update` with the conjuncts of the WHERE it
//! still finds in the *optimized* plan (`extract_dml_filters` in its physical planner). What its
//! optimizer moved elsewhere or folded away is lost: a WHERE holding a subquery (decorrelated into
//! a join), one that folds to `false` or `NULL` (the filter becomes an empty relation), and a
//! DELETE's `LIMIT` (ignored) all arrive as no filter at all — and an empty filter list means
//! every row (upstream apache/datafusion#24654). This analyzer rule runs before the optimizer,
//! sees the statement as written, and refuses those forms on Apiary's frames; the frame's
//! `delete_from` / `update` refuse to run in a session without it.

use std::sync::Arc;

use datafusion::catalog::default_table_source::DefaultTableSource;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, plan_err};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, WriteOp};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use super::FrameTableProvider;

/// The analyzer rule's name, by which a frame recognises that its session has it.
pub(crate) const NAME: &str = "apiary_dml_guard";

/// What `register` installs in a session: see the module documentation.
#[derive(Debug, Default)]
pub struct DmlGuard;

impl AnalyzerRule for DmlGuard {
    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.apply(|node| {
            if let LogicalPlan::Dml(dml) = node
                && matches!(dml.op, WriteOp::Delete | WriteOp::Update)
                && targets_a_frame(dml)
                && let Some(reason) = refusal(&dml.input, config)?
            {
                let statement = if dml.op == WriteOp::Delete {
                    "DELETE"
                } else {
                    "UPDATE"
                };
                return plan_err!("{statement} on frame {} refused: {reason}", dml.table_name);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        NAME
    }
}

impl DmlGuard {
    /// Installs the guard in `state` unless it is there already.
    pub(crate) fn install(state: &mut SessionState) {
        if !has_guard(state) {
            state.add_analyzer_rule(Arc::new(DmlGuard));
        }
    }
}

/// Whether `state` runs the guard before planning.
pub(crate) fn has_guard(state: &SessionState) -> bool {
    state.analyzer().rules.iter().any(|r| r.name() == NAME)
}

fn targets_a_frame(dml: &DmlStatement) -> bool {
    dml.target
        .downcast_ref::<DefaultTableSource>()
        .is_some_and(|s| {
            s.table_provider
                .downcast_ref::<FrameTableProvider>()
                .is_some()
        })
}

const SUBQUERY: &str = "its WHERE or SET holds a subquery, which DataFusion 55 hands to the frame as \
     \"every row\" (apache/datafusion#24654). Use MERGE INTO instead: MERGE INTO frame USING \
     (SELECT …) AS s ON frame.id = s.id WHEN MATCHED THEN DELETE (or UPDATE SET …)";

/// Why the statement whose input is `plan` must not run, if it must not.
fn refusal(plan: &LogicalPlan, config: &ConfigOptions) -> Result<Option<String>> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(None),
        LogicalPlan::SubqueryAlias(a) => refusal(&a.input, config),
        LogicalPlan::Projection(p) => {
            if p.expr.iter().any(holds_subquery) {
                return Ok(Some(SUBQUERY.into()));
            }
            refusal(&p.input, config)
        }
        LogicalPlan::Filter(f) => {
            if holds_subquery(&f.predicate) {
                return Ok(Some(SUBQUERY.into()));
            }
            if let Some(value) = constant(&f.predicate, f.input.schema(), config) {
                return Ok(Some(format!(
                    "its WHERE folds to the constant {value}, which DataFusion 55 hands to the \
                     frame as \"every row\"; to change every row leave out the WHERE"
                )));
            }
            refusal(&f.input, config)
        }
        LogicalPlan::Limit(_) => Ok(Some(
            "DataFusion 55 ignores a DELETE's LIMIT and would remove every matching row; \
             narrow the WHERE instead"
                .into(),
        )),
        other => Ok(Some(format!(
            "its plan holds {}, which DataFusion 55 does not hand to the frame",
            other.display()
        ))),
    }
}

/// Whether `expr` holds a subquery of any kind.
pub(crate) fn holds_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
                | Expr::ScalarSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// The literal `predicate` simplifies to, as DataFusion's optimizer would fold it.
fn constant(predicate: &Expr, schema: &DFSchemaRef, config: &ConfigOptions) -> Option<String> {
    let context = SimplifyContext::builder()
        .with_schema(Arc::clone(schema))
        .with_config_options(Arc::new(config.clone()))
        .with_current_time()
        .build();
    match ExprSimplifier::new(context).simplify(predicate.clone()) {
        Ok(Expr::Literal(value, _)) => Some(value.to_string()),
        _ => None,
    }
}
