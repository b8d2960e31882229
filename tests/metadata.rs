//! Metadata views and time travel from SQL.

use crate::support::{backends, hive_box, open, query, scalar, sql, sql_err};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_history_and_past_versions() {
    for b in backends() {
        let ap = open(&b.url).await;
        let ctx = ap.session().unwrap();
        sql(&ctx, "CREATE DATABASE h").await;
        sql(&ctx, "CREATE SCHEMA h.b").await;
        sql(
            &ctx,
            "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k VARCHAR NOT NULL) STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
        )
        .await;
        sql(
            &ctx,
            "INSERT INTO h.b.t VALUES (1, 'a'), (2, 'b'), (3, 'a')",
        )
        .await;
        sql(&ctx, "INSERT INTO h.b.t VALUES (4, 'c')").await;
        sql(&ctx, "INSERT OVERWRITE h.b.t VALUES (5, 'a')").await;

        let cells = query(
            &ctx,
            "SELECT partition, rows, stats, version FROM apiary_cells('h.b.t')",
        )
        .await;
        assert_eq!(
            cells,
            vec![r#"k=a|1|{"id":{"max":"5","min":"5","nulls":0}}|3"#],
            "{b}"
        );
        let size = scalar(
            &ctx,
            "SELECT size_bytes > 0 AND path LIKE 'k=a/cell_%.parquet' FROM apiary_cells('h.b.t')",
        )
        .await;
        assert_eq!(size, "true");

        let history = query(
            &ctx,
            "SELECT version, operation, action, cells_added, cells_removed, rows_added, rows_removed
             FROM apiary_history('h.b.t') ORDER BY version",
        )
        .await;
        assert_eq!(
            history,
            vec![
                "0|CREATE|create_frame|0|0|0|0",
                "1|INSERT|add_cells|2|0|3|0",
                "2|INSERT|add_cells|1|0|1|0",
                "3|INSERT OVERWRITE|rewrite_cells|1|3|1|4",
            ],
            "{b}"
        );
        assert_eq!(
            scalar(&ctx, "SELECT count(DISTINCT writer) FROM apiary_history('h.b.t') WHERE timestamp > TIMESTAMP '2020-01-01T00:00:00Z'").await,
            "1"
        );

        // Any committed version, from SQL; pruning works there too.
        let at = |v: u64| format!("SELECT id FROM apiary_version('h.b.t', {v}) ORDER BY id");
        assert!(query(&ctx, &at(0)).await.is_empty());
        assert_eq!(query(&ctx, &at(1)).await, vec!["1", "2", "3"], "{b}");
        assert_eq!(query(&ctx, &at(2)).await, vec!["1", "2", "3", "4"], "{b}");
        assert_eq!(query(&ctx, &at(3)).await, vec!["5"], "{b}");
        assert_eq!(
            query(
                &ctx,
                "SELECT id FROM apiary_version('h.b.t', 2) WHERE k = 'c'"
            )
            .await,
            vec!["4"]
        );
        let err = sql_err(&ctx, "SELECT * FROM apiary_version('h.b.t', -1)").await;
        assert!(err.contains("must be a whole number ≥ 0"), "{err}");
        let err = sql_err(&ctx, "SELECT * FROM apiary_version('h.b.t')").await;
        assert!(err.contains("apiary_version takes 2 argument(s)"), "{err}");
    }
}

/// `apiary_version('h.b.f', TIMESTAMP '…')`: the newest version committed at or before that time,
/// by the store's clock (when each ledger entry object was written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_by_time_reads_the_version_of_that_moment() {
    for b in backends() {
        let ap = open(&b.url).await;
        let ctx = ap.session().unwrap();
        hive_box(&ctx).await;
        sql(&ctx, "CREATE TABLE h.b.t (id BIGINT)").await;
        sql(&ctx, "INSERT INTO h.b.t VALUES (1)").await;
        // S3 servers give listings whole seconds; leave more than one between commits.
        let gap = std::time::Duration::from_millis(if b.label == "s3" { 1100 } else { 30 });
        tokio::time::sleep(gap).await;
        let between = scalar(&ctx, "SELECT CAST(now() AS VARCHAR)").await;
        tokio::time::sleep(gap).await;
        sql(&ctx, "INSERT INTO h.b.t VALUES (2)").await;
        let at = |t: &str| {
            format!("SELECT id FROM apiary_version('h.b.t', TIMESTAMP '{t}') ORDER BY id")
        };
        assert_eq!(query(&ctx, &at(&between)).await, ["1"], "{b}");
        assert_eq!(
            query(&ctx, &at("2200-01-01T00:00:00")).await,
            ["1", "2"],
            "{b}"
        );
        let err = sql_err(&ctx, &at("2001-01-01T00:00:00")).await;
        assert!(
            err.contains("h.b.t") && err.contains("2001-01-01") && err.contains("version 0"),
            "{b}: {err}"
        );
    }
}
