//! The swarm with real processes: three `apiary node` workers and an in-process coordinator on
//! one meadow (a local folder, and the S3 test server). TPC-H SF 0.1 gives the expected answers
//! with the scans spread over the nodes; a worker killed with SIGKILL while it holds claims costs
//! a retry, not the answer; a worker stopped with SIGTERM leaves the swarm.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::catalog::{CatalogOptions, Leafcutter, WriteOptions};
use apiary::exec::{Chamber, NodeConfig, Spill};
use apiary::swarm::{Done, Manifest, NodeState, QueryDir, Retry, SwarmConfig, SwarmNode};
use apiary::{Apiary, ApiaryOptions};
use apiary_catalog::Meadow;
use apiary_catalog::testing::Backend;
use apiary_catalog::testing::faults::{Fault, Faults, Op, Rule};
use apiary_catalog::testing::{Counting, counting_meadow};
use datafusion::prelude::SessionContext;
use tokio::task::JoinHandle;

use crate::support::{
    door, hive_box, parquet_files, physical_plan, plan, query, rows, scalar, sql, sql_err, until,
};
use crate::tpch;

const HEARTBEAT_MS: u64 = 300;

/// `dead_after` for tests in which no node stops: far beyond any stall of a loaded machine.
const GENEROUS: Duration = Duration::from_secs(10);

/// The query most tests distribute over [`create_numbers`]' frame.
const COUNT_AND_SUM: &str = "SELECT count(*), sum(n) FROM h.b.t";

async fn tpch_on_three_worker_processes_and_a_coordinator(backend: Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let ap = tpch_coordinator(&backend.url, scratch.path()).await;
    let mut workers = three_workers(&backend.url, scratch.path(), &["--keep-queries"]);
    // No worker stops during this test, so none may be judged dead: the margin is generous,
    // whatever the load on this machine and on the serialized S3 test server.
    let config = swarm_config("coordinator", scratch.path(), Duration::from_secs(60));
    join_and_wait(&ap, keeping_queries(config), &workers).await;
    let ctx = swarm_session(&ap).await;

    let explain = plan(&ctx, &format!("EXPLAIN {}", tpch::query(1))).await;
    assert!(
        explain.contains("SwarmExec: tasks="),
        "{backend}: {explain}"
    );
    tpch::assert_answers(&ctx, 1..=22, &format!("{backend}: ")).await;

    let Outcomes {
        manifests,
        done,
        retries,
    } = outcomes(ap.meadow()).await;
    let split = manifests
        .iter()
        .flat_map(|m| &m.tasks)
        .flat_map(|t| &t.cells)
        .filter(|c| c.range.is_some())
        .count();
    assert!(split > 0, "{backend}: no cell was split between tasks");
    let mut nodes: Vec<&str> = done.iter().map(|d| d.node.as_str()).collect();
    nodes.sort();
    nodes.dedup();
    assert!(
        nodes.len() >= 3 && nodes.iter().any(|n| n.starts_with('w')),
        "{backend}: tasks ran on {nodes:?} only ({} tasks)",
        done.len()
    );
    assert!(retries.is_empty(), "{backend}: {retries:?}");

    // SIGTERM: the worker leaves, its heartbeat goes with it.
    for w in &mut workers {
        assert!(heartbeat_of(ap.meadow(), &w.id).await);
        w.terminate();
        assert!(
            !heartbeat_of(ap.meadow(), &w.id).await,
            "{backend}: {} left its heartbeat behind",
            w.id
        );
    }
    ap.leave_swarm().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_holding_claims_costs_a_retry_not_the_answer() {
    let (scratch, url) = scratch_meadow();
    let ap = tpch_coordinator(&url, scratch.path()).await;
    // `slow` claims its tasks at once but sits on them for a minute before running them.
    let slow = ["--keep-queries", "--debug-task-delay-ms", "60000"];
    let mut workers = vec![
        Worker::spawn(&url, "w1", scratch.path(), &["--keep-queries"]),
        Worker::spawn(&url, "w2", scratch.path(), &["--keep-queries"]),
        Worker::spawn(&url, "slow", scratch.path(), &slow),
    ];
    // Long enough that w1 and w2 are never judged dead on a loaded machine; short enough that
    // the killed one is found soon.
    let config = swarm_config("coordinator", scratch.path(), Duration::from_secs(5));
    join_and_wait(&ap, keeping_queries(config), &workers).await;

    // Run q1 until `slow` holds a claim, then kill it while the query waits for that task.
    let query = q1_claimed_by(&ap, "slow").await;
    workers[2].kill();

    let failures = query.await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every retry is explained by the node that really stopped: its heartbeat, or its lease.
    retried_elsewhere(&ap, "slow", |r| {
        r.reason == "node slow stopped heartbeating"
            || r.reason.starts_with("node slow made no progress")
    })
    .await;
    ap.leave_swarm().await.unwrap();
}

/// Three nodes in this process on one memory meadow whose every request waits three heartbeat
/// intervals: heartbeats land late, and slowly seen, yet nobody is judged dead, a distributed
/// query needs no retry — and a node that really stops is still found dead, within the bound
/// `docs/swarm.md` gives: `dead_after` + the store's lag + two view cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_is_not_a_dead_node() {
    let interval = Duration::from_millis(100);
    let delay = interval * 3;
    let faults = Faults::new(11).with_rule(Rule::new(Fault::Delay(delay)));
    faults.set_enabled(false);
    let meadow = memory_meadow("slow").await.with_store_layer(faults.layer());
    let scratch = tempfile::tempdir().unwrap();
    let node = |id: &str| in_process_node(meadow.clone(), 1, scratch.path().join(id));
    let coordinator = node("coordinator").await;
    let ctx = coordinator.session().unwrap();
    create_numbers(&ctx, 6).await;
    let workers = [node("w1").await, node("w2").await];
    let config = |id: &str| {
        let mut c = SwarmConfig::default()
            .with_heartbeat_interval(interval)
            .with_node_id(id);
        c.cache_bytes = 0;
        c.cache_dir = scratch.path().join("cache");
        c.keep_queries = true;
        c
    };
    let mut members = vec![];
    for (ap, id) in workers.iter().zip(["w1", "w2"]) {
        members.push(ap.join_swarm(config(id)).await.unwrap());
    }
    let swarm = coordinator.join_swarm(config("coordinator")).await.unwrap();
    faults.set_enabled(true);

    // Watch for a while: every request is three intervals late, nobody is ever judged dead.
    never_judged_dead(&swarm, interval * 40).await;
    assert!(faults.injected(Fault::Delay(delay)) > 0);

    let ctx = distributing(&coordinator).await;
    let explain = plan(&ctx, &format!("EXPLAIN {COUNT_AND_SUM}")).await;
    assert!(explain.contains("SwarmExec: tasks=3"), "{explain}");
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, vec!["6000|18003000"]);
    let Outcomes { done, retries, .. } = outcomes(coordinator.meadow()).await;
    assert_eq!(done.len(), 3, "{done:?}");
    assert!(retries.is_empty(), "a slow store cost retries: {retries:?}");

    // A node that really stops is still found dead, within the documented bound.
    members[1].halt();
    let halted = Instant::now();
    let (lag, cycle) = watch_until_dead(&swarm, "w2", halted).await;
    let bound = swarm.config().dead_after + lag + cycle * 2 + interval;
    assert!(
        halted.elapsed() <= bound,
        "judged dead after {:?}, beyond the bound of {bound:?}",
        halted.elapsed()
    );
    for n in swarm.world().nodes() {
        if n.heartbeat.node_id != "w2" {
            assert_eq!(n.state, NodeState::Alive, "{n:?}");
        }
    }
    faults.set_enabled(false);
    members[0].leave().await.unwrap();
    coordinator.leave_swarm().await.unwrap();
}

/// A claim is a lease: a claimant that is alive by its heartbeat but whose attempt makes no
/// progress (its task waits, and its progress writes fail) loses the task after twice
/// `dead_after`, to a node that finishes it — not after the five-minute task deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alive_claimant_that_makes_no_progress_loses_its_lease() {
    let nodes = Nodes::in_memory("lease").await;
    let faults = Faults::new(5).with_rule(
        Rule::new(Fault::Unavailable)
            .on(&[Op::Put])
            .key_contains("progress_"),
    );
    let dead_after = Duration::from_secs(3);
    // Judged dead after 3 s, a cache folder of its own, its queries kept, its tasks delayed.
    let leased = |id: &str, delay: Duration| {
        let cache = nodes.dir().join(id).join("cache");
        move |c: &mut SwarmConfig| {
            (c.suspect_after, c.dead_after) = (dead_after / 2, dead_after);
            c.cache_dir = cache;
            c.keep_queries = true;
            c.debug_task_delay = delay;
        }
    };
    // The coordinator's own task takes 3 s: `stuck` pulls the other one meanwhile.
    let delayed = leased("coordinator", Duration::from_secs(3));
    let (coordinator, ctx) = nodes.coordinator(4, delayed).await;
    let faulty = nodes.meadow.with_store_layer(faults.layer());
    let stuck_config = leased("stuck", Duration::from_secs(600));
    let stuck = small_node(&faulty, "stuck", nodes.dir(), stuck_config).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    let got = tokio::time::timeout(Duration::from_secs(120), query(&ctx, COUNT_AND_SUM))
        .await
        .expect("the stuck claim was not taken over within 120 s");
    assert_eq!(got, ["4000|8002000"]);
    assert!(claimed_by(coordinator.meadow(), "stuck").await);
    assert!(faults.injected(Fault::Unavailable) > 0);
    retried_elsewhere(&coordinator, "stuck", |r| {
        r.reason.starts_with("node stuck made no progress")
    })
    .await;
    faults.set_enabled(false);
    leave([&stuck, &coordinator]).await;
}

/// Seen: with two one-bee nodes and a one-bee shell, `SELECT l_orderkey FROM lineitem LIMIT 10`
/// printed 31 rows — DataFusion folds the limit into the one-partition scan, and every task
/// applied it. A fetch shipped to the tasks is applied again above them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_the_swarm_on_one_and_many_bees() {
    for bees in [1, 2] {
        let (coordinator, workers) = in_process_swarm(bees, 2).await;
        let ctx = distributing(&coordinator).await;
        for (q, rows) in [
            ("SELECT n FROM h.b.t LIMIT 10", 10),
            ("SELECT n FROM h.b.t WHERE n % 2 = 0 LIMIT 10", 10),
            ("SELECT n FROM h.b.t LIMIT 10 OFFSET 5", 10),
            ("SELECT n FROM h.b.t WHERE n > 5990 LIMIT 20", 10),
            ("SELECT n * 2 AS m FROM h.b.t LIMIT 7", 7),
        ] {
            let explain = plan(&ctx, &format!("EXPLAIN {q}")).await;
            assert!(explain.contains("SwarmExec"), "{bees} bees: {q}: {explain}");
            let got = query(&ctx, q).await;
            assert_eq!(got.len(), rows, "{bees} bees: {q}: {got:?}\n{explain}");
        }
        let even = query(&ctx, "SELECT n FROM h.b.t WHERE n % 2 = 0 LIMIT 10").await;
        assert!(even.iter().all(|n| n.parse::<i64>().unwrap() % 2 == 0));
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM (SELECT n FROM h.b.t LIMIT 25)").await,
            "25"
        );
        leave(workers.iter().chain([&coordinator])).await;
    }
}

/// Seen: two shells that joined the swarm, each running a distributed query at once, each waited
/// for the other — a node busy with its own query claimed the other's task and sat on it until
/// the five-minute task deadline. A node now claims a task only when it holds a free bee for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_running_at_once_do_not_wait_for_each_other() {
    let (a, others) = in_process_swarm(1, 1).await;
    let b = &others[0];
    let (ca, cb) = (distributing(&a).await, distributing(b).await);
    let q = "SELECT count(*), sum(n) FROM h.b.t WHERE n % 3 <> 1";
    assert!(
        plan(&cb, &format!("EXPLAIN {q}"))
            .await
            .contains("SwarmExec")
    );
    let started = Instant::now();
    let (ra, rb) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), query(&ca, q)),
        tokio::time::timeout(Duration::from_secs(60), query(&cb, q)),
    );
    let (ra, rb) = (
        ra.expect("a's query stalled"),
        rb.expect("b's query stalled"),
    );
    assert_eq!(ra, ["4000|12004000"]);
    assert_eq!(rb, ra);
    println!("both answered in {:?}", started.elapsed());
    leave([b, &a]).await;
}

/// Seen: heartbeats of shells ended by SIGTERM 90 minutes earlier still in the meadow, taken for
/// alive by every new process until it had watched them for `dead_after`. A newcomer now judges
/// a heartbeat at once by its age on the store's clock; a shell leaves on SIGTERM; a dropped
/// Apiary leaves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_heartbeats_are_judged_at_once_and_no_process_leaves_one_behind() {
    let (scratch, url) = scratch_meadow();
    let meadow = Meadow::open(&url).await.unwrap();

    // A node killed with SIGKILL leaves its heartbeat; two seconds later a newcomer's first
    // look already judges it dead (300 ms beats: dead after 1.8 s).
    let mut killed = Worker::spawn(&url, "killed", scratch.path(), &[]);
    until(60, 50, async || {
        let beating = heartbeat_of(&meadow, "killed").await;
        beating
            .then_some(())
            .ok_or_else(|| "no heartbeat".to_string())
    })
    .await;
    killed.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let config = SwarmConfig::default()
        .with_heartbeat_interval(Duration::from_millis(HEARTBEAT_MS))
        .with_node_id("newcomer");
    let view = apiary::swarm::WorldView::new(meadow.clone(), config);
    view.poll().await.unwrap();
    assert_eq!(
        view.state_of("killed"),
        Some(NodeState::Dead),
        "{:?}",
        view.nodes()
    );

    // A shell that joined the swarm and is ended by SIGTERM (or SIGHUP: its terminal closed)
    // mid-query removes its heartbeat.
    for (sig, code) in [("-TERM", 143), ("-HUP", 129)] {
        let mut shell = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["--storage", &url, "--swarm", "-q", "-c"])
            .arg("SELECT count(*) FROM generate_series(1, 1000000000000)")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let joined = heartbeat_ending(&meadow, &format!("-{}.json", shell.id())).await;
        signal(sig, shell.id());
        let ended = shell.wait().unwrap();
        assert_eq!(ended.code(), Some(code), "{sig}: {ended}");
        let left = meadow.get(&format!("_heartbeats/{joined}")).await.unwrap();
        assert!(
            left.is_none(),
            "the shell ended by {sig} left {joined} behind"
        );
    }

    // An Apiary dropped without leaving leaves on drop.
    let ap = coordinator(&url, scratch.path()).await;
    let config = swarm_config("dropped", scratch.path(), Duration::from_secs(5));
    ap.join_swarm(config).await.unwrap();
    assert!(heartbeat_of(&meadow, "dropped").await);
    drop(ap);
    assert!(
        !heartbeat_of(&meadow, "dropped").await,
        "a dropped Apiary left its heartbeat"
    );
}

/// DataFusion re-runs the plan of a recursive query's recursive term once per iteration: a
/// distributed scan inside it works every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_scan_runs_again_in_every_round_of_a_recursive_query() {
    let (coordinator, workers) = in_process_swarm(1, 1).await;
    let ctx = distributing(&coordinator).await;
    let q = "WITH RECURSIVE r(k, s) AS (
                 SELECT 1, CAST(0 AS BIGINT)
                 UNION ALL
                 SELECT r.k + 1, t.total FROM r CROSS JOIN (SELECT sum(n) AS total FROM h.b.t) t WHERE r.k < 4
             ) SELECT k, s FROM r ORDER BY k";
    let explain = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(explain.contains("SwarmExec"), "{explain}");
    assert_eq!(
        query(&ctx, q).await,
        ["1|0", "2|18003000", "3|18003000", "4|18003000"]
    );
    leave(workers.iter().chain([&coordinator])).await;
}

/// The same physical plan executed twice: each execution is a distributed query of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_distributed_plan_runs_twice() {
    let (coordinator, workers) = in_process_swarm(1, 1).await;
    let ctx = distributing(&coordinator).await;
    let physical = physical_plan(&ctx, "SELECT sum(n) FROM h.b.t").await;
    let text = datafusion::physical_plan::displayable(physical.as_ref())
        .indent(false)
        .to_string();
    assert!(text.contains("SwarmExec"), "{text}");
    for _ in 0..2 {
        let batches = datafusion::physical_plan::collect(Arc::clone(&physical), ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(rows(&batches), ["18003000"]);
    }
    leave(workers.iter().chain([&coordinator])).await;
}

/// Seen: a distributed GROUP BY cut by a 1.5 s `apiary.timeout_ms` left its worker busy for 1.4 s
/// of CPU in the following 3 s. A cancelled query now stops everywhere: three worker processes
/// are idle within a second — no CPU, no bee busy, no task object written afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_stops_on_every_node() {
    let (scratch, url) = scratch_meadow();
    let ap = tpch_coordinator(&url, scratch.path()).await;
    let workers = three_workers(&url, scratch.path(), &[]);
    let config = swarm_config("coordinator", scratch.path(), Duration::from_secs(60));
    join_and_wait(&ap, config, &workers).await;
    let ctx = swarm_session(&ap).await;
    // Hashing every comment two hundred times over: minutes of work for each task.
    let q = "SELECT l_returnflag, count(*) FROM lineitem
             WHERE md5(repeat(l_comment, 200)) LIKE '%abc%' GROUP BY l_returnflag";
    assert!(
        plan(&ctx, &format!("EXPLAIN {q}"))
            .await
            .contains("SwarmExec")
    );
    // Small batches, so that every task yields often (the setting travels to the workers with
    // the query): an attempt stops at its next batch.
    sql(&ctx, "SET datafusion.execution.batch_size = 64").await;
    sql(&ctx, "SET apiary.timeout_ms = 3000").await;
    let cpu = || -> Vec<f64> { workers.iter().map(|w| cpu_seconds(w.child.id())).collect() };
    let at_start = cpu();
    let err = sql_err(&ctx, q).await;
    assert!(err.contains("deadline of 3000 ms exceeded"), "{err}");
    let worked: f64 = cpu().iter().zip(&at_start).map(|(a, b)| a - b).sum();
    assert!(
        worked > 0.3,
        "the workers did not work on the query ({worked:.2} CPU s)"
    );
    // Every worker was at work and stops: wait (generously, the machine may be loaded) until
    // each has beaten since the cancel with no bee busy, then watch two seconds in which none
    // uses CPU, holds a bee or writes a task object.
    let cancelled = Instant::now();
    wait_idle_since(&ap, &workers, chrono::Utc::now().timestamp_millis()).await;
    eprintln!(
        "every worker idle {} ms after the cancel",
        cancelled.elapsed().as_millis()
    );
    // A write already handed to the file system when its attempt was stopped still lands; give
    // such writes a moment before watching for new ones.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = std::time::SystemTime::now();
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ((w, b), a) in workers.iter().zip(&before).zip(cpu()) {
        let used = a - b;
        assert!(
            used < 0.3,
            "{} used {used:.2} CPU seconds after the cancel",
            w.id
        );
    }
    for n in ap.swarm().unwrap().world().poll().await.unwrap() {
        assert_eq!(
            n.heartbeat.busy_bees, 0,
            "{} still busy",
            n.heartbeat.node_id
        );
    }
    let late: Vec<String> = task_objects_written_after(ap.meadow(), quiet.into())
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut bodies = vec![];
    for key in &late {
        let rel = key.split_once("meadow/").map_or(key.as_str(), |(_, r)| r);
        bodies.push(format!("{rel}: {:?}", ap.meadow().get(rel).await));
    }
    assert!(
        late.is_empty(),
        "task objects written after the cancel: {bodies:?}"
    );
    // The folder keeps only `finished.json` for a grace period (30 s), then a node removes it:
    // nothing written late brings it back.
    wait_swept(ap.meadow()).await;
    ap.leave_swarm().await.unwrap();
}

/// Seen once in a full test run: a progress object of the coordinator's own attempt landed
/// seconds after the query was cancelled. A stopped task goes only when its current poll ends,
/// and its lease renewal, owned by it, kept beating meanwhile. Here the coordinator's attempt
/// holds its thread for 2 s without yielding from 0.3 s on; the query is cancelled 0.8 s in;
/// no task object may be written after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_attempt_renews_no_lease_while_its_poll_lasts() {
    let nodes = Nodes::in_memory("stopped").await;
    // A cache folder of its own; each task waits `delay`, then holds its thread for `block`.
    let blocking = |id: &str, delay: Duration, block: Duration| {
        let cache = nodes.dir().join(id).join("cache");
        move |c: &mut SwarmConfig| {
            c.cache_dir = cache;
            (c.debug_task_delay, c.debug_task_block) = (delay, block);
        }
    };
    // Its attempt runs 0.3 s (its lease renewal going), then holds its thread for 2 s.
    let holds = blocking(
        "coordinator",
        Duration::from_millis(300),
        Duration::from_secs(2),
    );
    let coordinator = joined_node(&nodes.meadow, "coordinator", 1, nodes.dir(), holds).await;
    let ctx = coordinator.session().unwrap();
    create_numbers(&ctx, 4).await;
    let waits = blocking("w0", Duration::from_secs(600), Duration::ZERO);
    let worker = joined_node(&nodes.meadow, "w0", 1, nodes.dir(), waits).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    sql(&ctx, "SET apiary.timeout_ms = 800").await;
    let err = sql_err(&ctx, COUNT_AND_SUM).await;
    assert!(err.contains("deadline of 800 ms exceeded"), "{err}");
    // A write already handed to the store when the attempt stopped may still land.
    let stopped = chrono::Utc::now() + chrono::Duration::milliseconds(100);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late: Vec<String> = task_objects_written_after(coordinator.meadow(), stopped)
        .await
        .into_iter()
        .map(|(key, at)| format!("{key} at {at}"))
        .collect();
    assert!(late.is_empty(), "written after the cancel: {late:?}");
    leave([&worker, &coordinator]).await;
}

/// A fragment that cannot be decoded where it would run — here a function only the user's
/// session knows — keeps its scan on the coordinator: a slower query, never a failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_that_does_not_travel_keeps_its_scan_local() {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let (coordinator, workers) = in_process_swarm(1, 1).await;
    let ctx = distributing(&coordinator).await;
    let plus_one = create_udf(
        "plus_one",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        std::sync::Arc::new(|args: &[ColumnarValue]| {
            let n = args[0].to_array(1)?;
            let n = datafusion::arrow::compute::cast(&n, &DataType::Int64)?;
            let one = datafusion::arrow::array::Int64Array::new_scalar(1);
            Ok(ColumnarValue::Array(
                datafusion::arrow::compute::kernels::numeric::add(&n, &one)?,
            ))
        }),
    );
    ctx.register_udf(plus_one);
    let local = "SELECT sum(plus_one(n)) FROM h.b.t WHERE plus_one(n) > 10";
    let explain = plan(&ctx, &format!("EXPLAIN {local}")).await;
    assert!(!explain.contains("SwarmExec"), "{explain}");
    // n + 1 for n in 10..=6000
    assert_eq!(scalar(&ctx, local).await, "18008946");
    // The same session still distributes what travels.
    let shipped = "SELECT sum(n) FROM h.b.t WHERE n >= 10";
    assert!(
        plan(&ctx, &format!("EXPLAIN {shipped}"))
            .await
            .contains("SwarmExec")
    );
    assert_eq!(scalar(&ctx, shipped).await, "18002955");
    leave(workers.iter().chain([&coordinator])).await;
}

/// Seen: query folders were swept by age alone, so a live coordinator's query running longer
/// than `stale_query_after` lost its folder under it. A coordinator's heartbeat now lists the
/// queries it runs — its lease on them — and a listed query is never swept for its age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_coordinators_long_query_keeps_its_folder() {
    let nodes = Nodes::in_memory("lease").await;
    let stale = Duration::from_secs(1);
    // Every task outlasts `stale_query_after` more than twice over, the coordinator's own too.
    let outlasting = |c: &mut SwarmConfig| {
        c.stale_query_after = stale;
        c.debug_task_delay = Duration::from_millis(2500);
    };
    let (coordinator, ctx) = nodes.coordinator(4, outlasting).await;
    let worker = nodes.node("w", outlasting).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    assert!(
        plan(&ctx, &format!("EXPLAIN {COUNT_AND_SUM}"))
            .await
            .contains("tasks=2")
    );
    let got = tokio::time::timeout(Duration::from_secs(60), query(&ctx, COUNT_AND_SUM))
        .await
        .expect("the query lost its folder and never finished");
    assert_eq!(got, ["4000|8002000"]);
    leave([&worker, &coordinator]).await;
}

/// A query folder whose coordinator is gone (no heartbeat), or whose coordinator's heartbeat does
/// not list it, is swept by any node after `dead_after` (10 s here) — not only after
/// `stale_query_after` (an hour here); a
/// folder still without a manifest (its coordinator may be writing it) waits for that age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_folders_without_a_live_coordinator_are_swept() {
    let nodes = Nodes::in_memory("sweep").await;
    let hour = |c: &mut SwarmConfig| c.stale_query_after = Duration::from_secs(3600);
    let live = nodes.node("live", hour).await;
    let other = nodes.node("other", hour).await;
    publish(&nodes.meadow, "q_ghost", Some("ghost")).await; // its coordinator left (or never was)
    publish(&nodes.meadow, "q_unlisted", Some("live")).await; // a live coordinator that does not run it
    publish(&nodes.meadow, "q_publishing", None).await; // no manifest yet
    until(90, 100, async || {
        let ids = query_folders(&nodes.meadow).await;
        (ids == ["q_publishing"]).then_some(()).ok_or_else(|| {
            format!("query folders without a live coordinator still there after 90 s: {ids:?}")
        })
    })
    .await;
    // The folder still being published stays (its age is far below an hour).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(query_folders(&nodes.meadow).await, ["q_publishing"]);
    leave([&other, &live]).await;
}

/// Seen: a `done` write that failed once was not tried again — the finished task waited for its
/// lease to run out and ran a second time elsewhere. The report is retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_report_is_written_again() {
    let nodes = Nodes::in_memory("report").await;
    // The coordinator's own task takes 2 s: `w` pulls the other one meanwhile.
    let (coordinator, ctx) = nodes.coordinator(4, keeping(Duration::from_secs(2))).await;
    let faults = Faults::new(11).with_rule(
        Rule::new(Fault::Unavailable)
            .on(&[Op::Create])
            .key_contains("done_")
            .times(2),
    );
    let faulty = nodes.meadow.with_store_layer(faults.layer());
    let w = small_node(&faulty, "w", nodes.dir(), keeping(Duration::ZERO)).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
    assert_eq!(faults.injected(Fault::Unavailable), 2);
    let Outcomes { done, retries, .. } = outcomes(coordinator.meadow()).await;
    assert!(retries.is_empty(), "{retries:?}");
    assert!(done.iter().any(|d| d.node == "w"), "{done:?}");
    leave([&w, &coordinator]).await;
}

/// Seen: a retried task could go back to the node it had just failed on — and a node whose
/// every attempt fails, with the others busy, used up all of the task's failures alone and the
/// query was abandoned. A node does not claim again a task it failed while another alive node
/// may still run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_node() {
    // The node labels of this process's metrics: names no other test uses.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let [coordinator_id, good_id, bad_id] =
        ["coordinator", "good", "bad"].map(|n| format!("{n}-{}", &tag[..8]));
    crate::status::rendered(); // the recorder, installed before the first count
    let nodes = Nodes::on(
        Meadow::open(&format!("memory://retry-{tag}"))
            .await
            .unwrap(),
    );
    // Every partial `bad` writes fails; the other two nodes are busy for 3 s with their own tasks.
    let faults = Faults::new(12).with_rule(
        Rule::new(Fault::Unavailable)
            .on(&[Op::Put, Op::Multipart])
            .key_contains("partial_"),
    );
    let busy = Duration::from_secs(3);
    let coordinator = nodes.node(&coordinator_id, keeping(busy)).await;
    let ctx = coordinator.session().unwrap();
    create_numbers(&ctx, 6).await;
    let good = nodes.node(&good_id, keeping(busy)).await;
    let faulty = nodes.meadow.with_store_layer(faults.layer());
    let bad = small_node(&faulty, &bad_id, nodes.dir(), keeping(Duration::ZERO)).await;
    distribute_once_alive(&coordinator, &ctx, 3).await;
    let got = tokio::time::timeout(Duration::from_secs(120), query(&ctx, COUNT_AND_SUM))
        .await
        .expect("the query stalled");
    assert_eq!(got, ["6000|18003000"]);
    assert!(faults.injected(Fault::Unavailable) >= 1);
    // Every task bad pulled failed there once, and only once: no attempt after the first was
    // given up, and every one given up was bad's.
    let Outcomes { done, retries, .. } = retried_elsewhere(&coordinator, &bad_id, |r| {
        r.attempt == 0 && r.node.as_deref() == Some(bad_id.as_str())
    })
    .await;

    // The swarm-task metrics say the same, node by node.
    let metrics = crate::status::rendered();
    let tasks = |node: &str, outcome: &str| {
        crate::status::value(
            &metrics,
            "apiary_swarm_tasks_total",
            node,
            Some(("outcome", outcome)),
        ) as usize
    };
    for node in [&coordinator_id, &good_id, &bad_id] {
        let mine = |d: &&Done| &d.node == node;
        assert_eq!(
            tasks(node, "done"),
            done.iter().filter(mine).count(),
            "{node}"
        );
        assert_eq!(
            tasks(node, "retried"),
            done.iter().filter(mine).filter(|d| d.attempt > 0).count(),
            "{node}"
        );
        assert_eq!(
            tasks(node, "claimed"),
            tasks(node, "done") + tasks(node, "failed") + tasks(node, "abandoned"),
            "{node}"
        );
    }
    assert_eq!(tasks(&bad_id, "failed"), retries.len());
    assert_eq!(
        tasks(&good_id, "failed") + tasks(&coordinator_id, "failed"),
        0
    );
    leave([&bad, &good, &coordinator]).await;
}

/// A fragment decoded on a worker keeps DataFusion's footer cache: datafusion-proto does not carry
/// the Parquet reader factory, but DataFusion 55's `ParquetSource::try_from_proto` builds it again
/// over the decoding node's runtime (its cell cache and metadata cache). A guard: were it lost,
/// every task on a worker would read each footer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_tasks_keep_parquet_footers_in_its_cache() {
    let nodes = Nodes::in_memory("footers").await;
    // The coordinator's own task takes 2 s: `w` pulls the other one meanwhile.
    let (coordinator, ctx) = nodes.coordinator(4, keeping(Duration::from_secs(2))).await;
    let w = nodes.node("w", |_| {}).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
    assert_ran_a_task(&coordinator, "w").await;
    let footers = w.swarm().unwrap().status().footers_cached;
    assert!(footers > 0, "w cached no footer");
    leave([&w, &coordinator]).await;
}

/// Seen: tasks were dealt at planning, at least one to every alive node, and only the node dealt
/// a task could claim it before `steal_after` — a node whose bees were all busy held its share
/// back for that long. Tasks are now pulled: any node's free bee claims the next open one, and
/// only a cell a node reports cached waits for that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_nodes_share_is_pulled_by_free_bees() {
    let nodes = Nodes::in_memory("pull").await;
    // Nobody takes a task planned for another node for ten minutes.
    let patient = |c: &mut SwarmConfig| {
        c.steal_after = Duration::from_secs(600);
        c.keep_queries = true;
    };
    let (coordinator, ctx) = nodes.coordinator(6, patient).await;
    let free = nodes.node("free", patient).await;
    let busy = nodes.node("busy", patient).await;
    wait_for_nodes(&coordinator, 3).await;
    // Every bee of `busy` is taken (by a long query of its own, say).
    let held = hold_its_bee(&busy);
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    // Four tasks per offered bee (one each here), however small.
    sql(&ctx, "SET swarm.tasks_per_bee = 4").await;
    sql(&ctx, "SET swarm.min_task_bytes = 0").await;
    let explain = plan(&ctx, &format!("EXPLAIN {COUNT_AND_SUM}")).await;
    assert!(explain.contains("SwarmExec: tasks=12"), "{explain}");
    let got = tokio::time::timeout(Duration::from_secs(60), query(&ctx, COUNT_AND_SUM))
        .await
        .expect("the busy node's share waited for it");
    assert_eq!(got, ["6000|18003000"]);
    let Outcomes { done, .. } = outcomes(coordinator.meadow()).await;
    assert!(done.iter().all(|d| d.node != "busy"), "{done:?}");
    drop(held);
    leave([&busy, &free, &coordinator]).await;
}

/// Seen: every heartbeat carried up to 10,000 cached cell keys, rewritten every beat and read by
/// every other node at every change — on a board caching a few thousand cells, hundreds of
/// kilobytes every two seconds. The keys now live in a cache index of their own
/// (`_caches/node_{id}.json`), written when the cache changed; the heartbeat carries its count
/// and version, and the rule still prefers the node that caches a cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_cells_travel_in_a_cache_index_not_in_every_heartbeat() {
    let nodes = Nodes::in_memory("index").await;
    // The coordinator's own task takes 2 s: `w` pulls the other one meanwhile, and caches it.
    let delayed = |c: &mut SwarmConfig| c.debug_task_delay = Duration::from_secs(2);
    let (coordinator, ctx) = nodes.coordinator(4, delayed).await;
    let cache = nodes.dir().join("w-cache");
    let w = nodes
        .node("w", |c| {
            c.cache_bytes = 1 << 30;
            c.cache_dir = cache.clone();
        })
        .await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
    let cached = w.swarm().unwrap().cache().status().cells;
    assert!(cached > 0, "w cached nothing");
    // Within a few beats the index lists w's cells, and w's heartbeat does not.
    let listed = indexed_cells(&nodes.meadow, cached).await;
    // The coordinator reads the index: w's share of the two tasks (one) holds its cells and
    // prefers w.
    assert!(listed >= 2, "{listed}");
    until(30, 50, async || {
        let explain = plan(&ctx, &format!("EXPLAIN {COUNT_AND_SUM}")).await;
        let preferred = explain.contains("tasks=2, cells=4, preferred=[w=1]");
        preferred
            .then_some(())
            .ok_or_else(|| format!("the plan does not prefer w: {explain}"))
    })
    .await;
    // Leaving removes the index with the heartbeat.
    w.leave_swarm().await.unwrap();
    let index = nodes.meadow.get("_caches/node_w.json").await.unwrap();
    assert!(index.is_none());
    coordinator.leave_swarm().await.unwrap();
}

/// Seen on the S3 test server: four lingering nodes looked at `_queries/latest.json` every
/// 10 ms each — 400 requests a second on a server that answers one at a time, which made every
/// other call of every node wait. A lingering node now waits four times as long as its last look
/// took (at least `linger_probe`): on a store answering in 50 ms, a look every 250 ms, not 60 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_node_asks_a_slow_store_less_often() {
    let delay = Duration::from_millis(50);
    let faults = Faults::new(3).with_rule(
        Rule::new(Fault::Delay(delay))
            .on(&[Op::Head])
            .key_contains("latest.json"),
    );
    let meadow = memory_meadow("linger").await;
    let nodes = Nodes::on(meadow.with_store_layer(faults.layer()));
    let lingering = |c: &mut SwarmConfig| c.poll_linger = Duration::from_secs(60);
    let (coordinator, ctx) = nodes.coordinator(4, lingering).await;
    let w = nodes.node("w", lingering).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
    // Both nodes linger now: count their looks at the object for 3 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = faults.injected(Fault::Delay(delay));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let looks = faults.injected(Fault::Delay(delay)) - before;
    // Every 60 ms (10 ms apart, 50 ms each) would be up to 50 looks a node (53 for both were
    // seen before the change); every 250 ms is 12.
    assert!(
        (8..=30).contains(&looks),
        "two lingering nodes looked {looks} times in 3 s"
    );
    leave([&w, &coordinator]).await;
}

/// Seen: an idle node listed `_queries/` every idle poll (60 LISTs a minute, the dearest S3
/// request) to learn of a new query. An idle node now looks at one small object,
/// `_queries/latest.json`, which every coordinator rewrites when it publishes a query, and lists
/// only when it changed (or every `list_every`) — and still takes part in the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_watches_one_object_not_the_query_listing() {
    let (nodes, counting) = Nodes::counting();
    // Only the worker loops list in the window below (the world views are polled by hand).
    let quiet = |delay: Duration| {
        move |c: &mut SwarmConfig| {
            c.view_interval = Duration::from_secs(600);
            c.poll_linger = Duration::ZERO;
            c.poll_max = Duration::from_millis(200);
            c.keep_queries = true;
            c.debug_task_delay = delay;
        }
    };
    // The coordinator's own task takes 2 s: `w` pulls the other one meanwhile.
    let (coordinator, ctx) = nodes.coordinator(4, quiet(Duration::from_secs(2))).await;
    let w = nodes.node("w", quiet(Duration::ZERO)).await;
    wait_for_nodes(&coordinator, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    counting.take();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = counting.take();
    let lists = calls.get("list_with_delimiter").copied().unwrap_or(0);
    assert!(
        lists <= 2,
        "two idle nodes listed _queries/ {lists} times in 3 s: {calls:?}"
    );
    assert!(calls.get("head").copied().unwrap_or(0) > 0, "{calls:?}");
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
    assert_ran_a_task(&coordinator, "w").await;
    leave([&w, &coordinator]).await;
}

/// Seen: a bench process that ended within 30 s of its last query left its folders behind with
/// only `finished.json` in them; every node that first saw them then took them for folders still
/// being published — it fetched their (missing) manifest at every poll and kept them for
/// `stale_query_after` (30 min) instead of the 30 s grace. A finished folder is now known for
/// finished at first sight, and swept after the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_folders_a_newcomer_finds_go_after_the_grace() {
    let nodes = Nodes::in_memory("grace").await;
    for i in 0..5 {
        let dir = QueryDir::new(format!("{i:032}"));
        let body = r#"{"outcome":"ok"}"#;
        nodes
            .meadow
            .put(&dir.finished(), body.into())
            .await
            .unwrap();
    }
    let hour = |c: &mut SwarmConfig| c.stale_query_after = Duration::from_secs(3600);
    let w = nodes.node("w", hour).await;
    until(90, 500, async || {
        let left = query_folders(&nodes.meadow).await.len();
        (left == 0)
            .then_some(())
            .ok_or_else(|| format!("{left} finished folders still there after 90 s"))
    })
    .await;
    w.leave_swarm().await.unwrap();
}

/// Seen in the bench meadow: 141 folders of queries over, each holding only `finished.json`.
/// Short-lived coordinators (`apiary --swarm -c`, one process per query) never outlive the grace
/// a node counts from when it first sees a marker, so nothing ever swept them, and every newcomer
/// looked into each. A marker written the grace before a query published since (both times on
/// the store's own clock) is past its grace at first sight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_finished_folders_go_at_a_newcomers_first_look() {
    let root = tempfile::tempdir().unwrap();
    let nodes = Nodes::on(Meadow::open(root.path().to_str().unwrap()).await.unwrap());
    let body = r#"{"outcome":"ok"}"#;
    for i in 0..20 {
        let dir = QueryDir::new(format!("{i:032}"));
        nodes
            .meadow
            .put(&dir.finished(), body.into())
            .await
            .unwrap();
    }
    // Written an hour ago (the local store's clock is the files' modification time) ...
    let queries = root.path().join("_queries");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for entry in std::fs::read_dir(&queries).unwrap().flatten() {
        let marker = entry.path().join("finished.json");
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .and_then(|f| f.set_modified(hour_ago))
            .unwrap();
    }
    // ... then one query finished just now, after the latest publish.
    let latest = r#"{"query_id":"x"}"#;
    nodes
        .meadow
        .put("_queries/latest.json", latest.into())
        .await
        .unwrap();
    let fresh = QueryDir::new(format!("{:032}", 99));
    nodes
        .meadow
        .put(&fresh.finished(), body.into())
        .await
        .unwrap();

    let w = nodes.node("w", |_| {}).await;
    until(10, 100, async || {
        let left = query_folders(&nodes.meadow).await.len();
        (left == 1).then_some(()).ok_or_else(|| {
            format!("{left} finished folders still there 10 s after a newcomer came")
        })
    })
    .await;
    // The fresh one keeps its grace: a late write of one of its attempts must find the marker.
    assert_eq!(query_folders(&nodes.meadow).await, [format!("{:032}", 99)]);
    w.leave_swarm().await.unwrap();
}

/// Until now a documented limit: a partial of more than 10 MiB went up as a multipart upload
/// (object_store's `BufWriter`), and an attempt killed in the middle of one left an incomplete
/// upload under `_queries/` that no sweep could find (object_store cannot list them). A partial
/// is now written in parts, each one plain PUT: every object of a query folder is whole or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_partial_goes_up_in_whole_parts_never_a_multipart_upload() {
    let (nodes, counting) = Nodes::counting();
    let keep = |c: &mut SwarmConfig| c.keep_queries = true;
    let coordinator = nodes.node("coordinator", keep).await;
    let ctx = coordinator.session().unwrap();
    hive_box(&ctx).await;
    sql(
        &ctx,
        "CREATE TABLE h.b.s (n BIGINT NOT NULL, s VARCHAR NOT NULL)",
    )
    .await;
    // Some 80 MB of hex text: two tasks, whose results LZ4 hardly shrinks.
    let insert = "INSERT INTO h.b.s \
                  SELECT value, md5(CAST(value AS VARCHAR)) FROM generate_series(1, 2000000)";
    sql(&ctx, insert).await;
    let w = nodes.node("w", keep).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    sql(&ctx, "SET swarm.tasks_per_bee = 1").await;
    let q = "SELECT n, s FROM h.b.s WHERE n % 4 <> 0";
    assert!(
        plan(&ctx, &format!("EXPLAIN {q}"))
            .await
            .contains("SwarmExec")
    );
    counting.take();
    let batches = ctx.sql(q).await.unwrap().collect().await.unwrap();
    let calls = counting.take();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 1_500_000);
    let multipart = calls.get("put_multipart").copied().unwrap_or(0);
    assert_eq!(
        multipart, 0,
        "a partial went up as a multipart upload: {calls:?}"
    );
    let Outcomes { done, .. } = outcomes(coordinator.meadow()).await;
    assert!(
        done.iter().any(|d| d.bytes > 10 << 20),
        "no partial over 10 MiB: {done:?}"
    );
    assert!(
        done.iter().any(|d| d.parts > 1),
        "no partial needed parts: {done:?}"
    );
    leave([&w, &coordinator]).await;
}

/// Seen: only the tasks a node ran for other coordinators read through its cell cache (tier 2);
/// its own queries — plain local ones, and the tasks it runs as a coordinator — fetched every
/// cell from the store each time: on an `s3://` meadow, the whole scan over the network again.
/// A named node that joined the swarm now reads every cell through its cache (a nameless one's
/// cache goes with it, so its own queries read the store directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_own_queries_read_cells_through_its_cache() {
    let (nodes, counting) = Nodes::counting();
    let (coordinator, busy, ctx, held) = lone_coordinator(&nodes, caching(true)).await;
    for (setting, distributed) in [
        ("SET swarm.min_bytes = 1000000000000", false),
        ("SET swarm.min_bytes = 0", true),
    ] {
        sql(&ctx, setting).await;
        let explain = plan(&ctx, &format!("EXPLAIN {COUNT_AND_SUM}")).await;
        assert_eq!(explain.contains("SwarmExec"), distributed, "{explain}");
        assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
        counting.take_reads();
        let swarm = coordinator.swarm().unwrap();
        let read_before = swarm.cache().status().bytes_read;
        assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
        assert!(
            swarm.cache().status().bytes_read > read_before,
            "{setting}: nothing read from the cache"
        );
        let cells: Vec<String> = counting
            .take_reads()
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        assert!(
            cells.is_empty(),
            "{setting}: read again from the store: {cells:?}"
        );
    }
    drop(held);
    leave([&busy, &coordinator]).await;
}

/// The coordinator's own tasks hand their results over in memory and their claims are read
/// only to judge a lease: no partial is put and nothing of its own tasks is read back (their
/// `done`s say so), and the answer is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinators_own_results_are_handed_over_in_memory() {
    let (nodes, counting) = Nodes::counting();
    let keep = |c: &mut SwarmConfig| c.keep_queries = true;
    let (coordinator, busy, ctx, held) = lone_coordinator(&nodes, keep).await;
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    counting.take_reads();
    assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
    let read_back: Vec<String> = counting
        .take_reads()
        .into_iter()
        .filter(|k| {
            ["/partial_", "/done_", "/claim_"]
                .iter()
                .any(|p| k.contains(p))
        })
        .collect();
    assert!(read_back.is_empty(), "read back: {read_back:?}");
    // A `done` goes up after its result was handed over (the query may end first).
    let Outcomes { done, .. } = outcomes(coordinator.meadow()).await;
    assert!(
        done.iter()
            .all(|d| d.in_memory && d.parts == 0 && d.node == "coordinator"),
        "{done:?}"
    );
    let parts = coordinator
        .meadow()
        .list("_queries")
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.location.as_ref().contains("/partial_"))
        .count();
    assert_eq!(parts, 0, "partials were put");
    drop(held);
    leave([&busy, &coordinator]).await;
}

/// A nameless node (a shell's `-c`, Python's `start()`) reads its own queries' cells from the
/// store — also the tasks it runs as the coordinator of a distributed query: filling a cache that
/// goes with the process would fetch whole cells where the query reads a few columns (a one-shot
/// `apiary --swarm -c` spent seconds copying a 210 MB cell this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nameless_coordinator_reads_its_own_tasks_cells_from_the_store() {
    let (nodes, counting) = Nodes::counting();
    let cache = nodes.dir().join("cache");
    let (coordinator, busy, ctx, held) = lone_coordinator(&nodes, caching(false)).await;
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    assert!(
        plan(&ctx, &format!("EXPLAIN {COUNT_AND_SUM}"))
            .await
            .contains("SwarmExec")
    );
    for _ in 0..2 {
        counting.take_reads();
        assert_eq!(query(&ctx, COUNT_AND_SUM).await, ["4000|8002000"]);
        let cells = counting
            .take_reads()
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .count();
        assert!(
            cells >= 4,
            "the cells were not read from the store: {cells}"
        );
    }
    let cached = parquet_files(&cache);
    assert_eq!(cached, 0, "cells copied into the cache");
    drop(held);
    leave([&busy, &coordinator]).await;
}

/// A frame whose column was renamed is read by column id on every node. The adapter that finds
/// columns by id is not carried by datafusion-proto; a worker puts it back on each scan it
/// decodes, or it would read the renamed column as NULL and the new column of the old name as
/// the old values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_renamed_columns_by_id() {
    let nodes = Nodes::in_memory("renamed").await;
    // The coordinator's own tasks each wait 3 s first, so the worker claims the others.
    let (coordinator, ctx) = nodes.coordinator(6, keeping(Duration::from_secs(3))).await;
    for alter in [
        "ALTER TABLE h.b.t RENAME COLUMN n TO m",
        "ALTER TABLE h.b.t ADD COLUMN n BIGINT",
    ] {
        door(&coordinator, &ctx, alter).await;
    }
    let worker = nodes.node("w", |c| c.keep_queries = true).await;
    distribute_once_alive(&coordinator, &ctx, 2).await;
    sql(&ctx, "SET swarm.min_task_bytes = 0").await;
    let q = "SELECT count(*), sum(m), count(n) FROM h.b.t WHERE m > 1000";
    let explain = plan(&ctx, &format!("EXPLAIN {q}")).await;
    assert!(explain.contains("SwarmExec"), "{explain}");
    for run in 0.. {
        assert_eq!(query(&ctx, q).await, ["5000|17502500|0"], "run {run}");
        let Outcomes { done, .. } = outcomes(coordinator.meadow()).await;
        if done.iter().any(|d| d.node == "w") {
            break;
        }
        assert!(run < 5, "the worker ran no task in {run} queries: {done:?}");
    }
    leave([&worker, &coordinator]).await;
}

/// A clustered frame's scan, which declares its order, still travels: each task's scan is
/// rebuilt over its own cells (DataFusion validates the order again for them), and the answers
/// are the local ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_frame_is_scanned_by_the_swarm() {
    let (coordinator, workers) = in_process_swarm(2, 2).await;
    let ctx = coordinator.session().unwrap();
    sql(
        &ctx,
        "CREATE EXTERNAL TABLE h.b.c (n BIGINT NOT NULL, m BIGINT NOT NULL) STORED AS APIARY \
         WITH ORDER (n) LOCATION ''",
    )
    .await;
    // Six writes of descending ranges, each sorted on its way in.
    for i in (0..6).rev() {
        sql(
            &ctx,
            &format!(
                "INSERT INTO h.b.c SELECT value, value % 7 FROM generate_series({}, {})",
                i * 1000 + 1,
                i * 1000 + 1000
            ),
        )
        .await;
    }
    let queries = [
        "SELECT count(*), sum(n) FROM h.b.c",
        "SELECT count(*) FROM (SELECT n FROM h.b.c GROUP BY n)",
        "SELECT m, count(*), min(n), max(n) FROM h.b.c GROUP BY m ORDER BY m",
    ];
    let mut local = vec![];
    for q in queries {
        local.push(query(&ctx, q).await);
    }
    assert_eq!(local[0], ["6000|18003000"]);
    assert_eq!(local[1], ["6000"]);
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    // The GROUP BY n runs on the declared order above the scan (a sorted, order-preserving
    // repartition), so its scan stays local; the others travel.
    for ((q, want), travels) in queries.iter().zip(&local).zip([true, false, true]) {
        let explain = plan(&ctx, &format!("EXPLAIN {q}")).await;
        assert_eq!(explain.contains("SwarmExec"), travels, "{q}: {explain}");
        assert_eq!(&query(&ctx, q).await, want, "{q}");
    }
    leave(workers.iter().chain([&coordinator])).await;
}

// The nodes of a test in this process.

/// The nodes of one test in this process: their meadow and their scratch folder.
struct Nodes {
    meadow: Meadow,
    scratch: tempfile::TempDir,
}

impl Nodes {
    /// On a fresh memory meadow whose name starts with `name`.
    async fn in_memory(name: &str) -> Nodes {
        Nodes::on(memory_meadow(name).await)
    }

    fn on(meadow: Meadow) -> Nodes {
        let scratch = tempfile::tempdir().unwrap();
        Nodes { meadow, scratch }
    }

    /// On a memory meadow whose store counts the calls made to it.
    fn counting() -> (Nodes, Arc<Counting>) {
        let (meadow, counting) = counting_meadow();
        (Nodes::on(meadow), counting)
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// A [`small_node`] `id` on this meadow; `configure` sets the rest.
    async fn node(&self, id: &str, configure: impl FnOnce(&mut SwarmConfig)) -> Apiary {
        small_node(&self.meadow, id, self.dir(), configure).await
    }

    /// The [`small_node`] `coordinator`, with `h.b.t` of `cells` cells ([`create_numbers`]), and
    /// a session of it.
    async fn coordinator(
        &self,
        cells: i64,
        configure: impl FnOnce(&mut SwarmConfig),
    ) -> (Apiary, SessionContext) {
        let coordinator = self.node("coordinator", configure).await;
        let ctx = coordinator.session().unwrap();
        create_numbers(&ctx, cells).await;
        (coordinator, ctx)
    }
}

/// A fresh memory meadow whose name starts with `name`.
async fn memory_meadow(name: &str) -> Meadow {
    let url = format!("memory://{name}-{}", uuid::Uuid::new_v4().simple());
    Meadow::open(&url).await.unwrap()
}

/// An Apiary in this process on `meadow`, with `bees` bees of 256 MiB scratching in `dir`.
pub(crate) async fn in_process_node(meadow: Meadow, bees: usize, dir: PathBuf) -> Apiary {
    let options = ApiaryOptions {
        node: Some(NodeConfig::fixed(bees, 256 << 20, dir)),
        ..ApiaryOptions::default()
    };
    let io = apiary::catalog::IoRuntime::new().unwrap();
    Apiary::from_meadow(meadow, io, options).await.unwrap()
}

/// An [`in_process_node`] of `bees` bees (scratching in `{dir}/{id}`) joined to the swarm as
/// `id`: 100 ms heartbeats, no cell cache (its folder `{dir}/cache`); `configure` sets the rest.
async fn joined_node(
    meadow: &Meadow,
    id: &str,
    bees: usize,
    dir: &Path,
    configure: impl FnOnce(&mut SwarmConfig),
) -> Apiary {
    let ap = in_process_node(meadow.clone(), bees, dir.join(id)).await;
    let mut config = SwarmConfig::default()
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_node_id(id);
    config.cache_bytes = 0;
    // Each test's own: two tests running at once both have a node named `coordinator`.
    config.cache_dir = dir.join("cache");
    configure(&mut config);
    ap.join_swarm(config).await.unwrap();
    ap
}

/// A [`joined_node`] of one bee, judged dead only after [`GENEROUS`].
pub(crate) async fn small_node(
    meadow: &Meadow,
    id: &str,
    dir: &Path,
    configure: impl FnOnce(&mut SwarmConfig),
) -> Apiary {
    joined_node(meadow, id, 1, dir, |c| {
        (c.suspect_after, c.dead_after) = (GENEROUS / 2, GENEROUS);
        configure(c);
    })
    .await
}

/// A coordinator with `coordinator_bees` bees and `workers` one-bee nodes in this process, on one
/// memory meadow, with `h.b.t (n BIGINT)` of six cells holding 1..=6000.
async fn in_process_swarm(coordinator_bees: usize, workers: usize) -> (Apiary, Vec<Apiary>) {
    let meadow = memory_meadow("swarm").await;
    let scratch = tempfile::tempdir().unwrap().keep();
    // Each node's cell cache folder is its own.
    let node = async |id: String, bees: usize| {
        let cache = scratch.join(&id).join("cache");
        joined_node(&meadow, &id, bees, &scratch, |c| c.cache_dir = cache).await
    };
    let coordinator = node("coordinator".into(), coordinator_bees).await;
    let ctx = coordinator.session().unwrap();
    create_numbers(&ctx, 6).await;
    let mut nodes = vec![];
    for w in 0..workers {
        nodes.push(node(format!("w{w}"), 1).await);
    }
    wait_for_nodes(&coordinator, workers + 1).await;
    (coordinator, nodes)
}

/// `h.b.t (n BIGINT)`: `cells` cells of a thousand rows each, holding 1..=1000 × `cells`.
async fn create_numbers(ctx: &SessionContext, cells: i64) {
    hive_box(ctx).await;
    sql(ctx, "CREATE TABLE h.b.t (n BIGINT NOT NULL)").await;
    for i in 0..cells {
        let (from, to) = (i * 1000 + 1, i * 1000 + 1000);
        let insert = format!("INSERT INTO h.b.t SELECT value FROM generate_series({from}, {to})");
        sql(ctx, &insert).await;
    }
}

/// Settings that keep the query folders, with a delay before each task.
fn keeping(delay: Duration) -> impl FnOnce(&mut SwarmConfig) {
    move |c| {
        c.keep_queries = true;
        c.debug_task_delay = delay;
    }
}

/// Settings with a 64 MiB cell cache, kept across runs or not (as a nameless node's).
fn caching(keep_cache: bool) -> impl FnOnce(&mut SwarmConfig) {
    move |c| {
        c.cache_bytes = 64 << 20;
        c.keep_cache = keep_cache;
    }
}

/// The node `coordinator` configured by `configure`, with `h.b.t` of 4 cells, and a second node
/// whose one bee is held — returned, to drop — so that the coordinator runs every task of its
/// queries itself.
async fn lone_coordinator(
    nodes: &Nodes,
    configure: impl FnOnce(&mut SwarmConfig),
) -> (Apiary, Apiary, SessionContext, Option<Chamber>) {
    let (coordinator, ctx) = nodes.coordinator(4, configure).await;
    let busy = nodes.node("busy", |_| {}).await;
    wait_for_nodes(&coordinator, 2).await;
    // The other node's bee is held: the coordinator runs every task itself.
    let held = hold_its_bee(&busy);
    (coordinator, busy, ctx, held)
}

/// The one bee of `ap`, taken (until dropped): `ap` claims no task meanwhile.
fn hold_its_bee(ap: &Apiary) -> Option<Chamber> {
    let runtime = datafusion::execution::runtime_env::RuntimeEnv::default();
    let held = ap.bees().try_acquire(1, &runtime, Spill::Never).unwrap();
    assert!(held.is_some());
    held
}

/// A session of `ap` that distributes every scan of two cells or more.
async fn distributing(ap: &Apiary) -> SessionContext {
    let ctx = ap.session().unwrap();
    sql(&ctx, "SET swarm.min_bytes = 0").await;
    ctx
}

/// Waits until `coordinator` sees `n` nodes alive, then distributes every scan of `ctx` of two
/// cells or more.
async fn distribute_once_alive(coordinator: &Apiary, ctx: &SessionContext, n: usize) {
    wait_for_nodes(coordinator, n).await;
    sql(ctx, "SET swarm.min_bytes = 0").await;
}

/// Waits until `ap` sees `n` nodes alive.
async fn wait_for_nodes(ap: &Apiary, n: usize) {
    let swarm = ap.swarm().unwrap();
    until(60, 20, async || {
        if swarm.world().alive().len() >= n {
            return Ok(());
        }
        swarm.world().poll().await.unwrap();
        Err(format!("{n} nodes not alive after 60 s"))
    })
    .await;
}

/// Each of `nodes` leaves the swarm, in turn.
async fn leave<'a>(nodes: impl IntoIterator<Item = &'a Apiary>) {
    for ap in nodes {
        ap.leave_swarm().await.unwrap();
    }
}

/// Watches `swarm`'s view for `watch`: nobody is judged dead meanwhile.
async fn never_judged_dead(swarm: &SwarmNode, watch: Duration) {
    let start = Instant::now();
    while start.elapsed() < watch {
        for n in swarm.world().nodes() {
            assert_ne!(
                n.state,
                NodeState::Dead,
                "{} judged dead by a slow store: {n:?}",
                n.heartbeat.node_id
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `swarm`'s view until it judges `id` (halted at `halted`) dead; the longest store lag it
/// saw of `id`, and its longest view cycle.
async fn watch_until_dead(swarm: &SwarmNode, id: &str, halted: Instant) -> (Duration, Duration) {
    let (mut cycle, mut lag) = (Duration::ZERO, Duration::ZERO);
    loop {
        let polled = Instant::now();
        let nodes = swarm.world().poll().await.unwrap();
        cycle = cycle.max(polled.elapsed() + swarm.config().view_interval);
        let node = nodes.iter().find(|n| n.heartbeat.node_id == id).unwrap();
        lag = lag.max(node.store_lag);
        if node.state == NodeState::Dead {
            return (lag, cycle);
        }
        assert!(
            halted.elapsed() < Duration::from_secs(60),
            "{id} never judged dead"
        );
    }
}

// What the nodes leave in the meadow.

/// The manifests, `done_*.json` and `retry_*.json` of every query folder kept in the meadow.
struct Outcomes {
    manifests: Vec<Manifest>,
    done: Vec<Done>,
    retries: Vec<Retry>,
}

async fn outcomes(meadow: &Meadow) -> Outcomes {
    let (mut manifests, mut done, mut retries) = (vec![], vec![], vec![]);
    for object in meadow.list("_queries").await.unwrap() {
        let Some(name) = object.location.filename() else {
            continue;
        };
        let key = meadow.relative(&object.location).unwrap().to_string();
        if name == "manifest.json" {
            let body = meadow.get(&key).await.unwrap().unwrap();
            manifests.push(serde_json::from_slice(&body).unwrap());
        } else if name.starts_with("done_") {
            let body = meadow.get(&key).await.unwrap().unwrap();
            done.push(serde_json::from_slice(&body).unwrap());
        } else if name.starts_with("retry_") {
            let body = meadow.get(&key).await.unwrap().unwrap();
            retries.push(serde_json::from_slice(&body).unwrap());
        }
    }
    Outcomes {
        manifests,
        done,
        retries,
    }
}

/// The outcomes of the queries kept in `ap`'s meadow, asserting that `node` finished none of
/// their tasks and that tasks were given up, every one as `why` tells.
async fn retried_elsewhere(ap: &Apiary, node: &str, why: impl Fn(&Retry) -> bool) -> Outcomes {
    let outcomes = outcomes(ap.meadow()).await;
    let (done, retries) = (&outcomes.done, &outcomes.retries);
    assert!(done.iter().all(|d| d.node != node), "{done:?}");
    assert!(
        !retries.is_empty() && retries.iter().all(why),
        "{retries:?}"
    );
    outcomes
}

/// Asserts that `node` finished a task of a query kept in `ap`'s meadow.
async fn assert_ran_a_task(ap: &Apiary, node: &str) {
    let Outcomes { done, .. } = outcomes(ap.meadow()).await;
    assert!(done.iter().any(|d| d.node == node), "{done:?}");
}

/// Whether `node` holds (or held) a claim in any query folder kept in the meadow.
async fn claimed_by(meadow: &Meadow, node: &str) -> bool {
    for object in meadow.list("_queries").await.unwrap() {
        let name = object.location.filename().unwrap_or_default();
        if name.starts_with("claim_") {
            let key = meadow.relative(&object.location).unwrap().to_string();
            let Some(body) = meadow.get(&key).await.unwrap() else {
                continue;
            };
            let claim: apiary::swarm::Claim = serde_json::from_slice(&body).unwrap();
            if claim.node == node {
                return true;
            }
        }
    }
    false
}

async fn heartbeat_of(meadow: &Meadow, id: &str) -> bool {
    meadow
        .get(&format!("_heartbeats/node_{id}.json"))
        .await
        .unwrap()
        .is_some()
}

/// The name of the heartbeat in `meadow` that ends with `suffix`, once there is one.
async fn heartbeat_ending(meadow: &Meadow, suffix: &str) -> String {
    until(60, 50, async || {
        let listed = meadow.list("_heartbeats").await.unwrap();
        let found = listed
            .iter()
            .filter_map(|o| o.location.filename())
            .find(|n| n.ends_with(suffix));
        found
            .map(str::to_string)
            .ok_or_else(|| format!("no heartbeat *{suffix}: the shell never joined"))
    })
    .await
}

/// Waits until `w`'s index of cached cells lists `cached` cells, as its heartbeat counts them
/// (and does not list them); their number.
async fn indexed_cells(meadow: &Meadow, cached: usize) -> usize {
    until(30, 50, async || {
        let index = meadow.get("_caches/node_w.json").await.unwrap();
        let heartbeat = meadow
            .get("_heartbeats/node_w.json")
            .await
            .unwrap()
            .unwrap();
        let heartbeat: serde_json::Value = serde_json::from_slice(&heartbeat).unwrap();
        if let Some(index) = index {
            let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
            let cells = index["cells"].as_array().map_or(0, |c| c.len());
            if cells == cached && heartbeat["cache_cells"] == cached {
                assert!(heartbeat.get("cached_cells").is_none(), "{heartbeat}");
                assert_eq!(heartbeat["cache_version"], index["version"]);
                return Ok(cells);
            }
        }
        Err(format!(
            "no cache index with w's {cached} cells; heartbeat: {heartbeat}"
        ))
    })
    .await
}

/// The objects of query folders (all of `_queries/` but `finished.json` markers and
/// `latest.json`) written after `since` on the store's clock, with when.
async fn task_objects_written_after(
    meadow: &Meadow,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    let listed = meadow.list("_queries").await.unwrap();
    listed
        .into_iter()
        .filter(|o| {
            let key = o.location.as_ref();
            o.last_modified > since
                && !key.ends_with("finished.json")
                && !key.ends_with("latest.json")
        })
        .map(|o| (o.location.to_string(), o.last_modified))
        .collect()
}

/// Waits (two minutes at the most) until no query folder is left in `meadow` (the pointer to
/// the query published last is part of none).
async fn wait_swept(meadow: &Meadow) {
    until(120, 500, async || {
        let mut left = meadow.list("_queries").await.unwrap();
        left.retain(|o| !o.location.as_ref().ends_with("_queries/latest.json"));
        let left: Vec<String> = left.iter().map(|o| o.location.to_string()).collect();
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("the query folder outlived its grace period: {left:?}"))
    })
    .await;
}

/// The ids of the query folders in `meadow`, sorted.
async fn query_folders(meadow: &Meadow) -> Vec<String> {
    let listed = meadow.list_dir("_queries").await.unwrap();
    let mut ids: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Puts the folder of query `id` in `meadow`: its fragment and, with a `coordinator`, a
/// manifest of no task.
async fn publish(meadow: &Meadow, id: &str, coordinator: Option<&str>) {
    let dir = QueryDir::new(id);
    meadow.put(&dir.fragment(), "plan".into()).await.unwrap();
    if let Some(coordinator) = coordinator {
        let manifest = Manifest {
            query_id: dir.query_id.clone(),
            coordinator: coordinator.to_string(),
            created_ms: 0,
            tasks: vec![],
            task_deadline_ms: 300_000,
            max_failures: 3,
            options: Default::default(),
        };
        let body = serde_json::to_vec(&manifest).unwrap();
        meadow.put(&dir.manifest(), body.into()).await.unwrap();
    }
}

// Worker processes and the coordinator beside them.

/// One `apiary node` process; killed when dropped.
pub(crate) struct Worker {
    pub(crate) id: String,
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// SIGKILL, as a crash or a cut cable: the node leaves nothing in order.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGSTOP, as a network cut: the node's connections stay open and nothing answers on them
    /// (its heartbeat stops too, but goes stale only after the timeout).
    pub(crate) fn freeze(&self) {
        signal("-STOP", self.child.id());
    }

    /// SIGCONT: the node frozen by [`Worker::freeze`] runs again.
    pub(crate) fn thaw(&self) {
        signal("-CONT", self.child.id());
    }

    pub(crate) fn spawn(storage: &str, id: &str, scratch: &Path, extra: &[&str]) -> Worker {
        Worker::spawn_sized(storage, id, scratch, ("1", "512M"), extra)
    }

    /// [`Worker::spawn`] with `(bees, memory)` of its own.
    pub(crate) fn spawn_sized(
        storage: &str,
        id: &str,
        scratch: &Path,
        (bees, memory): (&str, &str),
        extra: &[&str],
    ) -> Worker {
        let log = scratch.join(format!("{id}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["node", "--storage", storage, "--node-id", id])
            .args(["--bees", bees, "--memory", memory])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .arg("--cache-dir")
            .arg(scratch.join("cache"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting worker {id}: {e}"));
        Worker {
            id: id.into(),
            child,
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(&mut self) {
        signal("-TERM", self.child.id());
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "worker {} exited with {status}: {}",
            self.id,
            self.log()
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` (`-TERM`, `-STOP`, …) to process `pid` with `kill`.
fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Workers `w1`, `w2` and `w3` on `url`, each started with `extra`.
fn three_workers(url: &str, scratch: &Path, extra: &[&str]) -> Vec<Worker> {
    (1..=3)
        .map(|i| Worker::spawn(url, &format!("w{i}"), scratch, extra))
        .collect()
}

/// CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Waits (30 s at the most: the machine may be loaded) until every one of `workers` has beaten
/// since `since_ms` (wall clock) with no bee busy.
async fn wait_idle_since(ap: &Apiary, workers: &[Worker], since_ms: i64) {
    until(30, 50, async || {
        let nodes = ap.swarm().unwrap().world().poll().await.unwrap();
        let busy: Vec<&str> = workers
            .iter()
            .filter(|w| {
                !nodes.iter().any(|n| {
                    n.heartbeat.node_id == w.id
                        && n.heartbeat.clock_ms > since_ms
                        && n.heartbeat.busy_bees == 0
                })
            })
            .map(|w| w.id.as_str())
            .collect();
        busy.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{busy:?} still busy 30 s after the cancel"))
    })
    .await;
}

/// Runs TPC-H q1 in a new [`swarm_session`] of `ap` again and again, each answer right, until
/// `node` holds a claim while it runs (on a loaded machine the others may take every task of a
/// query before it looks); that run, still going.
async fn q1_claimed_by(ap: &Apiary, node: &str) -> JoinHandle<Vec<String>> {
    let start = Instant::now();
    loop {
        let ctx = swarm_session(ap).await;
        let mut query = tokio::spawn(async move { tpch::failures(&ctx, [1]).await });
        let claimed = loop {
            if claimed_by(ap.meadow(), node).await {
                break true;
            }
            if query.is_finished() {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{node} never claimed a task"
        );
        if claimed {
            return query;
        }
        let failures = (&mut query).await.unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// A scratch folder, and the URL of [`local_meadow`] in it.
pub(crate) fn scratch_meadow() -> (tempfile::TempDir, String) {
    let scratch = tempfile::tempdir().unwrap();
    let url = local_meadow(scratch.path());
    (scratch, url)
}

/// The URL of the folder `meadow` in `scratch`.
pub(crate) fn local_meadow(scratch: &Path) -> String {
    format!("file://{}", scratch.join("meadow").display())
}

/// The coordinator: small cells (so that every frame has several), two bees.
pub(crate) async fn coordinator(url: &str, scratch: &Path) -> Apiary {
    coordinator_of(url, scratch, 2).await
}

/// [`coordinator`] with TPC-H SF 0.1 loaded.
pub(crate) async fn tpch_coordinator(url: &str, scratch: &Path) -> Apiary {
    let ap = coordinator(url, scratch).await;
    tpch::load(&ap.session().unwrap()).await;
    ap
}

/// [`coordinator`] with `bees` bees.
pub(crate) async fn coordinator_of(url: &str, scratch: &Path, bees: usize) -> Apiary {
    let options = ApiaryOptions {
        node: Some(NodeConfig::fixed(bees, 1 << 30, scratch.join("bees"))),
        catalog: CatalogOptions {
            write: WriteOptions::default()
                .with_leafcutter(Leafcutter::default().with_target_cell_bytes(1 << 20)),
            ..CatalogOptions::default()
        },
        ..ApiaryOptions::default()
    };
    Apiary::open_with(url, options)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// The coordinator's settings: fast heartbeats, so that a test sees its workers quickly, and a
/// judgement of "dead" after `dead_after` of silence beyond the store's lag.
pub(crate) fn swarm_config(id: &str, scratch: &Path, dead_after: Duration) -> SwarmConfig {
    let mut config = SwarmConfig::default()
        .with_heartbeat_interval(Duration::from_millis(HEARTBEAT_MS))
        .with_node_id(id);
    config.suspect_after = dead_after / 2;
    config.dead_after = dead_after;
    config.cache_dir = scratch.join("cache");
    config
}

/// `swarm_config` for a test that reads the query folders afterwards.
fn keeping_queries(mut config: SwarmConfig) -> SwarmConfig {
    config.keep_queries = true;
    config
}

/// Joins `ap` to the swarm with `config`, and waits until it sees every one of `workers` alive.
pub(crate) async fn join_and_wait(ap: &Apiary, config: SwarmConfig, workers: &[Worker]) {
    ap.join_swarm(config).await.unwrap();
    wait_alive(ap, workers).await;
}

/// Waits until the coordinator sees every one of `nodes` alive.
pub(crate) async fn wait_alive(ap: &Apiary, workers: &[Worker]) {
    let swarm = ap.swarm().expect("joined");
    let start = Instant::now();
    loop {
        let alive: Vec<String> = swarm
            .world()
            .poll()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.state == NodeState::Alive)
            .map(|n| n.heartbeat.node_id)
            .collect();
        if workers.iter().all(|w| alive.contains(&w.id)) {
            return;
        }
        let logs: Vec<String> = workers
            .iter()
            .map(|w| format!("{}: {}", w.id, w.log()))
            .collect();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "workers not alive after 60 s (alive: {alive:?}); logs:\n{}",
            logs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session of the coordinator that distributes every scan of two cells or more, on the TPC-H
/// schema.
pub(crate) async fn swarm_session(ap: &Apiary) -> SessionContext {
    let ctx = distributing(ap).await;
    tpch::use_schema(&ctx).await;
    ctx
}

apiary_catalog::each_backend!(
    [local, s3]
    tpch_on_three_worker_processes_and_a_coordinator,
);
