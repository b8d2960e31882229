//! DELETE, UPDATE and TRUNCATE: copy-on-write, one `RewriteCells` commit per statement, and
//! never the wrong rows.

use std::sync::Arc;

use apiary::Apiary;
use datafusion::prelude::SessionContext;

use crate::support::{backends, hive_box, open, query, scalar, sql, sql_err};

/// `h.b.t` (id, k, v) partitioned by k: cells `k=a` (ids 1–3 and 10–12, two cells), `k=b`
/// (ids 4–5), `k=c` (id 6, v NULL).
async fn frame(url: &str) -> (Apiary, SessionContext) {
    let ap = open(url).await;
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    sql(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k VARCHAR NOT NULL, v INT)
         STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
    )
    .await;
    sql(
        &ctx,
        "INSERT INTO h.b.t VALUES (1, 'a', 10), (2, 'a', 20), (3, 'a', 30), (4, 'b', 40), (5, 'b', 50), (6, 'c', NULL)",
    )
    .await;
    sql(
        &ctx,
        "INSERT INTO h.b.t VALUES (10, 'a', 100), (11, 'a', 110), (12, 'a', 120)",
    )
    .await;
    (ap, ctx)
}

async fn ids(ctx: &SessionContext) -> Vec<String> {
    query(ctx, "SELECT id FROM h.b.t ORDER BY id").await
}

async fn version(ctx: &SessionContext) -> String {
    scalar(ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_rewrites_only_the_cells_holding_matching_rows_in_one_commit() {
    for b in backends() {
        let (_ap, ctx) = frame(&b.url).await;
        // Rows 2 and 3 of the first `k=a` cell, and all of `k=b`; NULL in v never matches.
        let deleted = query(&ctx, "DELETE FROM h.b.t WHERE v BETWEEN 20 AND 50").await;
        assert_eq!(deleted, vec!["4"], "{b}");
        assert_eq!(ids(&ctx).await, ["1", "6", "10", "11", "12"], "{b}");
        let last = query(
            &ctx,
            "SELECT version, operation, action, cells_removed, rows_removed, cells_added, rows_added
             FROM apiary_history('h.b.t') ORDER BY version DESC LIMIT 1",
        )
        .await;
        // The k=a cell with ids 1–3 is rewritten (1 row kept), k=b removed without rewriting;
        // the second k=a cell and k=c are left as they are.
        assert_eq!(last, vec!["3|DELETE|rewrite_cells|2|5|1|1"], "{b}");
        assert_eq!(
            query(
                &ctx,
                "SELECT rows_deleted, rows_updated, rows_inserted FROM apiary_history('h.b.t')
                 WHERE version IN (2, 3) ORDER BY version"
            )
            .await,
            ["NULL|NULL|NULL", "4|NULL|NULL"],
            "{b}"
        );

        // A DELETE that matches nothing changes nothing, not even the version.
        assert_eq!(
            query(&ctx, "DELETE FROM h.b.t WHERE v = 12345").await,
            ["0"]
        );
        assert_eq!(version(&ctx).await, "3", "{b}");

        // Without WHERE: every row, every cell removed.
        assert_eq!(query(&ctx, "DELETE FROM h.b.t").await, ["5"], "{b}");
        assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "0");
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM apiary_cells('h.b.t')").await,
            "0"
        );
    }
}

#[tokio::test]
async fn truncate_removes_every_cell_and_explain_changes_nothing() {
    let (_ap, ctx) = frame("memory://").await;
    let before = version(&ctx).await;
    for explain in [
        "EXPLAIN DELETE FROM h.b.t WHERE id = 1",
        "EXPLAIN UPDATE h.b.t SET v = 0",
        "EXPLAIN TRUNCATE TABLE h.b.t",
    ] {
        sql(&ctx, explain).await;
    }
    assert_eq!(version(&ctx).await, before);
    assert_eq!(ids(&ctx).await.len(), 9);

    assert_eq!(query(&ctx, "TRUNCATE TABLE h.b.t").await, ["9"]);
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "0");
    let last = query(
        &ctx,
        "SELECT operation, cells_removed, rows_removed, cells_added FROM apiary_history('h.b.t')
         ORDER BY version DESC LIMIT 1",
    )
    .await;
    assert_eq!(last, ["TRUNCATE|4|9|0"]);
    // The frame takes rows again, and its past is readable.
    sql(&ctx, "INSERT INTO h.b.t VALUES (7, 'z', 1)").await;
    assert_eq!(ids(&ctx).await, ["7"]);
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM apiary_version('h.b.t', 2)").await,
        "9"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_sets_values_moves_partitions_and_enforces_not_null() {
    for b in backends() {
        let (_ap, ctx) = frame(&b.url).await;
        let updated = query(&ctx, "UPDATE h.b.t SET v = v + 1 WHERE id IN (1, 4, 6)").await;
        assert_eq!(updated, ["3"], "{b}");
        assert_eq!(
            scalar(
                &ctx,
                "SELECT rows_updated FROM apiary_history('h.b.t') WHERE version = 3"
            )
            .await,
            "3",
            "{b}"
        );
        assert_eq!(
            query(
                &ctx,
                "SELECT id, k, v FROM h.b.t WHERE id IN (1, 2, 4, 6) ORDER BY id"
            )
            .await,
            ["1|a|11", "2|a|20", "4|b|41", "6|c|NULL"],
            "{b}"
        );
        // Moving rows to another partition: they leave k=a and land in k=b.
        let moved = query(&ctx, "UPDATE h.b.t SET k = 'b' WHERE id >= 10").await;
        assert_eq!(moved, ["3"], "{b}");
        assert_eq!(
            query(&ctx, "SELECT k, count(*) FROM h.b.t GROUP BY k ORDER BY k").await,
            ["a|3", "b|5", "c|1"],
            "{b}"
        );
        assert_eq!(
            scalar(
                &ctx,
                "SELECT count(*) FROM h.b.t WHERE k = 'b' AND id >= 10"
            )
            .await,
            "3",
            "{b}"
        );
        // The partition values in the ledger say where the rows are.
        assert_eq!(
            scalar(
                &ctx,
                "SELECT count(*) FROM apiary_cells('h.b.t') WHERE partition LIKE '%k=a%'"
            )
            .await,
            "1",
            "{b}"
        );

        let before = version(&ctx).await;
        let err = sql_err(&ctx, "UPDATE h.b.t SET id = NULL WHERE id = 1").await;
        assert!(
            err.contains("id") && err.to_lowercase().contains("null"),
            "{b}: {err}"
        );
        let err = sql_err(&ctx, "UPDATE h.b.t SET nope = 1").await;
        assert!(err.contains("nope"), "{b}: {err}");
        assert_eq!(version(&ctx).await, before, "{b}");
        assert_eq!(ids(&ctx).await.len(), 9, "{b}");
    }
}

/// DataFusion 55 hands `delete_from` and `update` only the WHERE's conjuncts that survive its
/// optimizer: a subquery, a constant WHERE or a LIMIT would arrive as "every row".
#[tokio::test]
async fn statements_that_would_reach_the_frame_as_every_row_are_refused() {
    let (_ap, ctx) = frame("memory://").await;
    sql(&ctx, "CREATE TABLE gone (id BIGINT)").await;
    sql(&ctx, "INSERT INTO gone VALUES (1)").await;
    let before = version(&ctx).await;
    for stmt in [
        "DELETE FROM h.b.t WHERE id IN (SELECT id FROM gone)",
        "DELETE FROM h.b.t WHERE EXISTS (SELECT 1 FROM gone WHERE gone.id = h.b.t.id)",
        "DELETE FROM h.b.t WHERE v > (SELECT max(id) FROM gone)",
        "DELETE FROM h.b.t WHERE false",
        "DELETE FROM h.b.t WHERE id = 1 AND 1 = 2",
        "DELETE FROM h.b.t WHERE NULL",
        "DELETE FROM h.b.t WHERE id > 1 LIMIT 1",
        "UPDATE h.b.t SET v = 0 WHERE id IN (SELECT id FROM gone)",
        "UPDATE h.b.t SET v = (SELECT max(id) FROM gone) WHERE id = 1",
        "UPDATE h.b.t SET v = 0 WHERE 1 = 0",
    ] {
        let err = sql_err(&ctx, stmt).await;
        assert!(
            err.contains("h.b.t") && err.contains("refused"),
            "{stmt}: {err}"
        );
        assert_eq!(ids(&ctx).await.len(), 9, "{stmt} changed rows");
    }
    // DataFusion 55 refuses UPDATE … FROM itself.
    let err = sql_err(
        &ctx,
        "UPDATE h.b.t SET v = 0 FROM gone WHERE gone.id = h.b.t.id",
    )
    .await;
    assert!(err.contains("FROM is not supported"), "{err}");
    assert_eq!(version(&ctx).await, before);
    let err = sql_err(&ctx, "DELETE FROM h.b.t WHERE id IN (SELECT id FROM gone)").await;
    assert!(err.contains("MERGE INTO"), "{err}");
    let err = sql_err(&ctx, "DELETE FROM h.b.t WHERE random() < 0.5").await;
    assert!(err.contains("volatile") && err.contains("h.b.t"), "{err}");
}

/// A session that did not install Apiary (the hive registered by hand) has no guard against the
/// forms above, so its row-level changes on frames are refused, saying what to do.
#[tokio::test]
async fn a_session_without_apiarys_guard_refuses_row_changes() {
    let (ap, _ctx) = frame("memory://").await;
    let plain = SessionContext::new();
    plain.register_catalog("h", ap.catalog("h").await.unwrap());
    for stmt in [
        "DELETE FROM h.b.t WHERE id = 1",
        "UPDATE h.b.t SET v = 1 WHERE id = 1",
    ] {
        let err = sql_err(&plain, stmt).await;
        assert!(err.contains("register"), "{stmt}: {err}");
    }
    assert_eq!(scalar(&plain, "SELECT count(*) FROM h.b.t").await, "9");
    // After `register` the same session takes them, and MERGE and TRUNCATE.
    ap.register(&plain).unwrap();
    assert_eq!(query(&plain, "DELETE FROM h.b.t WHERE id = 1").await, ["1"]);
    assert_eq!(
        query(&plain, "UPDATE h.b.t SET v = 0 WHERE id = 2").await,
        ["1"]
    );
    assert_eq!(
        query(
            &plain,
            "MERGE INTO h.b.t AS t USING (SELECT 3 AS id) AS s ON t.id = s.id WHEN MATCHED THEN DELETE"
        )
        .await,
        ["1"]
    );
    assert_eq!(query(&plain, "TRUNCATE TABLE h.b.t").await, ["7"]);
}

/// As Delta does it: a DELETE rebases over appends committed meanwhile (their rows stay), and of
/// two statements rewriting the same cell from the same version one fails naming the cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_race_appends_and_each_other() {
    for b in backends() {
        let (_ap, ctx) = frame(&b.url).await;
        // Both planned (and so pinned to the same version) before either runs.
        let d1 = ctx.sql("DELETE FROM h.b.t WHERE id = 2").await.unwrap();
        let d2 = ctx
            .sql("UPDATE h.b.t SET v = 0 WHERE id = 3")
            .await
            .unwrap();
        let (r1, r2) = tokio::join!(d1.collect(), d2.collect());
        let errors: Vec<String> = [r1.err(), r2.err()]
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "{b}: exactly one of the two fails: {errors:?}"
        );
        assert!(
            errors[0].contains("commit conflict on frame h.b.t") && errors[0].contains(".parquet"),
            "{b}: {}",
            errors[0]
        );

        // A DELETE racing eight appends: every appended row stays, the deleted rows go.
        let rows_before: u64 = scalar(&ctx, "SELECT count(*) FROM h.b.t")
            .await
            .parse()
            .unwrap();
        let delete = ctx.sql("DELETE FROM h.b.t WHERE id < 10").await.unwrap();
        let ctx = Arc::new(ctx);
        let appends: Vec<_> = (0..8)
            .map(|i| {
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    sql(
                        &ctx,
                        &format!(
                            "INSERT INTO h.b.t SELECT 1000 + {i} * 100 + value, 'a', 1 FROM generate_series(1, 5)"
                        ),
                    )
                    .await
                })
            })
            .collect();
        let deleted = delete.collect().await.unwrap();
        for a in appends {
            a.await.unwrap();
        }
        let deleted: u64 = crate::support::rows(&deleted)[0].parse().unwrap();
        let small: u64 = rows_before - 3; // ids 10–12 stay
        assert_eq!(deleted, small, "{b}");
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM h.b.t WHERE id >= 1000").await,
            "40",
            "{b}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM h.b.t WHERE id < 10").await,
            "0",
            "{b}"
        );
    }
}

/// The changes of one day: 2 updated, 5 deleted, 99 inserted, 42 matches nothing in the frame
/// and is not inserted (its clause does not apply).
async fn changes(ctx: &SessionContext) {
    sql(
        ctx,
        "CREATE TABLE changes (id BIGINT, v INT, op VARCHAR) AS VALUES
         (2, 21, 'update'), (11, 111, 'update'), (5, NULL, 'delete'), (99, 990, 'insert'),
         (42, 0, 'skip')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_updates_deletes_and_inserts_rewriting_only_touched_cells() {
    for b in backends() {
        let (_ap, ctx) = frame(&b.url).await;
        changes(&ctx).await;
        let cells_before = scalar(&ctx, "SELECT count(*) FROM apiary_cells('h.b.t')").await;
        assert_eq!(cells_before, "4", "{b}");
        let affected = query(
            &ctx,
            "MERGE INTO h.b.t AS t USING changes AS s ON t.id = s.id
             WHEN MATCHED AND s.op = 'delete' THEN DELETE
             WHEN MATCHED THEN UPDATE SET v = s.v
             WHEN NOT MATCHED AND s.op = 'insert' THEN INSERT (id, k, v) VALUES (s.id, 'n', s.v)",
        )
        .await;
        assert_eq!(affected, ["4"], "{b}");
        assert_eq!(
            query(&ctx, "SELECT id, k, v FROM h.b.t ORDER BY id").await,
            [
                "1|a|10", "2|a|21", "3|a|30", "4|b|40", "6|c|NULL", "10|a|100", "11|a|111",
                "12|a|120", "99|n|990"
            ],
            "{b}"
        );
        // The two k=a cells and k=b are rewritten; k=c is left as it is.
        let last = query(
            &ctx,
            "SELECT operation, cells_removed, rows_removed, rows_added FROM apiary_history('h.b.t')
             ORDER BY version DESC LIMIT 1",
        )
        .await;
        assert_eq!(last, ["MERGE|3|8|8"], "{b}");
        assert_eq!(
            query(
                &ctx,
                "SELECT rows_deleted, rows_updated, rows_inserted FROM apiary_history('h.b.t')
                 ORDER BY version DESC LIMIT 1"
            )
            .await,
            ["1|2|1"],
            "{b}"
        );
        assert!(
            query(
                &ctx,
                "SELECT path FROM apiary_cells('h.b.t') WHERE partition = 'k=c'"
            )
            .await
            .len()
                == 1
        );
    }
}

#[tokio::test]
async fn merge_covers_not_matched_by_source_subquery_sources_and_bad_input() {
    let (_ap, ctx) = frame("memory://").await;
    changes(&ctx).await;
    // What the refused `DELETE … WHERE id IN (SELECT …)` means, as a MERGE.
    let deleted = query(
        &ctx,
        "MERGE INTO h.b.t USING (SELECT id FROM changes WHERE op = 'delete') AS d
         ON h.b.t.id = d.id WHEN MATCHED THEN DELETE",
    )
    .await;
    assert_eq!(deleted, ["1"]);
    assert_eq!(ids(&ctx).await.len(), 8);

    // Keep only the rows the source names: the others go.
    let gone = query(
        &ctx,
        "MERGE INTO h.b.t AS t USING changes AS s ON t.id = s.id
         WHEN NOT MATCHED BY SOURCE AND t.k = 'a' THEN DELETE",
    )
    .await;
    assert_eq!(gone, ["4"]); // ids 1, 3, 10, 12
    assert_eq!(ids(&ctx).await, ["2", "4", "6", "11"]);
    let touched = query(
        &ctx,
        "MERGE INTO h.b.t AS t USING changes AS s ON t.id = s.id
         WHEN NOT MATCHED BY SOURCE THEN UPDATE SET v = -1
         WHEN MATCHED AND s.op = 'skip' THEN DELETE",
    )
    .await;
    assert_eq!(touched, ["2"]); // 4 and 6 are in no change; 2 and 11 match but no clause applies
    assert_eq!(
        query(&ctx, "SELECT id, v FROM h.b.t ORDER BY id").await,
        ["2|20", "4|-1", "6|-1", "11|110"]
    );

    // A target row matched by two source rows: refused, nothing committed.
    let before = version(&ctx).await;
    sql(
        &ctx,
        "CREATE TABLE twice (id BIGINT, v INT) AS VALUES (2, 1), (2, 2)",
    )
    .await;
    let err = sql_err(
        &ctx,
        "MERGE INTO h.b.t AS t USING twice AS s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v",
    )
    .await;
    assert!(err.contains("more than one source row"), "{err}");
    // NOT NULL holds for inserted rows.
    let err = sql_err(
        &ctx,
        "MERGE INTO h.b.t AS t USING changes AS s ON t.id = s.id
         WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)",
    )
    .await;
    assert!(
        err.contains('k') && err.to_lowercase().contains("null"),
        "{err}"
    );
    assert_eq!(version(&ctx).await, before);
    assert_eq!(ids(&ctx).await, ["2", "4", "6", "11"]);
    let err = sql_err(
        &ctx,
        "MERGE INTO h.b.t AS t USING changes AS s ON t.id IN (SELECT id FROM twice)
         WHEN MATCHED THEN DELETE",
    )
    .await;
    assert!(err.contains("subquery") && err.contains("USING"), "{err}");
    let err = sql_err(
        &ctx,
        "MERGE INTO h.b.t AS t USING (SELECT a.id, b.id FROM twice a, twice b) AS s
         ON t.id = s.id WHEN MATCHED THEN DELETE",
    )
    .await;
    assert!(!err.is_empty());
    // EXPLAIN changes nothing.
    sql(
        &ctx,
        "EXPLAIN MERGE INTO h.b.t AS t USING changes AS s ON t.id = s.id WHEN MATCHED THEN DELETE",
    )
    .await;
    assert_eq!(version(&ctx).await, before);
}

/// A MERGE pinned to a version rebases over appends committed before it runs, and conflicts with
/// a DELETE that rewrote one of its cells first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_races_appends_and_rewrites() {
    for b in backends() {
        let (_ap, ctx) = frame(&b.url).await;
        changes(&ctx).await;
        let merge = "MERGE INTO h.b.t AS t USING changes AS s ON t.id = s.id
                     WHEN MATCHED THEN UPDATE SET v = s.v";
        let planned = ctx.sql(merge).await.unwrap();
        sql(
            &ctx,
            "INSERT INTO h.b.t VALUES (2000, 'a', 1), (2001, 'b', 1)",
        )
        .await;
        assert_eq!(
            crate::support::rows(&planned.collect().await.unwrap()),
            ["3"],
            "{b}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM h.b.t WHERE id >= 2000").await,
            "2",
            "{b}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT v FROM h.b.t WHERE id = 11").await,
            "111"
        );

        let planned = ctx.sql(merge).await.unwrap();
        sql(&ctx, "DELETE FROM h.b.t WHERE id = 1").await;
        let err = planned.collect().await.unwrap_err().to_string();
        assert!(
            err.contains("commit conflict on frame h.b.t") && err.contains("MERGE"),
            "{b}: {err}"
        );
        assert_eq!(ids(&ctx).await.len(), 10, "{b}");
    }
}
