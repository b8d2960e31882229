//! Every fragment shape the swarm rule produces survives datafusion-proto with Apiary's codec:
//! the decoded fragment shows the same plan and returns the same rows.

use std::sync::Arc;

use apiary_catalog::{
    CatalogOptions, CommitOptions, IoRuntime, Leafcutter, Meadow, ProviderState, Registry,
    WriteOptions,
};
use apiary_exec::ChamberExec;
use apiary_swarm::ApiaryCodec;
use apiary_swarm::{ScanMatcher, files_of, fragment, ships};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};

const SUBQUERY: &str =
    "SELECT id FROM h.b.t WHERE v > (SELECT avg(v) FROM h.b.t WHERE k = 'a') AND id > 5";

const COUNT: &str = "SELECT count(*) FROM h.b.t WHERE v > 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fragment_shape_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (meadow, ctx) = table_of_small_cells(dir.path()).await;
    let matcher = ScanMatcher {
        store_url: meadow.object_store_url().clone(),
        root: meadow.root().to_string(),
    };
    let scratch = tempfile::tempdir().unwrap();
    let pool =
        apiary_exec::BeePool::new(apiary_exec::NodeConfig::fixed(1, 64 << 20, scratch.path()))
            .unwrap();
    let codec = ApiaryCodec::new(Some(pool.clone()));

    for (q, top) in [
        ("SELECT * FROM h.b.t", "DataSourceExec"),
        (
            "SELECT id, v FROM h.b.t WHERE v > 100 AND note LIKE 'n1%'",
            "FilterExec",
        ),
        (
            // DataFusion folds this projection (an expression and a partition column) into the
            // scan itself.
            "SELECT id * 2 AS twice, k FROM h.b.t WHERE k = 'a'",
            "DataSourceExec",
        ),
        (
            "SELECT k, count(*), sum(v), min(note) FROM h.b.t WHERE id % 3 = 0 GROUP BY k",
            "AggregateExec",
        ),
        ("SELECT id FROM h.b.t LIMIT 7", "DataSourceExec"),
        (
            // The outer scan reads the result of a scalar subquery (in its pushed-down predicate),
            // which only the coordinator has: it stays local; the subquery's scan ships.
            SUBQUERY,
            "AggregateExec",
        ),
    ] {
        let plan = physical_plan(&ctx, q).await;
        let subtree =
            distributable(&plan, &matcher).unwrap_or_else(|| panic!("no Apiary scan in {q}"));
        assert_eq!(subtree.name(), top, "{q}");
        let scan = matcher.distributable(&subtree).unwrap();
        let files = files_of(&scan);
        assert!(files.len() >= 4, "{q}: {} cells", files.len());
        let part = fragment(&subtree, files[..files.len() / 2].to_vec()).unwrap();
        let (_, back) = round_trip(&part, &ctx, &codec);
        assert_eq!(
            displayable(back.as_ref()).indent(true).to_string(),
            displayable(part.as_ref()).indent(true).to_string(),
            "{q}"
        );
        assert_eq!(rows(back, &ctx).await, rows(part, &ctx).await, "{q}");
    }

    let plan = physical_plan(&ctx, SUBQUERY).await;
    let outer = Arc::clone(plan.children()[0]);
    assert!(outer.is::<datafusion::physical_plan::filter::FilterExec>());
    assert!(matcher.distributable(&outer).is_some());
    assert!(!ships(&outer), "a scalar subquery's result cannot ship");
    assert!(
        !ships(outer.children()[0]),
        "nor a scan predicate reading it"
    );

    // Apiary's own node goes through the codec.
    let plan = physical_plan(&ctx, COUNT).await;
    let chambered: Arc<dyn ExecutionPlan> = Arc::new(ChamberExec::new(
        Arc::new(datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(plan)),
        pool.clone(),
    ));
    let (bytes, back) = round_trip(&chambered, &ctx, &codec);
    assert!(back.is::<ChamberExec>());
    let direct = physical_plan(&ctx, COUNT).await;
    assert_eq!(rows(back, &ctx).await, rows(direct, &ctx).await);
    // A node without bees cannot take a chamber.
    let err = physical_plan_from_bytes_with_extension_codec(
        &bytes,
        &ctx.task_ctx(),
        &ApiaryCodec::new(None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("without bees"), "{err}");
}

/// The physical plan of `q` in `ctx`.
async fn physical_plan(ctx: &SessionContext, q: &str) -> Arc<dyn ExecutionPlan> {
    let df = ctx.sql(q).await.unwrap();
    df.create_physical_plan().await.unwrap()
}

/// `plan` encoded with `codec`, and decoded again.
fn round_trip(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
    codec: &ApiaryCodec,
) -> (bytes::Bytes, Arc<dyn ExecutionPlan>) {
    let bytes = physical_plan_to_bytes_with_extension_codec(Arc::clone(plan), codec).unwrap();
    let back =
        physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), codec).unwrap();
    (bytes, back)
}

/// A session on a meadow in `dir` with a table `h.b.t` of 4000 rows in two partitions (`k`),
/// written as cells of about 64 KiB.
async fn table_of_small_cells(dir: &std::path::Path) -> (Meadow, SessionContext) {
    let meadow = Meadow::open(dir.to_str().unwrap()).await.unwrap();
    let registry = Registry::open(meadow.clone(), CommitOptions::default())
        .await
        .unwrap();
    let options = CatalogOptions {
        write: WriteOptions::default()
            .with_leafcutter(Leafcutter::default().with_target_cell_bytes(64 * 1024)),
        ..CatalogOptions::default()
    };
    let catalog = ProviderState::new(registry, IoRuntime::new().unwrap(), options);
    let ctx = SessionContext::new();
    catalog.register(&ctx);
    sql(&ctx, "CREATE DATABASE h").await;
    sql(&ctx, "CREATE SCHEMA h.b").await;
    sql(&ctx, "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, v DOUBLE, note VARCHAR, k VARCHAR NOT NULL) STORED AS APIARY PARTITIONED BY (k) LOCATION ''").await;
    for i in 0..4 {
        sql(&ctx, &format!(
            "INSERT INTO h.b.t SELECT value, value / 7.0, 'n' || CAST(value AS VARCHAR), CASE WHEN value % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series({}, {})",
            i * 1000, i * 1000 + 999
        )).await;
    }
    (meadow, ctx)
}

async fn sql(ctx: &SessionContext, q: &str) {
    ctx.sql(q).await.unwrap().collect().await.unwrap();
}

/// The top of the first distributable subtree of `plan` that can be shipped, as the rule finds it.
fn distributable(
    plan: &Arc<dyn ExecutionPlan>,
    matcher: &ScanMatcher,
) -> Option<Arc<dyn ExecutionPlan>> {
    if matcher.distributable(plan).is_some() && ships(plan) {
        return Some(Arc::clone(plan));
    }
    plan.children()
        .into_iter()
        .find_map(|c| distributable(c, matcher))
}

async fn rows(plan: Arc<dyn ExecutionPlan>, ctx: &SessionContext) -> Vec<String> {
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}
