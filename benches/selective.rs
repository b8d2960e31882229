//! A selective scan of a frame with thousands of cells, side by side: Apiary (cells chosen from
//! the ledger) and DataFusion's ListingTable over the same files (which lists the folder and reads
//! every footer). Measured cold — the first query of a fresh process, including opening — and
//! warm, on a local folder and on the S3 test server.
//!
//! ```text
//! cargo bench --bench selective -- [--cells 2000] [--runs 5] [--stores local,s3]
//! ```
//!
//! For S3 it uses the server of `scripts/s3-test-server` (started, and stopped again, when
//! `APIARY_TEST_S3_URL` is not set).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiary::Apiary;
use apiary::catalog::testing::Counting;
use apiary::catalog::{IoRuntime, Leafcutter, StoreLayer, WriteOptions};
use common::{arg, arg_or, create_box, median, ms, run, stdout_of, work_dir};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::object_store::ObjectStore;
use datafusion::prelude::SessionContext;

const ROWS_PER_CELL: i64 = 1000;

/// ~1 % of the cells: 20 of 2000 (ids are ascending across cells).
fn query(cells: i64) -> String {
    let lo = cells / 2 * ROWS_PER_CELL;
    let hi = lo + cells / 100 * ROWS_PER_CELL - 1;
    format!("SELECT count(*), sum(v) FROM t WHERE id BETWEEN {lo} AND {hi}")
}

fn batch(cell: i64) -> RecordBatch {
    let ids = cell * ROWS_PER_CELL..(cell + 1) * ROWS_PER_CELL;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
        Field::new("note", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|i| (i % 1000) as f64 / 7.0),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.map(|i| format!("event {i}")),
            )),
        ],
    )
    .expect("batch")
}

/// Writes frame `sel.data.t` with `cells` cells of 1,000 rows (one commit); returns its folder
/// below the meadow root.
async fn build(url: &str, cells: i64) -> String {
    let ap = Apiary::open(url).await.expect("open");
    let ctx = ap.session().expect("session");
    create_box(&ctx, "sel", "data").await;
    run(
        &ctx,
        "CREATE TABLE sel.data.t (id BIGINT NOT NULL, v DOUBLE NOT NULL, note VARCHAR NOT NULL)",
    )
    .await;
    let frame = ap
        .providers()
        .frame("sel", "data", "t")
        .await
        .expect("frame")
        .expect("exists");
    let frame = apiary::catalog::Frame::new(
        frame.ledger().clone(),
        WriteOptions::default()
            .with_leafcutter(Leafcutter::default().with_target_cell_bytes(1 << 30)),
    );
    let read = frame.ledger().latest();
    let mut all = vec![];
    for c in 0..cells {
        let written = frame
            .cell_writer(&read)
            .expect("writer")
            .write_stream(futures::stream::iter([Ok::<
                _,
                apiary::catalog::CatalogError,
            >(batch(c))]))
            .await
            .expect("cell");
        all.extend(written);
    }
    frame
        .commit_cells(&read, "LOAD", all, false)
        .await
        .expect("commit");
    ap.registry()
        .snapshot()
        .frame("sel", "data", "t")
        .expect("frame")
        .location
        .clone()
}

/// The child process of a cold measurement: open, query once, print the milliseconds.
async fn cold_child(side: &str, url: &str, listing: &str, cells: i64) {
    let start = Instant::now();
    let ctx = if side == "apiary" {
        let ap = Apiary::open(url).await.expect("open");
        let ctx = ap.session().expect("session");
        run(&ctx, "SET datafusion.catalog.default_catalog = 'sel'").await;
        run(&ctx, "SET datafusion.catalog.default_schema = 'data'").await;
        ctx
    } else {
        listing_session(url, listing, None).await
    };
    run(&ctx, &query(cells)).await;
    println!("{}", start.elapsed().as_secs_f64() * 1000.0);
}

/// A plain session with a ListingTable `t` over `listing` (explicit schema: no inference),
/// its store counted by `counted`.
async fn listing_session(url: &str, listing: &str, counted: Option<&Counted>) -> SessionContext {
    let ctx = SessionContext::new();
    let meadow = apiary::catalog::Meadow::open(url).await.expect("meadow");
    let store = match counted {
        Some(c) => c.layer()(Arc::clone(meadow.store())),
        None => Arc::clone(meadow.store()),
    };
    ctx.register_object_store(
        &url::Url::parse(meadow.object_store_url().as_str()).expect("url"),
        store,
    );
    run(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t (id BIGINT NOT NULL, v DOUBLE NOT NULL, note VARCHAR NOT NULL)
             STORED AS PARQUET LOCATION '{listing}'"
        ),
    )
    .await;
    ctx
}

fn cold(side: &str, url: &str, listing: &str, cells: i64) -> Duration {
    let mut child = Command::new(std::env::current_exe().expect("exe"));
    child.args(["--cold", side, "--url", url, "--listing", listing]);
    child.args(["--cells", &cells.to_string()]);
    let millis: f64 = stdout_of(&mut child, &format!("the {side} side, cold"))
        .parse()
        .expect("milliseconds");
    Duration::from_secs_f64(millis / 1000.0)
}

#[tokio::main]
async fn main() {
    let cells: i64 = arg_or("--cells", 2000);
    if let Some(side) = arg("--cold") {
        let url = arg("--url").expect("--url");
        let listing = arg("--listing").expect("--listing");
        return cold_child(&side, &url, &listing, cells).await;
    }
    let runs: usize = arg_or("--runs", 5);
    let stores = arg("--stores").unwrap_or_else(|| "local,s3".into());
    println!(
        "Selective scan: {cells} cells of {ROWS_PER_CELL} rows, a predicate matching {} cells; medians of {runs} (ms)\n",
        cells / 100
    );
    println!("| store | case | Apiary | ListingTable | ratio |");
    println!("|---|---|---:|---:|---:|");
    let mut started_s3 = false;
    let mut warm_calls = vec![];
    for store in stores.split(',') {
        let (url, listing_root) = match store {
            "local" => {
                let dir = work_dir("selective");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("dir");
                let url = dir.to_str().expect("utf-8").to_string();
                (url.clone(), url)
            }
            "s3" => {
                started_s3 |= common::ensure_s3();
                let base = std::env::var("APIARY_TEST_S3_URL").expect("S3 url");
                let url = format!("{base}/bench-{}", uuid::Uuid::new_v4().simple());
                (url.clone(), url)
            }
            other => panic!("unknown store {other}"),
        };
        let location = build(&url, cells).await;
        let listing = format!("{listing_root}/{location}/");
        let (mut ca, mut cb) = (vec![], vec![]);
        for _ in 0..runs {
            ca.push(cold("apiary", &url, &listing, cells));
            cb.push(cold("listing", &url, &listing, cells));
        }
        // Warm: both sides count their storage calls, to show what a repeated query still asks.
        let counted = Counted::default();
        let meadow = apiary::catalog::Meadow::open(&url)
            .await
            .expect("meadow")
            .with_store_layer(counted.layer());
        let ap = Apiary::from_meadow(meadow, IoRuntime::new().expect("io"), Default::default())
            .await
            .expect("open");
        let a = ap.session().expect("session");
        run(&a, "SET datafusion.catalog.default_catalog = 'sel'").await;
        run(&a, "SET datafusion.catalog.default_schema = 'data'").await;
        let listing_counted = Counted::default();
        let b = listing_session(&url, &listing, Some(&listing_counted)).await;
        let q = query(cells);
        assert_eq!(
            common::time(&a, &q).await.1,
            common::time(&b, &q).await.1,
            "same rows"
        );
        counted.take();
        listing_counted.take();
        let (mut wa, mut wb) = (vec![], vec![]);
        for _ in 0..runs {
            wa.push(common::time(&a, &q).await.0);
            wb.push(common::time(&b, &q).await.0);
        }
        warm_calls.push((store.to_string(), counted.take(), listing_counted.take()));
        for (case, x, y) in [
            ("cold", median(ca), median(cb)),
            ("warm", median(wa), median(wb)),
        ] {
            println!(
                "| {store} | {case} | {:.1} | {:.1} | {:.3} |",
                ms(x),
                ms(y),
                ms(x) / ms(y)
            );
        }
    }
    println!("\nStorage calls per warm query (after the warm-up; {runs} queries each side):\n");
    println!("| store | Apiary | ListingTable |");
    println!("|---|---|---|");
    for (store, a, b) in warm_calls {
        println!(
            "| {store} | {} | {} |",
            per_query(&a, runs),
            per_query(&b, runs)
        );
    }
    if started_s3 {
        common::stop_s3();
    }
}

/// Calls by kind, per query: `get 20, head 1` (`none` when there were none).
fn per_query(calls: &BTreeMap<&'static str, usize>, queries: usize) -> String {
    let parts: Vec<String> = calls
        .iter()
        .map(|(kind, n)| format!("{kind} {}", *n as f64 / queries.max(1) as f64))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Counting stores of one side (a meadow layer may wrap more than one client).
#[derive(Clone, Default)]
struct Counted(Arc<Mutex<Vec<Arc<Counting>>>>);

impl Counted {
    fn layer(&self) -> StoreLayer {
        let all = Arc::clone(&self.0);
        Arc::new(move |store| {
            let counting = Counting::new(store);
            all.lock().expect("lock").push(Arc::clone(&counting));
            counting as Arc<dyn ObjectStore>
        })
    }

    /// Calls by kind since the last `take`, over every client.
    fn take(&self) -> BTreeMap<&'static str, usize> {
        let mut sum = BTreeMap::new();
        for counting in self.0.lock().expect("lock").iter() {
            for (kind, n) in counting.take() {
                *sum.entry(kind).or_insert(0) += n;
            }
        }
        sum
    }
}
