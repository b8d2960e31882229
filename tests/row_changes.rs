//! DELETE, UPDATE, TRUNCATE and MERGE where a test needs more than SQL (a session without
//! Apiary's guard, races, EXPLAIN's side effects). The statements themselves are
//! `tests/slt/row_changes.slt` and `tests/slt/merge.slt`.

use std::sync::Arc;

use apiary::Apiary;
use datafusion::prelude::SessionContext;

use crate::support::{Backend, assert_scalars, frame_by_k, query, scalar, sql, sql_err};

/// `h.b.t` (id, k, v) partitioned by k: cells `k=a` (ids 1–3 and 10–12, two cells), `k=b`
/// (ids 4–5), `k=c` (id 6, v NULL).
async fn frame(url: &str) -> (Apiary, SessionContext) {
    frame_by_k(
        url,
        "id BIGINT NOT NULL, k VARCHAR NOT NULL, v INT",
        &[
            "INSERT INTO h.b.t VALUES (1, 'a', 10), (2, 'a', 20), (3, 'a', 30), (4, 'b', 40), (5, 'b', 50), (6, 'c', NULL)",
            "INSERT INTO h.b.t VALUES (10, 'a', 100), (11, 'a', 110), (12, 'a', 120)",
        ],
    )
    .await
}

async fn ids(ctx: &SessionContext) -> Vec<String> {
    query(ctx, "SELECT id FROM h.b.t ORDER BY id").await
}

async fn version(ctx: &SessionContext) -> String {
    scalar(ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await
}

/// `EXPLAIN` of a row-level change plans it and runs nothing (the statements themselves are
/// `tests/slt/row_changes.slt`).
#[tokio::test]
async fn explain_of_a_row_change_changes_nothing() {
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
async fn row_changes_race_appends_and_each_other(b: Backend) {
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
    assert_scalars(
        &ctx,
        &b,
        &[
            ("SELECT count(*) FROM h.b.t WHERE id >= 1000", "40"),
            ("SELECT count(*) FROM h.b.t WHERE id < 10", "0"),
        ],
    )
    .await;
}

/// A MERGE pinned to a version rebases over appends committed before it runs, and conflicts with
/// a DELETE that rewrote one of its cells first.
async fn merge_races_appends_and_rewrites(b: Backend) {
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

apiary_catalog::each_backend!(
    row_changes_race_appends_and_each_other,
    merge_races_appends_and_rewrites,
);
