//! Cleansing flights: what no kept version needs goes; nothing a kept version needs does.

use std::time::Duration;

use apiary_catalog::Frame;
use apiary_catalog::cleansing::{CleansingOptions, RemovalKind, cleanse_dropped, cleanse_frame};
use apiary_catalog::{CommitOptions, Error, FrameSpec, IfMissing, Ledger, Meadow, WriteOptions};

use crate::support::{backends, batch, frame, read_back, schema, stream};

fn now_only() -> CleansingOptions {
    CleansingOptions {
        retention: Duration::ZERO,
        grace: Duration::ZERO,
        dry_run: false,
    }
}

/// Parquet objects of the frame folder.
async fn cells_stored(frame: &Frame) -> Vec<String> {
    let m = frame.ledger().meadow();
    let mut v: Vec<String> = m
        .list(frame.ledger().location())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| m.relative(&o.location).map(str::to_string))
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_and_orphaned_cells_go_and_live_ones_stay() {
    for b in backends() {
        let (_, frame) = frame(&b.url, FrameSpec::new(schema()), WriteOptions::default()).await;
        frame
            .append(stream(vec![batch(0..10, &["eu"])]), "WRITE")
            .await
            .unwrap();
        frame
            .append(stream(vec![batch(10..20, &["eu"])]), "WRITE")
            .await
            .unwrap();
        frame
            .overwrite(stream(vec![batch(100..105, &["eu"])]), "OVERWRITE")
            .await
            .unwrap();
        // An orphan: written, never committed (a writer that died before its commit).
        let read = frame.ledger().latest();
        let orphan = frame
            .cell_writer(&read)
            .unwrap()
            .write_stream(stream(vec![batch(7..8, &["eu"])]))
            .await
            .unwrap();
        assert_eq!(cells_stored(&frame).await.len(), 4);

        // A dry run lists the two overwritten cells and the orphan, and removes nothing.
        let report = cleanse_frame(
            frame.ledger(),
            &CleansingOptions {
                dry_run: true,
                ..now_only()
            },
        )
        .await
        .unwrap();
        let cells: Vec<&str> = report
            .removals
            .iter()
            .filter(|r| r.kind == RemovalKind::Cell)
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(cells.len(), 3, "{b}: {cells:?}");
        assert!(cells.iter().any(|c| c.ends_with(&orphan[0].path)), "{b}");
        assert_eq!(cells_stored(&frame).await.len(), 4, "{b}");

        // For real: the live cell stays and reads.
        let report = cleanse_frame(frame.ledger(), &now_only()).await.unwrap();
        assert_eq!(report.oldest_kept_version, 3, "{b}");
        assert_eq!(
            report
                .removals
                .iter()
                .filter(|r| r.kind == RemovalKind::Cell)
                .count(),
            3,
            "{b}"
        );
        let live = frame.ledger().refresh().await.unwrap();
        let stored = cells_stored(&frame).await;
        assert_eq!(stored.len(), 1, "{b}: {stored:?}");
        let (ids, _) = read_back(&frame, &live).await;
        assert_eq!(ids, (100..105).collect::<Vec<i64>>(), "{b}");

        // The history before the oldest kept version is gone, with a clear error for it.
        let err = frame.ledger().snapshot_at(1).await.unwrap_err();
        assert!(matches!(err, Error::VersionExpired { .. }), "{b}: {err}");
        assert!(err.to_string().contains("removed by cleanup"), "{err}");
        // And the frame still opens from storage alone.
        let reopened = Ledger::open(
            frame.ledger().meadow().clone(),
            frame.ledger().location(),
            "h.b.f",
            CommitOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(*reopened.latest(), *live, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_wait_out_the_grace_period_replaced_cells_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_, frame) = frame(
        dir.path().to_str().unwrap(),
        FrameSpec::new(schema()),
        WriteOptions::default(),
    )
    .await;
    frame
        .append(stream(vec![batch(0..10, &["eu"])]), "WRITE")
        .await
        .unwrap();
    let replaced = frame.ledger().latest().cells().next().unwrap().path.clone();
    frame
        .overwrite(stream(vec![batch(10..20, &["eu"])]), "OVERWRITE")
        .await
        .unwrap();
    let read = frame.ledger().latest();
    let orphan = frame
        .cell_writer(&read)
        .unwrap()
        .write_stream(stream(vec![batch(7..8, &["eu"])]))
        .await
        .unwrap();
    let options = CleansingOptions {
        grace: Duration::from_secs(3600),
        ..now_only()
    };
    let report = cleanse_frame(frame.ledger(), &options).await.unwrap();
    let cells: Vec<&str> = report
        .removals
        .iter()
        .filter(|r| r.kind == RemovalKind::Cell)
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert!(
        cells[0].ends_with(&replaced),
        "the replaced cell goes although it is young"
    );
    assert!(
        dir.path()
            .join(frame.ledger().location())
            .join(&orphan[0].path)
            .exists(),
        "the young orphan stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_inside_the_retention_window_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (_, frame) = frame(
        dir.path().to_str().unwrap(),
        FrameSpec::new(schema()),
        WriteOptions::default(),
    )
    .await;
    frame
        .append(stream(vec![batch(0..10, &["eu"])]), "WRITE")
        .await
        .unwrap(); // v1
    frame
        .overwrite(stream(vec![batch(10..20, &["eu"])]), "OVERWRITE")
        .await
        .unwrap(); // v2
    tokio::time::sleep(Duration::from_millis(1500)).await;
    frame
        .overwrite(stream(vec![batch(20..30, &["eu"])]), "OVERWRITE")
        .await
        .unwrap(); // v3
    frame
        .overwrite(stream(vec![batch(30..40, &["eu"])]), "OVERWRITE")
        .await
        .unwrap(); // v4
    let options = CleansingOptions {
        retention: Duration::from_secs(1),
        grace: Duration::ZERO,
        dry_run: false,
    };
    let report = cleanse_frame(frame.ledger(), &options).await.unwrap();
    // v2 is the newest version older than the window: it and everything after stay.
    assert_eq!(report.oldest_kept_version, 2);
    for v in 2..=4 {
        let snap = frame.ledger().snapshot_at(v).await.unwrap();
        let (ids, _) = read_back(&frame, &snap).await;
        let first = (v as i64 - 1) * 10;
        assert_eq!(
            ids,
            (first..first + 10).collect::<Vec<i64>>(),
            "version {v}"
        );
    }
    // v1's cell was needed by no kept version.
    assert_eq!(
        report
            .removals
            .iter()
            .filter(|r| r.kind == RemovalKind::Cell)
            .count(),
        1
    );
    assert!(frame.ledger().snapshot_at(1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ledger_entries_go_down_to_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let meadow = Meadow::open(dir.path().to_str().unwrap()).await.unwrap();
    let opts = CommitOptions::default().with_checkpoint_interval(10);
    let ledger = Ledger::create(
        meadow.clone(),
        "f",
        "h.b.f",
        "id",
        &FrameSpec::new(schema()),
        opts.clone(),
    )
    .await
    .unwrap();
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    for i in 0..25i64 {
        frame
            .append(stream(vec![batch(i..i + 1, &["eu"])]), "WRITE")
            .await
            .unwrap();
    }
    let report = cleanse_frame(&ledger, &now_only()).await.unwrap();
    assert_eq!(report.oldest_kept_version, 25);
    let entries = report
        .removals
        .iter()
        .filter(|r| r.kind == RemovalKind::LedgerEntry)
        .count();
    let checkpoints = report
        .removals
        .iter()
        .filter(|r| r.kind == RemovalKind::Checkpoint)
        .count();
    assert_eq!(
        (entries, checkpoints),
        (20, 1),
        "entries 0..20 and checkpoint 10 go; checkpoint 20 stays"
    );
    assert_eq!(
        report
            .removals
            .iter()
            .filter(|r| r.kind == RemovalKind::Cell)
            .count(),
        0
    );
    let reopened = Ledger::open(meadow, "f", "h.b.f", opts).await.unwrap();
    assert_eq!(reopened.latest().row_count(), 25);
    assert_eq!(reopened.snapshot_at(20).await.unwrap().row_count(), 20);
    assert!(reopened.snapshot_at(19).await.is_err());
}

#[tokio::test]
async fn folders_of_dropped_frames_go_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, frame) = frame(
        dir.path().to_str().unwrap(),
        FrameSpec::new(schema()),
        WriteOptions::default(),
    )
    .await;
    frame
        .append(stream(vec![batch(0..10, &["eu"])]), "WRITE")
        .await
        .unwrap();
    let location = frame.ledger().location().to_string();
    reg.drop_frame("h", "b", "f", IfMissing::Fail)
        .await
        .unwrap();
    let kept = cleanse_dropped(&reg, &CleansingOptions::default())
        .await
        .unwrap();
    assert!(kept.is_empty(), "inside the retention window");
    let removed = cleanse_dropped(&reg, &now_only()).await.unwrap();
    assert!(removed.iter().any(|r| r.key.ends_with(".parquet")));
    assert!(reg.meadow().list(&location).await.unwrap().is_empty());
}
