//! What the orphan sweep asks the warehouse: which runs died, which lake files are committed, and
//! which run ids are this warehouse's own. The lake is only listed to find candidates; whether an
//! object may go is decided here.

use std::collections::HashSet;

use super::{Result, Warehouse};

/// A run recorded as `running`. Under the run lock, its process is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterruptedRun {
    pub run_id: String,
    pub stream: String,
    /// When the run was recorded as started, in unix microseconds (the database's clock).
    pub started_at_micros: i64,
}

impl Warehouse {
    /// Runs still recorded as `running`, oldest first. The caller holds the run lock, so no live
    /// process owns them; [`Warehouse::abort_interrupted_runs`] marks them once they are cleaned up.
    pub fn interrupted_runs(&self) -> Result<Vec<InterruptedRun>> {
        self.with_conn("list interrupted runs", |c| {
            let mut stmt = c.prepare(
                "SELECT run_id, stream, epoch_us(started_at) FROM highwater.runs \
                 WHERE outcome = 'running' ORDER BY started_at, run_id, stream",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(InterruptedRun {
                    run_id: r.get(0)?,
                    stream: r.get(1)?,
                    started_at_micros: r.get(2)?,
                })
            })?;
            rows.collect::<duckdb::Result<Vec<_>>>()
        })
    }

    /// The keys of every committed lake file, of every stream.
    pub fn committed_keys(&self) -> Result<HashSet<String>> {
        self.with_conn("list committed file keys", |c| {
            let mut stmt = c.prepare("SELECT key FROM highwater.files")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<duckdb::Result<HashSet<_>>>()
        })
    }

    /// Every run id this warehouse has recorded, whatever its outcome. A lake object named after
    /// another run was not written by this warehouse.
    pub fn known_run_ids(&self) -> Result<HashSet<String>> {
        self.with_conn("list run ids", |c| {
            let mut stmt = c.prepare("SELECT DISTINCT run_id FROM highwater.runs")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<duckdb::Result<HashSet<_>>>()
        })
    }

    /// The streams this warehouse has recorded.
    pub fn stream_names(&self) -> Result<Vec<String>> {
        self.with_conn("list streams", |c| {
            let mut stmt = c.prepare("SELECT name FROM highwater.streams ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<duckdb::Result<Vec<_>>>()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Checkpoint, FileRow, RunKind, RunStart, Warehouse};
    use crate::convert::{Converter, SystemValues};
    use crate::model::{Cursor, CursorMode, Op, Record};

    fn start(wh: &Warehouse, run_id: &str) {
        wh.start_run(&RunStart {
            run_id: run_id.into(),
            stream: "tickets".into(),
            record_type: "ticket".into(),
            cursor_mode: CursorMode::UpdatedId,
            cursor_field: "updated".into(),
            kind: RunKind::Sync,
            window_end: Some(100),
            cursor_before: None,
            filter: String::new(),
        })
        .unwrap();
    }

    #[test]
    fn interrupted_runs_committed_keys_and_known_runs() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        assert!(wh.interrupted_runs().unwrap().is_empty());
        let before = crate::util::unix_now_micros();
        start(&wh, "r1");
        let mut fields = serde_json::Map::new();
        fields.insert("id".into(), json!(1));
        fields.insert("updated".into(), json!(10));
        let mut conv = Converter::new(Default::default());
        let sys = SystemValues {
            run_id: "r1".into(),
            synced_at_micros: 1,
            op: Op::Upsert,
        };
        let (batch, changes) = conv
            .convert(
                &[Record {
                    id: 1,
                    updated: 10,
                    fields,
                }],
                &sys,
            )
            .unwrap();
        wh.commit_checkpoint(&Checkpoint {
            stream: "tickets",
            record_type: "ticket",
            run_id: "r1",
            seq: 1,
            schema: conv.schema(),
            schema_changes: &changes,
            batches: std::slice::from_ref(&batch),
            file: FileRow {
                key: "tickets/synced_date=2027-01-15/r1-00001.parquet".into(),
                rows: 1,
                bytes: 1,
            },
            cursor: Some(Cursor::new(10, 1)),
            pages: 1,
            rows_fetched: 1,
        })
        .unwrap();

        let runs = wh.interrupted_runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].run_id.as_str(), runs[0].stream.as_str()),
            ("r1", "tickets")
        );
        let slack = 5_000_000;
        assert!(
            (before - slack..=crate::util::unix_now_micros() + slack)
                .contains(&runs[0].started_at_micros),
            "started_at in unix microseconds: {}",
            runs[0].started_at_micros
        );
        assert_eq!(
            wh.committed_keys().unwrap(),
            ["tickets/synced_date=2027-01-15/r1-00001.parquet".to_string()].into()
        );
        assert_eq!(wh.stream_names().unwrap(), vec!["tickets".to_string()]);

        assert_eq!(wh.abort_interrupted_runs().unwrap(), vec!["r1".to_string()]);
        assert!(
            wh.interrupted_runs().unwrap().is_empty(),
            "an aborted run is no longer interrupted"
        );
        start(&wh, "r2");
        assert_eq!(
            wh.known_run_ids().unwrap(),
            ["r1".to_string(), "r2".to_string()].into()
        );
    }
}
