use std::time::Duration;

use serde_json::json;

use super::*;
use crate::convert::{Converter, SystemValues};
use crate::model::{Cursor, CursorMode, Op, Record};

fn rec(id: i64, updated: i64, extra: serde_json::Value) -> Record {
    let mut fields = serde_json::Map::new();
    fields.insert("id".into(), json!(id));
    fields.insert("updated".into(), json!(updated));
    if let serde_json::Value::Object(m) = extra {
        fields.extend(m);
    }
    Record {
        id,
        updated,
        fields,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    wh: Warehouse,
    conv: Converter,
    seq: u32,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        wh.start_run(&RunStart {
            run_id: "r1".into(),
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
        Fixture {
            _dir: dir,
            wh,
            conv: Converter::new(Default::default()),
            seq: 0,
        }
    }

    fn commit(
        &mut self,
        records: &[Record],
        op: Op,
        cursor: Option<Cursor>,
    ) -> Result<CommitStats> {
        self.seq += 1;
        let sys = SystemValues {
            run_id: "r1".into(),
            synced_at_micros: 1_800_000_000_000_000,
            op,
        };
        let (batch, changes) = self.conv.convert(records, &sys).unwrap();
        self.wh.commit_checkpoint(&Checkpoint {
            stream: "tickets",
            record_type: "ticket",
            run_id: "r1",
            seq: self.seq,
            schema: self.conv.schema(),
            schema_changes: &changes,
            batches: std::slice::from_ref(&batch),
            file: FileRow {
                key: format!("tickets/k-{}.parquet", self.seq),
                rows: batch.num_rows() as u64,
                bytes: 1,
            },
            cursor,
            pages: 1,
            rows_fetched: records.len() as u64,
        })
    }

    fn rows(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        self.wh.query_rows(sql).unwrap()
    }
}

#[test]
fn a_checkpoint_lands_rows_file_and_cursor_together() {
    let mut f = Fixture::new();
    let stats = f
        .commit(
            &[
                rec(1, 10, json!({"subject": "a"})),
                rec(2, 10, json!({"subject": "b"})),
            ],
            Op::Upsert,
            Some(Cursor::new(10, 2)),
        )
        .unwrap();
    assert_eq!(stats.upserted, 2);
    assert_eq!(stats.schema_version, 1);
    assert_eq!(
        f.rows("SELECT id, subject FROM tickets ORDER BY id"),
        vec![vec![json!(1), json!("a")], vec![json!(2), json!("b")]]
    );
    assert_eq!(
        f.rows("SELECT count(*) FROM highwater.files"),
        vec![vec![json!(1)]]
    );
    let st =
        f.wh.stream_state("tickets", CursorMode::UpdatedId, "updated")
            .unwrap();
    assert_eq!(st.cursor, Some(Cursor::new(10, 2)));
    assert_eq!(st.schema, *f.conv.schema());
}

#[test]
fn a_second_version_of_an_id_replaces_the_first() {
    let mut f = Fixture::new();
    f.commit(
        &[rec(1, 10, json!({"subject": "old"}))],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    f.commit(
        &[rec(1, 11, json!({"subject": "new"}))],
        Op::Upsert,
        Some(Cursor::new(11, 1)),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, subject, updated FROM tickets"),
        vec![vec![json!(1), json!("new"), json!(11)]]
    );
}

#[test]
fn a_cursor_never_moves_back_and_the_failed_commit_leaves_nothing() {
    let mut f = Fixture::new();
    f.commit(
        &[rec(1, 10, json!({}))],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    let e = f
        .commit(&[rec(5, 9, json!({}))], Op::Upsert, Some(Cursor::new(9, 5)))
        .unwrap_err();
    assert!(e.to_string().contains("move the cursor back"), "{e}");
    assert_eq!(f.rows("SELECT id FROM tickets"), vec![vec![json!(1)]]);
    assert_eq!(
        f.rows("SELECT count(*) FROM highwater.files"),
        vec![vec![json!(1)]]
    );
}

#[test]
fn widening_alters_the_column_and_keeps_old_values_exact() {
    let mut f = Fixture::new();
    f.commit(
        &[rec(1, 10, json!({"n": 7, "s": 0}))],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    f.commit(
        &[rec(2, 11, json!({"n": "seven", "s": 0.5, "new": true}))],
        Op::Upsert,
        Some(Cursor::new(11, 2)),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, n, s, new FROM tickets ORDER BY id"),
        vec![
            vec![json!(1), json!("7"), json!(0.0), serde_json::Value::Null],
            vec![json!(2), json!("seven"), json!(0.5), json!(true)]
        ]
    );
    let st =
        f.wh.stream_state("tickets", CursorMode::UpdatedId, "updated")
            .unwrap();
    assert_eq!(st.schema_version, 2);
}

#[test]
fn integers_beyond_2_pow_53_never_widen_to_double() {
    let mut f = Fixture::new();
    let big = 9_007_199_254_740_993i64; // 2^53 + 1: a double would round it
    f.commit(
        &[rec(1, 10, json!({"n": big}))],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    f.commit(
        &[rec(2, 11, json!({"n": 0.5}))],
        Op::Upsert,
        Some(Cursor::new(11, 2)),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, n FROM tickets ORDER BY id"),
        vec![
            vec![json!(1), json!(big.to_string())],
            vec![json!(2), json!("0.5")]
        ]
    );
}

#[test]
fn the_smallest_integer_widens_without_overflow() {
    let mut f = Fixture::new();
    f.commit(
        &[rec(1, 10, json!({"n": i64::MIN}))],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    f.commit(
        &[rec(2, 11, json!({"n": 0.5}))],
        Op::Upsert,
        Some(Cursor::new(11, 2)),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT n FROM tickets ORDER BY id"),
        vec![vec![json!(i64::MIN.to_string())], vec![json!("0.5")]]
    );
}

#[test]
fn lost_stream_state_is_re_derived_from_the_table() {
    let mut f = Fixture::new();
    f.commit(
        &[
            rec(1, 10, json!({"s": "a"})),
            rec(7, 12, json!({"s": "b"})),
            rec(3, 12, json!({"s": "c"})),
        ],
        Op::Upsert,
        Some(Cursor::new(12, 7)),
    )
    .unwrap();
    f.wh.with_conn("drop state", |c| {
        c.execute_batch("DELETE FROM highwater.streams")
    })
    .unwrap();
    let st =
        f.wh.stream_state("tickets", CursorMode::UpdatedId, "updated")
            .unwrap();
    assert_eq!(
        st.cursor,
        Some(Cursor::new(12, 7)),
        "the greatest (updated, id) committed"
    );
    assert_eq!(
        st.schema.get("s").map(|c| c.ty),
        Some(crate::model::ColType::Utf8)
    );
    let st =
        f.wh.stream_state("tickets", CursorMode::Id, "updated")
            .unwrap();
    assert_eq!(st.cursor, Some(Cursor::new(0, 7)));
}

#[test]
fn delete_rows_mark_and_a_later_upsert_clears_the_mark() {
    let mut f = Fixture::new();
    f.commit(
        &[
            rec(1, 10, json!({"subject": "a"})),
            rec(2, 10, json!({"subject": "b"})),
        ],
        Op::Upsert,
        Some(Cursor::new(10, 2)),
    )
    .unwrap();
    let del = Record {
        id: 2,
        updated: 0,
        fields: serde_json::Map::new(),
    };
    let s = f.commit(&[del], Op::Delete, None).unwrap();
    assert_eq!(s.marked_deleted, 1);
    assert_eq!(
        f.rows("SELECT id, subject, _hw_deleted_at IS NOT NULL FROM tickets ORDER BY id"),
        vec![
            vec![json!(1), json!("a"), json!(false)],
            vec![json!(2), json!("b"), json!(true)]
        ]
    );
    assert_eq!(
        f.rows("SELECT count(*) FROM analytics.tickets"),
        vec![vec![json!(1)]]
    );
    f.commit(&[rec(2, 12, json!({"subject": "back"}))], Op::Repair, None)
        .unwrap();
    assert_eq!(
        f.rows("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        vec![vec![json!(0)]]
    );
    let hashes = f.wh.id_hashes("tickets").unwrap();
    assert_eq!(
        hashes.iter().map(|h| (h.0, h.2)).collect::<Vec<_>>(),
        vec![(1, false), (2, false)]
    );
    // Reconcile commits never move the cursor.
    assert_eq!(
        f.wh.stream_state("tickets", CursorMode::UpdatedId, "updated")
            .unwrap()
            .cursor,
        Some(Cursor::new(10, 2))
    );
}

#[test]
fn a_changed_cursor_mode_is_refused() {
    let f = Fixture::new();
    let e =
        f.wh.stream_state("tickets", CursorMode::Id, "id")
            .unwrap_err();
    assert!(e.to_string().contains("cannot change meaning"), "{e}");
}

#[test]
fn finish_run_saves_counts_and_status_reports_them() {
    let mut f = Fixture::new();
    f.commit(
        &[rec(1, 10, json!({"status_id": 0}))],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    f.wh.finish_run(&RunFinish {
        run_id: "r1".into(),
        stream: "tickets".into(),
        outcome: Outcome::Succeeded,
        error: None,
        final_cursor: Some(Cursor::window_done(95)),
        counts: RunCounts {
            pages: 2,
            rows_written: 1,
            requests: 3,
            ..Default::default()
        },
        details: None,
    })
    .unwrap();
    let st = f.wh.status().unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].cursor(), Some(Cursor::window_done(95)));
    assert_eq!(st[0].rows_live, 1);
    let run = st[0].last_run.as_ref().unwrap();
    assert_eq!(
        (run.outcome.as_str(), run.counts.requests),
        ("succeeded", 3)
    );
    assert!(st[0].last_reconcile.is_none());
}

#[test]
fn interrupted_runs_are_marked_aborted_once() {
    let f = Fixture::new();
    assert_eq!(
        f.wh.abort_interrupted_runs().unwrap(),
        vec!["r1".to_string()]
    );
    assert!(f.wh.abort_interrupted_runs().unwrap().is_empty());
    assert_eq!(
        f.rows("SELECT outcome FROM highwater.runs"),
        vec![vec![json!("aborted")]]
    );
}

#[test]
fn the_run_lock_is_exclusive_and_names_its_holder() {
    let f = Fixture::new();
    let held = f.wh.lock_runs(Duration::from_secs(1)).unwrap();
    let e = f.wh.lock_runs(Duration::from_millis(100)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("pid={}", std::process::id())),
        "{msg}"
    );
    drop(held);
    f.wh.lock_runs(Duration::from_millis(100)).unwrap();
}

#[test]
fn read_only_connections_refuse_writes_and_missing_files() {
    let f = Fixture::new();
    let ro = Warehouse::open_read_only(f.wh.path()).unwrap();
    assert!(
        ro.query("CREATE TABLE x (a INT)", OutputFormat::Table)
            .is_err()
    );
    assert!(
        ro.query("SELECT 1 AS one", OutputFormat::Csv)
            .unwrap()
            .starts_with("one\n1")
    );
    let e = Warehouse::open_read_only(&f.wh.path().with_file_name("nope.duckdb")).unwrap_err();
    assert!(e.to_string().contains("run `highwater sync` first"), "{e}");
}

#[test]
fn identifiers_are_quoted_everywhere() {
    let mut f = Fixture::new();
    f.commit(
        &[rec(
            1,
            10,
            json!({"select": 1, "a \"quoted\" name": "x", "Mixed Case": 2}),
        )],
        Op::Upsert,
        Some(Cursor::new(10, 1)),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT \"select\", \"a \"\"quoted\"\" name\", \"Mixed Case\" FROM tickets"),
        vec![vec![json!(1), json!("x"), json!(2)]]
    );
}
