//! The status server: `/metrics` read by a Prometheus text-format parser as queries and commits
//! run, `/api/status`, and nothing served but its routes.

use std::net::SocketAddr;

use apiary::{Apiary, StatusOptions};

use crate::support::http_get;

/// `/metrics`, parsed.
async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The sum of the samples of `metric` labelled `node` (and `label`, when given).
fn value(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_queries_and_commits_run_labelled_by_node() {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("a").to_str().unwrap())
        .await
        .unwrap();
    let node = format!("status-{}", uuid::Uuid::new_v4().simple());
    ap.meadow().sight().set_node(node.as_str());
    let server = ap
        .serve_status("127.0.0.1:0".parse().unwrap(), StatusOptions::default())
        .await
        .unwrap();
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
    let failed = ap
        .sql(&ctx, "SELECT CAST(region AS INT) FROM h.b.t")
        .await
        .unwrap()
        .collect()
        .await;
    assert!(failed.is_err());
    for sql in [
        "CREATE DATABASE o",
        "CREATE SCHEMA o.b",
        "CREATE TABLE o.b.t (id BIGINT)",
        "INSERT INTO o.b.t VALUES (1)",
    ] {
        run(&other, &other_ctx, sql).await;
    }
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
    let puts = |s| {
        value(
            s,
            "apiary_storage_calls_total",
            &node,
            Some(("kind", "put")),
        )
    };
    assert!(
        puts(&after) > puts(&before),
        "the cells and the ledger entry"
    );
    let latency = |s| {
        value(
            s,
            "apiary_storage_call_seconds",
            &node,
            Some(("kind", "put")),
        )
    };
    assert_eq!(
        latency(&after) - latency(&before),
        puts(&after) - puts(&before)
    );
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
    let recent = status["queries"]["recent"].as_array().unwrap();
    assert_eq!(recent[0]["outcome"], "failed", "{recent:?}");
    assert!(
        recent[0]["error"].as_str().unwrap().contains("Cannot cast"),
        "{recent:?}"
    );
    assert_eq!(recent[1]["sql"], "SELECT id FROM h.b.t WHERE region = 'fr'");
    assert_eq!(recent[1]["outcome"], "finished");
    assert_eq!(recent[1]["rows"], 2);
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
}
