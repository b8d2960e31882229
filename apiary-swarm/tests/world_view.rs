//! The world view judges nodes on the observer's own clock: skewed clocks do not matter.

use std::time::{Duration, Instant};

use apiary_catalog::Meadow;
use apiary_swarm::NodeState;

use crate::support::join;

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_judged_by_the_observers_clock_whatever_theirs_says() {
    let scratch = tempfile::tempdir().unwrap();
    let meadow = Meadow::open(&format!("memory://world-{}", uuid::Uuid::new_v4().simple()))
        .await
        .unwrap();
    let observer = join(&meadow, "observer", scratch.path(), 0).await;
    // Two nodes whose clocks are ten minutes ahead and ten minutes behind.
    let ahead = join(&meadow, "ahead", scratch.path(), 600_000).await;
    let behind = join(&meadow, "behind", scratch.path(), -600_000).await;
    let view = observer.world();
    let state = |n: &str| view.state_of(n);

    wait_for("all three alive", || {
        ["observer", "ahead", "behind"]
            .iter()
            .all(|n| state(n) == Some(NodeState::Alive))
    })
    .await;
    let hb = view
        .nodes()
        .into_iter()
        .find(|n| n.heartbeat.node_id == "ahead")
        .unwrap()
        .heartbeat;
    assert!(
        hb.clock_ms > chrono::Utc::now().timestamp_millis() + 500_000,
        "its clock is ahead"
    );
    // They stay alive while they beat, for several dead_after periods.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state("ahead"), Some(NodeState::Alive));
    assert_eq!(state("behind"), Some(NodeState::Alive));

    // A crash: the node stops beating. Suspect, then dead, then swept — by the observer's clock.
    // Its last beat may precede the halt by one heartbeat interval and have been seen up to one
    // view interval late, so the earliest judgement is 200 ms short of the threshold.
    ahead.halt();
    let halted = Instant::now();
    wait_for("ahead suspect", || {
        state("ahead") == Some(NodeState::Suspect)
    })
    .await;
    assert!(
        halted.elapsed() >= Duration::from_millis(300 - 200),
        "not before suspect_after"
    );
    wait_for("ahead dead", || state("ahead") == Some(NodeState::Dead)).await;
    assert!(
        halted.elapsed() >= Duration::from_millis(600 - 200),
        "not before dead_after"
    );
    assert_eq!(
        state("behind"),
        Some(NodeState::Alive),
        "the other skewed node is fine"
    );
    wait_for("ahead swept", || state("ahead").is_none()).await;
    assert!(
        meadow
            .get("_heartbeats/node_ahead.json")
            .await
            .unwrap()
            .is_none()
    );

    // A graceful leave removes the heartbeat at once.
    behind.leave().await.unwrap();
    assert!(
        meadow
            .get("_heartbeats/node_behind.json")
            .await
            .unwrap()
            .is_none()
    );
    wait_for("behind gone", || state("behind").is_none()).await;
    observer.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_costs_one_listing_plus_the_changed_heartbeats() {
    let scratch = tempfile::tempdir().unwrap();
    let (meadow, counting) = apiary_catalog::testing::counting_meadow();
    let a = join(&meadow, "a", scratch.path(), 0).await;
    let b = join(&meadow, "b", scratch.path(), 0).await;
    b.halt();
    a.halt();
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.world().poll().await.unwrap();
    counting.take();
    // Nothing changed since: one listing, no GET.
    a.world().poll().await.unwrap();
    let calls = counting.take();
    assert_eq!(calls.get("list_with_delimiter"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("get"), None, "{calls:?}");
    // One heartbeat changed: one listing, one GET.
    b.beat().await.unwrap();
    counting.take();
    a.world().poll().await.unwrap();
    let calls = counting.take();
    assert_eq!(
        (calls.get("list_with_delimiter"), calls.get("get")),
        (Some(&1), Some(&1)),
        "{calls:?}"
    );
}
