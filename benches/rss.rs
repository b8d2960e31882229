//! Peak memory of TPC-H on the bees: every query of TPC-H SF1 in a fresh process, run (a) in a
//! session of 2 bees × 256 MiB (`Apiary::session`, which prefers sort-merge joins under 1 GiB per
//! query), (b) the same with hash joins allowed, and (c) unbounded (a plain DataFusion session
//! with Apiary registered). Each child reports its peak resident set (`VmHWM`) and time; a query
//! that fails is reported as such.
//!
//! ```text
//! cargo bench --bench rss -- [--sf 1] [--queries 1,9,18]
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use apiary::exec::NodeConfig;
use apiary::{Apiary, ApiaryOptions};
use common::{arg, ms, run, stdout_of, tpch_apiary, tpch_query, work_dir};
use datafusion::prelude::SessionContext;

const BEES: usize = 2;
const MIB: u64 = 1024 * 1024;
const BEE_MEMORY: u64 = 256 * MIB;

/// Peak resident set of this process.
fn peak_rss() -> u64 {
    common::proc_status_bytes("self", "VmHWM")
}

/// The child: open the Apiary copy, run one query, print `peak_bytes millis rows`.
async fn child(mode: &str, query: &str, dir: &str) {
    let ctx = if mode.starts_with("bees") {
        let node = NodeConfig::fixed(BEES, BEE_MEMORY, work_dir("rss-scratch"));
        let options = ApiaryOptions {
            node: Some(node),
            ..ApiaryOptions::default()
        };
        let ap = Apiary::open_with(dir, options).await.expect("open");
        ap.session().expect("session")
    } else {
        let ap = Apiary::open(dir).await.expect("open");
        let ctx = SessionContext::new();
        ap.register(&ctx).expect("register");
        ctx
    };
    run(&ctx, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    run(&ctx, "SET datafusion.catalog.default_schema = 'data'").await;
    if mode == "bees-hash" {
        run(&ctx, "SET datafusion.optimizer.prefer_hash_join = true").await;
    }
    let sql = if query == "baseline" {
        "SELECT 1".to_string()
    } else {
        tpch_query(query.parse().expect("query"))
    };
    let start = Instant::now();
    let outcome = match ctx.sql(&sql).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(batches) => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{} {} {rows}", peak_rss(), ms(start.elapsed()));
        }
        Err(e) => println!("{} failed {}", peak_rss(), e.to_string().replace('\n', " ")),
    }
}

/// A child's outcome: peak bytes, then milliseconds and rows, or the error.
struct Outcome {
    peak: u64,
    result: Result<(f64, usize), String>,
}

fn measure(mode: &str, query: &str, dir: &str) -> Outcome {
    let mut child = Command::new(std::env::current_exe().expect("exe"));
    child.args(["--child", mode, "--query", query, "--dir", dir]);
    let text = stdout_of(&mut child, &format!("{mode} q{query}"));
    let (peak, rest) = text.split_once(' ').expect("peak");
    let peak = peak.parse().expect("peak");
    let result = match rest.strip_prefix("failed ") {
        Some(error) => Err(error.to_string()),
        None => {
            let mut parts = rest.split_whitespace();
            let millis = parts.next().and_then(|p| p.parse().ok()).expect("millis");
            let rows = parts.next().and_then(|p| p.parse().ok()).expect("rows");
            Ok((millis, rows))
        }
    };
    Outcome { peak, result }
}

impl Outcome {
    fn cells(&self) -> String {
        match &self.result {
            Ok((ms, _)) => format!("{} | {ms:.0}", self.peak / MIB),
            Err(e) => {
                let short: String = e.chars().take(60).collect();
                format!("{} | failed: {short}…", self.peak / MIB)
            }
        }
    }
}

#[tokio::main]
async fn main() {
    if let Some(mode) = arg("--child") {
        let query = arg("--query").expect("--query");
        let dir = arg("--dir").expect("--dir");
        return child(&mode, &query, &dir).await;
    }
    let sf = arg("--sf").unwrap_or_else(|| "1".into());
    let queries: Vec<String> = match arg("--queries") {
        Some(q) => q.split(',').map(str::to_string).collect(),
        None => (1..=22).map(|q| q.to_string()).collect(),
    };
    let (dir, _ap) = tpch_apiary(&sf).await;
    let dir = dir.to_str().expect("utf-8").to_string();
    let budget = BEES as u64 * BEE_MEMORY;
    let base_bees = measure("bees", "baseline", &dir).peak;
    let base_free = measure("unbounded", "baseline", &dir).peak;
    println!(
        "TPC-H SF{sf}: peak RSS per query, each in a fresh process. Budget of the bounded runs: {BEES} bees × {} MiB = {} MiB.",
        BEE_MEMORY / MIB,
        budget / MIB
    );
    println!(
        "Baseline (open + SELECT 1): {} MiB bounded, {} MiB unbounded.\n",
        base_bees / MIB,
        base_free / MIB
    );
    println!(
        "| query | bees, sort-merge joins: peak RSS (MiB) | time (ms) | bees, hash joins: peak RSS (MiB) | time (ms) | unbounded: peak RSS (MiB) | time (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut worst_over = 0i64;
    for q in &queries {
        let smj = measure("bees", q, &dir);
        let hash = measure("bees-hash", q, &dir);
        let free = measure("unbounded", q, &dir);
        if let (Ok((_, a)), Ok((_, b))) = (&smj.result, &free.result) {
            assert_eq!(a, b, "q{q}: row counts differ");
        }
        worst_over = worst_over.max(smj.peak as i64 - budget as i64 - base_bees as i64);
        println!(
            "| q{q} | {} | {} | {} |",
            smj.cells(),
            hash.cells(),
            free.cells()
        );
    }
    println!(
        "\nlargest excess of a sort-merge bounded run over budget + baseline: {} MiB",
        worst_over / MIB as i64
    );
}
