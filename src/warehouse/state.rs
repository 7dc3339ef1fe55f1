//! Streams, runs and files: the bookkeeping in schema `highwater`.

use duckdb::{Connection, OptionalExt, params};

use super::{Result, Warehouse, WarehouseError, quote_ident};
use crate::model::{Cursor, CursorMode, TableSchema};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Sync,
    Reconcile,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Sync => "sync",
            RunKind::Reconcile => "reconcile",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Aborted,
    RateLimited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

/// Counters of one run, stored in `highwater.runs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub pages: u64,
    pub rows_fetched: u64,
    pub rows_written: u64,
    pub checkpoints: u64,
    pub requests: u64,
    pub retries: u64,
    pub wait_ms: u64,
    pub scanned: u64,
    pub deleted: u64,
    pub undeleted: u64,
    pub repaired: u64,
}

/// Where a stream starts from.
#[derive(Clone, Debug, Default)]
pub struct StreamState {
    /// `None` before the first committed checkpoint or finished run.
    pub cursor: Option<Cursor>,
    pub schema: TableSchema,
    pub schema_version: i32,
}

#[derive(Clone, Debug)]
pub struct RunStart {
    pub run_id: String,
    pub stream: String,
    pub record_type: String,
    pub cursor_mode: CursorMode,
    pub cursor_field: String,
    pub kind: RunKind,
    pub window_end: Option<i64>,
    pub cursor_before: Option<Cursor>,
    /// The stream's extra Cerb filter, recorded with the stream the first time.
    pub filter: String,
}

#[derive(Clone, Debug)]
pub struct RunFinish {
    pub run_id: String,
    pub stream: String,
    pub outcome: Outcome,
    pub error: Option<String>,
    /// The cursor to save with the end of the run (a sync that read its whole window); `None`
    /// leaves the cursor where the last checkpoint put it.
    pub final_cursor: Option<Cursor>,
    pub counts: RunCounts,
    /// JSON details kept with the run (reconcile's sample ids and warnings).
    pub details: Option<serde_json::Value>,
}

/// A lake file committed with a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileRow {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CommittedFile {
    pub stream: String,
    pub run_id: String,
    pub seq: u32,
    #[serde(flatten)]
    pub file: FileRow,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub kind: String,
    pub outcome: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub window_end: Option<i64>,
    pub counts: RunCounts,
    pub error: Option<String>,
    pub details: Option<serde_json::Value>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamStatus {
    pub stream: String,
    pub record_type: String,
    pub cursor_updated: Option<i64>,
    pub cursor_id: Option<i64>,
    pub schema_version: i32,
    pub rows_live: u64,
    pub rows_deleted: u64,
    pub last_run: Option<RunSummary>,
    pub last_reconcile: Option<RunSummary>,
}

impl StreamStatus {
    pub fn cursor(&self) -> Option<Cursor> {
        Some(Cursor::new(self.cursor_updated?, self.cursor_id?))
    }
}

fn micros_to_rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

pub(crate) fn table_exists(c: &Connection, table: &str) -> duckdb::Result<bool> {
    let n: i64 = c.query_row(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
        params![table],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

pub(crate) fn read_cursor(c: &Connection, stream: &str) -> duckdb::Result<Option<Cursor>> {
    let row: Option<(Option<i64>, Option<i64>)> = c
        .query_row(
            "SELECT cursor_updated, cursor_id FROM highwater.streams WHERE name = ?",
            params![stream],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((Some(u), Some(i))) => Some(Cursor::new(u, i)),
        _ => None,
    })
}

fn mode_str(m: CursorMode) -> &'static str {
    match m {
        CursorMode::UpdatedId => "updated_id",
        CursorMode::Id => "id",
    }
}

impl Warehouse {
    /// The cursor and schema a stream starts from. Refuses a stream whose cursor mode or field
    /// changed since it was first loaded: its saved cursor would mean something else.
    pub fn stream_state(
        &self,
        stream: &str,
        mode: CursorMode,
        cursor_field: &str,
    ) -> Result<StreamState> {
        let row = self.with_conn("read stream state", |c| {
            c.query_row(
                "SELECT cursor_mode, cursor_field, cursor_updated, cursor_id, schema_json, schema_version \
                 FROM highwater.streams WHERE name = ?",
                params![stream],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i32>(5)?,
                    ))
                },
            )
            .optional()
        })?;
        let Some((m, f, cu, ci, schema_json, version)) = row else {
            return self.derive_state(stream, mode, cursor_field);
        };
        if m != mode_str(mode) || f != cursor_field {
            return Err(WarehouseError::Invalid {
                path: self.path().display().to_string(),
                message: format!(
                    "stream {stream} was loaded with cursor {m} on `{f}`, the config now says {} on `{cursor_field}`; \
                     a saved cursor cannot change meaning: give the stream a new name to reload it",
                    mode_str(mode)
                ),
            });
        }
        let schema: TableSchema =
            serde_json::from_str(&schema_json).map_err(|e| WarehouseError::Invalid {
                path: self.path().display().to_string(),
                message: format!("highwater.streams.schema_json of {stream} is not readable: {e}"),
            })?;
        // A stream row without a cursor has never committed a sync checkpoint (rows a reconcile
        // loaded may be there): it starts from the beginning.
        let cursor = match (cu, ci) {
            (Some(u), Some(i)) => Some(Cursor::new(u, i)),
            _ => None,
        };
        Ok(StreamState {
            cursor,
            schema,
            schema_version: version,
        })
    }

    /// A stream whose saved state is gone while its table has rows: the cursor is re-derived from
    /// the rows a sync committed (`_hw_op = 'upsert'`: reconcile's repairs arrive in id order, so
    /// their keys say nothing about what a sync has read) — the greatest `(cursor_field, id)` — and
    /// the schema from the table's columns, instead of silently starting from zero. Rows of that
    /// last second are read again and merged, which is harmless.
    fn derive_state(
        &self,
        stream: &str,
        mode: CursorMode,
        cursor_field: &str,
    ) -> Result<StreamState> {
        self.with_conn("re-derive stream state from the table", |c| -> duckdb::Result<StreamState> {
            if !table_exists(c, stream)? {
                return Ok::<_, duckdb::Error>(StreamState::default());
            }
            let table = super::quote_ident(stream);
            let columns = super::commit::table_columns(c, stream)?;
            let cursor: Option<Cursor> = match mode {
                CursorMode::Id => c
                    .query_row(&format!("SELECT max(id) FROM main.{table} WHERE _hw_op = 'upsert'"), [], |r| r.get::<_, Option<i64>>(0))?
                    .map(|id| Cursor::new(0, id)),
                CursorMode::UpdatedId if columns.get(cursor_field).is_some() => c
                    .query_row(
                        &format!(
                            "SELECT coalesce(TRY_CAST({f} AS BIGINT), 0), id FROM main.{table} \
                             WHERE _hw_op = 'upsert' ORDER BY 1 DESC, 2 DESC LIMIT 1",
                            f = super::quote_ident(cursor_field)
                        ),
                        [],
                        |r| Ok(Cursor::new(r.get(0)?, r.get(1)?)),
                    )
                    .optional()?,
                CursorMode::UpdatedId => None,
            };
            if let Some(cur) = cursor {
                tracing::warn!(stream, cursor = %cur,
                    "no saved cursor for a stream whose table has rows; re-derived it from the committed rows");
            }
            Ok(StreamState {
                cursor,
                schema: if cursor.is_some() { columns } else { TableSchema::default() },
                schema_version: 0,
            })
        })
    }

    /// Refuses a stream whose record type or filter changed since it was first loaded: its table
    /// and cursor belong to the old one. The filter is recorded the first time.
    pub fn check_stream_identity(
        &self,
        stream: &str,
        record_type: &str,
        filter: &str,
    ) -> Result<()> {
        let row = self.with_conn("read stream identity", |c| {
            c.query_row(
                "SELECT record_type, filter FROM highwater.streams WHERE name = ?",
                params![stream],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()
        })?;
        let Some((rt, f)) = row else { return Ok(()) };
        let refuse = |what: String| WarehouseError::Invalid {
            path: self.path().display().to_string(),
            message: format!(
                "stream {stream} {what}; its table and cursor belong to the old one: give the stream a new name to load it afresh"
            ),
        };
        if rt != record_type {
            return Err(refuse(format!(
                "was loaded from Cerb {rt:?} records, the config now says {record_type:?}"
            )));
        }
        match f {
            Some(f) if f != filter => Err(refuse(format!(
                "was loaded with filter {f:?}, the config now says {filter:?}"
            ))),
            Some(_) => Ok(()),
            None => self.with_conn("record the stream filter", |c| {
                c.execute(
                    "UPDATE highwater.streams SET filter = ? WHERE name = ?",
                    params![filter, stream],
                )
                .map(|_| ())
            }),
        }
    }

    /// Record a run as `running` (and the stream, the first time it is seen).
    pub fn start_run(&self, s: &RunStart) -> Result<()> {
        self.in_tx("record the start of a run", |c| {
            ensure_stream(c, &s.stream, &s.record_type, s.cursor_mode, &s.cursor_field, &s.filter)
                .map_err(|e| self.db_err("record the stream", e))?;
            c.execute(
                "INSERT INTO highwater.runs (run_id, stream, kind, outcome, started_at, window_end, \
                 cursor_before_updated, cursor_before_id, pid) VALUES (?, ?, ?, 'running', now(), ?, ?, ?, ?)",
                params![
                    s.run_id,
                    s.stream,
                    s.kind.as_str(),
                    s.window_end,
                    s.cursor_before.map(|c| c.updated),
                    s.cursor_before.map(|c| c.id),
                    std::process::id() as i64
                ],
            )
            .map_err(|e| self.db_err("record the start of a run", e))?;
            // The stream's table exists from its first run on, even before a row lands.
            if !table_exists(c, &s.stream).map_err(|e| self.db_err("look up the table", e))? {
                let json: String = c
                    .query_row("SELECT schema_json FROM highwater.streams WHERE name = ?", params![s.stream], |r| r.get(0))
                    .map_err(|e| self.db_err("read the schema", e))?;
                let schema: TableSchema = serde_json::from_str(&json).unwrap_or_default();
                super::commit::apply_schema(c, &s.stream, &schema).map_err(|e| self.db_err("create the table", e))?;
            }
            Ok(())
        })?;
        let view = self.with_conn("create the analyst view", |c| {
            if super::commit::view_exists(c, &s.stream)? {
                return Ok(());
            }
            super::commit::refresh_view(c, &s.stream, &s.record_type)
        });
        if let Err(e) = view {
            tracing::warn!(stream = %s.stream, error = %e, "analyst view not created");
        }
        Ok(())
    }

    /// Record the end of a run, and its final cursor in the same transaction. The cursor never
    /// moves backwards.
    pub fn finish_run(&self, f: &RunFinish) -> Result<()> {
        self.finish_run_with(f, &[])
    }

    /// [`Warehouse::finish_run`], and rejected records not yet kept by a checkpoint, in the same
    /// transaction as the final cursor that passes them.
    pub fn finish_run_with(&self, f: &RunFinish, rejects: &[crate::model::Reject]) -> Result<()> {
        self.in_tx("record the end of a run", |c| {
            super::commit::insert_rejects(c, &f.stream, &f.run_id, rejects)
                .map_err(|e| self.db_err("record rejected records", e))?;
            let mut after = read_cursor(c, &f.stream).map_err(|e| self.db_err("read cursor", e))?;
            if let Some(fin) = f.final_cursor
                && after.is_none_or(|cur| fin > cur)
            {
                c.execute(
                    "UPDATE highwater.streams SET cursor_updated = ?, cursor_id = ?, updated_at = now() WHERE name = ?",
                    params![fin.updated, fin.id, f.stream],
                )
                .map_err(|e| self.db_err("save the cursor", e))?;
                after = Some(fin);
            }
            let k = &f.counts;
            c.execute(
                "UPDATE highwater.runs SET outcome = ?, finished_at = now(), error = ?, \
                 cursor_after_updated = ?, cursor_after_id = ?, pages = ?, rows_fetched = ?, rows_written = ?, \
                 checkpoints = ?, requests = ?, retries = ?, wait_ms = ?, scanned = ?, deleted = ?, \
                 undeleted = ?, repaired = ?, details = ? WHERE run_id = ? AND stream = ?",
                params![
                    f.outcome.as_str(),
                    f.error,
                    after.map(|c| c.updated),
                    after.map(|c| c.id),
                    k.pages as i64,
                    k.rows_fetched as i64,
                    k.rows_written as i64,
                    k.checkpoints as i64,
                    k.requests as i64,
                    k.retries as i64,
                    k.wait_ms as i64,
                    k.scanned as i64,
                    k.deleted as i64,
                    k.undeleted as i64,
                    k.repaired as i64,
                    f.details.as_ref().map(|d| d.to_string()),
                    f.run_id,
                    f.stream
                ],
            )
            .map_err(|e| self.db_err("record the end of a run", e))?;
            Ok(())
        })
    }

    /// Runs still `running` belong to a process that died (the caller holds the run lock): mark
    /// them aborted. Returns their ids.
    pub fn abort_interrupted_runs(&self) -> Result<Vec<String>> {
        self.in_tx("mark interrupted runs aborted", |c| {
            let mut stmt = c
                .prepare("SELECT DISTINCT run_id FROM highwater.runs WHERE outcome = 'running' ORDER BY run_id")
                .map_err(|e| self.db_err("list running runs", e))?;
            let ids: Vec<String> = stmt
                .query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.db_err("list running runs", e))?;
            if !ids.is_empty() {
                c.execute(
                    "UPDATE highwater.runs SET outcome = 'aborted', finished_at = now(), \
                     error = coalesce(error, 'the process running it stopped before the run finished; \
                     its committed checkpoints are kept') \
                     WHERE outcome = 'running'",
                    [],
                )
                .map_err(|e| self.db_err("mark runs aborted", e))?;
            }
            Ok(ids)
        })
    }

    /// Every committed lake file, optionally of one stream, in commit order.
    pub fn committed_files(&self, stream: Option<&str>) -> Result<Vec<CommittedFile>> {
        self.with_conn("list committed files", |c| {
            let mut stmt = c.prepare(
                "SELECT stream, run_id, seq, key, rows, bytes FROM highwater.files \
                 WHERE ? IS NULL OR stream = ? ORDER BY committed_at, run_id, seq",
            )?;
            let rows = stmt.query_map(params![stream, stream], |r| {
                Ok(CommittedFile {
                    stream: r.get(0)?,
                    run_id: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u32,
                    file: FileRow {
                        key: r.get(3)?,
                        rows: r.get::<_, i64>(4)? as u64,
                        bytes: r.get::<_, i64>(5)? as u64,
                    },
                })
            })?;
            rows.collect::<duckdb::Result<Vec<_>>>()
        })
    }

    /// `(id, content hash, marked deleted)` of every row of a stream, sorted by id. 24 bytes a row.
    pub fn id_hashes(&self, stream: &str) -> Result<Vec<(i64, i64, bool)>> {
        self.with_conn("read ids and hashes", |c| {
            if !table_exists(c, stream)? {
                return Ok(Vec::new());
            }
            let mut stmt = c.prepare(&format!(
                "SELECT id, coalesce(_hw_hash, 0), _hw_deleted_at IS NOT NULL FROM {} ORDER BY id",
                quote_ident(stream)
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<duckdb::Result<Vec<_>>>()
        })
    }

    /// Keep a source record that could not be loaded (outside any checkpoint: the sync job keeps
    /// its rejects with [`Warehouse::commit_checkpoint_with`] / [`Warehouse::finish_run_with`]).
    pub fn record_reject(
        &self,
        stream: &str,
        run_id: &str,
        record_id: Option<&str>,
        raw: &str,
        reason: &str,
    ) -> Result<()> {
        let r = crate::model::Reject {
            record_id: record_id.map(str::to_string),
            raw: raw.to_string(),
            reason: reason.to_string(),
        };
        self.with_conn("record a rejected record", |c| {
            super::commit::insert_rejects(c, stream, run_id, std::slice::from_ref(&r))
        })
    }

    /// Per stream: cursor, row counts, the last sync and the last reconcile.
    pub fn status(&self) -> Result<Vec<StreamStatus>> {
        self.with_conn("read status", |c| -> duckdb::Result<Vec<StreamStatus>> {
            let mut stmt = c.prepare(
                "SELECT name, record_type, cursor_updated, cursor_id, schema_version FROM highwater.streams ORDER BY name",
            )?;
            type Row = (String, String, Option<i64>, Option<i64>, i32);
            let streams: Vec<Row> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<duckdb::Result<_>>()?;
            let mut out = Vec::new();
            for (name, record_type, cu, ci, version) in streams {
                let (live, deleted) = if table_exists(c, &name)? {
                    c.query_row(
                        &format!(
                            "SELECT count(*) FILTER (WHERE _hw_deleted_at IS NULL), count(*) FILTER (WHERE _hw_deleted_at IS NOT NULL) FROM {}",
                            quote_ident(&name)
                        ),
                        [],
                        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                    )?
                } else {
                    (0, 0)
                };
                out.push(StreamStatus {
                    last_run: last_run(c, &name, "sync")?,
                    last_reconcile: last_run(c, &name, "reconcile")?,
                    stream: name,
                    record_type,
                    cursor_updated: cu,
                    cursor_id: ci,
                    schema_version: version,
                    rows_live: live,
                    rows_deleted: deleted,
                });
            }
            Ok(out)
        })
    }
}

fn last_run(c: &Connection, stream: &str, kind: &str) -> duckdb::Result<Option<RunSummary>> {
    c.query_row(
        "SELECT run_id, kind, outcome, epoch_us(started_at), epoch_us(finished_at), window_end, \
         pages, rows_fetched, rows_written, checkpoints, requests, retries, wait_ms, scanned, deleted, \
         undeleted, repaired, error, details \
         FROM highwater.runs WHERE stream = ? AND kind = ? ORDER BY started_at DESC, run_id DESC LIMIT 1",
        params![stream, kind],
        |r| {
            let n = |i: usize| -> duckdb::Result<u64> { Ok(r.get::<_, i64>(i)? as u64) };
            Ok(RunSummary {
                run_id: r.get(0)?,
                kind: r.get(1)?,
                outcome: r.get(2)?,
                started_at: micros_to_rfc3339(r.get(3)?),
                finished_at: r.get::<_, Option<i64>>(4)?.map(micros_to_rfc3339),
                window_end: r.get(5)?,
                counts: RunCounts {
                    pages: n(6)?,
                    rows_fetched: n(7)?,
                    rows_written: n(8)?,
                    checkpoints: n(9)?,
                    requests: n(10)?,
                    retries: n(11)?,
                    wait_ms: n(12)?,
                    scanned: n(13)?,
                    deleted: n(14)?,
                    undeleted: n(15)?,
                    repaired: n(16)?,
                },
                error: r.get(17)?,
                details: r
                    .get::<_, Option<String>>(18)?
                    .and_then(|d| serde_json::from_str(&d).ok()),
            })
        },
    )
    .optional()
}

pub(crate) fn ensure_stream(
    c: &Connection,
    stream: &str,
    record_type: &str,
    mode: CursorMode,
    cursor_field: &str,
    filter: &str,
) -> duckdb::Result<()> {
    c.execute(
        "INSERT INTO highwater.streams (name, record_type, cursor_mode, cursor_field, schema_json, schema_version, created_at, updated_at, filter) \
         SELECT ?, ?, ?, ?, '{\"columns\":[]}', 0, now(), now(), ? \
         WHERE NOT EXISTS (SELECT 1 FROM highwater.streams WHERE name = ?)",
        params![stream, record_type, mode_str(mode), cursor_field, filter, stream],
    )?;
    Ok(())
}
