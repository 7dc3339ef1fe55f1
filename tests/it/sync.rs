//! The sync job end to end: simulator → keyset walk → Parquet lake → DuckDB, per the list.

use arrow::array::Array;
use highwater::model::Cursor;
use highwater::sync::{FailPoint, SyncOptions};
use serde_json::json;

use crate::util::{Opts, TestEnv, obj, ticket};

const T0: i64 = 1_800_000_000;

/// 1,500 rows in one second: every row lands exactly once, at page sizes 500 and 100; a second
/// run with no changes lands nothing and leaves the cursor as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sharing_one_second_land_exactly_once() {
    for page_size in [500u32, 100] {
        let env = TestEnv::new(Opts {
            page_size,
            ..Opts::default()
        })
        .await;
        for id in 1..=1500 {
            env.sim.insert_raw("ticket", ticket(id, T0 - 60, json!({})));
        }
        let r = env.sync_ok().await;
        assert_eq!(r[0].rows_written, 1500);
        assert_eq!(
            r[0].pages,
            1500 / page_size as u64 + 1,
            "ends on one empty page"
        );
        env.assert_warehouse_equals_source("tickets", "ticket");
        let lake_ids = env.lake_ids("tickets").await;
        assert_eq!(lake_ids.len(), 1500);
        let mut sorted = lake_ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1500, "no id twice in the lake");
        let cursor = env.cursor("tickets").unwrap();
        assert_eq!(cursor, Cursor::window_done(T0 - 5));

        let again = env.sync_ok().await;
        assert_eq!(again[0].rows_written, 0);
        assert_eq!(env.cursor("tickets").unwrap(), cursor);
        assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 1500);
        assert_eq!(env.lake_rows("tickets").await, 1500);
        assert_eq!(env.scalar_i64("SELECT count(*) FROM highwater.files"), 1);
    }
}

/// A page that breaks the keyset contract fails the run naming stream and page; nothing from it
/// is committed and the run does not loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_violations_fail_without_committing() {
    let env = TestEnv::new(Opts {
        page_size: 100,
        ..Opts::default()
    })
    .await;
    for id in 1..=250 {
        env.sim
            .insert_raw("ticket", ticket(id, T0 - 100 + id % 7, json!({})));
    }
    // Unsorted pages on the first run: nothing at all may land.
    env.sim.set_ignore_sort(true);
    let r = env.sync().await;
    assert_eq!(r[0].outcome, "failed");
    let err = r[0].error.clone().unwrap();
    assert!(
        err.contains("stream tickets") && err.contains("page 1"),
        "{err}"
    );
    assert!(
        err.contains("not strictly increasing") || err.contains("not after the cursor"),
        "{err}"
    );
    assert_eq!(r[0].rows_written, 0);
    assert_eq!(env.cursor("tickets"), None);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM highwater.files"), 0);
    env.sim.set_ignore_sort(false);

    env.sync_ok().await;
    let cursor = env.cursor("tickets").unwrap();
    let files = env.scalar_i64("SELECT count(*) FROM highwater.files");

    // The source ignores the keyset filter: page 1 repeats rows at or below the cursor.
    env.sim.insert_raw("ticket", ticket(900, T0 - 2, json!({})));
    env.advance(10);
    env.sim.set_ignore_keyset(true);
    let before = env.sim.request_count();
    let r = env.sync().await;
    let requests = env.sim.request_count() - before;
    assert_eq!(r[0].outcome, "failed");
    let err = r[0].error.clone().unwrap();
    assert!(err.contains("stream tickets, page 1"), "{err}");
    assert!(err.contains("not after the cursor"), "{err}");
    assert!(
        requests <= 2,
        "a bad page must not be retried in a loop: {requests} requests"
    );
    assert_eq!(env.cursor("tickets").unwrap(), cursor, "cursor unmoved");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM highwater.files"),
        files
    );
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 250);
    let (outcome, error): (String, String) = {
        let r =
            env.rows("SELECT outcome, error FROM highwater.runs ORDER BY started_at DESC LIMIT 1");
        (
            r[0][0].as_str().unwrap().into(),
            r[0][1].as_str().unwrap().into(),
        )
    };
    assert_eq!(outcome, "failed");
    assert!(error.contains("page 1"), "{error}");

    env.sim.set_ignore_keyset(false);
    env.sync_ok().await;
    env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A late write inside the lag window is picked up by the next run; one older than the lag is not
/// (it is the reconciliation's job, as the README says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_writes_inside_the_lag_window_land() {
    let env = TestEnv::new(Opts::default()).await;
    for id in (10..=200).step_by(10) {
        env.sim
            .insert_raw("ticket", ticket(id, T0 - 30 + id / 10, json!({})));
    }
    // Rows in the lag window (T0-5, T0] exist but are not read yet.
    env.sim.insert_raw("ticket", ticket(300, T0 - 2, json!({})));
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 20);
    assert_eq!(env.cursor("tickets").unwrap(), Cursor::window_done(T0 - 5));

    // A transaction that took id 155 commits late, stamped with a second the horizon has not passed.
    let late = env
        .sim
        .late_write("ticket", T0 - 2, obj(json!({"subject": "late inside lag"})));
    assert!(
        late < 300,
        "the late row has a lower id than rows already seen"
    );
    // And one stamped with a second the cursor already passed.
    let lost = env.sim.late_write(
        "ticket",
        T0 - 20,
        obj(json!({"subject": "late outside lag"})),
    );
    env.advance(10);
    env.sync_ok().await;
    let ids = env.warehouse_ids("tickets");
    assert!(
        ids.contains(&late),
        "late write inside the lag window landed"
    );
    assert!(ids.contains(&300));
    assert!(
        !ids.contains(&lost),
        "a write older than the lag cannot be seen by a cursor; reconcile finds it"
    );
}

/// A failure between any two steps of a checkpoint, then a rerun: warehouse = source, no
/// duplicates; after the failure the cursor equals the last committed row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_between_steps_then_rerun_loses_nothing() {
    for point in FailPoint::POINTS {
        let env = TestEnv::new(Opts {
            records: 0,
            page_size: 50,
            checkpoint_rows: 120,
            ..Opts::default()
        })
        .await;
        for id in 1..=600 {
            env.sim
                .insert_raw("ticket", ticket(id, T0 - 600 + id / 3, json!({})));
        }
        // The manifest is written once per run; the other points are hit once per checkpoint.
        let nth = if *point == "after_manifest" { 1 } else { 2 };
        let fp = FailPoint::new(point, nth, false);
        let r = env
            .sync_with(SyncOptions {
                failpoint: Some(fp),
            })
            .await;
        if *point == "after_manifest" {
            // Everything was committed before it; the failure is still reported.
            assert!(r[0].error.is_some(), "{point}: {r:?}");
        } else {
            assert_eq!(r[0].outcome, "failed", "{point}: {r:?}");
        }
        let committed = env.scalar_i64("SELECT count(*) FROM tickets");
        if committed > 0 {
            let max = env.rows("SELECT max(updated), max_by(id, (updated, id)) FROM tickets");
            let c = env.cursor("tickets").unwrap();
            // After the manifest the window was read to its end; otherwise the cursor is the
            // last committed row.
            if *point == "after_manifest" {
                assert_eq!(c, Cursor::window_done(T0 - 5), "{point}");
            } else {
                assert_eq!(
                    (c.updated, c.id),
                    (max[0][0].as_i64().unwrap(), max[0][1].as_i64().unwrap()),
                    "{point}: cursor = last committed row"
                );
            }
        } else {
            assert_eq!(env.cursor("tickets"), None, "{point}: no rows, no cursor");
        }
        assert_eq!(
            env.scalar_i64("SELECT coalesce(sum(rows), 0) FROM highwater.files"),
            committed,
            "{point}: every committed row came with its file"
        );
        env.sync_ok().await;
        env.assert_warehouse_equals_source("tickets", "ticket");
        // Every row of the source is in the committed lake files; none twice.
        let mut ids = env.lake_ids("tickets").await;
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(
            n,
            ids.len(),
            "{point}: duplicate rows in committed lake files"
        );
        assert_eq!(ids, env.source_ids("ticket"), "{point}");
    }
}

/// The same, with the process killed (SIGABRT, no cleanup) at each point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_then_rerun_loses_nothing() {
    for point in FailPoint::POINTS {
        let env = TestEnv::new(Opts {
            page_size: 50,
            checkpoint_rows: 120,
            ..Opts::default()
        })
        .await;
        for id in 1..=400 {
            env.sim
                .insert_raw("ticket", ticket(id, T0 - 400 + id / 3, json!({})));
        }
        let out = env
            .bin()
            .arg("sync")
            // The manifest is written once per run; the other points once per checkpoint.
            .env(
                "HIGHWATER_FAILPOINT",
                format!(
                    "{point}:{}:abort",
                    if *point == "after_manifest" { 1 } else { 2 }
                ),
            )
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the process was killed");
        let out = env.bin().arg("sync").output().unwrap();
        assert!(
            out.status.success(),
            "{point}: rerun failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env.assert_warehouse_equals_source("tickets", "ticket");
        let aborted =
            env.scalar_i64("SELECT count(*) FROM highwater.runs WHERE outcome = 'aborted'");
        if *point != "after_manifest" {
            assert_eq!(aborted, 1, "{point}: the killed run is marked aborted");
        }
        let mut ids = env.lake_ids("tickets").await;
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(n, ids.len(), "{point}: duplicates in committed files");
    }
}

/// Types drift between runs: columns widen, nothing is coerced, schema_changes records it, and old
/// and new Parquet files read together by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_drift_widens_columns() {
    let env = TestEnv::new(Opts::default()).await;
    env.sim.insert_raw(
        "ticket",
        ticket(1, T0 - 50, json!({"spam_score": 0, "num": 7})),
    );
    env.sim.insert_raw(
        "ticket",
        ticket(2, T0 - 50, json!({"spam_score": 0, "num": 8})),
    );
    env.sync_ok().await;
    let ty = |col: &str| -> String {
        env.rows(&format!(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'main' AND table_name = 'tickets' AND column_name = '{col}'"
        ))[0][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(ty("spam_score"), "BIGINT");
    assert_eq!(ty("num"), "BIGINT");

    env.sim.insert_raw(
        "ticket",
        ticket(
            3,
            T0 + 1,
            json!({"spam_score": 0.0001, "num": "seven", "custom": {"1": "42", "tags": ["a", "b"]}, "watchers": [1, 2]}),
        ),
    );
    env.advance(10);
    env.sync_ok().await;
    assert_eq!(ty("spam_score"), "DOUBLE");
    assert_eq!(ty("num"), "VARCHAR");
    assert_eq!(ty("custom"), "VARCHAR");
    let rows = env.rows("SELECT id, spam_score, num, custom, watchers FROM tickets ORDER BY id");
    assert_eq!(rows[0][1], json!(0.0));
    assert_eq!(rows[0][2], json!("7"), "the old int kept exactly, as text");
    assert_eq!(rows[2][1], json!(0.0001));
    assert_eq!(rows[2][2], json!("seven"));
    let custom: serde_json::Value = serde_json::from_str(rows[2][3].as_str().unwrap()).unwrap();
    assert_eq!(custom, json!({"1": "42", "tags": ["a", "b"]}));
    assert_eq!(rows[2][4], json!("[1,2]"));

    let changes = env.rows(
        "SELECT column_name, coalesce(from_type, ''), to_type FROM highwater.schema_changes \
         WHERE from_type IS NOT NULL ORDER BY column_name",
    );
    assert!(
        changes.contains(&vec![json!("num"), json!("int64"), json!("utf8")]),
        "{changes:?}"
    );
    assert!(
        changes.contains(&vec![json!("spam_score"), json!("int64"), json!("float64")]),
        "{changes:?}"
    );
    let added = env.scalar_i64(
        "SELECT count(*) FROM highwater.schema_changes WHERE from_type IS NULL AND column_name IN ('custom', 'watchers')",
    );
    assert_eq!(added, 2);

    // Old (num BIGINT) and new (num VARCHAR) files, read together by name with DuckDB.
    let glob = env.path().join("lake/tickets/**/*.parquet");
    let rows = env.rows(&format!(
        "SELECT id, CAST(num AS VARCHAR), spam_score FROM read_parquet('{}', union_by_name = true) ORDER BY id",
        glob.display()
    ));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][1], json!("7"));
    assert_eq!(rows[2][1], json!("seven"));
    assert_eq!(env.lake_rows("tickets").await, 3);
}

/// The same id twice in one checkpoint (it changed while the walk was paging): one row, the later version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_twice_in_a_checkpoint_keeps_the_later_version() {
    let env = TestEnv::new(Opts {
        page_size: 10,
        ..Opts::default()
    })
    .await;
    for id in 1..=300 {
        env.sim.insert_raw(
            "ticket",
            ticket(id, T0 - 400 + id, json!({"subject": "old"})),
        );
    }
    // After page 2 is served, ticket 5 (already read on page 1) moves to a later second.
    let sim = env.sim.clone();
    env.sim.on_search(3, move || {
        sim.update(
            "ticket",
            5,
            obj(json!({"subject": "new", "updated": T0 - 10})),
            false,
        );
    });
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_fetched, 301, "ticket 5 was read twice");
    assert_eq!(r[0].rows_written, 300);
    let rows = env.rows("SELECT subject, updated FROM tickets WHERE id = 5");
    assert_eq!(rows, vec![vec![json!("new"), json!(T0 - 10)]]);
    let lake_ids = env.lake_ids("tickets").await;
    assert_eq!(lake_ids.iter().filter(|&&i| i == 5).count(), 1);
    env.assert_warehouse_equals_source("tickets", "ticket");
}

/// `""`, null and a missing key stay distinct where the formats allow; unicode is byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_null_missing_and_unicode() {
    let env = TestEnv::new(Opts::default()).await;
    let text = "Réclamation 請求書 🧾👩‍💻 — \u{0301}e\u{200d} 𝔘𝔫𝔦";
    env.sim
        .insert_raw("ticket", ticket(1, T0 - 50, json!({"note": ""})));
    env.sim
        .insert_raw("ticket", ticket(2, T0 - 50, json!({"note": null})));
    env.sim.insert_raw("ticket", ticket(3, T0 - 50, json!({})));
    env.sim
        .insert_raw("ticket", ticket(4, T0 - 50, json!({"note": text})));
    env.sync_ok().await;
    let rows = env.rows("SELECT id, note, note IS NULL FROM tickets ORDER BY id");
    assert_eq!(rows[0], vec![json!(1), json!(""), json!(false)]);
    assert_eq!(rows[1], vec![json!(2), json!(null), json!(true)]);
    assert_eq!(rows[2], vec![json!(3), json!(null), json!(true)]);
    assert_eq!(rows[3][1].as_str().unwrap().as_bytes(), text.as_bytes());
    // The same in the Parquet file.
    let batches = env.lake_batches("tickets").await;
    let note = batches[0]
        .column_by_name("note")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .clone();
    assert_eq!(note.value(0), "");
    assert!(note.is_valid(0));
    assert!(note.is_null(1) && note.is_null(2));
    assert_eq!(note.value(3).as_bytes(), text.as_bytes());
}

/// Contact ids arrive as JSON strings; they order numerically (9, 10, 11), never as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_ids_order_numerically() {
    let env = TestEnv::new(Opts {
        streams: vec![("contacts", "contact")],
        page_size: 2,
        ..Opts::default()
    })
    .await;
    for id in [9, 10, 11, 100, 2] {
        env.sim.insert_raw(
            "contact",
            json!({"_context": "cerberusweb.contexts.contact", "_type": "contact", "id": id.to_string(),
                   "first_name": format!("c{id}"), "updated_at": T0 - 30}),
        );
    }
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 5);
    assert_eq!(env.warehouse_ids("contacts"), vec![2, 9, 10, 11, 100]);
    let ty = env.rows(
        "SELECT data_type FROM information_schema.columns WHERE table_schema = 'main' AND table_name = 'contacts' AND column_name = 'id'",
    );
    assert_eq!(ty[0][0], json!("BIGINT"));
    assert_eq!(env.cursor("contacts").unwrap(), Cursor::window_done(T0 - 5));
}

/// Two syncs at once on one warehouse: the second waits for the run lock and then says who holds
/// it; no interleaving. A long-running reader holding the DuckDB file: the sync retries and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_and_readers_are_refused_clearly() {
    let env = TestEnv::new(Opts {
        page_size: 50,
        ..Opts::default()
    })
    .await;
    for id in 1..=200 {
        env.sim
            .insert_raw("ticket", ticket(id, T0 - 300 + id, json!({})));
    }
    // The first sync stalls on its first search for a while (a slow source).
    env.sim.push_fault(highwater::sim::Fault::Delay(
        std::time::Duration::from_secs(6),
    ));
    let first = env.bin().arg("sync").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = env.bin().arg("sync").output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("lock") && err.contains("pid="),
        "names the holder: {err}"
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM highwater.runs"),
        1,
        "no interleaving"
    );
    env.assert_warehouse_equals_source("tickets", "ticket");

    // An analyst's long query holds the file (DuckDB: one writer process, or readers).
    env.sim.insert_raw("ticket", ticket(500, T0 - 1, json!({})));
    env.advance(10);
    let reader = env
        .bin()
        .args(["query", "SELECT sum(range * 2) FROM range(4000000000)"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = env.bin().arg("sync").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let mut reader = reader;
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("PID") || err.contains("pid"),
        "says which process holds it: {err}"
    );
    // Once the reader is gone, the sync goes through.
    let out = env.bin().arg("sync").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A stream's table and cursor belong to its record type and filter: a config that changes
/// either is refused (rows the old filter excluded are behind the cursor) instead of loading
/// silently wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_filter_or_record_type_is_refused() {
    let env = TestEnv::new(Opts::default()).await;
    for id in 1..=10 {
        let (status, status_id) = if id % 2 == 0 {
            ("open", 0)
        } else {
            ("closed", 2)
        };
        env.sim.insert_raw(
            "ticket",
            ticket(
                id,
                T0 - 100 + id,
                json!({"status": status, "status_id": status_id}),
            ),
        );
    }
    let filtered = env.toml.replace(
        "record_type = \"ticket\"\n",
        "record_type = \"ticket\"\nfilter = \"status:o\"\n",
    );
    assert_ne!(filtered, env.toml);
    std::fs::write(env.path().join("filtered.toml"), &filtered).unwrap();
    let out = env
        .bin()
        .args(["--config", "filtered.toml", "sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = env.scalar_i64("SELECT count(*) FROM tickets");
    assert!(loaded > 0 && loaded < 10, "{loaded}");
    let cursor = env.cursor("tickets");

    // The filter removed: refused, nothing changes.
    let out = env.bin().arg("sync").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was loaded with filter \"status:o\""),
        "{stderr}"
    );
    assert_eq!(env.cursor("tickets"), cursor);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), loaded);

    // Another record type under the same name: refused too.
    let other = filtered.replace("record_type = \"ticket\"", "record_type = \"org\"");
    std::fs::write(env.path().join("other.toml"), &other).unwrap();
    let out = env
        .bin()
        .args(["--config", "other.toml", "sync"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was loaded from Cerb \"ticket\" records"),
        "{stderr}"
    );
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), loaded);
}
