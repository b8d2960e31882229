//! Time travel by time (it needs the clock between commits). The metadata views and time travel
//! by version are `tests/slt/time_travel.slt`.

use crate::support::{Backend, hive_box, open, query, scalar, sql, sql_err};

/// `apiary_version('h.b.f', TIMESTAMP '…')`: the newest version committed at or before that time,
/// by the store's clock (when each ledger entry object was written).
async fn time_travel_by_time_reads_the_version_of_that_moment(b: Backend) {
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
    let at =
        |t: &str| format!("SELECT id FROM apiary_version('h.b.t', TIMESTAMP '{t}') ORDER BY id");
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

apiary_catalog::each_backend!(time_travel_by_time_reads_the_version_of_that_moment,);
