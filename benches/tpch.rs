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

use common::{TPCH_TABLES, arg, arg_or, median, ms, run, time, tpch_apiary, tpch_query};
use datafusion::prelude::SessionContext;

#[tokio::main]
async fn main() {
    let sf = arg("--sf").unwrap_or_else(|| "1".into());
    let runs: usize = arg_or("--runs", 5);
    let queries: Vec<usize> = match arg("--queries") {
        Some(q) => q.split(',').filter_map(|n| n.parse().ok()).collect(),
        None => (1..=22).collect(),
    };
    let (dir, ap) = tpch_apiary(&sf).await;

    // (a) Apiary frames.
    let apiary = ap.session().expect("session");
    run(&apiary, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    run(&apiary, "SET datafusion.catalog.default_schema = 'data'").await;
    // (b) ListingTables over the very same cell files, in a session of their own.
    let listing = SessionContext::new();
    let registry = ap.registry().snapshot();
    run(&listing, "CREATE SCHEMA datafusion.tpch").await;
    run(&listing, "SET datafusion.catalog.default_schema = 'tpch'").await;
    for t in TPCH_TABLES {
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
