//! Writes side by side, in one run: `--rows` rows (default 5 M: id BIGINT, k INT in no order,
//! v DOUBLE) from one Parquet file, written by Apiary's `INSERT … SELECT` (what `apiary import`
//! runs) into a plain frame and into a frame clustered `WITH ORDER (k)`, by DuckDB's `COPY … TO
//! parquet`, by delta-rs's `write_deltalake` and by the wheel's `write_to_frame`
//! (`benches/writes_peers.py`, run with Apiary's venv, into which the harness installs `duckdb`
//! and `deltalake`, and — when that way is chosen — a release build of the wheel, `maturin
//! develop --release`). Interleaved runs; reported: the median time, the ratios against each
//! peer, and the Parquet bytes written.
//!
//! ```text
//! cargo bench --no-default-features --bench writes -- [--rows N] [--runs R]
//! ```

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{arg, arg_or, json_of, median, parquet_bytes, repo, run, work_dir};
use datafusion::prelude::SessionContext;

/// The source file, made once per row count with DataFusion.
async fn source(dir: &Path, rows: u64) -> std::path::PathBuf {
    let file = dir.join(format!("source-{rows}.parquet"));
    if !file.exists() {
        let ctx = SessionContext::new();
        let tmp = dir.join("source.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        run(
            &ctx,
            &format!(
                "COPY (SELECT value AS id, CAST((value * 7919) % 1000 AS INT) AS k, \
                 value * 0.5 AS v FROM generate_series(1, {rows})) TO '{}' \
                 STORED AS PARQUET",
                tmp.display()
            ),
        )
        .await;
        std::fs::rename(&tmp, &file).expect("rename");
    }
    file
}

/// One Apiary write of `src` into a fresh frame (`order`: its `WITH ORDER`): time, bytes.
async fn apiary_write(dir: &Path, src: &Path, order: &str) -> (Duration, u64) {
    let (ap, ctx) = common::fresh_hive_box(dir).await;
    run(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k INT NOT NULL, v DOUBLE NOT NULL) \
             STORED AS APIARY {order} LOCATION ''"
        ),
    )
    .await;
    run(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE src STORED AS PARQUET LOCATION '{}'",
            src.display()
        ),
    )
    .await;
    let start = Instant::now();
    ap.sql(&ctx, "INSERT INTO h.b.t SELECT id, k, v FROM src")
        .await
        .expect("insert")
        .collect()
        .await
        .expect("insert");
    let took = start.elapsed();
    (took, parquet_bytes(dir))
}

/// Installs a release build of the wheel into the venv of `python` (the tests install a debug
/// one, which would not be a fair peer). The build runs without the variables `cargo bench`
/// gave this process (`CARGO_*`, `LD_LIBRARY_PATH`, …): with them Cargo judged every crate
/// changed and rebuilt the wheel's whole tree, 36 minutes, on every run.
fn release_wheel(python: &str) {
    let venv = Path::new(python)
        .parent()
        .and_then(Path::parent)
        .expect("the venv of its python");
    let mut maturin = Command::new(venv.join("bin/maturin"));
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("CARGO_")
            || ["LD_LIBRARY_PATH", "RUST_RECURSION_COUNT"].contains(&key_text.as_ref())
        {
            maturin.env_remove(&key);
        }
    }
    let built = maturin
        .args([
            "develop",
            "--release",
            "--manifest-path",
            "python/Cargo.toml",
        ])
        .env("VIRTUAL_ENV", venv)
        .current_dir(repo())
        .status()
        .expect("run maturin");
    assert!(built.success(), "maturin develop --release failed");
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let rows: u64 = arg_or("--rows", 5_000_000);
    let runs: usize = arg_or("--runs", 5);
    let work = work_dir("writes");
    let src = source(&work, rows).await;
    let python = common::peer_python(
        "import importlib.metadata as m, deltalake, duckdb, pyarrow; m.version(\"maturin\")",
        &[
            "deltalake>=1.0",
            "duckdb>=1.4,<3",
            "pyarrow>=14",
            "maturin>=1.9,<2",
        ],
    );
    let peer = |way: &str| -> (Duration, u64) {
        let mut side = Command::new(&python);
        side.arg(repo().join("benches/writes_peers.py"))
            .args(["--source", src.to_str().expect("utf-8")])
            .args(["--out", work.join(way).to_str().expect("utf-8")])
            .args(["--way", way]);
        let v = json_of(&mut side, way);
        let ms = v["ms"].as_f64().unwrap_or(f64::NAN);
        (
            Duration::from_secs_f64(ms / 1000.0),
            v["bytes"].as_u64().unwrap_or(0),
        )
    };
    let ways = [
        "Apiary INSERT … SELECT",
        "Apiary, clustered WITH ORDER (k)",
        "DuckDB COPY",
        "delta-rs write_deltalake",
        "Apiary Python write_to_frame",
    ];
    let mut times: Vec<Vec<Duration>> = vec![vec![]; ways.len()];
    let mut bytes = vec![0u64; ways.len()];
    // `--ways 0,2`: only these (by their index in the table), e.g. to profile one.
    let chosen: Vec<usize> = arg("--ways")
        .map(|w| w.split(',').filter_map(|i| i.parse().ok()).collect())
        .unwrap_or_else(|| (0..ways.len()).collect());
    if chosen.contains(&4) {
        release_wheel(&python);
    }
    for _ in 0..runs {
        for (i, _) in ways.iter().enumerate().filter(|(i, _)| chosen.contains(i)) {
            let (t, b) = match i {
                0 => apiary_write(&work.join("apiary"), &src, "").await,
                1 => apiary_write(&work.join("apiary"), &src, "WITH ORDER (k)").await,
                2 => peer("duckdb"),
                3 => peer("deltalake"),
                _ => peer("apiary"),
            };
            times[i].push(t);
            bytes[i] = b;
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let (duck, delta) = (medians[2].as_secs_f64(), medians[3].as_secs_f64());
    println!("## Writes: {rows} rows from one Parquet file ({runs} runs interleaved, median)\n");
    println!("| way | median (s) | vs DuckDB | vs delta-rs | Parquet MiB written |");
    println!("|---|---:|---:|---:|---:|");
    for (i, way) in ways.iter().enumerate().filter(|(i, _)| chosen.contains(i)) {
        let t = medians[i].as_secs_f64();
        println!(
            "| {way} | {t:.2} | {:.2}× | {:.2}× | {:.1} |",
            t / duck,
            t / delta,
            bytes[i] as f64 / (1 << 20) as f64
        );
    }
}
