//! The bees through Apiary: cells sized from the bee budget, queries in chambers, writes
//! regulated by the colony temperature, compaction and cleansing from SQL.

use std::time::Duration;

use apiary::catalog::Leafcutter;
use apiary::exec::{Band, NodeConfig, Spill};
use apiary::{Apiary, ApiaryOptions};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;

use crate::support::{hive_box, plan, query, scalar, sql, sql_err};

const MIB: u64 = 1024 * 1024;

async fn open_with(dir: &std::path::Path, node: NodeConfig) -> Apiary {
    let options = ApiaryOptions {
        node: Some(node),
        ..ApiaryOptions::default()
    };
    open_options(dir, options).await
}

/// Apiary on `{dir}/meadow` with `options`.
async fn open_options(dir: &std::path::Path, options: ApiaryOptions) -> Apiary {
    Apiary::open_with(dir.join("meadow").to_str().unwrap(), options)
        .await
        .unwrap()
}

async fn frame(ctx: &SessionContext) {
    hive_box(ctx).await;
    sql(ctx, "CREATE TABLE h.b.t (id BIGINT NOT NULL, note VARCHAR)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_are_sized_from_the_bee_budget() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB bees: cells target 1 MiB, never above 2 MiB.
    let ap = colony(dir.path(), 1, 8 * MIB).await;
    assert_eq!(
        ap.providers()
            .options()
            .write
            .leafcutter
            .target_cell_bytes(),
        MIB
    );
    let ctx = ap.session().unwrap();
    frame(&ctx).await;
    sql(&ctx, "INSERT INTO h.b.t SELECT value, md5(CAST(value AS VARCHAR)) FROM generate_series(1, 200000)").await;
    let sizes: Vec<u64> = query(&ctx, "SELECT size_bytes FROM apiary_cells('h.b.t')")
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(sizes.len() >= 4, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= 2 * MIB), "{sizes:?}");
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "200000");
}

/// Setting how many rows a row group holds leaves the cell size to the bees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_group_cap_alone_leaves_the_cell_size_to_the_bees() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ApiaryOptions {
        node: Some(NodeConfig::fixed(1, 8 * MIB, dir.path().join("bees"))),
        ..ApiaryOptions::default()
    };
    options.catalog.write.leafcutter = Leafcutter::default().with_row_group_rows(1000);
    let ap = open_options(dir.path(), options).await;
    let leafcutter = ap.providers().options().write.leafcutter;
    assert_eq!(
        leafcutter.target_cell_bytes(),
        MIB,
        "8 MiB bees: 1 MiB cells"
    );
    assert_eq!(leafcutter.row_group_rows(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_run_their_queries_in_chambers() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = colony_with_frame(dir.path(), 2, 64 * MIB).await;
    sql(&ctx, "INSERT INTO h.b.t VALUES (1, 'a'), (2, 'b')").await;
    let text = plan(&ctx, "EXPLAIN SELECT note FROM h.b.t WHERE id > 1").await;
    assert!(
        text.contains("ChamberExec: bees=2, budget_per_bee=64.0 MiB"),
        "{text}"
    );
    let tasks = ap.bees().status().tasks;
    assert_eq!(
        query(&ctx, "SELECT note FROM h.b.t WHERE id > 1").await,
        vec!["b"]
    );
    assert_eq!(
        ap.bees().status().tasks,
        tasks + 1,
        "the query ran on the bees"
    );
    // 128 MiB per query is below the hash-join threshold: sort-merge joins, which spill.
    assert_eq!(scalar(&ctx, "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.optimizer.prefer_hash_join'").await, "false");
    // `SET apiary.*` reaches the chambers.
    sql(&ctx, "SET apiary.timeout_ms = 1").await;
    let err = sql_err(
        &ctx,
        "SELECT count(*) FROM h.b.t a, h.b.t b, generate_series(1, 100000000) c",
    )
    .await;
    assert!(err.contains("deadline of 1 ms exceeded"), "{err}");
    assert_eq!(ap.bees().busy(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_colony_refuses_writes_and_a_cool_one_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeConfig::fixed(1, 64 * MIB, dir.path().join("scratch")).with_queue_capacity(1);
    let ap = open_with(dir.path(), node).await;
    // A plain session: its statements do not wait for bees, only the colony's admission.
    let ctx = SessionContext::new();
    ap.register(&ctx).unwrap();
    frame(&ctx).await;

    // Heat the colony: its bee busy, its memory reserved, its queue full.
    let runtime = RuntimeEnv::default();
    let held = ap
        .bees()
        .acquire(1, &runtime, Spill::ToScratch)
        .await
        .unwrap();
    let reservation = MemoryConsumer::new("load").register(&held.runtime().memory_pool);
    reservation
        .try_grow((64 * MIB as usize) * 95 / 100)
        .unwrap();
    let waiter = {
        let bees = ap.bees().clone();
        tokio::spawn(async move {
            let runtime = RuntimeEnv::default();
            bees.acquire(1, &runtime, Spill::ToScratch)
                .await
                .map(|_| ())
        })
    };
    while ap.bees().waiting() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(ap.colony().temperature().band, Band::Critical);
    let err = sql_err(&ctx, "INSERT INTO h.b.t VALUES (1, 'x')").await;
    assert!(
        err.contains("write to h.b.t refused: the colony is critical"),
        "{err}"
    );
    assert_eq!(
        scalar(&ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await,
        "0",
        "nothing committed"
    );

    drop(reservation);
    drop(held);
    waiter.await.unwrap().unwrap();
    sql(&ctx, "INSERT INTO h.b.t VALUES (1, 'x')").await;
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_cleansing_from_sql() {
    let dir = tempfile::tempdir().unwrap();
    let ap = colony(dir.path(), 2, 64 * MIB).await;
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    sql(&ctx, "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, k VARCHAR NOT NULL) STORED AS APIARY PARTITIONED BY (k) LOCATION ''").await;
    for i in 0..12 {
        sql(
            &ctx,
            &format!("INSERT INTO h.b.t VALUES ({i}, '{}')", ["a", "b"][i % 2]),
        )
        .await;
    }
    let report = query(&ctx, "SELECT partition, cells_before, cells_after, rows, version FROM apiary_compact('h.b.t') ORDER BY partition").await;
    assert_eq!(report, vec!["k=a|6|1|6|13", "k=b|6|1|6|13"]);
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM apiary_cells('h.b.t')").await,
        "2"
    );
    assert_eq!(scalar(&ctx, "SELECT sum(id) FROM h.b.t").await, "66");

    // Versions before compaction stay readable until a cleansing flight with a short retention.
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM apiary_version('h.b.t', 5)").await,
        "5"
    );
    let dry = query(
        &ctx,
        "SELECT kind, action FROM apiary_cleanse('h.b.t', 0, true, true) WHERE kind = 'cell'",
    )
    .await;
    assert_eq!(dry.len(), 12, "{dry:?}");
    assert!(dry.iter().all(|r| r == "cell|would remove"));
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM apiary_version('h.b.t', 5)").await,
        "5",
        "a dry run changes nothing"
    );
    let done = query(
        &ctx,
        "SELECT kind, count(*) FROM apiary_cleanse('h.b.t', 0, false, true) GROUP BY kind ORDER BY kind",
    )
    .await;
    assert_eq!(done, vec!["cell|12", "ledger_entry|13"], "{done:?}");
    assert_eq!(scalar(&ctx, "SELECT sum(id) FROM h.b.t").await, "66");
    let err = sql_err(&ctx, "SELECT * FROM apiary_version('h.b.t', 5)").await;
    assert!(
        err.contains("removed by cleanup; the oldest readable version is 13"),
        "{err}"
    );
    let history = query(
        &ctx,
        "SELECT version, operation, rows_removed, readable FROM apiary_history('h.b.t')",
    )
    .await;
    assert_eq!(history, vec!["13|COMPACT|NULL|true"]);
}

/// Row-level changes stream within the bees' budget: a frame several times larger than one 8 MiB
/// bee is deleted from, updated and merged into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_of_a_frame_larger_than_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = colony_with_frame(dir.path(), 1, 8 * MIB).await;
    // About 24 MB of rows in memory (an id and a 32-character note each).
    sql(&ctx, "INSERT INTO h.b.t SELECT value, md5(CAST(value AS VARCHAR)) FROM generate_series(1, 400000)").await;
    assert_eq!(
        query(&ctx, "DELETE FROM h.b.t WHERE id % 4 = 0").await,
        ["100000"]
    );
    assert_eq!(
        query(&ctx, "UPDATE h.b.t SET note = upper(note) WHERE id % 3 = 0").await,
        ["100000"]
    );
    sql(
        &ctx,
        "CREATE TABLE changes AS SELECT value * 2 AS id FROM generate_series(1, 1000)",
    )
    .await;
    assert_eq!(
        query(
            &ctx,
            "MERGE INTO h.b.t AS t USING changes AS c ON t.id = c.id
             WHEN MATCHED THEN UPDATE SET note = 'merged'",
        )
        .await,
        ["500"]
    );
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "300000");
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM h.b.t WHERE note = upper(note) AND note <> 'merged'"
        )
        .await,
        scalar(
            &ctx,
            "SELECT count(*) FROM h.b.t WHERE id % 3 = 0 AND note <> 'merged'"
        )
        .await
    );
    assert_eq!(ap.bees().busy(), 0);
}

/// The footer cache (DataFusion's file metadata cache, shared by every chamber) is a share of
/// the bees' memory: DataFusion's 50 MiB on a small node, more on a large one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_footer_cache_is_sized_from_the_bees() {
    let dir = tempfile::tempdir().unwrap();
    for (bees, per_bee, limit) in [(2, 64 * MIB, 50 * MIB), (4, 2048 * MIB, 256 * MIB)] {
        let ap = open_with(
            &dir.path().join(per_bee.to_string()),
            NodeConfig::fixed(bees, per_bee, dir.path().join("scratch")),
        )
        .await;
        let ctx = ap.session().unwrap();
        let cache = &ctx.runtime_env().cache_manager;
        assert_eq!(cache.get_metadata_cache_limit() as u64, limit);
        // The swarm worker, which opens the cells of other nodes' tasks, keeps as many.
        let mut config = apiary::swarm::SwarmConfig::default()
            .with_node_id(format!("footers-{bees}-{}", uuid::Uuid::new_v4().simple()));
        config.cache_dir = dir.path().join(format!("cache-{bees}"));
        config.cache_bytes = 0;
        let node = ap.join_swarm(config).await.unwrap();
        assert_eq!(node.status().footer_cache_limit as u64, limit);
        ap.leave_swarm().await.unwrap();
    }
}

/// Apiary on `{dir}/meadow` with `bees` bees of `bytes` each, scratching in `{dir}/scratch`.
async fn colony(dir: &std::path::Path, bees: usize, bytes: u64) -> Apiary {
    open_with(dir, NodeConfig::fixed(bees, bytes, dir.join("scratch"))).await
}

/// [`colony`], and a session of it with [`frame`] created.
async fn colony_with_frame(
    dir: &std::path::Path,
    bees: usize,
    bytes: u64,
) -> (Apiary, SessionContext) {
    let ap = colony(dir, bees, bytes).await;
    let ctx = ap.session().unwrap();
    frame(&ctx).await;
    (ap, ctx)
}
