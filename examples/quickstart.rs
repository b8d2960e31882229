//! Quickstart: Apiary in a local folder, driven by plain DataFusion SQL.
//!
//! Creates a hive, a box and a partitioned frame, inserts rows (one atomic commit per
//! statement), queries with a filter, shows in `EXPLAIN ANALYZE` how many cells the ledger
//! pruned, and prints the frame's history.
//!
//! ```text
//! cargo run --example quickstart [FOLDER]     # default: $TMPDIR/apiary-quickstart
//! ```

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

async fn run(ctx: &SessionContext, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\n> {}",
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let batches = ctx.sql(sql).await?.collect().await?;
    if batches.iter().any(|b| b.num_rows() > 0) {
        println!("{}", pretty_format_batches(&batches)?);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("apiary-quickstart"));
    let url = folder.to_str().ok_or("the folder path is not UTF-8")?;
    println!("Apiary at {url}");

    let ap = apiary::Apiary::open(url).await?;
    let ctx = SessionContext::new();
    ap.register(&ctx)?;

    run(&ctx, "CREATE DATABASE IF NOT EXISTS sales").await?;
    run(&ctx, "CREATE SCHEMA IF NOT EXISTS sales.eu").await?;
    run(
        &ctx,
        "CREATE EXTERNAL TABLE IF NOT EXISTS sales.eu.orders (
             id BIGINT NOT NULL,
             day DATE NOT NULL,
             region VARCHAR NOT NULL,
             amount DECIMAL(12, 2) NOT NULL
         ) STORED AS APIARY PARTITIONED BY (region) LOCATION ''",
    )
    .await?;
    // Two statements, two commits; each run of the quickstart adds 20,000 more rows.
    for (first, regions, n) in [
        (0, "['de', 'fr', 'it']", 3),
        (10_000, "['fr', 'es', 'nl', 'pl']", 4),
    ] {
        run(
            &ctx,
            &format!(
                "INSERT INTO sales.eu.orders
                 SELECT value + {first} + (SELECT count(*) FROM sales.eu.orders),
                        DATE '2026-01-01' + CAST(value % 90 AS INT),
                        {regions}[value % {n} + 1],
                        CAST((value * 7919) % 100000 AS DECIMAL(12, 2)) / 100
                 FROM generate_series(0, 9999)"
            ),
        )
        .await?;
    }

    run(
        &ctx,
        "SELECT region, count(*) AS orders, sum(amount) AS revenue
         FROM sales.eu.orders
         WHERE region IN ('fr', 'it') AND day >= DATE '2026-03-01'
         GROUP BY region ORDER BY region",
    )
    .await?;

    // The ledger decides which cells to read: cells_total, cells_pruned_by_partition and
    // cells_scanned are metrics of the scan.
    let plan = ctx
        .sql(
            "EXPLAIN ANALYZE SELECT count(*) FROM sales.eu.orders WHERE region = 'fr' AND id < 100",
        )
        .await?
        .collect()
        .await?;
    let text = pretty_format_batches(&plan)?.to_string();
    for line in text.lines().filter(|l| l.contains("DataSourceExec")) {
        let metrics = line.split("metrics=[").nth(1).unwrap_or_default();
        let cells: Vec<&str> = metrics
            .split(", ")
            .filter(|m| m.starts_with("cells_"))
            .collect();
        println!(
            "\nEXPLAIN ANALYZE, scan of sales.eu.orders: {}",
            cells.join(", ")
        );
    }

    run(
        &ctx,
        "SELECT version, operation, cells_added, rows_added FROM apiary_history('sales.eu.orders')",
    )
    .await?;
    run(
        &ctx,
        "SELECT partition, count(*) AS cells, sum(rows) AS rows FROM apiary_cells('sales.eu.orders')
         GROUP BY partition ORDER BY partition",
    )
    .await?;
    Ok(())
}
