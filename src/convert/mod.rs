//! JSON records → Arrow record batches, with a schema that only ever widens.
//!
//! The source hands us parsed `serde_json` values; we build the Arrow arrays from them directly
//! instead of going through `arrow-json`, which silently coerces `"42"` and `5.7` into an Int64
//! column. Two passes over each batch: the first decides every column's type (widening columns
//! whose values no longer fit, DESIGN.md §4, policy in [`infer`]), the second appends each value
//! to a typed builder of exactly that type. Nothing is rounded, truncated or parsed: a value that
//! does not fit its column's type changes the column's type first.
//!
//! Decisions worth knowing:
//! - `id` is always the first column and always Int64 from [`Record::id`]; the JSON `id` field
//!   (a string for some record types) is not read, only hashed with the rest of the record.
//! - A new field whose values in a batch are all `null` creates no column yet: NULL and a missing
//!   key read the same, and a column typed on a guess would widen to text at the first real value.
//! - `""` stays an empty string; JSON `null` and a missing key are NULL.
//! - The int→float64 step is allowed only while no integer this converter has seen in the column
//!   is beyond ±2^53. The history of a column loaded from the warehouse is unknown to us; the
//!   warehouse must check its stored values before `ALTER … TYPE DOUBLE` (see [`SchemaChange`]).
//! - Integers beyond `i64` (serde_json `u64`) make the column utf8 and are written as their digits.
//!   Integers below `i64::MIN` and beyond `u64::MAX` are already doubles when serde_json hands
//!   them to us (no `arbitrary_precision`); they are written as such.
//! - Every source field becomes a column, whatever its name (see [`column_name_for`]): names are
//!   kept as sent and always quoted in SQL; only a name DuckDB cannot hold apart or that highwater
//!   reserves gets another column name, recorded in the column's `field` and in `schema_changes`.
//! - Text columns use 32-bit offsets: one batch must hold less than 2 GiB of text per column
//!   (checkpoints are orders of magnitude smaller).

mod hash;
mod infer;

pub use hash::content_hash;

use crate::model::{ColType, Column, Op, Record, SYSTEM_COLUMNS, SchemaChange, TableSchema};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Array, Int64Builder, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use infer::{Kind, widen};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// The name of the key column.
pub const ID_COLUMN: &str = "id";

/// Arrow field metadata key holding the logical [`ColType`] (`json` and `utf8` share Arrow Utf8).
pub const COLTYPE_METADATA_KEY: &str = "highwater.type";

/// Arrow field metadata key holding the source field name of a column whose name differs from it.
pub const FIELD_METADATA_KEY: &str = "highwater.field";

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "the stored schema is unusable: {reason}; fix the table's schema in the warehouse \
         (highwater.streams / the table) before syncing again"
    )]
    BadSchema { reason: String },
    #[error("internal error: value of record {record_id} does not fit column {column:?} ({ty})")]
    Internal {
        column: String,
        record_id: i64,
        ty: &'static str,
    },
    #[error("could not assemble the Arrow batch: {source}")]
    Arrow {
        #[source]
        source: ArrowError,
    },
}

/// The values of the system columns, the same for every row of a batch.
#[derive(Clone, Debug)]
pub struct SystemValues {
    pub run_id: String,
    /// `_hw_synced_at`, microseconds since the Unix epoch (UTC).
    pub synced_at_micros: i64,
    pub op: Op,
}

/// The Arrow type a column of logical type `t` is written with.
pub fn arrow_type(t: ColType) -> DataType {
    match t {
        ColType::Bool => DataType::Boolean,
        ColType::Int64 => DataType::Int64,
        ColType::Float64 => DataType::Float64,
        ColType::Utf8 | ColType::Json => DataType::Utf8,
        ColType::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The Arrow field of a column: nullable except `id` and the system columns, which every row has.
fn arrow_field(name: &str, ty: ColType, nullable: bool) -> Field {
    Field::new(name, arrow_type(ty), nullable).with_metadata(HashMap::from([(
        COLTYPE_METADATA_KEY.to_string(),
        ty.as_str().to_string(),
    )]))
}

/// Converts batches of records of one stream, remembering the stream's (widened) schema.
#[derive(Debug)]
pub struct Converter {
    schema: TableSchema,
    /// Column name → position in `schema.columns`.
    index: HashMap<String, usize>,
    /// Per column: an integer beyond ±2^53 was seen by this converter, so no float64 widening.
    inexact_ints: Vec<bool>,
    /// Changes made by `new` (an `id` column added to an empty schema), reported by the next call.
    pending: Vec<SchemaChange>,
    /// Set when the stored schema cannot be used; reported by every `convert`.
    invalid: Option<String>,
    arrow_schema: SchemaRef,
}

/// Marks a field position whose key is `id` in the per-position lookup cache.
const SLOT_ID: usize = usize::MAX;
/// Marks an unfilled position in the per-position lookup cache.
const SLOT_NONE: usize = usize::MAX - 1;

impl Converter {
    /// Starts from the schema stored in the warehouse (empty for a new stream).
    pub fn new(existing: TableSchema) -> Self {
        let mut schema = existing;
        let mut pending = Vec::new();
        if schema.columns.is_empty() {
            schema.columns.push(Column::new(ID_COLUMN, ColType::Int64));
            pending.push(SchemaChange {
                column: ID_COLUMN.to_string(),
                from: None,
                to: ColType::Int64,
                reason: "the record key column".to_string(),
            });
        }
        let invalid = validate(&schema).err();
        let index = field_index(&schema);
        let inexact_ints = vec![false; schema.columns.len()];
        let arrow_schema = build_arrow_schema(&schema);
        Converter {
            schema,
            index,
            inexact_ints,
            pending,
            invalid,
            arrow_schema,
        }
    }

    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The schema of the batches `convert` produces now: source columns, then system columns.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::clone(&self.arrow_schema)
    }

    /// Converts `records` into one batch (source columns in schema order, then the system
    /// columns) and returns the schema changes this call made. On error nothing changes.
    pub fn convert(
        &mut self,
        records: &[Record],
        sys: &SystemValues,
    ) -> Result<(RecordBatch, Vec<SchemaChange>), ConvertError> {
        if let Some(reason) = &self.invalid {
            return Err(ConvertError::BadSchema {
                reason: reason.clone(),
            });
        }
        let plan = self.plan(records)?;
        let batch = self.build(records, sys, &plan)?;
        // Commit only once the batch exists, so a failed call leaves the converter as it was.
        let mut changes = std::mem::take(&mut self.pending);
        changes.extend(plan.changes);
        self.schema = plan.schema;
        self.index = plan.index;
        self.inexact_ints = plan.inexact_ints;
        self.arrow_schema = batch.schema();
        Ok((batch, changes))
    }

    /// Pass 1: the type of every column after this batch.
    fn plan(&self, records: &[Record]) -> Result<Plan, ConvertError> {
        let base = self.schema.columns.len();
        let mut work: Vec<Work> = self
            .schema
            .columns
            .iter()
            .zip(&self.inexact_ints)
            .map(|(c, &inexact)| Work {
                ty: Some(c.ty),
                reason: None,
                inexact,
                text_bytes: 0,
            })
            .collect();
        let mut new_names: Vec<String> = Vec::new();
        let mut new_index: HashMap<String, usize> = HashMap::new();
        let mut slots: Vec<usize> = Vec::new();

        for rec in records {
            for (pos, (name, value)) in rec.fields.iter().enumerate() {
                let name_at = |i: usize| -> &str {
                    if i < base {
                        self.schema.columns[i].source_field()
                    } else {
                        &new_names[i - base]
                    }
                };
                // Records of one source nearly always list their keys in the same order, so the
                // column seen at this position in the previous record is checked first.
                let cached = slots.get(pos).copied().unwrap_or(SLOT_NONE);
                let col = match cached {
                    SLOT_ID if name == ID_COLUMN => continue,
                    c if c < SLOT_NONE && name_at(c) == name => c,
                    _ => {
                        let found = if name == ID_COLUMN {
                            SLOT_ID
                        } else if let Some(&i) = self.index.get(name.as_str()) {
                            i
                        } else if let Some(&i) = new_index.get(name.as_str()) {
                            i
                        } else if value.is_null() {
                            // Not a column yet and nothing to type it by.
                            continue;
                        } else {
                            let i = base + new_names.len();
                            new_names.push(name.clone());
                            new_index.insert(name.clone(), i);
                            work.push(Work {
                                ty: None,
                                reason: None,
                                inexact: false,
                                text_bytes: 0,
                            });
                            i
                        };
                        if slots.len() <= pos {
                            slots.resize(pos + 1, SLOT_NONE);
                        }
                        slots[pos] = found;
                        if found == SLOT_ID {
                            continue;
                        }
                        found
                    }
                };
                let w = &mut work[col];
                let kind = Kind::of(value);
                match kind {
                    Kind::Null => continue,
                    Kind::Int { exact: false } | Kind::BigInt => w.inexact = true,
                    _ => {}
                }
                if let Value::String(s) = value {
                    w.text_bytes += s.len();
                }
                let to = widen(w.ty, kind, w.inexact);
                if to != w.ty {
                    w.ty = to;
                    w.reason = Some(format!(
                        "value {} in record {} is {}",
                        preview(value),
                        rec.id,
                        kind.name()
                    ));
                }
            }
        }

        // Assemble the schema after this batch: existing columns in place (possibly wider), new
        // ones appended in first-seen order.
        let mut columns = self.schema.columns.clone();
        let mut inexact_ints = Vec::with_capacity(work.len());
        let mut changes = Vec::new();
        let mut taken: HashMap<String, String> = if new_names.is_empty() {
            HashMap::new()
        } else {
            columns
                .iter()
                .map(|c| (fold(&c.name), c.name.clone()))
                .collect()
        };
        for (i, w) in work.iter().enumerate() {
            let Some(ty) = w.ty else { continue };
            inexact_ints.push(w.inexact);
            if i < base {
                let col = &mut columns[i];
                if col.ty != ty {
                    changes.push(SchemaChange {
                        column: col.name.clone(),
                        from: Some(col.ty),
                        to: ty,
                        reason: w.reason.clone().unwrap_or_default(),
                    });
                    col.ty = ty;
                }
            } else {
                let field = &new_names[i - base];
                let (name, why) = column_name_for(field, &taken);
                taken.insert(fold(&name), name.clone());
                let reason = w.reason.clone().unwrap_or_default();
                changes.push(SchemaChange {
                    column: name.clone(),
                    from: None,
                    to: ty,
                    reason: match &why {
                        Some(why) => format!(
                            "source field {field:?} stored as column {name:?}: {why}; {reason}"
                        ),
                        None => reason,
                    },
                });
                columns.push(Column {
                    field: why.map(|_| field.clone()),
                    name,
                    ty,
                });
            }
        }
        let text_bytes = work
            .iter()
            .filter(|w| w.ty.is_some())
            .map(|w| w.text_bytes)
            .collect();
        let schema = TableSchema { columns };
        let index = if schema.columns.len() == base {
            self.index.clone()
        } else {
            field_index(&schema)
        };
        Ok(Plan {
            schema,
            index,
            inexact_ints,
            changes,
            text_bytes,
        })
    }

    /// Pass 2: one typed builder per column, every value appended as the planned type.
    fn build(
        &self,
        records: &[Record],
        sys: &SystemValues,
        plan: &Plan,
    ) -> Result<RecordBatch, ConvertError> {
        let n = records.len();
        let cols = &plan.schema.columns;
        let mut builders: Vec<Builder> = cols
            .iter()
            .zip(&plan.text_bytes)
            .map(|(c, &bytes)| Builder::new(c.ty, n, bytes))
            .collect();
        let id_pos = plan.index.get(ID_COLUMN).copied();
        // `filled[c] == row + 1` when column `c` got a value in the current row.
        let mut filled: Vec<usize> = vec![0; cols.len()];
        let mut slots: Vec<usize> = Vec::new();
        let mut hashes = Vec::with_capacity(n);

        for (row, rec) in records.iter().enumerate() {
            let stamp = row + 1;
            for (pos, (name, value)) in rec.fields.iter().enumerate() {
                let cached = slots.get(pos).copied().unwrap_or(SLOT_NONE);
                let col = match cached {
                    SLOT_ID if name == ID_COLUMN => continue,
                    c if c < SLOT_NONE && cols[c].source_field() == name => c,
                    _ => {
                        let found = if name == ID_COLUMN {
                            SLOT_ID
                        } else {
                            match plan.index.get(name.as_str()) {
                                Some(&i) => i,
                                // A field that is null in every record of the batch.
                                None => continue,
                            }
                        };
                        if slots.len() <= pos {
                            slots.resize(pos + 1, SLOT_NONE);
                        }
                        slots[pos] = found;
                        if found == SLOT_ID {
                            continue;
                        }
                        found
                    }
                };
                if !builders[col].append(value) {
                    return Err(ConvertError::Internal {
                        column: name.clone(),
                        record_id: rec.id,
                        ty: cols[col].ty.as_str(),
                    });
                }
                filled[col] = stamp;
            }
            for (c, b) in builders.iter_mut().enumerate() {
                if filled[c] != stamp && Some(c) != id_pos {
                    b.append_null();
                }
            }
            hashes.push(content_hash(&rec.fields));
        }

        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len() + SYSTEM_COLUMNS.len());
        for (c, b) in builders.into_iter().enumerate() {
            if Some(c) == id_pos {
                arrays.push(Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.id),
                )));
            } else {
                arrays.push(b.finish());
            }
        }
        arrays.extend(system_arrays(n, sys, hashes));
        let schema = if plan.schema == self.schema {
            Arc::clone(&self.arrow_schema)
        } else {
            build_arrow_schema(&plan.schema)
        };
        RecordBatch::try_new(schema, arrays).map_err(|source| ConvertError::Arrow { source })
    }
}

/// The system columns of `SYSTEM_COLUMNS`, in its order.
fn system_arrays(n: usize, sys: &SystemValues, hashes: Vec<i64>) -> Vec<ArrayRef> {
    let mut hashes = Some(hashes);
    SYSTEM_COLUMNS
        .iter()
        .map(|(name, _)| -> ArrayRef {
            match *name {
                "_hw_run_id" => Arc::new(repeat_str(&sys.run_id, n)),
                "_hw_synced_at" => Arc::new(
                    TimestampMicrosecondArray::from(vec![sys.synced_at_micros; n])
                        .with_timezone("UTC"),
                ),
                "_hw_op" => Arc::new(repeat_str(sys.op.as_str(), n)),
                // "_hw_hash"; SYSTEM_COLUMNS has no other entry (checked by a test).
                _ => Arc::new(Int64Array::from(hashes.take().unwrap_or_default())),
            }
        })
        .collect()
}

fn repeat_str(s: &str, n: usize) -> arrow::array::StringArray {
    let mut b = StringBuilder::with_capacity(n, s.len() * n);
    for _ in 0..n {
        b.append_value(s);
    }
    b.finish()
}

fn build_arrow_schema(schema: &TableSchema) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .columns
        .iter()
        .map(|c| {
            let f = arrow_field(&c.name, c.ty, c.name != ID_COLUMN);
            match &c.field {
                // Lake readers see which source field a renamed column holds.
                Some(src) => {
                    let mut meta = f.metadata().clone();
                    meta.insert(FIELD_METADATA_KEY.to_string(), src.clone());
                    f.with_metadata(meta)
                }
                None => f,
            }
        })
        .collect();
    fields.extend(
        SYSTEM_COLUMNS
            .iter()
            .map(|(name, ty)| arrow_field(name, *ty, false)),
    );
    Arc::new(Schema::new(fields))
}

fn is_reserved(name: &str) -> bool {
    SYSTEM_COLUMNS.iter().any(|(n, _)| *n == name) || name == "_hw_deleted_at"
}

/// Source field name → position of the column holding it.
fn field_index(schema: &TableSchema) -> HashMap<String, usize> {
    schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.source_field().to_string(), i))
        .collect()
}

/// Names compared the way the strictest reader compares them: DuckDB identifiers are
/// case-insensitive (so are Spark's and Trino's), so `Subject` and `subject` are one name.
/// Full Unicode lowercase is used: it merges everything ASCII folding merges, and more.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// The prefix of highwater's own columns; no source column may start with it.
pub const SYSTEM_PREFIX: &str = "_hw_";

/// Names (folded) a source column may not take besides the `_hw_` prefix, with the reason.
const RESERVED_NAMES: &[(&str, &str)] = &[
    (
        "rowid",
        "a column named rowid hides DuckDB's row-id pseudo-column, which the merge orders by",
    ),
    (
        "synced_date",
        "synced_date is the lake's Hive partition key: readers using hive_partitioning would see \
         the partition value instead of the field's",
    ),
];

/// The column name for a new source field, given the (folded) names already taken in the table.
///
/// The rule, applied the same way to Parquet and DuckDB (the converter names the Arrow field, and
/// both take it from there):
/// 1. the name is kept exactly as the source sent it — spaces, quotes, SQL keywords, any length,
///    any script: every identifier highwater writes into SQL is quoted;
/// 2. except what no column can be called: NUL characters become U+FFFD (SQL text is passed to
///    DuckDB as a C string), an empty name becomes `_`;
/// 3. a name starting with `_hw_` (in any case) gets the prefix `src`: `_hw_op` → `src_hw_op`,
///    since `_hw_` belongs to highwater's system columns, present and future;
/// 4. a name equal to a taken one after case folding ([`fold`]) — `Subject` after `subject` —
///    gets the first free suffix `__2`, `__3`, …: the field seen first keeps its name. So does a
///    name DuckDB or the lake layout give a meaning of their own: `rowid` (DuckDB's row-id
///    pseudo-column, hidden by a real column of that name) and `synced_date` (the lake's Hive
///    partition key, which hive-partitioned readers put in place of the field).
///
/// Returns the name and, when it differs from the field's, why (recorded in `schema_changes`).
pub fn column_name_for(field: &str, taken: &HashMap<String, String>) -> (String, Option<String>) {
    let mut why: Vec<String> = Vec::new();
    let mut base = field.to_string();
    if base.contains('\0') {
        base = base.replace('\0', "\u{FFFD}");
        why.push("NUL cannot appear in a column name".into());
    }
    if base.is_empty() {
        base = "_".into();
        why.push("a column name cannot be empty".into());
    }
    if fold(&base).starts_with(SYSTEM_PREFIX) {
        base = format!("src{base}");
        why.push(format!(
            "the prefix {SYSTEM_PREFIX} is reserved for highwater's columns"
        ));
    }
    let reserved = |name: &str| RESERVED_NAMES.iter().find(|(r, _)| *r == fold(name));
    if let Some((_, reason)) = reserved(&base) {
        why.push((*reason).to_string());
    }
    if let Some(other) = taken.get(&fold(&base)) {
        why.push(format!(
            "it equals column {other:?} when case is ignored, as DuckDB does"
        ));
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains_key(&fold(&name)) || reserved(&name).is_some() {
        name = format!("{base}__{n}");
        n += 1;
    }
    if why.is_empty() {
        (name, None)
    } else {
        (name, Some(why.join("; ")))
    }
}

fn validate(schema: &TableSchema) -> Result<(), String> {
    match schema.columns.first() {
        Some(c) if c.name == ID_COLUMN && c.ty == ColType::Int64 => {}
        _ => {
            return Err(format!(
                "the first column must be `{ID_COLUMN}` of type int64"
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for c in &schema.columns {
        if !seen.insert(c.name.as_str()) {
            return Err(format!("column {:?} appears twice", c.name));
        }
        if is_reserved(&c.name) {
            return Err(format!("column {:?} is a system column name", c.name));
        }
    }
    Ok(())
}

/// A short, char-boundary-safe rendering of a value for schema-change reasons.
fn preview(v: &Value) -> String {
    const MAX: usize = 40;
    let text = v.to_string();
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Pass-1 state of one column.
struct Work {
    ty: Option<ColType>,
    /// Why `ty` last changed in this batch.
    reason: Option<String>,
    inexact: bool,
    /// Bytes of string values, to size the text builder once.
    text_bytes: usize,
}

/// The outcome of pass 1: the schema after this batch, ready to commit.
struct Plan {
    schema: TableSchema,
    index: HashMap<String, usize>,
    inexact_ints: Vec<bool>,
    changes: Vec<SchemaChange>,
    /// Per final column, bytes of string values (a capacity hint).
    text_bytes: Vec<usize>,
}

/// A typed builder. `append` returns false when the value cannot be written to this type without
/// loss — impossible after planning, reported as an internal error rather than written wrong.
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    /// Only ever nulls: source values never stay in a timestamp column (see `infer::widen`).
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(ty: ColType, rows: usize, text_bytes: usize) -> Self {
        match ty {
            ColType::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColType::Int64 => Builder::Int(Int64Builder::with_capacity(rows)),
            ColType::TimestampUtc => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            ColType::Float64 => Builder::Float(Float64Builder::with_capacity(rows)),
            // Text capacity: the strings seen plus a few bytes for values written as text.
            ColType::Utf8 | ColType::Json => {
                Builder::Text(StringBuilder::with_capacity(rows, text_bytes + rows * 4))
            }
        }
    }

    fn append(&mut self, v: &Value) -> bool {
        if v.is_null() {
            self.append_null();
            return true;
        }
        match self {
            Builder::Bool(b) => match v {
                Value::Bool(x) => b.append_value(*x),
                _ => return false,
            },
            Builder::Int(b) => match v.as_i64() {
                Some(i) => b.append_value(i),
                None => return false,
            },
            Builder::Float(b) => match v {
                Value::Number(n) => match n.as_i64() {
                    Some(i) if i.unsigned_abs() <= infer::MAX_EXACT_INT => b.append_value(i as f64),
                    Some(_) => return false,
                    None if n.is_f64() => match n.as_f64() {
                        Some(f) => b.append_value(f),
                        None => return false,
                    },
                    None => return false,
                },
                _ => return false,
            },
            Builder::Timestamp(_) => return false,
            Builder::Text(b) => {
                match v {
                    Value::String(s) => b.append_value(s),
                    // Numbers, booleans, objects and arrays as their exact JSON text; writing
                    // into the builder's buffer cannot fail and avoids a String per value.
                    other => {
                        let _ = write!(b, "{other}");
                        b.append_value("");
                    }
                }
            }
        }
        true
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Float(mut b) => Arc::new(b.finish()),
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests;
