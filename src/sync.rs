//! The sync job: walk each stream's source from its cursor to the window end, convert pages to
//! Arrow, land a Parquet file per checkpoint in the lake, and commit the rows together with the new
//! cursor in one warehouse transaction.
//!
//! Order per checkpoint (DESIGN.md §1, §7): Parquet object written (unique key, create-if-absent) →
//! ONE DuckDB transaction (rows merged, file recorded, cursor advanced). At the end of the run its
//! manifest is written from the warehouse; the next run rewrites the manifests of runs that died
//! before theirs. A crash before the transaction leaves an orphan object nothing references; a
//! crash after it loses nothing. Pages fetched after the last checkpoint are simply fetched again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::config::OnBadRecord;
use crate::config::{Config, StreamConfig};
use crate::convert::{Converter, SystemValues};
use crate::lake::Lake;
use crate::model::{Cursor, CursorMode, Op, Record, Reject};
use crate::source::cerb::CerbSource;
use crate::source::{SourceError, Walk};
use crate::warehouse::{
    Checkpoint, CommittedFile, FileRow, Outcome, RunCounts, RunFinish, RunKind, RunStart, Warehouse,
};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("stream {stream}: {stage} failed in run {run_id}: {message}")]
    Stage {
        stream: String,
        run_id: String,
        stage: &'static str,
        message: String,
    },
    #[error("{0}")]
    Setup(String),
    #[error("unknown stream {0:?}; the config defines: {1}")]
    UnknownStream(String, String),
}

/// Named points between the steps of a checkpoint where tests make a run fail or die.
/// Set through `HIGHWATER_FAILPOINT=<point>[:<n>][:abort]` (the n-th time the point is reached;
/// `abort` kills the process on the spot instead of returning an error).
#[derive(Clone, Debug, Default)]
pub struct FailPoint {
    pub point: String,
    pub nth: u32,
    pub abort: bool,
    hits: Arc<std::sync::atomic::AtomicU32>,
}

impl FailPoint {
    pub const POINTS: &'static [&'static str] = &[
        "after_fetch",
        "after_lake_write",
        "after_commit",
        "after_manifest",
    ];

    /// Fail (or abort) the `nth` time `point` is reached.
    pub fn new(point: &str, nth: u32, abort: bool) -> FailPoint {
        FailPoint {
            point: point.to_string(),
            nth,
            abort,
            hits: Arc::default(),
        }
    }

    pub fn from_env() -> Option<FailPoint> {
        let v = std::env::var("HIGHWATER_FAILPOINT").ok()?;
        let mut parts = v.split(':');
        let point = parts.next()?.to_string();
        let mut nth = 1;
        let mut abort = false;
        for p in parts {
            if p == "abort" {
                abort = true;
            } else if let Ok(n) = p.parse() {
                nth = n;
            }
        }
        Some(FailPoint {
            point,
            nth,
            abort,
            hits: Arc::default(),
        })
    }

    fn hit(&self, point: &str) -> Result<(), String> {
        if self.point != point {
            return Ok(());
        }
        let n = self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n != self.nth {
            return Ok(());
        }
        if self.abort {
            eprintln!("failpoint {point}: aborting the process");
            std::process::abort();
        }
        Err(format!("failpoint {point} reached"))
    }
}

#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    pub failpoint: Option<FailPoint>,
}

/// What one stream's run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub run_id: String,
    pub outcome: String,
    pub window_end: Option<i64>,
    pub cursor_before: String,
    pub cursor_after: String,
    pub pages: u64,
    pub rows_fetched: u64,
    pub rows_written: u64,
    pub checkpoints: u64,
    /// Records kept in `highwater.rejects` by this run.
    pub rejected: u64,
    pub files: Vec<String>,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Everything a run needs, built once (I/O happens here, after validation).
pub struct Pipeline {
    pub cfg: Config,
    pub source: CerbSource,
    pub lake: Lake,
    pub warehouse: Arc<Warehouse>,
}

impl Pipeline {
    pub fn build(cfg: Config) -> Result<Pipeline, SyncError> {
        let source = CerbSource::new(&cfg.source).map_err(|e| SyncError::Setup(e.to_string()))?;
        let lake = Lake::open(&cfg.lake.url, &cfg.lake.options, &cfg.base_dir)
            .map_err(|e| SyncError::Setup(format!("lake: {e}")))?
            .with_part_size(cfg.lake.part_size);
        let warehouse = Warehouse::open_with_timeout(&cfg.warehouse.path, cfg.warehouse.lock_wait)
            .map_err(|e| SyncError::Setup(format!("warehouse: {e}")))?;
        Ok(Pipeline {
            cfg,
            source,
            lake,
            warehouse: Arc::new(warehouse),
        })
    }

    /// The streams selected by `only` (all when `None`).
    pub fn streams(&self, only: Option<&str>) -> Result<Vec<StreamConfig>, SyncError> {
        match only {
            None => Ok(self.cfg.streams.clone()),
            Some(name) => match self.cfg.stream(name) {
                Some(s) => Ok(vec![s.clone()]),
                None => Err(SyncError::UnknownStream(
                    name.to_string(),
                    self.cfg
                        .streams
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
            },
        }
    }
}

/// A sortable, unique run id: `20261203T201501Z-1a2b3c4d`.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let rand: u32 = rand::random();
    format!("{}-{rand:08x}", now.format("%Y%m%dT%H%M%SZ"))
}

/// Run `sync` for the selected streams, one after the other, under the warehouse's run lock.
pub async fn run(
    p: &Pipeline,
    only: Option<&str>,
    opts: &SyncOptions,
) -> Result<Vec<StreamReport>, SyncError> {
    let streams = p.streams(only)?;
    let wh = p.warehouse.clone();
    let wait = p.cfg.warehouse.lock_wait;
    let _lock = tokio::task::spawn_blocking(move || wh.lock_runs(wait))
        .await
        .map_err(|e| SyncError::Setup(e.to_string()))?
        .map_err(|e| SyncError::Setup(e.to_string()))?;
    recover(p).await?;
    let mut reports = Vec::new();
    for s in &streams {
        reports.push(sync_stream(p, s, opts).await);
    }
    Ok(reports)
}

/// Clean up after runs whose process died (the caller holds the run lock, so none of them is
/// alive): delete the lake objects they wrote and never committed, rewrite their manifests from
/// the warehouse, and only then mark them aborted. A kill during recovery leaves them `running`,
/// so the next run does it all again; every step is idempotent.
pub async fn recover(p: &Pipeline) -> Result<(), SyncError> {
    let wh = p.warehouse.clone();
    let interrupted = blocking(move || wh.interrupted_runs())
        .await
        .map_err(|e| SyncError::Setup(format!("warehouse: {e}")))?;
    if interrupted.is_empty() {
        return Ok(());
    }
    // Read after the run lock was taken: no file can be committed from here on but by us.
    let wh = p.warehouse.clone();
    let committed = blocking(move || wh.committed_keys())
        .await
        .map_err(|e| SyncError::Setup(format!("warehouse: {e}")))?;
    let mut manifests = std::collections::HashSet::new();
    for run in &interrupted {
        tracing::warn!(stream = %run.stream, run_id = %run.run_id,
            "an earlier run was interrupted; removing what it left uncommitted and marking it aborted");
        match crate::gc::sweep_run(&p.lake, run, &committed).await {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(stream = %run.stream, run_id = %run.run_id, orphans = deleted.len(),
                    "swept the orphans of an interrupted run");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %run.stream, run_id = %run.run_id, error = %e,
                "could not sweep the orphans of an interrupted run; they are harmless, and `highwater gc` removes them"),
        }
        if manifests.insert(run.run_id.clone())
            && let Err(e) = write_manifests_for_run(p, &run.run_id).await
        {
            tracing::warn!(run_id = %run.run_id, error = %e, "could not rewrite the manifest of an aborted run");
        }
    }
    let wh = p.warehouse.clone();
    blocking(move || wh.abort_interrupted_runs())
        .await
        .map_err(|e| SyncError::Setup(format!("warehouse: {e}")))?;
    Ok(())
}

pub(crate) async fn write_manifests_for_run(p: &Pipeline, run_id: &str) -> Result<(), String> {
    let wh = p.warehouse.clone();
    let files = tokio::task::spawn_blocking(move || wh.committed_files(None))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut by_stream: HashMap<String, Vec<&CommittedFile>> = HashMap::new();
    for f in files.iter().filter(|f| f.run_id == run_id) {
        by_stream.entry(f.stream.clone()).or_default().push(f);
    }
    for (stream, files) in by_stream {
        let body = serde_json::json!({
            "stream": stream,
            "run_id": run_id,
            "files": files.iter().map(|f| serde_json::json!({
                "key": f.file.key, "seq": f.seq, "rows": f.file.rows, "bytes": f.file.bytes,
            })).collect::<Vec<_>>(),
        });
        let key = Lake::manifest_key(&stream, run_id);
        p.lake
            .put_json(
                &key,
                bytes::Bytes::from(serde_json::to_vec_pretty(&body).unwrap_or_default()),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct RunState<'a> {
    p: &'a Pipeline,
    s: &'a StreamConfig,
    run_id: String,
    converter: Converter,
    buffer: Vec<Record>,
    index: HashMap<i64, usize>,
    last: Cursor,
    committed: Cursor,
    seq: u32,
    counts: RunCounts,
    /// Rejected records not yet committed: they go with the next checkpoint (or the end of the
    /// run), in the transaction whose cursor passes them.
    rejects: Vec<Reject>,
    /// Hashes of the raw text of every record rejected in this run, so a record seen again at the
    /// start of the next page (a reject after the page's last loadable key) is kept once.
    rejected_seen: std::collections::HashSet<u64>,
    rejected: u64,
    files: Vec<String>,
    opts: &'a SyncOptions,
    last_checkpoint: Instant,
}

async fn sync_stream(p: &Pipeline, s: &StreamConfig, opts: &SyncOptions) -> StreamReport {
    let started = Instant::now();
    let run_id = new_run_id();
    let mut report = StreamReport {
        stream: s.name.clone(),
        run_id: run_id.clone(),
        outcome: "failed".into(),
        window_end: None,
        cursor_before: String::new(),
        cursor_after: String::new(),
        pages: 0,
        rows_fetched: 0,
        rows_written: 0,
        checkpoints: 0,
        rejected: 0,
        files: Vec::new(),
        seconds: 0.0,
        error: None,
    };
    let fail = |report: &mut StreamReport, stage: &'static str, msg: String| {
        let e = SyncError::Stage {
            stream: s.name.clone(),
            run_id: run_id.clone(),
            stage,
            message: msg,
        };
        tracing::error!(stream = %s.name, run_id = %run_id, stage, "{e}");
        report.error = Some(e.to_string());
    };

    // State first: the cursor and schema this run starts from.
    let wh = p.warehouse.clone();
    let (name, mode, field) = (s.name.clone(), s.cursor, s.cursor_field.clone());
    let (rtype, filter) = (s.record_type.clone(), s.filter.clone());
    let state = match tokio::task::spawn_blocking(move || {
        wh.check_stream_identity(&name, &rtype, &filter)?;
        wh.stream_state(&name, mode, &field)
    })
    .await
    {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => {
            fail(&mut report, "load state", e.to_string());
            return report;
        }
        Err(e) => {
            fail(&mut report, "load state", e.to_string());
            return report;
        }
    };
    let cursor = state.cursor.unwrap_or(Cursor::START);
    report.cursor_before = cursor.to_string();
    report.cursor_after = cursor.to_string();

    // The window end comes from the server's clock. This run's own source handle counts its
    // requests, retries and waits, and holds its retry budget.
    let source = p.source.for_run();
    let server_now = match source.probe(&s.record_type, &s.filter).await {
        Ok(t) => t,
        Err(e) => {
            // Recorded all the same (no window yet), so `highwater.runs` and `status` show the
            // failure with its requests and the server's message.
            let oc = if e.is_rate_limited() {
                Outcome::RateLimited
            } else {
                Outcome::Failed
            };
            fail(&mut report, "fetch", e.to_string());
            report.outcome = oc.as_str().to_string();
            let usage = source.usage();
            let wh = p.warehouse.clone();
            let start = RunStart {
                run_id: run_id.clone(),
                stream: s.name.clone(),
                record_type: s.record_type.clone(),
                cursor_mode: s.cursor,
                cursor_field: s.cursor_field.clone(),
                kind: RunKind::Sync,
                window_end: None,
                cursor_before: state.cursor,
                filter: s.filter.clone(),
            };
            let fin = RunFinish {
                run_id: run_id.clone(),
                stream: s.name.clone(),
                outcome: oc,
                error: report.error.clone(),
                final_cursor: None,
                counts: RunCounts {
                    requests: usage.requests,
                    retries: usage.retries,
                    wait_ms: usage.wait.as_millis() as u64,
                    ..RunCounts::default()
                },
                details: None,
            };
            if let Err(e) =
                blocking(move || wh.start_run(&start).and_then(|()| wh.finish_run(&fin))).await
            {
                tracing::warn!(stream = %s.name, run_id = %run_id, error = %e, "could not record the failed run");
            }
            return report;
        }
    };
    let horizon = server_now - s.lag;
    let window_end = (s.cursor == CursorMode::UpdatedId).then_some(horizon);
    report.window_end = window_end;

    let wh = p.warehouse.clone();
    let start = RunStart {
        run_id: run_id.clone(),
        stream: s.name.clone(),
        record_type: s.record_type.clone(),
        cursor_mode: s.cursor,
        cursor_field: s.cursor_field.clone(),
        kind: RunKind::Sync,
        window_end,
        cursor_before: state.cursor,
        filter: s.filter.clone(),
    };
    if let Err(e) = blocking(move || wh.start_run(&start)).await {
        fail(&mut report, "record run", e);
        return report;
    }
    tracing::info!(stream = %s.name, run_id = %run_id, cursor = %cursor, window_end = ?window_end, "sync started");

    let mut st = RunState {
        p,
        s,
        run_id: run_id.clone(),
        converter: Converter::new(state.schema),
        buffer: Vec::new(),
        index: HashMap::new(),
        last: cursor,
        committed: cursor,
        seq: 0,
        counts: RunCounts::default(),
        rejects: Vec::new(),
        rejected_seen: Default::default(),
        rejected: 0,
        files: Vec::new(),
        opts,
        last_checkpoint: Instant::now(),
    };

    // Fetch runs ahead of convert/commit by a few pages.
    let walk = Walk {
        record_type: s.record_type.clone(),
        mode: s.cursor,
        cursor_field: s.cursor_field.clone(),
        filter: s.filter.clone(),
        page_size: s.page_size,
        after: cursor,
        horizon,
        stream: s.name.clone(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<crate::source::Page, SourceError>>(4);
    let pages = source.pages(walk);
    let fetcher = tokio::spawn(async move {
        futures::pin_mut!(pages);
        while let Some(item) = pages.next().await {
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });

    let mut outcome: Result<bool, (&'static str, String, Outcome)> = Ok(false);
    while let Some(item) = rx.recv().await {
        match item {
            Err(e) => {
                let oc = if e.is_rate_limited() {
                    Outcome::RateLimited
                } else {
                    Outcome::Failed
                };
                outcome = Err(("fetch", e.to_string(), oc));
                break;
            }
            Ok(page) => {
                st.counts.pages += 1;
                if let Err(m) = take_rejects(&mut st, page.number, page.rejects) {
                    outcome = Err(("fetch", m, Outcome::Failed));
                    break;
                }
                if page.records.is_empty() {
                    outcome = Ok(true);
                    break;
                }
                st.counts.rows_fetched += page.records.len() as u64;
                st.last = page.last;
                for rec in page.records {
                    // The same id twice in one checkpoint (it changed while we paged): keep the
                    // later version, which is the one read later.
                    match st.index.get(&rec.id) {
                        Some(&i) => st.buffer[i] = rec,
                        None => {
                            st.index.insert(rec.id, st.buffer.len());
                            st.buffer.push(rec);
                        }
                    }
                }
                if let Some(fp) = &st.opts.failpoint
                    && let Err(m) = fp.hit("after_fetch")
                {
                    // A failure between fetch and the lake write: the buffered pages are lost
                    // with the process, so they are not landed here either.
                    outcome = Err(("convert", m, Outcome::Failed));
                    break;
                }
                if (st.buffer.len() >= p.cfg.sync.checkpoint_rows
                    || st.last_checkpoint.elapsed() >= p.cfg.sync.checkpoint_interval)
                    && let Err((stage, m)) = checkpoint(&mut st).await
                {
                    outcome = Err((stage, m, Outcome::Failed));
                    break;
                }
            }
        }
    }
    drop(rx);
    fetcher.abort();

    // Everything fetched before a fetch error (rate limit, a bad page later on) is still good: land it.
    let fetch_failed = matches!(&outcome, Err(("fetch", _, _)));
    if (outcome.is_ok() || fetch_failed)
        && !st.buffer.is_empty()
        && let Err((stage, m)) = checkpoint(&mut st).await
    {
        outcome = Err((stage, m, Outcome::Failed));
    }

    // Rejects still pending were read after the last checkpoint: they are kept with the final
    // cursor when the window was read to the end, and otherwise read again by the next run.
    let rejects = if matches!(outcome, Ok(true)) {
        std::mem::take(&mut st.rejects)
    } else {
        st.rejected -= st.rejects.len() as u64;
        Vec::new()
    };
    let (oc, error, final_cursor) = match &outcome {
        Ok(true) => {
            let fin = match s.cursor {
                CursorMode::UpdatedId => st.committed.max(Cursor::window_done(horizon)),
                CursorMode::Id => st.committed,
            };
            (Outcome::Succeeded, None, Some(fin))
        }
        Ok(false) => (
            Outcome::Failed,
            Some("the source stream ended without an empty page".to_string()),
            None,
        ),
        Err((stage, m, oc)) => {
            let e = SyncError::Stage {
                stream: s.name.clone(),
                run_id: run_id.clone(),
                stage,
                message: m.clone(),
            };
            (*oc, Some(e.to_string()), None)
        }
    };
    // Requests, retries and waits of the whole run, failed requests included.
    let usage = source.usage();
    st.counts.requests = usage.requests;
    st.counts.retries = usage.retries;
    st.counts.wait_ms = usage.wait.as_millis() as u64;
    let wh = p.warehouse.clone();
    let fin = RunFinish {
        run_id: run_id.clone(),
        stream: s.name.clone(),
        outcome: oc,
        error: error.clone(),
        final_cursor,
        counts: st.counts,
        details: None,
    };
    let finished = blocking(move || wh.finish_run_with(&fin, &rejects)).await;
    if let Err(e) = write_manifests_for_run(p, &run_id).await {
        tracing::warn!(stream = %s.name, run_id = %run_id, error = %e, "manifest not written; the warehouse still knows the files");
    }
    if let Some(fp) = &opts.failpoint
        && let Err(m) = fp.hit("after_manifest")
    {
        report.error = Some(m);
    }

    report.outcome = match oc {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Aborted => "aborted",
        Outcome::RateLimited => "rate_limited",
    }
    .to_string();
    report.cursor_after = final_cursor.unwrap_or(st.committed).to_string();
    report.pages = st.counts.pages;
    report.rows_fetched = st.counts.rows_fetched;
    report.rows_written = st.counts.rows_written;
    report.checkpoints = st.counts.checkpoints;
    report.rejected = st.rejected;
    report.files = st.files;
    report.seconds = started.elapsed().as_secs_f64();
    if let Some(e) = error {
        tracing::error!(stream = %s.name, run_id = %run_id, "{e}");
        report.error = Some(e);
    }
    if let Err(e) = finished {
        let msg = format!(
            "stream {}: could not record the end of run {run_id}: {e}",
            s.name
        );
        tracing::error!("{msg}");
        report.outcome = "failed".into();
        report.error.get_or_insert(msg);
    }
    if report.error.is_none() {
        tracing::info!(
            stream = %s.name, run_id = %run_id, rows = report.rows_written, pages = report.pages,
            cursor = %report.cursor_after, seconds = report.seconds, "sync finished"
        );
    }
    report
}

/// Land the buffered records: Parquet object, then one warehouse transaction with the cursor.
async fn checkpoint(st: &mut RunState<'_>) -> Result<(), (&'static str, String)> {
    let records = std::mem::take(&mut st.buffer);
    st.index.clear();
    st.seq += 1;
    let synced_at = crate::util::unix_now_micros();
    let sys = SystemValues {
        run_id: st.run_id.clone(),
        synced_at_micros: synced_at,
        op: Op::Upsert,
    };
    let (batch, changes) = st
        .converter
        .convert(&records, &sys)
        .map_err(|e| ("convert", e.to_string()))?;
    drop(records);
    for c in &changes {
        tracing::info!(stream = %st.s.name, column = %c.column, from = ?c.from, to = ?c.to, reason = %c.reason, "schema changed");
    }
    let date = chrono::DateTime::from_timestamp_micros(synced_at)
        .unwrap_or_default()
        .date_naive();
    let key = Lake::data_key(&st.s.name, date, &st.run_id, st.seq);
    let rows = batch.num_rows() as u64;
    let written =
        st.p.lake
            .write_parquet(&key, batch.schema(), std::slice::from_ref(&batch))
            .await
            .map_err(|e| ("lake write", e.to_string()))?;
    if let Some(fp) = &st.opts.failpoint {
        fp.hit("after_lake_write").map_err(|m| ("lake write", m))?;
    }
    let wh = st.p.warehouse.clone();
    let schema = st.converter.schema().clone();
    let (stream, record_type, run_id) = (
        st.s.name.clone(),
        st.s.record_type.clone(),
        st.run_id.clone(),
    );
    let seq = st.seq;
    let cursor = st.last;
    let (pages, fetched) = (st.counts.pages, st.counts.rows_fetched);
    let file = FileRow {
        key: written.key.clone(),
        rows,
        bytes: written.bytes,
    };
    let rejects = std::mem::take(&mut st.rejects);
    let kept = rejects.len() as u64;
    let committed = blocking(move || {
        wh.commit_checkpoint_with(
            &Checkpoint {
                stream: &stream,
                record_type: &record_type,
                run_id: &run_id,
                seq,
                schema: &schema,
                schema_changes: &changes,
                batches: std::slice::from_ref(&batch),
                file,
                cursor: Some(cursor),
                pages,
                rows_fetched: fetched,
            },
            &rejects,
        )
    })
    .await;
    if let Err(e) = committed {
        st.rejected -= kept;
        return Err(("warehouse commit", e));
    }
    st.committed = cursor;
    st.counts.checkpoints += 1;
    st.counts.rows_written += rows;
    st.files.push(written.key);
    st.last_checkpoint = Instant::now();
    tracing::info!(stream = %st.s.name, run_id = %st.run_id, seq, rows, cursor = %cursor, "checkpoint committed");
    if let Some(fp) = &st.opts.failpoint {
        fp.hit("after_commit").map_err(|m| ("after commit", m))?;
    }
    Ok(())
}

/// Take a page's rejected records: under `on_bad_record = "fail"` the first one ends the run (the
/// page and everything after it stay uncommitted); otherwise they wait, logged, for the next commit.
fn take_rejects(st: &mut RunState<'_>, page: u64, rejects: Vec<Reject>) -> Result<(), String> {
    use std::hash::{Hash, Hasher};
    for r in rejects {
        if st.p.cfg.sync.on_bad_record == OnBadRecord::Fail {
            return Err(format!(
                "{}{}; raw: {}. [sync] on_bad_record = \"fail\" stops the run here: nothing of page {page} \
                 is committed. Fix the record at the source, or set on_bad_record = \"reject\" to keep \
                 such records in highwater.rejects and go on",
                r.reason,
                r.record_id
                    .as_ref()
                    .map(|id| format!(" (id {id})"))
                    .unwrap_or_default(),
                crate::util::snippet(&r.raw, 200)
            ));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        r.raw.hash(&mut h);
        if !st.rejected_seen.insert(h.finish()) {
            continue;
        }
        tracing::warn!(
            stream = %st.s.name, run_id = %st.run_id, record_id = r.record_id.as_deref().unwrap_or("-"),
            reason = %r.reason, "record rejected; kept whole in highwater.rejects"
        );
        st.rejected += 1;
        st.rejects.push(r);
    }
    Ok(())
}

/// Run a blocking warehouse call off the async workers.
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
