//! How a node meets the query folders it finds in `_queries/`.

use std::time::{Duration, Instant};

use apiary_catalog::Meadow;
use apiary_catalog::testing::faults::{Fault, Faults, Op, Rule};

use crate::support::join;

/// A newcomer may find many folders holding nothing but `finished.json` (queries over, swept
/// after a grace): it looks at them concurrently, not one slow call after another (seen: ~1,000
/// of them made a new node's first polls take seconds on a store with some latency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_looks_at_leftover_query_folders_concurrently() {
    const FOLDERS: usize = 200;
    const LATENCY: Duration = Duration::from_millis(20);
    let faults = Faults::new(3).with_rule(
        Rule::new(Fault::Delay(LATENCY))
            .on(&[Op::Get, Op::Head])
            .key_contains("_queries/"),
    );
    let meadow = Meadow::open(&format!("memory://leftovers-{}", std::process::id()))
        .await
        .unwrap()
        .with_store_layer(faults.layer());
    for i in 0..FOLDERS {
        let key = format!("_queries/{i:04}/finished.json");
        meadow
            .put(&key, br#"{"outcome":"ok"}"#.to_vec().into())
            .await
            .unwrap();
    }
    let scratch = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let node = join(&meadow, "newcomer", scratch.path(), 0).await;
    // Two calls a folder (its manifest, then its marker): one after another they take
    // FOLDERS × 2 × LATENCY = 8 s; this waits at most 3 s for all of them.
    let looked = loop {
        let looked = faults.injected_on(Op::Get, Fault::Delay(Duration::ZERO))
            + faults.injected_on(Op::Head, Fault::Delay(Duration::ZERO));
        if looked >= 2 * FOLDERS || start.elapsed() > Duration::from_secs(3) {
            break looked;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    node.leave().await.unwrap();
    assert!(
        looked >= 2 * FOLDERS,
        "{looked} looks at {FOLDERS} leftover folders in {:?}",
        start.elapsed()
    );
}
