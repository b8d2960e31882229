//! Shared by the side-by-side harnesses: timing, medians, data, result tables.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::catalog::{FrameSpec, IfExists, Leafcutter, SortKey, SortOrder};
use apiary::{Apiary, ApiaryOptions};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `--name value` from the command line (cargo bench passes `--bench`, which is ignored).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Whether the flag `name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The folder of TPC-H Parquet files at scale factor `sf` (`scripts/tpch-data`).
pub fn tpch_data(sf: &str) -> PathBuf {
    let mut script = Command::new(repo().join("scripts/tpch-data"));
    PathBuf::from(stdout_of(script.arg(sf), "scripts/tpch-data"))
}

/// The output of `command`, run to its end, trimmed; a failure panics naming `what`, with its
/// error output.
pub fn stdout_of(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The JSON object `command` prints (see [`stdout_of`]).
pub fn json_of(command: &mut Command, what: &str) -> serde_json::Value {
    serde_json::from_str(&stdout_of(command, what)).expect("json")
}

/// Makes the S3 test server available when no S3 is configured; returns whether this run
/// started it (and so must stop it again).
pub fn ensure_s3() -> bool {
    if std::env::var("APIARY_TEST_S3_URL").is_ok() {
        return false;
    }
    let script = repo().join("scripts/s3-test-server");
    let already = Command::new(&script)
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success());
    let env_file = stdout_of(Command::new(&script).arg("start"), "s3-test-server");
    let env = std::fs::read_to_string(env_file).expect("env file");
    for line in env.lines() {
        if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
            // SAFETY: single-threaded at this point of main, before any child or task starts.
            unsafe { std::env::set_var(k, v.trim_matches('"').trim_matches('\'')) };
        }
    }
    !already
}

/// Stops the S3 test server (one [`ensure_s3`] started).
pub fn stop_s3() {
    let _ = Command::new(repo().join("scripts/s3-test-server"))
        .arg("stop")
        .status();
}

/// Where harnesses keep what they build (kept between runs).
pub fn work_dir(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let dir = target.join("apiary-bench").join(name);
    std::fs::create_dir_all(&dir).expect("bench work dir");
    dir
}

/// The batches of `sql` (a failure panics, naming the statement).
pub async fn collect(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn run(ctx: &SessionContext, sql: &str) -> usize {
    collect(ctx, sql).await.iter().map(|b| b.num_rows()).sum()
}

pub async fn time(ctx: &SessionContext, sql: &str) -> (Duration, usize) {
    let start = Instant::now();
    let rows = run(ctx, sql).await;
    (start.elapsed(), rows)
}

pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    let n = xs.len();
    if n == 0 {
        return Duration::ZERO;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The query texts of `tests/data/tpch/q{n}.slt.part`.
pub fn tpch_query(n: usize) -> String {
    let file = std::fs::read_to_string(repo().join(format!("tests/data/tpch/q{n}.slt.part")))
        .expect("query file");
    let body = &file[file.find("\nquery ").expect("query") + 1..];
    let body = &body[body.find('\n').unwrap_or(0) + 1..];
    body[..body.find("\n----").expect("answer")]
        .trim()
        .trim_end_matches(';')
        .to_string()
}

/// Recursively sums the size of the files below `dir`.
pub fn du(dir: &Path) -> u64 {
    size_of_files(dir, &|_| true)
}

/// The bytes of the Parquet files below `dir`.
pub fn parquet_bytes(dir: &Path) -> u64 {
    size_of_files(dir, &|p| p.extension().is_some_and(|x| x == "parquet"))
}

/// Recursively sums the size of the files below `dir` that `keep` accepts.
fn size_of_files(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        size_of_files(&p, keep)
                    } else if keep(&p) {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    } else {
                        0
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

pub const TPCH_TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// The Apiary copy of TPC-H at scale factor `sf` (hive `tpch`, box `data`, one frame per table,
/// loaded with `INSERT INTO … SELECT` from `scripts/tpch-data`), built once into
/// `target/apiary-bench/tpch-sf{sf}-rg{N}` (N: the row-group rows it was written with) and
/// reused; with its folder.
pub async fn tpch_apiary(sf: &str) -> (PathBuf, Apiary) {
    tpch_apiary_clustered(sf, &[]).await
}

/// [`tpch_apiary`] with the frames of `clustered` (table, column) declared sorted by that
/// column, as a user would: `lineitem` by `l_shipdate`, `orders` by `o_orderdate`. Each set of
/// declarations is its own copy (`tpch-sf{sf}-by-l_shipdate-…-rg{N}`).
pub async fn tpch_apiary_clustered(sf: &str, clustered: &[(&str, &str)]) -> (PathBuf, Apiary) {
    tpch_apiary_written(sf, clustered, None).await
}

/// [`tpch_apiary_clustered`] with cells whose row groups hold at most `row_group_rows` rows
/// (`None`: Apiary's default); each size its own copy, `…-rg{N}`.
pub async fn tpch_apiary_written(
    sf: &str,
    clustered: &[(&str, &str)],
    row_group_rows: Option<usize>,
) -> (PathBuf, Apiary) {
    let name = clustered
        .iter()
        .fold(format!("tpch-sf{sf}"), |n, (_, c)| format!("{n}-by-{c}"));
    // A copy per row-group size, so a change of Apiary's default writes a fresh one.
    let name = format!(
        "{name}-rg{}",
        row_group_rows.unwrap_or(Leafcutter::ROW_GROUP_ROWS)
    );
    let dir = work_dir(&name);
    let complete = dir.join(".complete");
    let open_written = async |dir: &Path| match row_group_rows {
        Some(rows) => {
            let mut options = ApiaryOptions::default();
            options.catalog.write.leafcutter = Leafcutter::default().with_row_group_rows(rows);
            Apiary::open_with(dir.to_str().expect("utf-8"), options)
                .await
                .expect("open")
        }
        None => open(dir).await,
    };
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let data = tpch_data(sf);
        let ap = open_written(&dir).await;
        let ctx = ap.session().expect("session");
        create_box(&ctx, "tpch", "data").await;
        for t in TPCH_TABLES {
            let start = Instant::now();
            let src = format!("{}/{t}.parquet", data.display());
            run(
                &ctx,
                &format!("CREATE EXTERNAL TABLE src_{t} STORED AS PARQUET LOCATION '{src}'"),
            )
            .await;
            match clustered.iter().find(|(table, _)| *table == t) {
                Some((_, column)) => {
                    let schema = ctx.table(format!("src_{t}")).await.expect("source");
                    let spec = FrameSpec::new(Arc::new(schema.schema().as_arrow().clone()))
                        .with_sort_order(&SortOrder::new(vec![SortKey::asc(*column)]));
                    ap.registry()
                        .create_frame("tpch", "data", t, &spec, IfExists::Fail)
                        .await
                        .expect("create a clustered frame");
                }
                None => {
                    run(
                        &ctx,
                        &format!("CREATE TABLE tpch.data.{t} AS SELECT * FROM src_{t} LIMIT 0"),
                    )
                    .await;
                }
            }
            run(
                &ctx,
                &format!("INSERT INTO tpch.data.{t} SELECT * FROM src_{t}"),
            )
            .await;
            eprintln!("loaded {t} in {:.1} s", start.elapsed().as_secs_f64());
        }
        std::fs::write(&complete, b"").expect("marker");
    }
    let ap = open(&dir).await;
    (dir, ap)
}

/// A size field of `/proc/{pid}/status` (`VmRSS`, `VmHWM`, …) in bytes; `pid` may be `self`.
pub fn proc_status_bytes(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The venv's Python (`$APIARY_VENV`, else `~/.cache/apiary/venv`), with `packages` installed
/// into it first when `check` (a Python import statement) fails — the peers of a harness.
pub fn peer_python(check: &str, packages: &[&str]) -> String {
    let quoted: Vec<String> = packages.iter().map(|p| format!("'{p}'")).collect();
    let installed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source scripts/lib/venv.sh && venv_install '{check}' {}",
            quoted.join(" ")
        ))
        .current_dir(repo())
        .status()
        .expect("bash");
    assert!(
        installed.success(),
        "installing {packages:?} into the venv failed"
    );
    std::env::var("APIARY_VENV")
        .map(|v| format!("{v}/bin/python"))
        .unwrap_or_else(|_| {
            format!(
                "{}/.cache/apiary/venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        })
}

/// A fresh Apiary in `dir` (whatever was there removed) with hive `h` and box `h.b`, and a
/// session on its bees.
pub async fn fresh_hive_box(dir: &Path) -> (Apiary, SessionContext) {
    let _ = std::fs::remove_dir_all(dir);
    let ap = open(dir).await;
    let ctx = ap.session().expect("session");
    create_box(&ctx, "h", "b").await;
    (ap, ctx)
}

/// Apiary on the folder `dir`.
pub async fn open(dir: &Path) -> Apiary {
    Apiary::open(dir.to_str().expect("utf-8"))
        .await
        .expect("open")
}

/// Creates hive `hive` and its box `{hive}.{name}`.
pub async fn create_box(ctx: &SessionContext, hive: &str, name: &str) {
    run(ctx, &format!("CREATE DATABASE {hive}")).await;
    run(ctx, &format!("CREATE SCHEMA {hive}.{name}")).await;
}
