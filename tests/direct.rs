//! The direct path with real processes: `apiary node --listen 127.0.0.1:0` workers serve
//! datafusion-distributed, a coordinator plans joins and shuffles across them, and only the
//! swarm — holders of the meadow's token — gets a plan in.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::Apiary;
use apiary::swarm::{SwarmConfig, SwarmNode};
use apiary_catalog::testing::Backend;
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    ChannelResolver, DistributedExt, SessionStateBuilderExt, WorkerChannel, WorkerResolver, grpc,
};
use url::Url;

use crate::support::{
    hive_box, metric_sum, physical_plan, plan, query, sql, sql_all, sql_err, until,
};
use crate::swarm::{
    Worker, coordinator, join_and_wait, local_meadow, scratch_meadow, swarm_config, swarm_session,
    tpch_coordinator, wait_alive,
};
use crate::tpch;

/// Listens on any free port of 127.0.0.1.
const LISTEN: [&str; 2] = ["--listen", "127.0.0.1:0"];

async fn tpch_on_three_listening_nodes_takes_the_direct_path(backend: Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let nodes = [("d1", true), ("d2", true), ("d3", true)];
    let (ap, workers, ctx) = tpch_swarm(&backend.url, scratch.path(), &nodes).await;

    // Every other node listens and is reached: 'auto' plans q5 (a six-way join) with
    // network stages, and the meadow's exchange stays out.
    let q5 = tpch::query(5);
    let text = physical(&ctx, &q5).await;
    assert!(text.contains("DistributedExec"), "{backend}: {text}");
    assert!(text.contains("Network"), "{backend}: {text}");
    assert!(!text.contains("SwarmExec"), "{backend}: {text}");

    // EXPLAIN shows the path and the stages; EXPLAIN ANALYZE runs them.
    let explain = plan(&ctx, &format!("EXPLAIN {q5}")).await;
    assert!(
        explain.contains("DirectPathExec: path=direct"),
        "{backend}: {explain}"
    );
    assert!(explain.contains("[Stage 1]"), "{backend}: {explain}");
    assert!(!explain.contains("SwarmExec"), "{backend}: {explain}");
    let tree = plan(&ctx, &format!("EXPLAIN FORMAT TREE {q5}")).await;
    assert!(tree.contains("DirectPathExec"), "{backend}: {tree}");
    let analyzed = plan(&ctx, &format!("EXPLAIN ANALYZE {q5}")).await;
    assert!(analyzed.contains("[Stage 1]"), "{backend}: {analyzed}");
    assert!(analyzed.contains("output_rows="), "{backend}: {analyzed}");

    tpch::assert_answers(&ctx, 1..=22, &format!("{backend}: ")).await;
    assert_eq!(reruns(&ap), 0, "{backend}");
    // A query too small for two tasks is planned as usual.
    let text = physical(&ctx, "SELECT count(*) FROM region").await;
    assert!(!text.contains("DistributedExec"), "{backend}: {text}");
    // A write stays off the direct path.
    let text = physical(&ctx, "INSERT INTO region SELECT * FROM region").await;
    assert!(!text.contains("DistributedExec"), "{backend}: {text}");
    // Stages ran on every worker.
    let calls = ap.swarm().unwrap().direct_calls();
    assert_eq!(calls.len(), 3, "{backend}: {calls:?}");

    // `swarm.path = 'storage'` sends the same query over the meadow.
    sql(&ctx, "SET swarm.path = 'storage'").await;
    let text = physical(&ctx, &q5).await;
    assert!(!text.contains("DistributedExec"), "{backend}: {text}");
    assert!(text.contains("SwarmExec"), "{backend}: {text}");
    let explain = plan(&ctx, &format!("EXPLAIN {q5}")).await;
    assert!(explain.contains("SwarmExec"), "{backend}: {explain}");
    assert!(!explain.contains("DirectPathExec"), "{backend}: {explain}");
    // A path that is none of the three is refused by name.
    let err = sql_err(&ctx, "SET swarm.path = 'sideways'").await;
    assert!(err.contains("swarm.path must be"), "{err}");
    sql(&ctx, "SET swarm.path = 'auto'").await;
    assert!(physical(&ctx, &q5).await.contains("DistributedExec"));
    drop(workers);
    ap.leave_swarm().await.unwrap();
}

/// Two nodes that both listen — the coordinator and one process — with hash joins planned
/// partitioned (as at larger scales, where build sides pass DataFusion's thresholds): every
/// answer right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_joins_answer_right_on_the_direct_path() {
    let scratch = tempfile::tempdir().unwrap();
    let (ap, _worker, ctx) = listening_pair(scratch.path(), 2).await;
    sql_all(
        &ctx,
        &[
            "SET distributed.file_scan_config_bytes_per_partition = 4194304",
            "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
            "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
        ],
    )
    .await;
    let text = physical(&ctx, &tpch::query(15)).await;
    assert!(text.contains("mode=Partitioned"), "{text}");
    tpch::assert_answers(&ctx, 1..=22, "").await;
    assert_eq!(reruns(&ap), 0);
    // The coordinator reaches its own worker in-process, the other over gRPC.
    let swarm = ap.swarm().unwrap();
    let own = swarm.status().endpoint.expect("listening");
    let calls = swarm.direct_calls();
    assert!(
        !calls.keys().any(|e| e.starts_with(&own)),
        "{own}: {calls:?}"
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    ap.leave_swarm().await.unwrap();
}

/// A coordinator of one bee — DataFusion then plans aggregations in `Single` mode, over one
/// partition — and a listening node: every answer right. datafusion-distributed spreads a
/// stage's scan over tasks whatever sits above it, so such a plan stays local (q15 came back
/// empty before: each task took the max of its own half of the sums).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bee_plans_answer_right_with_a_listening_node() {
    let scratch = tempfile::tempdir().unwrap();
    let (ap, _worker, ctx) = listening_pair(scratch.path(), 1).await;
    tpch::assert_answers(&ctx, 1..=22, "").await;
    ap.leave_swarm().await.unwrap();
}

/// One node that does not listen: `'auto'` keeps to the meadow, and the answer is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_listen_keeps_the_query_on_the_meadow() {
    let (scratch, url) = scratch_meadow();
    let (ap, _workers, ctx) =
        tpch_swarm(&url, scratch.path(), &[("m1", true), ("m2", false)]).await;
    let text = physical(&ctx, &tpch::query(3)).await;
    assert!(!text.contains("DistributedExec"), "{text}");
    assert!(text.contains("SwarmExec"), "{text}");
    tpch::assert_answers(&ctx, [3, 5], "").await;
    // Asked for the direct path, it takes it with the one node that listens (two tasks a
    // stage, both there).
    sql(&ctx, "SET swarm.path = 'direct'").await;
    sql(&ctx, "SET distributed.max_tasks_per_stage = 2").await;
    let text = physical(&ctx, &tpch::query(3)).await;
    assert!(text.contains("DistributedExec"), "{text}");
    tpch::assert_answers(&ctx, [3], "").await;
    // `swarm.enabled = false` keeps the query local on either path.
    sql(&ctx, "SET swarm.enabled = false").await;
    let text = physical(&ctx, &tpch::query(3)).await;
    assert!(!text.contains("DistributedExec"), "{text}");
    assert!(!text.contains("SwarmExec"), "{text}");
    ap.leave_swarm().await.unwrap();
}

/// A worker killed with SIGKILL after it was reached, its heartbeat still alive: the
/// direct-path query fails before its first batch, runs again over the meadow, and answers
/// right within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_a_query_costs_a_run_over_the_meadow_not_the_answer() {
    let (scratch, url) = scratch_meadow();
    let (ap, mut workers, ctx) =
        tpch_swarm(&url, scratch.path(), &[("k1", true), ("k2", true)]).await;
    takes_the_direct_path(&ctx, &tpch::query(3)).await;

    workers[1].kill();
    let start = Instant::now();
    tpch::assert_answers(&ctx, [3], "").await;
    assert_eq!(reruns(&ap), 1);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    // Until k2 is probed again (and found gone), queries keep to the meadow.
    let text = physical(&ctx, &tpch::query(3)).await;
    assert!(!text.contains("DirectPathExec"), "{text}");
    ap.leave_swarm().await.unwrap();
}

/// The session's own settings travel with its plans: workers run their tasks with the
/// coordinator's `SET datafusion.*` values (on top of their node's), not with defaults. Partial
/// aggregations on the workers, told to give up grouping at once, report skipped rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_with_the_sessions_settings() {
    let (scratch, url) = scratch_meadow();
    let (ap, _workers, ctx) = tpch_swarm(&url, scratch.path(), &[("s1", true), ("s2", true)]).await;
    let q = "SELECT l_orderkey, count(*) FROM lineitem GROUP BY l_orderkey";
    takes_the_direct_path(&ctx, q).await;
    sql_all(
        &ctx,
        &[
            "SET datafusion.execution.skip_partial_aggregation_probe_rows_threshold = 1",
            "SET datafusion.execution.skip_partial_aggregation_probe_ratio_threshold = 0.0",
        ],
    )
    .await;
    let analyzed = plan(&ctx, &format!("EXPLAIN ANALYZE {q}")).await;
    let skipped = metric_sum(&analyzed, "skipped_aggregation_rows");
    assert!(analyzed.contains("NetworkShuffleExec"), "{analyzed}");
    assert!(
        skipped > 0,
        "no partial aggregation skipped rows:\n{analyzed}"
    );
    assert_eq!(reruns(&ap), 0);
    ap.leave_swarm().await.unwrap();
}

/// A worker admits a query's tasks into its bees, one chamber per query: with its only bee
/// taken, a direct-path query's tasks wait for it (before, they ran at once beside it, in
/// memory no bee accounted for), then run in a chamber of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_tasks_wait_for_its_bees_then_run_in_them() {
    let (scratch, url) = scratch_meadow();
    let ap = tpch_coordinator(&url, scratch.path()).await;
    // The worker: a node of one bee in this process, so that the test can hold that bee.
    let dir = scratch.path().join("worker");
    let worker = crate::swarm::coordinator_of(&url, &dir, 1).await;
    let config = swarm_config("w1", &dir, Duration::from_secs(60));
    worker.join_swarm(listening(config)).await.unwrap();
    // The coordinator listens too: datafusion-distributed does not cut stages for one worker.
    ap.join_swarm(listening(coordinator_config(scratch.path())))
        .await
        .unwrap();
    wait_reached(&ap, 2, &[]).await;
    let ctx = direct_session(&ap).await;
    takes_the_direct_path(&ctx, &tpch::query(3)).await;

    let bees = worker.bees().clone();
    let chambers = bees.status().tasks;
    let held = bees
        .acquire(
            1,
            &datafusion::execution::runtime_env::RuntimeEnv::default(),
            apiary::exec::Spill::ToScratch,
        )
        .await
        .unwrap();
    let query = tokio::spawn({
        let ctx = ctx.clone();
        async move { tpch::failures(&ctx, [3]).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !query.is_finished(),
        "the query's tasks ran while the worker's only bee was held"
    );
    drop(held);
    let failures = query.await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        reruns(&ap),
        0,
        "the query waited, it did not go over the meadow"
    );
    // The test's chamber, then the query's.
    let after = bees.status().tasks;
    assert!(
        after >= chambers + 2,
        "chambers sealed: {chambers} before, {after} after"
    );
    ap.leave_swarm().await.unwrap();
    worker.leave_swarm().await.unwrap();
}

/// Two coordinators race direct-path queries over the same two node processes of one bee
/// each. A worker admits one query at a time; of two queries that would each hold one worker
/// and wait for the other, the younger is refused at once (wait-die) and runs over the meadow.
/// Every answer is right, and no query stalls (the bound is loose: on a loaded two-core machine
/// a query run again over the meadow beside the other coordinator's took 13 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_coordinators_never_stall_on_workers_of_one_bee() {
    let (scratch, url) = scratch_meadow();
    let nodes = [("r1", true), ("r2", true)];
    let (a, workers, ctx_a) = tpch_swarm(&url, scratch.path(), &nodes).await;
    let dir = scratch.path().join("b");
    let b = coordinator(&url, &dir).await;
    b.join_swarm(swarm_config("b", &dir, Duration::from_secs(60)))
        .await
        .unwrap();
    wait_reached(&b, 2, &workers).await;
    let ctx_b = direct_session(&b).await;
    for ctx in [&ctx_a, &ctx_b] {
        // Each coordinator sees the other, which does not listen: 'auto' would keep to the
        // meadow.
        sql(ctx, "SET swarm.path = 'direct'").await;
    }
    takes_the_direct_path(&ctx_b, &tpch::query(3)).await;
    let race = |ctx: SessionContext| {
        tokio::spawn(async move {
            let (mut failures, mut slowest) = (vec![], Duration::ZERO);
            for _ in 0..4 {
                let start = Instant::now();
                failures.extend(tpch::failures(&ctx, [3, 10]).await);
                slowest = slowest.max(start.elapsed());
            }
            (failures, slowest)
        })
    };
    let (ra, rb) = (race(ctx_a.clone()), race(ctx_b.clone()));
    for (failures, slowest) in [ra.await.unwrap(), rb.await.unwrap()] {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(
            slowest < Duration::from_secs(60),
            "a query took {slowest:?}"
        );
    }
    let reruns = reruns(&a) + reruns(&b);
    eprintln!("racing coordinators: {reruns} of 16 queries ran again over the meadow");
    a.leave_swarm().await.unwrap();
    b.leave_swarm().await.unwrap();
}

/// A join far larger than a bee: two node processes of two 256 MiB bees each sort both sides
/// of a join of 1.2 million rows (about 330 MB a side in memory) within their bees, spilling,
/// and the answer is right. The coordinator's two bees of 256 MiB make its sessions plan
/// sort-merge joins (docs/bees.md: a hash join's build side cannot spill) over two partitions,
/// a bee's worth each on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_larger_than_a_bee_completes_on_workers_of_256_mib_bees() {
    let (scratch, url) = scratch_meadow();
    let options = apiary::ApiaryOptions {
        node: Some(apiary::exec::NodeConfig::fixed(
            2,
            256 << 20,
            scratch.path().join("bees"),
        )),
        ..apiary::ApiaryOptions::default()
    };
    let ap = Apiary::open_with(&url, options).await.unwrap();
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    sql(
        &ctx,
        "CREATE TABLE h.b.big AS SELECT value AS k, repeat(md5(CAST(value AS VARCHAR)), 8) AS pad \
         FROM generate_series(1, 1200000)",
    )
    .await;
    let workers: Vec<Worker> = ["j1", "j2"]
        .iter()
        .map(|id| Worker::spawn_sized(&url, id, scratch.path(), ("2", "512M"), &LISTEN))
        .collect();
    join_and_wait(&ap, coordinator_config(scratch.path()), &workers).await;
    wait_reached(&ap, 2, &workers).await;
    let ctx = ap.session().unwrap();
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    sql(
        &ctx,
        "SET distributed.file_scan_config_bytes_per_partition = 4194304",
    )
    .await;
    let q = "SELECT count(*) AS n, sum(length(a.pad) + length(b.pad)) AS bytes \
             FROM h.b.big a JOIN h.b.big b ON a.k = b.k";
    let text = takes_the_direct_path(&ctx, q).await;
    assert!(text.contains("SortMergeJoin"), "{text}");
    let analyzed = plan(&ctx, &format!("EXPLAIN ANALYZE {q}")).await;
    let spills = metric_sum(&analyzed, "spill_count");
    assert!(analyzed.contains("NetworkShuffleExec"), "{analyzed}");
    assert!(spills > 0, "nothing spilled:\n{analyzed}");
    let rows = query(&ctx, q).await;
    assert_eq!(rows, vec!["1200000|614400000"], "{analyzed}");
    assert_eq!(reruns(&ap), 0, "{analyzed}");
    ap.leave_swarm().await.unwrap();
}

/// A worker killed with SIGKILL while it runs stages of a query, before the query's first batch:
/// the query runs again over the meadow and answers right within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_in_the_middle_of_a_query_costs_a_rerun_not_the_answer() {
    lost_in_the_middle_of_a_query(Loss::Kill).await;
}

/// The same with the worker cut off (SIGSTOP: its connections open, nothing answering): the
/// channels' keep-alive finds it silent, and the query runs again over the meadow — not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_in_the_middle_of_a_query_costs_a_rerun_not_a_hang() {
    lost_in_the_middle_of_a_query(Loss::Cut).await;
}

/// A worker killed after a query's first batch reached the caller: running the query again
/// would repeat rows, so it fails — within the deadline, never a hang — with an error that names
/// the node it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_after_the_first_batch_fails_the_query_naming_the_node() {
    let err = lost_after_the_first_batch(Loss::Kill).await;
    assert!(err.contains("node n2 (http://127.0.0.1:"), "{err}");
}

/// The same with the worker cut off rather than killed: its port still takes connections, so
/// only a probe that waits for the worker's own answer finds it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_after_the_first_batch_fails_the_query_naming_the_node() {
    let err = lost_after_the_first_batch(Loss::Cut).await;
    assert!(err.contains("node n2 (http://127.0.0.1:"), "{err}");
}

/// A worker takes plans from its swarm only: a client without the token, or with a wrong
/// one, is refused before any plan runs, and the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_client_without_the_swarm_token() {
    let (scratch, url) = scratch_meadow();
    let (ap, node, endpoint) = listening_node(&url, scratch.path()).await;
    let ctx = ap.session().unwrap();
    let old = bearer(&ap).await;
    assert!(old.len() > 64);

    for (sends, what) in [
        (None, "no token"),
        (Some("Bearer not-the-token"), "a wrong token"),
    ] {
        let outsider = outsider(&ctx, &endpoint, sends, true);
        sql(&outsider, "SET swarm.path = 'storage'").await;
        // A task per cell.
        sql(
            &outsider,
            "SET distributed.file_scan_config_bytes_per_partition = 1",
        )
        .await;
        let q = "SELECT g, count(*) FROM h.b.t GROUP BY g";
        let text = physical(&outsider, q).await;
        assert!(text.contains("DistributedExec"), "{what}: {text}");
        let err = sql_err(&outsider, q).await;
        assert!(err.contains("swarm token"), "{what}: {err}");
    }
    assert!(node.status().refused_requests >= 2);

    // The swarm's own coordinator is let in.
    let ctx = ap.session().unwrap();
    sql_all(
        &ctx,
        &[
            "SET swarm.path = 'direct'",
            "SET swarm.min_bytes = 0",
            "SET distributed.file_scan_config_bytes_per_partition = 1",
            // Two tasks a stage, though this node is the only worker.
            "SET distributed.max_tasks_per_stage = 2",
        ],
    )
    .await;
    let text = physical(&ctx, DISTINCT_G).await;
    assert!(text.contains("DistributedExec"), "{text}");
    let _ = plan(&ctx, "EXPLAIN SELECT 1").await;
    assert_eq!(query(&ctx, DISTINCT_G).await, ["7"]);

    // A new secret: the old token is refused once the node has read it again (every five view
    // intervals), and the swarm's own queries go on.
    apiary::swarm::SwarmToken::rotate(ap.meadow())
        .await
        .unwrap();
    let stale = outsider(&ctx, &endpoint, Some(old), true);
    sql(&stale, "SET swarm.path = 'storage'").await;
    until(40, 100, async || {
        let refused = node.status().refused_requests;
        let answer = stale.sql(DISTINCT_G).await.unwrap();
        match answer.collect().await {
            Err(e) if e.to_string().contains("swarm token") => {
                assert!(node.status().refused_requests > refused);
                return Ok(());
            }
            // A query in flight when the node reads the new token can have some of its
            // requests admitted and others refused; it fails, with the worker's wait for a plan
            // that never came.
            Err(e) => assert!(e.to_string().contains("timed-out"), "{e}"),
            Ok(_) => {}
        }
        Err("the old token still admitted 40 s after the rotation".to_string())
    })
    .await;
    assert_eq!(query(&ctx, DISTINCT_G).await, ["7"]);
    ap.leave_swarm().await.unwrap();
}

/// A worker runs plans that read its meadow only: a client that holds the token but sends a scan
/// of files outside the meadow is refused before the plan runs — on a local folder, whose store
/// is the machine's file system, and on S3, where the worker has no `file://` store at all.
async fn a_worker_refuses_a_plan_that_reads_outside_its_meadow(backend: Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let (ap, node, endpoint) = listening_node(&backend.url, scratch.path()).await;
    let token = bearer(&ap).await;
    let holder = outsider(&ap.session().unwrap(), &endpoint, Some(token), true);
    sql(&holder, "SET swarm.path = 'storage'").await;
    sql(
        &holder,
        "SET distributed.file_scan_config_bytes_per_partition = 1",
    )
    .await;
    // A folder beside the meadow; on S3 also a key prefix beside the meadow's in its bucket
    // (its name starts with the meadow's).
    let mut places = vec![format!("file://{}/outside/", scratch.path().display())];
    if backend.url.starts_with("s3://") {
        places.push(format!("{}-outside/", backend.url));
    }
    for (n, place) in places.iter().enumerate() {
        // Four files, so that their scan is spread over tasks.
        for i in 0..4 {
            sql(
                &holder,
                &format!(
                    "COPY (SELECT value AS k, value % 7 AS g FROM generate_series(1, 10000) \
                     WHERE value % 4 = {i}) TO '{place}part-{i}.parquet'"
                ),
            )
            .await;
        }
        let table = format!("outside{n}");
        holder
            .register_parquet(&table, place, Default::default())
            .await
            .unwrap();
        let q = format!("SELECT g, count(*) FROM {table} GROUP BY g");
        let text = physical(&holder, &q).await;
        assert!(
            text.contains("DistributedExec"),
            "{backend} {place}: {text}"
        );
        let refused = node.status().refused_requests;
        let err = sql_err(&holder, &q).await;
        assert!(
            err.contains("outside its meadow"),
            "{backend} {place}: {err}"
        );
        assert!(
            node.status().refused_requests > refused,
            "{backend} {place}"
        );
    }
    // A client without a query ticket is not an Apiary coordinator: its plans are
    // refused, naming the ticket.
    let bare = outsider(&holder, &endpoint, Some(token), false);
    let err = sql_err(&bare, "SELECT g, count(*) FROM outside0 GROUP BY g").await;
    assert!(
        err.contains("without its query's ticket (x-apiary-query)"),
        "{backend}: {err}"
    );
    ap.leave_swarm().await.unwrap();
}

/// `--tls-cert/--tls-key/--tls-ca`: workers serve the direct path over TLS (https endpoints in
/// their heartbeats) and no longer speak plain HTTP/2; a coordinator that holds the swarm's CA
/// runs queries on them; one without it keeps to the meadow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_serve_the_direct_path_over_tls() {
    let scratch = tempfile::tempdir().unwrap();
    let [cert, key, ca] = certificates(scratch.path());
    let url = local_meadow(scratch.path());
    let ap = tpch_coordinator(&url, scratch.path()).await;
    let tls = [
        &LISTEN[..],
        &["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca],
    ]
    .concat();
    let workers = [
        Worker::spawn(&url, "t1", scratch.path(), &tls),
        Worker::spawn(&url, "t2", scratch.path(), &tls),
    ];
    // The coordinator listens too, without TLS: the probe below must tell the two apart.
    let mut config = listening(coordinator_config(scratch.path()));
    config.tls = Some(apiary::swarm::SwarmTls {
        ca: Some(ca.clone().into()),
        ..Default::default()
    });
    let node = ap.join_swarm(config).await.unwrap();
    wait_alive(&ap, &workers).await;
    wait_reached(&ap, 3, &workers).await;
    let reached = ap.swarm().unwrap().direct_workers();
    let tls: Vec<&String> = reached
        .iter()
        .filter(|e| e.starts_with("https://"))
        .collect();
    assert_eq!(tls.len(), 2, "{reached:?}");
    for endpoint in &tls {
        assert!(
            !speaks_plain_http2(endpoint).await,
            "{endpoint} speaks plain HTTP/2"
        );
    }
    assert!(speaks_plain_http2(&node.status().endpoint.unwrap()).await);

    let ctx = direct_session(&ap).await;
    takes_the_direct_path(&ctx, &tpch::query(5)).await;
    tpch::assert_answers(&ctx, [3, 5], "").await;
    let calls = ap.swarm().unwrap().direct_calls();
    assert!(
        tls.iter()
            .all(|e| calls.keys().any(|c| c.starts_with(e.as_str()))),
        "{calls:?}"
    );
    ap.leave_swarm().await.unwrap();

    // A node without the CA does not call them: its queries keep to the meadow.
    let dir = scratch.path().join("other");
    let other = coordinator(&url, &dir).await;
    join_and_wait(&other, coordinator_config(&dir), &workers).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(other.swarm().unwrap().direct_workers().is_empty());
    let ctx = swarm_session(&other).await;
    let text = physical(&ctx, &tpch::query(5)).await;
    assert!(!text.contains("DirectPathExec"), "{text}");
    tpch::assert_answers(&ctx, [5], "").await;
    other.leave_swarm().await.unwrap();
}

/// `apiary node --rotate-secret` writes a new token and exits.
#[test]
fn rotate_secret_replaces_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("meadow");
    std::fs::create_dir_all(&storage).unwrap();
    let token = || {
        let out = crate::support::apiary(&storage, &["node", "--rotate-secret"]);
        assert!(crate::support::ok(&out).contains("swarm token"));
        let bytes = std::fs::read(storage.join(apiary::swarm::SECRET)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let (first, second) = (token(), token());
    assert!(first.len() >= 64, "{first}");
    assert_ne!(first, second);
}

/// Nodes racing to listen first agree on one token: the secret is created conditionally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_agree_on_one_token() {
    use apiary::swarm::SwarmToken;
    let dir = tempfile::tempdir().unwrap();
    let meadow = apiary::catalog::Meadow::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let tokens: Vec<String> = futures::future::join_all((0..8).map(|_| {
        let meadow = meadow.clone();
        tokio::spawn(async move { SwarmToken::load_or_create(&meadow).await.unwrap().bearer() })
    }))
    .await
    .into_iter()
    .map(|t| t.unwrap())
    .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
}

/// `swarm.path = 'direct'` with no worker reached is an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_without_a_reached_worker_is_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let ap = coordinator(&local_meadow(scratch.path()), scratch.path()).await;
    ap.join_swarm(coordinator_config(scratch.path()))
        .await
        .unwrap();
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    sql(&ctx, "CREATE TABLE h.b.t AS VALUES (1), (2)").await;
    sql(&ctx, "SET swarm.path = 'direct'").await;
    let err = sql_err(&ctx, "SELECT count(*) FROM h.b.t").await;
    assert!(err.contains("swarm.path = 'direct', but no node"), "{err}");
    ap.leave_swarm().await.unwrap();
}

/// The direct path, with any scan big enough for two tasks (so that only `swarm.min_bytes`
/// keeps a query local).
const DIRECT_IN_TWO_TASKS: &[&str] = &[
    "SET swarm.path = 'direct'",
    "SET distributed.file_scan_config_bytes_per_partition = 1",
    "SET distributed.max_tasks_per_stage = 2",
];

/// The direct path keeps small queries local by the storage path's rule: a query that reads
/// less than `swarm.min_bytes` of cells is planned as usual, whichever path was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_below_min_bytes_stays_local_on_the_direct_path() {
    let (scratch, url) = scratch_meadow();
    let (ap, _node, _endpoint) = listening_node(&url, scratch.path()).await;
    let ctx = ap.session().unwrap();
    sql_all(&ctx, DIRECT_IN_TWO_TASKS).await;
    // h.b.t has a few MiB of cells, below the default 64 MiB.
    let q = "SELECT g, count(*) FROM h.b.t GROUP BY g";
    let text = physical(&ctx, q).await;
    assert!(!text.contains("DistributedExec"), "{text}");
    let explain = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(!explain.contains("DirectPathExec"), "{explain}");
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    let text = physical(&ctx, q).await;
    assert!(text.contains("DistributedExec"), "{text}");
    assert_eq!(query(&ctx, DISTINCT_G).await, ["7"]);
    ap.leave_swarm().await.unwrap();
}

/// `swarm.min_bytes` counts the bytes of the columns a query reads (their size in memory, from
/// the ledger's statistics), not whole cells: a query of a frame's narrow column stays local
/// where one that also reads its wide column is distributed.
/// (Seen: TPC-H q2, q11 and q22 read a few columns of 56–74 MB of cells, went to the direct path
/// under the default 64 MiB and lost 7–28 ms to its stages.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_bytes_counts_the_columns_a_query_reads() {
    let (scratch, url) = scratch_meadow();
    let (ap, _node, _endpoint) = listening_node(&url, scratch.path()).await;
    let ctx = ap.session().unwrap();
    // 100,000 rows: `k` 800 KB in memory, `pad` eight different md5 digests a row, 26 MB.
    // Under 1 MiB reads `k` alone; its cells, and `pad`, are more.
    let pad = (0..8)
        .map(|i| format!("md5(CAST(value + {i} AS VARCHAR))"))
        .collect::<Vec<_>>()
        .join(" || ");
    sql_all(
        &ctx,
        &[
            &format!(
                "CREATE TABLE h.b.wide AS SELECT value AS k, {pad} AS pad FROM generate_series(1, 100000)"
            ),
            "SET swarm.min_bytes = 1048576",
        ],
    )
    .await;
    sql_all(&ctx, DIRECT_IN_TWO_TASKS).await;
    let narrow = "SELECT k % 7 AS g, count(*) FROM h.b.wide GROUP BY g";
    let text = physical(&ctx, narrow).await;
    assert!(!text.contains("DistributedExec"), "{text}");
    let wide = "SELECT k % 7 AS g, max(pad) FROM h.b.wide GROUP BY g";
    let text = physical(&ctx, wide).await;
    assert!(text.contains("DistributedExec"), "{text}");
    ap.leave_swarm().await.unwrap();
}

/// Where no node listens the direct path costs no storage call per interval: nodes do not read
/// the swarm secret after joining. Once a node listens, the others read it as soon as they
/// reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_the_token_only_once_a_node_listens() {
    let (meadow, counting) = apiary_catalog::testing::counting_meadow();
    let scratch = tempfile::tempdir().unwrap();
    // Heartbeats and views every 100 ms.
    let a = crate::swarm::small_node(&meadow, "a", scratch.path(), |_| {}).await;
    let _b = crate::swarm::small_node(&meadow, "b", scratch.path(), |_| {}).await;
    counting.take_reads();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reads = counting.take_reads();
    assert!(
        !reads.iter().any(|k| k.contains(apiary::swarm::SECRET)),
        "{reads:?}"
    );

    let _c = crate::swarm::small_node(&meadow, "c", scratch.path(), |c| {
        c.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    until(10, 50, async || {
        let reached = !a.swarm().unwrap().direct_workers().is_empty();
        reached
            .then_some(())
            .ok_or_else(|| "a never read the token of the node that listens".to_string())
    })
    .await;
}

// Builders.

/// What most tests here ask of `h.b.t` ([`listening_node`]): 7.
const DISTINCT_G: &str = "SELECT count(DISTINCT g) FROM h.b.t";

/// A coordinator's swarm settings; it does not listen itself.
fn coordinator_config(scratch: &Path) -> SwarmConfig {
    swarm_config("coordinator", scratch, Duration::from_secs(60))
}

/// `config`, listening on any free port of 127.0.0.1.
fn listening(mut config: SwarmConfig) -> SwarmConfig {
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// Waits until the coordinator has reached `n` workers' endpoints.
async fn wait_reached(ap: &Apiary, n: usize, workers: &[Worker]) {
    let swarm = ap.swarm().expect("joined");
    until(60, 100, async || {
        if swarm.direct_workers().len() >= n {
            return Ok(());
        }
        let logs: Vec<String> = workers
            .iter()
            .map(|w| format!("{}: {}", w.id, w.log()))
            .collect();
        Err(format!(
            "reached {:?} after 60 s; logs:\n{}",
            swarm.direct_workers(),
            logs.join("\n")
        ))
    })
    .await;
}

/// This coordinator's direct-path queries that failed before their first batch and ran again
/// over the meadow: a test of the direct path itself wants none.
fn reruns(ap: &Apiary) -> u64 {
    ap.swarm().expect("joined").status().direct_reruns
}

/// The physical plan `q` gets in `ctx`, as text.
async fn physical(ctx: &SessionContext, q: &str) -> String {
    let plan = physical_plan(ctx, q).await;
    displayable(plan.as_ref()).indent(true).to_string()
}

/// The physical plan `q` gets in `ctx`, as text, asserting that it takes the direct path.
async fn takes_the_direct_path(ctx: &SessionContext, q: &str) -> String {
    let text = physical(ctx, q).await;
    assert!(text.contains("DirectPathExec"), "{text}");
    text
}

/// A session of `ap` on the TPC-H schema with no size threshold, a task per MiB read: SF 0.1 is
/// small (below the 64 MiB under which a query stays local), and so every large scan is spread.
async fn direct_session(ap: &Apiary) -> SessionContext {
    let ctx = swarm_session(ap).await;
    sql(
        &ctx,
        "SET distributed.file_scan_config_bytes_per_partition = 1048576",
    )
    .await;
    ctx
}

/// A coordinator on `url` (which does not listen) with TPC-H SF 0.1 loaded, and a node process
/// per `(id, listens)` — all seen alive, the listening ones reached — with a [`direct_session`]
/// of the coordinator.
async fn tpch_swarm(
    url: &str,
    scratch: &Path,
    nodes: &[(&str, bool)],
) -> (Apiary, Vec<Worker>, SessionContext) {
    let ap = tpch_coordinator(url, scratch).await;
    let workers: Vec<Worker> = nodes
        .iter()
        .map(|(id, listens)| {
            let listen: &[&str] = if *listens { &LISTEN } else { &[] };
            Worker::spawn(url, id, scratch, listen)
        })
        .collect();
    join_and_wait(&ap, coordinator_config(scratch), &workers).await;
    let listening = nodes.iter().filter(|(_, l)| *l).count();
    wait_reached(&ap, listening, &workers).await;
    let ctx = direct_session(&ap).await;
    (ap, workers, ctx)
}

/// A coordinator of `bees` bees that listens, with TPC-H SF 0.1 on a local folder, and one
/// listening node process, both reached; a [`direct_session`] of the coordinator.
async fn listening_pair(scratch: &Path, bees: usize) -> (Apiary, Worker, SessionContext) {
    let url = local_meadow(scratch);
    let ap = crate::swarm::coordinator_of(&url, scratch, bees).await;
    tpch::load(&ap.session().unwrap()).await;
    let workers = [Worker::spawn(&url, "w1", scratch, &LISTEN)];
    join_and_wait(&ap, listening(coordinator_config(scratch)), &workers).await;
    wait_reached(&ap, 2, &workers).await;
    let ctx = direct_session(&ap).await;
    let [worker] = workers;
    (ap, worker, ctx)
}

/// How many calls this node's direct path made to the worker of node `id`.
fn calls_to(ap: &Apiary, id: &str) -> u64 {
    let swarm = ap.swarm().expect("joined");
    let endpoint = swarm
        .world()
        .node(id)
        .and_then(|n| n.heartbeat.endpoint)
        .unwrap_or_else(|| panic!("{id} listens"));
    swarm
        .direct_calls()
        .iter()
        .filter(|(url, _)| url.starts_with(&endpoint))
        .map(|(_, n)| n)
        .sum()
}

/// How a test loses a worker.
#[derive(Clone, Copy)]
enum Loss {
    /// SIGKILL: the node's port is closed.
    Kill,
    /// SIGSTOP: the port still accepts connections, and nothing answers on them.
    Cut,
}

impl Loss {
    fn inflict(self, worker: &mut Worker) {
        match self {
            Loss::Kill => worker.kill(),
            Loss::Cut => worker.freeze(),
        }
    }

    /// Lets a cut-off worker run again, so that it can be stopped at the end.
    fn end(self, worker: &Worker) {
        if let Loss::Cut = self {
            worker.thaw();
        }
    }
}

/// Loses worker `m2` as told while it runs stages of TPC-H q21: the answer is right all the
/// same, within a minute.
async fn lost_in_the_middle_of_a_query(loss: Loss) {
    let (scratch, url) = scratch_meadow();
    let (ap, mut workers, ctx) =
        tpch_swarm(&url, scratch.path(), &[("m1", true), ("m2", true)]).await;
    // q21: four scans of lineitem joined, long enough to lose a worker in.
    takes_the_direct_path(&ctx, &tpch::query(21)).await;
    let before = calls_to(&ap, "m2");
    let start = Instant::now();
    let query = tokio::spawn({
        let ctx = ctx.clone();
        async move { tpch::failures(&ctx, [21]).await }
    });
    while calls_to(&ap, "m2") == before {
        assert!(!query.is_finished(), "q21 ended before it reached m2");
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loss.inflict(&mut workers[1]);
    assert!(!query.is_finished(), "q21 ended before m2 was lost");
    let answer = tokio::time::timeout(Duration::from_secs(60), query).await;
    loss.end(&workers[1]);
    let failures = answer.expect("q21 hung after m2 was lost").unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    ap.leave_swarm().await.unwrap();
}

/// Loses worker `n2` as told once a query's first batch came: the query fails within a minute;
/// its error.
async fn lost_after_the_first_batch(loss: Loss) -> String {
    use futures::StreamExt;
    let (scratch, url) = scratch_meadow();
    let (ap, mut workers, ctx) =
        tpch_swarm(&url, scratch.path(), &[("n1", true), ("n2", true)]).await;
    let q = "SELECT l_orderkey, l_comment FROM lineitem";
    takes_the_direct_path(&ctx, q).await;
    let mut stream = ctx.sql(q).await.unwrap().execute_stream().await.unwrap();
    stream.next().await.expect("a first batch").unwrap();
    loss.inflict(&mut workers[1]);
    let start = Instant::now();
    let err = loop {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the query hung after its worker was lost");
        match next {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e.to_string(),
            None => panic!("the query ended without n2's rows and without an error"),
        }
    };
    loss.end(&workers[1]);
    assert!(start.elapsed() < Duration::from_secs(60));
    ap.leave_swarm().await.unwrap();
    err
}

/// Always the given endpoints.
struct Fixed(Vec<Url>);

impl WorkerResolver for Fixed {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

/// A client that sends `authorization: {0}` (or nothing) and, with `{1}`, a query ticket as an
/// Apiary coordinator does (the oldest query there can be, asking for one bee).
#[derive(Clone, Default)]
struct Sends(Option<&'static str>, bool, grpc::DefaultChannelResolver);

#[async_trait]
impl ChannelResolver for Sends {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self.2.get_channel(url).await?;
        let (header, ticket) = (self.0, self.1);
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: http::Request<tonic::body::Body>| {
                if let Some(h) = header {
                    req.headers_mut()
                        .insert("authorization", http::HeaderValue::from_static(h));
                }
                if ticket {
                    req.headers_mut()
                        .insert("x-apiary-query", http::HeaderValue::from_static("1.ab.1.1"));
                }
                req
            })
            .service(channel);
        Ok(grpc::create_worker_client(grpc::BoxCloneSyncChannel::new(
            service,
        )))
    }
}

/// A session like `ctx` that plans with datafusion-distributed on the worker at `endpoint` (two
/// tasks a stage, both there) as a client sending `authorization: {sends}` and, with `ticket`,
/// a query ticket.
fn outsider(
    ctx: &SessionContext,
    endpoint: &str,
    sends: Option<&'static str>,
    ticket: bool,
) -> SessionContext {
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_distributed_worker_resolver(Fixed(vec![Url::parse(endpoint).unwrap(); 2]))
        .with_distributed_channel_resolver(Sends(sends, ticket, Default::default()))
        .with_distributed_planner()
        .build();
    // The client runs in one of the node's two bees, its plans on the node's worker in the
    // other (its ticket asks for one).
    let mut state = state;
    state
        .config_mut()
        .options_mut()
        .set("apiary.bees_per_query", "1")
        .unwrap();
    // An outsider has no worker of the node in its process: it calls the endpoint, not the
    // node's own session's in-process worker.
    let elsewhere = Url::parse("http://127.0.0.1:1/").unwrap();
    state.config_mut().set_extension(Arc::new(
        datafusion_distributed::Worker::default().to_local_worker_context(elsewhere),
    ));
    SessionContext::new_with_state(state)
}

/// A node of a meadow at `url` that listens on 127.0.0.1 (and coordinates), with a frame
/// `h.b.t` of 400,000 rows in cells of about a MiB; its status and endpoint.
async fn listening_node(url: &str, scratch: &Path) -> (Apiary, SwarmNode, String) {
    let ap = coordinator(url, scratch).await;
    let ctx = ap.session().unwrap();
    hive_box(&ctx).await;
    let create =
        "CREATE TABLE h.b.t AS SELECT value AS k, value % 7 AS g FROM generate_series(1, 100000)";
    sql(&ctx, create).await;
    for _ in 0..3 {
        sql(&ctx, "INSERT INTO h.b.t SELECT * FROM h.b.t LIMIT 100000").await;
    }
    let node = ap
        .join_swarm(listening(coordinator_config(scratch)))
        .await
        .unwrap();
    let endpoint = node.status().endpoint.expect("listening");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    (ap, node, endpoint)
}

/// The `authorization` header of the swarm's token, as the meadow holds it.
async fn bearer(ap: &Apiary) -> &'static str {
    let secret = ap
        .meadow()
        .get(apiary::swarm::SECRET)
        .await
        .unwrap()
        .expect("the first node that listens creates the secret");
    let secret: serde_json::Value = serde_json::from_slice(&secret).unwrap();
    format!("Bearer {}", secret["token"].as_str().unwrap()).leak()
}

/// Certificates for 127.0.0.1, made with `openssl`: a CA, and a node certificate it signed.
/// Returns the node's certificate, its key and the CA's certificate.
fn certificates(dir: &Path) -> [String; 3] {
    let openssl = |args: &str| {
        let mut command = std::process::Command::new("openssl");
        command.args(args.split(' ')).current_dir(dir);
        let out = command
            .output()
            .expect("openssl (the tests make their certificates with it)");
        crate::support::ok(&out);
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(&format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=apiary-test-ca"
    ));
    openssl(&format!(
        "req {key} -keyout node.key -out node.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(
        dir.join("node.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        "x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem -days 2 \
         -extfile node.ext",
    );
    ["node.pem", "node.key", "ca.pem"].map(|f| dir.join(f).to_str().unwrap().to_string())
}

/// What a server on `endpoint` answers to a client that opens plain HTTP/2 (its preface and an
/// empty SETTINGS frame): whether it answers with an HTTP/2 frame (SETTINGS, type 4).
async fn speaks_plain_http2(endpoint: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.split("://").nth(1).unwrap().trim_end_matches('/');
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head)).await;
    matches!(read, Ok(Ok(_))) && head[3] == 4
}

apiary_catalog::each_backend!(
    [local, s3]
    tpch_on_three_listening_nodes_takes_the_direct_path,
    a_worker_refuses_a_plan_that_reads_outside_its_meadow,
);
