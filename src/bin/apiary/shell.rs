//! The SQL shell: datafusion-cli's REPL, `-c`, `-f`, output formats and backslash commands, on a
//! session of Apiary's bees with every hive registered as a catalog.

use std::path::Path;
use std::sync::Arc;

use apiary::Apiary;
use apiary::swarm::SwarmConfig;
use clap::Args;
use datafusion::common::config::{ConfigNonZeroUsize, ConfigOptions};
use datafusion::common::format::ExplainFormat;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::object_store::ObjectStore;
use datafusion::prelude::SessionContext;
use datafusion_cli::catalog::DynamicObjectStoreCatalog;
use datafusion_cli::cli_context::CliSessionContext;
use datafusion_cli::functions::ParquetMetadataFunc;
use datafusion_cli::object_storage::instrumented::{
    InstrumentedObjectStoreMode, InstrumentedObjectStoreRegistry,
};
use datafusion_cli::print_format::PrintFormat;
use datafusion_cli::print_options::{MaxRows, PrintOptions};

use crate::statements::{exec_commands, exec_files, exec_repl};
use crate::{BeeArgs, HttpArgs};

/// datafusion-cli's flags (those that make sense on Apiary), and the bees.
#[derive(Args, Debug)]
pub struct ShellArgs {
    /// Execute the given SQL and exit (repeatable).
    #[arg(short = 'c', long = "command", num_args = 0.., value_name = "SQL")]
    commands: Vec<String>,
    /// Execute the SQL of the given files and exit (repeatable).
    #[arg(short = 'f', long = "file", num_args = 0.., value_name = "FILE")]
    files: Vec<String>,
    /// Run these files before the REPL starts (default: ~/.apiaryrc when it exists).
    #[arg(short = 'r', long = "rc", num_args = 0..)]
    rc: Option<Vec<String>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PrintFormat::Automatic)]
    format: PrintFormat,
    /// Reduce printing other than the results.
    #[arg(short, long)]
    quiet: bool,
    /// Rows to show in interactive table output ("inf" for all).
    #[arg(long, default_value = "40")]
    maxrows: MaxRows,
    /// Color output.
    #[arg(long)]
    color: bool,
    /// Batch size of query execution.
    #[arg(short = 'b', long = "batch-size")]
    batch_size: Option<usize>,
    /// Object-store profiling (disabled, summary or trace), as `\object_store_profiling`.
    #[arg(long, default_value_t = InstrumentedObjectStoreMode::default())]
    object_store_profiling: InstrumentedObjectStoreMode,
    /// Join the swarm for the session: heartbeats, work other nodes' tasks, and spread this
    /// session's large scans over the swarm.
    #[arg(long)]
    swarm: bool,
    #[command(flatten)]
    http: HttpArgs,
}

pub async fn run(
    storage: &str,
    args: ShellArgs,
    bees: &BeeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    for file in &args.files {
        if !Path::new(file).is_file() {
            return Err(format!("-f {file}: no such file").into());
        }
    }
    let registry = Arc::new(
        InstrumentedObjectStoreRegistry::new().with_profile_mode(args.object_store_profiling),
    );
    args.http.install()?;
    let mut options = bees.options()?;
    options.object_store_registry = Some(Arc::clone(&registry) as _);
    let ap = Apiary::open_with(storage, options).await?;
    // SIGTERM or SIGHUP (a closed terminal) end the shell, and it leaves the swarm first: no
    // process that joined leaves its heartbeat behind. The handlers are in place before the
    // first heartbeat is written. (SIGINT cancels the running statement, as in datafusion-cli.)
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    if args.swarm {
        ap.join_swarm(SwarmConfig::default()).await?;
    }
    let _status = args.http.serve(&ap).await?;
    let outcome = tokio::select! {
        outcome = shell(&ap, storage, &args, registry) => outcome,
        _ = term.recv() => {
            ap.leave_swarm().await?;
            std::process::exit(143);
        }
        _ = hangup.recv() => {
            ap.leave_swarm().await?;
            std::process::exit(129);
        }
    };
    ap.leave_swarm().await?;
    outcome
}

async fn shell(
    ap: &Apiary,
    storage: &str,
    args: &ShellArgs,
    registry: Arc<InstrumentedObjectStoreRegistry>,
) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = ap.session()?;
    {
        // datafusion-cli's display defaults, unless the environment sets them.
        let state = ctx.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        let env = ConfigOptions::from_env()?;
        if std::env::var_os("DATAFUSION_EXPLAIN_FORMAT").is_none() {
            options.explain.format = ExplainFormat::Tree;
        } else {
            options.explain.format = env.explain.format.clone();
        }
        if std::env::var_os("DATAFUSION_FORMAT_NULL").is_none() {
            options.format.null = "NULL".into();
        }
        if let Some(size) = args.batch_size {
            options.execution.batch_size = ConfigNonZeroUsize::try_new(size)
                .map_err(|_| "--batch-size must be greater than 0")?;
        }
    }
    let ctx = ctx.enable_url_table();
    ctx.register_catalog_list(Arc::new(DynamicObjectStoreCatalog::new(
        Arc::clone(ctx.state().catalog_list()),
        ctx.state_weak_ref(),
    )));
    ctx.register_udtf("parquet_metadata", Arc::new(ParquetMetadataFunc {}));

    let mut print = PrintOptions {
        format: args.format,
        quiet: args.quiet,
        maxrows: args.maxrows,
        color: args.color,
        instrumented_registry: registry,
    };
    let ctx = ApiaryShell {
        ap: ap.clone(),
        ctx,
    };
    if !args.commands.is_empty() || !args.files.is_empty() {
        if !args.files.is_empty() {
            exec_files(&ctx, args.files.clone(), &print).await?;
        }
        if !args.commands.is_empty() {
            exec_commands(&ctx, args.commands.clone(), &print).await?;
        }
        return Ok(());
    }
    if !args.quiet {
        println!(
            "Apiary v{} (DataFusion CLI v{}) on {storage}: {} bees of {} MiB{}",
            env!("CARGO_PKG_VERSION"),
            datafusion_cli::DATAFUSION_CLI_VERSION,
            ap.bees().bees(),
            ap.bees().budget_per_bee() / (1024 * 1024),
            if ap.swarm().is_some() {
                ", in the swarm"
            } else {
                ""
            }
        );
    }
    let rc = match &args.rc {
        Some(files) => files.clone(),
        None => std::env::var("HOME")
            .map(|h| Path::new(&h).join(".apiaryrc"))
            .ok()
            .filter(|p| p.is_file())
            .map(|p| vec![p.to_string_lossy().into_owned()])
            .unwrap_or_default(),
    };
    if !rc.is_empty() {
        exec_files(&ctx, rc, &print).await?;
    }
    exec_repl(&ctx, &mut print).await?;
    Ok(())
}

/// datafusion-cli's session, with Apiary's statements (`Apiary::execute_logical_plan`): an atomic
/// `CREATE OR REPLACE` of a frame, `CREATE DATABASE` failing at once; the shell routes the
/// statements datafusion-cli cannot plan to `Apiary::sql` (`statements`).
pub struct ApiaryShell {
    pub ap: Apiary,
    pub ctx: SessionContext,
}

#[async_trait::async_trait]
impl CliSessionContext for ApiaryShell {
    fn task_ctx(&self) -> Arc<TaskContext> {
        self.ctx.task_ctx()
    }

    fn session_state(&self) -> SessionState {
        self.ctx.state()
    }

    fn register_object_store(
        &self,
        url: &url::Url,
        object_store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore + 'static>> {
        self.ctx.register_object_store(url, object_store)
    }

    fn register_table_options_extension_from_scheme(&self, scheme: &str) {
        CliSessionContext::register_table_options_extension_from_scheme(&self.ctx, scheme)
    }

    async fn execute_logical_plan(&self, plan: LogicalPlan) -> Result<DataFrame, DataFusionError> {
        Ok(self.ap.execute_logical_plan(&self.ctx, plan).await?)
    }
}
