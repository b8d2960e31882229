//! Typed single values (statistics bounds, partition values) as JSON.
//!
//! The JSON form carries no type: the frame schema gives it. Integers, dates, times, durations and
//! timestamps are JSON integers (days, or counts of the column's unit); floats are numbers or the
//! strings `"NaN"`, `"inf"`, `"-inf"`; decimals are the unscaled integer as a string; strings are
//! strings; binary is lower-case hex; booleans are booleans. A null is JSON `null`.

use datafusion::arrow::datatypes::{DataType, TimeUnit, i256};
use datafusion::common::ScalarValue;
use serde_json::Value;

use crate::error::{CatalogError, Result};

/// Whether values of `t` can be stored by [`encode`] (statistics are kept only for these).
pub fn is_encodable(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | FixedSizeBinary(_)
            | Date32
            | Date64
            | Decimal32(_, _)
            | Decimal64(_, _)
            | Decimal128(_, _)
            | Decimal256(_, _)
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
            | Duration(_)
    )
}

fn float(v: f64) -> Value {
    if v.is_nan() {
        Value::from("NaN")
    } else if v == f64::INFINITY {
        Value::from("inf")
    } else if v == f64::NEG_INFINITY {
        Value::from("-inf")
    } else {
        Value::from(v)
    }
}

fn hex(b: &[u8]) -> Value {
    Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// Encodes `v`; `None` if its type is not encodable.
pub fn encode(v: &ScalarValue) -> Option<Value> {
    use ScalarValue::*;
    if v.is_null() {
        return Some(Value::Null);
    }
    Some(match v {
        Boolean(Some(b)) => Value::from(*b),
        Int8(Some(x)) => Value::from(*x),
        Int16(Some(x)) => Value::from(*x),
        Int32(Some(x)) => Value::from(*x),
        Int64(Some(x)) => Value::from(*x),
        UInt8(Some(x)) => Value::from(*x),
        UInt16(Some(x)) => Value::from(*x),
        UInt32(Some(x)) => Value::from(*x),
        UInt64(Some(x)) => Value::from(*x),
        Float32(Some(x)) => float(*x as f64),
        Float64(Some(x)) => float(*x),
        Utf8(Some(s)) | LargeUtf8(Some(s)) | Utf8View(Some(s)) => Value::from(s.as_str()),
        Binary(Some(b)) | LargeBinary(Some(b)) | BinaryView(Some(b)) => hex(b),
        FixedSizeBinary(_, Some(b)) => hex(b),
        Date32(Some(x)) => Value::from(*x),
        Date64(Some(x)) => Value::from(*x),
        Decimal32(Some(x), _, _) => Value::from(x.to_string()),
        Decimal64(Some(x), _, _) => Value::from(x.to_string()),
        Decimal128(Some(x), _, _) => Value::from(x.to_string()),
        Decimal256(Some(x), _, _) => Value::from(x.to_string()),
        TimestampSecond(Some(x), _)
        | TimestampMillisecond(Some(x), _)
        | TimestampMicrosecond(Some(x), _)
        | TimestampNanosecond(Some(x), _) => Value::from(*x),
        Time32Second(Some(x)) | Time32Millisecond(Some(x)) => Value::from(*x),
        Time64Microsecond(Some(x)) | Time64Nanosecond(Some(x)) => Value::from(*x),
        DurationSecond(Some(x))
        | DurationMillisecond(Some(x))
        | DurationMicrosecond(Some(x))
        | DurationNanosecond(Some(x)) => Value::from(*x),
        _ => return None,
    })
}

/// Decodes `v` as a value of type `t`. `what` names the value in errors (e.g. a ledger key and
/// column).
pub fn decode(v: &Value, t: &DataType, what: &str) -> Result<ScalarValue> {
    use DataType::*;
    let bad = || CatalogError::corrupt(what, format!("{v} is not a valid {t} value"));
    if v.is_null() {
        return ScalarValue::try_from(t).map_err(|_| bad());
    }
    let int = || v.as_i64().ok_or_else(bad);
    let uint = || v.as_u64().ok_or_else(bad);
    let flt = || -> Result<f64> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(bad),
            Value::String(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    };
    let string = || v.as_str().map(str::to_string).ok_or_else(bad);
    let bytes = || -> Result<Vec<u8>> {
        let s = v.as_str().ok_or_else(bad)?;
        if s.len() % 2 != 0 {
            return Err(bad());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad()))
            .collect()
    };
    let narrow = |x: i64| -> Result<i32> { i32::try_from(x).map_err(|_| bad()) };
    let tz = |tz: &Option<std::sync::Arc<str>>| tz.clone();
    Ok(match t {
        Boolean => ScalarValue::Boolean(Some(v.as_bool().ok_or_else(bad)?)),
        Int8 => ScalarValue::Int8(Some(i8::try_from(int()?).map_err(|_| bad())?)),
        Int16 => ScalarValue::Int16(Some(i16::try_from(int()?).map_err(|_| bad())?)),
        Int32 => ScalarValue::Int32(Some(narrow(int()?)?)),
        Int64 => ScalarValue::Int64(Some(int()?)),
        UInt8 => ScalarValue::UInt8(Some(u8::try_from(uint()?).map_err(|_| bad())?)),
        UInt16 => ScalarValue::UInt16(Some(u16::try_from(uint()?).map_err(|_| bad())?)),
        UInt32 => ScalarValue::UInt32(Some(u32::try_from(uint()?).map_err(|_| bad())?)),
        UInt64 => ScalarValue::UInt64(Some(uint()?)),
        Float32 => ScalarValue::Float32(Some(flt()? as f32)),
        Float64 => ScalarValue::Float64(Some(flt()?)),
        Utf8 => ScalarValue::Utf8(Some(string()?)),
        LargeUtf8 => ScalarValue::LargeUtf8(Some(string()?)),
        Utf8View => ScalarValue::Utf8View(Some(string()?)),
        Binary => ScalarValue::Binary(Some(bytes()?)),
        LargeBinary => ScalarValue::LargeBinary(Some(bytes()?)),
        BinaryView => ScalarValue::BinaryView(Some(bytes()?)),
        FixedSizeBinary(n) => ScalarValue::FixedSizeBinary(*n, Some(bytes()?)),
        Date32 => ScalarValue::Date32(Some(narrow(int()?)?)),
        Date64 => ScalarValue::Date64(Some(int()?)),
        Decimal32(p, s) => {
            ScalarValue::Decimal32(Some(string()?.parse().map_err(|_| bad())?), *p, *s)
        }
        Decimal64(p, s) => {
            ScalarValue::Decimal64(Some(string()?.parse().map_err(|_| bad())?), *p, *s)
        }
        Decimal128(p, s) => {
            ScalarValue::Decimal128(Some(string()?.parse().map_err(|_| bad())?), *p, *s)
        }
        Decimal256(p, s) => {
            ScalarValue::Decimal256(Some(i256::from_string(&string()?).ok_or_else(bad)?), *p, *s)
        }
        Timestamp(TimeUnit::Second, z) => ScalarValue::TimestampSecond(Some(int()?), tz(z)),
        Timestamp(TimeUnit::Millisecond, z) => {
            ScalarValue::TimestampMillisecond(Some(int()?), tz(z))
        }
        Timestamp(TimeUnit::Microsecond, z) => {
            ScalarValue::TimestampMicrosecond(Some(int()?), tz(z))
        }
        Timestamp(TimeUnit::Nanosecond, z) => ScalarValue::TimestampNanosecond(Some(int()?), tz(z)),
        Time32(TimeUnit::Second) => ScalarValue::Time32Second(Some(narrow(int()?)?)),
        Time32(TimeUnit::Millisecond) => ScalarValue::Time32Millisecond(Some(narrow(int()?)?)),
        Time64(TimeUnit::Microsecond) => ScalarValue::Time64Microsecond(Some(int()?)),
        Time64(TimeUnit::Nanosecond) => ScalarValue::Time64Nanosecond(Some(int()?)),
        Duration(TimeUnit::Second) => ScalarValue::DurationSecond(Some(int()?)),
        Duration(TimeUnit::Millisecond) => ScalarValue::DurationMillisecond(Some(int()?)),
        Duration(TimeUnit::Microsecond) => ScalarValue::DurationMicrosecond(Some(int()?)),
        Duration(TimeUnit::Nanosecond) => ScalarValue::DurationNanosecond(Some(int()?)),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let values = [
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Int8(Some(-3)),
            ScalarValue::UInt64(Some(u64::MAX)),
            ScalarValue::Int64(Some(i64::MIN)),
            ScalarValue::Float64(Some(f64::NAN)),
            ScalarValue::Float32(Some(f32::NEG_INFINITY)),
            ScalarValue::Float64(Some(1.5)),
            ScalarValue::Utf8(Some("a \"b\" / é".into())),
            ScalarValue::Binary(Some(vec![0, 255, 16])),
            ScalarValue::Date32(Some(19000)),
            ScalarValue::Decimal128(Some(-12345678901234567890123), 30, 4),
            ScalarValue::Decimal256(Some(i256::from_i128(i128::MAX) * i256::from_i128(4)), 60, 2),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_000_000), Some("UTC".into())),
            ScalarValue::Time64Nanosecond(Some(5)),
            ScalarValue::Int32(None),
        ];
        for v in values {
            let t = v.data_type();
            let back = decode(&encode(&v).unwrap(), &t, "test").unwrap();
            if let ScalarValue::Float64(Some(x)) = v
                && x.is_nan()
            {
                assert!(matches!(back, ScalarValue::Float64(Some(y)) if y.is_nan()));
                continue;
            }
            assert_eq!(back, v);
        }
    }

    #[test]
    fn wrong_values_are_corruption_naming_the_place() {
        let err = decode(&Value::from("x"), &DataType::Int64, "k/col")
            .unwrap_err()
            .to_string();
        assert!(err.contains("k/col") && err.contains("Int64"), "{err}");
        assert!(decode(&Value::from(300), &DataType::Int8, "k").is_err());
    }
}
