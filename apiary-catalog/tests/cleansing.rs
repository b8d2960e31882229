//! Cleansing flights: what no kept version needs goes; nothing a kept version needs does.

use std::time::Duration;

use apiary_catalog::Frame;
use apiary_catalog::{
    CatalogError, CommitOptions, FrameSpec, IfMissing, Ledger, Meadow, WriteOptions,
};
use apiary_catalog::{CleansingOptions, RemovalKind, cleanse_frame, cleanse_meadow};

use crate::support::{age_files, backends, batch, frame, read_back, schema, stream};

/// Everything older than now: only with `force`.
fn now_only() -> CleansingOptions {
    CleansingOptions {
        retention: Duration::ZERO,
        dry_run: false,
        force: true,
    }
}

fn removed(report: &apiary_catalog::CleansingReport, kind: RemovalKind) -> Vec<&str> {
    report
        .removals
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.key.as_str())
        .collect()
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
        let cells = removed(&report, RemovalKind::Cell);
        assert_eq!(cells.len(), 2, "{b}: {cells:?}");
        let orphans = removed(&report, RemovalKind::OrphanCell);
        assert!(
            orphans.len() == 1 && orphans[0].ends_with(&orphan[0].path),
            "{b}: {orphans:?}"
        );
        assert_eq!(cells_stored(&frame).await.len(), 4, "{b}");

        // For real: the live cell stays and reads.
        let report = cleanse_frame(frame.ledger(), &now_only()).await.unwrap();
        assert_eq!(report.oldest_kept_version, Some(3), "{b}");
        assert_eq!(
            removed(&report, RemovalKind::Cell).len()
                + removed(&report, RemovalKind::OrphanCell).len(),
            3,
            "{b}"
        );
        let live = frame.ledger().refresh().await.unwrap();
        let stored = cells_stored(&frame).await;
        assert_eq!(stored.len(), 1, "{b}: {stored:?}");
        let (ids, _) = read_back(&frame, &live).await;
        assert_eq!(ids, (100..105).collect::<Vec<i64>>(), "{b}");

        // The history before the oldest kept version is gone, with a clear error naming it.
        let err = frame.ledger().snapshot_at(1).await.unwrap_err();
        assert!(
            matches!(
                err,
                CatalogError::VersionExpired {
                    version: 1,
                    oldest: 3,
                    ..
                }
            ),
            "{b}: {err}"
        );
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

/// Ages are the store's: on a local folder the files' modification times. Versions and orphans
/// two hours old are past a one-hour retention; younger ones are not, whatever this machine's
/// clock says of the entries' own timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_and_versions_age_on_the_stores_clock() {
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
    let replaced = frame.ledger().latest().cells().next().unwrap().path.clone();
    frame
        .overwrite(stream(vec![batch(10..20, &["eu"])]), "OVERWRITE")
        .await
        .unwrap(); // v2
    let read = frame.ledger().latest();
    let old_orphan = frame
        .cell_writer(&read)
        .unwrap()
        .write_stream(stream(vec![batch(7..8, &["eu"])]))
        .await
        .unwrap();
    // A staging file of a local write that died halfway.
    let folder = dir.path().join(frame.ledger().location());
    std::fs::write(folder.join("cell_x.parquet#123"), b"half").unwrap();
    age_files(&folder, Duration::from_secs(2 * 3600));
    frame
        .overwrite(stream(vec![batch(20..30, &["eu"])]), "OVERWRITE")
        .await
        .unwrap(); // v3, young
    let young_orphan = frame
        .cell_writer(&read)
        .unwrap()
        .write_stream(stream(vec![batch(8..9, &["eu"])]))
        .await
        .unwrap();

    let hour = CleansingOptions {
        retention: Duration::from_secs(3600),
        ..CleansingOptions::default()
    };
    let report = cleanse_frame(frame.ledger(), &hour).await.unwrap();
    // v2 is the newest version older than the window: it and v3 stay readable.
    assert_eq!(report.oldest_kept_version, Some(2));
    let cells = removed(&report, RemovalKind::Cell);
    assert!(
        cells.len() == 1 && cells[0].ends_with(&replaced),
        "{cells:?}"
    );
    let orphans = removed(&report, RemovalKind::OrphanCell);
    assert!(
        orphans.len() == 1 && orphans[0].ends_with(&old_orphan[0].path),
        "{orphans:?}"
    );
    assert_eq!(
        removed(&report, RemovalKind::Staging).len(),
        1,
        "{report:?}"
    );
    assert!(
        folder.join(&young_orphan[0].path).exists(),
        "the young orphan stays"
    );
    assert!(!folder.join("cell_x.parquet#123").exists());
    for v in 2..=3 {
        let snap = frame.ledger().snapshot_at(v).await.unwrap();
        read_back(&frame, &snap).await;
    }
    let err = frame.ledger().snapshot_at(1).await.unwrap_err().to_string();
    assert!(
        err.contains("version 1") && err.contains("oldest readable version is 2"),
        "{err}"
    );
}

#[tokio::test]
async fn a_retention_under_an_hour_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let (_, frame) = frame(
        dir.path().to_str().unwrap(),
        FrameSpec::new(schema()),
        WriteOptions::default(),
    )
    .await;
    let err = cleanse_frame(
        frame.ledger(),
        &CleansingOptions {
            retention: Duration::from_secs(60),
            ..CleansingOptions::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("60 s is under the minimum of 3600 s") && err.contains("force"),
        "{err}"
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
        ..now_only()
    };
    let report = cleanse_frame(frame.ledger(), &options).await.unwrap();
    // v2 is the newest version older than the window: it and everything after stay.
    assert_eq!(report.oldest_kept_version, Some(2));
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
    assert_eq!(report.oldest_kept_version, Some(25));
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
    // Version 25 is the oldest kept: the marker says so, whatever entries happen to remain.
    for v in [19, 20, 24] {
        let err = reopened.snapshot_at(v).await.unwrap_err();
        assert!(
            matches!(err, CatalogError::VersionExpired { oldest: 25, .. }),
            "version {v}: {err}"
        );
    }
}

#[tokio::test]
async fn folders_of_dropped_frames_go_after_retention_and_cannot_be_undropped_after() {
    for b in backends() {
        let (reg, frame) = frame(&b.url, FrameSpec::new(schema()), WriteOptions::default()).await;
        frame
            .append(stream(vec![batch(0..10, &["eu"])]), "WRITE")
            .await
            .unwrap();
        let location = frame.ledger().location().to_string();
        reg.drop_frame("h", "b", "f", IfMissing::Fail)
            .await
            .unwrap();
        let kept = cleanse_meadow(&reg, &CleansingOptions::default())
            .await
            .unwrap();
        assert!(kept.removals.is_empty(), "{b}: inside the retention window");
        // Within retention a drop is undone: the same frame, its rows intact.
        let back = reg.undrop_frame("h", "b", "f", None).await.unwrap();
        assert_eq!(back.location, location, "{b}");
        let ledger = reg.open_ledger("h", "b", "f").await.unwrap();
        assert_eq!(ledger.latest().row_count(), 10, "{b}");
        reg.drop_frame("h", "b", "f", IfMissing::Fail)
            .await
            .unwrap();
        let report = cleanse_meadow(&reg, &now_only()).await.unwrap();
        let dropped = removed(&report, RemovalKind::DroppedFrame);
        assert!(
            dropped.iter().any(|k| k.ends_with(".parquet")),
            "{b}: {report:?}"
        );
        assert!(
            reg.meadow().list(&location).await.unwrap().is_empty(),
            "{b}"
        );
        let err = reg.undrop_frame("h", "b", "f", None).await.unwrap_err();
        assert!(
            err.to_string().contains("among the dropped frames"),
            "{b}: {err}"
        );
    }
}

/// A crash between creating a frame's ledger and registering it leaves a folder no registry
/// entry names: reclaimed after retention, like the staging files of interrupted writes.
#[tokio::test]
async fn crash_leftovers_go_after_retention() {
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
    let unpublished = reg
        .prepare_frame("h", "b", "g", &FrameSpec::new(schema()))
        .await
        .unwrap();
    let hour = CleansingOptions {
        retention: Duration::from_secs(3600),
        ..CleansingOptions::default()
    };
    let report = cleanse_meadow(&reg, &hour).await.unwrap();
    assert!(
        removed(&report, RemovalKind::Leftover).is_empty(),
        "young: {report:?}"
    );
    age_files(dir.path(), Duration::from_secs(2 * 3600));
    let report = cleanse_meadow(&reg, &hour).await.unwrap();
    let leftovers = removed(&report, RemovalKind::Leftover);
    assert!(
        !leftovers.is_empty() && leftovers.iter().all(|k| k.contains(unpublished.location())),
        "{report:?}"
    );
    assert!(
        reg.meadow()
            .list(unpublished.location())
            .await
            .unwrap()
            .is_empty(),
        "the unregistered folder is gone"
    );
    // The live frame is untouched.
    let live = frame.ledger().refresh().await.unwrap();
    assert_eq!(read_back(&frame, &live).await.0.len(), 10);
}

/// A dropped frame's folder is reclaimed only if it is that frame's own: a registry entry naming
/// another folder (a corrupt or hostile one) makes the flight leave it alone.
#[tokio::test]
async fn a_dropped_frame_whose_folder_is_not_its_own_is_left_alone() {
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
    // Hand-written entries: a frame `g` whose recorded folder is `f`'s, then its drop.
    let next = reg.refresh().await.unwrap().version + 1;
    let stolen = frame.ledger().location().to_string();
    for (v, action) in [
        (
            next,
            format!(
                r#"{{"create_frame":{{"hive":"h","box":"b","name":"g","id":"gid","location":"{stolen}"}}}}"#
            ),
        ),
        (
            next + 1,
            r#"{"drop_frame":{"hive":"h","box":"b","name":"g"}}"#.to_string(),
        ),
    ] {
        let body = format!(r#"{{"version":{v},"timestamp_ms":0,"writer":"x","action":{action}}}"#);
        std::fs::write(dir.path().join(format!("_registry/{v:020}.json")), body).unwrap();
    }
    assert_eq!(reg.refresh().await.unwrap().dropped.len(), 1);
    let report = cleanse_meadow(&reg, &now_only()).await.unwrap();
    assert!(
        removed(&report, RemovalKind::DroppedFrame).is_empty(),
        "{report:?}"
    );
    let live = frame.ledger().refresh().await.unwrap();
    assert_eq!(
        read_back(&frame, &live).await.0.len(),
        10,
        "f's cells are all there"
    );
}
