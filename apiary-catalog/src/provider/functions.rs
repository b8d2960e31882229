//! Table functions over frame metadata, and time travel:
//!
//! - `apiary_cells('hive.box.frame')`: the active cells with their ledger statistics;
//! - `apiary_history('hive.box.frame')`: one row per ledger version;
//! - `apiary_version('hive.box.frame', N)`: the frame as it was at version N (read-only);
//! - `apiary_compact('hive.box.frame')`: rewrites small cells into target-sized ones, one commit;
//! - `apiary_cleanse('hive.box.frame' [, retention_seconds [, dry_run]])`: a cleansing flight.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use serde_json::{Map, Value, json};

use super::{ApiaryCatalog, FrameTable, split_frame_name};
use crate::cleansing::{CleansingOptions, cleanse_frame};
use crate::compaction::compact;
use crate::frame::Frame;

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

fn check_arity(fun: &str, args: &[Expr], n: usize) -> Result<()> {
    if args.len() != n {
        return plan_err!("{fun} takes {n} argument(s), got {}", args.len());
    }
    Ok(())
}

/// Opens the frame named by the first argument (its newest version).
fn open_frame(apiary: &ApiaryCatalog, fun: &str, args: &[Expr]) -> Result<Frame> {
    let qualified = string_arg(fun, args, 0)?;
    let (hive, box_, frame) = split_frame_name(&qualified)?;
    let a = apiary.clone();
    apiary
        .block_on(async move {
            a.frame(&hive, &box_, &frame)
                .await?
                .ok_or_else(|| crate::Error::not_found(crate::Kind::Frame, &qualified))
        })
        .map_err(DataFusionError::from)
}

fn mem_table(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `apiary_cells('hive.box.frame')`.
#[derive(Debug)]
pub struct CellsFunction {
    apiary: ApiaryCatalog,
}

impl CellsFunction {
    pub fn new(apiary: ApiaryCatalog) -> Self {
        Self { apiary }
    }
}

impl TableFunctionImpl for CellsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let args = args.exprs();
        check_arity("apiary_cells", args, 1)?;
        let frame = open_frame(&self.apiary, "apiary_cells", args)?;
        let snap = frame.ledger().latest();
        let cells: Vec<_> = snap.cells().collect();
        let partition: Vec<String> = cells
            .iter()
            .map(|c| {
                snap.partition_by
                    .iter()
                    .zip(&c.partition)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("/")
            })
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
                Arc::new(StringArray::from_iter_values(
                    cells.iter().map(|c| c.path.as_str()),
                )),
                Arc::new(StringArray::from(partition)),
                Arc::new(UInt64Array::from_iter_values(cells.iter().map(|c| c.rows))),
                Arc::new(UInt64Array::from_iter_values(cells.iter().map(|c| c.size))),
                Arc::new(StringArray::from(stats)),
                Arc::new(UInt64Array::from_iter_values(
                    cells.iter().map(|_| snap.version),
                )),
            ],
        )
    }
}

/// `apiary_history('hive.box.frame')`.
#[derive(Debug)]
pub struct HistoryFunction {
    apiary: ApiaryCatalog,
}

impl HistoryFunction {
    pub fn new(apiary: ApiaryCatalog) -> Self {
        Self { apiary }
    }
}

impl TableFunctionImpl for HistoryFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let args = args.exprs();
        check_arity("apiary_history", args, 1)?;
        let frame = open_frame(&self.apiary, "apiary_history", args)?;
        let ledger = frame.ledger().clone();
        let (entries, start) = self
            .apiary
            .block_on(async move { ledger.history().await })
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
        for e in &entries {
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
        ]));
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
            ],
        )
    }
}

/// `apiary_version('hive.box.frame', N)`: time travel.
#[derive(Debug)]
pub struct VersionFunction {
    apiary: ApiaryCatalog,
}

impl VersionFunction {
    pub fn new(apiary: ApiaryCatalog) -> Self {
        Self { apiary }
    }
}

impl TableFunctionImpl for VersionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let args = args.exprs();
        check_arity("apiary_version", args, 2)?;
        let frame = open_frame(&self.apiary, "apiary_version", args)?;
        let version = count_arg("apiary_version", args, 1)?;
        let ledger = frame.ledger().clone();
        let snapshot = self
            .apiary
            .block_on(async move { ledger.snapshot_at(version).await })
            .map_err(DataFusionError::from)?;
        Ok(Arc::new(FrameTable::new(frame, snapshot, true)))
    }
}

/// `apiary_compact('hive.box.frame')`: compaction, one `RewriteCells` commit.
#[derive(Debug)]
pub struct CompactFunction {
    apiary: ApiaryCatalog,
}

impl CompactFunction {
    pub fn new(apiary: ApiaryCatalog) -> Self {
        Self { apiary }
    }
}

impl TableFunctionImpl for CompactFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let args = args.exprs();
        check_arity("apiary_compact", args, 1)?;
        let frame = open_frame(&self.apiary, "apiary_compact", args)?;
        let report = self
            .apiary
            .block_on(async move { compact(&frame).await })
            .map_err(DataFusionError::from)?;
        let p = &report.partitions;
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Utf8, false),
            Field::new("cells_before", DataType::UInt64, false),
            Field::new("cells_after", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("version", DataType::UInt64, false),
        ]));
        let version = report.version.unwrap_or_default();
        mem_table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    p.iter().map(|x| x.partition.as_str()),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    p.iter().map(|x| x.cells_before as u64),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    p.iter().map(|x| x.cells_after as u64),
                )),
                Arc::new(UInt64Array::from_iter_values(p.iter().map(|x| x.rows))),
                Arc::new(UInt64Array::from_iter_values(p.iter().map(|_| version))),
            ],
        )
    }
}

/// `apiary_cleanse('hive.box.frame' [, retention_seconds [, dry_run]])`: a cleansing flight.
#[derive(Debug)]
pub struct CleanseFunction {
    apiary: ApiaryCatalog,
}

impl CleanseFunction {
    pub fn new(apiary: ApiaryCatalog) -> Self {
        Self { apiary }
    }
}

impl TableFunctionImpl for CleanseFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let args = args.exprs();
        if args.is_empty() || args.len() > 3 {
            return plan_err!(
                "apiary_cleanse takes 1 to 3 arguments (frame, retention_seconds, dry_run), got {}",
                args.len()
            );
        }
        let frame = open_frame(&self.apiary, "apiary_cleanse", args)?;
        let mut options = CleansingOptions::default();
        if args.len() >= 2 {
            options.retention =
                std::time::Duration::from_secs(count_arg("apiary_cleanse", args, 1)?);
        }
        if let Some(arg) = args.get(2) {
            options.dry_run = match arg {
                Expr::Literal(ScalarValue::Boolean(Some(b)), _) => *b,
                other => {
                    return plan_err!(
                        "apiary_cleanse: argument 3 (dry_run) must be true or false, got {other}"
                    );
                }
            };
        }
        let ledger = frame.ledger().clone();
        let report = self
            .apiary
            .block_on(async move { cleanse_frame(&ledger, &options).await })
            .map_err(DataFusionError::from)?;
        let r = &report.removals;
        let action = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("kind", DataType::Utf8, false),
            Field::new("key", DataType::Utf8, false),
            Field::new("bytes", DataType::UInt64, false),
            Field::new("action", DataType::Utf8, false),
            Field::new("oldest_kept_version", DataType::UInt64, false),
        ]));
        mem_table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    r.iter().map(|x| x.kind.name()),
                )),
                Arc::new(StringArray::from_iter_values(
                    r.iter().map(|x| x.key.as_str()),
                )),
                Arc::new(UInt64Array::from_iter_values(r.iter().map(|x| x.bytes))),
                Arc::new(StringArray::from_iter_values(r.iter().map(|_| action))),
                Arc::new(UInt64Array::from_iter_values(
                    r.iter().map(|_| report.oldest_kept_version),
                )),
            ],
        )
    }
}
