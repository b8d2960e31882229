//! TPC-H side by side, every side in one run, interleaved query by query:
//!
//! - `clustered`: Apiary frames with `lineitem` declared sorted by `l_shipdate` and `orders` by
//!   `o_orderdate` (as a user would declare them);
//! - `apiary`: the same data in plain frames;
//! - `listing`: DataFusion `ListingTable`s over the generator's Parquet files;
//! - `duckdb`: DuckDB over the same generator files, in a Python process of its own that times
//!   each query itself (`benches/tpch_duckdb.py`);
//! - `tuned`: the plain frames in a session with the `--set` settings, or a copy of them whose
//!   row groups hold at most `--row-group-rows` rows (how the defaults were chosen: compare it
//!   with `apiary`); `tuned-clustered`: the clustered frames with the `--set` settings.
//!
//! Per query: one warm-up each, whose answers are checked against `listing`'s (row by row,
//! numbers to a relative 1e-6), then the runs, rotating who goes first. The table gives the
//! medians and the first side's ratio to each other side.
//!
//! ```text
//! cargo bench --no-default-features --bench tpch -- [--sf 1] [--runs 5] [--queries 1,6,14]
//!     [--sides clustered,apiary,listing,duckdb] [--set datafusion.x.y=value,…]
//!     (other sides: tuned, tuned-clustered)
//!     [--row-group-rows N] [--analyze]
//! ```
//!
//! `--analyze` prints each session side's `EXPLAIN ANALYZE` of each query after its runs (to
//! standard error), to see where two sides' times part.
//!
//! The data comes from `scripts/tpch-data SF`; the Apiary copies are built once into
//! `target/apiary-bench/` and reused.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{
    TPCH_TABLES, arg, arg_or, collect, median, ms, peer_python, repo, run, tpch_apiary,
    tpch_apiary_clustered, tpch_apiary_written, tpch_data, tpch_query,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;

/// A query's answer as text, row by row (nulls as `NULL`).
type Rows = Vec<Vec<String>>;

enum Side {
    Session(SessionContext),
    DuckDb(DuckDb),
}

impl Side {
    /// Runs `sql` once: its time, and its answer when `rows`.
    async fn run(&mut self, sql: &str, rows: bool) -> (Duration, Option<Rows>) {
        match self {
            Side::Session(ctx) => {
                let start = std::time::Instant::now();
                let batches = collect(ctx, sql).await;
                let took = start.elapsed();
                (took, rows.then(|| text_rows(&batches)))
            }
            Side::DuckDb(duck) => duck.run(sql, rows),
        }
    }
}

/// The DuckDB peer process.
struct DuckDb {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl DuckDb {
    fn start(data: &Path) -> Self {
        let python = peer_python("import duckdb", &["duckdb", "pyarrow"]);
        let mut child = Command::new(python)
            .arg(repo().join("benches/tpch_duckdb.py"))
            .arg("--data")
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the DuckDB peer");
        let input = child.stdin.take().expect("stdin");
        let mut output = BufReader::new(child.stdout.take().expect("stdout"));
        let ready = read_reply(&mut output);
        eprintln!("DuckDB {}", ready["ready"]);
        Self {
            child,
            input,
            output,
        }
    }

    fn run(&mut self, sql: &str, rows: bool) -> (Duration, Option<Rows>) {
        let request = serde_json::json!({ "sql": sql, "rows": rows });
        writeln!(self.input, "{request}").expect("write to the DuckDB peer");
        let reply = read_reply(&mut self.output);
        let took = Duration::from_secs_f64(reply["ms"].as_f64().expect("ms") / 1000.0);
        let answer = reply.get("rows").map(|rows| {
            serde_json::from_value::<Rows>(rows.clone()).expect("rows are lists of strings")
        });
        (took, answer)
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_reply(output: &mut impl BufRead) -> serde_json::Value {
    let mut line = String::new();
    output.read_line(&mut line).expect("read the DuckDB peer");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("DuckDB peer said {line:?}: {e}"))
}

fn text_rows(batches: &[RecordBatch]) -> Rows {
    let mut rows = vec![];
    for batch in batches {
        for r in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            array_value_to_string(c, r).unwrap_or_else(|e| format!("<{e}>"))
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// Whether two answers agree: the same rows in the same order; numbers to a relative 1e-6
/// (DuckDB averages in doubles where DataFusion keeps decimals).
fn same_answer(a: &Rows, b: &Rows) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} rows against {}", a.len(), b.len()));
    }
    for (i, (ra, rb)) in a.iter().zip(b).enumerate() {
        let same = ra.len() == rb.len()
            && ra.iter().zip(rb).all(|(x, y)| {
                x == y
                    || match (x.parse::<f64>(), y.parse::<f64>()) {
                        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
                        _ => false,
                    }
            });
        if !same {
            return Err(format!("row {i}: {ra:?} against {rb:?}"));
        }
    }
    Ok(())
}

/// A session over `ap`'s frames with `tpch.data` as the default schema and `settings` applied.
async fn apiary_session(ap: &apiary::Apiary, settings: &[String]) -> SessionContext {
    let ctx = ap.session().expect("session");
    run(&ctx, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    run(&ctx, "SET datafusion.catalog.default_schema = 'data'").await;
    for s in settings {
        let (key, value) = s.split_once('=').expect("--set takes key=value");
        run(&ctx, &format!("SET {key} = '{value}'")).await;
    }
    ctx
}

#[tokio::main]
async fn main() {
    let sf = arg("--sf").unwrap_or_else(|| "1".into());
    let runs: usize = arg_or("--runs", 5);
    let queries: Vec<usize> = match arg("--queries") {
        Some(q) => q.split(',').filter_map(|n| n.parse().ok()).collect(),
        None => (1..=22).collect(),
    };
    let names: Vec<String> = arg("--sides")
        .unwrap_or_else(|| "clustered,apiary,listing,duckdb".into())
        .split(',')
        .map(String::from)
        .collect();
    let settings: Vec<String> = arg("--set")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_default();
    let data = tpch_data(&sf);

    let mut sides = vec![];
    let mut keep = vec![];
    for name in &names {
        let side = match name.as_str() {
            "apiary" => {
                let (_, ap) = tpch_apiary(&sf).await;
                let ctx = apiary_session(&ap, &[]).await;
                keep.push(ap);
                Side::Session(ctx)
            }
            "tuned" => {
                let rows = arg("--row-group-rows").map(|n| n.parse().expect("--row-group-rows N"));
                let (_, ap) = tpch_apiary_written(&sf, &[], rows).await;
                let ctx = apiary_session(&ap, &settings).await;
                keep.push(ap);
                Side::Session(ctx)
            }
            "clustered" | "tuned-clustered" => {
                let by = [("lineitem", "l_shipdate"), ("orders", "o_orderdate")];
                let (_, ap) = tpch_apiary_clustered(&sf, &by).await;
                let set: &[String] = if name == "clustered" { &[] } else { &settings };
                let ctx = apiary_session(&ap, set).await;
                keep.push(ap);
                Side::Session(ctx)
            }
            "listing" => {
                let ctx = SessionContext::new();
                for t in TPCH_TABLES {
                    let file = data.join(format!("{t}.parquet"));
                    let sql = format!(
                        "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{}'",
                        file.display()
                    );
                    run(&ctx, &sql).await;
                }
                Side::Session(ctx)
            }
            "duckdb" => Side::DuckDb(DuckDb::start(&data)),
            other => panic!(
                "unknown side {other}: clustered, apiary, tuned, tuned-clustered, listing, duckdb"
            ),
        };
        sides.push(side);
    }
    let reference = names.iter().position(|n| n == "listing");

    println!("TPC-H SF{sf}, {runs} runs per side after one warm-up, medians (ms)");
    if !settings.is_empty() {
        println!("tuned: {}", settings.join(", "));
    }
    if let Some(rows) = arg("--row-group-rows") {
        println!("tuned: row groups of at most {rows} rows");
    }
    println!();
    let ratios: Vec<String> = names[1..]
        .iter()
        .map(|n| format!("{} ÷ {n}", names[0]))
        .collect();
    println!("| query | {} | {} |", names.join(" | "), ratios.join(" | "));
    println!("|---|{}", "---:|".repeat(names.len() * 2 - 1));
    let mut totals = vec![Duration::ZERO; sides.len()];
    for q in queries {
        let sql = tpch_query(q);
        let mut answers = vec![];
        for side in &mut sides {
            answers.push(side.run(&sql, true).await.1.unwrap_or_default());
        }
        if let Some(r) = reference {
            for (name, answer) in names.iter().zip(&answers) {
                if let Err(e) = same_answer(answer, &answers[r]) {
                    panic!("q{q}: {name}'s answer differs from listing's: {e}");
                }
            }
        }
        let mut times = vec![vec![]; sides.len()];
        for i in 0..runs {
            // Rotate who goes first, so that no side always runs on a warmer machine.
            for k in 0..sides.len() {
                let s = (i + k) % sides.len();
                times[s].push(sides[s].run(&sql, false).await.0);
            }
        }
        if common::flag("--analyze") {
            for (name, side) in names.iter().zip(&sides) {
                if let Side::Session(ctx) = side {
                    let batches = collect(ctx, &format!("EXPLAIN ANALYZE {sql}")).await;
                    eprintln!(
                        "q{q} on {name}:\n{}",
                        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                            .expect("text")
                    );
                }
            }
        }
        let medians: Vec<Duration> = times.into_iter().map(median).collect();
        for (total, m) in totals.iter_mut().zip(&medians) {
            *total += *m;
        }
        print_row(&format!("q{q}"), &medians);
    }
    print_row("**total**", &totals);
}

fn print_row(label: &str, medians: &[Duration]) {
    let cells: Vec<String> = medians.iter().map(|m| format!("{:.1}", ms(*m))).collect();
    let ratios: Vec<String> = medians[1..]
        .iter()
        .map(|m| format!("{:.3}", ms(medians[0]) / ms(*m)))
        .collect();
    println!(
        "| {label} | {} | {} |",
        cells.join(" | "),
        ratios.join(" | ")
    );
}
