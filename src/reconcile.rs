//! The reconcile job: what an incremental cursor cannot see.
//!
//! Cerb does not move `updated` for API edits, API deletes (status "deleted"), merges and purges,
//! and a row committed late with an old `updated` stays behind the cursor. Reconcile scans the
//! stream's source records by `id` (`id:>I <filter> sort:id`, pages of 500) in one pass. Cerb returns
//! whole records, so the scan is a content scan: each row's content hash is compared with the hash
//! stored at load time (`_hw_hash`).
//!
//! At the end, in ONE warehouse transaction (and one lake file): rows absent from the source get
//! `_hw_deleted_at` (lake: `delete` rows); rows marked deleted that are back are cleared; rows whose
//! content changed, or that the cursor never saw, are upserted as `repair` rows. The cursor is not
//! touched, so a later sync continues where it was.
//!
//! Guards: a scan that does not finish marks nothing; more than `max_delete_fraction` of the live
//! rows, or any row when the scan returned nothing, is refused unless forced.
//!
//! Memory: one page plus the warehouse's `(id, hash, deleted)` list, sorted by id (24 bytes a row),
//! plus the rows to repair.

use std::time::Instant;

use futures::StreamExt;

use crate::config::StreamConfig;
use crate::convert::{Converter, SystemValues, content_hash};
use crate::lake::Lake;
use crate::model::{Cursor, CursorMode, Op, Record};
use crate::source::Walk;
use crate::sync::{Pipeline, SyncError, new_run_id};
use crate::warehouse::{Checkpoint, FileRow, Outcome, RunCounts, RunFinish, RunKind, RunStart};

#[derive(Clone, Debug)]
pub struct ReconcileOptions {
    pub dry_run: bool,
    /// Refuse to mark more than this share of the live rows deleted (unless `force`).
    pub max_delete_fraction: f64,
    pub force: bool,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            dry_run: false,
            max_delete_fraction: 0.10,
            force: false,
        }
    }
}

/// How many ids of each kind a report lists.
const SAMPLE: usize = 10;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReconcileReport {
    pub stream: String,
    pub run_id: String,
    /// `succeeded`, `dry_run`, `refused` or `failed`.
    pub outcome: String,
    pub scanned: u64,
    pub live_before: u64,
    pub deleted: u64,
    pub undeleted: u64,
    pub repaired: u64,
    /// Rows the source has that the warehouse never got (a subset of `repaired`).
    pub missing: u64,
    pub sample_deleted: Vec<i64>,
    pub sample_undeleted: Vec<i64>,
    pub sample_repaired: Vec<i64>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Run reconcile for the selected streams under the warehouse's run lock (the same lock as sync,
/// so the two never interleave).
pub async fn run(
    p: &Pipeline,
    only: Option<&str>,
    opts: &ReconcileOptions,
) -> Result<Vec<ReconcileReport>, SyncError> {
    let streams = p.streams(only)?;
    let wh = p.warehouse.clone();
    let wait = p.cfg.warehouse.lock_wait;
    let _lock = tokio::task::spawn_blocking(move || wh.lock_runs(wait))
        .await
        .map_err(|e| SyncError::Setup(e.to_string()))?
        .map_err(|e| SyncError::Setup(e.to_string()))?;
    crate::sync::recover(p).await?;
    let mut out = Vec::new();
    for s in &streams {
        out.push(reconcile_stream(p, s, opts).await);
    }
    Ok(out)
}

/// Filters on a field that changes make rows leave the filter; reconcile then sees them as deleted.
/// Every filter field but `id` and `created` (which never change) can change over a record's life
/// (`status:`, `owner.id:`, `group.id:`, `isCompleted:`, custom fields …), so any other is warned about.
pub fn filter_warning(s: &StreamConfig) -> Option<String> {
    let fields: Vec<String> = s
        .filter
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|tok| {
            tok.split_once(':')
                .map(|(f, _)| f.trim_start_matches('!').to_string())
        })
        .filter(|f| !f.is_empty() && !f.starts_with('"'))
        .collect();
    let volatile: Vec<&String> = fields
        .iter()
        .filter(|f| {
            !matches!(
                f.to_ascii_lowercase().as_str(),
                "id" | "created" | "sort" | "limit"
            )
        })
        .collect();
    let first = volatile.first()?;
    Some(format!(
        "stream {} filters on `{first}:`, which can change over a record's life: rows that leave the filter look deleted to reconcile",
        s.name
    ))
}

struct Known {
    id: i64,
    hash: i64,
    deleted: bool,
}

async fn reconcile_stream(
    p: &Pipeline,
    s: &StreamConfig,
    opts: &ReconcileOptions,
) -> ReconcileReport {
    let started = Instant::now();
    let mut rep = ReconcileReport {
        stream: s.name.clone(),
        run_id: new_run_id(),
        outcome: "failed".into(),
        ..ReconcileReport::default()
    };
    if let Some(w) = filter_warning(s) {
        tracing::warn!("{w}");
        rep.warnings.push(w);
    }
    let result = scan_and_apply(p, s, opts, &mut rep).await;
    rep.seconds = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        let msg = format!("stream {}: reconcile {}: {e}", s.name, rep.run_id);
        tracing::error!("{msg}");
        rep.outcome = if rep.outcome == "refused" {
            "refused".into()
        } else {
            "failed".into()
        };
        rep.error = Some(msg);
    }
    rep
}

async fn scan_and_apply(
    p: &Pipeline,
    s: &StreamConfig,
    opts: &ReconcileOptions,
    rep: &mut ReconcileReport,
) -> Result<(), String> {
    let wh = p.warehouse.clone();
    let (name, mode, field) = (s.name.clone(), s.cursor, s.cursor_field.clone());
    let (rtype, filter) = (s.record_type.clone(), s.filter.clone());
    let state = blocking(move || {
        wh.check_stream_identity(&name, &rtype, &filter)?;
        wh.stream_state(&name, mode, &field)
    })
    .await?;
    let wh = p.warehouse.clone();
    let name = s.name.clone();
    let known: Vec<Known> = blocking(move || wh.id_hashes(&name))
        .await?
        .into_iter()
        .map(|(id, hash, deleted)| Known { id, hash, deleted })
        .collect();
    rep.live_before = known.iter().filter(|k| !k.deleted).count() as u64;

    if !opts.dry_run {
        let wh = p.warehouse.clone();
        let start = RunStart {
            run_id: rep.run_id.clone(),
            stream: s.name.clone(),
            record_type: s.record_type.clone(),
            cursor_mode: s.cursor,
            cursor_field: s.cursor_field.clone(),
            kind: RunKind::Reconcile,
            window_end: None,
            cursor_before: state.cursor,
            filter: s.filter.clone(),
        };
        blocking(move || wh.start_run(&start)).await?;
    }

    // One pass over the source by id.
    let mut seen = vec![false; known.len()];
    let mut repairs: Vec<Record> = Vec::new();
    let mut counts = RunCounts::default();
    let walk = Walk {
        record_type: s.record_type.clone(),
        mode: CursorMode::Id,
        cursor_field: s.cursor_field.clone(),
        filter: s.filter.clone(),
        page_size: 500,
        after: Cursor::START,
        horizon: i64::MAX,
        stream: s.name.clone(),
    };
    // This run's own source handle: it counts every request (failed ones too) and holds the
    // per-run retry budget.
    let source = p.source.for_run();
    let pages = source.pages(walk);
    futures::pin_mut!(pages);
    let mut scan_error = None;
    let mut finished = false;
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(pg) => pg,
            Err(e) => {
                scan_error = Some(format!(
                    "the scan stopped at page {}: {e}",
                    counts.pages + 1
                ));
                break;
            }
        };
        counts.pages += 1;
        if page.records.is_empty() {
            finished = true;
            break;
        }
        for mut rec in page.records {
            rep.scanned += 1;
            // The scan walks by id; keep the record's real `updated` for the warehouse row.
            if s.cursor == CursorMode::UpdatedId {
                rec.updated = rec
                    .fields
                    .get(&s.cursor_field)
                    .and_then(crate::source::parse_int)
                    .unwrap_or(0);
            }
            match known.binary_search_by_key(&rec.id, |k| k.id) {
                Ok(i) => {
                    seen[i] = true;
                    let k = &known[i];
                    if k.deleted {
                        rep.undeleted += 1;
                        if rep.sample_undeleted.len() < SAMPLE {
                            rep.sample_undeleted.push(rec.id);
                        }
                        repairs.push(rec);
                    } else if k.hash != content_hash(&rec.fields) {
                        rep.repaired += 1;
                        if rep.sample_repaired.len() < SAMPLE {
                            rep.sample_repaired.push(rec.id);
                        }
                        repairs.push(rec);
                    }
                }
                Err(_) => {
                    rep.repaired += 1;
                    rep.missing += 1;
                    if rep.sample_repaired.len() < SAMPLE {
                        rep.sample_repaired.push(rec.id);
                    }
                    repairs.push(rec);
                }
            }
        }
    }
    counts.scanned = rep.scanned;
    let usage = source.usage();
    counts.requests = usage.requests;
    counts.retries = usage.retries;
    counts.wait_ms = usage.wait.as_millis() as u64;
    if scan_error.is_none() && !finished {
        scan_error = Some("the scan ended without reaching the last page".into());
    }
    if let Some(e) = scan_error {
        finish(
            p,
            rep,
            Outcome::Failed,
            Some(e.clone()),
            counts,
            opts.dry_run,
        )
        .await;
        return Err(format!("{e}; nothing was marked"));
    }

    let deletes: Vec<i64> = known
        .iter()
        .zip(&seen)
        .filter(|(k, seen)| !**seen && !k.deleted)
        .map(|(k, _)| k.id)
        .collect();
    rep.deleted = deletes.len() as u64;
    rep.sample_deleted = deletes.iter().take(SAMPLE).copied().collect();

    // Guards.
    let refusal = if rep.scanned == 0 && rep.live_before > 0 {
        Some(format!(
            "the source returned no rows at all for this stream while the warehouse has {} live rows; \
             this usually means a broken filter or a permissions problem, not a mass deletion",
            rep.live_before
        ))
    } else if rep.live_before > 0
        && (rep.deleted as f64) > opts.max_delete_fraction * rep.live_before as f64
    {
        Some(format!(
            "{} of {} live rows ({:.1}%) are absent from the source, more than the {:.1}% allowed by --max-delete-fraction",
            rep.deleted,
            rep.live_before,
            100.0 * rep.deleted as f64 / rep.live_before as f64,
            100.0 * opts.max_delete_fraction
        ))
    } else {
        None
    };
    if let Some(why) = refusal
        && !opts.force
    {
        rep.outcome = "refused".into();
        let msg = format!(
            "{why}; nothing was marked. Check the source, then rerun with --force to apply"
        );
        finish(
            p,
            rep,
            Outcome::Failed,
            Some(msg.clone()),
            counts,
            opts.dry_run,
        )
        .await;
        return Err(msg);
    }
    if opts.dry_run {
        rep.outcome = "dry_run".into();
        return Ok(());
    }

    counts.deleted = rep.deleted;
    counts.undeleted = rep.undeleted;
    counts.repaired = rep.repaired;
    if repairs.is_empty() && deletes.is_empty() {
        rep.outcome = "succeeded".into();
        finish(p, rep, Outcome::Succeeded, None, counts, false).await;
        return Ok(());
    }

    // Repairs and deletes: one lake file, one transaction.
    let mut converter = Converter::new(state.schema.clone());
    let now = crate::util::unix_now_micros();
    let sys = |op| SystemValues {
        run_id: rep.run_id.clone(),
        synced_at_micros: now,
        op,
    };
    let mut batches = Vec::new();
    let mut changes = Vec::new();
    if !repairs.is_empty() {
        let (b, c) = converter
            .convert(&repairs, &sys(Op::Repair))
            .map_err(|e| format!("convert: {e}"))?;
        batches.push(b);
        changes.extend(c);
    }
    drop(repairs);
    if !deletes.is_empty() {
        let del: Vec<Record> = deletes
            .iter()
            .map(|&id| Record {
                id,
                updated: 0,
                fields: serde_json::Map::new(),
            })
            .collect();
        let (b, c) = converter
            .convert(&del, &sys(Op::Delete))
            .map_err(|e| format!("convert: {e}"))?;
        batches.push(b);
        changes.extend(c);
    }
    // Delete rows carry no fields, so they never widen the schema: both batches share the schema
    // the repairs produced.
    let schema = converter.arrow_schema();
    debug_assert!(batches.iter().all(|b| b.schema() == schema));
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let date = chrono::DateTime::from_timestamp_micros(now)
        .unwrap_or_default()
        .date_naive();
    let key = Lake::data_key(&s.name, date, &rep.run_id, 1);
    let written = p
        .lake
        .write_parquet(&key, schema.clone(), &batches)
        .await
        .map_err(|e| format!("lake write: {e}"))?;
    let wh = p.warehouse.clone();
    let (stream, record_type, run_id) = (s.name.clone(), s.record_type.clone(), rep.run_id.clone());
    let table_schema = converter.schema().clone();
    let file = FileRow {
        key: written.key.clone(),
        rows,
        bytes: written.bytes,
    };
    let pages = counts.pages;
    let fetched = rep.scanned;
    blocking(move || {
        wh.commit_checkpoint(&Checkpoint {
            stream: &stream,
            record_type: &record_type,
            run_id: &run_id,
            seq: 1,
            schema: &table_schema,
            schema_changes: &changes,
            batches: &batches,
            file,
            cursor: None,
            pages,
            rows_fetched: fetched,
        })
    })
    .await
    .map_err(|e| format!("warehouse commit: {e}"))?;
    counts.rows_written = rows;
    counts.checkpoints = 1;
    rep.outcome = "succeeded".into();
    if let Err(e) = crate::sync::write_manifests_for_run(p, &rep.run_id).await {
        tracing::warn!(stream = %s.name, run_id = %rep.run_id, error = %e,
            "manifest not written; the warehouse still knows the file");
    }
    tracing::info!(
        stream = %s.name, run_id = %rep.run_id, scanned = rep.scanned, deleted = rep.deleted,
        undeleted = rep.undeleted, repaired = rep.repaired, "reconcile committed"
    );
    if rep.repaired > 0 {
        tracing::warn!(
            stream = %s.name, repaired = rep.repaired, missing = rep.missing,
            "rows changed without `updated` moving (or arrived behind the cursor); repaired"
        );
    }
    finish(p, rep, Outcome::Succeeded, None, counts, false).await;
    Ok(())
}

async fn finish(
    p: &Pipeline,
    rep: &ReconcileReport,
    outcome: Outcome,
    error: Option<String>,
    counts: RunCounts,
    dry_run: bool,
) {
    if dry_run {
        return;
    }
    let wh = p.warehouse.clone();
    let fin = RunFinish {
        run_id: rep.run_id.clone(),
        stream: rep.stream.clone(),
        outcome,
        error,
        final_cursor: None,
        counts,
        details: Some(serde_json::json!({
            "sample_deleted": rep.sample_deleted,
            "sample_undeleted": rep.sample_undeleted,
            "sample_repaired": rep.sample_repaired,
            "missing": rep.missing,
            "live_before": rep.live_before,
            "warnings": rep.warnings,
        })),
    };
    if let Err(e) = blocking(move || wh.finish_run(&fin)).await {
        tracing::error!(stream = %rep.stream, run_id = %rep.run_id, error = %e, "could not record the end of the reconcile run");
    }
}

async fn blocking<T, E, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("internal task failed: {e}")),
    }
}

#[cfg(test)]
mod filter_tests {
    use super::filter_warning;
    use crate::config::StreamConfig;
    use crate::model::CursorMode;

    fn stream(filter: &str) -> StreamConfig {
        StreamConfig {
            name: "t".into(),
            record_type: "ticket".into(),
            cursor: CursorMode::UpdatedId,
            cursor_field: "updated".into(),
            filter: filter.into(),
            lag: 5,
            page_size: 500,
        }
    }

    #[test]
    fn filters_on_changing_fields_are_warned_about() {
        for f in [
            "status:o",
            "owner.id:3",
            "(group.id:[1,2])",
            "isCompleted:n",
            "!status:c",
            "id:>10 status:o",
        ] {
            let w = filter_warning(&stream(f)).unwrap_or_else(|| panic!("{f} not warned"));
            assert!(w.contains("look deleted"), "{w}");
        }
        for f in [
            "",
            "id:>10",
            "created:\"-1 year to now\"",
            "(id:>5 id:<100)",
        ] {
            assert_eq!(filter_warning(&stream(f)), None, "{f}");
        }
    }
}
