//! TPC-H side by side: the same Parquet cells read (a) as Apiary frames and (b) as DataFusion
//! ListingTables over the frames' folders, each in its own session. Runs are interleaved, and
//! who goes first alternates, so that machine noise hits both; medians per query, the ratio
//! a / b per query and in total.
//!
//! ```text
//! cargo bench --bench tpch -- [--sf 1] [--runs 5] [--queries 1,6,14]
//! ```
//!
//! The data comes from `scripts/tpch-data SF`; the Apiary copy is built once into
//! `target/apiary-bench/tpch-sf{SF}` and reused.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use apiary::Apiary;
use common::{arg, arg_or, median, ms, run, time, tpch_data, tpch_query, work_dir};
use datafusion::prelude::SessionContext;

const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// Builds (once) the Apiary copy: hive `tpch`, box `data`, one frame per table, loaded with
/// `INSERT INTO … SELECT` from the generated Parquet files.
async fn build(sf: &str) -> (std::path::PathBuf, Apiary) {
    let dir = work_dir(&format!("tpch-sf{sf}"));
    let complete = dir.join(".complete");
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let data = tpch_data(sf);
        let ap = Apiary::open(dir.to_str().expect("utf-8"))
            .await
            .expect("open");
        let ctx = ap.session().expect("session");
        run(&ctx, "CREATE DATABASE tpch").await;
        run(&ctx, "CREATE SCHEMA tpch.data").await;
        for t in TABLES {
            let start = std::time::Instant::now();
            let src = format!("{}/{t}.parquet", data.display());
            run(
                &ctx,
                &format!("CREATE EXTERNAL TABLE src_{t} STORED AS PARQUET LOCATION '{src}'"),
            )
            .await;
            run(
                &ctx,
                &format!("CREATE TABLE tpch.data.{t} AS SELECT * FROM src_{t} LIMIT 0"),
            )
            .await;
            run(
                &ctx,
                &format!("INSERT INTO tpch.data.{t} SELECT * FROM src_{t}"),
            )
            .await;
            eprintln!("loaded {t} in {:.1} s", start.elapsed().as_secs_f64());
        }
        std::fs::write(&complete, b"").expect("marker");
    }
    let ap = Apiary::open(dir.to_str().expect("utf-8"))
        .await
        .expect("open");
    (dir, ap)
}

#[tokio::main]
async fn main() {
    let sf = arg("--sf").unwrap_or_else(|| "1".into());
    let runs: usize = arg_or("--runs", 5);
    let queries: Vec<usize> = match arg("--queries") {
        Some(q) => q.split(',').filter_map(|n| n.parse().ok()).collect(),
        None => (1..=22).collect(),
    };
    let (dir, ap) = build(&sf).await;

    // (a) Apiary frames.
    let apiary = ap.session().expect("session");
    run(&apiary, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    run(&apiary, "SET datafusion.catalog.default_schema = 'data'").await;
    // (b) ListingTables over the very same cell files, in a session of their own.
    let listing = SessionContext::new();
    let registry = ap.registry().snapshot();
    run(&listing, "CREATE SCHEMA datafusion.tpch").await;
    run(&listing, "SET datafusion.catalog.default_schema = 'tpch'").await;
    for t in TABLES {
        let location = &registry.frame("tpch", "data", t).expect("frame").location;
        run(
            &listing,
            &format!(
                "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{}/{location}/'",
                dir.display()
            ),
        )
        .await;
    }

    println!("TPC-H SF{sf}, {runs} runs per side after one warm-up, medians (ms)\n");
    println!("| query | Apiary | ListingTable | ratio |");
    println!("|---|---:|---:|---:|");
    let (mut total_a, mut total_b) = (Duration::ZERO, Duration::ZERO);
    let mut worst = (0usize, 0.0f64);
    for q in queries {
        let sql = tpch_query(q);
        let (_, rows_a) = time(&apiary, &sql).await;
        let (_, rows_b) = time(&listing, &sql).await;
        assert_eq!(rows_a, rows_b, "q{q}: row counts differ");
        let (mut a, mut b) = (vec![], vec![]);
        for i in 0..runs {
            // Alternate who goes first, so that neither side always runs on a warmer machine.
            if i % 2 == 0 {
                a.push(time(&apiary, &sql).await.0);
                b.push(time(&listing, &sql).await.0);
            } else {
                b.push(time(&listing, &sql).await.0);
                a.push(time(&apiary, &sql).await.0);
            }
        }
        let (ma, mb) = (median(a), median(b));
        let ratio = ms(ma) / ms(mb);
        if ratio > worst.1 {
            worst = (q, ratio);
        }
        total_a += ma;
        total_b += mb;
        println!("| q{q} | {:.1} | {:.1} | {ratio:.3} |", ms(ma), ms(mb));
    }
    println!(
        "| **total** | **{:.1}** | **{:.1}** | **{:.3}** |",
        ms(total_a),
        ms(total_b),
        ms(total_a) / ms(total_b)
    );
    println!("\nhighest ratio: q{} at {:.3}", worst.0, worst.1);
}
