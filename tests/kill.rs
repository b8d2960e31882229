//! `kill -9` of a writer at a random moment, again and again: a streaming multi-cell
//! `INSERT … SELECT` in an `apiary` process killed before, during or after its commit. After
//! every kill `apiary check` passes, every row committed before is there (and the killed insert's
//! rows are there whole or not at all), and a forced cleanse leaves exactly the live cells.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use rand::{Rng, SeedableRng};

use apiary_catalog::testing::s3_url;

use crate::support::{apiary, csv_out, ok};

const KILLS: usize = 30;
/// Rows per insert: with 64 MiB bees (8 MiB cells) about three cells.
const ROWS: u64 = 3_000_000;

/// The count of rows and the ledger version of `h.b.t`.
fn state(storage: &str) -> (u64, u64) {
    let line = first_row(
        storage,
        "SELECT (SELECT count(*) FROM h.b.t) AS n, (SELECT max(version) FROM apiary_history('h.b.t')) AS v",
    )
    .unwrap_or_default();
    let (n, v) = line.split_once(',').unwrap_or(("0", "0"));
    (n.parse().unwrap(), v.parse().unwrap())
}

/// The frame's objects, as `apiary_cells` and a listing see them: (active cells, cell objects).
fn cells(storage: &str) -> (u64, u64) {
    let active = first_row(storage, "SELECT count(*) FROM apiary_cells('h.b.t')");
    let active = active.as_deref().unwrap_or("0").parse().unwrap();
    let listed = list_cells(storage);
    (active, listed)
}

/// The first row of `sql`'s CSV output, if any.
fn first_row(storage: &str, sql: &str) -> Option<String> {
    let out = csv_out(storage, &["-c", sql]);
    out.lines().nth(1).map(str::to_string)
}

fn list_cells(storage: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let meadow = apiary_catalog::Meadow::open(storage).await.unwrap();
        meadow
            .list("h")
            .await
            .unwrap()
            .iter()
            .filter(|o| o.location.as_ref().ends_with(".parquet"))
            .count() as u64
    })
}

fn kill_loop(storage: &str, seed: u64) {
    ok(&apiary(
        storage,
        &[
            "-q",
            "-c",
            "CREATE DATABASE h",
            "CREATE SCHEMA h.b",
            "CREATE TABLE h.b.t (n BIGINT NOT NULL)",
        ],
    ));
    let insert = |base: u64| {
        format!("INSERT INTO h.b.t SELECT value + {base} FROM generate_series(1, {ROWS})")
    };
    let spawn = |base: u64| {
        Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["--storage", storage, "-m", "64M", "--bees", "1", "-q", "-c"])
            .arg(insert(base))
            .env_remove("APIARY_STORAGE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start apiary")
    };
    // One insert to its end: how long one takes here, now.
    let start = Instant::now();
    assert!(spawn(0).wait().unwrap().success());
    let full = start.elapsed();
    let (mut rows, mut version) = state(storage);
    assert_eq!(rows, ROWS);

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut before, mut during, mut after) = (0, 0, 0);
    for k in 1..=KILLS as u64 {
        let mut child = spawn(k * ROWS);
        let at = full.mul_f64(rng.random_range(0.0..1.3));
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        let (now_rows, now_version) = state(storage);
        let (_, listed) = cells(storage);
        if now_version > version {
            assert_eq!(
                now_rows,
                rows + ROWS,
                "{storage}: kill {k}: the insert landed whole"
            );
            after += 1;
        } else {
            assert_eq!(
                now_rows, rows,
                "{storage}: kill {k}: nothing of the insert is visible"
            );
            let (active, _) = cells(storage);
            if listed > active {
                during += 1;
            } else {
                before += 1;
            }
        }
        rows = now_rows;
        version = now_version;
        let out = ok(&apiary(storage, &["check"]));
        assert!(out.contains(": ok"), "{storage}: kill {k}: {out}");
        // A forced cleanse leaves exactly the live cells.
        ok(&apiary(
            storage,
            &[
                "-q",
                "-c",
                "SELECT count(*) FROM apiary_cleanse('*', 0, false, true)",
            ],
        ));
        let (active, listed) = cells(storage);
        assert_eq!(
            listed, active,
            "{storage}: kill {k}: leftovers after a forced cleanse"
        );
        if let Some(dir) = storage.strip_prefix("file://") {
            assert_eq!(staging_files(Path::new(dir)), 0, "{storage}: kill {k}");
        }
    }
    println!(
        "{storage}: {KILLS} kills of a {ROWS}-row insert (one takes {full:?}): {before} before its cells, {during} during (cells written, no commit), {after} after the commit; {rows} rows, all there"
    );
}

fn staging_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += staging_files(&p);
        } else if p.to_string_lossy().contains('#') {
            n += 1;
        }
    }
    n
}

#[test]
fn kill_9_of_a_writer_loses_nothing_local() {
    let dir = tempfile::tempdir().unwrap();
    kill_loop(&format!("file://{}", dir.path().display()), 9);
}

#[test]
fn kill_9_of_a_writer_loses_nothing_s3() {
    kill_loop(&s3_url(), 99);
}
