//! Row-level changes side by side with delta-rs, in one run: DELETE of 1 row and of 1 % of the
//! rows, UPDATE of 1 %, and MERGE of 10,000 changed rows into a frame of `--rows` rows (default
//! 10 M) in 20 cells, on a local folder. Each run starts from a fresh copy of the same data;
//! reported: the median time and the Parquet bytes each change wrote. The delta-rs side is
//! `benches/row_changes_deltalake.py` (the `deltalake` package, which the harness installs into
//! Apiary's venv, `scripts/lib/venv.sh`).
//!
//! ```text
//! cargo bench --no-default-features --bench row_changes -- [--rows N] [--runs R]
//! ```

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{arg_or, json_of, median, ms, parquet_bytes, repo, run, work_dir};

const CELLS: u64 = 20;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Frame `h.b.t` (id BIGINT, k INT = id % 100, v DOUBLE = id / 2) of `rows` rows in 20 appends.
async fn base(dir: &Path, rows: u64) {
    if dir.join(".complete").exists() {
        return;
    }
    let (_ap, ctx) = common::fresh_hive_box(dir).await;
    run(
        &ctx,
        "CREATE TABLE h.b.t (id BIGINT NOT NULL, k INT NOT NULL, v DOUBLE NOT NULL)",
    )
    .await;
    let per = rows / CELLS;
    for c in 0..CELLS {
        run(
            &ctx,
            &format!(
                "INSERT INTO h.b.t SELECT value, CAST(value % 100 AS INT), value * 0.5 \
                 FROM generate_series({}, {})",
                c * per,
                c * per + per - 1
            ),
        )
        .await;
    }
    std::fs::write(dir.join(".complete"), b"").expect("marker");
}

#[tokio::main]
async fn main() {
    let rows: u64 = arg_or("--rows", 10_000_000);
    let runs: usize = arg_or("--runs", 3);
    let work = work_dir("row-changes");
    let base_dir = work.join(format!("apiary-base-{rows}"));
    base(&base_dir, rows).await;
    let step = rows / 10_000;
    let ops = [
        (
            "DELETE 1 row",
            format!("DELETE FROM h.b.t WHERE id = {}", rows / 2),
        ),
        (
            "DELETE 1 %",
            "DELETE FROM h.b.t WHERE id % 100 = 7".to_string(),
        ),
        (
            "UPDATE 1 %",
            "UPDATE h.b.t SET v = v + 1 WHERE id % 100 = 7".to_string(),
        ),
        (
            "MERGE 10,000",
            format!(
                "MERGE INTO h.b.t AS t USING (SELECT value * {step} AS id, -1.0 AS v \
                 FROM generate_series(0, 9999)) AS s ON t.id = s.id \
                 WHEN MATCHED THEN UPDATE SET v = s.v"
            ),
        ),
    ];
    // The peer, installed into Apiary's venv when it is missing.
    let python = common::peer_python(
        "import deltalake, pyarrow",
        &["deltalake>=1.0", "pyarrow>=14"],
    );
    // One run of `op` on delta-rs: (milliseconds, Parquet bytes written).
    let delta = |op: &str| -> (f64, u64) {
        let mut side = Command::new(&python);
        side.arg(repo().join("benches/row_changes_deltalake.py"))
            .args(["--dir", work.to_str().expect("utf-8")])
            .args(["--rows", &rows.to_string(), "--runs", "1", "--only", op]);
        let v = json_of(&mut side, "the deltalake side");
        let t = v["ms"][0].as_f64().unwrap_or(f64::NAN);
        (t, v["bytes"].as_u64().unwrap_or(0))
    };

    // Interleaved: for each change and run, Apiary on a fresh copy, then delta-rs on one.
    let run_dir = work.join("apiary-run");
    let mut table = vec![];
    for (name, sql) in &ops {
        let (mut times, mut peer) = (vec![], vec![]);
        let (mut written, mut peer_written) = (0, 0);
        for _ in 0..runs {
            let _ = std::fs::remove_dir_all(&run_dir);
            copy_dir(&base_dir, &run_dir);
            let before = parquet_bytes(&run_dir);
            let ap = common::open(&run_dir).await;
            let ctx = ap.session().expect("session");
            let start = Instant::now();
            run(&ctx, sql).await;
            times.push(start.elapsed());
            written = parquet_bytes(&run_dir) - before;
            let (t, b) = delta(name);
            peer.push(Duration::from_secs_f64(t / 1000.0));
            peer_written = b;
        }
        eprintln!(
            "{name}: Apiary {:.0} ms, delta-rs {:.0} ms",
            ms(median(times.clone())),
            ms(median(peer.clone()))
        );
        table.push((name, median(times), median(peer), written, peer_written));
    }
    let _ = std::fs::remove_dir_all(&run_dir);

    println!(
        "\nRow-level changes, {rows} rows in {CELLS} cells, local folder, median of {runs} (ms; MB of Parquet written)\n"
    );
    println!("| change | Apiary | delta-rs | Apiary / delta-rs | Apiary MB | delta-rs MB |");
    println!("|---|---|---|---|---|---|");
    for (name, time, peer, written, peer_written) in &table {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}× | {:.1} | {:.1} |",
            ms(*time),
            ms(*peer),
            ms(*time) / ms(*peer),
            *written as f64 / 1e6,
            *peer_written as f64 / 1e6
        );
    }
}
