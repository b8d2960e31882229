//! Cleansing flights: what no kept version needs goes; nothing a kept version needs does.

use std::time::Duration;

use apiary_catalog::Frame;
use apiary_catalog::{CatalogError, CommitOptions, FrameSpec, IfMissing, Ledger, WriteOptions};
use apiary_catalog::{
    CleansingOptions, CleansingReport, RemovalKind, cleanse_frame, cleanse_meadow,
};

use crate::support::{
    Backend, age_files, append_rows, assert_mentions, bare_ledger, keys_below, local_meadow,
    local_plain_frame, overwrite_rows, plain_frame, read_back, reopen, schema, write_cells,
};

async fn replaced_and_orphaned_cells_go_and_live_ones_stay(b: Backend) {
    let (_, frame) = plain_frame(&b.url).await;
    append_rows(&frame, 0..10).await;
    append_rows(&frame, 10..20).await;
    overwrite_rows(&frame, 100..105).await;
    // An orphan: written, never committed (a writer that died before its commit).
    let orphan = write_cells(&frame, &frame.ledger().latest(), 7..8).await;
    assert_eq!(cells_stored(&frame).await.len(), 4);

    // A dry run lists the two overwritten cells and the orphan, and removes nothing.
    let dry_run = CleansingOptions {
        dry_run: true,
        ..now_only()
    };
    let report = cleanse_frame(frame.ledger(), &dry_run).await.unwrap();
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
    let cells_and_orphans =
        removed(&report, RemovalKind::Cell).len() + removed(&report, RemovalKind::OrphanCell).len();
    assert_eq!(cells_and_orphans, 3, "{b}");
    let live = frame.ledger().refresh().await.unwrap();
    let stored = cells_stored(&frame).await;
    assert_eq!(stored.len(), 1, "{b}: {stored:?}");
    let (ids, _) = read_back(&frame, &live).await;
    assert_eq!(ids, (100..105).collect::<Vec<i64>>(), "{b}");

    // The history before the oldest kept version is gone, with a clear error naming it.
    let err = frame.ledger().snapshot_at(1).await.unwrap_err();
    let expired = matches!(
        err,
        CatalogError::VersionExpired {
            version: 1,
            oldest: 3,
            ..
        }
    );
    assert!(expired, "{b}: {err}");
    assert!(err.to_string().contains("removed by cleanup"), "{err}");
    // And the frame still opens from storage alone.
    let reopened = reopen_frame(&frame).await;
    assert_eq!(*reopened.latest(), *live, "{b}");
}

/// Ages are the store's: on a local folder the files' modification times. Versions and orphans
/// two hours old are past a one-hour retention; younger ones are not, whatever this machine's
/// clock says of the entries' own timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_and_versions_age_on_the_stores_clock() {
    let (dir, _, frame) = local_plain_frame().await;
    append_rows(&frame, 0..10).await; // v1
    let replaced = frame.ledger().latest().cells().next().unwrap().path.clone();
    overwrite_rows(&frame, 10..20).await; // v2
    let read = frame.ledger().latest();
    let old_orphan = write_cells(&frame, &read, 7..8).await;
    // A staging file of a local write that died halfway.
    let folder = dir.path().join(frame.ledger().location());
    std::fs::write(folder.join("cell_x.parquet#123"), b"half").unwrap();
    age_files(&folder, Duration::from_secs(2 * 3600));
    overwrite_rows(&frame, 20..30).await; // v3, young
    let young_orphan = write_cells(&frame, &read, 8..9).await;

    let report = cleanse_frame(frame.ledger(), &an_hour()).await.unwrap();
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
    let staging = removed(&report, RemovalKind::Staging);
    assert_eq!(staging.len(), 1, "{report:?}");
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
    assert_mentions(&err, &["version 1", "oldest readable version is 2"]);
}

#[tokio::test]
async fn a_retention_under_an_hour_needs_force() {
    let (_dir, _, frame) = local_plain_frame().await;
    let a_minute = CleansingOptions {
        retention: Duration::from_secs(60),
        ..CleansingOptions::default()
    };
    let err = cleanse_frame(frame.ledger(), &a_minute)
        .await
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["60 s is under the minimum of 3600 s", "force"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_inside_the_retention_window_stay_readable() {
    let (_dir, _, frame) = local_plain_frame().await;
    append_rows(&frame, 0..10).await; // v1
    overwrite_rows(&frame, 10..20).await; // v2
    tokio::time::sleep(Duration::from_millis(1500)).await;
    overwrite_rows(&frame, 20..30).await; // v3
    overwrite_rows(&frame, 30..40).await; // v4
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
        let expected: Vec<i64> = (first..first + 10).collect();
        assert_eq!(ids, expected, "version {v}");
    }
    // v1's cell was needed by no kept version.
    assert_eq!(removed(&report, RemovalKind::Cell).len(), 1);
    assert!(frame.ledger().snapshot_at(1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ledger_entries_go_down_to_the_last_checkpoint() {
    let (_dir, meadow) = local_meadow().await;
    let opts = CommitOptions::default().with_checkpoint_interval(10);
    let ledger = bare_ledger(&meadow, &FrameSpec::new(schema()), opts.clone()).await;
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    for i in 0..25i64 {
        append_rows(&frame, i..i + 1).await;
    }
    let report = cleanse_frame(&ledger, &now_only()).await.unwrap();
    assert_eq!(report.oldest_kept_version, Some(25));
    let entries = removed(&report, RemovalKind::LedgerEntry).len();
    let checkpoints = removed(&report, RemovalKind::Checkpoint).len();
    assert_eq!(
        (entries, checkpoints),
        (20, 1),
        "entries 0..20 and checkpoint 10 go; checkpoint 20 stays"
    );
    assert_eq!(removed(&report, RemovalKind::Cell).len(), 0);
    let reopened = reopen(&meadow, opts).await.unwrap();
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

async fn folders_of_dropped_frames_go_after_retention_and_cannot_be_undropped_after(b: Backend) {
    let (reg, frame) = plain_frame(&b.url).await;
    append_rows(&frame, 0..10).await;
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

/// A crash between creating a frame's ledger and registering it leaves a folder no registry
/// entry names: reclaimed after retention, like the staging files of interrupted writes.
#[tokio::test]
async fn crash_leftovers_go_after_retention() {
    let (dir, reg, frame) = local_plain_frame().await;
    append_rows(&frame, 0..10).await;
    let unpublished = reg
        .prepare_frame("h", "b", "g", &FrameSpec::new(schema()))
        .await
        .unwrap();
    let report = cleanse_meadow(&reg, &an_hour()).await.unwrap();
    assert!(
        removed(&report, RemovalKind::Leftover).is_empty(),
        "young: {report:?}"
    );
    age_files(dir.path(), Duration::from_secs(2 * 3600));
    let report = cleanse_meadow(&reg, &an_hour()).await.unwrap();
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
    assert_eq!(live_rows(&frame).await, 10);
}

/// A dropped frame's folder is reclaimed only if it is that frame's own: a registry entry naming
/// another folder (a corrupt or hostile one) makes the flight leave it alone.
#[tokio::test]
async fn a_dropped_frame_whose_folder_is_not_its_own_is_left_alone() {
    let (dir, reg, frame) = local_plain_frame().await;
    append_rows(&frame, 0..10).await;
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
    assert_eq!(live_rows(&frame).await, 10, "f's cells are all there");
}

/// Everything older than now: only with `force`.
fn now_only() -> CleansingOptions {
    CleansingOptions {
        retention: Duration::ZERO,
        dry_run: false,
        force: true,
    }
}

/// The minimum retention, without `force`.
fn an_hour() -> CleansingOptions {
    CleansingOptions {
        retention: Duration::from_secs(3600),
        ..CleansingOptions::default()
    }
}

/// The keys `report` removes (or would) of `kind`.
fn removed(report: &CleansingReport, kind: RemovalKind) -> Vec<&str> {
    report
        .removals
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.key.as_str())
        .collect()
}

/// Parquet objects of the frame folder.
async fn cells_stored(frame: &Frame) -> Vec<String> {
    let ledger = frame.ledger();
    let mut v: Vec<String> = keys_below(ledger.meadow(), ledger.location())
        .await
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

/// The frame's ledger opened again from storage alone.
async fn reopen_frame(frame: &Frame) -> Ledger {
    let ledger = frame.ledger();
    Ledger::open(
        ledger.meadow().clone(),
        ledger.location(),
        "h.b.f",
        CommitOptions::default(),
    )
    .await
    .unwrap()
}

/// The ids read back from the cells of the frame's newest version: how many.
async fn live_rows(frame: &Frame) -> usize {
    let live = frame.ledger().refresh().await.unwrap();
    read_back(frame, &live).await.0.len()
}

apiary_catalog::each_backend!(
    replaced_and_orphaned_cells_go_and_live_ones_stay,
    folders_of_dropped_frames_go_after_retention_and_cannot_be_undropped_after,
);
