//! Cells are pruned from the ledger alone; what survives is read through DataFusion's Parquet scan.

use std::collections::BTreeSet;
use std::sync::Arc;

use apiary::{Apiary, ApiaryOptions};
use apiary_catalog::IoRuntime;
use apiary_catalog::OwnRuntimeExec;
use apiary_catalog::testing::counting_local_meadow;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::support::{
    assert_scalars, hive_box, metric, metrics, physical_plan, plan, query, scalar, sql, sql_all,
    with_box,
};

/// A local Apiary whose object store records every key it reads, with frame `h.b.t`:
/// partitioned by `k` (8 values), 40 cells of 250 rows with disjoint `id` ranges.
async fn counted() -> (
    tempfile::TempDir,
    Apiary,
    std::sync::Arc<apiary_catalog::testing::Counting>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (meadow, counting) = counting_local_meadow(dir.path());
    let ap = Apiary::from_meadow(meadow, IoRuntime::new().unwrap(), ApiaryOptions::default())
        .await
        .unwrap();
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    sql(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, v DOUBLE, k VARCHAR NOT NULL)
         STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
    )
    .await;
    for batch in 0..40 {
        sql(
            &ctx,
            &format!(
                "INSERT INTO h.b.t SELECT value, value / 3.0, 'k{}' FROM generate_series({}, {})",
                batch % 8,
                batch * 250,
                batch * 250 + 249
            ),
        )
        .await;
    }
    (dir, ap, counting)
}

/// The cells of `h.b.t` whose objects were read since the last call.
fn cells_read(counting: &apiary_catalog::testing::Counting) -> BTreeSet<String> {
    counting
        .take_reads()
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .map(|k| {
            k.rsplit_once("/h/b/t/")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(k)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_of_a_pruned_cell_is_read() {
    let (_dir, ap, counting) = counted().await;
    let ctx = ap.session().unwrap();
    counting.take_reads();

    // By partition value: only the 5 cells of k3 are opened.
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM h.b.t WHERE k = 'k3' AND v >= 0").await,
        "1250"
    );
    let read = cells_read(&counting);
    assert_eq!(read.len(), 5, "{read:?}");
    assert!(read.iter().all(|c| c.contains("/k=k3/")), "{read:?}");

    // By statistics: id 5000..5100 lies in one cell (batch 20, k4).
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM h.b.t WHERE id BETWEEN 5000 AND 5099"
        )
        .await,
        "100"
    );
    let read = cells_read(&counting);
    assert_eq!(read.len(), 1, "{read:?}");
    assert!(read.iter().all(|c| c.contains("/k=k4/")), "{read:?}");

    // Both, with OR and IN.
    let n = scalar(
        &ctx,
        "SELECT count(*) FROM h.b.t WHERE (k IN ('k1', 'k2') AND id < 1000) OR id > 9990",
    )
    .await;
    assert_eq!(n, "509");
    let read = cells_read(&counting);
    assert_eq!(read.len(), 3, "{read:?}");

    // EXPLAIN ANALYZE shows the counts.
    let text = plan(
        &ctx,
        "EXPLAIN ANALYZE SELECT * FROM h.b.t WHERE k = 'k3' AND id < 3000",
    )
    .await;
    let counts = metrics(
        &text,
        [
            "cells_total",
            "cells_pruned_by_partition",
            "cells_pruned_by_statistics",
            "cells_scanned",
        ],
    );
    assert_eq!(counts, [40, 35, 3, 2], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_filters_are_exact_and_others_reach_the_parquet_reader() {
    let (_dir, ap, _) = counted().await;
    let ctx = ap.session().unwrap();
    let exact = plan(&ctx, "EXPLAIN SELECT id FROM h.b.t WHERE k = 'k1'").await;
    assert!(!exact.contains("FilterExec"), "{exact}");
    let inexact = plan(&ctx, "EXPLAIN SELECT id FROM h.b.t WHERE id < 100").await;
    assert!(inexact.contains("FilterExec: id@0 < 100"), "{inexact}");
    assert!(inexact.contains("predicate=id@0 < 100"), "{inexact}");
    assert!(inexact.contains("pruning_predicate="), "{inexact}");
    // A function of a partition column is still decided exactly from the partition values.
    let expr = plan(
        &ctx,
        "EXPLAIN ANALYZE SELECT id FROM h.b.t WHERE upper(k) = 'K5'",
    )
    .await;
    assert_eq!(metric(&expr, "cells_scanned"), 5, "{expr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_from_the_ledger_answer_count_star() {
    let (_dir, ap, counting) = counted().await;
    let ctx = ap.session().unwrap();
    counting.take_reads();
    let text = plan(&ctx, "EXPLAIN SELECT count(*) FROM h.b.t WHERE k = 'k2'").await;
    assert!(text.contains("1250 as count(*)"), "{text}");
    assert!(!text.contains("DataSourceExec"), "{text}");
    assert_scalars(
        &ctx,
        "",
        &[
            ("SELECT count(*) FROM h.b.t WHERE k = 'k2'", "1250"),
            ("SELECT min(id), max(id) FROM h.b.t", "0|9999"),
        ],
    )
    .await;
    assert!(cells_read(&counting).is_empty(), "nothing was read");
}

/// The file groups of the first DataSourceExec in `plan`.
fn file_groups(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<usize>> {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>() {
        let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
        return Some(config.file_groups.iter().map(|g| g.len()).collect());
    }
    plan.children().into_iter().find_map(file_groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_are_spread_over_target_partitions_by_size() {
    let (_dir, ap, _) = counted().await;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    ap.register(&ctx).unwrap();
    let physical = physical_plan(&ctx, "SELECT v FROM h.b.t WHERE v > 1").await;
    // 40 cells of nearly equal size: about 10 per group, every cell once.
    let counts = file_groups(&physical).expect("a DataSourceExec");
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 40, "{counts:?}");
    assert!(counts.iter().all(|c| (9..=11).contains(c)), "{counts:?}");
}

/// What datafusion-python sees through datafusion-ffi: our plans executed with a task context
/// whose runtime is a fresh default (no meadow store, no memory bound). The hive from
/// `catalog_with_own_runtime` scans on Apiary's runtime, pruned, with its predicate installed
/// in the Parquet source (the host's optimizer cannot push it there).
#[tokio::test(flavor = "multi_thread")]
async fn own_runtime_catalog_scans_without_the_hosts_runtime() {
    let (ap, ctx) = with_box("memory://own-runtime").await;
    sql_all(
        &ctx,
        &[
            "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, v DOUBLE) STORED AS APIARY LOCATION ''",
            "INSERT INTO h.b.t SELECT value, 1.0 FROM generate_series(0, 9)",
            "INSERT INTO h.b.t SELECT value, 2.0 FROM generate_series(100, 109)",
        ],
    )
    .await;

    let query = "SELECT count(*), min(id) FROM h.b.t WHERE id >= 100";
    let foreign = || Arc::new(TaskContext::default());

    // The premise: the plain provider's scan needs the host's runtime to know the store.
    let host = SessionContext::new();
    host.register_catalog("h", ap.catalog("h").await.unwrap());
    let plan = physical_plan(&host, query).await;
    let err = collect(plan, foreign()).await.unwrap_err().to_string();
    assert!(err.contains("No suitable object store"), "{err}");

    let host = SessionContext::new();
    host.register_catalog("h", ap.catalog_with_own_runtime("h").await.unwrap());
    let plan = physical_plan(&host, query).await;
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    assert!(shown.contains("OwnRuntimeExec"), "{shown}");
    assert!(shown.contains("predicate=id@0 >= 100"), "{shown}");
    let mut scans = vec![];
    collect_scans(&plan, &mut scans);
    assert_eq!(
        scans,
        vec![1],
        "one of two cells pruned from the ledger: {shown}"
    );
    let rows = crate::support::rows(&collect(plan, foreign()).await.unwrap());
    assert_eq!(rows, vec!["10|100"]);
}

/// The number of files of every Parquet scan in `plan`, looking inside `OwnRuntimeExec`.
fn collect_scans(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<usize>) {
    if let Some(own) = plan.downcast_ref::<OwnRuntimeExec>() {
        return collect_scans(own.input(), out);
    }
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>()
    {
        out.push(config.file_groups.iter().map(|g| g.len()).sum());
    }
    for child in plan.children() {
        collect_scans(child, out);
    }
}

/// Row-level changes read only the cells the ledger cannot rule out: DELETE and UPDATE by their
/// WHERE, MERGE by the range of the source's keys (when no clause needs the unmatched target rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_read_only_the_cells_that_may_match() {
    let (_dir, ap, counting) = counted().await;
    let ctx = ap.session().unwrap();
    counting.take_reads();
    for change in [
        "DELETE FROM h.b.t WHERE id BETWEEN 5000 AND 5009",
        "UPDATE h.b.t SET v = 0 WHERE id BETWEEN 7500 AND 7509",
    ] {
        assert_eq!(query(&ctx, change).await, ["10"]);
        let read = cells_read(&counting);
        assert_eq!(read.len(), 1, "{read:?}");
    }
    sql(
        &ctx,
        "CREATE TABLE changes (id BIGINT, v DOUBLE) AS VALUES (2510, 1.0), (2520, 2.0)",
    )
    .await;
    counting.take_reads();
    assert_eq!(
        query(
            &ctx,
            "MERGE INTO h.b.t AS t USING changes AS c ON t.id = c.id
             WHEN MATCHED THEN UPDATE SET v = c.v
             WHEN NOT MATCHED THEN INSERT (id, v, k) VALUES (c.id, c.v, 'new')"
        )
        .await,
        ["2"]
    );
    let read = cells_read(&counting);
    assert_eq!(read.len(), 1, "the cell of ids 2500–2749 only: {read:?}");
    // With a clause on the unmatched target rows every cell is read.
    assert_eq!(
        query(
            &ctx,
            "MERGE INTO h.b.t AS t USING changes AS c ON t.id = c.id
             WHEN NOT MATCHED BY SOURCE AND t.id = 1 THEN DELETE"
        )
        .await,
        ["1"]
    );
    assert!(cells_read(&counting).len() > 30);
}

/// The rows of an `EXPLAIN` result: (plan_type, plan).
async fn explain_rows(df: datafusion::dataframe::DataFrame) -> Vec<(String, String)> {
    let batches = df.collect().await.unwrap();
    let mut rows = vec![];
    for b in &batches {
        let text = |c: usize| {
            datafusion::arrow::array::cast::as_string_array(b.column(c))
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        rows.extend(text(0).into_iter().zip(text(1)));
    }
    rows
}

/// The `apiary_scans` lines of [`explain_rows`].
fn scan_lines(rows: &[(String, String)]) -> Vec<&String> {
    rows.iter()
        .filter(|(kind, _)| kind == "apiary_scans")
        .map(|(_, plan)| plan)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_explain_tells_each_frame_scans_cells_and_changes_no_plan() {
    let (_dir, ap, _) = counted().await;
    let ctx = ap.session().unwrap();
    let query = "EXPLAIN SELECT id FROM h.b.t WHERE k = 'k1' AND id < 1000";
    let apiarys = explain_rows(ap.sql(&ctx, query).await.unwrap()).await;
    let scans = scan_lines(&apiarys);
    assert_eq!(scans.len(), 1, "{apiarys:?}");
    // k1 holds 5 of the 40 cells; of those only the one of ids 250..499 can hold id < 1000.
    let line = scans[0];
    assert!(
        line.starts_with("h.b.t at version 40: 40 cells ("),
        "{line}"
    );
    assert!(
        line.contains("pruned 35 by partition, 4 by statistics; 1 to scan ("),
        "{line}"
    );
    assert!(!line.contains("swarm"), "not in a swarm: {line}");
    // Everything else is DataFusion's own EXPLAIN, the plan unchanged.
    // Every cell pruned: DataFusion's EmptyExec, and still the line.
    let none = explain_rows(
        ap.sql(&ctx, "EXPLAIN SELECT id FROM h.b.t WHERE k = 'none'")
            .await
            .unwrap(),
    )
    .await;
    let lines = scan_lines(&none);
    assert_eq!(lines.len(), 1, "{none:?}");
    assert!(
        lines[0].starts_with("h.b.t at version 40: 40 cells (")
            && lines[0].ends_with("; pruned 40 by partition, 0 by statistics; 0 to scan (0 B)"),
        "{}",
        lines[0]
    );
    assert!(
        none.iter().any(|(_, plan)| plan.contains("EmptyExec")),
        "{none:?}"
    );
    let datafusions = explain_rows(ctx.sql(query).await.unwrap()).await;
    let without: Vec<_> = apiarys
        .into_iter()
        .filter(|(kind, _)| kind != "apiary_scans")
        .collect();
    assert_eq!(without, datafusions);
}

/// `OPTIONS ('apiary.bloom_filter_columns' 'k')`: every row group of the cells carries a Bloom
/// filter of `k`, and DataFusion's Parquet reader skips the row groups it rules out for `=` and
/// `IN` — where min/max, spanning nearly every string, cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloom_filter_columns_let_equality_skip_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ApiaryOptions::default();
    // Cells of 1 MiB, row groups of 256 KiB.
    options.catalog.write.leafcutter = apiary::catalog::Leafcutter::for_bee_memory(8 << 20);
    let ap = Apiary::open_with(dir.path().to_str().unwrap(), options)
        .await
        .unwrap();
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    for (frame, options) in [
        ("bloomed", "OPTIONS ('apiary.bloom_filter_columns' 'k')"),
        ("plain", ""),
    ] {
        sql(
            &ctx,
            &format!(
                "CREATE EXTERNAL TABLE h.b.{frame} (id BIGINT NOT NULL, k VARCHAR NOT NULL) \
                 STORED AS APIARY LOCATION '' {options}"
            ),
        )
        .await;
        sql(
            &ctx,
            &format!(
                "INSERT INTO h.b.{frame} SELECT value, md5(CAST(value AS VARCHAR)) \
                 FROM generate_series(1, 100000)"
            ),
        )
        .await;
    }
    // md5('5') is there; md5('-5') is not, and lies inside every row group's min/max.
    for (predicate, rows) in [
        ("k = md5('5')", "1"),
        ("k = md5('-5')", "0"),
        ("k IN (md5('-5'), md5('-6'))", "0"),
    ] {
        let q = |frame: &str| format!("SELECT count(*) FROM h.b.{frame} WHERE {predicate}");
        assert_eq!(scalar(&ctx, &q("bloomed")).await, rows, "{predicate}");
        assert_eq!(scalar(&ctx, &q("plain")).await, rows, "{predicate}");
        let bloomed = plan(&ctx, &format!("EXPLAIN ANALYZE {}", q("bloomed"))).await;
        let plain = plan(&ctx, &format!("EXPLAIN ANALYZE {}", q("plain"))).await;
        // `row_groups_pruned_bloom_filter=21 total → 1 matched`: (total, matched).
        let checked = |text: &str| -> (usize, usize) {
            let at = text.find("row_groups_pruned_bloom_filter=").expect(text);
            let words: Vec<&str> = text[at..].split(['=', ' ', ',', ']']).collect();
            (words[1].parse().unwrap(), words[4].parse().unwrap())
        };
        let ((total, matched), (plain_total, plain_matched)) = (checked(&bloomed), checked(&plain));
        assert!(total > 8, "{bloomed}");
        assert_eq!(
            plain_matched, plain_total,
            "no filter, nothing skipped: {plain}"
        );
        if rows == "0" {
            // False positives happen (1 in 20 per value by default), rarely.
            assert!(
                matched * 4 < total,
                "{predicate}: {matched} of {total} read"
            );
        } else {
            assert!(
                matched >= 1 && matched * 4 < total,
                "{predicate}: {matched} of {total}"
            );
        }
    }
    // A column the frame does not have, or a partition column, is refused at creation.
    let err = crate::support::sql_err(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.bad (id BIGINT, r VARCHAR NOT NULL) STORED AS APIARY \
         PARTITIONED BY (r) LOCATION '' OPTIONS ('apiary.bloom_filter_columns' 'nope')",
    )
    .await;
    assert!(err.contains("h.b.bad") && err.contains("nope"), "{err}");
    let err = crate::support::sql_err(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.bad (id BIGINT, r VARCHAR NOT NULL) STORED AS APIARY \
         PARTITIONED BY (r) LOCATION '' OPTIONS ('apiary.bloom_filter_columns' 'id, r')",
    )
    .await;
    assert!(err.contains("r is a partition column"), "{err}");
    // The property names the column: it cannot be renamed under it.
    let err =
        crate::support::door_err(&ap, &ctx, "ALTER TABLE h.b.bloomed RENAME COLUMN k TO kk").await;
    assert!(err.contains("k has a Bloom filter"), "{err}");
}
