//! Plain data shared by every stage: the cursor, the table schema and its changes, record ops.
//!
//! Nothing here does I/O. The types are small on purpose so that the source, the converter, the lake
//! and the warehouse can agree on them without depending on each other.

use std::fmt;

/// The keyset position of a stream: every committed row is `<= cursor`, every row still to read `>`.
///
/// Compared as a tuple. `id == i64::MAX` means "the whole second `updated` is done" (the `(H, +inf)`
/// cursor of DESIGN.md §2). For `id`-only streams `updated` is always 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    pub updated: i64,
    pub id: i64,
}

impl Cursor {
    pub const START: Cursor = Cursor { updated: 0, id: 0 };
    pub fn new(updated: i64, id: i64) -> Self {
        Cursor { updated, id }
    }
    /// The cursor after a fully read window ending at `h`: `(h, +inf)`.
    pub fn window_done(h: i64) -> Self {
        Cursor {
            updated: h,
            id: i64::MAX,
        }
    }
    pub fn second_done(&self) -> bool {
        self.id == i64::MAX
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.second_done() {
            write!(f, "({}, +inf)", self.updated)
        } else {
            write!(f, "({}, {})", self.updated, self.id)
        }
    }
}

/// How a stream walks its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorMode {
    /// `(updated, id)` keyset; for records that change.
    UpdatedId,
    /// `id` alone; for append-only records (messages, comments).
    Id,
}

/// The logical type of a warehouse column. The order is the widening order for scalars:
/// `Bool` and `Json` only widen to `Utf8`; `Int64` widens to `Float64` (when every integer seen is
/// exact in a double) or to `Utf8`; `Float64` widens to `Utf8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColType {
    Bool,
    Int64,
    Float64,
    Utf8,
    /// Objects and arrays, stored as JSON text (Arrow Utf8, DuckDB VARCHAR).
    Json,
    /// A `TIMESTAMPTZ` (system column `_hw_synced_at` only; source timestamps stay integers).
    TimestampUtc,
}

impl ColType {
    /// The DuckDB type a column of this logical type has.
    pub fn duckdb_type(self) -> &'static str {
        match self {
            ColType::Bool => "BOOLEAN",
            ColType::Int64 => "BIGINT",
            ColType::Float64 => "DOUBLE",
            ColType::Utf8 | ColType::Json => "VARCHAR",
            ColType::TimestampUtc => "TIMESTAMPTZ",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ColType::Bool => "bool",
            ColType::Int64 => "int64",
            ColType::Float64 => "float64",
            ColType::Utf8 => "utf8",
            ColType::Json => "json",
            ColType::TimestampUtc => "timestamp_utc",
        }
    }
    pub fn parse(s: &str) -> Option<ColType> {
        Some(match s {
            "bool" => ColType::Bool,
            "int64" => ColType::Int64,
            "float64" => ColType::Float64,
            "utf8" => ColType::Utf8,
            "json" => ColType::Json,
            "timestamp_utc" => ColType::TimestampUtc,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// The column's name in the warehouse table and in Parquet (always quoted in SQL).
    pub name: String,
    pub ty: ColType,
    /// The source field this column holds, when its name had to differ from the field's (see
    /// `convert::column_name_for`); `None` when the column is named exactly like the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Column {
    pub fn new(name: impl Into<String>, ty: ColType) -> Column {
        Column {
            name: name.into(),
            ty,
            field: None,
        }
    }

    /// The source field name this column is filled from.
    pub fn source_field(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.name)
    }
}

/// The source columns of one stream's table, in first-seen order (system columns excluded).
/// `id` is always first and always `Int64`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSchema {
    pub columns: Vec<Column>,
}

impl TableSchema {
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One change to a table schema, recorded in `highwater.schema_changes` and applied with ALTER.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaChange {
    pub column: String,
    /// `None` when the column is new.
    pub from: Option<ColType>,
    pub to: ColType,
    /// A short reason, e.g. `value "abc" in record 42 is a string`.
    pub reason: String,
}

/// What a lake / warehouse row records (`_hw_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Upsert,
    Repair,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Repair => "repair",
            Op::Delete => "delete",
        }
    }
}

/// One source record after the source has validated it: `id` (and `updated` for keyset streams)
/// parsed to integers, the whole object kept as the source sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: i64,
    /// The cursor timestamp (`updated`, or `updated_at` for contacts); 0 for `id`-mode streams.
    pub updated: i64,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    pub fn key(&self) -> Cursor {
        Cursor::new(self.updated, self.id)
    }
}

/// A source record that could not be loaded, kept whole in `highwater.rejects`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// The record's `id` as the source sent it, when it had one (it may be the reason).
    pub record_id: Option<String>,
    /// The record's JSON text (after the text policy of `source::text`).
    pub raw: String,
    pub reason: String,
}

/// The system columns added to every row, in this order, after the source columns.
pub const SYSTEM_COLUMNS: &[(&str, ColType)] = &[
    ("_hw_run_id", ColType::Utf8),
    ("_hw_synced_at", ColType::TimestampUtc),
    ("_hw_op", ColType::Utf8),
    ("_hw_hash", ColType::Int64),
];
