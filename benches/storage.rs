//! Storage benchmarks on a local folder: ledger commit latency and cell write throughput.
//!
//! ```text
//! cargo bench --bench storage
//! ```

use std::sync::Arc;

use apiary::catalog::{
    Action, CellRecord, CommitOptions, Frame, FrameSpec, Ledger, Meadow, WriteOptions,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tokio::runtime::Runtime;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

const REGIONS: [&str; 8] = ["de", "fr", "it", "es", "nl", "be", "pl", "se"];

fn batch(first: i64, rows: usize) -> RecordBatch {
    let ids = first..first + rows as i64;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| REGIONS[(i % 8) as usize]),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|i| (i * 7919 % 10_000) as f64 / 100.0),
            )),
            Arc::new(StringArray::from_iter(ids.map(|i| {
                (i % 5 != 0).then(|| format!("order {i} of customer {}", i % 977))
            }))),
        ],
    )
    .expect("batch")
}

async fn new_ledger(dir: &std::path::Path, spec: &FrameSpec) -> Ledger {
    let meadow = Meadow::open(dir.to_str().expect("utf-8 path"))
        .await
        .expect("meadow");
    let location = format!("f{}", uuid::Uuid::new_v4().simple());
    Ledger::create(
        meadow,
        location,
        "h.b.f",
        "id",
        spec,
        CommitOptions::default(),
    )
    .await
    .expect("ledger")
}

/// One commit of an `AddCells` entry (JSON, a durable conditional create), a bare conditional
/// create durable and ephemeral, and a whole append of 1,000 rows (a cell written, flushed,
/// committed).
fn commit_latency(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = FrameSpec::new(schema());
    let mut group = c.benchmark_group("commit");

    let ledger = rt.block_on(new_ledger(dir.path(), &spec));
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    let cell = rt
        .block_on(
            frame
                .cell_writer(&ledger.latest())
                .expect("writer")
                .write_stream(futures::stream::iter([Ok::<
                    _,
                    apiary::catalog::CatalogError,
                >(batch(0, 10))])),
        )
        .expect("cell");
    let cell: Arc<CellRecord> = Arc::clone(&cell[0]);
    group.bench_function("add_cells_entry_local", |b| {
        b.to_async(&rt).iter(|| async {
            let read = ledger.latest();
            ledger
                .commit(
                    &read,
                    "WRITE",
                    Action::AddCells {
                        cells: vec![Arc::clone(&cell)],
                    },
                )
                .await
                .expect("commit")
        })
    });

    // A conditional create of a small object in a new folder (as a swarm claim or report is):
    // durable (flushed, as every commit point) and ephemeral (the swarm's `_queries/` objects).
    let meadow = rt
        .block_on(Meadow::open(dir.path().to_str().expect("utf-8 path")))
        .expect("meadow");
    for (name, ephemeral) in [
        ("create_durable_local", false),
        ("create_ephemeral_local", true),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let key = format!("_queries/{}/claim_0_0.json", uuid::Uuid::new_v4().simple());
                let body = br#"{"node":"n","attempt":0}"#.to_vec();
                match ephemeral {
                    true => meadow.create_ephemeral(&key, body.into()).await,
                    false => meadow.create(&key, body.into()).await,
                }
                .expect("create")
            })
        });
    }

    let ledger = rt.block_on(new_ledger(dir.path(), &spec));
    let frame = Frame::new(ledger, WriteOptions::default());
    let input = batch(0, 1_000);
    group.bench_function("append_1k_rows_local", |b| {
        b.to_async(&rt).iter(|| async {
            frame
                .append(
                    futures::stream::iter([Ok::<_, apiary::catalog::CatalogError>(input.clone())]),
                    "WRITE",
                )
                .await
                .expect("append")
        })
    });
    group.finish();
}

/// Writing 1,000,000 rows (57 MiB of Arrow data) into cells, unpartitioned and into 8
/// partitions; throughput is of the Arrow input.
fn cell_write_throughput(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let batches: Vec<RecordBatch> = (0..16).map(|i| batch(i * 62_500, 62_500)).collect();
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut group = c.benchmark_group("cell_write");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes as u64));
    for (name, spec) in [
        ("1M_rows_unpartitioned", FrameSpec::new(schema())),
        (
            "1M_rows_8_partitions",
            FrameSpec::new(schema()).with_partition_by(["region"]),
        ),
    ] {
        let ledger = rt.block_on(new_ledger(dir.path(), &spec));
        let frame = Frame::new(ledger.clone(), WriteOptions::default());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || batches.clone(),
                |input| async {
                    let writer = frame.cell_writer(&ledger.latest()).expect("writer");
                    let cells = writer
                        .write_stream(futures::stream::iter(
                            input
                                .into_iter()
                                .map(Ok::<_, apiary::catalog::CatalogError>),
                        ))
                        .await
                        .expect("write");
                    assert!(!cells.is_empty());
                    cells
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, commit_latency, cell_write_throughput);
criterion_main!(benches);
