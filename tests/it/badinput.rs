//! Bad input and bad environments, each against a real run: records the loader cannot place,
//! text serde_json refuses, field names that are not identifiers, and a lake or warehouse that
//! cannot be written (read-only mount, immutable file, full disk). Every case either lands what
//! can land, with the rest kept in `highwater.rejects`, or fails with a message naming the path
//! and what to do, the cursor where the last commit left it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use highwater::model::Cursor;
use highwater::sync::{Pipeline, StreamReport, SyncOptions};
use serde_json::{Map, Value, json};

use crate::util::{Opts, TestEnv, obj, ticket};

const T0: i64 = 1_800_000_000;
const T: i64 = T0 - 50;

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn ticket_without(id: i64, updated: i64, key: &str) -> Value {
    let mut m = obj(ticket(id, updated, json!({})));
    m.remove(key);
    Value::Object(m)
}

/// A run built from the env's config; a setup failure (lake or warehouse unusable) is an `Err`.
async fn try_sync(env: &TestEnv) -> Result<Vec<StreamReport>, String> {
    let p = Pipeline::build(env.config()).map_err(|e| e.to_string())?;
    highwater::sync::run(&p, None, &SyncOptions::default())
        .await
        .map_err(|e| e.to_string())
}

fn rejects(env: &TestEnv) -> Vec<(Option<String>, String, String, String)> {
    env.rows("SELECT record_id, raw, reason, run_id FROM highwater.rejects ORDER BY reason, raw")
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().map(str::to_string),
                r[1].as_str().unwrap().to_string(),
                r[2].as_str().unwrap().to_string(),
                r[3].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// Records without a usable id (missing, null, not an integer), elements that are not objects and
/// a number beyond a double land in `highwater.rejects` with their text and reason; every other
/// record lands, and the cursor passes them all — including a page of nothing but rejects at the
/// end of the window and a reject that two pages both return. A later run does not reject them
/// again; a run whose only new record is bad keeps it with its final cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_usable_id_are_rejected_and_the_cursor_passes_them() {
    let env = TestEnv::new(Opts {
        page_size: 3,
        ..Opts::default()
    })
    .await;
    for id in [1, 2, 3, 5, 6, 7, 8, 11] {
        env.sim.insert_raw("ticket", ticket(id, T, json!({})));
    }
    // Pages of 3 by (updated, id): [1 2 3] [4 5 6] [7 8 9] [9 10 11] [12 13] — row 9 is the
    // last of page 3, so page 4 serves it again; page 5 holds nothing loadable and is short.
    env.sim
        .insert_raw_body("ticket", 4, Some(T), body(&ticket_without(4, T, "id")));
    env.sim.insert_raw_body(
        "ticket",
        9,
        Some(T),
        body(&ticket(9, T, json!({"id": "x9"}))),
    );
    env.sim.insert_raw_body("ticket", 10, Some(T), "[1,2]");
    env.sim.insert_raw_body(
        "ticket",
        12,
        Some(T),
        body(&ticket(12, T, json!({"id": null}))),
    );
    env.sim.insert_raw_body(
        "ticket",
        13,
        Some(T),
        format!(r#"{{"id":13,"updated":{T},"n":1e400}}"#),
    );

    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 8, "{:?}", r[0]);
    assert_eq!(r[0].rejected, 5, "{:?}", r[0]);
    assert_eq!(
        r[0].pages, 5,
        "the walk ends at the short page of rejects: {:?}",
        r[0]
    );
    assert_eq!(env.warehouse_ids("tickets"), vec![1, 2, 3, 5, 6, 7, 8, 11]);
    assert_eq!(env.cursor("tickets"), Some(Cursor::window_done(T0 - 5)));
    assert_eq!(env.lake_ids("tickets").await, vec![1, 2, 3, 5, 6, 7, 8, 11]);

    let rej = rejects(&env);
    assert_eq!(rej.len(), 5, "{rej:#?}");
    assert!(
        rej.iter().all(|x| x.3 == r[0].run_id),
        "kept by this run: {rej:#?}"
    );
    let find = |needle: &str| {
        rej.iter()
            .find(|r| r.1.contains(needle))
            .unwrap_or_else(|| panic!("no reject holding {needle}: {rej:#?}"))
    };
    let no_id = find("\"subject\":\"ticket 4\"");
    assert_eq!(no_id.0, None);
    assert!(no_id.2.contains("no `id` field"), "{}", no_id.2);
    let x9 = find("\"x9\"");
    assert_eq!(x9.0.as_deref(), Some("x9"));
    assert!(x9.2.contains("not an integer"), "{}", x9.2);
    let null_id = find("\"ticket 12\"");
    assert_eq!(null_id.0, None);
    let array = find("[1,2]");
    assert_eq!(array.1, "[1,2]");
    assert!(array.2.contains("not a JSON object"), "{}", array.2);
    let big = find("1e400");
    assert_eq!(
        big.1,
        format!(r#"{{"id":13,"updated":{T},"n":1e400}}"#),
        "kept as sent"
    );
    assert!(big.2.contains("not valid JSON"), "{}", big.2);

    // Nothing new: nothing rejected again.
    env.advance(1);
    let r = env.sync_ok().await;
    assert_eq!((r[0].rows_written, r[0].rejected), (0, 0), "{:?}", r[0]);
    assert_eq!(rejects(&env).len(), 5);

    // A window whose only record is bad: kept with the run's final cursor (no checkpoint).
    env.sim.insert_raw_body(
        "ticket",
        20,
        Some(T0 + 10),
        body(&ticket_without(20, T0 + 10, "id")),
    );
    env.advance(20);
    let r = env.sync_ok().await;
    assert_eq!((r[0].rows_written, r[0].rejected), (0, 1), "{:?}", r[0]);
    assert_eq!(
        env.cursor("tickets"),
        Some(Cursor::window_done(env.sim.now() - 5))
    );
    let rej = rejects(&env);
    assert_eq!(rej.len(), 6);
    assert_eq!(rej.iter().filter(|x| x.3 == r[0].run_id).count(), 1);
}

/// `on_bad_record = "fail"`: the run stops at the page holding the bad record, naming it; that
/// page commits nothing (the earlier checkpoint stays), the cursor stays before it and nothing is
/// rejected. With the default policy the same source then loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_bad_record_fail_stops_the_run_and_commits_nothing_of_that_page() {
    let mut env = TestEnv::new(Opts {
        page_size: 3,
        checkpoint_rows: 3,
        ..Opts::default()
    })
    .await;
    let reject_toml = env.toml.clone();
    env.toml = env
        .toml
        .replace("[sync]\n", "[sync]\non_bad_record = \"fail\"\n");
    for id in [1, 2, 3, 4, 6] {
        env.sim.insert_raw("ticket", ticket(id, T, json!({})));
    }
    env.sim
        .insert_raw_body("ticket", 5, Some(T), body(&ticket_without(5, T, "id")));

    let r = env.sync().await;
    assert_eq!(r[0].outcome, "failed", "{:?}", r[0]);
    let err = r[0].error.clone().unwrap();
    assert!(
        err.contains("stream tickets") && err.contains("page 2 record #2"),
        "{err}"
    );
    assert!(
        err.contains("no `id` field") && err.contains("on_bad_record"),
        "{err}"
    );
    assert!(
        err.contains("\"subject\":\"ticket 5\""),
        "the record is shown: {err}"
    );
    assert_eq!(r[0].rows_written, 3);
    assert_eq!(env.warehouse_ids("tickets"), vec![1, 2, 3]);
    assert_eq!(env.cursor("tickets"), Some(Cursor::new(T, 3)));
    assert_eq!(env.scalar_i64("SELECT count(*) FROM highwater.files"), 1);
    assert!(rejects(&env).is_empty());
    let outcome = env.rows(&format!(
        "SELECT outcome, cursor_after_id FROM highwater.runs WHERE run_id = '{}'",
        r[0].run_id
    ));
    assert_eq!(outcome[0], vec![json!("failed"), json!(3)]);

    env.toml = reject_toml;
    let r = env.sync_ok().await;
    assert_eq!((r[0].rows_written, r[0].rejected), (2, 1));
    assert_eq!(env.warehouse_ids("tickets"), vec![1, 2, 3, 4, 6]);
    assert_eq!(env.cursor("tickets"), Some(Cursor::window_done(T0 - 5)));
}

/// Lone surrogate escapes, invalid UTF-8 and NUL through the whole pipeline (the binary, for its
/// logs): surrogates and invalid bytes become U+FFFD, NUL is kept, in DuckDB and in Parquet
/// alike; each touched record is logged once, with its id; untouched records are not; a valid
/// pair and an escaped backslash are left alone; reconcile reads the same text (no repairs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_surrogates_invalid_utf8_and_nul_follow_the_text_policy() {
    let env = TestEnv::new(Opts::default()).await;
    env.sim.insert_raw("ticket", ticket(1, T, json!({})));
    let raw =
        |id: i64, subject: &str| format!(r#"{{"id":{id},"updated":{T},"subject":"{subject}"}}"#);
    env.sim
        .insert_raw_body("ticket", 2, Some(T), raw(2, r"a\ud800b\udc00"));
    env.sim
        .insert_raw_body("ticket", 3, Some(T), raw(3, r"a\u0000b"));
    env.sim
        .insert_raw_body("ticket", 4, Some(T), raw(4, r"pair \ud83d\ude00"));
    let mut five = raw(5, "xQy").into_bytes();
    let q = five.iter().position(|b| *b == b'Q').unwrap();
    five[q] = 0xFF;
    env.sim.insert_raw_body("ticket", 5, Some(T), five);
    env.sim
        .insert_raw_body("ticket", 6, Some(T), raw(6, r"\\ud800"));

    let out = env
        .bin()
        .args(["--log-format", "json", "sync"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let expect: [(i64, &str); 6] = [
        (1, "ticket 1"),
        (2, "a\u{FFFD}b\u{FFFD}"),
        (3, "a\0b"),
        (4, "pair 😀"),
        (5, "x\u{FFFD}y"),
        (6, "\\ud800"),
    ];
    let wh: Vec<(i64, String)> = env
        .rows("SELECT id, subject FROM tickets ORDER BY id")
        .into_iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(i64, String)> = expect.iter().map(|(i, s)| (*i, s.to_string())).collect();
    assert_eq!(wh, want, "DuckDB");
    // The Parquet file, read by the parquet crate and by DuckDB.
    let mut lake = Vec::new();
    for b in env.lake_batches("tickets").await {
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .clone();
        let subj = b
            .column_by_name("subject")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            lake.push((ids.value(i), subj.value(i).to_string()));
        }
    }
    lake.sort();
    assert_eq!(lake, want, "Parquet");
    let via_duckdb = env.rows(&format!(
        "SELECT subject FROM read_parquet('{}/lake/tickets/**/*.parquet') WHERE id = 3",
        env.path().display()
    ));
    assert_eq!(
        via_duckdb[0][0],
        json!("a\0b"),
        "DuckDB reads the NUL back from Parquet"
    );
    assert!(rejects(&env).is_empty());

    // One warning per touched record, naming it.
    let repaired: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "record text repaired by the text policy")
        .collect();
    let ids: Vec<i64> = repaired
        .iter()
        .map(|v| v["fields"]["record_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3, 5], "{stderr}");
    assert!(repaired.iter().all(|v| v["level"] == "WARN"));
    let what = |i: usize| {
        repaired[i]["fields"]["repairs"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(what(0).contains("2 lone surrogate"), "{}", what(0));
    assert!(what(1).contains("1 NUL character(s) kept"), "{}", what(1));
    assert!(what(2).contains("1 invalid UTF-8"), "{}", what(2));

    // Reconcile parses the same way: the content hashes match, nothing is repaired.
    let out = env.bin().args(["reconcile"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = env.rows("SELECT repaired, deleted FROM highwater.runs WHERE kind = 'reconcile'");
    assert_eq!(rec, vec![vec![json!(0), json!(0)]]);
}

/// Field names that are not identifiers become columns: spaces, both quotes, SQL keywords, a dot,
/// 200 characters, an empty name, `_hw_` names and names equal after case folding. They are
/// queryable in DuckDB, the same names are in Parquet (readable by DuckDB with the lake's own
/// glob), renames follow the rule and are recorded, and a later run maps the same fields to the
/// same columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_that_are_not_identifiers_become_columns() {
    let env = TestEnv::new(Opts::default()).await;
    let long = "n".repeat(200);
    let mut extra = Map::new();
    for (k, v) in [
        ("with space", "ws"),
        ("quote\"d", "dq"),
        ("it's", "sq"),
        ("select", "kw1"),
        ("order", "kw2"),
        ("group", "kw3"),
        ("a.b", "dot"),
        (long.as_str(), "long"),
        ("Subject", "upper"),
        ("_hw_op", "source op"),
        ("_hw_run_id", "source run"),
        ("", "empty"),
        ("rowid", "not the row id"),
        ("synced_date", "not the partition"),
    ] {
        extra.insert(k.to_string(), json!(v));
    }
    env.sim
        .insert_raw("ticket", ticket(1, T, Value::Object(extra)));
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 1);

    let q = |names: &[&str]| {
        let cols: Vec<String> = names
            .iter()
            .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
            .collect();
        env.rows(&format!(
            "SELECT {} FROM tickets WHERE id = 1",
            cols.join(", ")
        ))
        .remove(0)
    };
    assert_eq!(
        q(&[
            "with space",
            "quote\"d",
            "it's",
            "select",
            "order",
            "group",
            "a.b",
            long.as_str()
        ]),
        ["ws", "dq", "sq", "kw1", "kw2", "kw3", "dot", "long"]
            .map(|s| json!(s))
            .to_vec()
    );
    assert_eq!(
        q(&[
            "subject",
            "Subject__2",
            "src_hw_op",
            "src_hw_run_id",
            "_",
            "_hw_op"
        ]),
        [
            "ticket 1",
            "upper",
            "source op",
            "source run",
            "empty",
            "upsert"
        ]
        .map(|s| json!(s))
        .to_vec()
    );
    assert_eq!(
        q(&["_hw_run_id"]),
        vec![json!(r[0].run_id)],
        "system columns are untouched"
    );
    assert_eq!(
        q(&["rowid__2", "synced_date__2"]),
        vec![json!("not the row id"), json!("not the partition")]
    );

    // The renames are in schema_changes, with the source field and the reason.
    let changes = env.rows(
        "SELECT column_name, reason FROM highwater.schema_changes WHERE reason LIKE 'source field%' ORDER BY column_name",
    );
    let renamed: Vec<&str> = changes.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(
        renamed,
        [
            "Subject__2",
            "_",
            "rowid__2",
            "src_hw_op",
            "src_hw_run_id",
            "synced_date__2"
        ]
    );
    let why = changes[0][1].as_str().unwrap();
    assert!(
        why.contains("\"Subject\"") && why.contains("case is ignored"),
        "{why}"
    );

    // Parquet holds exactly the table's columns, by the same names.
    let table: BTreeSet<String> = env
        .rows("SELECT column_name FROM information_schema.columns WHERE table_name = 'tickets' AND table_schema = 'main'")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .filter(|c| c != "_hw_deleted_at")
        .collect();
    let batches = env.lake_batches("tickets").await;
    let parquet: BTreeSet<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(parquet, table);
    let meta = batches[0]
        .schema()
        .field_with_name("Subject__2")
        .unwrap()
        .metadata()
        .clone();
    assert_eq!(
        meta.get("highwater.field").map(String::as_str),
        Some("Subject")
    );
    let lake = env.rows(&format!(
        "SELECT \"Subject__2\", \"select\", \"{long}\", \"quote\"\"d\", \"synced_date__2\" FROM read_parquet('{}/lake/tickets/**/*.parquet', \
         union_by_name = true, hive_partitioning = true)",
        env.path().display()
    ));
    assert_eq!(
        lake,
        vec![
            ["upper", "kw1", "long", "dq", "not the partition"]
                .map(|s| json!(s))
                .to_vec()
        ]
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM analytics.tickets"),
        1,
        "the view still builds"
    );

    // A later run: the same fields reach the same columns; a new case variant gets the next suffix.
    env.sim.insert_raw(
        "ticket",
        ticket(
            2,
            T0 + 1,
            json!({"Subject": "again", "SUBJECT": "shout", "with space": "ws2"}),
        ),
    );
    env.advance(10);
    env.sync_ok().await;
    assert_eq!(
        env.rows("SELECT \"Subject__2\", \"SUBJECT__3\", \"with space\", subject FROM tickets WHERE id = 2")[0],
        vec![json!("again"), json!("shout"), json!("ws2"), json!("ticket 2")]
    );
}

// ---- bad environments ----

/// A mount made for one test, undone when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{cmd} {:?}: {}",
            args,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

fn bind_read_only(dir: &Path) -> Result<Mount, String> {
    let d = dir.as_os_str();
    run("mount", &["--bind".as_ref(), d, d])?;
    let m = Mount(dir.to_path_buf());
    run("mount", &["-o".as_ref(), "remount,bind,ro".as_ref(), d])?;
    Ok(m)
}

fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
    std::fs::create_dir_all(dir).unwrap();
    let opt = format!("size={size}");
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            opt.as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ],
    )?;
    Ok(Mount(dir.to_path_buf()))
}

/// Writes zeros into `file` until the file system says it is full.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
            break;
        }
    }
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}

fn skip(what: &str, why: &str) {
    println!("SKIPPED {what}: {why}");
    eprintln!("SKIPPED {what}: {why}");
}

/// What must hold after a failed run: the cursor, the committed files and rows are as before.
fn assert_unmoved(env: &TestEnv, cursor: Option<Cursor>, files: i64, rows: i64) {
    assert_eq!(env.cursor("tickets"), cursor, "cursor moved");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM highwater.files"),
        files
    );
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), rows);
}

fn more_tickets(env: &TestEnv, ids: std::ops::RangeInclusive<i64>) {
    env.advance(10);
    let at = env.sim.now() - 8;
    for id in ids {
        env.sim.insert_raw("ticket", ticket(id, at, json!({})));
    }
}

/// The lake folder becomes read-only (a read-only bind mount: root ignores modes, not mounts):
/// the run fails naming the lake and what to do; no object appears; the cursor, files and rows
/// stay; once writable again, a rerun lands everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_lake_fails_cleanly_and_a_rerun_succeeds() {
    let env = TestEnv::new(Opts::default()).await;
    for id in 1..=20 {
        env.sim.insert_raw("ticket", ticket(id, T, json!({})));
    }
    env.sync_ok().await;
    let (cursor, lake_dir) = (env.cursor("tickets"), env.path().join("lake"));
    let before = files_under(&lake_dir);
    more_tickets(&env, 21..=30);

    let ro = match bind_read_only(&lake_dir) {
        Ok(m) => m,
        Err(e) => {
            return skip(
                "unwritable lake",
                &format!("cannot make a read-only mount here: {e}"),
            );
        }
    };
    let r = try_sync(&env)
        .await
        .expect("the warehouse is fine, so the run starts");
    assert_eq!(r[0].outcome, "failed");
    let err = r[0].error.clone().unwrap();
    println!("unwritable lake: {err}");
    assert!(
        err.contains("lake write") && err.contains("read-only file system"),
        "{err}"
    );
    assert!(
        err.contains(&lake_dir.display().to_string()) && err.contains("remount it read-write"),
        "{err}"
    );
    assert_unmoved(&env, cursor, 1, 20);
    assert_eq!(
        files_under(&lake_dir),
        before,
        "nothing written to the lake"
    );

    drop(ro);
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 10);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 30);
    assert_eq!(
        env.lake_rows("tickets").await,
        30,
        "every committed file reads"
    );
}

/// The warehouse file becomes read-only (`chattr +i`, which binds root too): the run cannot
/// start, says so naming the file and what to check, writes nothing to the lake; the cursor is
/// as before; once writable, a rerun lands everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_warehouse_fails_cleanly_and_a_rerun_succeeds() {
    let env = TestEnv::new(Opts::default()).await;
    for id in 1..=20 {
        env.sim.insert_raw("ticket", ticket(id, T, json!({})));
    }
    env.sync_ok().await;
    let cursor = env.cursor("tickets");
    let lake_before = files_under(&env.path().join("lake"));
    more_tickets(&env, 21..=30);

    let file = env.warehouse_path();
    if let Err(e) = run("chattr", &["+i".as_ref(), file.as_os_str()]) {
        return skip(
            "read-only warehouse",
            &format!("chattr +i is not supported here: {e}"),
        );
    }
    struct Mutable(PathBuf);
    impl Drop for Mutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let guard = Mutable(file.clone());
    let err = try_sync(&env)
        .await
        .expect_err("a read-only warehouse cannot be loaded");
    println!("read-only warehouse: {err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("cannot write the warehouse file") && err.contains("lsattr"),
        "{err}"
    );
    assert_eq!(files_under(&env.path().join("lake")), lake_before);
    assert_unmoved(&env, cursor, 1, 20);

    drop(guard);
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 10);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 30);
}

/// The lake's disk is full (a small tmpfs, filled): the Parquet write fails with "no space left",
/// no object — and no staging file — is left at the final key, the cursor stays; after space is
/// freed, a rerun lands everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lake_disk_fails_cleanly_and_a_rerun_succeeds() {
    let env = TestEnv::new(Opts::default()).await;
    let lake_dir = env.path().join("lake");
    let _mount = match tmpfs(&lake_dir, "1m") {
        Ok(m) => m,
        Err(e) => return skip("full lake disk", &format!("cannot mount a tmpfs here: {e}")),
    };
    for id in 1..=20 {
        env.sim.insert_raw("ticket", ticket(id, T, json!({})));
    }
    env.sync_ok().await;
    let cursor = env.cursor("tickets");
    more_tickets(&env, 21..=500);
    let filler = lake_dir.join("filler");
    fill(&filler);
    let before = files_under(&lake_dir);

    let r = try_sync(&env).await.unwrap();
    assert_eq!(r[0].outcome, "failed");
    let err = r[0].error.clone().unwrap();
    println!("full lake disk: {err}");
    assert!(
        err.contains("no space left") && err.contains(&lake_dir.display().to_string()),
        "{err}"
    );
    assert!(err.contains("free disk space and rerun"), "{err}");
    assert_unmoved(&env, cursor, 1, 20);
    assert_eq!(
        files_under(&lake_dir),
        before,
        "no object, no staging file left behind"
    );

    std::fs::remove_file(&filler).unwrap();
    let r = env.sync_ok().await;
    assert_eq!(r[0].rows_written, 480);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 500);
    assert_eq!(env.lake_rows("tickets").await, 500);
}

/// The warehouse's disk is full (a small tmpfs, filled but for 64 KiB: enough to start the run,
/// not to commit its checkpoint): DuckDB cannot write the checkpoint's WAL, the transaction with
/// the rows and the cursor is rolled back, and the run says the disk is full and what to do.
/// After space is freed, DuckDB opens the file again and a rerun lands everything exactly once.
/// (The checkpoint's Parquet object was written before the failed commit: an orphan that nothing
/// references, as after a crash at that point.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_warehouse_disk_fails_cleanly_and_a_rerun_succeeds() {
    let mut env = TestEnv::new(Opts::default()).await;
    env.toml = env.toml.replace(
        "path = \"warehouse.duckdb\"",
        "path = \"wh/warehouse.duckdb\"",
    );
    let wh_dir = env.path().join("wh");
    let _mount = match tmpfs(&wh_dir, "16m") {
        Ok(m) => m,
        Err(e) => {
            return skip(
                "full warehouse disk",
                &format!("cannot mount a tmpfs here: {e}"),
            );
        }
    };
    let wh = wh_dir.join("warehouse.duckdb");
    let count = |sql: &str| -> i64 {
        highwater::warehouse::Warehouse::open_read_only(&wh)
            .unwrap()
            .query_rows(sql)
            .unwrap()[0][0]
            .as_i64()
            .unwrap()
    };
    for id in 1..=20 {
        env.sim.insert_raw("ticket", ticket(id, T, json!({})));
    }
    let r = try_sync(&env).await.unwrap();
    assert_eq!(r[0].outcome, "succeeded", "{:?}", r[0]);
    let cursor = highwater::warehouse::Warehouse::open_read_only(&wh)
        .unwrap()
        .status()
        .unwrap()[0]
        .cursor();
    more_tickets(&env, 21..=2000);
    let filler = wh_dir.join("filler");
    fill(&filler);
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len - 64 * 1024)
        .unwrap();

    let r = try_sync(&env)
        .await
        .expect("64 KiB are enough to start the run");
    assert_eq!(r[0].outcome, "failed", "{:?}", r[0]);
    assert_eq!(r[0].rows_written, 0);
    let err = r[0].error.clone().unwrap();
    println!("full warehouse disk: {err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    assert!(
        err.contains("warehouse commit") && err.contains("commit checkpoint 1"),
        "{err}"
    );
    assert!(
        err.contains("is full") && err.contains("nothing of this transaction was committed"),
        "{err}"
    );
    std::fs::remove_file(&filler).unwrap();
    let status = highwater::warehouse::Warehouse::open_read_only(&wh)
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(status[0].cursor(), cursor, "cursor moved");
    assert_eq!(count("SELECT count(*) FROM tickets"), 20);

    let r = try_sync(&env).await.unwrap();
    assert_eq!(r[0].outcome, "succeeded", "{:?}", r[0]);
    assert_eq!(count("SELECT count(*) FROM tickets"), 2000);
    assert_eq!(count("SELECT count(DISTINCT id) FROM tickets"), 2000);
}
