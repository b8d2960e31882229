//! Compaction: small cells of a partition become target-sized ones in one commit.

use apiary_catalog::{CatalogError, Frame, FrameSpec, Leafcutter, WriteOptions};
use apiary_catalog::{Compaction, CompactionReport, compact};

use crate::support::{
    Backend, append_rows, batch, frame, local_frame, race, read_back, schema, stream, task_ctx,
};

async fn small_cells_of_each_partition_become_one_commit_of_target_sized_cells(b: Backend) {
    let spec = FrameSpec::new(schema()).with_partition_by(["region"]);
    let (_, frame) = frame(&b.url, spec, small_cells()).await;
    for i in 0..30i64 {
        let regions = [["eu"], ["us"], ["asia"]][(i % 3) as usize];
        frame
            .append(
                stream(vec![batch(i * 100..i * 100 + 100, &regions)]),
                "WRITE",
            )
            .await
            .unwrap();
    }
    let before = frame.ledger().latest();
    assert_eq!(before.cell_count(), 30);
    let (ids_before, rows_before) = read_back(&frame, &before).await;

    let report = compact_small_cells(&frame).await;
    assert_eq!(report.version, Some(before.version + 1), "{b}");
    let summary: Vec<(String, usize, usize, u64)> = report
        .partitions
        .iter()
        .map(|p| (p.partition.clone(), p.cells_before, p.cells_after, p.rows))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("region=asia".to_string(), 10, 1, 1000),
            ("region=eu".to_string(), 10, 1, 1000),
            ("region=us".to_string(), 10, 1, 1000),
        ],
        "{b}"
    );
    let after = frame.ledger().latest();
    assert_eq!(after.cell_count(), 3, "{b}");
    let (ids_after, rows_after) = read_back(&frame, &after).await;
    assert_eq!(ids_after, ids_before, "{b}: the same rows");
    assert_eq!(rows_after, rows_before, "{b}: in the same partitions");
    let last = frame.ledger().entries(after.version).await.unwrap();
    assert_eq!(last[0].operation, "COMPACT");
    assert_eq!(last[0].action.removed().len(), 30);

    // Nothing left to compact: no commit.
    let again = compact_small_cells(&frame).await;
    assert_eq!((again.version, again.partitions.len()), (None, 0), "{b}");
    let now = frame.ledger().refresh().await.unwrap().version;
    assert_eq!(now, after.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_of_about_the_target_are_left_alone() {
    let (_dir, _, frame) = local_frame(FrameSpec::new(schema()), small_cells()).await;
    // A large write makes cells of about the target; then two small writes.
    let rows: Vec<_> = (0..20)
        .map(|i| batch(i * 10_000..(i + 1) * 10_000, &["eu"]))
        .collect();
    frame.append(stream(rows), "WRITE").await.unwrap();
    append_rows(&frame, 300_000..300_010).await;
    append_rows(&frame, 300_010..300_020).await;
    let target = 256 * 1024;
    let snap = frame.ledger().latest();
    let (small, big): (Vec<_>, Vec<_>) = snap.cells().partition(|c| c.size < target / 2);
    assert!(
        big.len() >= 3,
        "the large write made cells of about the target: {}",
        big.len()
    );
    let report = compact_small_cells(&frame).await;
    assert_eq!(report.partitions[0].cells_before, small.len());
    let after = frame.ledger().latest();
    for c in &big {
        assert!(after.cell(&c.path).is_some(), "{} untouched", c.path);
    }
    assert_eq!(after.row_count(), snap.row_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_compactions_have_one_winner_and_leave_no_cells_behind() {
    let (dir, _, frame) = local_frame(FrameSpec::new(schema()), small_cells()).await;
    for i in 0..6i64 {
        append_rows(&frame, i * 10..i * 10 + 10).await;
    }
    let runs = race(2, |_, start| {
        let frame = frame.clone();
        async move {
            start.wait().await;
            compact(&frame, task_ctx(), Compaction::SmallCells).await
        }
    })
    .await;
    let mut ok = 0;
    for r in runs {
        match r {
            Ok(report) if report.version.is_some() => ok += 1,
            Ok(_) => {}
            Err(CatalogError::Conflict(c)) => assert!(c.to_string().contains("COMPACT")),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 1);
    let snap = frame.ledger().refresh().await.unwrap();
    assert_eq!(snap.cell_count(), 1);
    assert_eq!(snap.row_count(), 60);
    // The loser's cells were removed again: the folder holds exactly the live cells.
    let files: Vec<String> = walk(dir.path());
    let parquet = files.iter().filter(|f| f.ends_with(".parquet")).count();
    assert_eq!(
        parquet,
        6 + 1,
        "six compacted-away cells stay until cleansing, plus the new one: {files:?}"
    );
}

fn small_cells() -> WriteOptions {
    WriteOptions::default()
        .with_leafcutter(Leafcutter::default().with_target_cell_bytes(256 * 1024))
}

/// One run of [`Compaction::SmallCells`] on `frame`.
async fn compact_small_cells(frame: &Frame) -> CompactionReport {
    compact(frame, task_ctx(), Compaction::SmallCells)
        .await
        .unwrap()
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

apiary_catalog::each_backend!(
    small_cells_of_each_partition_become_one_commit_of_target_sized_cells,
);
