//! Table functions over frame metadata, and time travel:
//!
//! - `apiary_cells('hive.box.frame')`: the active cells with their ledger statistics;
//! - `apiary_history('hive.box.frame')`: one row per ledger version;
//! - `apiary_version('hive.box.frame', N)`: the frame as it was at version N (read-only);
//! - `apiary_compact('hive.box.frame')`: rewrites small cells into target-sized ones, one commit;
//! - `apiary_cleanse('hive.box.frame' | '*' [, retention_seconds [, dry_run [, force]]])`: a
//!   cleansing flight;
//! - `apiary_check(['hive.box.frame' | '*'])`: the problems a check finds;
//! - `apiary_undrop('hive.box.frame' [, version])`: a dropped frame back under its name.
//!
//! The last four change or inspect storage: they do so when their result is read, never while a
//! statement is planned ([`super::action`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use futures::FutureExt;
use serde_json::{Map, Value, json};

use super::action::{Action, ActionTable};
use super::{FrameTableProvider, ProviderState, split_frame_name};
use crate::cell::partition::partition_label;
use crate::check::{check_meadow, check_named_frame};
use crate::cleansing::{CleansingOptions, cleanse_frame, cleanse_meadow};
use crate::column_ids;
use crate::compaction::{Compaction, compact};
use crate::frame::Frame;
use crate::ledger;

fn string_arg(fun: &str, args: &[Expr], i: usize) -> Result<String> {
    match args.get(i) {
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        )) => Ok(s.clone()),
        other => plan_err!(
            "{fun}: argument {} must be a frame name like 'hive.box.frame', got {other:?}",
            i + 1
        ),
    }
}

/// A whole number ≥ 0 argument (a version, a number of seconds).
fn count_arg(fun: &str, args: &[Expr], i: usize) -> Result<u64> {
    let v = match args.get(i) {
        Some(Expr::Literal(v, _)) => v.clone(),
        other => {
            return plan_err!(
                "{fun}: argument {} must be a whole number, got {other:?}",
                i + 1
            );
        }
    };
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) if n >= 0 => Ok(n as u64),
        _ => plan_err!(
            "{fun}: argument {} must be a whole number ≥ 0, got {v}",
            i + 1
        ),
    }
}

/// Argument `i` as a point in time, when it is a timestamp (`TIMESTAMP '…'`; without a time
/// zone it is UTC).
fn time_arg(fun: &str, args: &[Expr], i: usize) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(Expr::Literal(v, _)) = args.get(i) else {
        return Ok(None);
    };
    if !matches!(v.data_type(), DataType::Timestamp(..)) {
        return Ok(None);
    }
    match v.cast_to(&DataType::Timestamp(TimeUnit::Microsecond, None)) {
        Ok(ScalarValue::TimestampMicrosecond(Some(us), _)) => {
            Ok(chrono::DateTime::from_timestamp_micros(us))
        }
        _ => plan_err!("{fun}: argument {} is not a usable time: {v}", i + 1),
    }
}

fn check_arity(fun: &str, args: &[Expr], n: usize) -> Result<()> {
    if args.len() != n {
        return plan_err!("{fun} takes {n} argument(s), got {}", args.len());
    }
    Ok(())
}

/// Opens the frame named by the first argument (its newest version).
fn open_frame(apiary: &ProviderState, fun: &str, args: &[Expr]) -> Result<Frame> {
    let qualified = string_arg(fun, args, 0)?;
    let (hive, box_, frame) = split_frame_name(&qualified)?;
    let a = apiary.clone();
    apiary
        .block_on(async move {
            a.frame(&hive, &box_, &frame)
                .await?
                .ok_or_else(|| crate::CatalogError::not_found(crate::Kind::Frame, &qualified))
        })
        .map_err(DataFusionError::from)
}

fn mem_table(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// What a table function does with its arguments.
type Call = fn(&ProviderState, &[Expr]) -> Result<Arc<dyn TableProvider>>;

/// Apiary's table functions, by the name SQL calls them.
pub(crate) const FUNCTIONS: [(&str, Call); 7] = [
    ("apiary_cells", apiary_cells),
    ("apiary_history", apiary_history),
    ("apiary_version", apiary_version),
    ("apiary_compact", apiary_compact),
    ("apiary_cleanse", apiary_cleanse),
    ("apiary_check", apiary_check),
    ("apiary_undrop", apiary_undrop),
];

/// One of [`FUNCTIONS`] as DataFusion's `TableFunctionImpl`, over the providers' state.
#[derive(Debug)]
pub(crate) struct ApiaryFunction {
    apiary: ProviderState,
    call: Call,
}

impl ApiaryFunction {
    pub(crate) fn new(apiary: ProviderState, call: Call) -> Self {
        Self { apiary, call }
    }
}

impl TableFunctionImpl for ApiaryFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        (self.call)(&self.apiary, args.exprs())
    }
}

/// `apiary_cells('hive.box.frame')`.
fn apiary_cells(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    check_arity("apiary_cells", args, 1)?;
    let frame = open_frame(apiary, "apiary_cells", args)?;
    let snap = frame.ledger().latest();
    let cells: Vec<_> = snap.cells().collect();
    let partition: Vec<String> = cells
        .iter()
        .map(|c| partition_label(&snap.partition_by, &c.partition))
        .collect();
    let stats: Vec<String> = cells
        .iter()
        .map(|c| {
            let mut m = Map::new();
            for (col, s) in &c.stats {
                let show = |v: &Option<ScalarValue>| {
                    v.as_ref()
                        .map_or(Value::Null, |v| Value::from(v.to_string()))
                };
                m.insert(
                    col.clone(),
                    json!({"min": show(&s.min), "max": show(&s.max), "nulls": s.null_count}),
                );
            }
            Value::Object(m).to_string()
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("size_bytes", DataType::UInt64, false),
        Field::new("stats", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
    ]));
    mem_table(
        schema,
        vec![
            strings(cells.iter().map(|c| c.path.as_str())),
            Arc::new(StringArray::from(partition)),
            u64s(cells.iter().map(|c| c.rows)),
            u64s(cells.iter().map(|c| c.size)),
            Arc::new(StringArray::from(stats)),
            u64s(cells.iter().map(|_| snap.version)),
        ],
    )
}

/// `apiary_history('hive.box.frame')`: the stored versions, each marked `readable` or not (a
/// version older than the oldest readable one has lost cells to cleansing).
fn apiary_history(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    check_arity("apiary_history", args, 1)?;
    let frame = open_frame(apiary, "apiary_history", args)?;
    let ledger = frame.ledger().clone();
    let (entries, start, oldest) = apiary
        .block_on(async move {
            let (entries, start) = ledger.history().await?;
            Ok((entries, start, ledger.oldest_readable().await?))
        })
        .map_err(DataFusionError::from)?;
    // Rows removed are the rows of the removed cells, known from the replay. When cleansing
    // removed the oldest entries, the replay starts from the state after the oldest one
    // left, whose own removals are then unknown (NULL).
    let mut live: HashMap<String, u64> = start
        .as_ref()
        .map(|s| s.cells().map(|c| (c.path.clone(), c.rows)).collect())
        .unwrap_or_default();
    let (mut version, mut at, mut op, mut action, mut writer) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut cells_added, mut cells_removed, mut rows_added, mut rows_removed) =
        (vec![], vec![], vec![], vec![]);
    // What a row-level change recorded it did (NULL for other operations).
    let (mut deleted, mut updated, mut inserted) = (vec![], vec![], vec![]);
    // What each schema change did, against the schema before it (when known).
    let mut schema = start.as_ref().map(|s| Arc::clone(&s.schema));
    let mut schema_change: Vec<Option<String>> = vec![];
    for e in &entries {
        schema_change.push(match &e.action {
            ledger::Action::CreateFrame { schema: first, .. } => {
                schema = Some(Arc::clone(first));
                None
            }
            ledger::Action::SetSchema { schema: next } => {
                let before = schema.replace(Arc::clone(next));
                before
                    .filter(|_| start.as_ref().is_none_or(|s| s.version != e.version))
                    .map(|before| column_ids::schema_changes(&before, next).join("; "))
            }
            _ => None,
        });
        if start.as_ref().is_some_and(|s| s.version == e.version) {
            rows_removed.push(None);
        } else {
            let removed: u64 = e
                .action
                .removed()
                .iter()
                .filter_map(|p| live.remove(p))
                .sum();
            for c in e.action.added() {
                live.insert(c.path.clone(), c.rows);
            }
            rows_removed.push(Some(removed));
        }
        version.push(e.version);
        at.push(e.timestamp_ms);
        op.push(e.operation.clone());
        action.push(e.action.name());
        writer.push(e.writer.clone());
        cells_added.push(e.action.added().len() as u64);
        cells_removed.push(e.action.removed().len() as u64);
        rows_added.push(e.action.added().iter().map(|c| c.rows).sum::<u64>());
        deleted.push(e.metrics.get("rows_deleted").copied());
        updated.push(e.metrics.get("rows_updated").copied());
        inserted.push(e.metrics.get("rows_inserted").copied());
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("operation", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("writer", DataType::Utf8, false),
        Field::new("cells_added", DataType::UInt64, false),
        Field::new("cells_removed", DataType::UInt64, false),
        Field::new("rows_added", DataType::UInt64, false),
        Field::new("rows_removed", DataType::UInt64, true),
        Field::new("rows_deleted", DataType::UInt64, true),
        Field::new("rows_updated", DataType::UInt64, true),
        Field::new("rows_inserted", DataType::UInt64, true),
        Field::new("schema_change", DataType::Utf8, true),
        Field::new("readable", DataType::Boolean, false),
    ]));
    let readable: Vec<bool> = version.iter().map(|v| *v >= oldest).collect();
    mem_table(
        schema,
        vec![
            Arc::new(UInt64Array::from(version)),
            Arc::new(TimestampMillisecondArray::from(at).with_timezone("UTC")),
            Arc::new(StringArray::from(op)),
            Arc::new(StringArray::from(action)),
            Arc::new(StringArray::from(writer)),
            Arc::new(UInt64Array::from(cells_added)),
            Arc::new(UInt64Array::from(cells_removed)),
            Arc::new(UInt64Array::from(rows_added)),
            Arc::new(UInt64Array::from(rows_removed)),
            Arc::new(UInt64Array::from(deleted)),
            Arc::new(UInt64Array::from(updated)),
            Arc::new(UInt64Array::from(inserted)),
            Arc::new(StringArray::from(schema_change)),
            Arc::new(BooleanArray::from(readable)),
        ],
    )
}

/// `apiary_version('hive.box.frame', N)`: time travel.
fn apiary_version(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    check_arity("apiary_version", args, 2)?;
    let frame = open_frame(apiary, "apiary_version", args)?;
    // A version number, or a time: the version committed at or before it.
    let at = match time_arg("apiary_version", args, 1)? {
        Some(time) => Err(time),
        None => Ok(count_arg("apiary_version", args, 1)?),
    };
    let ledger = frame.ledger().clone();
    let snapshot = apiary
        .block_on(async move {
            let version = match at {
                Ok(v) => v,
                Err(time) => ledger.version_at_time(time).await?,
            };
            ledger.snapshot_at(version).await
        })
        .map_err(DataFusionError::from)?;
    Ok(Arc::new(FrameTableProvider::at_version(frame, snapshot)))
}

/// The batch of an action's report.
fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// A `Utf8` column of `values`.
fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// A `UInt64` column of `values`.
fn u64s(values: impl IntoIterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(values))
}

/// `apiary_compact('hive.box.frame' [, recluster])`: compaction, one `RewriteCells` commit,
/// done when the result is read (never while planning) within the reading query's budget;
/// `recluster` rewrites every cell of the partitions of a sorted frame whose cells are not
/// clustered ([`Compaction::Recluster`]).
fn apiary_compact(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    if args.is_empty() || args.len() > 2 {
        return plan_err!(
            "apiary_compact takes 1 or 2 arguments (frame [, recluster]), got {}",
            args.len()
        );
    }
    let frame = open_frame(apiary, "apiary_compact", args)?;
    let how = if bool_arg("apiary_compact", args, 1, "recluster")? {
        Compaction::Recluster
    } else {
        Compaction::SmallCells
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Utf8, false),
        Field::new("cells_before", DataType::UInt64, false),
        Field::new("cells_after", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("version", DataType::UInt64, false),
    ]));
    let (name, out) = (
        format!("apiary_compact({})", frame.name()),
        Arc::clone(&schema),
    );
    let action: Action = Arc::new(move |ctx| {
        let (frame, schema) = (frame.clone(), Arc::clone(&out));
        async move {
            let report = compact(&frame, ctx, how).await?;
            let p = &report.partitions;
            let version = report.version.unwrap_or_default();
            batch(
                &schema,
                vec![
                    strings(p.iter().map(|x| x.partition.as_str())),
                    u64s(p.iter().map(|x| x.cells_before as u64)),
                    u64s(p.iter().map(|x| x.cells_after as u64)),
                    u64s(p.iter().map(|x| x.rows)),
                    u64s(p.iter().map(|_| version)),
                ],
            )
        }
        .boxed()
    });
    Ok(Arc::new(ActionTable::new(name, schema, action)))
}

/// `'hive.box.frame'`, or `'*'` for the whole meadow.
enum Target {
    Frame(String, String, String),
    Meadow,
}

fn target_arg(fun: &str, args: &[Expr], i: usize) -> Result<Target> {
    let s = string_arg(fun, args, i)?;
    if s == "*" {
        return Ok(Target::Meadow);
    }
    let (h, b, f) = split_frame_name(&s)?;
    Ok(Target::Frame(h, b, f))
}

fn bool_arg(fun: &str, args: &[Expr], i: usize, what: &str) -> Result<bool> {
    match args.get(i) {
        Some(Expr::Literal(ScalarValue::Boolean(Some(b)), _)) => Ok(*b),
        None => Ok(false),
        Some(other) => {
            plan_err!(
                "{fun}: argument {} ({what}) must be true or false, got {other}",
                i + 1
            )
        }
    }
}

/// `apiary_cleanse(target [, retention_seconds [, dry_run [, force]]])`: a cleansing flight
/// over one frame (`'hive.box.frame'`) or the whole meadow (`'*'`: every frame, dropped frames,
/// crash leftovers), done when the result is read. A retention under one hour needs `force`.
fn apiary_cleanse(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    const FUN: &str = "apiary_cleanse";
    if args.is_empty() || args.len() > 4 {
        return plan_err!(
            "{FUN} takes 1 to 4 arguments ('hive.box.frame' or '*', retention_seconds, dry_run, force), got {}",
            args.len()
        );
    }
    let target = target_arg(FUN, args, 0)?;
    let mut options = CleansingOptions::default();
    if args.len() >= 2 {
        options.retention = std::time::Duration::from_secs(count_arg(FUN, args, 1)?);
    }
    options.dry_run = bool_arg(FUN, args, 2, "dry_run")?;
    options.force = bool_arg(FUN, args, 3, "force")?;
    options.validate().map_err(DataFusionError::from)?;
    let frame = match &target {
        Target::Frame(..) => Some(open_frame(apiary, FUN, args)?),
        Target::Meadow => None,
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("oldest_kept_version", DataType::UInt64, true),
    ]));
    let name = match &frame {
        Some(f) => format!("{FUN}({})", f.name()),
        None => format!("{FUN}(*)"),
    };
    let (registry, out) = (apiary.registry().clone(), Arc::clone(&schema));
    let action: Action = Arc::new(move |_ctx| {
        let (frame, registry, options, schema) = (
            frame.clone(),
            registry.clone(),
            options.clone(),
            Arc::clone(&out),
        );
        async move {
            let report = match &frame {
                Some(f) => cleanse_frame(f.ledger(), &options).await?,
                None => cleanse_meadow(&registry, &options).await?,
            };
            let r = &report.removals;
            let action = if report.dry_run {
                "would remove"
            } else {
                "removed"
            };
            batch(
                &schema,
                vec![
                    strings(r.iter().map(|x| x.kind.name())),
                    strings(r.iter().map(|x| x.key.as_str())),
                    u64s(r.iter().map(|x| x.bytes)),
                    strings(r.iter().map(|_| action)),
                    Arc::new(UInt64Array::from(
                        r.iter().map(|x| x.oldest_kept_version).collect::<Vec<_>>(),
                    )),
                ],
            )
        }
        .boxed()
    });
    Ok(Arc::new(ActionTable::new(name, schema, action)))
}

/// `apiary_check(['hive.box.frame' | '*'])`: one row per problem found (none: all is well).
fn apiary_check(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    const FUN: &str = "apiary_check";
    if args.len() > 1 {
        return plan_err!(
            "{FUN} takes 0 or 1 argument ('hive.box.frame' or '*'), got {}",
            args.len()
        );
    }
    let target = match args.len() {
        0 => Target::Meadow,
        _ => target_arg(FUN, args, 0)?,
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("problem", DataType::Utf8, false),
    ]));
    let name = match &target {
        Target::Frame(h, b, f) => format!("{FUN}({h}.{b}.{f})"),
        Target::Meadow => format!("{FUN}(*)"),
    };
    let target = Arc::new(target);
    let (registry, out) = (apiary.registry().clone(), Arc::clone(&schema));
    let action: Action = Arc::new(move |_ctx| {
        let (target, registry, schema) = (Arc::clone(&target), registry.clone(), Arc::clone(&out));
        async move {
            let report = match &*target {
                Target::Frame(h, b, f) => check_named_frame(&registry, h, b, f).await?,
                Target::Meadow => check_meadow(&registry).await?,
            };
            let p = &report.problems;
            batch(
                &schema,
                vec![
                    strings(p.iter().map(|x| x.key.as_str())),
                    strings(p.iter().map(|x| x.problem.as_str())),
                ],
            )
        }
        .boxed()
    });
    Ok(Arc::new(ActionTable::new(name, schema, action)))
}

/// `apiary_undrop('hive.box.frame' [, dropped_at_registry_version])`: gives a dropped frame
/// its name back, within the retention window (before cleansing reclaims its folder).
fn apiary_undrop(apiary: &ProviderState, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
    const FUN: &str = "apiary_undrop";
    if args.is_empty() || args.len() > 2 {
        return plan_err!(
            "{FUN} takes 1 or 2 arguments ('hive.box.frame', dropped_at_registry_version), got {}",
            args.len()
        );
    }
    let (hive, box_, frame) = split_frame_name(&string_arg(FUN, args, 0)?)?;
    let version = match args.len() {
        2 => Some(count_arg(FUN, args, 1)?),
        _ => None,
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("frame", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
    ]));
    let name = format!("{FUN}({hive}.{box_}.{frame})");
    let (registry, out) = (apiary.registry().clone(), Arc::clone(&schema));
    let action: Action = Arc::new(move |_ctx| {
        let (registry, schema) = (registry.clone(), Arc::clone(&out));
        let (hive, box_, frame) = (hive.clone(), box_.clone(), frame.clone());
        async move {
            let record = registry.undrop_frame(&hive, &box_, &frame, version).await?;
            batch(
                &schema,
                vec![
                    Arc::new(StringArray::from(vec![format!("{hive}.{box_}.{frame}")])),
                    Arc::new(StringArray::from(vec![record.id])),
                    Arc::new(StringArray::from(vec![record.location])),
                ],
            )
        }
        .boxed()
    });
    Ok(Arc::new(ActionTable::new(name, schema, action)))
}
