//! Writing cells: schema enforcement, partitioning, statistics, leafcutter sizing, atomicity.

use std::sync::Arc;

use apiary_catalog::{CatalogError, Frame, FrameSpec, IfExists, Leafcutter, WriteOptions};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt;

use crate::support::{
    Backend, append_rows, batch, create_hive_and_box, frame, keys_below, local_frame,
    local_plain_frame, plain_frame, read_back, registry, schema, stream,
};

async fn partitioned_writes_group_rows_and_escape_values(b: Backend) {
    let spec = FrameSpec::new(schema()).with_partition_by(["region"]);
    let (_, frame) = frame(&b.url, spec, WriteOptions::default()).await;
    let regions = ["eu", "us/west", "a=b", "100%", "..", "日本"];
    let info = frame
        .append(
            stream(vec![batch(0..600, &regions), batch(600..700, &["eu"])]),
            "WRITE",
        )
        .await
        .unwrap();
    assert_eq!(
        info.cells_added,
        regions.len(),
        "{b}: one cell per partition"
    );
    assert_eq!(info.rows_added, 700);
    let snap = frame.ledger().latest();
    for cell in snap.cells() {
        assert!(cell.path.starts_with("region="), "{}", cell.path);
        assert_eq!(
            cell.path.matches('/').count(),
            1,
            "{b}: one folder level: {}",
            cell.path
        );
        assert!(
            !cell.stats.contains_key("region"),
            "partition columns are not stored in cells"
        );
    }
    let (ids, per_partition) = read_back(&frame, &snap).await;
    assert_eq!(ids, (0..700).collect::<Vec<_>>(), "{b}");
    assert_eq!(per_partition["eu"], 200, "{b}");
    assert_eq!(per_partition["us/west"], 100, "{b}");
    assert_eq!(per_partition[".."], 100, "{b}");
    // The ledger keeps the typed values, whatever the folder name.
    let values: Vec<ScalarValue> = snap.cells().map(|c| c.partition[0].clone()).collect();
    for r in regions {
        assert!(values.contains(&ScalarValue::from(r)), "{b}: {r}");
    }
}

#[tokio::test]
async fn partition_values_of_every_supported_type() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int32, false),
        Field::new("d", DataType::Date32, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let spec = FrameSpec::new(Arc::clone(&schema)).with_partition_by(["n", "d"]);
    let (dir, _, frame) = local_frame(spec, WriteOptions::default()).await;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![-1, -1, 7])),
            Arc::new(Date32Array::from(vec![19723, 19724, 19723])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    frame.append(stream(vec![batch]), "WRITE").await.unwrap();
    let mut paths: Vec<String> = frame
        .ledger()
        .latest()
        .cells()
        .map(|c| c.path.rsplit_once('/').unwrap().0.to_string())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec!["n=-1/d=2024-01-01", "n=-1/d=2024-01-02", "n=7/d=2024-01-01"]
    );
    assert!(dir.path().join("h/b/f").is_dir());
}

async fn statistics_come_from_the_parquet_writer(b: Backend) {
    let (_, frame) = plain_frame(&b.url).await;
    frame
        .append(stream(vec![batch(10..40, &["x", "b", "m"])]), "WRITE")
        .await
        .unwrap();
    let snap = frame.ledger().latest();
    let cell = snap.cells().next().unwrap();
    assert_eq!(cell.rows, 30);
    let id = &cell.stats["id"];
    assert_eq!(id.min, Some(ScalarValue::Int64(Some(10))), "{b}");
    assert_eq!(id.max, Some(ScalarValue::Int64(Some(39))), "{b}");
    assert_eq!(id.null_count, Some(0));
    let region = &cell.stats["region"];
    assert_eq!(region.min, Some(ScalarValue::from("b")));
    assert_eq!(region.max, Some(ScalarValue::from("x")));
    // note is null for every id divisible by 3: 12, 15, …, 39 → 10 nulls.
    assert_eq!(cell.stats["note"].null_count, Some(10));
    // Each column's uncompressed size, for DataFusion's size estimates.
    for c in ["id", "region", "note"] {
        assert!(cell.stats[c].bytes.is_some_and(|b| b > 0), "{b}: {c}");
    }
    let size = frame
        .ledger()
        .meadow()
        .store()
        .head(
            &frame
                .ledger()
                .meadow()
                .key(&format!("{}/{}", frame.ledger().location(), cell.path)),
        )
        .await
        .unwrap()
        .size;
    assert_eq!(cell.size, size, "{b}: recorded size is the object's size");
}

async fn large_writes_split_into_cells_of_about_the_target(b: Backend) {
    let target = 256 * 1024;
    let write = WriteOptions::default()
        .with_leafcutter(Leafcutter::default().with_target_cell_bytes(target));
    let (_, frame) = frame(&b.url, FrameSpec::new(schema()), write).await;
    // ~6 MB of barely compressible notes.
    let batches: Vec<RecordBatch> = (0..6)
        .map(|i| {
            let n = 20_000i64;
            let ids = i * n..(i + 1) * n;
            let notes: Vec<String> = ids
                .clone()
                .map(|x| format!("{:x}", (x as u64).wrapping_mul(0x9E3779B97F4A7C15)))
                .collect();
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from_iter_values(ids)),
                    Arc::new(StringArray::from(vec!["eu"; n as usize])),
                    Arc::new(StringArray::from(notes)),
                ],
            )
            .unwrap()
        })
        .collect();
    let info = frame.append(stream(batches), "WRITE").await.unwrap();
    let snap = frame.ledger().latest();
    let sizes: Vec<u64> = snap.cells().map(|c| c.size).collect();
    assert!(info.cells_added > 4, "{b}: {sizes:?}");
    for s in &sizes {
        assert!(
            *s <= 2 * target,
            "{b}: a cell of {s} bytes exceeds twice the target: {sizes:?}"
        );
    }
    // All but the last cell of the write were closed at the target.
    let full = sizes.iter().filter(|s| **s >= target * 3 / 4).count();
    assert!(full >= sizes.len() - 1, "{b}: {sizes:?}");
    assert_eq!(snap.row_count(), 120_000);
}

/// DataFusion splits a file between a query's partitions only where a row group ends: a cell of
/// one large row group is read by one bee however many the query holds.
async fn cells_are_cut_into_row_groups_the_bees_can_share(b: Backend) {
    let (_, frame) = plain_frame(&b.url).await;
    let batches = (0..5).map(|i| batch(i * 100_000..(i + 1) * 100_000, &["eu"]));
    frame
        .append(stream(batches.collect()), "WRITE")
        .await
        .unwrap();
    let snap = frame.ledger().latest();
    let cells: Vec<_> = snap.cells().collect();
    assert_eq!(cells.len(), 1, "{b}: 500,000 short rows are one cell");
    let rel = format!("{}/{}", frame.ledger().location(), cells[0].path);
    let bytes = frame.ledger().meadow().get(&rel).await.unwrap().unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let rows: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert!(
        rows.len() >= 4 && rows.iter().all(|r| *r <= 128 * 1024),
        "{b}: row groups of {rows:?} rows"
    );
}

async fn a_failed_write_leaves_nothing_visible_or_behind(b: Backend) {
    // A nullable partition column, so that the null reaches the partitioning rule.
    let nullable = Arc::new(Schema::new(
        schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let spec = FrameSpec::new(nullable).with_partition_by(["region"]);
    let (_, frame) = frame(&b.url, spec, WriteOptions::default()).await;
    append_rows(&frame, 0..10).await;
    let before = frame.ledger().latest();
    let cells_before = cell_objects(&frame).await;

    // The input fails half way, after cells of several partitions were started.
    let failing = futures::stream::iter(vec![
        Ok(batch(10..20, &["eu", "us"])),
        Ok(batch(20..30, &["asia"])),
        Err(CatalogError::InvalidOption {
            name: "input".into(),
            reason: "the source broke".into(),
        }),
    ]);
    let err = frame
        .append(failing, "WRITE")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the source broke"), "{err}");
    // A null partition value in the second batch.
    let nulls = columns(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])), false),
        (
            "region",
            Arc::new(StringArray::from(vec![Some("eu"), None])),
            true,
        ),
    ]);
    let err = frame
        .append(stream(vec![batch(30..40, &["eu"]), nulls]), "WRITE")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("partition column region has a null value"),
        "{err}"
    );

    let after = frame.ledger().refresh().await.unwrap();
    assert_eq!(after.version, before.version, "{b}: nothing committed");
    assert_eq!(
        cell_objects(&frame).await,
        cells_before,
        "{b}: no cell left behind"
    );
}

#[tokio::test]
async fn schema_mismatches_are_refused_naming_the_column() {
    let (_dir, _, frame) = local_plain_frame().await;
    // A safe widening cast is applied; a missing nullable column becomes nulls.
    let widened = columns(vec![
        ("id", Arc::new(Int32Array::from(vec![1])), false),
        (
            "region",
            Arc::new(LargeStringArray::from(vec!["eu"])),
            false,
        ),
    ]);
    frame.append(stream(vec![widened]), "WRITE").await.unwrap();
    assert_eq!(
        frame.ledger().latest().cells().next().unwrap().stats["note"].null_count,
        Some(1)
    );

    let cases = [
        (
            columns(vec![("id", Arc::new(Int64Array::from(vec![1])), false)]),
            vec!["column region", "Utf8", "missing"],
        ),
        (
            columns(vec![
                ("id", Arc::new(StringArray::from(vec!["1"])), false),
                ("region", Arc::new(StringArray::from(vec!["eu"])), false),
            ]),
            vec!["column id", "frame type Int64", "input has Utf8"],
        ),
        (
            columns(vec![
                ("id", Arc::new(Int64Array::from(vec![1])), false),
                ("region", Arc::new(StringArray::from(vec!["eu"])), false),
                ("extra", Arc::new(Int32Array::from(vec![1])), true),
            ]),
            vec!["column extra", "Int32", "not in the frame schema of h.b.f"],
        ),
    ];
    let version = frame.ledger().latest().version;
    for (bad, needles) in cases {
        let err = frame
            .append(stream(vec![bad]), "WRITE")
            .await
            .unwrap_err()
            .to_string();
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err}");
        }
    }
    assert_eq!(frame.ledger().refresh().await.unwrap().version, version);
}

#[tokio::test]
async fn frame_specs_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path().to_str().unwrap()).await;
    create_hive_and_box(&reg, IfExists::Fail).await;
    let floaty = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, false),
        Field::new("y", DataType::Int64, false),
    ]));
    let cases = [
        (
            FrameSpec::new(schema()).with_partition_by(["nope"]),
            "partition column nope is not a column",
        ),
        (
            FrameSpec::new(floaty).with_partition_by(["x"]),
            "partition column x has type Float64",
        ),
        (
            FrameSpec::new(schema()).with_partition_by(["id", "region", "note"]),
            "at least one column must not be a partition column",
        ),
    ];
    for (spec, needle) in cases {
        let err = reg
            .create_frame("h", "b", "f", &spec, IfExists::Fail)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(
        !dir.path().join("h").exists(),
        "no frame folder was created"
    );
}

/// A batch of `(name, values, nullable)` columns, each field of its values' type.
fn columns(columns: Vec<(&str, ArrayRef, bool)>) -> RecordBatch {
    RecordBatch::try_from_iter_with_nullable(columns).unwrap()
}

/// Everything below the frame folder except the ledger: the cells.
/// A default writer keeps a cell open for each of ten partitions whose rows arrive interleaved:
/// one cell each, not a cell per batch and partition closed early to make room.
async fn interleaved_partitions_get_one_cell_each(b: Backend) {
    let spec = FrameSpec::new(schema()).with_partition_by(["region"]);
    let (_, frame) = frame(&b.url, spec, WriteOptions::default()).await;
    let regions: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let regions: Vec<&str> = regions.iter().map(String::as_str).collect();
    let batches = (0..3).map(|i| batch(i * 1000..(i + 1) * 1000, &regions));
    let info = frame
        .append(stream(batches.collect()), "WRITE")
        .await
        .unwrap();
    assert_eq!(info.cells_added, 10, "{b}: one cell per partition");
    assert_eq!(info.rows_added, 3000, "{b}");
}

async fn cell_objects(frame: &Frame) -> Vec<String> {
    let ledger = frame.ledger();
    keys_below(ledger.meadow(), ledger.location())
        .await
        .into_iter()
        .filter(|k| !k.contains("/_ledger/"))
        .collect()
}

apiary_catalog::each_backend!(
    partitioned_writes_group_rows_and_escape_values,
    statistics_come_from_the_parquet_writer,
    a_failed_write_leaves_nothing_visible_or_behind,
    large_writes_split_into_cells_of_about_the_target,
    cells_are_cut_into_row_groups_the_bees_can_share,
    interleaved_partitions_get_one_cell_each,
);
