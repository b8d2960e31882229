//! Quickstart: a hive, a box and a partitioned frame in a local folder, two writes, and the
//! ledger state they leave.
//!
//! ```text
//! cargo run --example quickstart [FOLDER]     # default: $TMPDIR/apiary-quickstart
//! ```

use std::sync::Arc;

use apiary::catalog::{CommitOptions, Frame, FrameSpec, IfExists, Meadow, Registry, WriteOptions};
use datafusion::arrow::array::{
    Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

fn orders(
    schema: &SchemaRef,
    first_id: i64,
    regions: &[&str],
) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let n = 1000;
    let ids = first_id..first_id + n;
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Date32Array::from_iter_values(
                ids.clone().map(|i| 19_700 + (i % 30) as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| regions[i as usize % regions.len()]),
            )),
            Arc::new(
                Decimal128Array::from_iter_values(
                    ids.map(|i| i128::from(1_000 + (i * 7919) % 100_000)),
                )
                .with_precision_and_scale(12, 2)?,
            ),
        ],
    )?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("apiary-quickstart"));
    let meadow = Meadow::open(folder.to_str().ok_or("folder is not UTF-8")?).await?;
    println!("meadow: {}", folder.display());

    let registry = Registry::open(meadow, CommitOptions::default()).await?;
    registry.create_hive("sales", IfExists::Keep).await?;
    registry.create_box("sales", "eu", IfExists::Keep).await?;
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Decimal128(12, 2), false),
    ]));
    let spec = FrameSpec::new(schema.clone()).with_partition_by(["region"]);
    let created = registry
        .create_frame("sales", "eu", "orders", &spec, IfExists::Keep)
        .await?;
    println!(
        "frame sales.eu.orders: {}",
        if created.was_created() {
            "created"
        } else {
            "already there"
        }
    );

    let frame = Frame::new(
        registry.open_ledger("sales", "eu", "orders").await?,
        WriteOptions::default(),
    );
    for regions in [&["de", "fr"][..], &["fr", "it", "es"][..]] {
        let next_id = frame.ledger().latest().row_count() as i64;
        let batch = orders(&schema, next_id, regions)?;
        let info = frame
            .append(
                futures::stream::iter([Ok::<_, apiary::catalog::Error>(batch)]),
                "WRITE",
            )
            .await?;
        println!(
            "committed version {}: {} rows in {} cells ({} attempt(s))",
            info.version, info.rows_added, info.cells_added, info.attempts
        );
    }

    let snap = frame.ledger().latest();
    println!(
        "\nledger of sales.eu.orders at version {}: {} cells, {} rows, {} bytes",
        snap.version,
        snap.cell_count(),
        snap.row_count(),
        snap.total_bytes()
    );
    println!(
        "{:<56} {:>6} {:>7}  amount min..max",
        "cell", "rows", "bytes"
    );
    for cell in snap.cells() {
        let amount = &cell.stats["amount"];
        let show = |v: &Option<datafusion::common::ScalarValue>| {
            v.as_ref().map(|v| v.to_string()).unwrap_or_default()
        };
        println!(
            "{:<56} {:>6} {:>7}  {}..{}",
            cell.path,
            cell.rows,
            cell.size,
            show(&amount.min),
            show(&amount.max)
        );
    }
    println!("\nhistory:");
    for e in frame.ledger().entries(0).await? {
        println!(
            "  v{:<3} {:<7} {:<14} +{} cells -{} cells  by {}",
            e.version,
            e.operation,
            e.action.name(),
            e.action.added().len(),
            e.action.removed().len(),
            e.writer
        );
    }
    Ok(())
}
