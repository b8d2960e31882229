//! The status server: `/metrics` read by a Prometheus text-format parser as queries and commits
//! run, `/api/status`, and nothing served but its routes.

use std::net::SocketAddr;
use std::sync::Arc;

use apiary::{Apiary, StatusOptions};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};

use crate::support::http_get;

/// `/metrics`, parsed.
async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// This process's metrics as `/metrics` would show them, parsed.
pub(crate) fn rendered() -> prometheus_parse::Scrape {
    let text = apiary::prometheus().unwrap().render();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The sum of the samples of `metric` labelled `node` (and `label`, when given).
pub(crate) fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    node: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("node") == Some(node))
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.last().map(|c| c.count).unwrap_or(0.0),
            other => panic!("{metric}: {other:?}"),
        })
        .sum()
}

async fn api_status(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/api/status"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn run(ap: &Apiary, ctx: &datafusion::prelude::SessionContext, sql: &str) {
    ap.sql(ctx, sql).await.unwrap().collect().await.unwrap();
}

/// Whether `sql`, through Apiary's door, fails.
async fn fails(ap: &Apiary, ctx: &datafusion::prelude::SessionContext, sql: &str) -> bool {
    ap.sql(ctx, sql).await.unwrap().collect().await.is_err()
}

/// `{hive}.b.t (id BIGINT)` holding `values`, in one commit.
async fn small_frame(
    ap: &Apiary,
    ctx: &datafusion::prelude::SessionContext,
    hive: &str,
    values: &str,
) {
    for sql in [
        format!("CREATE DATABASE {hive}"),
        format!("CREATE SCHEMA {hive}.b"),
        format!("CREATE TABLE {hive}.b.t (id BIGINT)"),
        format!("INSERT INTO {hive}.b.t VALUES {values}"),
    ] {
        run(ap, ctx, &sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_queries_and_commits_run_labelled_by_node() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, node, server) = labelled_at(&dir.path().join("a"), None).await;
    let addr = server.local_addr();
    // Another node of this process: its work never shows under `node`.
    let other = Apiary::open(dir.path().join("b").to_str().unwrap())
        .await
        .unwrap();
    let other_ctx = other.session().unwrap();

    let ctx = ap.session().unwrap();
    for sql in [
        "CREATE DATABASE h",
        "CREATE SCHEMA h.b",
        "CREATE EXTERNAL TABLE h.b.t (id BIGINT NOT NULL, region VARCHAR NOT NULL) \
         STORED AS APIARY PARTITIONED BY (region) LOCATION ''",
    ] {
        run(&ap, &ctx, sql).await;
    }
    let before = scrape(addr).await;
    let v = |s: &prometheus_parse::Scrape, m: &str| value(s, m, &node, None);

    run(
        &ap,
        &ctx,
        "INSERT INTO h.b.t VALUES (1, 'fr'), (2, 'de'), (3, 'fr')",
    )
    .await;
    run(&ap, &ctx, "SELECT id FROM h.b.t WHERE region = 'fr'").await;
    assert!(fails(&ap, &ctx, "SELECT CAST(region AS INT) FROM h.b.t").await);
    small_frame(&other, &other_ctx, "o", "(1)").await;
    let after = scrape(addr).await;

    let moved = |m: &str| v(&after, m) - v(&before, m);
    assert_eq!(moved("apiary_commits_total"), 1.0, "one INSERT, one commit");
    assert_eq!(
        moved("apiary_cells_written_total"),
        2.0,
        "one cell per region"
    );
    assert!(moved("apiary_cell_bytes_written_total") > 0.0);
    assert_eq!(moved("apiary_queries_started_total"), 3.0);
    assert_eq!(moved("apiary_queries_finished_total"), 2.0);
    assert_eq!(moved("apiary_queries_failed_total"), 1.0);
    assert_eq!(moved("apiary_queries_cancelled_total"), 0.0);
    // The INSERT's count row, the SELECT's two rows.
    assert_eq!(moved("apiary_rows_returned_total"), 3.0);
    let pruned = |s| {
        value(
            s,
            "apiary_cells_pruned_total",
            &node,
            Some(("by", "partition")),
        )
    };
    assert!(pruned(&after) - pruned(&before) >= 1.0, "the 'de' cell");
    assert!(moved("apiary_cells_scanned_total") >= 1.0);
    // The SELECT's 'fr' cell (2 rows), the failing SELECT's two cells (3 rows).
    assert_eq!(moved("apiary_rows_scanned_total"), 5.0);
    let kind = |s, metric, kind| value(s, metric, &node, Some(("kind", kind)));
    let puts = |s| kind(s, "apiary_storage_calls_total", "put");
    let timed = |s| kind(s, "apiary_storage_call_seconds", "put");
    assert!(
        puts(&after) > puts(&before),
        "the cells and the ledger entry"
    );
    assert_eq!(timed(&after) - timed(&before), puts(&after) - puts(&before));
    assert_eq!(v(&after, "apiary_bees"), ap.bees().bees() as f64);
    let other_node = other.meadow().sight().node();
    assert_ne!(&*other_node, node.as_str());
    assert_eq!(
        value(&after, "apiary_commits_total", &other_node, None),
        1.0
    );

    // The same queries in the JSON, newest first, with their SQL text and outcome.
    let status = api_status(addr).await;
    assert_eq!(status["node"]["id"], node.as_str());
    let each_bee = status["node"]["each_bee"].as_array().unwrap();
    assert_eq!(each_bee.len(), ap.bees().bees());
    assert!(
        each_bee.iter().all(|b| b["state"] == "idle"),
        "{each_bee:?}"
    );
    let recent = status["queries"]["recent"].as_array().unwrap();
    assert_eq!(recent[0]["outcome"], "failed", "{recent:?}");
    assert!(
        recent[0]["error"].as_str().unwrap().contains("Cannot cast"),
        "{recent:?}"
    );
    assert_eq!(recent[1]["sql"], "SELECT id FROM h.b.t WHERE region = 'fr'");
    assert_eq!(recent[1]["outcome"], "finished");
    assert_eq!(recent[1]["rows"], 2);
    assert_eq!(recent[1]["path"], "local");
    assert_eq!(recent[1]["cells_total"], 2, "{recent:?}");
    assert_eq!(recent[1]["cells_pruned"], 1, "the 'de' cell: {recent:?}");
    let frames = status["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["frame"], "h.b.t");
    assert_eq!(frames[0]["rows"], 3);
    assert_eq!(frames[0]["cells"], 2);

    // Only its routes; and the page itself is one self-contained document.
    for path in ["/nope", "/metrics/x", "/api"] {
        let (code, _) = tokio::task::spawn_blocking(move || http_get(addr, path))
            .await
            .unwrap();
        assert_eq!(code, 404, "{path}");
    }
    let (code, page) = tokio::task::spawn_blocking(move || http_get(addr, "/"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("/api/status") && !page.contains("src=") && !page.contains("href="));

    // A query the host planned itself (not through `Apiary::sql`) runs without its text.
    ctx.sql("SELECT 7 AS seven")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let status = api_status(addr).await;
    let newest = &status["queries"]["recent"][0];
    assert!(newest["sql"].is_null() && newest["rows"] == 1, "{newest}");

    // Query text can be hidden.
    let redacted = ap
        .serve_status(
            "127.0.0.1:0".parse().unwrap(),
            StatusOptions { redact_sql: true },
        )
        .await
        .unwrap();
    let status = api_status(redacted.local_addr()).await;
    let recent = status["queries"]["recent"].as_array().unwrap();
    assert!(
        !recent.is_empty() && recent.iter().all(|q| q["sql"].is_null()),
        "{recent:?}"
    );
    redacted.stop().await;
    server.stop().await;
    // Stopped means the address is let go of, not "soon".
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// `apiary node` with one bee, heartbeating every 200 ms; stopped with SIGTERM when dropped.
struct NodeProcess(std::process::Child);

impl NodeProcess {
    fn start(storage: &std::path::Path, id: &str, cache: &std::path::Path) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
            .arg("--storage")
            .arg(storage)
            .args(["node", "--node-id", id, "--bees", "1", "-m", "256M"])
            .args(["--heartbeat-ms", "200", "--cache-size", "0"])
            .arg("--cache-dir")
            .arg(cache.join(id))
            .env_remove("APIARY_STORAGE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        NodeProcess(child)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The page in a real headless Chromium (`tests/page/status_page.cjs`, playwright-core from
/// `APIARY_NODE_PATH`, both installed by `scripts/test.sh`): two node processes listed alive
/// with their bees, a query that ran, and — on the same page — a node that stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_swarm_and_its_queries_in_chromium() {
    let node_path = std::env::var("APIARY_NODE_PATH").unwrap_or_else(|_| {
        panic!(
            "APIARY_NODE_PATH is not set: run the tests with ./scripts/test.sh, which installs \
             Chromium and playwright-core"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("meadow");
    let ap = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    let ctx = ap.session().unwrap();
    small_frame(&ap, &ctx, "h", "(1), (2), (3)").await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (a, b) = (format!("page-a-{tag}"), format!("page-b-{tag}"));
    let _node_a = NodeProcess::start(&storage, &a, dir.path());
    let node_b = NodeProcess::start(&storage, &b, dir.path());
    let mut config = apiary::swarm::SwarmConfig::default()
        .with_heartbeat_interval(std::time::Duration::from_millis(200))
        .with_node_id(format!("page-host-{tag}"));
    config.cache_dir = dir.path().join("cache-host");
    config.cache_bytes = 0;
    ap.join_swarm(config).await.unwrap();
    let server = ap
        .serve_status("127.0.0.1:0".parse().unwrap(), StatusOptions::default())
        .await
        .unwrap();
    let sql = "SELECT count(*) AS page_rows FROM h.b.t";
    run(&ap, &ctx, sql).await;

    let png = dir.path().join("status.png");
    let url = format!("http://{}/", server.local_addr());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/page/status_page.cjs");
    let pid_b = node_b.0.id().to_string();
    let args: Vec<String> = [url.as_str(), &pid_b, &a, &b, sql, png.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .args(args)
            .env("NODE_PATH", &node_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["beesA"], "0 / 1", "{seen}");
    assert_eq!(seen["beesB"], "0 / 1", "{seen}");
    assert!(
        seen["query"].as_str().unwrap().contains("finished"),
        "{seen}"
    );
    assert_eq!(seen["stillAliveA"], true, "{seen}");
    assert_eq!(seen["navigations"], 1, "the page updated itself: {seen}");
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    if let Ok(keep) = std::env::var("APIARY_KEEP_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    drop(node_b);
    server.stop().await;
    ap.leave_swarm().await.unwrap();
}

/// The shell's `--http`: its statements show on its page with their SQL text.
#[test]
fn the_shells_status_page_shows_its_statements() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut shell = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
        .arg("--storage")
        .arg(dir.path())
        .args(["--http", "127.0.0.1:0", "-q"])
        .env_remove("APIARY_STORAGE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(shell.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("status page: http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    writeln!(stdin, "SELECT 41 + 1 AS answer;").unwrap();
    let started = std::time::Instant::now();
    let recent = loop {
        let (_, body) = http_get(addr, "/api/status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let recent = status["queries"]["recent"].clone();
        if recent.as_array().is_some_and(|r| !r.is_empty()) {
            break recent;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(recent[0]["sql"], "SELECT 41 + 1 AS answer;", "{recent}");
    assert_eq!(recent[0]["rows"], 1, "{recent}");
    drop(stdin);
    assert!(shell.wait().unwrap().success());
}

/// An Apiary on `{dir}/meadow` with bees `node` (detected when `None`), labelled with a name of
/// its own, serving its status page.
async fn labelled(
    dir: &std::path::Path,
    node: Option<apiary::exec::NodeConfig>,
) -> (Apiary, String, apiary::StatusServer) {
    labelled_at(&dir.join("meadow"), node).await
}

/// [`labelled`], on the folder `meadow`.
async fn labelled_at(
    meadow: &std::path::Path,
    node: Option<apiary::exec::NodeConfig>,
) -> (Apiary, String, apiary::StatusServer) {
    let options = apiary::ApiaryOptions {
        node,
        ..apiary::ApiaryOptions::default()
    };
    let ap = Apiary::open_with(meadow.to_str().unwrap(), options)
        .await
        .unwrap();
    let name = format!("status-{}", uuid::Uuid::new_v4().simple());
    ap.meadow().sight().set_node(name.as_str());
    let server = ap
        .serve_status("127.0.0.1:0".parse().unwrap(), StatusOptions::default())
        .await
        .unwrap();
    (ap, name, server)
}

/// One row `id` of `h.b.t (id BIGINT)`.
fn one_id(
    id: i64,
) -> futures::stream::Iter<std::vec::IntoIter<apiary::catalog::Result<RecordBatch>>> {
    let column: ArrayRef = Arc::new(Int64Array::from(vec![id]));
    let batch = RecordBatch::try_from_iter([("id", column)]).unwrap();
    futures::stream::iter(vec![Ok(batch)])
}

/// Racing commits: each retry one lost race, exactly as the commits report them; a rewrite
/// from a stale snapshot: one conflict; a compaction and a cleanse: one each; a write the
/// store refuses: a storage error — and the frame keeps what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_conflicts_upkeep_and_storage_errors_are_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, node, server) = labelled(dir.path(), None).await;
    let addr = server.local_addr();
    let ctx = ap.session().unwrap();
    small_frame(&ap, &ctx, "h", "(0)").await;
    let frame = ap.providers().frame("h", "b", "t").await.unwrap().unwrap();
    let v = |s: &prometheus_parse::Scrape, m: &str| value(s, m, &node, None);

    let before = scrape(addr).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let writers: Vec<_> = (0..8i64)
        .map(|w| {
            let (frame, barrier) = (frame.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut retries = 0;
                for i in 0..10 {
                    let info = frame.append(one_id(1 + w * 10 + i), "WRITE").await.unwrap();
                    retries += info.attempts - 1;
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for w in writers {
        retries += w.await.unwrap();
    }
    let raced = scrape(addr).await;
    assert!(retries > 0, "the writers never raced");
    assert_eq!(
        v(&raced, "apiary_commits_total") - v(&before, "apiary_commits_total"),
        80.0
    );
    assert_eq!(
        v(&raced, "apiary_commit_lost_races_total") - v(&before, "apiary_commit_lost_races_total"),
        retries as f64
    );
    assert_eq!(
        v(&raced, "apiary_commit_retries_total") - v(&before, "apiary_commit_retries_total"),
        retries as f64
    );

    // Two rewrites of one cell from the same snapshot: the second is refused.
    let read = frame.ledger().refresh().await.unwrap();
    let victim = read.cells().next().unwrap().path.clone();
    let mut outcomes = vec![];
    for _ in 0..2 {
        let cells = frame
            .cell_writer(&read)
            .unwrap()
            .write_stream(one_id(-1))
            .await
            .unwrap();
        let action = apiary::catalog::Action::RewriteCells {
            removed: vec![victim.clone()],
            added: cells,
        };
        outcomes.push(frame.ledger().commit(&read, "COMPACT", action).await);
    }
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(apiary::catalog::CatalogError::Conflict(_))),
        "{:?}",
        outcomes[1]
    );
    run(&ap, &ctx, "SELECT * FROM apiary_compact('h.b.t')").await;
    run(
        &ap,
        &ctx,
        "SELECT * FROM apiary_cleanse('h.b.t', 0, false, true)",
    )
    .await;
    let upkept = scrape(addr).await;
    let moved = |m: &str| v(&upkept, m) - v(&raced, m);
    assert_eq!(moved("apiary_commit_conflicts_total"), 1.0);
    assert_eq!(moved("apiary_commit_lost_races_total"), 0.0);
    assert_eq!(moved("apiary_compactions_total"), 1.0);
    assert_eq!(moved("apiary_cleanses_total"), 1.0);
    assert_eq!(v(&upkept, "apiary_storage_errors_total"), 0.0);

    // A file where a partition's folder would go: the store cannot write the cell there.
    run(
        &ap,
        &ctx,
        "CREATE EXTERNAL TABLE h.b.p (id BIGINT NOT NULL, region VARCHAR NOT NULL) \
         STORED AS APIARY PARTITIONED BY (region) LOCATION ''",
    )
    .await;
    run(&ap, &ctx, "INSERT INTO h.b.p VALUES (1, 'fr')").await;
    let fr = find_dir(&dir.path().join("meadow"), "region=fr").expect("the 'fr' partition");
    std::fs::write(fr.with_file_name("region=xx"), b"not a folder").unwrap();
    assert!(fails(&ap, &ctx, "INSERT INTO h.b.p VALUES (2, 'xx')").await);
    let failed = scrape(addr).await;
    assert!(v(&failed, "apiary_storage_errors_total") >= 1.0);
    assert_eq!(
        crate::support::query(&ctx, "SELECT id, region FROM h.b.p").await,
        ["1|fr"]
    );
    // A scan that prunes its every cell counts them too (it plans no file scan at all).
    run(&ap, &ctx, "SELECT id FROM h.b.p WHERE region = 'zz'").await;
    let pruned_all = scrape(addr).await;
    let by_partition = |s| {
        value(
            s,
            "apiary_cells_pruned_total",
            &node,
            Some(("by", "partition")),
        )
    };
    assert_eq!(by_partition(&pruned_all) - by_partition(&failed), 1.0);
    // Idle: every bee's chamber holds nothing, the colony is cold.
    for bee in 0..ap.bees().bees() {
        let bee = bee.to_string();
        let held = failed.samples.iter().find(|s| {
            s.metric == "apiary_chamber_memory_reserved_bytes"
                && s.labels.get("node") == Some(node.as_str())
                && s.labels.get("bee") == Some(bee.as_str())
        });
        assert!(
            held.is_some_and(|s| s.value == prometheus_parse::Value::Gauge(0.0)),
            "{held:?}"
        );
    }
    assert_eq!(v(&failed, "apiary_temperature_band"), 0.0);
    server.stop().await;
}

/// The first folder named `name` below `root`.
fn find_dir(root: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
            if let Some(found) = find_dir(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// A query that needs several times its bee's budget spills, and the bytes are counted; one
/// that fits spills nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_bytes_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let bees = apiary::exec::NodeConfig::fixed(1, 32 << 20, dir.path().join("scratch"));
    let (ap, node, server) = labelled(dir.path(), Some(bees)).await;
    let addr = server.local_addr();
    let ctx = ap.session().unwrap();
    let spilled =
        |s: &prometheus_parse::Scrape| value(s, "apiary_spilled_bytes_total", &node, None);
    let before = scrape(addr).await;
    run(
        &ap,
        &ctx,
        "SELECT sum(value) FROM generate_series(1, 100000)",
    )
    .await;
    let small = scrape(addr).await;
    assert_eq!(spilled(&small), spilled(&before));
    // An 80,000-group aggregate over 32-character strings, sorted: about 120 MiB unconstrained.
    run(
        &ap,
        &ctx,
        "SELECT h, count(*) AS c, max(v) AS m FROM (SELECT md5(CAST(value % 80000 AS VARCHAR)) \
         AS h, value AS v FROM generate_series(1, 160000)) GROUP BY h ORDER BY h",
    )
    .await;
    let heavy = scrape(addr).await;
    assert!(
        spilled(&heavy) - spilled(&small) > (1 << 20) as f64,
        "{} bytes spilled",
        spilled(&heavy) - spilled(&small)
    );
    server.stop().await;
}

/// `apiary status --format json` prints the shape `/api/status` serves: the same sections, and
/// the same keys in its node, each swarm node and each frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_the_shape_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (ap, node, server) = labelled(dir.path(), None).await;
    let mut config = apiary::swarm::SwarmConfig::default()
        .with_heartbeat_interval(std::time::Duration::from_millis(200))
        .with_node_id(node.as_str());
    config.cache_bytes = 0;
    config.cache_dir = dir.path().join("cache");
    ap.join_swarm(config).await.unwrap();
    let ctx = ap.session().unwrap();
    small_frame(&ap, &ctx, "h", "(1), (2)").await;
    let served = api_status(server.local_addr()).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
        .arg("--storage")
        .arg(dir.path().join("meadow"))
        .args(["status", "--format", "json", "--watch-ms", "700"])
        .env_remove("APIARY_STORAGE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&printed), keys(&served));
    assert_eq!(keys(&printed["node"]), keys(&served["node"]));
    assert_eq!(keys(&printed["queries"]), keys(&served["queries"]));
    let ours = |v: &serde_json::Value| -> serde_json::Value {
        v["swarm"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{node} is not in {v}"))
    };
    let (printed_node, served_node) = (ours(&printed), ours(&served));
    assert_eq!(keys(&printed_node), keys(&served_node));
    assert_eq!(printed_node["state"], "alive", "{printed_node}");
    assert_eq!(printed_node["here"], true);
    assert_eq!(printed["frames"], served["frames"]);
    assert_eq!(printed["frames"][0]["frame"], "h.b.t");
    ap.leave_swarm().await.unwrap();
    server.stop().await;
}
