//! One checkpoint, one transaction: the table's schema brought up to date, the staged rows merged,
//! the lake file recorded, the run's progress and the stream's cursor saved. Either all of it
//! lands or none of it does.

use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use duckdb::{Connection, params};

use super::state::{FileRow, read_cursor, table_exists};
use super::{Result, Warehouse, WarehouseError, quote_ident};
use crate::model::{ColType, Cursor, Reject, SYSTEM_COLUMNS, SchemaChange, TableSchema};

const STAGE: &str = "_hw_stage";

/// Everything one checkpoint commits.
pub struct Checkpoint<'a> {
    pub stream: &'a str,
    pub record_type: &'a str,
    pub run_id: &'a str,
    /// Checkpoint number within the run, from 1.
    pub seq: u32,
    /// The stream's source columns after this checkpoint.
    pub schema: &'a TableSchema,
    pub schema_changes: &'a [SchemaChange],
    /// Rows to merge, all with one Arrow schema: source columns then system columns. Rows with
    /// `_hw_op = 'delete'` mark the row with that id deleted; every other row replaces its id.
    pub batches: &'a [RecordBatch],
    pub file: FileRow,
    /// The cursor after this checkpoint (`None`: reconcile, which does not move it).
    pub cursor: Option<Cursor>,
    /// The run's totals so far, saved with the checkpoint so an interrupted run still shows them.
    pub pages: u64,
    pub rows_fetched: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Rows inserted or replaced.
    pub upserted: u64,
    /// Rows newly marked deleted.
    pub marked_deleted: u64,
    pub schema_version: i32,
}

fn stage_type(dt: &DataType) -> Option<&'static str> {
    Some(match dt {
        DataType::Boolean => "BOOLEAN",
        DataType::Int64 => "BIGINT",
        DataType::Float64 => "DOUBLE",
        DataType::Utf8 => "VARCHAR",
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "TIMESTAMPTZ",
        _ => return None,
    })
}

impl Warehouse {
    /// Commit one checkpoint in one transaction (see the module docs).
    pub fn commit_checkpoint(&self, cp: &Checkpoint<'_>) -> Result<CommitStats> {
        self.commit_checkpoint_with(cp, &[])
    }

    /// [`Warehouse::commit_checkpoint`], and the records this checkpoint's pages rejected, kept in
    /// `highwater.rejects` in the same transaction: they are recorded exactly when the cursor that
    /// passes them is.
    pub fn commit_checkpoint_with(
        &self,
        cp: &Checkpoint<'_>,
        rejects: &[Reject],
    ) -> Result<CommitStats> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let conn = self.connect()?;
        conn.execute_batch("BEGIN TRANSACTION")
            .map_err(|e| self.db_err("begin", e))?;
        let stats = match self.merge(&conn, cp).and_then(|s| {
            insert_rejects(&conn, cp.stream, cp.run_id, rejects)
                .map(|()| s)
                .map_err(|e| self.db_err("record rejected records", e))
        }) {
            Ok(s) => s,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        conn.execute_batch("COMMIT").map_err(|e| {
            self.db_err(
                &format!("commit checkpoint {} of run {}", cp.seq, cp.run_id),
                e,
            )
        })?;
        // The analyst view follows the table's columns; it is derived data, so a failure here is
        // reported and never undoes the commit.
        if (!cp.schema_changes.is_empty() || !view_exists(&conn, cp.stream).unwrap_or(false))
            && let Err(e) = refresh_view(&conn, cp.stream, cp.record_type)
        {
            tracing::warn!(stream = cp.stream, error = %e, "analyst view not refreshed");
        }
        Ok(stats)
    }

    fn merge(&self, c: &Connection, cp: &Checkpoint<'_>) -> Result<CommitStats> {
        let err = |what: &str| {
            let what = what.to_string();
            move |e: duckdb::Error| {
                self.db_err(
                    &format!(
                        "{what} ({} run {} checkpoint {})",
                        cp.stream, cp.run_id, cp.seq
                    ),
                    e,
                )
            }
        };
        let table = quote_ident(cp.stream);
        apply_schema(c, cp.stream, cp.schema).map_err(err("bring the table schema up to date"))?;

        let mut stats = CommitStats::default();
        let rows: usize = cp.batches.iter().map(|b| b.num_rows()).sum();
        if rows > 0 {
            let arrow_schema = cp.batches[0].schema();
            if cp.batches.iter().any(|b| b.schema() != arrow_schema) {
                return Err(WarehouseError::Invalid {
                    path: self.path().display().to_string(),
                    message: format!(
                        "checkpoint {} of run {}: batches differ in schema",
                        cp.seq, cp.run_id
                    ),
                });
            }
            let mut cols = Vec::new();
            let mut defs = Vec::new();
            for f in arrow_schema.fields() {
                let ty = stage_type(f.data_type()).ok_or_else(|| WarehouseError::Invalid {
                    path: self.path().display().to_string(),
                    message: format!(
                        "column {} has Arrow type {} the warehouse does not take",
                        f.name(),
                        f.data_type()
                    ),
                })?;
                cols.push(quote_ident(f.name()));
                defs.push(format!("{} {ty}", quote_ident(f.name())));
            }
            c.execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE {STAGE} ({})",
                defs.join(", ")
            ))
            .map_err(err("create the staging table"))?;
            {
                let mut app = c
                    .appender_to_catalog_and_db(STAGE, "temp", "main")
                    .map_err(err("open the staging appender"))?;
                for b in cp.batches {
                    app.append_record_batch(b.clone())
                        .map_err(err("stage rows"))?;
                }
                app.flush().map_err(err("stage rows"))?;
            }
            let has_op = arrow_schema.field_with_name("_hw_op").is_ok();
            if has_op {
                stats.marked_deleted = c
                    .execute(
                        &format!(
                            "UPDATE {table} AS t SET _hw_deleted_at = s._hw_synced_at, _hw_op = 'delete', \
                             _hw_run_id = s._hw_run_id, _hw_synced_at = s._hw_synced_at \
                             FROM {STAGE} AS s WHERE t.id = s.id AND s._hw_op = 'delete' AND t._hw_deleted_at IS NULL"
                        ),
                        [],
                    )
                    .map_err(err("mark deleted rows"))? as u64;
            }
            let live = if has_op {
                "WHERE _hw_op <> 'delete'"
            } else {
                ""
            };
            c.execute(
                &format!("DELETE FROM {table} WHERE id IN (SELECT id FROM {STAGE} {live})"),
                [],
            )
            .map_err(err("replace rows"))?;
            let list = cols.join(", ");
            stats.upserted = c
                .execute(
                    &format!(
                        "INSERT INTO {table} ({list}) SELECT {list} FROM {STAGE} {live} \
                         QUALIFY row_number() OVER (PARTITION BY id ORDER BY rowid DESC) = 1 ORDER BY id"
                    ),
                    [],
                )
                .map_err(err("insert rows"))? as u64;
            c.execute_batch(&format!("DROP TABLE {STAGE}"))
                .map_err(err("drop the staging table"))?;
        }

        c.execute(
            "INSERT INTO highwater.files (key, stream, run_id, seq, rows, bytes, committed_at) VALUES (?, ?, ?, ?, ?, ?, now())",
            params![cp.file.key, cp.stream, cp.run_id, cp.seq as i64, cp.file.rows as i64, cp.file.bytes as i64],
        )
        .map_err(err("record the lake file"))?;
        for ch in cp.schema_changes {
            c.execute(
                "INSERT INTO highwater.schema_changes VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                params![
                    cp.stream,
                    cp.run_id,
                    cp.seq as i64,
                    ch.column,
                    ch.from.map(ColType::as_str),
                    ch.to.as_str(),
                    ch.reason
                ],
            )
            .map_err(err("record schema changes"))?;
        }
        let schema_json =
            serde_json::to_string(cp.schema).unwrap_or_else(|_| "{\"columns\":[]}".into());
        let bump = i32::from(!cp.schema_changes.is_empty());
        c.execute(
            "UPDATE highwater.streams SET schema_json = ?, schema_version = schema_version + ?, updated_at = now() WHERE name = ?",
            params![schema_json, bump, cp.stream],
        )
        .map_err(err("save the schema"))?;
        if let Some(cur) = cp.cursor {
            let old = read_cursor(c, cp.stream).map_err(err("read the cursor"))?;
            if old.is_some_and(|o| cur < o) {
                return Err(WarehouseError::Invalid {
                    path: self.path().display().to_string(),
                    message: format!(
                        "stream {}: checkpoint {} of run {} would move the cursor back from {} to {cur}; nothing committed",
                        cp.stream,
                        cp.seq,
                        cp.run_id,
                        old.unwrap_or_default()
                    ),
                });
            }
            c.execute(
                "UPDATE highwater.streams SET cursor_updated = ?, cursor_id = ? WHERE name = ?",
                params![cur.updated, cur.id, cp.stream],
            )
            .map_err(err("save the cursor"))?;
        }
        c.execute(
            "UPDATE highwater.runs SET pages = ?, rows_fetched = ?, rows_written = rows_written + ?, \
             checkpoints = checkpoints + 1, cursor_after_updated = coalesce(?, cursor_after_updated), \
             cursor_after_id = coalesce(?, cursor_after_id) WHERE run_id = ? AND stream = ?",
            params![
                cp.pages as i64,
                cp.rows_fetched as i64,
                rows as i64,
                cp.cursor.map(|x| x.updated),
                cp.cursor.map(|x| x.id),
                cp.run_id,
                cp.stream
            ],
        )
        .map_err(err("save run progress"))?;
        stats.schema_version = c
            .query_row(
                "SELECT schema_version FROM highwater.streams WHERE name = ?",
                params![cp.stream],
                |r| r.get(0),
            )
            .map_err(err("read the schema version"))?;
        Ok(stats)
    }
}

/// Keep rejected records (inside the caller's transaction).
pub(crate) fn insert_rejects(
    c: &Connection,
    stream: &str,
    run_id: &str,
    rejects: &[Reject],
) -> duckdb::Result<()> {
    if rejects.is_empty() {
        return Ok(());
    }
    let mut stmt = c.prepare("INSERT INTO highwater.rejects VALUES (?, ?, ?, ?, ?, now())")?;
    for r in rejects {
        stmt.execute(params![stream, run_id, r.record_id, r.raw, r.reason])?;
    }
    Ok(())
}

/// Create the stream's table, or add and widen columns to match `schema`.
pub(crate) fn apply_schema(
    c: &Connection,
    stream: &str,
    schema: &TableSchema,
) -> duckdb::Result<()> {
    let table = quote_ident(stream);
    if !table_exists(c, stream)? {
        let mut defs: Vec<String> = schema
            .columns
            .iter()
            .map(|col| format!("{} {}", quote_ident(&col.name), col.ty.duckdb_type()))
            .collect();
        if !schema.columns.iter().any(|col| col.name == "id") {
            defs.insert(0, "\"id\" BIGINT".into());
        }
        for (name, ty) in SYSTEM_COLUMNS {
            defs.push(format!("{} {}", quote_ident(name), ty.duckdb_type()));
        }
        defs.push("\"_hw_deleted_at\" TIMESTAMPTZ".into());
        c.execute_batch(&format!("CREATE TABLE {table} ({})", defs.join(", ")))?;
        return Ok(());
    }
    let mut stmt = c.prepare(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?",
    )?;
    let existing: Vec<(String, String)> = stmt
        .query_map(params![stream], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<duckdb::Result<_>>()?;
    for col in &schema.columns {
        let want = col.ty.duckdb_type();
        match existing.iter().find(|(n, _)| *n == col.name) {
            None => c.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {} {want}",
                quote_ident(&col.name)
            ))?,
            // Only ever widen: a schema that is behind the table (re-derived state, an older
            // run's view of it) must never narrow a column and lose what it holds.
            Some((_, have)) if widens(have, want) => {
                let name = quote_ident(&col.name);
                // A double holds integers exactly only up to 2^53: a column holding larger ones
                // becomes text instead, so no stored value is rounded.
                let want = if have == "BIGINT" && want == "DOUBLE" {
                    let big: i64 = c.query_row(
                        &format!(
                            "SELECT count(*) FROM {table} WHERE {name} > 9007199254740992 OR {name} < -9007199254740992"
                        ),
                        [],
                        |r| r.get(0),
                    )?;
                    if big > 0 {
                        tracing::warn!(stream, column = %col.name, rows = big,
                            "integers beyond 2^53 cannot widen to DOUBLE exactly; the column becomes VARCHAR");
                        "VARCHAR"
                    } else {
                        want
                    }
                } else {
                    want
                };
                c.execute_batch(&format!(
                    "ALTER TABLE {table} ALTER COLUMN {name} SET DATA TYPE {want}"
                ))?
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether changing a column from DuckDB type `have` to `want` widens it (int → double → text).
fn widens(have: &str, want: &str) -> bool {
    match want {
        "VARCHAR" => have != "VARCHAR",
        "DOUBLE" => have == "BIGINT",
        _ => false,
    }
}

/// The source columns of a stream's table as a schema (system columns left out). Text columns
/// come back as `utf8`: the table does not say which held JSON.
pub(crate) fn table_columns(c: &Connection, stream: &str) -> duckdb::Result<TableSchema> {
    let mut stmt = c.prepare(
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map(params![stream], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<duckdb::Result<_>>()?;
    let columns = rows
        .into_iter()
        .filter(|(n, _)| !n.starts_with("_hw_"))
        .map(|(name, ty)| crate::model::Column {
            name,
            field: None,
            ty: match ty.as_str() {
                "BOOLEAN" => ColType::Bool,
                "BIGINT" => ColType::Int64,
                "DOUBLE" => ColType::Float64,
                t if t.starts_with("TIMESTAMP") => ColType::TimestampUtc,
                _ => ColType::Utf8,
            },
        })
        .collect();
    Ok(TableSchema { columns })
}

pub(crate) fn view_exists(c: &Connection, stream: &str) -> duckdb::Result<bool> {
    let n: i64 = c.query_row(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'analytics' AND table_name = ?",
        params![stream],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn view_template(record_type: &str) -> &'static str {
    match record_type {
        "ticket" => include_str!("../../sql/views/ticket.sql"),
        "message" => include_str!("../../sql/views/message.sql"),
        "contact" => include_str!("../../sql/views/contact.sql"),
        _ => include_str!("../../sql/views/default.sql"),
    }
}

/// (Re)create `analytics.<stream>` from the record type's template under `sql/views/`.
///
/// A young or filtered stream may not have every column a template names yet. Template lines
/// of the select list and `AND` lines of the WHERE clause that name a missing column are left
/// out, so the view always fits the table (see the header of `sql/views/ticket.sql`).
pub(crate) fn refresh_view(c: &Connection, stream: &str, record_type: &str) -> duckdb::Result<()> {
    let mut stmt = c.prepare(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?",
    )?;
    let columns: std::collections::HashSet<String> = stmt
        .query_map(params![stream], |r| r.get::<_, String>(0))?
        .collect::<duckdb::Result<_>>()?;
    let sql = render_view(view_template(record_type), stream, &columns);
    match c.execute_batch(&sql) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(stream, error = %e, "typed analyst view failed; using the default view");
            c.execute_batch(&render_view(
                include_str!("../../sql/views/default.sql"),
                stream,
                &columns,
            ))
        }
    }
}

const SQL_WORDS: &[&str] = &[
    "as",
    "and",
    "or",
    "not",
    "is",
    "null",
    "distinct",
    "from",
    "cast",
    "try_cast",
    "nullif",
    "to_timestamp",
    "double",
    "bigint",
    "varchar",
    "boolean",
    "true",
    "false",
    "case",
    "when",
    "then",
    "else",
    "end",
    "where",
    "in",
    "coalesce",
];

/// Source columns a template line names: identifiers that are not SQL words, not function names
/// (followed by `(`) and not aliases (after `AS`).
fn line_columns(line: &str) -> Vec<String> {
    let code = line.split("--").next().unwrap_or("");
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut prev_as = false;
    let mut i = 0;
    while i < bytes.len() {
        let ch = bytes[i] as char;
        if ch == '\'' {
            // skip string literals
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &code[start..i];
            let lower = word.to_ascii_lowercase();
            let next = code[i..].trim_start().chars().next();
            let is_fn = next == Some('(');
            if !prev_as && !is_fn && !SQL_WORDS.contains(&lower.as_str()) {
                out.push(word.to_string());
            }
            prev_as = lower == "as";
            continue;
        }
        if !ch.is_whitespace() {
            prev_as = false;
        }
        i += 1;
    }
    out
}

fn render_view(tpl: &str, stream: &str, columns: &std::collections::HashSet<String>) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut in_select = false;
    for line in tpl.lines() {
        let t = line.trim_start();
        let upper = t.to_ascii_uppercase();
        if upper.starts_with("SELECT") {
            in_select = true;
            kept.push(line.to_string());
            continue;
        }
        if upper.starts_with("FROM") {
            in_select = false;
            // The last kept select line must not end with a comma.
            if let Some(last) = kept
                .iter_mut()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
            {
                let code_end = last.trim_end();
                if let Some(stripped) = code_end.strip_suffix(',') {
                    *last = stripped.to_string();
                }
            }
            kept.push(line.to_string());
            continue;
        }
        let conditional =
            (in_select && !t.is_empty() && !t.starts_with("--") && !t.starts_with('*'))
                || upper.starts_with("AND ");
        if conditional && line_columns(line).iter().any(|c| !columns.contains(c)) {
            continue;
        }
        kept.push(line.to_string());
    }
    kept.join("\n")
        .replace("{view}", &quote_ident(stream))
        .replace("{table}", &format!("main.{}", quote_ident(stream)))
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn template_lines_naming_missing_columns_are_left_out() {
        let cols: std::collections::HashSet<String> = [
            "id",
            "updated",
            "status_id",
            "_hw_synced_at",
            "_hw_deleted_at",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let sql = render_view(view_template("ticket"), "tickets", &cols);
        assert!(
            sql.contains("to_timestamp(NULLIF(updated, 0)) AS updated_at"),
            "{sql}"
        );
        assert!(!sql.contains("mask"), "{sql}");
        assert!(sql.contains("status_id IS DISTINCT FROM 3"), "{sql}");
        assert!(
            !sql.contains("synced_at,\nFROM") && sql.contains("AS synced_at\nFROM"),
            "{sql}"
        );
        assert_eq!(
            line_columns("    to_timestamp(NULLIF(closed_at, 0)) AS closed_at,"),
            vec!["closed_at"]
        );
        assert_eq!(
            line_columns("  AND status_id IS DISTINCT FROM 3;"),
            vec!["status_id"]
        );
    }
}
