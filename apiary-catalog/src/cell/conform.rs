//! Makes input batches fit the frame schema, or refuses them naming the column.
//!
//! Applied: widening casts that cannot lose information (int32 → int64, float32 → float64,
//! utf8 → large_utf8, a dictionary → its values, a decimal → a wider one, …) and nulls for missing
//! nullable columns. Refused: a missing non-nullable column, an extra column, nulls in a
//! non-nullable column, and any other change of type.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use crate::error::{CatalogError, Result};

/// Conforms batches to one frame's schema.
#[derive(Debug, Clone)]
pub struct Conformer {
    frame: String,
    target: SchemaRef,
}

impl Conformer {
    pub fn new(frame: impl Into<String>, target: SchemaRef) -> Self {
        Self {
            frame: frame.into(),
            target,
        }
    }

    pub fn target(&self) -> &SchemaRef {
        &self.target
    }

    /// Checks an input schema before any row is read (every refusal except nulls).
    pub fn check_schema(&self, input: &SchemaRef) -> Result<()> {
        for f in input.fields() {
            if self.target.field_with_name(f.name()).is_err() {
                return Err(CatalogError::ExtraColumn {
                    column: f.name().clone(),
                    found: f.data_type().clone(),
                    frame: self.frame.clone(),
                });
            }
        }
        for t in self.target.fields() {
            match input.field_with_name(t.name()) {
                Ok(f) => check_cast(t.name(), f.data_type(), t.data_type())?,
                Err(_) if t.is_nullable() => {}
                Err(_) => {
                    return Err(CatalogError::MissingColumn {
                        column: t.name().clone(),
                        expected: t.data_type().clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Returns `batch` with exactly the frame schema.
    pub fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let input = batch.schema();
        if input.fields() == self.target.fields() {
            return Ok(batch.clone().with_schema(Arc::clone(&self.target))?);
        }
        self.check_schema(&input)?;
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.target.fields().len());
        for t in self.target.fields() {
            let column = match input.index_of(t.name()) {
                Ok(i) => {
                    let c = batch.column(i);
                    if c.data_type() == t.data_type() {
                        Arc::clone(c)
                    } else {
                        let opts = CastOptions {
                            safe: false,
                            ..Default::default()
                        };
                        cast_with_options(c, t.data_type(), &opts).map_err(|_| {
                            CatalogError::TypeMismatch {
                                column: t.name().clone(),
                                expected: t.data_type().clone(),
                                found: c.data_type().clone(),
                                reason: "a value does not fit the frame type",
                            }
                        })?
                    }
                }
                Err(_) => new_null_array(t.data_type(), rows),
            };
            if !t.is_nullable() && column.null_count() > 0 {
                return Err(CatalogError::NullsInNonNullable {
                    column: t.name().clone(),
                    count: column.null_count(),
                });
            }
            columns.push(column);
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.target),
            columns,
            &opts,
        )?)
    }
}

/// Whether `from` may be written into a column of type `to` without losing information.
pub fn check_cast(column: &str, from: &DataType, to: &DataType) -> Result<()> {
    if from == to || from.equals_datatype(to) || is_widening(from, to) {
        return Ok(());
    }
    Err(CatalogError::TypeMismatch {
        column: column.to_string(),
        expected: to.clone(),
        found: from.clone(),
        reason: "only casts that cannot lose information are applied",
    })
}

/// Signedness and bits of an integer type.
pub(crate) fn int_rank(t: &DataType) -> Option<(bool, u8)> {
    use DataType::*;
    Some(match t {
        Int8 => (true, 8),
        Int16 => (true, 16),
        Int32 => (true, 32),
        Int64 => (true, 64),
        UInt8 => (false, 8),
        UInt16 => (false, 16),
        UInt32 => (false, 32),
        UInt64 => (false, 64),
        _ => return None,
    })
}

/// Decimal digits needed for any value of an integer type.
fn int_digits(t: &DataType) -> Option<u8> {
    use DataType::*;
    Some(match t {
        Int8 | UInt8 => 3,
        Int16 | UInt16 => 5,
        Int32 | UInt32 => 10,
        Int64 => 19,
        UInt64 => 20,
        _ => return None,
    })
}

fn decimal(t: &DataType) -> Option<(u8, i8)> {
    use DataType::*;
    match t {
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    }
}

fn unit_rank(u: &TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn is_widening(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if let (Some((fs, fb)), Some((ts, tb))) = (int_rank(from), int_rank(to)) {
        // Same signedness and wider, or unsigned into a strictly wider signed type.
        return (fs == ts && tb >= fb) || (!fs && ts && tb > fb);
    }
    if let (Some(digits), Some((p, s))) = (int_digits(from), decimal(to)) {
        return s >= 0 && i16::from(p) - i16::from(s) >= i16::from(digits);
    }
    if let (Some((fp, fs)), Some((tp, ts))) = (decimal(from), decimal(to)) {
        return ts >= fs && i16::from(tp) - i16::from(ts) >= i16::from(fp) - i16::from(fs);
    }
    match (from, to) {
        (Null, _) => true,
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Int8 | Int16 | UInt8 | UInt16, Float32) => true,
        (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32, Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Date32, Date64) => true,
        // A finer unit with the same zone: the cast is checked, so an overflow is an error.
        (Timestamp(fu, ftz), Timestamp(tu, ttz)) => ftz == ttz && unit_rank(tu) >= unit_rank(fu),
        (Dictionary(_, values), to) => values.as_ref() == to || is_widening(values, to),
        _ => false,
    }
}

/// Whether every value of type `from`, as the ledger's statistics and the cells store it, is the
/// same value of type `to`.
pub(crate) fn keeps_stored_values(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if let (Some((fs, fb)), Some((ts, tb))) = (int_rank(from), int_rank(to)) {
        return (fs == ts && tb > fb) || (!fs && ts && tb > fb);
    }
    match (from, to) {
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (
            Decimal32(fp, fs) | Decimal64(fp, fs) | Decimal128(fp, fs),
            Decimal32(tp, ts) | Decimal64(tp, ts) | Decimal128(tp, ts) | Decimal256(tp, ts),
        ) => fs == ts && tp >= fp,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn target() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
        ]))
    }

    fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    #[test]
    fn widens_and_fills_missing_nullable_columns() {
        let c = Conformer::new("h.b.f", target());
        let b = batch(
            vec![Field::new("id", DataType::Int32, true)],
            vec![Arc::new(Int32Array::from(vec![1, 2]))],
        );
        let out = c.conform(&b).unwrap();
        assert_eq!(out.schema(), target());
        assert_eq!(out.column(1).null_count(), 2);
        assert_eq!(
            out.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec(),
            vec![1, 2]
        );
        // Integers into a decimal with enough digits.
        check_cast("price", &DataType::Int16, &DataType::Decimal128(12, 2)).unwrap();
        assert!(check_cast("price", &DataType::Int64, &DataType::Decimal128(12, 2)).is_err());
    }

    #[test]
    fn refusals_name_the_column_and_both_types() {
        let c = Conformer::new("h.b.f", target());
        let missing = batch(
            vec![Field::new("name", DataType::Utf8, true)],
            vec![Arc::new(StringArray::from(vec!["a"]))],
        );
        let e = c.conform(&missing).unwrap_err().to_string();
        assert!(
            e.contains("column id") && e.contains("Int64") && e.contains("missing"),
            "{e}"
        );

        let narrowing = batch(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("price", DataType::Float64, true),
            ],
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.5])),
            ],
        );
        let e = c.conform(&narrowing).unwrap_err().to_string();
        assert!(
            e.contains("column price") && e.contains("Decimal128(12, 2)") && e.contains("Float64"),
            "{e}"
        );

        let extra = batch(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("colour", DataType::Utf8, true),
            ],
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["red"])),
            ],
        );
        let e = c.conform(&extra).unwrap_err().to_string();
        assert!(e.contains("column colour") && e.contains("h.b.f"), "{e}");

        let nulls = batch(
            vec![Field::new("id", DataType::Int64, true)],
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        );
        let e = c.conform(&nulls).unwrap_err().to_string();
        assert!(e.contains("column id") && e.contains("1 null"), "{e}");

        let overflow = batch(
            vec![Field::new("id", DataType::UInt64, false)],
            vec![Arc::new(datafusion::arrow::array::UInt64Array::from(vec![
                u64::MAX,
            ]))],
        );
        let e = c.conform(&overflow).unwrap_err().to_string();
        assert!(e.contains("column id"), "{e}");
    }
}
