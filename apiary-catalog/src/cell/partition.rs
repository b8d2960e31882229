//! Hive-style partitioning: split batches by partition values, name partition folders.
//!
//! Rows are grouped with Arrow kernels (`partition` finds runs; only a batch with several keys is
//! sorted with `lexsort_to_indices` and gathered with `take`), never with a per-row map.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, partition, take_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::{CatalogError, Result};

/// Characters escaped in partition folder names, as Hive does (plus space and the characters
/// object stores advise against), so that any string value is a safe single path segment.
const ESCAPED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'*')
    .add(b'/')
    .add(b':')
    .add(b'=')
    .add(b'?')
    .add(b'\\')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'^')
    .add(b'<')
    .add(b'>')
    .add(b'|')
    .add(b'`')
    .add(b'~')
    .add(b'&')
    .add(b'+')
    .add(0x7f);

/// Folder-name values longer than this are shortened with a hash (file systems limit a name to
/// 255 bytes). The ledger keeps the full typed value; the folder name is never parsed.
const MAX_SEGMENT_VALUE: usize = 160;

/// The folder path of one partition: `a=1/b=x%2Fy`.
/// A cell's partition as people read it, `k1=v1/k2=v2` (values as DataFusion prints them): in
/// `apiary_cells` and compaction reports. Not a storage path ([`partition_path`] is).
pub(crate) fn partition_label(partition_by: &[String], values: &[ScalarValue]) -> String {
    partition_by
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("/")
}

pub fn partition_path(columns: &[String], values: &[ScalarValue]) -> Result<String> {
    let mut segments = Vec::with_capacity(columns.len());
    for (c, v) in columns.iter().zip(values) {
        let text = value_text(v)?;
        let mut escaped: String = utf8_percent_encode(&text, ESCAPED).collect();
        if escaped == "." || escaped == ".." {
            escaped = escaped.replace('.', "%2E");
        }
        if escaped.len() > MAX_SEGMENT_VALUE {
            let mut cut = MAX_SEGMENT_VALUE - 20;
            while !escaped.is_char_boundary(cut) {
                cut -= 1;
            }
            escaped = format!("{}~{:016x}", &escaped[..cut], fnv1a(text.as_bytes()));
        }
        segments.push(format!("{c}={escaped}"));
    }
    Ok(segments.join("/"))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The text of a partition value as it appears in a folder name.
fn value_text(v: &ScalarValue) -> Result<String> {
    Ok(match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => {
            let array = other.to_array()?;
            let text = cast(&array, &DataType::Utf8)?;
            ScalarValue::try_from_array(&text, 0)?.to_string()
        }
    })
}

/// Rows of one batch that share one partition key.
pub struct Group {
    pub key: Vec<ScalarValue>,
    /// The batch without the partition columns.
    pub batch: RecordBatch,
}

/// Splits `batch` by the columns at `partition_idx` (with `names` for messages) and drops them
/// from the data. Null partition values are refused.
pub fn split(batch: &RecordBatch, partition_idx: &[usize], names: &[String]) -> Result<Vec<Group>> {
    if partition_idx.is_empty() {
        return Ok(vec![Group {
            key: vec![],
            batch: batch.clone(),
        }]);
    }
    if batch.num_rows() == 0 {
        return Ok(vec![]);
    }
    let part_cols: Vec<ArrayRef> = partition_idx
        .iter()
        .map(|i| Arc::clone(batch.column(*i)))
        .collect();
    for (col, name) in part_cols.iter().zip(names) {
        if col.null_count() > 0 {
            return Err(CatalogError::NullPartitionValue {
                column: name.clone(),
            });
        }
    }
    let data_idx: Vec<usize> = (0..batch.num_columns())
        .filter(|i| !partition_idx.contains(i))
        .collect();
    // Common case: the batch already holds one key (or runs of keys) — no sort needed.
    let runs = partition(&part_cols)?.ranges();
    let (sorted, runs) = if runs.len() == 1 {
        (batch.clone(), runs)
    } else {
        let sort: Vec<SortColumn> = part_cols
            .iter()
            .map(|c| SortColumn {
                values: Arc::clone(c),
                options: None,
            })
            .collect();
        let indices = lexsort_to_indices(&sort, None)?;
        let sorted = take_record_batch(batch, &indices)?;
        let sorted_parts: Vec<ArrayRef> = partition_idx
            .iter()
            .map(|i| Arc::clone(sorted.column(*i)))
            .collect();
        let runs = partition(&sorted_parts)?.ranges();
        (sorted, runs)
    };
    let data = sorted.project(&data_idx)?;
    runs.into_iter()
        .map(|r: Range<usize>| {
            let key = partition_idx
                .iter()
                .map(|i| ScalarValue::try_from_array(sorted.column(*i), r.start))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            Ok(Group {
                key,
                batch: data.slice(r.start, r.end - r.start),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn folder_names_escape_any_string() {
        let cols = vec!["a".to_string(), "b".to_string()];
        let p = partition_path(
            &cols,
            &[
                ScalarValue::Int64(Some(-5)),
                ScalarValue::from("x/y=z%.. é"),
            ],
        )
        .unwrap();
        assert_eq!(p, "a=-5/b=x%2Fy%3Dz%25..%20%C3%A9");
        let p = partition_path(&cols[..1], &[ScalarValue::from("..")]).unwrap();
        assert_eq!(p, "a=%2E%2E");
        let long = "q".repeat(1000);
        let p = partition_path(&cols[..1], &[ScalarValue::from(long.as_str())]).unwrap();
        assert!(p.len() < 200, "{p}");
        let p2 = partition_path(
            &cols[..1],
            &[ScalarValue::from(format!("{long}!").as_str())],
        )
        .unwrap();
        assert_ne!(p, p2);
        let d = partition_path(&cols[..1], &[ScalarValue::Date32(Some(19723))]).unwrap();
        assert_eq!(d, "a=2024-01-01");
    }

    #[test]
    fn splits_by_key_and_drops_partition_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
            Field::new("j", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["b", "a", "b", "a", "c"])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
                Arc::new(Int32Array::from(vec![1, 1, 1, 1, 2])),
            ],
        )
        .unwrap();
        let groups = split(&batch, &[0, 2], &["k".into(), "j".into()]).unwrap();
        let keys: Vec<_> = groups
            .iter()
            .map(|g| (g.key.clone(), g.batch.num_rows()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (vec![ScalarValue::from("a"), ScalarValue::Int32(Some(1))], 2),
                (vec![ScalarValue::from("b"), ScalarValue::Int32(Some(1))], 2),
                (vec![ScalarValue::from("c"), ScalarValue::Int32(Some(2))], 1),
            ]
        );
        assert_eq!(groups[0].batch.num_columns(), 1);
        let total: i64 = groups
            .iter()
            .flat_map(|g| {
                g.batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .sum();
        assert_eq!(total, 15);
    }

    #[test]
    fn null_partition_values_are_refused_by_name() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let err = split(&batch, &[0], &["k".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("partition column k"), "{err}");
    }
}
