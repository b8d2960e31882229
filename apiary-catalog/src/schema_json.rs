//! Frame schemas as JSON, in Apiary's own stable form.
//!
//! Ledgers outlive any one arrow release, so the stored form is defined here (see
//! `docs/storage.md`) rather than borrowed from a serde derive of arrow's types:
//!
//! ```json
//! {"fields": [
//!   {"name": "id", "type": "int64", "nullable": false},
//!   {"name": "price", "type": {"decimal128": [12, 2]}, "nullable": true},
//!   {"name": "at", "type": {"timestamp": ["us", "UTC"]}, "nullable": true},
//!   {"name": "tags", "type": {"list": {"name": "item", "type": "utf8", "nullable": true}}, "nullable": true}
//! ]}
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::{Value, json};

use crate::error::{CatalogError, Result};

pub fn schema_to_json(schema: &Schema) -> Result<Value> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| field_to_json(f))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({ "fields": fields }))
}

pub fn schema_from_json(v: &Value) -> Result<SchemaRef> {
    let fields = v
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("a schema is an object with a \"fields\" array"))?;
    let fields = fields
        .iter()
        .map(field_from_json)
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

fn bad(reason: impl Into<String>) -> CatalogError {
    CatalogError::InvalidSchema(reason.into())
}

fn field_to_json(f: &Field) -> Result<Value> {
    let mut v = json!({
        "name": f.name(),
        "type": type_to_json(f.data_type())?,
        "nullable": f.is_nullable(),
    });
    if !f.metadata().is_empty() {
        v["metadata"] = json!(f.metadata());
    }
    Ok(v)
}

fn field_from_json(v: &Value) -> Result<Field> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a field needs a string \"name\""))?;
    let ty = v
        .get("type")
        .ok_or_else(|| bad(format!("field {name} has no \"type\"")))?;
    let nullable = v.get("nullable").and_then(Value::as_bool).unwrap_or(true);
    let mut field = Field::new(name, type_from_json(ty)?, nullable);
    if let Some(meta) = v.get("metadata") {
        let meta: HashMap<String, String> = serde_json::from_value(meta.clone())
            .map_err(|e| bad(format!("field {name} metadata: {e}")))?;
        field = field.with_metadata(meta);
    }
    Ok(field)
}

fn unit_name(u: &TimeUnit) -> &'static str {
    match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

fn unit_from(v: &Value) -> Result<TimeUnit> {
    Ok(match v.as_str() {
        Some("s") => TimeUnit::Second,
        Some("ms") => TimeUnit::Millisecond,
        Some("us") => TimeUnit::Microsecond,
        Some("ns") => TimeUnit::Nanosecond,
        _ => return Err(bad(format!("unknown time unit {v}"))),
    })
}

fn type_to_json(t: &DataType) -> Result<Value> {
    use DataType::*;
    let simple = |s: &str| Ok(Value::String(s.to_string()));
    match t {
        Null => simple("null"),
        Boolean => simple("boolean"),
        Int8 => simple("int8"),
        Int16 => simple("int16"),
        Int32 => simple("int32"),
        Int64 => simple("int64"),
        UInt8 => simple("uint8"),
        UInt16 => simple("uint16"),
        UInt32 => simple("uint32"),
        UInt64 => simple("uint64"),
        Float16 => simple("float16"),
        Float32 => simple("float32"),
        Float64 => simple("float64"),
        Utf8 => simple("utf8"),
        LargeUtf8 => simple("large_utf8"),
        Utf8View => simple("utf8_view"),
        Binary => simple("binary"),
        LargeBinary => simple("large_binary"),
        BinaryView => simple("binary_view"),
        Date32 => simple("date32"),
        Date64 => simple("date64"),
        FixedSizeBinary(n) => Ok(json!({ "fixed_size_binary": n })),
        Decimal32(p, s) => Ok(json!({ "decimal32": [p, s] })),
        Decimal64(p, s) => Ok(json!({ "decimal64": [p, s] })),
        Decimal128(p, s) => Ok(json!({ "decimal128": [p, s] })),
        Decimal256(p, s) => Ok(json!({ "decimal256": [p, s] })),
        Timestamp(u, tz) => Ok(json!({ "timestamp": [unit_name(u), tz.as_deref()] })),
        Time32(u) => Ok(json!({ "time32": unit_name(u) })),
        Time64(u) => Ok(json!({ "time64": unit_name(u) })),
        Duration(u) => Ok(json!({ "duration": unit_name(u) })),
        List(f) => Ok(json!({ "list": field_to_json(f)? })),
        LargeList(f) => Ok(json!({ "large_list": field_to_json(f)? })),
        FixedSizeList(f, n) => Ok(json!({ "fixed_size_list": [field_to_json(f)?, n] })),
        Struct(fields) => Ok(json!({
            "struct": fields.iter().map(|f| field_to_json(f)).collect::<Result<Vec<_>>>()?
        })),
        Map(f, sorted) => Ok(json!({ "map": [field_to_json(f)?, sorted] })),
        other => Err(CatalogError::UnsupportedType(other.clone())),
    }
}

fn type_from_json(v: &Value) -> Result<DataType> {
    use DataType::*;
    if let Some(s) = v.as_str() {
        return Ok(match s {
            "null" => Null,
            "boolean" => Boolean,
            "int8" => Int8,
            "int16" => Int16,
            "int32" => Int32,
            "int64" => Int64,
            "uint8" => UInt8,
            "uint16" => UInt16,
            "uint32" => UInt32,
            "uint64" => UInt64,
            "float16" => Float16,
            "float32" => Float32,
            "float64" => Float64,
            "utf8" => Utf8,
            "large_utf8" => LargeUtf8,
            "utf8_view" => Utf8View,
            "binary" => Binary,
            "large_binary" => LargeBinary,
            "binary_view" => BinaryView,
            "date32" => Date32,
            "date64" => Date64,
            other => return Err(bad(format!("unknown type {other:?}"))),
        });
    }
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| bad(format!("a type is a string or a one-key object, not {v}")))?;
    let (tag, arg) = obj.iter().next().ok_or_else(|| bad("empty type"))?;
    let int_at = |i: usize| -> Result<i64> {
        arg.get(i)
            .and_then(Value::as_i64)
            .ok_or_else(|| bad(format!("{tag} needs integer argument {i}: {arg}")))
    };
    let precision_scale = || -> Result<(u8, i8)> {
        let p = u8::try_from(int_at(0)?).map_err(|_| bad(format!("bad precision in {arg}")))?;
        let s = i8::try_from(int_at(1)?).map_err(|_| bad(format!("bad scale in {arg}")))?;
        Ok((p, s))
    };
    Ok(match tag.as_str() {
        "fixed_size_binary" => FixedSizeBinary(
            arg.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| bad(format!("bad fixed_size_binary width {arg}")))?,
        ),
        "decimal32" => {
            let (p, s) = precision_scale()?;
            Decimal32(p, s)
        }
        "decimal64" => {
            let (p, s) = precision_scale()?;
            Decimal64(p, s)
        }
        "decimal128" => {
            let (p, s) = precision_scale()?;
            Decimal128(p, s)
        }
        "decimal256" => {
            let (p, s) = precision_scale()?;
            Decimal256(p, s)
        }
        "timestamp" => {
            let unit = unit_from(arg.get(0).unwrap_or(&Value::Null))?;
            let tz = arg.get(1).and_then(Value::as_str).map(Arc::from);
            Timestamp(unit, tz)
        }
        "time32" => Time32(unit_from(arg)?),
        "time64" => Time64(unit_from(arg)?),
        "duration" => Duration(unit_from(arg)?),
        "list" => List(Arc::new(field_from_json(arg)?)),
        "large_list" => LargeList(Arc::new(field_from_json(arg)?)),
        "fixed_size_list" => {
            let f = field_from_json(arg.get(0).unwrap_or(&Value::Null))?;
            let n = i32::try_from(int_at(1)?).map_err(|_| bad("bad list size"))?;
            FixedSizeList(Arc::new(f), n)
        }
        "struct" => {
            let fields = arg
                .as_array()
                .ok_or_else(|| bad("struct needs a field array"))?
                .iter()
                .map(field_from_json)
                .collect::<Result<Vec<_>>>()?;
            Struct(Fields::from(fields))
        }
        "map" => {
            let f = field_from_json(arg.get(0).unwrap_or(&Value::Null))?;
            let sorted = arg.get(1).and_then(Value::as_bool).unwrap_or(false);
            Map(Arc::new(f), sorted)
        }
        other => return Err(bad(format!("unknown type {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_supported_type() {
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let schema = Schema::new(vec![
            Field::new("b", DataType::Boolean, false),
            Field::new("i8", DataType::Int8, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("sv", DataType::Utf8View, true),
            Field::new("bin", DataType::Binary, true),
            Field::new("fsb", DataType::FixedSizeBinary(16), true),
            Field::new("d", DataType::Date32, true),
            Field::new("dec", DataType::Decimal128(12, 2), true),
            Field::new("dec256", DataType::Decimal256(40, -3), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("ts0", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("t", DataType::Time64(TimeUnit::Nanosecond), true),
            Field::new("dur", DataType::Duration(TimeUnit::Second), true),
            Field::new("l", DataType::List(Arc::clone(&item)), true),
            Field::new("fsl", DataType::FixedSizeList(Arc::clone(&item), 3), true),
            Field::new(
                "st",
                DataType::Struct(Fields::from(vec![
                    Field::new("x", DataType::Int32, false),
                    Field::new("y", DataType::LargeUtf8, true),
                ])),
                true,
            ),
            Field::new("m", DataType::Int32, true)
                .with_metadata([("k".to_string(), "v".to_string())].into()),
        ]);
        let json = schema_to_json(&schema).unwrap();
        let back = schema_from_json(&json).unwrap();
        assert_eq!(back.as_ref(), &schema);
    }

    #[test]
    fn unknown_types_are_named() {
        let err = schema_from_json(&json!({"fields":[{"name":"a","type":"int99"}]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("int99"), "{err}");
    }
}
