//! DDL and DML through DataFusion's own statements, where a test needs more than SQL: two
//! nodes, plain DataFusion sessions, storage touched behind Apiary's back. SQL behaviour alone is
//! in `tests/slt/*.slt` (run by `tests/slt.rs`).

use datafusion::prelude::SessionContext;

use crate::support::{
    Backend, folder_session, frame_by_k, hive_box, open, query, scalar, session, sql, sql_all,
    sql_err, with_box,
};

async fn frames_created_elsewhere_appear_without_restarting(b: Backend) {
    let writer = open(&b.url).await;
    let reader = open(&b.url).await;
    let w = writer.session().unwrap();
    let r = reader.session().unwrap();
    hive_box(&w).await;
    sql(&w, "CREATE TABLE h.b.t AS VALUES (1), (2), (3)").await;
    // A lookup of an unknown name re-reads the namespace at once.
    assert_eq!(scalar(&r, "SELECT count(*) FROM h.b.t").await, "3", "{b}");
    sql(&w, "INSERT INTO h.b.t VALUES (4)").await;
    assert_eq!(scalar(&r, "SELECT count(*) FROM h.b.t").await, "4", "{b}");
    // Listings catch up within the refresh interval (1 s).
    sql(&w, "CREATE TABLE h.b.u AS VALUES (1)").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let tables = query(&r, "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'h' AND table_schema = 'b' ORDER BY 1").await;
    assert_eq!(tables, vec!["t", "u"], "{b}");
}

#[tokio::test]
async fn a_query_sees_one_version_from_planning_to_the_end() {
    let (ap, ctx) = with_box("memory://").await;
    sql(
        &ctx,
        "CREATE TABLE h.b.t AS SELECT value AS n FROM generate_series(1, 10)",
    )
    .await;
    let planned = ctx
        .sql("SELECT count(*) FROM h.b.t WHERE n > 0")
        .await
        .unwrap();
    // Another session appends after planning.
    let other = ap.session().unwrap();
    sql(
        &other,
        "INSERT INTO h.b.t SELECT value FROM generate_series(11, 20)",
    )
    .await;
    let rows = crate::support::rows(&planned.collect().await.unwrap());
    assert_eq!(rows, vec!["10"]);
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM h.b.t WHERE n > 0").await,
        "20"
    );
}

#[tokio::test]
async fn a_hive_registered_by_hand_works_in_a_plain_session() {
    let (_dir, ap, setup) = folder_session().await;
    sql_all(
        &setup,
        &[
            "CREATE DATABASE sales",
            "CREATE SCHEMA sales.eu",
            "CREATE TABLE sales.eu.t AS VALUES (1, 'a'), (2, 'b')",
        ],
    )
    .await;

    let ctx = SessionContext::new();
    ctx.register_catalog("sales", ap.catalog("sales").await.unwrap());
    assert_eq!(
        query(&ctx, "SELECT column2 FROM sales.eu.t ORDER BY column1").await,
        vec!["a", "b"]
    );
    let err = ap.catalog("nope").await.unwrap_err().to_string();
    assert_eq!(err, "hive nope not found");
}

/// What a plain DataFusion session answers (the rest of bad input is `tests/slt/errors.slt`, and
/// Apiary's doors are `tests/slt/doors.slt`): `CREATE DATABASE` cannot fail through DataFusion's
/// API, so the reason comes with the next use of the name; `USE` is DataFusion's error.
#[tokio::test]
async fn a_plain_session_answers_as_datafusion_does() {
    let (_ap, ctx) = session("memory://").await;
    sql(&ctx, "CREATE DATABASE \"bad-hive\"").await;
    let err = sql_err(&ctx, "CREATE SCHEMA \"bad-hive\".b").await;
    assert!(
        err.contains("hive bad-hive was not created: invalid hive name \"bad-hive\""),
        "{err}"
    );
    sql(&ctx, "CREATE DATABASE sales").await;
    let err = sql_err(&ctx, "USE sales").await;
    assert!(err.contains("Unsupported SQL statement"), "{err}");
}

/// A cell missing from storage: an error naming it, not a panic, and the ledger unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cell_is_named() {
    let (dir, ap, ctx) = folder_session().await;
    hive_box(&ctx).await;
    sql(&ctx, "CREATE TABLE h.b.t (id BIGINT NOT NULL, day DATE)").await;
    sql(&ctx, "INSERT INTO h.b.t VALUES (1, DATE '2026-01-01')").await;
    let cell = scalar(&ctx, "SELECT path FROM apiary_cells('h.b.t')").await;
    let location = ap
        .registry()
        .snapshot()
        .frame("h", "b", "t")
        .unwrap()
        .location
        .clone();
    std::fs::remove_file(dir.path().join(&location).join(&cell)).unwrap();
    let err = sql_err(&ctx, "SELECT * FROM h.b.t").await;
    assert!(err.contains(&cell), "{err}");
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM apiary_history('h.b.t')").await,
        "2"
    );
}

/// A program whose session names a hive as its default catalog gets the hive, not the empty
/// catalog DataFusion creates for the default; `Apiary::sql` runs Apiary's own statements in it.
#[tokio::test]
async fn a_default_catalog_named_like_a_hive_does_not_hide_it() {
    let (ap, setup) = session("memory://").await;
    sql_all(
        &setup,
        &[
            "CREATE DATABASE sales",
            "CREATE SCHEMA sales.eu",
            "CREATE TABLE sales.eu.t (id BIGINT)",
            "INSERT INTO sales.eu.t VALUES (7)",
        ],
    )
    .await;
    let config =
        datafusion::prelude::SessionConfig::new().with_default_catalog_and_schema("sales", "eu");
    let ctx = SessionContext::new_with_config(config);
    ap.register(&ctx).unwrap();
    assert_eq!(scalar(&ctx, "SELECT id FROM t").await, "7");
    assert_eq!(scalar(&ctx, "SELECT id FROM sales.eu.t").await, "7");
    // The program's own session takes Apiary's statements through one call.
    crate::support::door(&ap, &ctx, "ALTER TABLE t RENAME COLUMN id TO n").await;
    crate::support::door(&ap, &ctx, "SHOW BOXES").await;
    assert_eq!(scalar(&ctx, "SELECT n FROM t").await, "7");
}

/// A plain DataFusion session takes `apiary.overwrite` after `register` (the setting itself is
/// `tests/slt/overwrite.slt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_session_takes_apiary_overwrite_after_register() {
    let columns = "id BIGINT NOT NULL, k VARCHAR NOT NULL";
    let (ap, _ctx) = frame_by_k("memory://", columns, &["INSERT INTO h.b.t VALUES (5, 'b')"]).await;
    let plain = SessionContext::new();
    ap.register(&plain).unwrap();
    sql(&plain, "SET apiary.overwrite = 'dynamic'").await;
    sql(&plain, "INSERT OVERWRITE h.b.t VALUES (7, 'z')").await;
    assert_eq!(
        query(&plain, "SELECT id FROM h.b.t ORDER BY id").await,
        ["5", "7"]
    );
}

apiary_catalog::each_backend!(frames_created_elsewhere_appear_without_restarting,);
