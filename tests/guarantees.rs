//! The storage guarantees as users meet them: planning a statement changes nothing; a
//! long-lived session sees another process drop and recreate a frame, and never reports a write
//! into a dropped one as done; `CREATE OR REPLACE` is one atomic step through Apiary's doors and
//! recoverable through DataFusion's; `apiary check` finds what is broken.

use apiary::Apiary;
use datafusion::prelude::SessionContext;
use tempfile::TempDir;

use crate::support::{
    apiary, csv, door, door_err, failed, folder_session, hive_box, ok, parquet_files, plan, query,
    scalar, sql, sql_err,
};

/// Seen: `EXPLAIN SELECT * FROM apiary_cleanse('h.b.f', 0)` removed two of a frame's three cell
/// files. Table functions that act do so when their result is read: never for `EXPLAIN`, a view
/// or a prepared statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_a_statement_changes_nothing() {
    let (dir, _ap, ctx) = four_cells().await;
    sql(&ctx, "INSERT OVERWRITE h.b.t VALUES (5), (6)").await;
    let version = || scalar(&ctx, "SELECT max(version) FROM apiary_history('h.b.t')");
    assert_eq!(version().await, "5");
    assert_eq!(parquet_files(dir.path()), 5);

    for statement in [
        "EXPLAIN SELECT * FROM apiary_cleanse('h.b.t', 0, false, true)",
        "EXPLAIN SELECT * FROM apiary_compact('h.b.t')",
        "EXPLAIN SELECT * FROM apiary_cleanse('*', 0, false, true)",
    ] {
        let text = plan(&ctx, statement).await;
        assert!(text.contains("ActionExec: apiary_"), "{statement}: {text}");
    }
    sql(
        &ctx,
        "CREATE VIEW datafusion.public.v AS SELECT * FROM apiary_cleanse('h.b.t', 0, false, true)",
    )
    .await;
    sql(&ctx, "PREPARE p AS SELECT * FROM apiary_compact('h.b.t')").await;
    assert_eq!(parquet_files(dir.path()), 5, "nothing was removed");
    assert_eq!(version().await, "5", "nothing was committed");

    // Reading the result does the work.
    let removed = query(&ctx, "SELECT kind FROM datafusion.public.v").await;
    assert_eq!(
        removed.iter().filter(|k| *k == "cell").count(),
        4,
        "{removed:?}"
    );
    assert_eq!(parquet_files(dir.path()), 1);

    // A retention under an hour needs force.
    let err = sql_err(&ctx, "SELECT * FROM apiary_cleanse('h.b.t', 60)").await;
    assert!(
        err.contains("60 s is under the minimum of 3600 s") && err.contains("force"),
        "{err}"
    );
}

/// Seen: a session that had read `t` went on counting the dropped `t`'s rows after another
/// process recreated it, and its `INSERT INTO t` reported success while the new `t` never got
/// the row. The other process here is the `apiary` command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_session_follows_another_processes_drop_and_recreate() {
    let (dir, _ap, ctx) = folder_session().await;
    let storage = dir.path();
    hive_box(&ctx).await;
    sql(&ctx, "CREATE TABLE h.b.t AS VALUES (1), (2)").await;
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "2");

    ok(&apiary(
        storage,
        &[
            "-q",
            "-c",
            "DROP TABLE h.b.t",
            "CREATE TABLE h.b.t AS VALUES (1), (2), (3), (4), (5)",
        ],
    ));
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "5");
    sql(&ctx, "INSERT INTO h.b.t VALUES (6)").await;
    assert_eq!(csv(storage, "SELECT count(*) AS n FROM h.b.t"), ["n", "6"]);

    // Resolved before the other process replaced it, committed after: refused, by name.
    let insert = ctx.sql("INSERT INTO h.b.t VALUES (7)").await.unwrap();
    ok(&apiary(
        storage,
        &[
            "-q",
            "-c",
            "DROP TABLE h.b.t",
            "CREATE TABLE h.b.t AS VALUES (10)",
        ],
    ));
    let err = insert.collect().await.unwrap_err().to_string();
    assert!(
        err.contains("frame h.b.t was dropped or replaced")
            && err.contains("nothing was committed"),
        "{err}"
    );
    assert_eq!(csv(storage, "SELECT count(*) AS n FROM h.b.t"), ["n", "1"]);
    ok(&apiary(storage, &["check"]));
}

/// DataFusion runs `CREATE OR REPLACE` as "drop, then create": a create that fails leaves the
/// name gone. Apiary's doors make it one step; through DataFusion's, the dropped frame comes back
/// with `apiary_undrop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_or_replace_is_one_step_in_apiarys_doors() {
    let (dir, ap, ctx) = four_cells().await;
    let storage = dir.path();
    let failing = "CREATE OR REPLACE TABLE h.b.t AS SELECT n / (n - n) AS n FROM h.b.t";
    let working = "CREATE OR REPLACE TABLE h.b.t AS SELECT n * 10 AS n FROM h.b.t";
    let sum = || scalar(&ctx, "SELECT sum(n) FROM h.b.t");

    // Apiary::sql: the failure leaves the frame as it was.
    let err = door_err(&ap, &ctx, failing).await;
    assert!(err.contains("Divide by zero"), "{err}");
    assert_eq!(sum().await, "10");
    // A replace that works: readers see the new frame, from one registry commit.
    door(&ap, &ctx, working).await;
    assert_eq!(sum().await, "100");
    door(
        &ap,
        &ctx,
        "CREATE OR REPLACE EXTERNAL TABLE h.b.e (k VARCHAR NOT NULL, v BIGINT) STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
    )
    .await;
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.e").await, "0");

    // The apiary command is one of Apiary's doors.
    failed(&apiary(storage, &["-q", "-c", failing]));
    assert_eq!(sum().await, "100");

    // A plain DataFusion session: the name is gone, and apiary_undrop brings the frame back.
    sql_err(&ctx, failing).await;
    let err = sql_err(&ctx, "SELECT * FROM h.b.t").await;
    assert!(err.contains("h.b.t") && err.contains("not found"), "{err}");
    let back = query(&ctx, "SELECT frame FROM apiary_undrop('h.b.t')").await;
    assert_eq!(back, ["h.b.t"]);
    assert_eq!(sum().await, "100");
    ok(&apiary(storage, &["check"]));
}

/// `apiary check` and `apiary_check`: a cell a readable version names, gone from storage, is
/// reported with its key, and the command exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_cell_and_exits_non_zero() {
    let (dir, ap, ctx) = four_cells().await;
    let storage = dir.path();
    let out = ok(&apiary(storage, &["check"]));
    assert!(
        out.contains("ok (1 frame(s), 5 readable version(s), 4 cell(s))"),
        "{out}"
    );
    assert!(query(&ctx, "SELECT * FROM apiary_check()").await.is_empty());

    let cell = scalar(
        &ctx,
        "SELECT path FROM apiary_cells('h.b.t') ORDER BY path LIMIT 1",
    )
    .await;
    let record = ap
        .registry()
        .snapshot()
        .frame("h", "b", "t")
        .unwrap()
        .clone();
    std::fs::remove_file(storage.join(&record.location).join(&cell)).unwrap();

    let problems = query(&ctx, "SELECT key, problem FROM apiary_check('h.b.t')").await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&cell) && problems[0].contains("cell of h.b.t is missing"),
        "{problems:?}"
    );
    let out = apiary(storage, &["check", "h.b.t"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&cell) && stdout.contains("is missing"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 problem(s) found"),
        "{out:?}"
    );
}

/// Apiary on a fresh folder (returned, to be kept) with `h.b.t` of four cells of one row each,
/// then all four replaced by one cell of four rows; a session of it.
async fn four_cells() -> (TempDir, Apiary, SessionContext) {
    let (dir, ap, ctx) = folder_session().await;
    hive_box(&ctx).await;
    sql(&ctx, "CREATE TABLE h.b.t (n BIGINT NOT NULL)").await;
    for i in 1..=4 {
        sql(&ctx, &format!("INSERT INTO h.b.t VALUES ({i})")).await;
    }
    (dir, ap, ctx)
}
