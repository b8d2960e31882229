//! The registry: names, if-(not-)exists semantics, drops, races, freshness, checkpoints.

use apiary_catalog::{
    CatalogError, CommitOptions, Creation, FrameSpec, IfExists, IfMissing, Meadow, Registry,
};

use crate::support::{
    Backend, append_rows, assert_mentions, counting_meadow, create_hive_and_box, keys_below,
    plain_frame, race, registry, schema,
};

async fn create_list_get_and_drop_with_explicit_semantics(b: Backend) {
    let reg = registry(&b.url).await;
    assert!(
        reg.create_hive("sales", IfExists::Fail)
            .await
            .unwrap()
            .was_created()
    );
    let again = reg.create_hive("sales", IfExists::Keep).await.unwrap();
    assert!(matches!(again, Creation::Existing(_)), "{b}");
    let err = reg.create_hive("sales", IfExists::Fail).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::AlreadyExists { .. }),
        "{b}: {err}"
    );
    assert_eq!(err.to_string(), "hive sales already exists");

    reg.create_box("sales", "eu", IfExists::Fail).await.unwrap();
    reg.create_box("sales", "us", IfExists::Fail).await.unwrap();
    let spec = FrameSpec::new(schema());
    reg.create_frame("sales", "eu", "orders", &spec, IfExists::Fail)
        .await
        .unwrap();
    let err = reg
        .create_frame("sales", "eu", "orders", &spec, IfExists::Fail)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame sales.eu.orders already exists",
        "{b}"
    );
    let kept = reg
        .create_frame("sales", "eu", "orders", &spec, IfExists::Keep)
        .await
        .unwrap();
    assert!(!kept.was_created(), "{b}");

    let s = reg.snapshot();
    assert_eq!(s.hive_names(), vec!["sales"]);
    assert_eq!(s.box_names("sales").unwrap(), vec!["eu", "us"]);
    assert_eq!(s.frame_names("sales", "eu").unwrap(), vec!["orders"]);
    assert!(s.frame("sales", "eu", "orders").is_ok());

    // Unknown names are errors naming them.
    assert_eq!(
        s.hive("nope").unwrap_err().to_string(),
        "hive nope not found"
    );
    assert_eq!(
        s.frame("sales", "eu", "nope").unwrap_err().to_string(),
        "frame sales.eu.nope not found"
    );
    let err = reg
        .create_box("nope", "x", IfExists::Fail)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "hive nope not found");

    // Drops: RESTRICT by default, IF EXISTS explicit.
    let err = reg
        .drop_box("sales", "eu", IfMissing::Fail, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("box sales.eu is not empty (frames: orders)"),
        "{err}"
    );
    assert!(
        reg.drop_frame("sales", "eu", "orders", IfMissing::Fail)
            .await
            .unwrap()
    );
    assert!(
        !reg.drop_frame("sales", "eu", "orders", IfMissing::Ignore)
            .await
            .unwrap()
    );
    let err = reg
        .drop_frame("sales", "eu", "orders", IfMissing::Fail)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "frame sales.eu.orders not found");
    assert!(
        reg.drop_box("sales", "eu", IfMissing::Fail, false)
            .await
            .unwrap()
    );
    let err = reg
        .drop_hive("sales", IfMissing::Fail, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hive sales is not empty"), "{err}");
    assert!(reg.drop_hive("sales", IfMissing::Fail, true).await.unwrap());
    assert!(reg.snapshot().hive_names().is_empty());
    assert_eq!(
        reg.snapshot().dropped.len(),
        1,
        "{b}: dropped frames are remembered"
    );
}

#[tokio::test]
async fn bad_names_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let reg = registry(root.to_str().unwrap()).await;
    for bad in [
        "",
        "..",
        "../x",
        "a/b",
        "a\\b",
        "a\0b",
        "_x",
        "1x",
        "a b",
        &"x".repeat(129),
    ] {
        let err = reg
            .create_hive(bad, IfExists::Fail)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid hive name"), "{err}");
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
    reg.create_hive("h", IfExists::Fail).await.unwrap();
    let err = reg
        .create_box("h", "..", IfExists::Fail)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid box name \"..\""), "{err}");
    reg.create_box("h", "b", IfExists::Fail).await.unwrap();
    let err = reg
        .create_frame("h", "b", "/etc", &FrameSpec::new(schema()), IfExists::Fail)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid frame name \"/etc\""), "{err}");
    // Names that differ only in case would collide on case-insensitive file systems.
    let err = reg
        .create_hive("H", IfExists::Fail)
        .await
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["hive H cannot be created", "existing hive h"]);
    // Nothing was written beside the root, and inside it only the registry.
    let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(beside.len(), 1);
    let inside: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(inside, vec!["_registry"]);
}

async fn a_recreated_frame_never_sees_the_old_one(b: Backend) {
    let (reg, frame) = plain_frame(&b.url).await;
    append_rows(&frame, 0..10).await;
    let old = reg.snapshot().frame("h", "b", "f").unwrap().clone();
    reg.drop_frame("h", "b", "f", IfMissing::Fail)
        .await
        .unwrap();
    let err = reg.open_ledger("h", "b", "f").await.unwrap_err();
    assert_eq!(err.to_string(), "frame h.b.f not found", "{b}");
    reg.create_frame("h", "b", "f", &FrameSpec::new(schema()), IfExists::Fail)
        .await
        .unwrap();
    let new = reg.snapshot().frame("h", "b", "f").unwrap().clone();
    assert_ne!(old.id, new.id, "{b}");
    assert_ne!(old.location, new.location, "{b}");
    let ledger = reg.open_ledger("h", "b", "f").await.unwrap();
    let snap = ledger.latest();
    assert_eq!((snap.version, snap.cell_count()), (0, 0), "{b}");
    assert_eq!(snap.frame_id, new.id);
    // The old frame's data is still there (soft drop) for cleanup to reclaim.
    assert!(
        !reg.meadow().list(&old.location).await.unwrap().is_empty(),
        "{b}"
    );
}

async fn concurrent_frame_creation_has_exactly_one_winner(b: Backend) {
    create_hive_and_box(&registry(&b.url).await, IfExists::Fail).await;
    let outcomes = race(8, |_, start| {
        let url = b.url.clone();
        async move {
            // Each creator has its own handle and cache, as separate processes would.
            let reg = registry(&url).await;
            start.wait().await;
            reg.create_frame("h", "b", "f", &FrameSpec::new(schema()), IfExists::Fail)
                .await
        }
    })
    .await;
    let mut won = 0;
    for outcome in outcomes {
        match outcome {
            Ok(Creation::Created(_)) => won += 1,
            Err(CatalogError::AlreadyExists { .. }) => {}
            other => panic!("{b}: unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1, "{b}");
    let reg = registry(&b.url).await;
    let record = reg.snapshot().frame("h", "b", "f").unwrap().clone();
    // The losers' unused ledgers were removed: only the winner's version 0 remains.
    let ledgers = keys_below(reg.meadow(), "h/b/f").await;
    assert_eq!(
        ledgers,
        vec![format!(
            "{}/_ledger/00000000000000000000.json",
            record.location
        )],
        "{b}"
    );
}

#[tokio::test]
async fn refresh_is_one_get_and_sees_other_writers() {
    let (meadow, counting) = counting_meadow();
    let a = open_on(&meadow, CommitOptions::default()).await.unwrap();
    let b = open_on(&meadow, CommitOptions::default()).await.unwrap();
    a.create_hive("h", IfExists::Fail).await.unwrap();
    assert!(
        b.snapshot().hive("h").is_err(),
        "b's cache is stale until refreshed"
    );
    counting.take();
    let s = b.refresh().await.unwrap();
    assert!(s.hive("h").is_ok());
    let calls = counting.take();
    // A probe of the next version that hits, a probe listing after it, then nothing else.
    assert_eq!(calls.get("get"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("list_with_offset"), Some(&1), "{calls:?}");
    // Nothing new: exactly one GET, no listing.
    b.refresh().await.unwrap();
    let calls = counting.take();
    assert_eq!(calls.into_iter().collect::<Vec<_>>(), vec![("get", 1)]);
}

#[tokio::test]
async fn loading_reads_the_checkpoint_not_the_history() {
    let (meadow, counting) = counting_meadow();
    let opts = CommitOptions::default().with_checkpoint_interval(10);
    let reg = open_on(&meadow, opts.clone()).await.unwrap();
    for i in 0..23 {
        reg.create_hive(&format!("h{i}"), IfExists::Fail)
            .await
            .unwrap();
    }
    let replayed = reg.snapshot();
    assert_eq!(replayed.version, 23);
    counting.take();
    let fresh = open_on(&meadow, opts).await.unwrap();
    assert_eq!(*fresh.snapshot(), *replayed);
    let calls = counting.take();
    // The hint, checkpoint 20, one listing after it, entries 21..=23.
    assert_eq!(calls.get("get"), Some(&5), "{calls:?}");
    assert_eq!(calls.get("list_with_offset"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("list"), None, "{calls:?}");
}

#[tokio::test]
async fn a_corrupt_registry_entry_is_an_error_naming_it() {
    let (dir, url, reg) = local_registry_with_hive().await;
    std::fs::write(
        dir.path().join("_registry/00000000000000000002.json"),
        b"{not json",
    )
    .unwrap();
    let err = reg.refresh().await.unwrap_err().to_string();
    assert!(err.contains("_registry/00000000000000000002.json"), "{err}");
    let err = reopen_err(&url).await;
    assert_mentions(&err, &["corrupt object", "00000000000000000002.json"]);
}

/// A registry written before 20-digit names and commit ids (`state_{version:06}.json`, no
/// version 0) still reads as protocol 1, and new entries get 20-digit names after its last one.
#[tokio::test]
async fn a_registry_with_six_digit_names_still_reads_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let folder = dir.path().join("_registry");
    std::fs::create_dir_all(&folder).unwrap();
    for (v, hive) in [(1, "old1"), (2, "old2")] {
        let body = format!(
            r#"{{"version":{v},"timestamp_ms":0,"writer":"old:1","action":{{"create_hive":{{"name":"{hive}","id":"id{v}"}}}}}}"#
        );
        std::fs::write(folder.join(format!("state_{v:06}.json")), body).unwrap();
    }
    let reg = registry(&url).await;
    assert_eq!(reg.snapshot().hive_names(), ["old1", "old2"]);
    reg.create_hive("new", IfExists::Fail).await.unwrap();
    assert!(folder.join("00000000000000000003.json").exists());
    let fresh = registry(&url).await;
    assert_eq!(fresh.snapshot().hive_names(), ["new", "old1", "old2"]);
    assert_eq!(fresh.snapshot().version, 3);
}

/// Version 0 of a registry records its protocol: a newer one than this build knows is refused
/// by name, for reading and for writing.
#[tokio::test]
async fn a_registry_of_a_newer_protocol_is_refused_by_name() {
    let (dir, url, _reg) = local_registry_with_hive().await;
    let zero = dir.path().join("_registry/00000000000000000000.json");
    let body = std::fs::read_to_string(&zero).unwrap();
    assert!(body.contains(r#""min_reader_version":1"#), "{body}");
    std::fs::write(
        &zero,
        body.replace(r#""min_reader_version":1"#, r#""min_reader_version":9"#),
    )
    .unwrap();
    let err = reopen_err(&url).await;
    assert_mentions(
        &err,
        &[
            "the registry cannot be used by this build",
            "reader version 9",
        ],
    );
}

/// A registry on a fresh local folder (a plain path; returned too) with a hive `h`.
async fn local_registry_with_hive() -> (tempfile::TempDir, String, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let reg = registry(&url).await;
    reg.create_hive("h", IfExists::Fail).await.unwrap();
    (dir, url, reg)
}

/// A registry of its own on `meadow`.
async fn open_on(meadow: &Meadow, opts: CommitOptions) -> Result<Registry, CatalogError> {
    Registry::open(meadow.clone(), opts).await
}

/// The error of opening the registry at `url` anew.
async fn reopen_err(url: &str) -> String {
    let meadow = Meadow::open(url).await.unwrap();
    open_on(&meadow, CommitOptions::default())
        .await
        .unwrap_err()
        .to_string()
}

apiary_catalog::each_backend!(
    create_list_get_and_drop_with_explicit_semantics,
    a_recreated_frame_never_sees_the_old_one,
    concurrent_frame_creation_has_exactly_one_winner,
);
