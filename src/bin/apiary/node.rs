//! `apiary node`: a swarm member that works other nodes' tasks until SIGINT or SIGTERM.

use std::time::Duration;

use apiary::Apiary;
use apiary::exec::parse_bytes;
use apiary::swarm::SwarmConfig;
use clap::Args;

use crate::{BeeArgs, HttpArgs};

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// This node's id (default: host-pid).
    #[arg(long)]
    node_id: Option<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Local cell cache folder (default: $TMPDIR/apiary-cell-cache).
    #[arg(long)]
    cache_dir: Option<std::path::PathBuf>,
    /// Local cell cache size, e.g. 2G (0 turns it off).
    #[arg(long, default_value = "2G")]
    cache_size: String,
    /// Keep finished query folders (for inspection).
    #[arg(long)]
    keep_queries: bool,
    /// Serve the direct path's worker on this address (e.g. 192.168.1.7:50051, or
    /// 127.0.0.1:0 for a free port); without it the node works through the meadow only.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Serve the direct path over TLS with this certificate (PEM; its chain), with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The swarm's CA certificate (PEM), which workers' certificates are checked against
    /// (default: --tls-cert, for a swarm that shares one certificate).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Replace the swarm token (`_swarm/secret.json`) with a new one and exit: requests with
    /// the old token are refused once the nodes have read the new one (seconds).
    #[arg(long)]
    rotate_secret: bool,
    /// Fault injection for tests: wait this long before running each task.
    #[arg(long, hide = true, default_value_t = 0)]
    debug_task_delay_ms: u64,
    /// Fault injection for tests: report a clock this far off in heartbeats and claims.
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    debug_clock_skew_ms: i64,
    #[command(flatten)]
    http: HttpArgs,
}

impl NodeArgs {
    fn swarm_config(&self) -> Result<SwarmConfig, Box<dyn std::error::Error>> {
        let mut config = SwarmConfig::default()
            .with_heartbeat_interval(Duration::from_millis(self.heartbeat_ms));
        if let Some(id) = &self.node_id {
            config = config.with_node_id(id);
        }
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = dir.clone();
        }
        config.cache_bytes = parse_bytes(&self.cache_size)
            .ok_or_else(|| format!("--cache-size {:?} is not a size like 2G", self.cache_size))?;
        config.keep_queries = self.keep_queries;
        config.listen = self.listen;
        if self.tls_cert.is_some() || self.tls_ca.is_some() {
            config.tls = Some(apiary::swarm::SwarmTls {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                ca: self.tls_ca.clone(),
            });
        }
        config.debug_task_delay = Duration::from_millis(self.debug_task_delay_ms);
        config.debug_clock_skew_ms = self.debug_clock_skew_ms;
        Ok(config)
    }
}

pub async fn run(
    storage: &str,
    args: NodeArgs,
    bees: &BeeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.swarm_config()?;
    if args.rotate_secret {
        let meadow = apiary::catalog::Meadow::open(storage).await?;
        apiary::swarm::SwarmToken::rotate(&meadow).await?;
        println!("the swarm token of {storage} is replaced");
        return Ok(());
    }
    args.http.install()?;
    let ap = Apiary::open_with(storage, bees.options()?).await?;
    // In place before the first heartbeat: a signal during the join still leaves the swarm.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    let swarm = ap.join_swarm(config).await?;
    let listening = match swarm.status().endpoint {
        Some(endpoint) => format!(", listening on {endpoint}"),
        None => String::new(),
    };
    println!(
        "node {} joined the swarm at {storage} with {} bees of {} MiB{listening}",
        swarm.id(),
        ap.bees().bees(),
        ap.bees().budget_per_bee() / (1024 * 1024)
    );
    let _status = args.http.serve(&ap).await?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    ap.leave_swarm().await?;
    println!("node {} left the swarm", swarm.id());
    Ok(())
}
