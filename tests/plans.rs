//! Plan snapshots (`insta`, in `tests/snapshots/`) of Apiary's planning on a fixed set of queries:
//! pruning from the ledger, the chamber rule and the swarm rule. A DataFusion upgrade or a change
//! of a rule shows every plan change in review, as a diff of the snapshots.
//!
//! The ids in cell paths and meadow names change every run and are filtered out; nothing else is.

use std::path::Path;
use std::time::Duration;

use apiary::Apiary;
use apiary::swarm::SwarmConfig;
use apiary_catalog::Meadow;
use datafusion::prelude::SessionContext;

use crate::support::{plan, sql, until};
use crate::swarm::in_process_node;

const QUERIES: [(&str, &str); 4] = [
    // Partition pruning: one partition of four; the others never opened.
    (
        "partition",
        "SELECT id FROM h.b.t WHERE k = 'k1' ORDER BY id LIMIT 5",
    ),
    // Statistics pruning: min/max of `id` keep the first write's cells only.
    ("statistics", "SELECT count(*) FROM h.b.t WHERE id < 1000"),
    // Nothing to prune: an aggregation over every cell.
    (
        "aggregate",
        "SELECT k, count(*), sum(id) FROM h.b.t GROUP BY k ORDER BY k",
    ),
    // A join of the frame with itself.
    (
        "join",
        "SELECT a.k, count(*) FROM h.b.t a JOIN h.b.t b ON a.id = b.id + 1 WHERE a.k = 'k2' GROUP BY a.k",
    ),
];

/// Pruning and the chamber rule: one node's session (every query in a chamber of its bees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_on_one_node() {
    let (meadow, scratch) = meadow().await;
    let ap = node(&meadow, scratch.path(), "one").await;
    let ctx = ap.session().unwrap();
    frame(&ctx).await;
    for (name, query) in QUERIES {
        snapshot(
            &format!("one_node_{name}"),
            &explain(&ap, &ctx, query).await,
        );
    }
    // A plain DataFusion session with the hives registered: no chamber, the scans alone (two
    // partitions, as the bees give the others, whatever the machine's cores).
    let plain = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(2),
    );
    ap.register(&plain).unwrap();
    snapshot(
        "plain_session_partition",
        &plan(&plain, &format!("EXPLAIN {}", QUERIES[0].1)).await,
    );
}

/// The swarm rule: two nodes in this process on one meadow, scans split into tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_in_a_swarm_of_two() {
    let (meadow, scratch) = meadow().await;
    let coordinator = node(&meadow, scratch.path(), "coordinator").await;
    let worker = node(&meadow, scratch.path(), "worker").await;
    frame(&coordinator.session().unwrap()).await;
    let config = |id: &str| {
        let mut c = SwarmConfig::default()
            .with_heartbeat_interval(Duration::from_millis(100))
            .with_node_id(id);
        c.cache_bytes = 0;
        c.cache_dir = scratch.path().join(id).join("cache");
        c
    };
    let _worker = worker.join_swarm(config("worker")).await.unwrap();
    let swarm = coordinator.join_swarm(config("coordinator")).await.unwrap();
    until(10, 50, async || {
        (swarm.world().alive().len() >= 2)
            .then_some(())
            .ok_or_else(|| "the worker never appeared".to_string())
    })
    .await;
    // A session of the swarm's node: its queries plan with the swarm rule.
    let ctx = coordinator.session().unwrap();
    sql(&ctx, "SET swarm.path = 'storage'").await;
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    for (name, query) in QUERIES {
        let plan = explain(&coordinator, &ctx, query).await;
        // One task per bee the two nodes offered (the frame is too small for more): two to four.
        let tasks = plan
            .split("SwarmExec: tasks=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<usize>().ok());
        assert!(
            tasks.is_some_and(|n| (2..=4).contains(&n)),
            "{name}: {plan}"
        );
        snapshot(&format!("swarm_{name}"), &plan);
    }
}

/// A fresh memory meadow, and a scratch folder for its nodes' bees.
async fn meadow() -> (Meadow, tempfile::TempDir) {
    let url = format!("memory://plans-{}", uuid::Uuid::new_v4().simple());
    (
        Meadow::open(&url).await.unwrap(),
        tempfile::tempdir().unwrap(),
    )
}

/// `h.b.t (id BIGINT, k VARCHAR)` partitioned by `k`: three writes of 2 000 rows over four
/// partitions, so twelve cells.
async fn frame(ctx: &SessionContext) {
    sql(ctx, "CREATE DATABASE h").await;
    sql(ctx, "CREATE SCHEMA h.b").await;
    sql(
        ctx,
        "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k VARCHAR NOT NULL)
         STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
    )
    .await;
    for w in 0..3 {
        let (from, to) = (w * 2000, w * 2000 + 1999);
        sql(
            ctx,
            &format!(
                "INSERT INTO h.b.t SELECT value, 'k' || CAST(value % 4 AS VARCHAR)
                 FROM generate_series({from}, {to})"
            ),
        )
        .await;
    }
}

/// A node of two bees in this process on `meadow`.
async fn node(meadow: &Meadow, scratch: &Path, id: &str) -> Apiary {
    in_process_node(meadow.clone(), 2, scratch.join(id)).await
}

/// The text of `EXPLAIN query` through Apiary's door, with its pruning notes.
async fn explain(ap: &Apiary, ctx: &SessionContext, query: &str) -> String {
    let batches = ap
        .sql(ctx, &format!("EXPLAIN {query}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {query}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {query}: {e}"));
    crate::support::rows(&batches).join("\n")
}

/// Asserts that `plan` is snapshot `name`, blanking what changes every run: uuids and hex ids.
fn snapshot(name: &str, plan: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[uuid]",
    );
    settings.add_filter(r"[0-9a-f]{32}", "[id]");
    // How many tasks a scan makes follows the bees each node's last heartbeat offered, and a
    // bee held for a moment (by the EXPLAIN before) offers one fewer: the count is checked in
    // `plans_in_a_swarm_of_two`, not in the snapshot.
    settings.add_filter(r"tasks=\d+", "tasks=[n]");
    settings.add_filter(r"over \d+ tasks", "over [n] tasks");
    settings.set_prepend_module_to_snapshot(true);
    settings.bind(|| insta::assert_snapshot!(name, plan));
}
