//! The ledger: racing appends, conflicting rewrites, version 0, checkpoints, time travel,
//! corruption.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use apiary_catalog::{
    Action, CatalogError, CommitOptions, Frame, FrameSpec, Ledger, Meadow, RetryPolicy,
    WriteOptions,
};

use crate::support::{
    Backend, append_rows, assert_mentions, bare_ledger, local_meadow, local_plain_frame,
    open_frame, overwrite_rows, plain_frame, race, read_back, reopen, schema, try_append,
    write_cells,
};

/// 8 writers × 25 appends, each writer with its own handles: exactly 200 entries, versions
/// 1..=200 contiguous, every cell visible exactly once.
async fn racing_appends_all_land_exactly_once(b: Backend) {
    plain_frame(&b.url).await;
    let writers = race(8, |w, start| {
        let url = b.url.clone();
        async move {
            let frame = open_frame(&url).await;
            start.wait().await;
            let mut versions = vec![];
            let mut lost = 0;
            for i in 0..25i64 {
                let first = (w as i64 * 25 + i) * 10;
                let info = append_rows(&frame, first..first + 10).await;
                assert_eq!((info.cells_added, info.rows_added), (1, 10));
                lost += info.attempts - 1;
                versions.push(info.version);
            }
            (versions, lost)
        }
    })
    .await;
    let mut all_versions = vec![];
    let mut lost_races = 0;
    for (v, lost) in writers {
        all_versions.extend(v);
        lost_races += lost;
    }
    all_versions.sort_unstable();
    assert_eq!(all_versions, (1..=200).collect::<Vec<u64>>(), "{b}");
    assert!(lost_races > 0, "{b}: the writers never raced");

    let frame = open_frame(&b.url).await;
    let ledger = frame.ledger();
    let snap = ledger.latest();
    assert_eq!(snap.version, 200, "{b}");
    assert_eq!(snap.cell_count(), 200, "{b}");
    let entries = ledger.entries(0).await.unwrap();
    assert_eq!(entries.len(), 201);
    let adds = entries
        .iter()
        .filter(|e| matches!(e.action, Action::AddCells { .. }))
        .count();
    assert_eq!(adds, 200, "{b}");
    let (ids, _) = read_back(&frame, &snap).await;
    assert_eq!(
        ids,
        (0..2000).collect::<Vec<i64>>(),
        "{b}: every row exactly once"
    );
    println!("{b}: 200 commits, {lost_races} lost races rebased");
}

/// Two rewrites of the same cell from the same snapshot: exactly one wins; the other fails with
/// the conflict error naming the cell and the winner.
async fn rewrite_vs_rewrite_has_one_winner_and_a_clear_conflict(b: Backend) {
    let (_, frame) = plain_frame(&b.url).await;
    for round in 0..5i64 {
        append_rows(&frame, round * 100..round * 100 + 5).await;
        let read = frame.ledger().refresh().await.unwrap();
        let victim = read.cells().next().unwrap().path.clone();
        let outcomes = race(2, |_, start| {
            let (frame, read, victim) = (frame.clone(), Arc::clone(&read), victim.clone());
            async move {
                let cells = write_cells(&frame, &read, 0..1).await;
                start.wait().await;
                let rewrite = Action::RewriteCells {
                    removed: vec![victim],
                    added: cells,
                };
                frame.ledger().commit(&read, "COMPACT", rewrite).await
            }
        })
        .await;
        let mut ok = 0;
        let mut conflicts = vec![];
        for outcome in outcomes {
            match outcome {
                Ok(_) => ok += 1,
                Err(e @ CatalogError::Conflict(_)) => conflicts.push(e.to_string()),
                Err(e) => panic!("{b}: unexpected error {e}"),
            }
        }
        assert_eq!((ok, conflicts.len()), (1, 1), "{b}: round {round}");
        let msg = &conflicts[0];
        assert!(msg.contains("commit conflict on frame h.b.f"), "{msg}");
        assert!(msg.contains(&victim), "{msg}");
        assert!(msg.contains("COMPACT"), "{msg}");
        // The loser's cells are not visible; the frame holds the winner's state.
        let snap = frame.ledger().refresh().await.unwrap();
        assert!(snap.cell(&victim).is_none(), "{b}");
        assert_eq!(snap.version, read.version + 1, "{b}");
    }
}

/// An overwrite racing an append: both land (the append rebases over the rewrite).
async fn append_rebases_over_a_concurrent_overwrite(b: Backend) {
    let (_, frame) = plain_frame(&b.url).await;
    append_rows(&frame, 0..10).await;
    let read = frame.ledger().latest();
    let (f1, f2) = (frame.clone(), frame.clone());
    let r1 = Arc::clone(&read);
    let overwrite = tokio::spawn(async move {
        let cells = write_cells(&f1, &r1, 100..105).await;
        f1.commit_cells(&r1, "OVERWRITE", cells, true).await
    });
    let append = tokio::spawn(async move { try_append(&f2, 200..203).await });
    overwrite.await.unwrap().unwrap();
    append.await.unwrap().unwrap();
    let snap = frame.ledger().refresh().await.unwrap();
    let (ids, _) = read_back(&frame, &snap).await;
    let ids: BTreeSet<i64> = ids.into_iter().collect();
    assert!(ids.contains(&100) && ids.contains(&200), "{b}: {ids:?}");
    assert!(!ids.contains(&0), "{b}: the overwritten rows are gone");
}

async fn version_zero_has_exactly_one_creator(b: Backend) {
    let meadow = Meadow::open(&b.url).await.unwrap();
    let outcomes = race(8, |i, start| {
        let meadow = meadow.clone();
        async move {
            start.wait().await;
            let spec = FrameSpec::new(schema());
            let opts = CommitOptions::default();
            Ledger::create(meadow, "h/b/f/x", "h.b.f", format!("id{i}"), &spec, opts).await
        }
    })
    .await;
    let mut winners = vec![];
    for outcome in outcomes {
        match outcome {
            Ok(l) => winners.push(l.latest().frame_id.clone()),
            Err(CatalogError::AlreadyExists { .. }) => {}
            Err(e) => panic!("{b}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{b}");
    let opened = Ledger::open(meadow, "h/b/f/x", "h.b.f", CommitOptions::default())
        .await
        .unwrap();
    assert_eq!(opened.latest().frame_id, winners[0], "{b}");
}

/// Loading through a checkpoint gives exactly the state of a full replay, and really uses the
/// checkpoint (it still loads once the entries before it are gone).
async fn crossing_a_checkpoint_equals_the_full_replay(b: Backend) {
    let meadow = Meadow::open(&b.url).await.unwrap();
    let opts = CommitOptions::default().with_checkpoint_interval(10);
    let ledger = bare_ledger(&meadow, &FrameSpec::new(schema()), opts.clone()).await;
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    for i in 0..25i64 {
        let ids = i * 10..i * 10 + 3;
        if i % 7 == 6 {
            // Some rewrites, so that removals cross the checkpoint too.
            overwrite_rows(&frame, ids).await;
        } else {
            append_rows(&frame, ids).await;
        }
    }
    // Full replay: hide the checkpoints and the hint.
    let hint = meadow
        .get("f/_ledger/_last_checkpoint")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hint.as_ref(), br#"{"version":20}"#, "{b}");
    let checkpoints = meadow.list("f/_ledger/_checkpoint").await.unwrap();
    assert_eq!(checkpoints.len(), 2, "{b}: checkpoints at 10 and 20");
    let mut saved = vec![];
    for c in &checkpoints {
        let rel = meadow.relative(&c.location).unwrap().to_string();
        saved.push((rel.clone(), meadow.get(&rel).await.unwrap().unwrap()));
        meadow.delete(&rel).await.unwrap();
    }
    meadow.delete("f/_ledger/_last_checkpoint").await.unwrap();
    let replayed = reopen(&meadow, opts.clone()).await.unwrap().latest();
    // Restore them, and remove every entry the checkpoint covers.
    for (rel, body) in saved {
        meadow.put(&rel, body).await.unwrap();
    }
    meadow
        .put("f/_ledger/_last_checkpoint", hint)
        .await
        .unwrap();
    for v in 0..=20u64 {
        meadow
            .delete(&format!("f/_ledger/{v:020}.json"))
            .await
            .unwrap();
    }
    let via_checkpoint = reopen(&meadow, opts).await.unwrap().latest();
    assert_eq!(via_checkpoint.version, 25, "{b}");
    assert_eq!(*via_checkpoint, *replayed, "{b}");
    assert_eq!(*via_checkpoint, *ledger.latest(), "{b}");
}

async fn any_version_can_be_read(b: Backend) {
    let meadow = Meadow::open(&b.url).await.unwrap();
    let opts = CommitOptions::default().with_checkpoint_interval(4);
    let ledger = bare_ledger(&meadow, &FrameSpec::new(schema()), opts).await;
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    for i in 0..10i64 {
        append_rows(&frame, 0..i + 1).await;
    }
    for v in 0..=10u64 {
        let snap = ledger.snapshot_at(v).await.unwrap();
        assert_eq!(snap.version, v, "{b}");
        assert_eq!(snap.cell_count() as u64, v, "{b}");
        assert_eq!(snap.row_count(), v * (v + 1) / 2, "{b}");
    }
    let err = ledger.snapshot_at(11).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "ledger of frame h.b.f has no version 11 (latest is 10)"
    );
}

#[tokio::test]
async fn corrupt_entries_and_checkpoints_are_errors_naming_the_key() {
    let (dir, meadow) = local_meadow().await;
    let opts = CommitOptions::default().with_checkpoint_interval(2);
    let ledger = bare_ledger(&meadow, &FrameSpec::new(schema()), opts.clone()).await;
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    for i in 0..3 {
        append_rows(&frame, i..i + 1).await;
    }
    let ledger_dir = dir.path().join("f/_ledger");
    // A torn entry after the newest version.
    std::fs::write(
        ledger_dir.join("00000000000000000004.json"),
        b"{\"version\": 4, \"timest",
    )
    .unwrap();
    let err = ledger.refresh().await.unwrap_err().to_string();
    assert_mentions(
        &err,
        &["f/_ledger/00000000000000000004.json", "not valid JSON"],
    );
    // An entry whose content claims another version.
    let three = std::fs::read(ledger_dir.join("00000000000000000003.json")).unwrap();
    std::fs::write(ledger_dir.join("00000000000000000004.json"), &three).unwrap();
    let err = ledger.refresh().await.unwrap_err().to_string();
    assert_mentions(&err, &["00000000000000000004.json", "claims version 3"]);
    std::fs::remove_file(ledger_dir.join("00000000000000000004.json")).unwrap();
    // A broken checkpoint.
    let checkpoint = ledger_dir.join("_checkpoint/00000000000000000002.json");
    std::fs::write(checkpoint, b"[]").unwrap();
    let err = reopen(&meadow, opts.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("_checkpoint/00000000000000000002.json"),
        "{err}"
    );
    // A cell record with a bound of the wrong type names the key, the cell and the column.
    let bad_cell = r#"{"version":4,"timestamp_ms":0,"writer":"w","operation":"WRITE","action":{"add_cells":{"cells":[{"path":"cell_x.parquet","size":1,"rows":1,"stats":{"id":{"min":"one","max":1,"nulls":0}}}]}}}"#;
    std::fs::write(ledger_dir.join("00000000000000000004.json"), bad_cell).unwrap();
    let err = ledger.refresh().await.unwrap_err().to_string();
    assert_mentions(
        &err,
        &["00000000000000000004.json", "cell_x.parquet", "column id"],
    );
    // Nothing panicked, nothing was skipped, and the handle still holds the last good version.
    assert_eq!(ledger.latest().version, 3);
}

#[tokio::test]
async fn a_writer_gives_up_after_its_budget_with_an_error_saying_so() {
    let (_dir, meadow) = local_meadow().await;
    let opts = CommitOptions::default().with_retry(attempts(3));
    let ledger = bare_ledger(&meadow, &FrameSpec::new(schema()), opts.clone()).await;
    let read = ledger.latest();
    // Another writer keeps winning: pre-create many versions with a different handle.
    let other = reopen(&meadow, opts).await.unwrap();
    let other_frame = Frame::new(other, WriteOptions::default());
    for i in 0..3 {
        append_rows(&other_frame, i..i + 1).await;
    }
    // `read` is stale: each attempt loses and catches up by one GET of what exists, so with a
    // budget of 3 attempts against 3 existing versions it rebases and then wins — but a budget
    // of 1 loses.
    let once = reopen(&meadow, CommitOptions::default().with_retry(attempts(1)))
        .await
        .unwrap();
    let nothing = || Action::AddCells { cells: vec![] };
    let err = once
        .commit(&read, "WRITE", nothing())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up committing to ledger of h.b.f after 1 attempts"),
        "{err}"
    );
    assert!(err.contains("retry budget exhausted"), "{err}");
    let info = ledger.commit(&read, "WRITE", nothing()).await.unwrap();
    assert_eq!(info.version, 4);
    let entries = ledger.entries(0).await.unwrap();
    let seen: HashSet<u64> = entries.iter().map(|e| e.version).collect();
    assert_eq!(seen.len(), 5);
}

/// Version 0 carries the frame's protocol. A reader feature this build does not know makes the
/// frame unreadable, a writer feature makes it read-only — each refusal names the feature. A
/// ledger written before protocols (none in version 0) reads and writes as protocol 1.
#[tokio::test]
async fn a_frame_of_an_unknown_protocol_is_refused_by_name() {
    let (dir, meadow) = local_meadow().await;
    bare_ledger(&meadow, &FrameSpec::new(schema()), CommitOptions::default()).await;
    let zero = dir.path().join("f/_ledger/00000000000000000000.json");
    let written = std::fs::read_to_string(&zero).unwrap();
    assert_mentions(&written, &[PROTOCOL_1, r#""commit_id":"#]);
    // Version 0 rewritten with the protocol's `features` (or none), then opened again.
    let reopen_with = |features: Option<&str>| {
        let body = match features {
            Some(f) => written.replace(
                PROTOCOL_1,
                &format!(r#""protocol":{{"min_reader_version":1,"min_writer_version":1,{f}}}"#),
            ),
            None => {
                let old = written.replace(&format!(",{PROTOCOL_1}"), "");
                assert!(!old.contains("protocol"), "{old}");
                old
            }
        };
        std::fs::write(&zero, body).unwrap();
        reopen(&meadow, CommitOptions::default())
    };

    // A writer-only feature: readable, never written to.
    let read_only = reopen_with(Some(r#""writer_features":["row_level_changes"]"#))
        .await
        .unwrap();
    let frame = Frame::new(read_only, WriteOptions::default());
    let err = try_append(&frame, 0..1).await.unwrap_err().to_string();
    assert_mentions(
        &err,
        &[
            "frame h.b.f cannot be used by this build",
            "\"row_level_changes\"",
        ],
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("f")).unwrap().count(),
        1,
        "nothing was written but the ledger"
    );

    // A reader feature this build does not know: not even readable.
    let unknown =
        r#""reader_features":["deletion_vectors"],"writer_features":["deletion_vectors"]"#;
    let err = reopen_with(Some(unknown)).await.unwrap_err().to_string();
    assert_mentions(&err, &["\"deletion_vectors\"", "cannot read"]);

    // One it knows (`schema_evolution`, which an ALTER TABLE declares): readable and writable.
    let known = r#""reader_features":["schema_evolution"],"writer_features":["schema_evolution"]"#;
    let evolving = reopen_with(Some(known)).await.unwrap();
    append_rows(&Frame::new(evolving, WriteOptions::default()), 0..1).await;

    // Written before protocols: protocol 1.
    let ledger = reopen_with(None).await.unwrap();
    append_rows(&Frame::new(ledger, WriteOptions::default()), 0..1).await;
}

/// A cell path a ledger holds must name a Parquet file in the frame's own folder (and its
/// partition folders): anything else is a corrupt object, named — it could reach another
/// frame's files. Nothing such is ever committed either: an entry is decoded again before its
/// conditional create.
#[tokio::test]
async fn cell_paths_outside_the_frame_folder_are_refused_on_read_and_on_commit() {
    let (dir, meadow) = local_meadow().await;
    let spec = FrameSpec::new(schema()).with_partition_by(["region"]);
    let ledger = bare_ledger(&meadow, &spec, CommitOptions::default()).await;
    let frame = Frame::new(ledger.clone(), WriteOptions::default());
    append_rows(&frame, 0..4).await;
    let good = ledger.latest().cells().next().unwrap().as_ref().clone();

    for bad in [
        "../g/region=eu/cell_x.parquet",
        "region=eu/../../x.parquet",
        "cell_x.parquet",
        "region=eu/cell_x.csv",
        "_ledger/00000000000000000001.json",
    ] {
        let mut cell = good.clone();
        cell.path = bad.to_string();
        let add = Action::AddCells {
            cells: vec![Arc::new(cell)],
        };
        let err = ledger
            .commit(&ledger.latest(), "WRITE", add)
            .await
            .unwrap_err()
            .to_string();
        assert_mentions(&err, &["would not read back", bad]);
    }
    assert_eq!(
        ledger.refresh().await.unwrap().version,
        1,
        "nothing was committed"
    );

    let entry = dir.path().join("f/_ledger/00000000000000000001.json");
    let body = std::fs::read_to_string(&entry).unwrap();
    std::fs::write(
        dir.path().join("f/_ledger/00000000000000000002.json"),
        body.replace(&good.path, "../other/region=eu/cell_x.parquet")
            .replace(r#""version":1"#, r#""version":2"#),
    )
    .unwrap();
    let err = ledger.refresh().await.unwrap_err().to_string();
    assert_mentions(
        &err,
        &["corrupt object f/_ledger/00000000000000000002.json", "'..'"],
    );
}

/// A snapshot narrowed to some cells (to read them) can never be the base of a commit: an
/// overwrite on it would take the subset for the whole frame.
#[tokio::test]
async fn a_subset_of_cells_is_never_committed_as_the_whole_frame() {
    let (_dir, _, frame) = local_plain_frame().await;
    for i in 0..2 {
        append_rows(&frame, i * 10..i * 10 + 10).await;
    }
    let latest = frame.ledger().latest();
    let first = latest.cells().next().unwrap().path.clone();
    let subset = latest.with_cells_where(|c| c.path == first);
    let err = frame
        .commit_cells(&subset, "OVERWRITE", vec![], true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("a subset of the cells of version 2"), "{err}");
    assert_eq!(frame.ledger().refresh().await.unwrap().cell_count(), 2);
}

/// Version 0's protocol as this build writes it.
const PROTOCOL_1: &str = r#""protocol":{"min_reader_version":1,"min_writer_version":1}"#;

/// A retry policy of at most `max_attempts` attempts.
fn attempts(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        ..RetryPolicy::default()
    }
}

apiary_catalog::each_backend!(
    rewrite_vs_rewrite_has_one_winner_and_a_clear_conflict,
    append_rebases_over_a_concurrent_overwrite,
    version_zero_has_exactly_one_creator,
    crossing_a_checkpoint_equals_the_full_replay,
    any_version_can_be_read,
);

apiary_catalog::each_backend!(
    [local, s3]
    racing_appends_all_land_exactly_once,
);
