//! Clustered frames: `WITH ORDER (…)` sorts every write's rows before cells are cut, each cell
//! records the order, and a scan over cells that hold it and do not overlap declares it to
//! DataFusion — which then sorts nothing for `ORDER BY` on the key.

use apiary::catalog::Leafcutter;
use apiary::exec::NodeConfig;
use apiary::{Apiary, ApiaryOptions};
use datafusion::arrow::array::{Array, Int32Array};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::SessionContext;

use crate::support::{door, door_err, plan, query, scalar, sql, sql_err};

/// Two bees of 64 MiB (two file groups) and cells of about 1 MiB, on a folder.
async fn small_bees(dir: &std::path::Path) -> (Apiary, SessionContext) {
    bees(dir, 64 << 20, Some(Leafcutter::for_bee_memory(8 << 20))).await
}

/// Two bees of `per_bee` bytes (cells cut by `leafcutter`, else sized from the bees), with hive
/// `h` and box `h.b`, on a folder.
async fn bees(
    dir: &std::path::Path,
    per_bee: u64,
    leafcutter: Option<Leafcutter>,
) -> (Apiary, SessionContext) {
    let mut options = ApiaryOptions {
        node: Some(NodeConfig::fixed(2, per_bee, dir.join("scratch"))),
        ..ApiaryOptions::default()
    };
    if let Some(leafcutter) = leafcutter {
        options.catalog.write.leafcutter = leafcutter;
    }
    let ap = Apiary::open_with(dir.join("meadow").to_str().unwrap(), options)
        .await
        .unwrap();
    let ctx = ap.session().unwrap();
    sql(&ctx, "CREATE DATABASE h").await;
    sql(&ctx, "CREATE SCHEMA h.b").await;
    (ap, ctx)
}

/// `h.b.t (day INT, id BIGINT, note VARCHAR)`, clustered by `day`, empty.
async fn by_day(ctx: &SessionContext) {
    sql(
        ctx,
        "CREATE EXTERNAL TABLE h.b.t (day INT NOT NULL, id BIGINT NOT NULL, note VARCHAR) \
         STORED AS APIARY WITH ORDER (day ASC) LOCATION ''",
    )
    .await;
}

/// [`by_day`] with 200,000 rows whose days come in no order at all.
async fn shuffled_days(ctx: &SessionContext) {
    by_day(ctx).await;
    sql(
        ctx,
        "INSERT INTO h.b.t SELECT CAST((value * 7919) % 1000 AS INT), value, \
         md5(CAST(value AS VARCHAR)) FROM generate_series(1, 200000)",
    )
    .await;
}

/// `day` of every row of every cell of `h.b.{frame}`, cell by cell, read from the files.
async fn days_per_cell(ap: &Apiary, frame: &str) -> Vec<(String, Vec<i32>, bool)> {
    let frame = ap
        .providers()
        .frame("h", "b", frame)
        .await
        .unwrap()
        .unwrap();
    let snapshot = frame.ledger().refresh().await.unwrap();
    let mut out = vec![];
    for cell in snapshot.cells() {
        let key = format!("{}/{}", frame.ledger().location(), cell.path);
        let bytes = ap.meadow().get(&key).await.unwrap().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let mut days = vec![];
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("day").unwrap();
            let column = column.as_any().downcast_ref::<Int32Array>().unwrap();
            days.extend((0..column.len()).map(|i| column.value(i)));
        }
        out.push((cell.path.clone(), days, cell.sorted_by.is_some()));
    }
    out
}

/// The `(first, last)` day of every cell, in order, after asserting that each cell is sorted,
/// recorded as sorted, and overlaps no other (touching ends are fine).
fn clustered_ranges(cells: &[(String, Vec<i32>, bool)]) -> Vec<(i32, i32)> {
    let mut ranges = vec![];
    for (path, days, sorted) in cells {
        assert!(sorted, "{path} is not recorded as sorted");
        assert!(
            days.windows(2).all(|w| w[0] <= w[1]),
            "{path} is not sorted"
        );
        ranges.push((days[0], days[days.len() - 1]));
    }
    ranges.sort();
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "cells overlap: {ranges:?}"
    );
    ranges
}

/// Whether the rows of `q` come out with `day` never decreasing, and how many there are.
async fn ascending_days(ctx: &SessionContext, q: &str) -> (bool, usize) {
    let days: Vec<i64> = query(ctx, q)
        .await
        .iter()
        .map(|r| r.split('|').next().unwrap().parse().unwrap())
        .collect();
    (days.windows(2).all(|w| w[0] <= w[1]), days.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_frame_is_written_sorted_and_read_without_a_sort() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = small_bees(dir.path()).await;
    shuffled_days(&ctx).await;

    // Every cell sorted, recorded as sorted, and no two cells of the write overlap.
    let cells = days_per_cell(&ap, "t").await;
    assert!(cells.len() >= 3, "{} cells", cells.len());
    clustered_ranges(&cells);

    // DataFusion is told: ORDER BY day merges the two groups, it does not sort.
    let q = "SELECT day, id FROM h.b.t ORDER BY day";
    let text = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(!text.contains("SortExec"), "{text}");
    assert!(text.contains("output_ordering=[day@0 ASC"), "{text}");
    assert_eq!(ascending_days(&ctx, q).await, (true, 200000));
    assert_eq!(
        query(&ctx, "SELECT day FROM h.b.t ORDER BY day LIMIT 3").await,
        ["0", "0", "0"]
    );
    assert_eq!(
        scalar(
            &ctx,
            "SELECT max(day) FROM (SELECT day FROM h.b.t ORDER BY day DESC LIMIT 1)"
        )
        .await,
        "999"
    );

    // A second write overlaps the first: the order is no longer declared, and DataFusion sorts.
    sql(
        &ctx,
        "INSERT INTO h.b.t SELECT CAST(value % 1000 AS INT), value, NULL \
         FROM generate_series(1, 5000)",
    )
    .await;
    let text = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(text.contains("SortExec"), "{text}");
    assert_eq!(ascending_days(&ctx, q).await, (true, 205000));

    // A row change rewrites cells without the mark: still right, still sorted by DataFusion.
    sql(&ctx, "DELETE FROM h.b.t WHERE id <= 5000").await;
    assert!(
        days_per_cell(&ap, "t")
            .await
            .iter()
            .any(|(_, _, sorted)| !sorted)
    );
    assert_eq!(ascending_days(&ctx, q).await, (true, 195000));

    // Plain compaction leaves the large cells alone; reclustering rewrites them all, sorted.
    sql(&ctx, "SELECT * FROM apiary_compact('h.b.t', true)").await;
    clustered_ranges(&days_per_cell(&ap, "t").await);
    let text = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(!text.contains("SortExec"), "{text}");
    assert_eq!(ascending_days(&ctx, q).await, (true, 195000));
    // Clustered already: nothing to do.
    assert!(
        query(&ctx, "SELECT * FROM apiary_compact('h.b.t', true)")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_order_names_columns_the_frame_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = small_bees(dir.path()).await;
    let create = |order: &str| {
        format!(
            "CREATE EXTERNAL TABLE h.b.bad (day INT, region VARCHAR NOT NULL) STORED AS APIARY \
             PARTITIONED BY (region) WITH ORDER ({order}) LOCATION ''"
        )
    };
    let err = sql_err(&ctx, &create("nope ASC")).await;
    assert!(err.contains("Column nope is not in schema"), "{err}");
    let err = sql_err(&ctx, &create("region")).await;
    assert!(err.contains("region is a partition column"), "{err}");
    let err = sql_err(&ctx, &create("day + 1")).await;
    assert!(err.contains("WITH ORDER takes columns"), "{err}");
    assert!(
        ap.providers()
            .frame("h", "b", "bad")
            .await
            .unwrap()
            .is_none()
    );

    sql(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.t (day INT, v INT) STORED AS APIARY \
         WITH ORDER (day DESC) LOCATION ''",
    )
    .await;
    let err = door_err(&ap, &ctx, "ALTER TABLE h.b.t RENAME COLUMN day TO d").await;
    assert!(err.contains("sort order"), "{err}");
    // Descending, with the nulls DataFusion puts first: rows out in that order.
    sql(
        &ctx,
        "INSERT INTO h.b.t VALUES (1, 1), (NULL, 2), (3, 3), (2, 4)",
    )
    .await;
    assert_eq!(
        query(&ctx, "SELECT day, v FROM h.b.t ORDER BY day DESC").await,
        ["NULL|2", "3|3", "2|4", "1|1"]
    );
}

/// Plain compaction of a clustered frame merges a small cell only with its neighbours in the
/// key's order: the cells it writes overlap none it leaves alone, so the order stays declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_cells_with_their_neighbours_by_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = small_bees(dir.path()).await;
    by_day(&ctx).await;
    // Two small writes of days 0–19, a large one of days 20–499 (cells of about 1 MiB), two
    // small ones of days 500–519.
    for (from, days, rows) in [
        (0, 10, 100),
        (10, 10, 100),
        (20, 480, 200_000),
        (500, 10, 100),
        (510, 10, 100),
    ] {
        sql(
            &ctx,
            &format!(
                "INSERT INTO h.b.t SELECT CAST({from} + value % {days} AS INT), value, \
                 md5(CAST(value AS VARCHAR)) FROM generate_series(1, {rows})"
            ),
        )
        .await;
    }
    let q = "SELECT day, id FROM h.b.t ORDER BY day";
    assert!(
        !plan(&ctx, &format!("EXPLAIN {q}"))
            .await
            .contains("SortExec")
    );
    let before = days_per_cell(&ap, "t").await;

    let report = query(
        &ctx,
        "SELECT cells_before, cells_after, rows FROM apiary_compact('h.b.t')",
    )
    .await;
    let cells = days_per_cell(&ap, "t").await;
    let ranges = clustered_ranges(&cells);
    // Days 0–19 became one cell; the large write's cells but its last stayed as they were.
    assert_eq!(ranges[0], (0, 19), "{ranges:?}");
    let kept = before
        .iter()
        .filter(|(path, ..)| cells.iter().any(|(p, ..)| p == path))
        .count();
    assert!(
        kept >= before.len() - 5,
        "{kept} of {} cells kept",
        before.len()
    );
    assert!(cells.len() < before.len(), "{report:?}");
    assert_eq!(report.len(), 1, "{report:?}");
    let text = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(!text.contains("SortExec"), "{text}");
    assert_eq!(ascending_days(&ctx, q).await, (true, 200_400));
}

/// `ALTER TABLE … CLUSTER BY` sets the order of a frame that had none, and changes or drops it
/// later: writes from then on follow it, the cells written before keep what they record, and
/// the scan declares an order only while every cell holds the frame's order of the moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_by_changes_the_order_later_writes_and_reclustering_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = small_bees(dir.path()).await;
    sql(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.u (day INT NOT NULL, id BIGINT NOT NULL, note VARCHAR) \
         STORED AS APIARY LOCATION ''",
    )
    .await;
    let shuffled = |from: u32| {
        format!(
            "INSERT INTO h.b.u SELECT CAST((value * 7919) % 1000 AS INT), value, \
             md5(CAST(value AS VARCHAR)) FROM generate_series({from}, {})",
            from + 59_999
        )
    };
    sql(&ctx, &shuffled(1)).await;
    let by_day = "SELECT day, id FROM h.b.u ORDER BY day";
    let sorts = |text: &str| text.contains("SortExec");

    door(&ap, &ctx, "ALTER TABLE h.b.u CLUSTER BY (day)").await;
    // The cells written before are not sorted: the order is not declared, DataFusion sorts.
    assert!(days_per_cell(&ap, "u").await.iter().all(|(_, _, s)| !s));
    assert!(sorts(&plan(&ctx, &format!("EXPLAIN {by_day}")).await));
    assert_eq!(ascending_days(&ctx, by_day).await, (true, 60000));

    // A later write sorts by it, and its cells say so.
    sql(&ctx, &shuffled(60_001)).await;
    let cells = days_per_cell(&ap, "u").await;
    let new: Vec<_> = cells.iter().filter(|(_, _, sorted)| *sorted).collect();
    assert!(
        !new.is_empty() && new.len() < cells.len(),
        "{}",
        cells.len()
    );
    for (path, days, _) in new {
        assert!(days.windows(2).all(|w| w[0] <= w[1]), "{path}");
    }
    assert_eq!(ascending_days(&ctx, by_day).await, (true, 120000));

    // Reclustering rewrites the frame by it: declared, no sort.
    sql(&ctx, "SELECT * FROM apiary_compact('h.b.u', true)").await;
    assert!(days_per_cell(&ap, "u").await.iter().all(|(_, _, s)| *s));
    assert!(!sorts(&plan(&ctx, &format!("EXPLAIN {by_day}")).await));
    assert_eq!(ascending_days(&ctx, by_day).await, (true, 120000));

    // Another order: the cells sorted by day no longer hold the frame's order; nothing is
    // declared, for day or for id, and the answers stay right.
    door(&ap, &ctx, "ALTER TABLE h.b.u CLUSTER BY (id, day)").await;
    assert!(sorts(&plan(&ctx, &format!("EXPLAIN {by_day}")).await));
    assert!(sorts(
        &plan(&ctx, "EXPLAIN SELECT id FROM h.b.u ORDER BY id").await
    ));
    assert_eq!(ascending_days(&ctx, by_day).await, (true, 120000));
    assert_eq!(
        query(&ctx, "SELECT id FROM h.b.u ORDER BY id LIMIT 2").await,
        ["1", "2"]
    );

    // Dropped: writes are no longer sorted or marked.
    door(&ap, &ctx, "ALTER TABLE h.b.u DROP CLUSTERING KEY").await;
    let before = days_per_cell(&ap, "u").await.len();
    sql(&ctx, "INSERT INTO h.b.u VALUES (5, 0, NULL), (1, -1, NULL)").await;
    let cells = days_per_cell(&ap, "u").await;
    assert_eq!(cells.len(), before + 1);
    assert!(
        cells
            .iter()
            .any(|(_, days, sorted)| !sorted && days == &[5, 1])
    );

    // Each change is one ALTER TABLE commit, and the first declared its protocol feature.
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM apiary_history('h.b.u') WHERE operation = 'ALTER TABLE'"
        )
        .await,
        "3"
    );
    let frame = ap.providers().frame("h", "b", "u").await.unwrap().unwrap();
    let snapshot = frame.ledger().refresh().await.unwrap();
    assert!(
        snapshot
            .protocol
            .reader_features
            .contains("frame_properties")
    );

    // Refused, naming the reason, and nothing committed.
    for (statement, reason) in [
        ("ALTER TABLE h.b.u CLUSTER BY (nope)", "column nope"),
        (
            "ALTER TABLE h.b.u CLUSTER BY (day + 1)",
            "CLUSTER BY takes column names",
        ),
        ("ALTER TABLE h.b.u CLUSTER BY (day, day)", "listed twice"),
        (
            "ALTER TABLE h.b.u CLUSTER BY (day), ADD COLUMN x INT",
            "a statement of its own",
        ),
        ("ALTER TABLE h.b.nope CLUSTER BY (day)", "h.b.nope"),
    ] {
        let err = door_err(&ap, &ctx, statement).await;
        assert!(err.contains(reason), "{statement}: {err}");
    }
    let again = frame.ledger().refresh().await.unwrap();
    assert_eq!(again.version, snapshot.version);
}

/// A sorted write on bees of 8 MiB: the sort spills, its runs are merged in batches sized to
/// the bee, and the write lands. Seen: with DataFusion's 8192-row batches the merge could not
/// reserve a batch per run ("Failed to allocate additional 3.2 MB for SortPreservingMergeExec").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_write_fits_small_bees() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = bees(dir.path(), 8 << 20, None).await;
    shuffled_days(&ctx).await;
    let cells = days_per_cell(&ap, "t").await;
    assert!(
        cells
            .iter()
            .all(|(_, days, sorted)| *sorted && days.windows(2).all(|w| w[0] <= w[1]))
    );
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "200000");
}

/// `ORDER BY … LIMIT` over a declared order reads the first rows of the order, whichever file
/// group holds them. DataFusion 55's `LimitPushdown` hands the fetch of a
/// `SortPreservingMergeExec` to the scan as order-insensitive (apache/datafusion#24272), which
/// lets each partition steal files from a shared queue and lets Parquet skip a partly matching
/// row group for a later full one; both returned rows from the middle of the order. Seen with
/// four cells whose sizes put the lowest days into the second file group (answer 100, not 0),
/// and, with stealing turned off, with a filter pushed into the scan whose first matching row
/// group matches only in part (answer 154, not 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_limit_reads_the_first_rows_whichever_group_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_ap, ctx) = small_bees(dir.path()).await;
    by_day(&ctx).await;
    // One cell per write, in day order 0.., 100.., 200.., 300.. and of 9, 10, 5 and 4 thousand
    // rows: balanced by size, the groups are [100.., 300..] and [0.., 200..].
    for (first_day, rows) in [(0, 9000), (100, 10000), (200, 5000), (300, 4000)] {
        sql(
            &ctx,
            &format!(
                "INSERT INTO h.b.t SELECT CAST({first_day} + value * 100 / {rows} AS INT), \
                 value, md5(CAST(value AS VARCHAR)) FROM generate_series(0, {} ) ",
                rows - 1
            ),
        )
        .await;
    }
    let text = plan(&ctx, "EXPLAIN SELECT day FROM h.b.t ORDER BY day LIMIT 3").await;
    assert!(text.contains("output_ordering=[day@0 ASC"), "{text}");
    assert!(text.contains("2 groups"), "{text}");
    assert_eq!(
        query(&ctx, "SELECT day FROM h.b.t ORDER BY day LIMIT 3").await,
        ["0", "0", "0"]
    );
    // Day 100 fills the first rows of its cell's first row group only: that group matches in
    // part, the later ones in full. With filters pushed into the scan, the scan gets the limit.
    sql(
        &ctx,
        "SET datafusion.execution.parquet.pushdown_filters = true",
    )
    .await;
    for (q, first) in [
        (
            "SELECT day FROM h.b.t WHERE day >= 101 ORDER BY day LIMIT 1",
            "101",
        ),
        (
            "SELECT day FROM h.b.t WHERE day > 100 ORDER BY day LIMIT 1",
            "101",
        ),
        (
            "SELECT day FROM h.b.t WHERE day >= 201 ORDER BY day LIMIT 1",
            "201",
        ),
    ] {
        assert_eq!(query(&ctx, q).await, [first], "{q}");
    }
}

/// A session Apiary was not registered in (a hive's catalog registered by hand) does not run
/// the rule that keeps a scan's order (`KeepScanOrder`): the frame declares no order there and
/// DataFusion sorts. `Apiary::register` installs the rule in a host's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_registered_catalog_declares_no_order() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = small_bees(dir.path()).await;
    shuffled_days(&ctx).await;
    let q = "SELECT day FROM h.b.t ORDER BY day LIMIT 3";
    assert!(
        !plan(&ctx, &format!("EXPLAIN {q}"))
            .await
            .contains("SortExec")
    );

    let host = SessionContext::new();
    host.register_catalog("h", ap.catalog("h").await.unwrap());
    let text = plan(&host, &format!("EXPLAIN {q}")).await;
    assert!(
        text.contains("SortExec") && !text.contains("output_ordering"),
        "{text}"
    );
    assert_eq!(query(&host, q).await, ["0", "0", "0"]);

    let registered = SessionContext::new();
    ap.register(&registered).unwrap();
    let text = plan(&registered, &format!("EXPLAIN {q}")).await;
    assert!(
        !text.contains("SortExec") && text.contains("output_ordering=[day@0 ASC"),
        "{text}"
    );
    assert_eq!(query(&registered, q).await, ["0", "0", "0"]);
}
