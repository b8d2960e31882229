//! Cell statistics from the Parquet writer's own metadata (never recomputed from the data):
//! bounds, null counts, and each column's uncompressed size.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::parquet_column;
use datafusion::parquet::file::metadata::ParquetMetaData;

use crate::error::Result;
use crate::ledger::ColumnStats;
use crate::value;

/// Per-column min / max / null count over all row groups of a written file.
pub fn cell_stats(
    file_schema: &Schema,
    meta: &ParquetMetaData,
) -> Result<BTreeMap<String, ColumnStats>> {
    let mut out = BTreeMap::new();
    let row_groups = meta.row_groups();
    let descr = meta.file_metadata().schema_descr();
    for field in file_schema.fields() {
        let leaf = parquet_column(descr, file_schema, field.name()).map(|(i, _)| i);
        let bytes = leaf.map(|i| {
            row_groups
                .iter()
                .filter_map(|rg| rg.columns().get(i))
                .map(|c| c.uncompressed_size().max(0) as u64)
                .sum()
        });
        if !value::is_encodable(field.data_type()) {
            if bytes.is_some() {
                out.insert(
                    field.name().clone(),
                    ColumnStats {
                        min: None,
                        max: None,
                        null_count: None,
                        min_exact: true,
                        max_exact: true,
                        bytes,
                        nan_count: None,
                    },
                );
            }
            continue;
        }
        let conv = StatisticsConverter::try_new(field.name(), file_schema, descr)?;
        let mins = conv.row_group_mins(row_groups.iter())?;
        let maxes = conv.row_group_maxes(row_groups.iter())?;
        let min_exact = conv.row_group_is_min_value_exact(row_groups.iter())?;
        let max_exact = conv.row_group_is_max_value_exact(row_groups.iter())?;
        let nulls = conv.row_group_null_counts(row_groups.iter())?;
        let null_count = (nulls.null_count() == 0).then(|| nulls.values().iter().sum::<u64>());
        // A row group with values but no bound makes the bound unknown.
        let all_null =
            |i: usize| !nulls.is_null(i) && nulls.value(i) == row_groups[i].num_rows() as u64;
        let min = fold(&mins, &min_exact, Ordering::Less, &all_null)?;
        let max = fold(&maxes, &max_exact, Ordering::Greater, &all_null)?;
        let (min, min_exact) = min.map_or((None, true), |(v, e)| (Some(v), e));
        let (max, max_exact) = max.map_or((None, true), |(v, e)| (Some(v), e));
        out.insert(
            field.name().clone(),
            ColumnStats {
                min,
                max,
                null_count,
                min_exact,
                max_exact,
                bytes,
                nan_count: None,
            },
        );
    }
    Ok(out)
}

/// The extreme (`want` = Less for min) of the row groups' bounds, with its exactness.
fn fold(
    bounds: &ArrayRef,
    exact: &BooleanArray,
    want: Ordering,
    all_null: &dyn Fn(usize) -> bool,
) -> Result<Option<(ScalarValue, bool)>> {
    let mut best: Option<(ScalarValue, bool)> = None;
    for i in 0..bounds.len() {
        if bounds.is_null(i) {
            if all_null(i) {
                continue;
            }
            return Ok(None);
        }
        let v = ScalarValue::try_from_array(bounds, i)?;
        let e = exact.is_valid(i) && exact.value(i);
        best = match best {
            None => Some((v, e)),
            Some((b, be)) => match v.partial_cmp(&b) {
                Some(o) if o == want => Some((v, e)),
                Some(Ordering::Equal) => Some((b, be || e)),
                Some(_) => Some((b, be)),
                None => return Ok(None),
            },
        };
    }
    Ok(best)
}
