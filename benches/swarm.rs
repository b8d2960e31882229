//! The swarm side by side with one node, on the TPC-H SF1 copy of `tpch_apiary`:
//!
//! - scale-out: this process (the coordinator, pinned to core 0 with `taskset`, one bee) runs
//!   scan-heavy TPC-H queries alone, and again with one worker process pinned to core 1 (one
//!   bee; this binary in `--worker` mode, the node `apiary node` runs) — both every round, so
//!   both see the same machine; and, as the machine's own ceiling for two cores, the same query
//!   in one node of two bees (this process let onto both cores for that run): what the two cores
//!   give one query with no exchange at all;
//! - overhead of small queries with a swarm present: the same coordinator's session (default
//!   `swarm.min_bytes`) against a session of a node that never joined;
//! - idle cost: CPU time of an idle node process, and the object-store requests per minute of
//!   an idle node (counted in-process on the same folder, same defaults).
//!
//! - storage calls of one distributed query, per node and kind, on counting stores (`--calls`;
//!   `--calls-only` skips the scale-out);
//! - with `--per-process`, the scale-out the way the command is used: one coordinator process per
//!   query (this binary in `--once` mode, doing what `apiary [--swarm] -c SQL` does: open the
//!   meadow, join the swarm or not, run the query, leave), timed from its start to its exit.
//!
//! `--storage s3` runs the scale-out on the S3 test server (`scripts/s3-test-server`, started
//! when `APIARY_TEST_S3_URL` is not set) instead of the local folder: the SF1 meadow is copied into
//! the bucket twice, and the one-node side is a node alone in a swarm on the second copy, so that
//! both sides read cells through a cell cache on local disk (the other way one side would fetch
//! every cell over the network and the other not).
//!
//! - with `--direct` (and the `direct` feature), instead: all 22 queries on one node and on two
//!   listening nodes, over the direct path (datafusion-distributed) and over the meadow, side by
//!   side (`cargo bench --bench swarm --no-default-features --features direct -- --direct --bees 2`);
//!   `--set key=value,…` sets more on the direct path's session (`distributed.compression=none`);
//!   `--analyze` prints each query's `EXPLAIN ANALYZE` on the direct path; `--default-min-bytes`
//!   keeps queries below `swarm.min_bytes` local on it (otherwise the bench sets it to 0). Beside
//!   them, the one node again with this process let onto both cores: the machine's ceiling for
//!   two cores.
//!
//! ```text
//! cargo bench --bench swarm --no-default-features -- [--runs 7] [--bees 1] [--queries 1,6] [--small 2,11] [--idle-secs 60] [--calls 1,6] [--tasks-per-bee N] [--storage s3] [--per-process]
//! ```
//!
//! Every answer of the two-node side is compared with the one-node side's (numbers to nine
//! significant digits: the order of a distributed sum differs).
//!
//! (`--no-default-features` only skips building the `apiary` shell, which this does not use.)
//! `--timeline` keeps the query folders and prints, per query, when each of their objects was
//! written, and the planning and execution times of one more run on each side.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiary::catalog::IoRuntime;
use apiary::exec::NodeConfig;
use apiary::swarm::{NodeState, SwarmConfig};
use apiary::{Apiary, ApiaryOptions};
use apiary_catalog::testing::counting_local_meadow;
use common::{arg, arg_or, median, ms, run, time, tpch_apiary, tpch_query, work_dir};
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;

const GIB: u64 = 1 << 30;

/// Pins every thread of this process (and the threads it starts later) to `cores` (`0`, `0,1`).
fn pin_self(cores: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cores])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) is needed to pin the coordinator");
    assert!(status.success(), "taskset failed");
}

/// Runs a query with this process let onto both cores, on a runtime of its own with the threads
/// [`apiary::node_runtime`] gives two cores (this process's runtime was built pinned to one):
/// the machine's ceiling for one query on two cores, with no exchange at all.
struct BothCores(Option<tokio::runtime::Runtime>);

impl BothCores {
    fn new() -> Self {
        Self(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        ))
    }

    async fn time(&self, ctx: &SessionContext, sql: String) -> Duration {
        let ctx = ctx.clone();
        pin_self("0,1");
        let runtime = self.0.as_ref().expect("a runtime until dropped");
        let took = runtime.spawn(async move { time(&ctx, &sql).await.0 }).await;
        pin_self("0");
        took.expect("run on both cores")
    }
}

impl Drop for BothCores {
    /// It is dropped inside this process's runtime, where a runtime may not block to stop.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A node process pinned to `core` — this benchmark's own binary in `--worker` mode, which runs
/// what `apiary node --bees 1 -m 2G` runs; stopped with SIGTERM when dropped.
struct Worker(Child);

impl Worker {
    fn spawn(storage: &str, id: &str, core: usize, cache: &Path) -> Worker {
        Worker::spawn_with(storage, id, core, cache, &[])
    }

    /// [`Worker::spawn`] with more arguments of `--worker` mode (`--listen`).
    fn spawn_with(storage: &str, id: &str, core: usize, cache: &Path, extra: &[&str]) -> Worker {
        let exe = std::env::current_exe().expect("this benchmark's path");
        let child = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(exe)
            .arg("--worker")
            .arg(storage)
            .args(["--id", id])
            .arg("--cache")
            .arg(cache)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start a worker");
        Worker(child)
    }

    /// User + system CPU time of the process so far, from `/proc/{pid}/stat`.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at ") ".
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    fn rss(&self) -> u64 {
        common::proc_status_bytes(&self.0.id().to_string(), "VmRSS")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

async fn wait_alive(ap: &Apiary, id: &str) {
    let swarm = ap.swarm().expect("joined");
    let start = Instant::now();
    while !swarm
        .world()
        .poll()
        .await
        .expect("world view")
        .iter()
        .any(|n| n.heartbeat.node_id == id && n.state == NodeState::Alive)
    {
        assert!(start.elapsed() < Duration::from_secs(60), "{id} not alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tpch_session(ap: &Apiary) -> SessionContext {
    let ctx = ap.session().expect("session");
    run(&ctx, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    run(&ctx, "SET datafusion.catalog.default_schema = 'data'").await;
    ctx
}

/// The `SwarmExec` line of `EXPLAIN ANALYZE` (its tasks and where they ran).
async fn swarm_line(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx
        .sql(&format!("EXPLAIN ANALYZE {sql}"))
        .await
        .expect("explain")
        .collect()
        .await
        .expect("explain analyze");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    text.lines()
        .find(|l| l.contains("SwarmExec"))
        .map(|l| {
            l.trim_matches(|c: char| c == '|' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default()
}

/// With `--timeline`: the objects of the newest kept query folder, by modification time.
fn timeline(dir: &Path) {
    let queries = dir.join("_queries");
    let newest = std::fs::read_dir(&queries)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let Some(newest) = newest else { return };
    let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(newest.path())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            Some((
                e.metadata().ok()?.modified().ok()?,
                e.file_name().to_string_lossy().into_owned(),
            ))
        })
        .collect();
    files.sort();
    let t0 = files.first().map(|f| f.0);
    for (t, name) in &files {
        let ms = t0
            .and_then(|t0| t.duration_since(t0).ok())
            .unwrap_or_default();
        eprintln!("  {:>6.0} ms  {name}", ms.as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_dir_all(&queries);
}

/// The physical plan of `sql` in `ctx`, as text.
async fn plan_text(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx
        .sql(sql)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    displayable(plan.as_ref()).indent(false).to_string()
}

async fn distributed(ctx: &SessionContext, sql: &str) -> bool {
    plan_text(ctx, sql).await.contains("SwarmExec")
}

/// A node of `--bees N` bees (one unless given), 2 GiB each.
fn one_node(scratch: &Path) -> ApiaryOptions {
    let bees = arg_or("--bees", 1usize);
    ApiaryOptions {
        node: Some(NodeConfig::fixed(
            bees,
            bees as u64 * 2 * GIB,
            scratch.to_path_buf(),
        )),
        ..ApiaryOptions::default()
    }
}

fn queries(name: &str, default: &str) -> Vec<usize> {
    arg(name)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|q| q.trim().parse().expect("query number"))
        .collect()
}

/// Where the two sides of the scale-out read TPC-H SF1.
struct Meadows {
    /// The one-node side's …
    alone: String,
    /// … and the swarm's: the same folder, or two copies in the S3 bucket.
    swarm: String,
    s3: bool,
}

impl Meadows {
    async fn new(dir: &Path) -> Meadows {
        let local = dir.to_str().expect("utf-8").to_string();
        if arg("--storage").as_deref() != Some("s3") {
            return Meadows {
                alone: local.clone(),
                swarm: local,
                s3: false,
            };
        }
        let base = std::env::var("APIARY_TEST_S3_URL").expect("S3 url");
        let (alone, swarm) = (
            format!("{base}/bench-tpch-sf1-alone"),
            format!("{base}/bench-tpch-sf1"),
        );
        for url in [&alone, &swarm] {
            copy_meadow(dir, url).await;
        }
        Meadows {
            alone,
            swarm,
            s3: true,
        }
    }
}

/// Copies the meadow in folder `dir` to `url`, object by object (its swarm folders left out),
/// unless a finished copy is there.
async fn copy_meadow(dir: &Path, url: &str) {
    use futures::StreamExt;
    let meadow = apiary::catalog::Meadow::open(url).await.expect("meadow");
    if meadow.exists(".complete").await.expect("head") {
        return;
    }
    let start = Instant::now();
    let mut files = vec![];
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for e in std::fs::read_dir(&folder).expect("read_dir").flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .expect("below")
                .to_string_lossy()
                .to_string();
            if ["_queries", "_heartbeats", "_caches", ".complete"]
                .iter()
                .any(|skip| rel.starts_with(skip))
            {
                continue;
            }
            match path.is_dir() {
                true => folders.push(path),
                false => files.push((path, rel)),
            }
        }
    }
    let count = files.len();
    futures::stream::iter(files)
        .map(|(path, rel)| {
            let meadow = meadow.clone();
            async move {
                let bytes = tokio::fs::read(&path).await.expect("read");
                meadow.put(&rel, bytes.into()).await.expect("put");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    meadow
        .put(".complete", Default::default())
        .await
        .expect("put");
    eprintln!(
        "copied {count} objects to {url} in {:.0} s",
        start.elapsed().as_secs_f64()
    );
}

async fn scale_out(dir: &Path, runs: usize) {
    // As in `calls`: the leftovers of earlier bench processes are not this run's work.
    let _ = std::fs::remove_dir_all(dir.join("_queries"));
    let meadows = Meadows::new(dir).await;
    let scratch = work_dir("swarm-scratch");
    let _ = std::fs::remove_dir_all(scratch.join("cache"));
    let alone = Apiary::open_with(&meadows.alone, one_node(&scratch.join("alone")))
        .await
        .expect("open");
    if meadows.s3 {
        // Alone in a swarm of its own copy: its queries read cells through its cell cache.
        let config = node_config("alone", &scratch);
        alone.join_swarm(config).await.expect("join");
    }
    let coordinator = Apiary::open_with(&meadows.swarm, one_node(&scratch.join("coordinator")))
        .await
        .expect("open");
    let _worker = Worker::spawn(&meadows.swarm, "w1", 1, &scratch.join("cache"));
    let mut config = node_config("coordinator", &scratch);
    config.keep_queries = arg("--timeline").is_some();
    coordinator.join_swarm(config).await.expect("join");
    wait_alive(&coordinator, "w1").await;

    let local = tpch_session(&alone).await;
    // Two bees in one node, never joined: the ceiling of two cores for one query.
    let two_bees = Apiary::open_with(
        &meadows.alone,
        ApiaryOptions {
            node: Some(NodeConfig::fixed(2, 4 * GIB, scratch.join("two-bees"))),
            ..ApiaryOptions::default()
        },
    )
    .await
    .expect("open");
    if meadows.s3 {
        let config = node_config("two-bees", &scratch);
        two_bees.join_swarm(config).await.expect("join");
    }
    let ceiling = tpch_session(&two_bees).await;
    // On S3 both join one swarm (for their cell caches): neither may hand work to the other.
    run(&local, "SET swarm.enabled = false").await;
    run(&ceiling, "SET swarm.enabled = false").await;
    let both_cores = BothCores::new();
    let on_both = |sql: String| both_cores.time(&ceiling, sql);
    let swarm = tpch_session(&coordinator).await;
    let forced = tpch_session(&coordinator).await;
    run(&forced, "SET swarm.min_bytes = 0").await;
    if let Some(n) = arg("--tasks-per-bee") {
        run(&forced, &format!("SET swarm.tasks_per_bee = {n}")).await;
    }

    let store = if meadows.s3 {
        "S3 test server"
    } else {
        "local folder"
    };
    println!(
        "## Scale-out: 1 node vs 2 nodes, one core each (TPC-H SF1 on a {store}, {runs} runs, median)\n"
    );
    println!(
        "| query | 1 node (ms) | 2 nodes (ms) | speedup | 1 node of 2 bees (ms) | its speedup | swarm ÷ ceiling |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut lines = vec![];
    for q in queries("--queries", "1,6") {
        let sql = tpch_query(q);
        let shared = if distributed(&forced, &sql).await {
            ""
        } else {
            " (not distributed)"
        };
        // Warm-up: the worker fills its cell cache, both warm the page cache; the answers match.
        let (a, b) = (answer(&local, &sql).await, answer(&forced, &sql).await);
        assert_eq!(a, b, "q{q}: the two-node answer differs");
        assert_eq!(
            a,
            answer(&ceiling, &sql).await,
            "q{q}: the two-bee answer differs"
        );
        for _ in 0..2 {
            run(&local, &sql).await;
            run(&forced, &sql).await;
            on_both(sql.clone()).await;
        }
        let (mut one, mut two, mut both) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            let (t, a) = time(&local, &sql).await;
            one.push(t);
            let (t, b) = time(&forced, &sql).await;
            two.push(t);
            assert_eq!(a, b, "q{q}: row counts differ");
            both.push(on_both(sql.clone()).await);
        }
        let (one, two, both) = (median(one), median(two), median(both));
        let speedup = one.as_secs_f64() / two.as_secs_f64();
        let ceiling_speedup = one.as_secs_f64() / both.as_secs_f64();
        println!(
            "| q{q}{shared} | {:.0} | {:.0} | {speedup:.2}× | {:.0} | {ceiling_speedup:.2}× | {:.2} |",
            ms(one),
            ms(two),
            ms(both),
            speedup / ceiling_speedup
        );
        lines.push(format!("q{q}: {}", swarm_line(&forced, &sql).await));
        if arg("--timeline").is_some() && !meadows.s3 {
            timeline(dir);
            for (name, ctx) in [("local", &local), ("swarm", &forced)] {
                let start = Instant::now();
                let df = ctx.sql(&sql).await.expect("sql");
                let logical = start.elapsed();
                let plan = df.create_physical_plan().await.expect("plan");
                let physical = start.elapsed();
                let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
                    .await
                    .expect("run");
                eprintln!(
                    "  {name}: logical {:.0} ms, physical {:.0} ms, executed {:.0} ms ({} batches)",
                    ms(logical),
                    ms(physical),
                    ms(start.elapsed()),
                    batches.len()
                );
            }
            timeline(dir);
        }
    }
    println!("\n{}", lines.join("\n"));

    println!(
        "\n## Small queries with a swarm present (default `swarm.min_bytes`, {runs} runs, median)\n"
    );
    println!("| query | never joined (ms) | swarm present (ms) | ratio |");
    println!("|---|---:|---:|---:|");
    for q in queries("--small", "2,11") {
        let sql = tpch_query(q);
        assert!(!distributed(&swarm, &sql).await, "q{q} is distributed");
        for _ in 0..2 {
            run(&local, &sql).await;
            run(&swarm, &sql).await;
        }
        let (mut one, mut two) = (vec![], vec![]);
        for _ in 0..runs {
            one.push(time(&local, &sql).await.0);
            two.push(time(&swarm, &sql).await.0);
        }
        let (one, two) = (median(one), median(two));
        let cost = two.as_secs_f64() / one.as_secs_f64();
        println!("| q{q} | {:.1} | {:.1} | {cost:.2}× |", ms(one), ms(two));
    }
    coordinator.leave_swarm().await.expect("leave");
    alone.leave_swarm().await.expect("leave");
    two_bees.leave_swarm().await.expect("leave");
    drop(both_cores);
    if common::flag("--per-process") {
        per_process(&meadows, runs);
    }
}

/// `--direct`: all 22 TPC-H SF1 queries on one node (core 0) and on two nodes (this process on
/// core 0, a worker process on core 1, both listening), over the direct path and over the
/// meadow, interleaved per run; speedups against one node and their geometric means. Each node
/// has `--bees N` bees on its one core: with one bee DataFusion plans aggregations in one
/// partition, which the direct path keeps local (it cannot split them safely), so the direct
/// table wants `--bees 2`.
#[cfg(feature = "direct")]
async fn direct_scale_out(dir: &Path, runs: usize) {
    let _ = std::fs::remove_dir_all(dir.join("_queries"));
    let storage = dir.to_str().expect("utf-8");
    let scratch = work_dir("swarm-direct-scratch");
    let _ = std::fs::remove_dir_all(scratch.join("cache"));
    let alone = Apiary::open_with(storage, one_node(&scratch.join("alone")))
        .await
        .expect("open");
    let coordinator = Apiary::open_with(storage, one_node(&scratch.join("coordinator")))
        .await
        .expect("open");
    let bees = arg_or("--bees", 1usize).to_string();
    let _worker = Worker::spawn_with(
        storage,
        "w1",
        1,
        &scratch.join("cache"),
        &["--listen", "--bees", &bees],
    );
    let mut config = node_config("coordinator", &scratch);
    config.listen = Some("127.0.0.1:0".parse().expect("address"));
    coordinator.join_swarm(config).await.expect("join");
    wait_alive(&coordinator, "w1").await;
    let swarm = coordinator.swarm().expect("joined");
    let start = Instant::now();
    while swarm.direct_workers().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reached {:?}",
            swarm.direct_workers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let local = tpch_session(&alone).await;
    run(&local, "SET swarm.enabled = false").await;
    let direct = tpch_session(&coordinator).await;
    run(&direct, "SET swarm.path = 'direct'").await;
    // `--default-min-bytes`: queries below `swarm.min_bytes` stay local, as by default.
    if !common::flag("--default-min-bytes") {
        run(&direct, "SET swarm.min_bytes = 0").await;
    }
    // `--set key=value,…`: settings of the direct path's session to compare.
    for setting in arg("--set").iter().flat_map(|s| s.split(',')) {
        if let Some((key, value)) = setting.split_once('=') {
            run(&direct, &format!("SET {key} = '{value}'")).await;
        }
    }
    let meadow = tpch_session(&coordinator).await;
    run(&meadow, "SET swarm.path = 'storage'").await;
    run(&meadow, "SET swarm.min_bytes = 0").await;

    println!(
        "## Direct path: 1 node vs 2 nodes, one core and {bees} bees each (TPC-H SF1 on a local folder, {runs} runs, median)\n"
    );
    println!(
        "| query | 1 node (ms) | 2 nodes, direct (ms) | speedup | 2 nodes, meadow (ms) | speedup | 1 node on both cores (ms) | its speedup | direct ÷ ceiling |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // The one node again, let onto both cores: what two cores give a query with no exchange.
    let both_cores = BothCores::new();
    let (mut direct_ups, mut meadow_ups, mut ceiling_ups) = (vec![], vec![], vec![]);
    let mut slower = vec![];
    for q in queries(
        "--queries",
        &(1..=22)
            .map(|q| q.to_string())
            .collect::<Vec<_>>()
            .join(","),
    ) {
        let sql = tpch_query(q);
        let plan = plan_text(&direct, &sql).await;
        let mark = if plan.contains("DirectPathExec") {
            ""
        } else {
            " (not distributed)"
        };
        let expected = answer(&local, &sql).await;
        assert_eq!(
            expected,
            answer(&direct, &sql).await,
            "q{q}: the direct path's answer differs"
        );
        assert_eq!(
            expected,
            answer(&meadow, &sql).await,
            "q{q}: the meadow's answer differs"
        );
        for ctx in [&local, &direct, &meadow] {
            run(ctx, &sql).await;
        }
        both_cores.time(&local, sql.clone()).await;
        let (mut one, mut two, mut three, mut four) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            one.push(time(&local, &sql).await.0);
            two.push(time(&direct, &sql).await.0);
            three.push(time(&meadow, &sql).await.0);
            four.push(both_cores.time(&local, sql.clone()).await);
        }
        if common::flag("--analyze") {
            let batches = common::collect(&direct, &format!("EXPLAIN ANALYZE {sql}")).await;
            eprintln!(
                "q{q} on the direct path:\n{}",
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("text")
            );
        }
        let (one, two, three, four) = (median(one), median(two), median(three), median(four));
        let over = |t: Duration| one.as_secs_f64() / t.as_secs_f64();
        let (up, mup, cup) = (over(two), over(three), over(four));
        direct_ups.push(up);
        meadow_ups.push(mup);
        ceiling_ups.push(cup);
        if up < 1.0 / 1.05 {
            slower.push(format!("q{q}"));
        }
        println!(
            "| q{q}{mark} | {:.0} | {:.0} | {up:.2}× | {:.0} | {mup:.2}× | {:.0} | {cup:.2}× | {:.2} |",
            ms(one),
            ms(two),
            ms(three),
            ms(four),
            up / cup
        );
    }
    let geomean = |ups: &[f64]| (ups.iter().map(|u| u.ln()).sum::<f64>() / ups.len() as f64).exp();
    let (direct_mean, ceiling_mean) = (geomean(&direct_ups), geomean(&ceiling_ups));
    println!(
        "| geometric mean | | | {direct_mean:.2}× | | {:.2}× | | {ceiling_mean:.2}× | {:.2} |",
        geomean(&meadow_ups),
        direct_mean / ceiling_mean
    );
    println!(
        "\nSlower than one node by more than 5 % on the direct path: {}",
        if slower.is_empty() {
            "none".to_string()
        } else {
            slower.join(", ")
        }
    );
    coordinator.leave_swarm().await.expect("leave");
}

/// The settings of node `id`, its cell cache in `{scratch}/cache`.
fn node_config(id: &str, scratch: &Path) -> SwarmConfig {
    let mut config = SwarmConfig::default().with_node_id(id);
    config.cache_dir = scratch.join("cache");
    config
}

/// One row of a scale-out table: the medians of both sides and their ratio.
fn speedup_row(label: &str, one: Vec<Duration>, two: Vec<Duration>) {
    let (one, two) = (median(one), median(two));
    println!(
        "| {label} | {:.0} | {:.0} | {:.2}× |",
        ms(one),
        ms(two),
        one.as_secs_f64() / two.as_secs_f64()
    );
}

/// The scale-out with one coordinator process per query, as `apiary [--swarm] -c SQL` runs:
/// each side's process pinned to core 0, the worker still on core 1; timed from spawn to exit.
fn per_process(meadows: &Meadows, runs: usize) {
    println!(
        "\n## One process per query (what `apiary -c` / `apiary --swarm -c` do; default settings, {runs} runs, median)\n"
    );
    println!("| query | 1 node (ms) | 2 nodes (ms) | speedup |");
    println!("|---|---:|---:|---:|");
    for q in queries("--queries", "1,6") {
        let side = |url: &str, join: bool| {
            let exe = std::env::current_exe().expect("this benchmark's path");
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "0"])
                .arg(exe)
                .args(["--once", url, "--query", &q.to_string()]);
            if join {
                cmd.arg("--join");
            }
            let start = Instant::now();
            let out = cmd.output().expect("start a coordinator process");
            let elapsed = start.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                elapsed,
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        };
        let (mut one, mut two) = (vec![], vec![]);
        for round in 0..runs + 1 {
            let (t1, rows1) = side(&meadows.alone, false);
            let (t2, rows2) = side(&meadows.swarm, true);
            assert_eq!(rows1, rows2, "q{q}: row counts differ");
            if round > 0 {
                // The first round warms the page cache and the worker's cell cache.
                one.push(t1);
                two.push(t2);
            }
        }
        speedup_row(&format!("q{q}"), one, two);
    }
}

/// `--once URL --query N [--join]`: what `apiary [--swarm] -c SQL` does, and prints the rows.
async fn once(url: &str) {
    let q: usize = arg("--query")
        .and_then(|q| q.parse().ok())
        .expect("--query");
    let scratch = work_dir(&format!("swarm-scratch/once-{}", std::process::id()));
    let ap = Apiary::open_with(url, one_node(&scratch))
        .await
        .expect("open");
    if common::flag("--join") {
        ap.join_swarm(SwarmConfig::default()).await.expect("join");
    }
    let ctx = tpch_session(&ap).await;
    let rows = run(&ctx, &tpch_query(q)).await;
    ap.leave_swarm().await.expect("leave");
    drop(ap);
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{rows}");
}

/// A query's answer as sorted lines, numbers to nine significant digits.
async fn answer(ctx: &SessionContext, sql: &str) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let batches = common::collect(ctx, sql).await;
    let options = FormatOptions::default();
    let mut lines = vec![];
    for batch in &batches {
        let columns: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    let text = c.value(row).to_string();
                    match text.parse::<f64>() {
                        Ok(x) if text.contains('.') => format!("{x:.8e}"),
                        _ => text,
                    }
                })
                .collect();
            lines.push(cells.join("|"));
        }
    }
    lines.sort();
    lines
}

/// Storage calls of one run of each `--calls` query, on a coordinator and a worker in this process
/// (one bee each), each on its own counting store over the same folder; with the default
/// `swarm.tasks_per_bee` and with one task per bee.
async fn calls(dir: &Path) {
    let Some(list) = arg("--calls") else { return };
    // Query folders earlier bench processes left (each keeps `finished.json` for a grace period
    // no node of theirs outlived): a newcomer looks into each once, which is not the query's cost.
    let _ = std::fs::remove_dir_all(dir.join("_queries"));
    let scratch = work_dir("swarm-calls");
    let _ = std::fs::remove_dir_all(scratch.join("cache"));
    let node = |id: &'static str| {
        let scratch = scratch.clone();
        async move {
            let (meadow, counting) = counting_local_meadow(dir);
            let io = IoRuntime::new().expect("io runtime");
            let ap = Apiary::from_meadow(meadow, io, one_node(&scratch.join(id)))
                .await
                .expect("open");
            ap.join_swarm(node_config(id, &scratch))
                .await
                .expect("join");
            (ap, counting)
        }
    };
    let (coordinator, at_coordinator) = node("coordinator").await;
    let (worker, at_worker) = node("worker").await;
    wait_alive(&coordinator, "worker").await;
    println!("\n## Storage calls of one distributed query (TPC-H SF1, local folder)\n");
    println!("| query | tasks per bee | tasks | coordinator | worker |");
    println!("|---|---:|---:|---|---|");
    for q in list
        .split(',')
        .map(|q| q.trim().parse::<usize>().expect("query"))
    {
        let sql = tpch_query(q);
        for per_bee in [3, 1] {
            let ctx = tpch_session(&coordinator).await;
            run(&ctx, "SET swarm.min_bytes = 0").await;
            run(&ctx, &format!("SET swarm.tasks_per_bee = {per_bee}")).await;
            run(&ctx, &sql).await; // warm: caches filled, the worker polling fast
            let line = swarm_line(&ctx, &sql).await;
            let tasks = line
                .split("tasks=")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .unwrap_or("?")
                .to_string();
            at_coordinator.take();
            at_worker.take();
            at_coordinator.take_reads();
            at_worker.take_reads();
            run(&ctx, &sql).await;
            let show = |calls: BTreeMap<&str, usize>| {
                calls
                    .iter()
                    .map(|(op, n)| format!("{op} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "| q{q} | {per_bee} | {tasks} | {} | {} |",
                show(at_coordinator.take()),
                show(at_worker.take())
            );
            if arg("--calls-keys").is_some() {
                for (name, counting) in [("coordinator", &at_coordinator), ("worker", &at_worker)] {
                    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
                    for key in counting.take_reads() {
                        let kind = if key.ends_with(".parquet") {
                            "cells"
                        } else if key.contains("/_ledger/") {
                            "ledger"
                        } else if key.contains("_registry/") {
                            "registry"
                        } else if key.contains("_queries/") {
                            let name = key.rsplit('/').next().unwrap_or_default();
                            let shape: String =
                                name.chars().filter(|c| !c.is_ascii_digit()).collect();
                            *kinds.entry(Box::leak(shape.into_boxed_str())).or_default() += 1;
                            continue;
                        } else {
                            "other"
                        };
                        *kinds.entry(kind).or_default() += 1;
                    }
                    eprintln!("  {name} read (distinct keys): {kinds:?}");
                }
            }
        }
    }
    worker.leave_swarm().await.expect("leave");
    coordinator.leave_swarm().await.expect("leave");
}

/// An idle swarm of two nodes on an empty folder: one `apiary node` process (its CPU time) and
/// one in-process node on a counting store (its requests), both with the default intervals.
async fn idle(secs: u64) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("meadow");
    std::fs::create_dir_all(&dir).expect("dir");
    let (meadow, counting) = counting_local_meadow(&dir);
    let io = IoRuntime::new().expect("io runtime");
    let ap = Apiary::from_meadow(meadow, io, one_node(&scratch.path().join("bees")))
        .await
        .expect("open");
    let worker = Worker::spawn(
        dir.to_str().expect("utf-8"),
        "idle",
        1,
        &scratch.path().join("cache"),
    );
    let config = node_config("counted", scratch.path());
    ap.join_swarm(config).await.expect("join");
    wait_alive(&ap, "idle").await;
    counting.take();
    let cpu0 = worker.cpu();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = start.elapsed();
    let cpu = worker.cpu().saturating_sub(cpu0);
    let requests: BTreeMap<&str, usize> = counting.take();
    let per_min = |n: usize| n as f64 * 60.0 / elapsed.as_secs_f64();

    println!(
        "\n## Idle cost ({:.0} s, default intervals)\n",
        elapsed.as_secs_f64()
    );
    println!(
        "- CPU of an idle node process: {:.0} ms in {:.0} s ({:.3} % of one core); RSS {:.0} MiB",
        ms(cpu),
        elapsed.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
        worker.rss() as f64 / (1 << 20) as f64
    );
    let line: Vec<String> = requests
        .iter()
        .map(|(op, n)| format!("{op} {:.0}", per_min(*n)))
        .collect();
    println!("- requests per minute of an idle node: {}", line.join(", "));
    ap.leave_swarm().await.expect("leave");
}

/// `--worker STORAGE --id ID --cache DIR [--listen] [--bees N]`: a swarm member with one bee
/// (or N) of 2 GiB each until SIGTERM; with `--listen`, a worker of the direct path on
/// 127.0.0.1 too.
async fn worker(storage: &str) {
    let id = arg("--id").expect("--id");
    let cache = arg("--cache").expect("--cache");
    let scratch = work_dir(&format!("swarm-scratch/{id}"));
    let ap = Apiary::open_with(storage, one_node(&scratch))
        .await
        .expect("open");
    let mut config = SwarmConfig::default().with_node_id(id);
    config.cache_dir = cache.into();
    if common::flag("--listen") {
        config.listen = Some("127.0.0.1:0".parse().expect("address"));
    }
    ap.join_swarm(config).await.expect("join");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    term.recv().await;
    ap.leave_swarm().await.expect("leave");
}

fn main() {
    if let Some(storage) = arg("--worker") {
        let rt = apiary::node_runtime().expect("runtime");
        rt.block_on(worker(&storage));
        return;
    }
    if let Some(url) = arg("--once") {
        let rt = apiary::node_runtime().expect("runtime");
        rt.block_on(once(&url));
        return;
    }
    let started_s3 = arg("--storage").as_deref() == Some("s3") && common::ensure_s3();
    pin_self("0");
    let runs = arg_or("--runs", 7usize);
    let idle_secs = arg_or("--idle-secs", 60u64);
    // What `apiary` and `apiary node` run on (pinned to one core: still two threads).
    let rt = apiary::node_runtime().expect("runtime");
    rt.block_on(async {
        let (dir, ap) = tpch_apiary("1").await;
        drop(ap);
        #[cfg(feature = "direct")]
        if common::flag("--direct") {
            direct_scale_out(&dir, runs).await;
            return;
        }
        if arg("--calls-only").is_none() {
            scale_out(&dir, runs).await;
        }
        calls(&dir).await;
        if idle_secs > 0 {
            idle(idle_secs).await;
        }
    });
    if started_s3 {
        common::stop_s3();
    }
}
