//! A join's dynamic filter drops rows right above the scan (`FilterJoinedRows`), and stops
//! being checked there when the first rows show it keeps most of them.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;

use crate::support::{folder_session, hive_box, physical_plan, rows, sql, sql_all};

/// `facts`: 200,000 rows, each key of 0..100,000 twice; `few`: 10 keys spread over that range
/// (so no row group is pruned by their bounds); `all`: every key.
async fn frames(ctx: &SessionContext) {
    hive_box(ctx).await;
    sql_all(
        ctx,
        &[
            "CREATE TABLE h.b.facts AS SELECT value % 100000 AS k, value AS v \
             FROM generate_series(0, 199999)",
            "CREATE TABLE h.b.few AS SELECT value * 10000 AS k FROM generate_series(0, 9)",
            "CREATE TABLE h.b.all_keys AS SELECT value AS k FROM generate_series(0, 99999)",
        ],
    )
    .await;
}

/// Runs `q`; its rows, and the `JoinFilterExec`'s rows checked and dropped (`None`: no such
/// operator in the plan).
async fn run(ctx: &SessionContext, q: &str) -> (Vec<String>, Option<(usize, usize)>) {
    let plan = physical_plan(ctx, q).await;
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    (rows(&batches), join_filter_counts(&plan))
}

fn join_filter_counts(plan: &Arc<dyn ExecutionPlan>) -> Option<(usize, usize)> {
    if plan.name() == "JoinFilterExec" {
        let metrics = plan.metrics()?;
        let count = |name| metrics.sum_by_name(name).map_or(0, |m| m.as_usize());
        return Some((count("rows_checked"), count("rows_dropped")));
    }
    plan.children().into_iter().find_map(join_filter_counts)
}

const FEW: &str = "SELECT count(*), sum(f.v) FROM h.b.facts f JOIN h.b.few d ON f.k = d.k";
const ALL: &str = "SELECT count(*), sum(f.v) FROM h.b.facts f JOIN h.b.all_keys d ON f.k = d.k";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_keeps_few_keys_drops_the_other_rows_above_the_scan() {
    let (_dir, _ap, ctx) = folder_session().await;
    frames(&ctx).await;
    // Keys 0, 10000, …, 90000, each twice: v = k and k + 100000.
    let want = vec![format!("20|{}", 2 * 450_000 + 10 * 100_000)];

    let (answer, counts) = run(&ctx, FEW).await;
    assert_eq!(answer, want);
    let (checked, dropped) = counts.expect("a JoinFilterExec above the scan of facts");
    // The scan may prune a page by the filter's bounds (keys above 90,000); the rest is checked.
    assert!(
        (150_000..=200_000).contains(&checked),
        "checked {checked} rows of 200,000"
    );
    assert_eq!(dropped, checked - 20, "all but the joined rows dropped");

    // Switched off: no such operator, the same answer.
    sql(&ctx, "SET apiary.scan_join_filters = false").await;
    let (answer, counts) = run(&ctx, FEW).await;
    assert_eq!(answer, want);
    assert_eq!(counts, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_filter_that_keeps_most_rows_stops_being_checked() {
    let (_dir, _ap, ctx) = folder_session().await;
    frames(&ctx).await;
    let want = vec![format!("200000|{}", (0..200_000u64).sum::<u64>())];

    let (answer, counts) = run(&ctx, ALL).await;
    assert_eq!(answer, want);
    let (checked, dropped) = counts.expect("a JoinFilterExec above the scan of facts");
    assert_eq!(dropped, 0);
    // Each partition judges after 64 Ki rows that the filter keeps most of them, and stops.
    assert!(
        (64 * 1024..200_000).contains(&checked),
        "checked {checked} rows of 200,000"
    );
}
