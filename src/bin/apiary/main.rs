//! The `apiary` command: datafusion-cli with Apiary's catalog, and the node's own tools.
//!
//! ```text
//! apiary [--storage URL] [-c SQL | -f FILE] [--format csv]   the SQL shell (datafusion-cli)
//! apiary import hive.box.frame FILE…                         load Parquet, CSV or NDJSON
//! apiary node                                                run a swarm member
//! apiary status [--format json]                              this node's bees and the swarm
//! apiary check [hive.box.frame]                              verify the meadow, or one frame
//! ```
//!
//! `--storage` (or `APIARY_STORAGE`) says where the Apiary lives: a folder, `file://…`,
//! `s3://bucket/prefix`, `memory://`; the default is `~/.apiary/default`.

mod check;
mod import;
mod node;
mod shell;
mod statements;
mod status;

use std::process::ExitCode;

use apiary::ApiaryOptions;
use apiary::exec::NodeConfig;
use apiary::exec::parse_bytes;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "apiary",
    version,
    about = "Apiary: a lakehouse for small compute — the SQL shell (datafusion-cli) and node tools"
)]
struct Cli {
    /// Where the Apiary lives: a folder, file://…, s3://bucket/prefix?endpoint=…, memory://
    /// [default: ~/.apiary/default]
    #[arg(long, env = "APIARY_STORAGE", global = true)]
    storage: Option<String>,

    #[command(flatten)]
    shell: shell::ShellArgs,

    #[command(flatten)]
    bees: BeeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load Parquet, CSV or NDJSON files into a frame: streamed, one commit.
    Import(import::ImportArgs),
    /// Run a swarm member: heartbeats, work on other nodes' query tasks, until SIGINT/SIGTERM.
    Node(node::NodeArgs),
    /// This node's bees and temperature, and the swarm's nodes.
    Status(status::StatusArgs),
    /// Verify the meadow (or one frame): ledgers contiguous and readable, protocols known, every
    /// cell of every readable version present; exits 1 naming each problem's object.
    Check(check::CheckArgs),
}

/// The node's resources, as datafusion-cli's memory flags and Apiary's bees. Unset, they come
/// from `NodeConfig::detect` (the machine, then the `APIARY_*` variables of `docs/bees.md`).
/// They are global: valid before or after the subcommand, and the same for every one.
#[derive(Args, Debug, Clone, Default)]
pub struct BeeArgs {
    /// Number of bees (one per core by default).
    #[arg(long, global = true)]
    bees: Option<usize>,
    /// Memory the bees share, e.g. 2G (default: 80 % of the node's). Each query runs within the
    /// budget of the bees it holds and spills beyond it.
    #[arg(
        short = 'm',
        long = "memory-limit",
        visible_alias = "memory",
        global = true
    )]
    memory_limit: Option<String>,
    /// Where bees spill (default: $TMPDIR/apiary-scratch).
    #[arg(long, global = true)]
    scratch: Option<std::path::PathBuf>,
    /// Spill space the bees share, e.g. 10G; a query holding k of n bees may fill k/n of it
    /// (default: DataFusion's limit for each query).
    #[arg(short = 'd', long = "disk-limit", global = true)]
    disk_limit: Option<String>,
    /// How a query's bees share their budget among its operators.
    #[arg(long = "mem-pool-type", value_parser = ["fair", "greedy"], global = true)]
    mem_pool_type: Option<String>,
}

/// The status server of this process (`/`, `/metrics`, `/api/status`; `docs/observability.md`).
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// Serve this node's status page, Prometheus metrics and JSON status on ADDR, e.g.
    /// 127.0.0.1:9464 (only that address is bound).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Leave the SQL text of queries out of the status page and its JSON.
    #[arg(long, requires = "http")]
    http_redact_sql: bool,
}

impl HttpArgs {
    /// With `--http`, the process's metrics recorder goes in first: what opening the meadow
    /// costs is counted too.
    pub fn install(&self) -> Result<(), Box<dyn std::error::Error>> {
        if self.http.is_some() {
            apiary::prometheus()?;
        }
        Ok(())
    }

    /// Starts the status server when `--http` was given; it serves until dropped.
    pub async fn serve(
        &self,
        ap: &apiary::Apiary,
    ) -> Result<Option<apiary::StatusServer>, Box<dyn std::error::Error>> {
        let Some(addr) = self.http else {
            return Ok(None);
        };
        let options = apiary::StatusOptions {
            redact_sql: self.http_redact_sql,
        };
        let server = ap.serve_status(addr, options).await?;
        eprintln!("status page: http://{}/", server.local_addr());
        Ok(Some(server))
    }
}

impl BeeArgs {
    pub fn node(&self) -> Result<NodeConfig, Box<dyn std::error::Error>> {
        let mut node = NodeConfig::detect()?;
        if let Some(bees) = self.bees {
            node.bees = bees;
        }
        if let Some(memory) = &self.memory_limit {
            node.memory = parse_bytes(memory).ok_or_else(|| {
                format!("--memory-limit {memory:?} is not a size like 2G or 512M")
            })?;
            node.memory_fraction = 1.0;
        }
        if let Some(scratch) = &self.scratch {
            node.scratch = scratch.clone();
        }
        if let Some(limit) = &self.disk_limit {
            node.scratch_limit =
                Some(parse_bytes(limit).ok_or_else(|| {
                    format!("--disk-limit {limit:?} is not a size like 10G or 512M")
                })?);
        }
        if let Some(kind) = &self.mem_pool_type {
            node.memory_pool = kind.parse()?;
        }
        node.validate()?;
        Ok(node)
    }

    pub fn options(&self) -> Result<ApiaryOptions, Box<dyn std::error::Error>> {
        Ok(ApiaryOptions {
            node: Some(self.node()?),
            ..ApiaryOptions::default()
        })
    }
}

fn default_storage() -> String {
    apiary::default_storage("default").unwrap_or_else(|| "apiary-data".into())
}

fn main() -> ExitCode {
    env_logger_init();
    let cli = Cli::parse();
    let storage = cli.storage.unwrap_or_else(default_storage);
    let runtime = match apiary::node_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            None => shell::run(&storage, cli.shell, &cli.bees).await,
            Some(Command::Import(args)) => import::run(&storage, args, &cli.bees).await,
            Some(Command::Node(args)) => node::run(&storage, args, &cli.bees).await,
            Some(Command::Status(args)) => status::run(&storage, args, &cli.bees).await,
            Some(Command::Check(args)) => check::run(&storage, args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings).
fn env_logger_init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}
