//! The `apiary` command.
//!
//! ```text
//! apiary node --storage URL     run a swarm member until SIGINT/SIGTERM
//! ```

use std::time::Duration;

use apiary::exec::NodeConfig;
use apiary::exec::node::parse_bytes;
use apiary::swarm::SwarmConfig;
use apiary::{Apiary, ApiaryOptions};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "apiary",
    version,
    about = "Apiary: a lakehouse for small compute"
)]
struct Cli {
    /// Where the Apiary lives: a folder, file://…, s3://bucket/prefix, memory://
    #[arg(long, env = "APIARY_STORAGE", global = true)]
    storage: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a swarm member: heartbeats, work on other nodes' query tasks, until SIGINT/SIGTERM.
    Node(NodeArgs),
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// This node's id (default: host-pid).
    #[arg(long)]
    node_id: Option<String>,
    /// Number of bees (default: the cores).
    #[arg(long)]
    bees: Option<usize>,
    /// Memory the bees may use in all (e.g. 2G; default: 80 % of the node's).
    #[arg(long)]
    memory: Option<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Local cell cache folder and size.
    #[arg(long)]
    cache_dir: Option<std::path::PathBuf>,
    #[arg(long)]
    cache_size: Option<String>,
    /// Keep finished query folders (for inspection).
    #[arg(long)]
    keep_queries: bool,
    /// Fault injection for tests: wait this long before running each task.
    #[arg(long, hide = true, default_value_t = 0)]
    debug_task_delay_ms: u64,
    /// Fault injection for tests: report a clock this far off in heartbeats and claims.
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    debug_clock_skew_ms: i64,
}

fn default_storage() -> String {
    std::env::var("HOME")
        .map(|h| format!("{h}/.apiary/default"))
        .unwrap_or_else(|_| "apiary-data".into())
}

async fn node(storage: &str, args: NodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut node = NodeConfig::detect()?;
    if let Some(bees) = args.bees {
        node.bees = bees;
    }
    if let Some(memory) = &args.memory {
        node.memory = parse_bytes(memory)
            .ok_or_else(|| format!("--memory {memory:?} is not a size like 2G"))?;
        node.memory_fraction = 1.0;
    }
    node.validate()?;
    let ap = Apiary::open_with(
        storage,
        ApiaryOptions {
            node: Some(node),
            ..ApiaryOptions::default()
        },
    )
    .await?;
    let mut config =
        SwarmConfig::default().with_heartbeat_interval(Duration::from_millis(args.heartbeat_ms));
    if let Some(id) = args.node_id {
        config = config.with_node_id(id);
    }
    if let Some(dir) = args.cache_dir {
        config.cache_dir = dir;
    }
    if let Some(size) = &args.cache_size {
        config.cache_bytes = parse_bytes(size)
            .ok_or_else(|| format!("--cache-size {size:?} is not a size like 2G"))?;
    }
    config.keep_queries = args.keep_queries;
    config.debug_task_delay = Duration::from_millis(args.debug_task_delay_ms);
    config.debug_clock_skew_ms = args.debug_clock_skew_ms;
    let swarm = ap.join_swarm(config).await?;
    println!(
        "node {} joined the swarm at {storage} with {} bees of {} MiB",
        swarm.id(),
        ap.bees().bees(),
        ap.bees().budget_per_bee() / (1024 * 1024)
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ap.leave_swarm().await?;
    println!("node {} left the swarm", swarm.id());
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let storage = cli.storage.unwrap_or_else(default_storage);
    let outcome = match cli.command {
        Some(Command::Node(args)) => node(&storage, args).await,
        None => {
            Err("usage: apiary node --storage URL (the SQL shell comes with the CLI issue)".into())
        }
    };
    if let Err(e) = outcome {
        eprintln!("apiary: {e}");
        std::process::exit(1);
    }
}
