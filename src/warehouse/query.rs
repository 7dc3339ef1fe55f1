//! Analysts' SQL: run a statement and render its result as a table, CSV or JSON.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, LargeStringArray, StringArray, StringViewArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

use super::{Result, Warehouse};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl Warehouse {
    /// Run one SQL statement and return its result as Arrow batches (with the schema, for empty
    /// results).
    pub fn query_arrow(
        &self,
        sql: &str,
    ) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
        self.with_conn("query", |c| -> duckdb::Result<_> {
            let mut stmt = c.prepare(sql)?;
            let arrow = stmt.query_arrow([])?;
            let schema = arrow.get_schema();
            let batches: Vec<RecordBatch> = arrow.collect();
            Ok((schema, batches))
        })
    }

    /// Run SQL and render the result.
    pub fn query(&self, sql: &str, format: OutputFormat) -> Result<String> {
        let (schema, batches) = self.query_arrow(sql)?;
        let text = match format {
            OutputFormat::Table => {
                let batches = if batches.is_empty() {
                    vec![RecordBatch::new_empty(schema.clone())]
                } else {
                    batches
                };
                arrow::util::pretty::pretty_format_batches(&batches)
                    .map(|t| t.to_string())
                    .map_err(|e| self.db_err("format the result", e))?
            }
            OutputFormat::Csv => {
                let mut out = String::new();
                let header: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| csv_field(f.name()))
                    .collect();
                out.push_str(&header.join(","));
                out.push('\n');
                let opts = FormatOptions::default().with_null("");
                for b in &batches {
                    let fmts: Vec<ArrayFormatter> = b
                        .columns()
                        .iter()
                        .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| self.db_err("format the result", e))?;
                    for row in 0..b.num_rows() {
                        let cells: Vec<String> = fmts
                            .iter()
                            .zip(b.columns())
                            .map(|(f, a)| {
                                if a.is_null(row) {
                                    String::new()
                                } else {
                                    csv_field(&f.value(row).to_string())
                                }
                            })
                            .collect();
                        out.push_str(&cells.join(","));
                        out.push('\n');
                    }
                }
                out
            }
            OutputFormat::Json => {
                let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                let rows: Vec<Value> = rows_of(&batches)
                    .into_iter()
                    .map(|r| Value::Object(names.iter().cloned().zip(r).collect()))
                    .collect();
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            }
        };
        Ok(text)
    }

    /// Run SQL and return every row as JSON values (numbers stay numbers).
    pub fn query_rows(&self, sql: &str) -> Result<Vec<Vec<Value>>> {
        let (_, batches) = self.query_arrow(sql)?;
        Ok(rows_of(&batches))
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<Vec<Value>> = b.columns().iter().map(json_values).collect();
        for row in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c[row].clone()).collect());
        }
    }
    out
}

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// One Arrow column as JSON values: integers, floats, booleans and strings as themselves,
/// everything else (timestamps, lists, structs) as its display text.
fn json_values(a: &ArrayRef) -> Vec<Value> {
    macro_rules! each {
        ($ty:ty, $f:expr) => {{
            let arr = a.as_any().downcast_ref::<$ty>().expect("type checked");
            (0..arr.len())
                .map(|i| {
                    if arr.is_null(i) {
                        Value::Null
                    } else {
                        $f(arr.value(i))
                    }
                })
                .collect()
        }};
    }
    match a.data_type() {
        DataType::Null => vec![Value::Null; a.len()],
        DataType::Boolean => each!(BooleanArray, Value::Bool),
        DataType::Int8 => each!(Int8Array, |v: i8| Value::from(v)),
        DataType::Int16 => each!(Int16Array, |v: i16| Value::from(v)),
        DataType::Int32 => each!(Int32Array, |v: i32| Value::from(v)),
        DataType::Int64 => each!(Int64Array, |v: i64| Value::from(v)),
        DataType::UInt8 => each!(UInt8Array, |v: u8| Value::from(v)),
        DataType::UInt16 => each!(UInt16Array, |v: u16| Value::from(v)),
        DataType::UInt32 => each!(UInt32Array, |v: u32| Value::from(v)),
        DataType::UInt64 => each!(UInt64Array, |v: u64| Value::from(v)),
        DataType::Float32 => each!(Float32Array, |v: f32| num(v as f64)),
        DataType::Float64 => each!(Float64Array, num),
        DataType::Utf8 => each!(StringArray, |v: &str| Value::from(v)),
        DataType::LargeUtf8 => each!(LargeStringArray, |v: &str| Value::from(v)),
        DataType::Utf8View => each!(StringViewArray, |v: &str| Value::from(v)),
        DataType::Decimal128(_, scale) => {
            let scale = *scale;
            each!(Decimal128Array, |v: i128| {
                if scale == 0 {
                    i64::try_from(v)
                        .map(Value::from)
                        .unwrap_or_else(|_| Value::from(v.to_string()))
                } else {
                    num(v as f64 / 10f64.powi(scale as i32))
                }
            })
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let values = json_values(d.values());
            let keys = d.normalized_keys();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        values[keys[i]].clone()
                    }
                })
                .collect()
        }
        _ => {
            let opts = FormatOptions::default();
            match ArrayFormatter::try_new(a.as_ref(), &opts) {
                Ok(f) => (0..a.len())
                    .map(|i| {
                        if a.is_null(i) {
                            Value::Null
                        } else {
                            Value::from(f.value(i).to_string())
                        }
                    })
                    .collect(),
                Err(_) => vec![Value::Null; a.len()],
            }
        }
    }
}
