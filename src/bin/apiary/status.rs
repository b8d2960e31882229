//! `apiary status`: the nodes running on this machine, and the swarm, as their heartbeats show
//! them (with no node running here: what one started with these flags would have).
//!
//! Liveness is judged like the swarm judges it — by whether a heartbeat changes on this
//! process's own clock — so the command watches the heartbeats for a moment (`--watch-ms`, a
//! little more than the default heartbeat interval) before it answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apiary::Apiary;
use apiary::swarm::{SwarmConfig, WorldView};
use clap::{Args, ValueEnum};
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde_json::json;

use crate::BeeArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    format: StatusFormat,
    /// How long to watch heartbeats before judging who is alive.
    #[arg(long, default_value_t = 2500)]
    watch_ms: u64,
}

/// One node of the swarm as seen over the watch.
struct Seen {
    node: String,
    host: String,
    budget_per_bee: u64,
    state: &'static str,
    bees: usize,
    busy: usize,
    temperature: f64,
    band: String,
    cached_cells: usize,
    cache_bytes: u64,
    /// The node's own clock minus ours at its last beat (informative: clocks may differ).
    age_ms: i64,
}

pub async fn run(
    storage: &str,
    args: StatusArgs,
    bees: &BeeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let ap = Apiary::open_with(storage, bees.options()?).await?;
    let t = ap.colony().temperature();
    let here = apiary::catalog::sight::host();
    let world = WorldView::new(ap.meadow().clone(), SwarmConfig::default());
    let first: HashMap<String, u64> = world
        .poll()
        .await?
        .into_iter()
        .map(|n| (n.heartbeat.node_id, n.heartbeat.seq))
        .collect();
    tokio::time::sleep(Duration::from_millis(args.watch_ms)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut nodes: Vec<Seen> = world
        .poll()
        .await?
        .into_iter()
        .map(|n| {
            let h = n.heartbeat;
            let state = match first.get(&h.node_id) {
                Some(seq) if *seq == h.seq => "silent",
                _ => "alive",
            };
            Seen {
                state,
                host: h.host,
                budget_per_bee: h.budget_per_bee,
                bees: h.bees,
                busy: h.busy_bees,
                temperature: h.temperature,
                band: h.band.to_string(),
                cached_cells: h.cache_cells,
                cache_bytes: h.cache_bytes,
                age_ms: now - h.clock_ms,
                node: h.node_id,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));

    match args.format {
        StatusFormat::Json => {
            let swarm: Vec<_> = nodes
                .iter()
                .map(|n| {
                    json!({
                        "node": n.node, "host": n.host, "here": n.host == here,
                        "state": n.state, "bees": n.bees, "busy_bees": n.busy,
                        "budget_per_bee": n.budget_per_bee,
                        "temperature": n.temperature, "band": n.band,
                        "cached_cells": n.cached_cells, "cache_bytes": n.cache_bytes,
                        "heartbeat_age_ms": n.age_ms,
                    })
                })
                .collect();
            let status = json!({
                "storage": storage,
                "host": here,
                // What a node started here with these flags would have.
                "node": {
                    "bees": t.bees, "busy_bees": t.busy_bees,
                    "budget_per_bee": ap.bees().budget_per_bee(),
                    "temperature": t.value, "band": t.band.to_string(),
                    "scratch": ap.bees().scratch().display().to_string(),
                },
                "swarm": swarm,
            });
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        StatusFormat::Table => {
            println!("storage {storage}");
            let mine: Vec<&Seen> = nodes.iter().filter(|n| n.host == here).collect();
            if mine.is_empty() {
                println!(
                    "this machine ({here}): no node is running; one started here with these \
                     flags would have {} bees of {} MiB",
                    t.bees,
                    ap.bees().budget_per_bee() / (1024 * 1024),
                );
            }
            for n in mine {
                println!(
                    "this machine ({here}): node {} {}: {} bees of {} MiB, {} busy, temperature \
                     {:.2} ({})",
                    n.node,
                    n.state,
                    n.bees,
                    n.budget_per_bee / (1024 * 1024),
                    n.busy,
                    n.temperature,
                    n.band
                );
            }
            if nodes.is_empty() {
                println!("swarm: no node is heartbeating in this meadow");
                return Ok(());
            }
            let strings = |f: &dyn Fn(&Seen) -> String| -> ArrayRef {
                Arc::new(StringArray::from(nodes.iter().map(f).collect::<Vec<_>>()))
            };
            let numbers = |f: &dyn Fn(&Seen) -> u64| -> ArrayRef {
                Arc::new(UInt64Array::from(nodes.iter().map(f).collect::<Vec<_>>()))
            };
            let batch = RecordBatch::try_from_iter([
                ("node", strings(&|n| n.node.clone())),
                ("state", strings(&|n| n.state.to_string())),
                ("bees", numbers(&|n| n.bees as u64)),
                ("busy", numbers(&|n| n.busy as u64)),
                (
                    "temperature",
                    Arc::new(Float64Array::from(
                        nodes.iter().map(|n| n.temperature).collect::<Vec<_>>(),
                    )) as ArrayRef,
                ),
                ("band", strings(&|n| n.band.clone())),
                ("cached_cells", numbers(&|n| n.cached_cells as u64)),
                ("cache_mib", numbers(&|n| n.cache_bytes >> 20)),
            ])?;
            println!("{}", pretty_format_batches(&[batch])?);
        }
    }
    Ok(())
}
