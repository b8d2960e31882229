//! A join's dynamic filter drops rows right above the scan (`FilterJoinedRows`) where they would
//! otherwise reach work before the join, and stops being checked there when the first rows show
//! it keeps most of them.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;

use crate::support::{folder_session, hive_box, physical_plan, rows, sql, sql_all};

/// `facts`: 200,000 rows, each key of 0..100,000 twice, and `g` of 0..10; `few`: 10 keys spread
/// over that range (so no row group is pruned by their bounds); `all_keys`: every key;
/// `four_g`: four values of `g` (40 % of the rows, among them all that `few` joins).
async fn frames(ctx: &SessionContext) {
    hive_box(ctx).await;
    sql_all(
        ctx,
        &[
            "CREATE TABLE h.b.facts AS SELECT value % 100000 AS k, value AS v, value % 10 AS g \
             FROM generate_series(0, 199999)",
            "CREATE TABLE h.b.few AS SELECT value * 10000 AS k FROM generate_series(0, 9)",
            "CREATE TABLE h.b.all_keys AS SELECT value AS k FROM generate_series(0, 99999)",
            "CREATE TABLE h.b.four_g AS SELECT value AS g FROM generate_series(0, 3)",
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

/// `facts` reaches the join with `few` through a join with every key (q18's shape: the rows the
/// outer join's keys rule out would otherwise all be joined first).
const FEW: &str = "SELECT count(*), sum(f.v) FROM h.b.facts f \
                   JOIN h.b.all_keys a ON f.k = a.k JOIN h.b.few d ON f.k = d.k";
const ALL: &str = "SELECT count(*), sum(f.v) FROM h.b.facts f \
                   JOIN h.b.all_keys a ON f.k = a.k JOIN h.b.all_keys d ON f.k = d.k";
/// `facts` probes the join with `few` right above its scan.
const DIRECT: &str = "SELECT count(*), sum(f.v) FROM h.b.facts f JOIN h.b.few d ON f.k = d.k";

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

/// Right below its join, with at most a cheap filter between, the join's own keys are not
/// checked above the scan: the join's probe checks the same keys on the same rows anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_right_above_its_scan_is_left_to_check_its_keys_itself() {
    let (_dir, _ap, ctx) = folder_session().await;
    frames(&ctx).await;
    let want = vec![format!("20|{}", 2 * 450_000 + 10 * 100_000)];
    let (answer, counts) = run(&ctx, DIRECT).await;
    assert_eq!(answer, want);
    assert_eq!(
        counts, None,
        "no JoinFilterExec between the scan and its join"
    );

    let cheap = format!("{DIRECT} WHERE f.v >= 0");
    let (answer, counts) = run(&ctx, &cheap).await;
    assert_eq!(answer, want);
    assert_eq!(
        counts, None,
        "a comparison is cheaper than the keys' lookup"
    );
}

/// A costly filter between the scan and its join (q19's shape: a long `OR` of comparisons) is
/// worth skipping for the rows the join's keys rule out, so there they are checked first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_costly_filter_below_the_join_sees_only_the_joined_keys() {
    let (_dir, _ap, ctx) = folder_session().await;
    frames(&ctx).await;
    let costly =
        format!("{DIRECT} WHERE f.v % 3 <> 1 OR f.v % 5 <> 2 OR f.v % 7 <> 3 OR f.v % 11 <> 4");
    let (answer, counts) = run(&ctx, &costly).await;
    let (_, dropped) = counts.expect("a JoinFilterExec below the costly filter");
    assert!(dropped > 100_000, "dropped {dropped} rows");

    sql(&ctx, "SET apiary.scan_join_filters = false").await;
    let (off, _) = run(&ctx, &costly).await;
    assert_eq!(answer, off);
}

/// TPC-H q8's shape: the join right above the scan keeps few rows, one farther up (on another
/// column, its build side tiny) keeps 40 %. Checking the farther join's keys on every row would
/// cost a lookup per row that the nearer join makes unnecessary, so once the first rows show the
/// nearer join drops most of them itself, nothing is checked above the scan any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearer_join_that_drops_most_rows_itself_ends_the_checks_above_the_scan() {
    let (_dir, _ap, ctx) = folder_session().await;
    frames(&ctx).await;
    let q = "SELECT count(*), sum(f.v) FROM h.b.facts f \
             JOIN h.b.few d ON f.k = d.k JOIN h.b.four_g t ON f.g = t.g";
    let (answer, counts) = run(&ctx, q).await;
    assert_eq!(answer, vec![format!("20|{}", 2 * 450_000 + 10 * 100_000)]);
    let (checked, _) = counts.expect("a JoinFilterExec for the farther join's keys");
    // Each of the two partitions judges after its first 64 Ki rows; checking on would see all
    // rows but the pages pruned by `few`'s bounds (more than 180,000).
    assert!(
        (64 * 1024..150_000).contains(&checked),
        "checked {checked} rows of 200,000"
    );
}
