//! DDL and DML through DataFusion's own statements.

use datafusion::prelude::SessionContext;

use crate::support::{backends, door, door_err, hive_box, open, query, scalar, sql, sql_err};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_creates_lists_describes_and_drops() {
    for b in backends() {
        let ap = open(&b.url).await;
        let ctx = ap.session().unwrap();
        sql(&ctx, "CREATE DATABASE sales").await;
        sql(&ctx, "CREATE DATABASE IF NOT EXISTS sales").await;
        sql(&ctx, "CREATE SCHEMA sales.eu").await;
        sql(&ctx, "CREATE SCHEMA IF NOT EXISTS sales.eu").await;
        let err = sql_err(&ctx, "CREATE SCHEMA sales.eu").await;
        assert!(err.contains("already exists"), "{b}: {err}");

        sql(
            &ctx,
            "CREATE TABLE sales.eu.customers (id BIGINT NOT NULL, name VARCHAR)",
        )
        .await;
        sql(
            &ctx,
            "CREATE TABLE IF NOT EXISTS sales.eu.customers (id BIGINT NOT NULL, name VARCHAR)",
        )
        .await;
        let err = sql_err(&ctx, "CREATE TABLE sales.eu.customers (x INT)").await;
        assert!(err.contains("already exists"), "{b}: {err}");
        sql(
            &ctx,
            "CREATE TABLE sales.eu.big AS SELECT value AS n, value * 2 AS twice FROM generate_series(1, 1000)",
        )
        .await;
        sql(
            &ctx,
            "CREATE EXTERNAL TABLE sales.eu.orders (id BIGINT NOT NULL, region VARCHAR NOT NULL, amount DOUBLE)
             STORED AS APIARY PARTITIONED BY (region) LOCATION ''",
        )
        .await;
        sql(
            &ctx,
            "CREATE EXTERNAL TABLE IF NOT EXISTS sales.eu.orders (id BIGINT) STORED AS APIARY LOCATION ''",
        )
        .await;

        // The frames exist in storage, with their declared layout.
        let snapshot = ap.registry().refresh().await.unwrap();
        assert_eq!(
            snapshot.frame_names("sales", "eu").unwrap(),
            vec!["big", "customers", "orders"]
        );
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM sales.eu.big").await,
            "1000",
            "{b}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT sum(twice) FROM sales.eu.big").await,
            "1001000",
            "{b}"
        );

        // SHOW TABLES, information_schema and DESCRIBE work as in DataFusion.
        let tables = query(&ctx, "SHOW TABLES").await;
        for t in [
            "sales|eu|orders|BASE TABLE",
            "sales|eu|customers|BASE TABLE",
            "sales|eu|big|BASE TABLE",
        ] {
            assert!(tables.contains(&t.to_string()), "{b}: {t} in {tables:?}");
        }
        let schemata = query(
            &ctx,
            "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = 'sales' ORDER BY 1",
        )
        .await;
        assert!(schemata.contains(&"eu".to_string()), "{b}: {schemata:?}");
        let columns = query(&ctx, "DESCRIBE sales.eu.orders").await;
        assert_eq!(
            columns,
            vec!["id|Int64|NO", "region|Utf8View|NO", "amount|Float64|YES"],
            "{b}"
        );

        // DROP: RESTRICT by default, IF EXISTS explicit, CASCADE drops the frames too.
        sql(&ctx, "DROP TABLE sales.eu.customers").await;
        sql(&ctx, "DROP TABLE IF EXISTS sales.eu.customers").await;
        let err = sql_err(&ctx, "DROP TABLE sales.eu.customers").await;
        assert!(err.contains("doesn't exist"), "{b}: {err}");
        let err = sql_err(&ctx, "DROP SCHEMA sales.eu").await;
        assert!(err.contains("box sales.eu is not empty"), "{b}: {err}");
        sql(&ctx, "DROP SCHEMA sales.eu CASCADE").await;
        sql(&ctx, "DROP SCHEMA IF EXISTS sales.eu").await;
        assert!(
            ap.registry()
                .refresh()
                .await
                .unwrap()
                .get_box("sales", "eu")
                .is_err()
        );

        // The session's own catalog keeps working beside the hives.
        sql(&ctx, "CREATE TABLE scratch AS VALUES (1), (2)").await;
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM datafusion.public.scratch").await,
            "2"
        );
        assert!(ap.registry().snapshot().hive("datafusion").is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_is_one_atomic_commit_and_overwrite_replaces() {
    for b in backends() {
        let ap = open(&b.url).await;
        let ctx = ap.session().unwrap();
        sql(&ctx, "CREATE DATABASE h").await;
        sql(&ctx, "CREATE SCHEMA h.b").await;
        sql(
            &ctx,
            "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k VARCHAR NOT NULL, v DOUBLE)
             STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
        )
        .await;
        let inserted = query(
            &ctx,
            "INSERT INTO h.b.t VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'a', 3.5)",
        )
        .await;
        assert_eq!(inserted, vec!["3"]);
        sql(
            &ctx,
            "INSERT INTO h.b.t SELECT value, 'c', value / 2.0 FROM generate_series(10, 19)",
        )
        .await;
        let history = query(
            &ctx,
            "SELECT version, operation, cells_added, rows_added FROM apiary_history('h.b.t')",
        )
        .await;
        assert_eq!(
            history,
            vec!["0|CREATE|0|0", "1|INSERT|2|3", "2|INSERT|1|10"],
            "{b}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM h.b.t WHERE v IS NULL").await,
            "1"
        );

        sql(&ctx, "INSERT OVERWRITE h.b.t VALUES (100, 'z', 0.0)").await;
        assert_eq!(
            query(&ctx, "SELECT id, k FROM h.b.t").await,
            vec!["100|z"],
            "{b}"
        );
        let last = query(&ctx, "SELECT operation, action, cells_removed, rows_removed, rows_added FROM apiary_history('h.b.t') WHERE version = 3").await;
        assert_eq!(last, vec!["INSERT OVERWRITE|rewrite_cells|3|13|1"], "{b}");

        // A statement that fails half way commits nothing.
        let err = sql_err(&ctx, "INSERT INTO h.b.t SELECT value, 'x', CAST(10 / (value - 5) AS DOUBLE) FROM generate_series(1, 10)").await;
        assert!(!err.is_empty());
        let err = sql_err(&ctx, "INSERT INTO h.b.t SELECT CAST(value AS VARCHAR) || 'x', 'y', 1.0 FROM generate_series(1, 3)").await;
        assert!(
            err.contains("Cannot cast") || err.contains("cast"),
            "{b}: {err}"
        );
        let err = sql_err(&ctx, "INSERT INTO h.b.t (id, k) VALUES (NULL, 'q')").await;
        assert!(
            err.contains("id") && err.to_lowercase().contains("null"),
            "{b}: {err}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await,
            "3",
            "{b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_created_elsewhere_appear_without_restarting() {
    for b in backends() {
        let writer = open(&b.url).await;
        let reader = open(&b.url).await;
        let w = writer.session().unwrap();
        let r = reader.session().unwrap();
        sql(&w, "CREATE DATABASE h").await;
        sql(&w, "CREATE SCHEMA h.b").await;
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
}

#[tokio::test]
async fn a_query_sees_one_version_from_planning_to_the_end() {
    let ap = open("memory://").await;
    let ctx = ap.session().unwrap();
    sql(&ctx, "CREATE DATABASE h").await;
    sql(&ctx, "CREATE SCHEMA h.b").await;
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
    let dir = tempfile::tempdir().unwrap();
    let ap = open(dir.path().to_str().unwrap()).await;
    let setup = ap.session().unwrap();
    sql(&setup, "CREATE DATABASE sales").await;
    sql(&setup, "CREATE SCHEMA sales.eu").await;
    sql(
        &setup,
        "CREATE TABLE sales.eu.t AS VALUES (1, 'a'), (2, 'b')",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ap = open(dir.path().to_str().unwrap()).await;
    let ctx = ap.session().unwrap();
    sql(&ctx, "CREATE DATABASE h").await;
    sql(&ctx, "CREATE SCHEMA h.b").await;
    sql(&ctx, "CREATE TABLE h.b.t (id BIGINT NOT NULL, day DATE)").await;
    sql(&ctx, "INSERT INTO h.b.t VALUES (1, DATE '2026-01-01')").await;

    // Unknown names.
    for (stmt, needle) in [
        ("SELECT * FROM nope.b.t", "nope.b.t"),
        ("SELECT * FROM h.nope.t", "h.nope.t"),
        ("SELECT * FROM h.b.nope", "h.b.nope"),
        ("CREATE SCHEMA nope.x", "nope"),
        ("CREATE TABLE h.nope.t (x INT)", "nope"),
        (
            "SELECT * FROM apiary_cells('h.b.nope')",
            "frame h.b.nope not found",
        ),
        (
            "SELECT * FROM apiary_cells('h.b')",
            "give the frame as 'hive.box.frame'",
        ),
        (
            "SELECT * FROM apiary_version('h.b.t', 9)",
            "has no version 9 (latest is 1)",
        ),
    ] {
        let err = sql_err(&ctx, stmt).await;
        assert!(err.contains(needle), "{stmt}: {needle:?} not in {err}");
    }
    // Type mismatch on INSERT.
    let err = sql_err(&ctx, "INSERT INTO h.b.t VALUES (2, 'not a date')").await;
    assert!(err.to_lowercase().contains("date"), "{err}");
    // Invalid names: refused, naming them.
    let err = sql_err(&ctx, "CREATE SCHEMA h.\"bad box\"").await;
    assert!(err.contains("invalid box name \"bad box\""), "{err}");
    let err = sql_err(&ctx, "CREATE TABLE h.b.\"_hidden\" (x INT)").await;
    assert!(err.contains("invalid frame name \"_hidden\""), "{err}");
    // CREATE DATABASE cannot fail through DataFusion's API: the reason comes with the next use.
    sql(&ctx, "CREATE DATABASE \"bad-hive\"").await;
    let err = sql_err(&ctx, "CREATE SCHEMA \"bad-hive\".b").await;
    assert!(
        err.contains("hive bad-hive was not created: invalid hive name \"bad-hive\""),
        "{err}"
    );
    // Unsupported kinds of tables are refused clearly.
    let err = sql_err(&ctx, "CREATE VIEW h.b.v AS SELECT 1").await;
    assert!(
        err.contains("views are not stored in Apiary boxes"),
        "{err}"
    );
    let err = sql_err(&ctx, "CREATE TABLE h.b.pk (id INT PRIMARY KEY)").await;
    assert!(err.contains("constraints"), "{err}");
    let err = sql_err(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.e (id INT, k INT) STORED AS APIARY PARTITIONED BY (k) LOCATION '/elsewhere'",
    )
    .await;
    assert!(err.contains("LOCATION ''"), "{err}");
    let err = sql_err(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.e (id INT, k DOUBLE) STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
    )
    .await;
    assert!(err.contains("partition column k has type Float64"), "{err}");
    let err = sql_err(
        &ctx,
        "CREATE EXTERNAL TABLE datafusion.public.e (id INT) STORED AS APIARY LOCATION ''",
    )
    .await;
    assert!(err.contains("datafusion is not an Apiary hive"), "{err}");

    // A cell missing from storage: an error naming it, not a panic.
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

/// Statements DataFusion lacks, in Apiary's doors (`Apiary::sql`, the shell, Python `sql`):
/// `USE`, `SHOW DATABASES` / `HIVES`, `SHOW SCHEMAS` / `BOXES`; `CREATE DATABASE` failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_and_show_in_apiarys_doors() {
    let ap = open("memory://").await;
    let ctx = ap.session().unwrap();
    let run = |s: &'static str| {
        let (ap, ctx) = (ap.clone(), ctx.clone());
        async move { door(&ap, &ctx, s).await }
    };
    let fails = |s: &'static str| {
        let (ap, ctx) = (ap.clone(), ctx.clone());
        async move { door_err(&ap, &ctx, s).await }
    };
    run("CREATE DATABASE sales").await;
    run("CREATE SCHEMA sales.eu").await;
    run("CREATE SCHEMA sales.us").await;
    run("CREATE DATABASE ops").await;
    run("CREATE TABLE sales.eu.t (id BIGINT)").await;
    run("INSERT INTO sales.eu.t VALUES (1), (2)").await;

    assert_eq!(run("SHOW HIVES").await, ["ops", "sales"]);
    assert_eq!(run("SHOW DATABASES").await, ["datafusion", "ops", "sales"]);
    assert_eq!(run("SHOW SCHEMAS IN sales").await, ["eu", "us"]);
    assert_eq!(run("show boxes in sales;").await, ["eu", "us"]);

    run("USE sales.eu").await;
    assert_eq!(run("SELECT count(*) FROM t").await, ["2"]);
    assert_eq!(run("SHOW BOXES").await, ["eu", "us"]);
    run("USE ops").await;
    assert_eq!(run("SELECT count(*) FROM sales.eu.t").await, ["2"]);

    run("USE datafusion.public").await;
    assert_eq!(run("SHOW SCHEMAS").await, ["public"]);
    // A plain `ctx.sql` answers as DataFusion does.
    let err = sql_err(&ctx, "USE sales").await;
    assert!(err.contains("Unsupported SQL statement"), "{err}");
    let err = fails("USE nope").await;
    assert!(err.contains("hive nope not found"), "{err}");
    let err = fails("USE sales.nope").await;
    assert!(err.contains("box sales.nope not found"), "{err}");
    let err = fails("SHOW SCHEMAS IN nope").await;
    assert!(err.contains("hive nope not found"), "{err}");
    // CREATE DATABASE fails at once, with the reason, in Apiary's doors.
    let err = fails("CREATE DATABASE \"bad-hive\"").await;
    assert!(err.contains("invalid hive name \"bad-hive\""), "{err}");
    run("CREATE DATABASE IF NOT EXISTS sales").await;
    let err = fails("CREATE DATABASE sales").await;
    assert!(err.contains("sales") && err.contains("exists"), "{err}");
}

/// A program whose session names a hive as its default catalog gets the hive, not the empty
/// catalog DataFusion creates for the default; `Apiary::sql` runs Apiary's own statements in it.
#[tokio::test]
async fn a_default_catalog_named_like_a_hive_does_not_hide_it() {
    let ap = open("memory://").await;
    let setup = ap.session().unwrap();
    sql(&setup, "CREATE DATABASE sales").await;
    sql(&setup, "CREATE SCHEMA sales.eu").await;
    sql(&setup, "CREATE TABLE sales.eu.t (id BIGINT)").await;
    sql(&setup, "INSERT INTO sales.eu.t VALUES (7)").await;
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

/// `SET apiary.overwrite = 'dynamic'`: `INSERT OVERWRITE` replaces only the partitions it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_overwrite_replaces_only_the_partitions_written() {
    for b in backends() {
        let ap = open(&b.url).await;
        let ctx = ap.session().unwrap();
        hive_box(&ctx).await;
        sql(
            &ctx,
            "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k VARCHAR NOT NULL)
             STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
        )
        .await;
        sql(
            &ctx,
            "INSERT INTO h.b.t VALUES (1, 'a'), (2, 'a'), (3, 'b'), (4, 'c')",
        )
        .await;
        sql(&ctx, "SET apiary.overwrite = 'dynamic'").await;
        sql(&ctx, "INSERT OVERWRITE h.b.t VALUES (10, 'a'), (20, 'd')").await;
        assert_eq!(
            query(&ctx, "SELECT k, id FROM h.b.t ORDER BY k, id").await,
            ["a|10", "b|3", "c|4", "d|20"],
            "{b}"
        );
        let last = query(&ctx, "SELECT operation, cells_removed, rows_removed FROM apiary_history('h.b.t') ORDER BY version DESC LIMIT 1").await;
        assert_eq!(last, ["INSERT OVERWRITE|1|2"], "{b}");
        // The default replaces everything.
        sql(&ctx, "SET apiary.overwrite = 'static'").await;
        sql(&ctx, "INSERT OVERWRITE h.b.t VALUES (5, 'b')").await;
        assert_eq!(query(&ctx, "SELECT k, id FROM h.b.t").await, ["b|5"], "{b}");
        sql(&ctx, "SET apiary.overwrite = 'sometimes'").await;
        let err = sql_err(&ctx, "INSERT OVERWRITE h.b.t VALUES (6, 'b')").await;
        assert!(
            err.contains("apiary.overwrite") && err.contains("sometimes"),
            "{b}: {err}"
        );
        assert_eq!(query(&ctx, "SELECT id FROM h.b.t").await, ["5"], "{b}");

        // A plain DataFusion session takes the setting after `register`.
        let plain = SessionContext::new();
        ap.register(&plain).unwrap();
        sql(&plain, "SET apiary.overwrite = 'dynamic'").await;
        sql(&plain, "INSERT OVERWRITE h.b.t VALUES (7, 'z')").await;
        assert_eq!(
            query(&plain, "SELECT id FROM h.b.t ORDER BY id").await,
            ["5", "7"],
            "{b}"
        );
    }
}
