//! `apiary import hive.box.frame FILE…`: Parquet, CSV or NDJSON files into a frame.
//!
//! The files are read by DataFusion's own readers and streamed through an `INSERT INTO … SELECT`
//! on the bees — batch by batch, never a whole file in memory — so the frame's sink cuts cells as
//! rows arrive, and the import is one commit: all of it lands, or nothing does. The usual INSERT
//! rules apply: columns by position, cast to the frame's types, NOT NULL checked.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apiary::Apiary;
use apiary::catalog::{FrameSpec, IfExists};
use apiary::exec::ChamberExec;
use clap::{Args, ValueEnum};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::TableReference;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{
    CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionContext,
};
use futures::StreamExt;

use crate::BeeArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileKind {
    Parquet,
    Csv,
    #[value(alias = "json", alias = "jsonl")]
    Ndjson,
}

impl FileKind {
    fn of(file: &str) -> Option<FileKind> {
        let ext = Path::new(file).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "parq" => Some(FileKind::Parquet),
            "csv" => Some(FileKind::Csv),
            "json" | "ndjson" | "jsonl" => Some(FileKind::Ndjson),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The frame: hive.box.frame.
    target: String,
    /// The files (local paths or object-store URLs), all of one kind.
    #[arg(required = true)]
    files: Vec<String>,
    /// The files' kind (default: from their extension).
    #[arg(long, value_enum)]
    kind: Option<FileKind>,
    /// Create the frame (and its hive and box) from the files' schema when it does not exist.
    #[arg(long)]
    create: bool,
    /// With --create: the frame's partition columns.
    #[arg(long, value_delimiter = ',')]
    partition_by: Vec<String>,
    /// CSV files have no header row.
    #[arg(long)]
    no_header: bool,
    /// CSV field delimiter.
    #[arg(long, default_value_t = ',')]
    delimiter: char,
    /// No progress and no summary.
    #[arg(short, long)]
    quiet: bool,
}

/// hive.box.frame, split.
struct Target {
    hive: String,
    box_: String,
    frame: String,
}

impl Target {
    fn parse(s: &str) -> Result<Target, String> {
        match s.split('.').collect::<Vec<_>>()[..] {
            [h, b, f] if !h.is_empty() && !b.is_empty() && !f.is_empty() => Ok(Target {
                hive: h.into(),
                box_: b.into(),
                frame: f.into(),
            }),
            _ => Err(format!("the frame must be named hive.box.frame, got {s:?}")),
        }
    }

    fn sql(&self) -> String {
        format!(
            "{}.{}.{}",
            quote(&self.hive),
            quote(&self.box_),
            quote(&self.frame)
        )
    }

    fn reference(&self) -> TableReference {
        TableReference::full(self.hive.as_str(), self.box_.as_str(), self.frame.as_str())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.hive, self.box_, self.frame)
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The INSERT: columns matched by name (a nullable column the files lack is left NULL), or by
/// position for CSV files without a header.
fn insert_sql(
    target: &Target,
    frame: &SchemaRef,
    source: &SchemaRef,
    by_position: bool,
) -> Result<String, String> {
    if by_position {
        return Ok(format!(
            "INSERT INTO {} SELECT * FROM apiary_import_source",
            target.sql()
        ));
    }
    let unexpected: Vec<&str> = source
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| frame.field_with_name(name).is_err())
        .collect();
    if !unexpected.is_empty() {
        let columns: Vec<&str> = frame.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(format!(
            "frame {target} has no column {} (its columns: {})",
            unexpected.join(", "),
            columns.join(", ")
        ));
    }
    let columns: Vec<String> = source.fields().iter().map(|f| quote(f.name())).collect();
    let columns = columns.join(", ");
    Ok(format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM apiary_import_source",
        target.sql()
    ))
}

/// Rows and Arrow bytes that went through so far.
#[derive(Debug, Default)]
struct Progress {
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    fn line(&self, elapsed: Duration) -> String {
        let rows = self.rows.load(Ordering::Relaxed);
        let mib = self.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
        let secs = elapsed.as_secs_f64().max(1e-3);
        format!(
            "{rows} rows, {mib:.1} MiB in {secs:.1} s ({:.0} rows/s, {:.1} MiB/s)",
            rows as f64 / secs,
            mib / secs
        )
    }
}

/// The source plan, executed once inside the INSERT, counting what passes.
#[derive(Debug)]
struct CountedSource {
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    progress: Arc<Progress>,
}

impl PartitionStream for CountedSource {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let progress = Arc::clone(&self.progress);
        let stream = futures::stream::once(std::future::ready(execute_stream(
            Arc::clone(&self.plan),
            ctx,
        )))
        .flat_map(|s| match s {
            Ok(s) => s.boxed(),
            Err(e) => futures::stream::once(std::future::ready(Err(e))).boxed(),
        })
        .inspect(move |batch| {
            if let Ok(batch) = batch {
                progress
                    .rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                progress
                    .bytes
                    .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}

async fn read(ctx: &SessionContext, args: &ImportArgs) -> Result<DataFrame, String> {
    let kind = match args.kind {
        Some(k) => k,
        None => {
            let kinds: Vec<Option<FileKind>> = args.files.iter().map(|f| FileKind::of(f)).collect();
            match kinds[..] {
                [Some(k), ..] if kinds.iter().all(|x| *x == Some(k)) => k,
                _ => {
                    return Err(format!(
                        "cannot tell the kind of {} from the extensions; pass --kind parquet|csv|ndjson",
                        args.files.join(", ")
                    ));
                }
            }
        }
    };
    for file in &args.files {
        if !file.contains("://") && !Path::new(file).is_file() {
            return Err(format!("{file}: no such file"));
        }
    }
    let files = args.files.clone();
    let read = match kind {
        FileKind::Parquet => {
            ctx.read_parquet(files, ParquetReadOptions::default().file_extension(""))
                .await
        }
        FileKind::Csv => {
            let delimiter = u8::try_from(args.delimiter)
                .map_err(|_| format!("--delimiter {:?} is not one byte", args.delimiter))?;
            let options = CsvReadOptions::new()
                .has_header(!args.no_header)
                .delimiter(delimiter)
                .file_extension("");
            ctx.read_csv(files, options).await
        }
        FileKind::Ndjson => {
            let options = JsonReadOptions {
                file_extension: "",
                ..JsonReadOptions::default()
            };
            ctx.read_json(files, options).await
        }
    };
    read.map_err(|e| format!("reading {}: {e}", args.files.join(", ")))
}

pub async fn run(
    storage: &str,
    args: ImportArgs,
    bees: &BeeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let target = Target::parse(&args.target)?;
    if !args.partition_by.is_empty() && !args.create {
        return Err("--partition-by only applies with --create".into());
    }
    let ap = Apiary::open_with(storage, bees.options()?).await?;
    let ctx = ap.session()?;
    let source = read(&ctx, &args).await?;
    let schema: SchemaRef = Arc::new(source.schema().as_arrow().clone());

    let exists = ctx.table_exist(target.reference()).unwrap_or(false);
    if !exists {
        if !args.create {
            return Err(format!(
                "frame {target} does not exist (pass --create to create it from the files' schema)"
            )
            .into());
        }
        let registry = ap.registry();
        registry.create_hive(&target.hive, IfExists::Keep).await?;
        registry
            .create_box(&target.hive, &target.box_, IfExists::Keep)
            .await?;
        let spec = FrameSpec::new(Arc::clone(&schema)).with_partition_by(args.partition_by.clone());
        registry
            .create_frame(
                &target.hive,
                &target.box_,
                &target.frame,
                &spec,
                IfExists::Keep,
            )
            .await?;
    }

    let progress = Arc::new(Progress::default());
    // The INSERT runs in a chamber of the bees; the source runs inside that same chamber, not
    // in one of its own (which would wait for bees the INSERT holds).
    let plan = source.create_physical_plan().await?;
    let plan = match plan.downcast_ref::<ChamberExec>() {
        Some(_) => Arc::clone(plan.children()[0]),
        None => plan,
    };
    let counted = CountedSource {
        schema: Arc::clone(&schema),
        plan,
        progress: Arc::clone(&progress),
    };
    ctx.register_table(
        "apiary_import_source",
        Arc::new(StreamingTable::try_new(
            Arc::clone(&schema),
            vec![Arc::new(counted)],
        )?),
    )?;

    let start = Instant::now();
    let show = !args.quiet && std::io::stderr().is_terminal();
    let ticker = show.then(|| {
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                eprint!("\r\x1b[2K{}", progress.line(start.elapsed()));
            }
        })
    });
    let frame_schema = ctx.table_provider(target.reference()).await?.schema();
    let insert = insert_sql(&target, &frame_schema, &schema, args.no_header)?;
    let outcome = match ctx.sql(&insert).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    if let Some(ticker) = ticker {
        ticker.abort();
        eprint!("\r\x1b[2K");
    }
    outcome.map_err(|e| format!("importing into {target}: {e}"))?;
    if !args.quiet {
        println!("imported {} into {target}", progress.line(start.elapsed()));
    }
    Ok(())
}
