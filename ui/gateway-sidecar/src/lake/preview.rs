//! Previews: the first rows of one object, read as a view's DuckDB would
//! read it, within fixed bounds. Parquet through arrow-rs's async reader over
//! ranged GETs (the footer, then the pages of the first row groups it needs);
//! CSV and JSON from the object's first [`TEXT_BYTES`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use prometheus_client::metrics::counter::Counter;
use views_types::{BucketName, PreviewColumn, TableFormat, TablePath, TablePreview};

use super::{LakeError, MAX_CELL_CHARS, MAX_COLUMNS, MAX_GLOB_SCAN, directory_of, s3_failure};

/// At most this much of a Parquet object is read for a preview.
pub const PARQUET_BYTES: u64 = 32 * 1024 * 1024;
/// The first this-many bytes of a CSV or JSON object are previewed.
pub const TEXT_BYTES: u64 = 1024 * 1024;
/// The footer's first read (most footers fit in it).
const FOOTER_HINT: usize = 64 * 1024;

/// What a preview shows, before it becomes the API's [`TablePreview`].
pub struct Shown {
    columns: Vec<PreviewColumn>,
    rows: Vec<Vec<Option<String>>>,
    omitted: usize,
    pub bytes_read: u64,
}

impl Shown {
    pub fn into_api(
        self,
        bucket: BucketName,
        path: TablePath,
        key: String,
        format: TableFormat,
    ) -> TablePreview {
        TablePreview {
            bucket,
            path,
            key,
            format,
            columns: self.columns,
            rows: self.rows,
            columns_omitted: self.omitted as u64,
            bytes_read: self.bytes_read,
        }
    }
}

/// The object a table path names, and its size: the key itself, or the first
/// key (in key order) a glob matches as DuckDB globs do (`*` within a
/// segment, `**` across), among the first [`MAX_GLOB_SCAN`] keys under the
/// path's directory.
pub async fn resolve(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    path: &str,
) -> Result<(String, u64), LakeError> {
    let directory = directory_of(path);
    let is_glob = path.len() != path.find(['*', '?', '[', '{']).unwrap_or(path.len());
    if !is_glob {
        let head = client
            .head_object()
            .bucket(bucket)
            .key(path)
            .send()
            .await
            .map_err(|e| s3_failure(e, bucket, path))?;
        return Ok((
            path.to_owned(),
            head.content_length().unwrap_or(0).max(0) as u64,
        ));
    }
    let glob = globset::GlobBuilder::new(path)
        .literal_separator(true)
        .build()
        .map_err(|e| LakeError::invalid("path", format!("not a glob: {e}")))?
        .compile_matcher();
    let mut scanned = 0;
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(directory)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| s3_failure(e, bucket, directory))?;
        for object in page.contents() {
            scanned += 1;
            if let Some(key) = object.key()
                && key.starts_with(directory)
                && glob.is_match(key)
            {
                return Ok((key.to_owned(), object.size().unwrap_or(0).max(0) as u64));
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() || !page.is_truncated().unwrap_or(false) || scanned >= MAX_GLOB_SCAN {
            return Err(LakeError::NoMatch {
                path: path.to_owned(),
                under: directory.to_owned(),
                scanned,
            });
        }
    }
}

/// The first `rows` rows of `key` (`size` bytes) read as `format`.
pub async fn read(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    format: TableFormat,
    rows: usize,
    counted: &Counter,
) -> Result<Shown, LakeError> {
    let reader = RangeReader {
        counted: counted.clone(),
        client: client.clone(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size,
        read: Arc::default(),
        over_budget: Arc::default(),
        tail: None,
    };
    match format {
        TableFormat::Parquet => parquet(reader, rows).await,
        TableFormat::Csv | TableFormat::Json => {
            let length = size.min(TEXT_BYTES);
            let mut reader = reader;
            let head = if length == 0 {
                Bytes::new()
            } else {
                reader.fetch(0..length).await?
            };
            let complete = length == size;
            let mut shown = if format == TableFormat::Csv {
                csv(&head, complete, rows)?
            } else {
                json(&head, complete, rows)?
            };
            shown.bytes_read = reader.read.load(Ordering::Relaxed);
            Ok(shown)
        }
    }
}

/// Ranged GETs of one object, counting the bytes (also in `counted`, the
/// metric) and refusing to read more than [`PARQUET_BYTES`] in all.
#[derive(Clone)]
struct RangeReader {
    counted: Counter,
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    size: u64,
    read: Arc<AtomicU64>,
    over_budget: Arc<AtomicBool>,
    /// The object's last bytes, once read (the footer's read).
    tail: Option<(u64, Bytes)>,
}

impl RangeReader {
    async fn fetch(&mut self, range: Range<u64>) -> Result<Bytes, LakeError> {
        // The footer's read often holds all of a small object.
        if let Some((start, tail)) = &self.tail
            && range.start >= *start
            && range.end <= start + tail.len() as u64
        {
            let from = usize::try_from(range.start - start).unwrap_or(0);
            let to = usize::try_from(range.end - start).unwrap_or(0);
            return Ok(tail.slice(from..to));
        }
        let length = range.end.saturating_sub(range.start);
        if self.read.load(Ordering::Relaxed) + length > PARQUET_BYTES {
            self.over_budget.store(true, Ordering::Relaxed);
            return Err(too_large());
        }
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!(
                "bytes={}-{}",
                range.start,
                range.end.saturating_sub(1)
            ))
            .send()
            .await
            .map_err(|e| s3_failure(e, &self.bucket, &self.key))?;
        // Never more than asked for, whatever the lake sends.
        let mut body = answer.body;
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| LakeError::Lake(e.to_string()))?
        {
            let room = usize::try_from(length).unwrap_or(usize::MAX) - bytes.len();
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() as u64 >= length {
                break;
            }
        }
        self.read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.counted.inc_by(bytes.len() as u64);
        let bytes = Bytes::from(bytes);
        if range.end == self.size && self.tail.is_none() {
            self.tail = Some((range.start, bytes.clone()));
        }
        Ok(bytes)
    }
}

fn too_large() -> LakeError {
    LakeError::NotPreviewable {
        reason: "too_large",
        message: format!(
            "the first rows would need more than {} MiB of this Parquet object (very large row groups or pages)",
            PARQUET_BYTES / 1024 / 1024
        ),
    }
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.fetch(range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_HINT))
                .with_page_index_policy(PageIndexPolicy::Optional)
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

async fn parquet(mut reader: RangeReader, rows: usize) -> Result<Shown, LakeError> {
    let over_budget = reader.over_budget.clone();
    let read = reader.read.clone();
    // A lake failure stays one; anything else the reader says is about the bytes.
    let failed = |error: ParquetError| match error {
        ParquetError::External(inner) => match inner.downcast::<LakeError>() {
            Ok(lake) => *lake,
            Err(other) => not_parquet(other.to_string()),
        },
        _ if over_budget.load(Ordering::Relaxed) => too_large(),
        other => not_parquet(other.to_string()),
    };
    let metadata = reader.get_metadata(None).await.map_err(failed)?;
    let metadata = ArrowReaderMetadata::try_new(
        metadata,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )
    .map_err(failed)?;
    let fields = metadata.schema().fields().clone();
    // The leading columns whose chunks in the first row group fit in what is
    // left of the budget: a wide table shows fewer columns, not an error.
    let descr = metadata.metadata().file_metadata().schema_descr();
    let mut costs = vec![0u64; fields.len()];
    if let Some(group) = metadata.metadata().row_groups().first() {
        for (leaf, column) in group.columns().iter().enumerate() {
            if let Some(cost) = costs.get_mut(descr.get_column_root_idx(leaf)) {
                *cost += u64::try_from(column.compressed_size()).unwrap_or(0);
            }
        }
    }
    let left = PARQUET_BYTES.saturating_sub(read.load(Ordering::Relaxed));
    let shown = columns_within(&costs, MAX_COLUMNS, left);
    if shown == 0 && !fields.is_empty() {
        return Err(too_large());
    }
    let mask = ProjectionMask::roots(descr, 0..shown);
    // Only the first rows: with an offset index, only the pages holding them are read.
    let total: usize = metadata
        .metadata()
        .row_groups()
        .iter()
        .map(|g| usize::try_from(g.num_rows()).unwrap_or(0))
        .sum();
    let wanted = rows.min(total);
    let selection = RowSelection::from(vec![
        RowSelector::select(wanted),
        RowSelector::skip(total - wanted),
    ]);
    let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_projection(mask)
        .with_row_selection(selection)
        .with_limit(rows)
        .with_batch_size(rows)
        .build()
        .map_err(failed)?;
    let mut out = Vec::new();
    while out.len() < rows {
        let Some(batch) = stream.try_next().await.map_err(failed)? else {
            break;
        };
        append_rows(&batch, rows, &mut out)?;
    }
    Ok(Shown {
        columns: fields
            .iter()
            .take(shown)
            .map(|f| PreviewColumn {
                name: f.name().clone(),
                type_: Some(f.data_type().to_string()),
            })
            .collect(),
        rows: out,
        omitted: fields.len() - shown,
        bytes_read: read.load(Ordering::Relaxed),
    })
}

/// How many leading columns, at most `max`, cost no more than `budget` together.
fn columns_within(costs: &[u64], max: usize, budget: u64) -> usize {
    let mut spent = 0u64;
    costs
        .iter()
        .take(max)
        .take_while(|cost| {
            spent = spent.saturating_add(**cost);
            spent <= budget
        })
        .count()
}

fn not_parquet(problem: String) -> LakeError {
    LakeError::NotPreviewable {
        reason: "not_parquet",
        message: format!("this object cannot be read as Parquet: {problem}"),
    }
}

fn append_rows(
    batch: &RecordBatch,
    rows: usize,
    out: &mut Vec<Vec<Option<String>>>,
) -> Result<(), LakeError> {
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_parquet(e.to_string()))?;
    for row in 0..batch.num_rows().min(rows - out.len()) {
        out.push(
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, formatter)| {
                    (!column.is_null(row)).then(|| cut(formatter.value(row).to_string()))
                })
                .collect(),
        );
    }
    Ok(())
}

/// A cell's text, cut at [`MAX_CELL_CHARS`] characters.
fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_CELL_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// The complete lines of `head` (all of it when it is the whole object).
fn complete_lines(head: &[u8], complete: bool) -> Result<&[u8], LakeError> {
    if complete {
        return Ok(head);
    }
    match head.iter().rposition(|&b| b == b'\n') {
        Some(end) => Ok(&head[..=end]),
        None => Err(LakeError::NotPreviewable {
            reason: "row_too_long",
            message: format!(
                "the first line is longer than {} KiB: not previewable",
                TEXT_BYTES / 1024
            ),
        }),
    }
}

fn not_text(head: &[u8]) -> Result<(), LakeError> {
    if head.contains(&0) {
        return Err(LakeError::NotPreviewable {
            reason: "not_text",
            message: "this object holds binary data, not text".into(),
        });
    }
    Ok(())
}

/// CSV as DuckDB reads it by default: a header line, the delimiter sniffed
/// from it (`,` `;` tab `|`), quotes `"`.
fn csv(head: &[u8], complete: bool, rows: usize) -> Result<Shown, LakeError> {
    not_text(head)?;
    let text = complete_lines(head, complete)?;
    let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let delimiter = [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|d| first_line.iter().filter(|b| *b == d).count())
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(text);
    let header = reader.byte_headers().map_err(csv_error)?.clone();
    let shown = header.len().min(MAX_COLUMNS);
    let mut out = Vec::new();
    for record in reader.byte_records().take(rows) {
        let record = record.map_err(csv_error)?;
        out.push(
            (0..shown)
                .map(|i| {
                    record
                        .get(i)
                        .map(|v| cut(String::from_utf8_lossy(v).into_owned()))
                })
                .collect(),
        );
    }
    Ok(Shown {
        columns: header
            .iter()
            .take(shown)
            .map(|name| PreviewColumn {
                name: cut(String::from_utf8_lossy(name).into_owned()),
                type_: None,
            })
            .collect(),
        rows: out,
        omitted: header.len() - shown,
        bytes_read: 0,
    })
}

fn csv_error(error: csv::Error) -> LakeError {
    LakeError::NotPreviewable {
        reason: "not_csv",
        message: format!("this object cannot be read as CSV: {error}"),
    }
}

/// JSON as DuckDB's `read_json` takes it: newline-delimited values, or one
/// array of them (which must then fit in [`TEXT_BYTES`]). Objects' keys
/// become columns, in the order first seen; other values a `value` column.
fn json(head: &[u8], complete: bool, rows: usize) -> Result<Shown, LakeError> {
    not_text(head)?;
    let not_json = |e: serde_json::Error| LakeError::NotPreviewable {
        reason: "not_json",
        message: format!("this object cannot be read as JSON: {e}"),
    };
    let starts_array = head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let values: Vec<serde_json::Value> = if starts_array {
        if !complete {
            return Err(LakeError::NotPreviewable {
                reason: "too_large",
                message: format!(
                    "a JSON array longer than {} KiB cannot be previewed (newline-delimited JSON can)",
                    TEXT_BYTES / 1024
                ),
            });
        }
        match serde_json::from_slice(head).map_err(not_json)? {
            serde_json::Value::Array(items) => items.into_iter().take(rows).collect(),
            other => vec![other],
        }
    } else {
        serde_json::Deserializer::from_slice(complete_lines(head, complete)?)
            .into_iter()
            .take(rows)
            .collect::<Result<_, _>>()
            .map_err(not_json)?
    };
    let mut names: Vec<String> = Vec::new();
    for value in &values {
        let keys: Vec<&String> = match value {
            serde_json::Value::Object(object) => object.keys().collect(),
            _ => Vec::new(),
        };
        let fallback = "value".to_string();
        for key in keys
            .into_iter()
            .chain((!value.is_object()).then_some(&fallback))
        {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }
    let shown = names.len().min(MAX_COLUMNS);
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(cut(s.clone())),
        other => Some(cut(other.to_string())),
    };
    let out = values
        .iter()
        .map(|value| {
            names[..shown]
                .iter()
                .map(|name| match value {
                    serde_json::Value::Object(object) => object.get(name).and_then(text),
                    other if name == "value" => text(other),
                    _ => None,
                })
                .collect()
        })
        .collect();
    Ok(Shown {
        columns: names[..shown]
            .iter()
            .map(|name| PreviewColumn {
                name: name.clone(),
                type_: None,
            })
            .collect(),
        rows: out,
        omitted: names.len() - shown,
        bytes_read: 0,
    })
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn csv_sniffs_its_delimiter_and_keeps_complete_lines_only() {
        let shown = csv(b"a;b\n1;x\n2;y\n3;tr", false, 10).unwrap();
        expect_that!(shown.columns.len(), eq(2));
        expect_that!(
            shown.rows,
            eq(&vec![
                vec![Some("1".to_string()), Some("x".to_string())],
                vec![Some("2".to_string()), Some("y".to_string())],
            ])
        );
        let long = vec![b'a'; 100];
        expect_that!(
            csv(&long, false, 10).err().map(|e| e.to_string()),
            some(contains_substring("longer than"))
        );
        expect_that!(csv(b"a,b\n\0\0", true, 10).is_err(), eq(true));
    }

    #[gtest]
    fn json_lines_and_arrays_become_columns() {
        let lines = json(b"{\"a\":1,\"b\":\"x\"}\n{\"a\":null,\"c\":[1]}\n", true, 10).unwrap();
        let names: Vec<&str> = lines.columns.iter().map(|c| c.name.as_str()).collect();
        expect_that!(names, elements_are![eq(&"a"), eq(&"b"), eq(&"c")]);
        expect_that!(
            lines.rows[1],
            elements_are![none(), none(), some(eq("[1]"))]
        );
        let array = json(b"[{\"a\":1},{\"a\":2},{\"a\":3}]", true, 2).unwrap();
        expect_that!(array.rows.len(), eq(2));
        expect_that!(json(b"[{\"a\":1},", false, 2).is_err(), eq(true));
    }

    #[gtest]
    fn a_wide_row_group_shows_the_leading_columns_that_fit() {
        expect_that!(columns_within(&[10, 10, 10], 50, 100), eq(3));
        expect_that!(columns_within(&[10, 10, 10], 2, 100), eq(2));
        expect_that!(columns_within(&[40, 40, 40], 50, 100), eq(2));
        expect_that!(columns_within(&[200, 1], 50, 100), eq(0));
        expect_that!(columns_within(&[], 50, 100), eq(0));
    }

    #[gtest]
    fn cells_are_cut() {
        let long = "é".repeat(MAX_CELL_CHARS + 5);
        expect_that!(cut(long).chars().count(), eq(MAX_CELL_CHARS + 1));
    }
}
