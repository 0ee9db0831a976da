//! Turning Arrow record batches into what the API sends: JSON values for
//! the result grid, CSV and Parquet for downloads (Arrow IPC is written by
//! arrow-ipc, Parquet by arrow-rs's `parquet` writer configured here).
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
use arrow_schema::{ArrowError, DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
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

/// Rows per Parquet row group: DuckDB's own default. The writer holds one
/// row group in memory before it goes out, so this and
/// [`PARQUET_ROW_GROUP_BYTES`] bound what an export buffers however large
/// the result.
const PARQUET_ROW_GROUP: usize = 122_880;
/// Encoded bytes at which a row group is closed early (wide rows).
const PARQUET_ROW_GROUP_BYTES: usize = 64 << 20;

/// A Parquet writer for a result of `schema` writing to `out` as it goes
/// (Snappy-compressed, like DuckDB's `COPY … (FORMAT parquet)`). Check the
/// schema with [`parquet_unsupported`] first.
pub fn parquet_writer<W: std::io::Write + Send>(
    out: W,
    schema: SchemaRef,
) -> Result<ArrowWriter<W>, ParquetError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP))
        .set_max_row_group_bytes(Some(PARQUET_ROW_GROUP_BYTES))
        .set_created_by(format!("duckdb-view {}", env!("CARGO_PKG_VERSION")))
        .build();
    ArrowWriter::try_new(out, schema, Some(properties))
}

/// The index of the first column the Parquet writer cannot hold, if any.
/// An allow-list: arrow-rs's writer refuses some types only halfway through
/// (DuckDB's `INTERVAL` is Arrow's month-day-nano interval) and panics on
/// others (`UNION`), so a result is checked before its answer starts.
pub fn parquet_unsupported(schema: &arrow_schema::Schema) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|field| !parquet_holds(field.data_type()))
}

fn parquet_holds(data_type: &DataType) -> bool {
    use arrow_schema::IntervalUnit;
    match data_type {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Timestamp(..)
        | DataType::Duration(_)
        | DataType::Interval(IntervalUnit::YearMonth | IntervalUnit::DayTime) => true,
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            parquet_holds(item.data_type())
        }
        DataType::Map(entries, _) => parquet_holds(entries.data_type()),
        DataType::Struct(fields) => {
            !fields.is_empty() && fields.iter().all(|f| parquet_holds(f.data_type()))
        }
        DataType::Dictionary(_, values) => parquet_holds(values),
        _ => false,
    }
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
    fn parquet_holds_the_rows_and_refuses_types_it_lacks() {
        let mut writer = parquet_writer(Vec::new(), batch().schema()).unwrap();
        writer.write(&batch()).unwrap();
        let bytes = writer.into_inner().unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            axum::body::Bytes::from(bytes),
            1024,
        )
        .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0], batch());

        let interval: ArrayRef = Arc::new(arrow_array::IntervalMonthDayNanoArray::from(vec![
            arrow_array::types::IntervalMonthDayNano::new(1, 2, 3);
            3
        ]));
        let odd = RecordBatch::try_from_iter([("id", batch().column(0).clone()), ("i", interval)])
            .unwrap();
        assert_eq!(parquet_unsupported(&odd.schema()), Some(1));
        assert_eq!(parquet_unsupported(&batch().schema()), None);
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
