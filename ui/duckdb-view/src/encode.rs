//! Turning Arrow record batches into what the API sends: JSON values for
//! the result grid, CSV for downloads (Arrow IPC is written by arrow-ipc).
//!
//! JSON keeps numbers as numbers where JavaScript can hold them exactly:
//! 64-bit integers beyond ±2^53 and non-finite floats become strings, and
//! so do decimals (exact), dates, times, nested values and everything else,
//! in Arrow's display form.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{ArrowError, DataType};
use serde_json::Value;

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

fn options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("")
        .with_display_error(true)
}

/// The first `take` rows of `batch` as JSON arrays (one per row).
pub fn json_rows(batch: &RecordBatch, take: usize) -> Result<Vec<Vec<Value>>, ArrowError> {
    let options = options();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let take = take.min(batch.num_rows());
    let mut rows = Vec::with_capacity(take);
    for row in 0..take {
        let values = batch
            .columns()
            .iter()
            .zip(&formatters)
            .map(|(column, formatter)| json_value(column.as_ref(), formatter, row))
            .collect();
        rows.push(values);
    }
    Ok(rows)
}

fn json_value(array: &dyn Array, formatter: &ArrayFormatter<'_>, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::Int64 => {
            let v = array.as_primitive::<Int64Type>().value(row);
            if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&v) {
                v.into()
            } else {
                Value::String(v.to_string())
            }
        }
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            if v <= MAX_SAFE_INTEGER as u64 {
                v.into()
            } else {
                Value::String(v.to_string())
            }
        }
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        _ => Value::String(formatter.value(row).to_string()),
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

/// All rows of `batches` as display strings (NULL as None): for the view's
/// own small catalog queries.
pub fn string_rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let options = options();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, formatter)| match formatter {
                        Some(f) if !column.is_null(row) => Some(f.value(row).to_string()),
                        _ => None,
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// CSV as DuckDB writes it: a header line, `,` separated, `\n` terminated,
/// fields quoted with `"` when they hold `,`, `"`, CR or LF (or edge
/// spaces), NULL as an empty field.
pub struct CsvEncoder {
    options: FormatOptions<'static>,
}

impl Default for CsvEncoder {
    fn default() -> Self {
        CsvEncoder { options: options() }
    }
}

impl CsvEncoder {
    pub fn header<'a>(&self, names: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
        let mut first = true;
        for name in names {
            if !first {
                out.push(b',');
            }
            first = false;
            push_field(name, out);
        }
        out.push(b'\n');
    }

    pub fn rows(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &self.options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut field = String::new();
        for row in 0..batch.num_rows() {
            for (index, (column, formatter)) in batch.columns().iter().zip(&formatters).enumerate()
            {
                if index > 0 {
                    out.push(b',');
                }
                if column.is_null(row) {
                    continue;
                }
                field.clear();
                use std::fmt::Write;
                let _ = write!(field, "{}", formatter.value(row));
                push_field(&field, out);
            }
            out.push(b'\n');
        }
        Ok(())
    }
}

fn push_field(value: &str, out: &mut Vec<u8>) {
    let needs_quotes = value.is_empty()
        || value.starts_with(' ')
        || value.ends_with(' ')
        || value.contains([',', '"', '\n', '\r']);
    if !needs_quotes {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for byte in value.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use serde_json::json;

    fn batch() -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1 << 60), None]));
        let names: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a,b"),
            Some("say \"hi\""),
            Some(""),
        ]));
        let values: ArrayRef = Arc::new(Float64Array::from(vec![0.5, f64::NAN, 2.0]));
        RecordBatch::try_from_iter([("id", ids), ("name", names), ("v", values)]).unwrap()
    }

    #[test]
    fn json_keeps_what_javascript_can_hold() {
        let rows = json_rows(&batch(), 10).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], vec![json!(1), json!("a,b"), json!(0.5)]);
        assert_eq!(
            rows[1],
            vec![
                json!("1152921504606846976"),
                json!("say \"hi\""),
                json!("NaN")
            ]
        );
        assert_eq!(rows[2][0], Value::Null);
        assert_eq!(json_rows(&batch(), 1).unwrap().len(), 1);
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_leaves_null_empty() {
        let encoder = CsvEncoder::default();
        let mut out = Vec::new();
        encoder.header(["id", "name", "v"], &mut out);
        encoder.rows(&batch(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,name,v\n1,\"a,b\",0.5\n1152921504606846976,\"say \"\"hi\"\"\",NaN\n,\"\",2.0\n"
        );
    }
}
