//! Helpers: opening Apiary on each backend, running SQL, rendering rows.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::Apiary;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

pub use apiary_catalog::testing::Backend;

pub async fn open(url: &str) -> Apiary {
    Apiary::open(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Apiary on `url`, and a session of it.
pub async fn session(url: &str) -> (Apiary, SessionContext) {
    let ap = open(url).await;
    let ctx = ap.session().unwrap();
    (ap, ctx)
}

/// Apiary on a fresh local folder, and a session of it; the folder goes when the first drops.
pub async fn folder_session() -> (tempfile::TempDir, Apiary, SessionContext) {
    let dir = tempfile::tempdir().unwrap();
    let (ap, ctx) = session(dir.path().to_str().unwrap()).await;
    (dir, ap, ctx)
}

/// [`session`], with hive `h` and its box `h.b` created.
pub async fn with_box(url: &str) -> (Apiary, SessionContext) {
    let (ap, ctx) = session(url).await;
    hive_box(&ctx).await;
    (ap, ctx)
}

/// [`with_box`], with frame `h.b.t ({columns})` partitioned by its column `k`, and each of
/// `inserts` run.
pub async fn frame_by_k(url: &str, columns: &str, inserts: &[&str]) -> (Apiary, SessionContext) {
    let (ap, ctx) = with_box(url).await;
    let create = format!(
        "CREATE EXTERNAL TABLE h.b.t ({columns}) STORED AS APIARY PARTITIONED BY (k) LOCATION ''"
    );
    sql(&ctx, &create).await;
    sql_all(&ctx, inserts).await;
    (ap, ctx)
}

/// Runs `sql` and collects its rows; panics naming the statement on error.
pub async fn sql(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    match ctx.sql(sql).await {
        Ok(df) => df
            .collect()
            .await
            .unwrap_or_else(|e| panic!("executing {sql}: {e}")),
        Err(e) => panic!("planning {sql}: {e}"),
    }
}

/// Runs `sql`, expecting an error; returns its text.
pub async fn sql_err(ctx: &SessionContext, sql: &str) -> String {
    let result = match ctx.sql(sql).await {
        Ok(df) => df.collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => panic!("expected an error from {sql}"),
        Err(e) => e.to_string(),
    }
}

/// Runs each of `statements` in turn with [`sql`].
pub async fn sql_all(ctx: &SessionContext, statements: &[&str]) {
    for statement in statements {
        sql(ctx, statement).await;
    }
}

/// The physical plan of `q` in `ctx`.
pub async fn physical_plan(ctx: &SessionContext, q: &str) -> Arc<dyn ExecutionPlan> {
    let df = ctx
        .sql(q)
        .await
        .unwrap_or_else(|e| panic!("planning {q}: {e}"));
    df.create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("planning {q}: {e}"))
}

/// Creates hive `h` and its box `h.b`.
pub async fn hive_box(ctx: &SessionContext) {
    sql(ctx, "CREATE DATABASE h").await;
    sql(ctx, "CREATE SCHEMA h.b").await;
}

/// Runs `sql` through Apiary's door (`Apiary::sql`: `USE`, `ALTER TABLE`, …) and renders its rows.
pub async fn door(ap: &Apiary, ctx: &SessionContext, sql: &str) -> Vec<String> {
    let df = ap
        .sql(ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("planning {sql}: {e}"));
    rows(
        &df.collect()
            .await
            .unwrap_or_else(|e| panic!("executing {sql}: {e}")),
    )
}

/// [`door`], expecting an error; returns its text.
pub async fn door_err(ap: &Apiary, ctx: &SessionContext, sql: &str) -> String {
    match ap.sql(ctx, sql).await {
        Ok(df) => match df.collect().await {
            Ok(_) => panic!("expected an error from {sql}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

/// Every row as `v1|v2|…` (NULL as `NULL`), in order.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = vec![];
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

/// The rows of `sql`.
pub async fn query(ctx: &SessionContext, q: &str) -> Vec<String> {
    rows(&sql(ctx, q).await)
}

/// The single value of a one-row, one-column query.
pub async fn scalar(ctx: &SessionContext, q: &str) -> String {
    let r = query(ctx, q).await;
    assert_eq!(r.len(), 1, "{q}: {r:?}");
    r[0].clone()
}

/// Asserts the single value of each `(query, value)`; `context` leads the message.
pub async fn assert_scalars(
    ctx: &SessionContext,
    context: impl std::fmt::Display,
    expected: &[(&str, &str)],
) {
    for (q, value) in expected {
        assert_eq!(scalar(ctx, q).await, *value, "{context}: {q}");
    }
}

/// The text of `EXPLAIN ANALYZE sql` (or `EXPLAIN sql`).
pub async fn plan(ctx: &SessionContext, explain: &str) -> String {
    rows(&sql(ctx, explain).await).join("\n")
}

/// A metric of the DataSourceExec in an EXPLAIN ANALYZE text, e.g. `cells_scanned`.
pub fn metric(plan: &str, name: &str) -> usize {
    let key = format!("{name}=");
    let start = plan
        .find(&key)
        .unwrap_or_else(|| panic!("no metric {name} in\n{plan}"))
        + key.len();
    plan[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// [`metric`] of each of `names`, in order.
pub fn metrics<const N: usize>(plan: &str, names: [&str; N]) -> [usize; N] {
    names.map(|name| metric(plan, name))
}

/// The sum of a metric over every operator of an EXPLAIN ANALYZE text (0 when none has it).
pub fn metric_sum(plan: &str, name: &str) -> u64 {
    plan.split(&format!("{name}="))
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// Tries `attempt` every `every_ms` milliseconds until it gives a value, and returns that; fails
/// with the reason of its last try once `limit_s` seconds have passed.
pub async fn until<T>(
    limit_s: u64,
    every_ms: u64,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(why) => assert!(start.elapsed() < Duration::from_secs(limit_s), "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
}

// The `apiary` command as a separate process.

/// Runs `apiary --storage STORAGE ARGS…`, STORAGE a folder or a storage URL.
pub fn apiary(storage: impl AsRef<OsStr>, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .arg("--storage")
        .arg(storage)
        .args(args)
        .env_remove("APIARY_STORAGE")
        .output()
        .expect("run apiary")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The output of `apiary --storage STORAGE -q --format csv ARGS…`, which must succeed.
pub fn csv_out(storage: impl AsRef<OsStr>, args: &[&str]) -> String {
    ok(&apiary(
        storage,
        &[&["-q", "--format", "csv"], args].concat(),
    ))
}

/// The CSV lines of `-q --format csv -c SQL` output.
pub fn csv(storage: impl AsRef<OsStr>, sql: &str) -> Vec<String> {
    csv_out(storage, &["-c", sql])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The Parquet files below `dir`.
pub fn parquet_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += parquet_files(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            n += 1;
        }
    }
    n
}

/// `GET path` from an HTTP/1.1 server on `addr`: its status code and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}
