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
use apiary::swarm::Heartbeat;
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
    heartbeat: Heartbeat,
    state: &'static str,
    /// How long its heartbeat was seen unchanged (the watch, for a silent one).
    unchanged: Duration,
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
    let watch = Duration::from_millis(args.watch_ms);
    tokio::time::sleep(watch).await;
    let mut nodes: Vec<Seen> = world
        .poll()
        .await?
        .into_iter()
        .map(|n| {
            let silent = first.get(&n.heartbeat.node_id) == Some(&n.heartbeat.seq);
            Seen {
                heartbeat: n.heartbeat,
                state: if silent { "silent" } else { "alive" },
                unchanged: if silent { watch } else { Duration::ZERO },
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.heartbeat.node_id.cmp(&b.heartbeat.node_id));

    match args.format {
        StatusFormat::Json => {
            // The status server's shape; `node` is what a node started here with these flags
            // would have, `swarm` the nodes as watched.
            let mut status = apiary::status_json(&ap, false);
            status["storage"] = json!(storage);
            status["swarm"] = nodes
                .iter()
                .map(|n| apiary::swarm_node_json(&n.heartbeat, n.state, n.unchanged))
                .collect();
            status["frames"] = apiary::frames_json(&ap).await;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        StatusFormat::Table => {
            println!("storage {storage}");
            let mine: Vec<&Seen> = nodes.iter().filter(|n| n.heartbeat.host == here).collect();
            if mine.is_empty() {
                println!(
                    "this machine ({here}): no node is running; one started here with these \
                     flags would have {} bees of {} MiB",
                    t.bees,
                    ap.bees().budget_per_bee() / (1024 * 1024),
                );
            }
            for n in mine {
                let (state, n) = (n.state, &n.heartbeat);
                println!(
                    "this machine ({here}): node {} {}: {} bees of {} MiB, {} busy, temperature \
                     {:.2} ({})",
                    n.node_id,
                    state,
                    n.bees,
                    n.budget_per_bee / (1024 * 1024),
                    n.busy_bees,
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
                ("node", strings(&|n| n.heartbeat.node_id.clone())),
                ("state", strings(&|n| n.state.to_string())),
                ("bees", numbers(&|n| n.heartbeat.bees as u64)),
                ("busy", numbers(&|n| n.heartbeat.busy_bees as u64)),
                (
                    "temperature",
                    Arc::new(Float64Array::from(
                        nodes
                            .iter()
                            .map(|n| n.heartbeat.temperature)
                            .collect::<Vec<_>>(),
                    )) as ArrayRef,
                ),
                ("band", strings(&|n| n.heartbeat.band.to_string())),
                ("cached_cells", numbers(&|n| n.heartbeat.cache_cells as u64)),
                ("cache_mib", numbers(&|n| n.heartbeat.cache_bytes >> 20)),
            ])?;
            println!("{}", pretty_format_batches(&[batch])?);
        }
    }
    Ok(())
}
