//! Commits under injected faults: a failure before the store, an error after the store kept the
//! object (the ambiguous answer), a timeout, a 503, and the store client's own retry of a create
//! that had landed. Eight writers make 25 appends each while one call in ten is faulted: exactly
//! 200 appends land, every row once, every active cell present. Rewrites under faults leave no
//! active cell missing. Each backend is a test of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apiary_catalog::testing::Backend;
use apiary_catalog::testing::faults::{Fault, Faults, Op, Rule};
use apiary_catalog::{
    CommitOptions, Frame, FrameSpec, IfExists, Meadow, Registry, RetryPolicy, WriteOptions,
};

use crate::support::{batch, create_frame, read_back, schema, stream};

/// The store client retried a create that had landed and got "already exists" (seen on S3 with
/// 503s after the store kept the object): the commit is this writer's, not a rival's to rebase
/// onto — one append, one entry. And an error after the store kept the entry: the append
/// succeeded, and its cells are kept. Likewise for an overwrite, and for the registry.
async fn lost_answers_are_recovered_by_reading_back(b: Backend) {
    let url = b.url.as_str();
    let faults = Faults::new(0);
    let reg = open(url, &faults).await;
    create_frame(&reg, &FrameSpec::new(schema())).await;
    let frame = frame_of(&reg).await;
    for (i, fault) in [
        Fault::Replay,
        Fault::After,
        Fault::Timeout(Duration::from_millis(5)),
    ]
    .into_iter()
    .enumerate()
    {
        faults.add_rule(
            Rule::new(fault)
                .on(&[Op::Create])
                .key_contains("_ledger/")
                .times(1),
        );
        let first = i as i64 * ROWS;
        let info = frame
            .append(stream(vec![batch(first..first + ROWS, &["eu"])]), "WRITE")
            .await
            .unwrap_or_else(|e| panic!("{url}: append under {fault:?}: {e}"));
        assert!(info.read_back, "{url}: {fault:?}: {info:?}");
    }
    // An overwrite whose answer is lost: reported as done, its new cells kept.
    faults.add_rule(
        Rule::new(Fault::After)
            .on(&[Op::Create])
            .key_contains("_ledger/")
            .times(1),
    );
    frame
        .overwrite(stream(vec![batch(100..104, &["eu"])]), "OVERWRITE")
        .await
        .unwrap_or_else(|e| panic!("{url}: overwrite: {e}"));
    let latest = frame.ledger().refresh().await.unwrap();
    assert_eq!(latest.version, 4, "{url}: one entry per commit");
    assert_eq!(
        read_back(&frame, &latest).await.0,
        (100..104).collect::<Vec<_>>()
    );
    // The registry: a hive whose creation answer was lost is created, not "already exists".
    faults.add_rule(
        Rule::new(Fault::Replay)
            .on(&[Op::Create])
            .key_contains("_registry/")
            .times(1),
    );
    let created = reg.create_hive("g", IfExists::Fail).await;
    assert!(
        created.as_ref().is_ok_and(|c| c.was_created()),
        "{url}: {created:?}"
    );
    assert_eq!(faults.injections().values().sum::<usize>(), 5, "{url}");
}

const WRITERS: i64 = 8;
const APPENDS: i64 = 25;
const ROWS: i64 = 4;

/// One call in ten faulted, spread over the kinds of fault.
fn storm(seed: u64) -> Faults {
    let faults = Faults::new(seed);
    for fault in [
        Fault::Before,
        Fault::After,
        Fault::Timeout(Duration::from_millis(5)),
        Fault::Unavailable,
        Fault::Replay,
    ] {
        faults.add_rule(Rule::new(fault).probability(0.021));
    }
    faults
}

/// The counts a storm leaves, for the closing note.
#[derive(Debug, Default)]
struct Tally {
    attempted: AtomicUsize,
    failed: AtomicUsize,
    read_back: AtomicUsize,
}

async fn open(url: &str, faults: &Faults) -> Registry {
    let meadow = Meadow::open(url)
        .await
        .expect("open meadow")
        .with_store_layer(faults.layer());
    // Short backoffs: the storm is about outcomes, not patience.
    let retry = RetryPolicy {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    Registry::open(meadow, CommitOptions::default().with_retry(retry))
        .await
        .expect("open registry")
}

async fn appends_under_faults_land_exactly_once(b: Backend) {
    let (url, seed) = (b.url.as_str(), seed(&b, 1));
    let spec = FrameSpec::new(schema()).with_partition_by(["region"]);
    let (reg, faults) = storm_over_frame(url, seed, &spec).await;

    let tally = Arc::new(Tally::default());
    let mut writers = vec![];
    for w in 0..WRITERS {
        let (reg, tally) = (reg.clone(), Arc::clone(&tally));
        writers.push(tokio::spawn(async move {
            // Each writer opens the frame once and keeps it, as a session does; every append
            // then refreshes it.
            let frame = open_until_it_opens(&reg).await;
            for i in 0..APPENDS {
                let first = (w * APPENDS + i) * ROWS;
                loop {
                    tally.attempted.fetch_add(1, Ordering::SeqCst);
                    let rows = batch(first..first + ROWS, &["eu", "us"]);
                    match frame.append(stream(vec![rows]), "WRITE").await {
                        Ok(info) => {
                            if info.read_back {
                                tally.read_back.fetch_add(1, Ordering::SeqCst);
                            }
                            break;
                        }
                        Err(e) if e.proves_nothing_committed() => {
                            tally.failed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("append {first}: outcome unknown: {e}"),
                    }
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    faults.set_enabled(false);

    let frame = frame_of(&reg).await;
    let latest = frame.ledger().refresh().await.unwrap();
    let entries = frame.ledger().entries(1).await.unwrap();
    assert_eq!(
        entries.len() as i64,
        WRITERS * APPENDS,
        "{url}: exactly one entry per append ({} entries)",
        entries.len()
    );
    // Every row once, read from the cells themselves (a missing cell fails the read).
    let (ids, _) = read_back(&frame, &latest).await;
    let expected: Vec<i64> = (0..WRITERS * APPENDS * ROWS).collect();
    assert_eq!(ids, expected, "{url}: every row once");
    let report = apiary_catalog::check_meadow(&reg).await.unwrap();
    assert!(report.is_ok(), "{url}: {:?}", report.problems);
    let ambiguous = faults.injected(Fault::After)
        + faults.injected(Fault::Timeout(Duration::ZERO))
        + faults.injected_on(Op::Create, Fault::Replay);
    println!(
        "{url}: storm of seed {seed}: {} appends attempted ({} failed and were retried), {} \
         faults injected ({ambiguous} ambiguous), {} commits resolved by read-back; {} rows \
         committed, {} found",
        tally.attempted.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
        faults.injections().values().sum::<usize>(),
        tally.read_back.load(Ordering::SeqCst),
        WRITERS * APPENDS * ROWS,
        ids.len()
    );
    assert!(
        faults.injected_on(Op::Create, Fault::After)
            + faults.injected_on(Op::Create, Fault::Replay)
            > 0,
        "{url}: the storm hit commits ambiguously: {:?}",
        faults.injections()
    );
}

/// Overwrites racing appends while calls fail: whatever each commit's outcome, the active cells
/// of the newest version are all in storage and the check passes.
async fn rewrites_under_faults_lose_no_active_cell(b: Backend) {
    let (url, seed) = (b.url.as_str(), seed(&b, 4));
    let (reg, faults) = storm_over_frame(url, seed, &FrameSpec::new(schema())).await;
    let mut tasks = vec![];
    for w in 0..4i64 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let frame = open_until_it_opens(&reg).await;
            for i in 0..10i64 {
                let first = (w * 10 + i) * ROWS;
                let rows = stream(vec![batch(first..first + ROWS, &["eu"])]);
                let outcome = if w % 2 == 0 {
                    frame.overwrite(rows, "OVERWRITE").await
                } else {
                    frame.append(rows, "WRITE").await
                };
                if let Err(e) = outcome {
                    assert!(
                        e.proves_nothing_committed() || e.to_string().contains("may or may not"),
                        "{e}"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    faults.set_enabled(false);
    let frame = frame_of(&reg).await;
    let latest = frame.ledger().refresh().await.unwrap();
    read_back(&frame, &latest).await; // fails on a missing cell
    let report = apiary_catalog::check_meadow(&reg).await.unwrap();
    assert!(report.is_ok(), "{url}: {:?}", report.problems);
}

/// A registry over a [`storm`] of `seed` (off while it makes frame `h.b.f` of `spec`, on after).
async fn storm_over_frame(url: &str, seed: u64, spec: &FrameSpec) -> (Registry, Faults) {
    let faults = storm(seed);
    faults.set_enabled(false);
    let reg = open(url, &faults).await;
    create_frame(&reg, spec).await;
    faults.set_enabled(true);
    (reg, faults)
}

/// Frame `h.b.f` of `reg`.
async fn frame_of(reg: &Registry) -> Frame {
    let ledger = reg.open_ledger("h", "b", "f").await.unwrap();
    Frame::new(ledger, WriteOptions::default())
}

/// [`frame_of`], tried again until the open (which reads storage too) gets through the storm.
async fn open_until_it_opens(reg: &Registry) -> Frame {
    loop {
        if let Ok(l) = reg.open_ledger("h", "b", "f").await {
            break Frame::new(l, WriteOptions::default());
        }
    }
}

/// The fault storm's seed of a scenario on backend `b`: `first` on the local folder, the next
/// ones on memory and S3, so that each backend meets its own sequence of faults.
fn seed(b: &Backend, first: u64) -> u64 {
    first
        + match b.label {
            "local" => 0,
            "memory" => 1,
            _ => 2,
        }
}

apiary_catalog::each_backend!(
    lost_answers_are_recovered_by_reading_back,
    appends_under_faults_land_exactly_once,
    rewrites_under_faults_lose_no_active_cell,
);
