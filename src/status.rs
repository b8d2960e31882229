//! The status server: what a node shows of itself over HTTP, with axum.
//!
//! - `/metrics`: the Prometheus text of this process's recorder ([`apiary_catalog::sight`]
//!   names every metric; each carries a `node` label);
//! - `/api/status`: this node, the swarm as its world view judges it, its running and recent
//!   queries, and the frames of the meadow, as JSON;
//! - `/`: one page (inline CSS and JS, no other asset) that shows `/api/status` and refreshes
//!   itself.
//!
//! It binds only the address it is given, answers nothing but these three routes (404 else),
//! and can hide query text (`StatusOptions::redact_sql`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use apiary_catalog::sight;
use apiary_swarm::Heartbeat;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::{Apiary, ApiaryError, Result};

/// How the status server shows this node.
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// Leave the SQL text of queries out of the page and its JSON.
    pub redact_sql: bool,
}

/// A running status server; dropping it (or [`StatusServer::stop`]) stops it.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// The address it listens on (the port chosen, when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until the server has let go of its address: open requests get
    /// a second to finish (a browser's idle keep-alive connection does not hold it longer).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// This process's Prometheus recorder, installed on first use (one per process: the `node`
/// label keeps nodes apart).
pub fn prometheus() -> Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    static INSTALLING: Mutex<()> = Mutex::new(());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let _installing = INSTALLING.lock();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(sight::STORAGE_SECONDS.to_string()),
            sight::STORAGE_SECONDS_BUCKETS,
        )
        .map_err(|e| ApiaryError::Status(format!("histogram buckets: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| {
        ApiaryError::Status(
            "another metrics recorder is installed in this process; Apiary's status server \
             needs its own Prometheus recorder"
                .into(),
        )
    })?;
    sight::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[derive(Clone)]
struct Served {
    ap: Apiary,
    options: StatusOptions,
    prometheus: PrometheusHandle,
    /// The frames section, remade at most every few seconds (it reads each frame's ledger).
    frames: Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>,
}

/// How long the frames section of `/api/status` is reused.
const FRAMES_FOR: Duration = Duration::from_secs(5);

impl Apiary {
    /// Serves this node's status on `addr` (advice: `127.0.0.1:PORT`; port 0 picks one), on
    /// the current tokio runtime, until the returned server is dropped or stopped.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use apiary::{Apiary, StatusOptions};
    ///
    /// let ap = Apiary::open("memory://").await?;
    /// let server = ap.serve_status("127.0.0.1:0".parse()?, StatusOptions::default()).await?;
    /// println!("status page: http://{}/", server.local_addr()); // also /metrics, /api/status
    /// server.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn serve_status(
        &self,
        addr: SocketAddr,
        options: StatusOptions,
    ) -> Result<StatusServer> {
        let prometheus = prometheus()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ApiaryError::Status(format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ApiaryError::Status(format!("cannot listen on {addr}: {e}")))?;
        let served = Served {
            ap: self.clone(),
            options,
            prometheus: prometheus.clone(),
            frames: Arc::default(),
        };
        let app = Router::new()
            .route("/", get(page))
            .route("/metrics", get(metrics_text))
            .route("/api/status", get(api_status))
            .with_state(served);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Histogram samples wait in the recorder until a render or an upkeep drains them.
            let upkeep = async {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    prometheus.run_upkeep();
                }
            };
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            tokio::select! {
                served = serve => {
                    if let Err(e) = served {
                        log::warn!("status server on {addr} stopped: {e}");
                    }
                }
                _ = upkeep => {}
            }
        });
        Ok(StatusServer {
            addr,
            shutdown: Some(tx),
            task,
        })
    }
}

/// The gauges are read when asked for, not kept up to date between scrapes.
fn set_gauges(ap: &Apiary) {
    let t = ap.colony().temperature();
    let sight = ap.meadow().sight();
    sight.set(sight::BEES, t.bees as f64);
    sight.set(sight::BEES_BUSY, t.busy_bees as f64);
    sight.set(sight::MEMORY_RESERVED, t.reserved as f64);
    sight.set(sight::MEMORY_BUDGET, t.budget as f64);
    sight.set(sight::TEMPERATURE, t.value);
    sight.set(sight::BAND, t.band as u8 as f64);
    if let Some(node) = ap.swarm() {
        let cache = node.cache().status();
        sight.total(sight::CACHE_HITS, cache.hits);
        sight.total(sight::CACHE_MISSES, cache.misses);
        sight.set(sight::CACHE_BYTES, cache.bytes as f64);
        sight.total(sight::CACHE_BYTES_READ, cache.bytes_read);
    }
    for (bee, bytes) in ap.bees().reserved_by_bee().into_iter().enumerate() {
        sight.set_by(
            sight::CHAMBER_MEMORY_RESERVED,
            "bee",
            bee.to_string(),
            bytes as f64,
        );
    }
}

async fn metrics_text(State(s): State<Served>) -> impl IntoResponse {
    set_gauges(&s.ap);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.prometheus.render(),
    )
}

async fn api_status(State(s): State<Served>) -> Json<Value> {
    set_gauges(&s.ap);
    let mut status = status_json(&s.ap, s.options.redact_sql);
    status["frames"] = cached_frames_json(&s).await;
    Json(status)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// This node, its swarm and its queries: `/api/status` and `apiary status --format json` (each
/// adds `frames`, from [`frames_json`]; the command puts its watched view of the swarm in
/// `swarm`).
pub fn status_json(ap: &Apiary, redact_sql: bool) -> Value {
    let t = ap.colony().temperature();
    let bees = ap.bees();
    let swarm = ap.swarm();
    let node_id = match &swarm {
        Some(node) => node.id().to_string(),
        None => ap.meadow().sight().node().to_string(),
    };
    let nodes: Vec<Value> = match &swarm {
        Some(node) => node
            .world()
            .nodes()
            .into_iter()
            .map(|n| swarm_node_json(&n.heartbeat, &n.state.to_string(), n.unchanged_for))
            .collect(),
        None => vec![],
    };
    let (running, recent) = bees.queries().snapshot();
    let query = |q: &apiary_exec::QueryRecord| {
        json!({
            "id": q.id,
            "sql": if redact_sql { None } else { q.sql.clone() },
            "started_ms": q.started_ms, "duration_ms": q.duration_ms, "rows": q.rows,
            "outcome": q.outcome.as_str(), "error": q.error,
            "path": if q.shape.swarm { "swarm" } else { "local" },
            "cells_total": q.shape.cells_total, "cells_pruned": q.shape.cells_pruned,
        })
    };
    json!({
        "storage": ap.meadow().url(),
        "host": sight::host(),
        "node": {
            "id": node_id, "in_swarm": swarm.is_some(),
            "bees": t.bees, "busy_bees": t.busy_bees,
            "budget_per_bee": bees.budget_per_bee(),
            "memory_reserved": t.reserved, "memory_budget": t.budget,
            "temperature": t.value, "band": t.band.to_string(),
            "scratch": bees.scratch().display().to_string(),
            "each_bee": bees.busy_bees().into_iter().zip(bees.reserved_by_bee()).enumerate()
                .map(|(bee, (busy, reserved))| json!({
                    "bee": bee, "state": if busy { "busy" } else { "idle" },
                    "memory_reserved": reserved,
                })).collect::<Vec<_>>(),
        },
        "swarm": nodes,
        "queries": {
            "running": running.iter().map(query).collect::<Vec<_>>(),
            "recent": recent.iter().map(query).collect::<Vec<_>>(),
        },
    })
}

/// One node of the swarm as its heartbeat shows it, judged `state` after its heartbeat stayed
/// the same for `unchanged`.
pub fn swarm_node_json(h: &Heartbeat, state: &str, unchanged: Duration) -> Value {
    json!({
        "node": h.node_id, "host": h.host, "here": h.host == sight::host(),
        "state": state, "bees": h.bees, "busy_bees": h.busy_bees,
        "budget_per_bee": h.budget_per_bee, "temperature": h.temperature,
        "band": h.band.to_string(), "cached_cells": h.cache_cells,
        "cache_bytes": h.cache_bytes,
        // The node's own clock against ours (informative: clocks may differ).
        "heartbeat_age_ms": chrono_now_ms() - h.clock_ms,
        "unchanged_ms": unchanged.as_millis() as u64,
    })
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Hives, boxes and frames with their newest version, cells, rows and bytes.
async fn cached_frames_json(s: &Served) -> Value {
    let mut cached = s.frames.lock().await;
    if let Some((at, frames)) = cached.as_ref()
        && at.elapsed() < FRAMES_FOR
    {
        return frames.clone();
    }
    let frames = frames_json(&s.ap).await;
    *cached = Some((Instant::now(), frames.clone()));
    frames
}

/// Hives, boxes and frames with their newest version, cells, rows and bytes.
pub async fn frames_json(ap: &Apiary) -> Value {
    let providers = ap.providers();
    let state = match providers.registry().refresh().await {
        Ok(state) => state,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let mut frames = vec![];
    for (hive, h) in &state.hives {
        for (box_, b) in &h.boxes {
            for frame in b.frames.keys() {
                let name = format!("{hive}.{box_}.{frame}");
                let entry = match providers.frame(hive, box_, frame).await {
                    Ok(Some(f)) => {
                        let snap = f.ledger().latest();
                        json!({
                            "frame": name, "version": snap.version, "cells": snap.cell_count(),
                            "rows": snap.row_count(), "bytes": snap.total_bytes(),
                        })
                    }
                    Ok(None) => continue,
                    Err(e) => json!({ "frame": name, "error": e.to_string() }),
                };
                frames.push(entry);
            }
        }
    }
    Value::Array(frames)
}
