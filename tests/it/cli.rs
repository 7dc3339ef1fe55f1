//! The binary as users run it: the README's demo, init, status, query, exit codes.

use serde_json::json;

use crate::util::{Opts, TestEnv, ticket};

fn highwater(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_highwater"));
    c.current_dir(dir)
        .env_remove("HIGHWATER_FAILPOINT")
        .env_remove("HIGHWATER_CONFIG");
    c
}

/// The README's demo command exits 0 and leaves the expected counts, readable by DuckDB.
#[test]
fn demo_runs_and_leaves_a_warehouse() {
    let dir = tempfile::tempdir().unwrap();
    let out = highwater(dir.path()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = dir.path().join("highwater-demo");
    assert!(demo.join("warehouse.duckdb").exists());
    assert!(demo.join("lake/tickets").is_dir());
    let wh =
        highwater::warehouse::Warehouse::open_read_only(&demo.join("warehouse.duckdb")).unwrap();
    let rows = wh
        .query_rows("SELECT (SELECT count(*) FROM tickets), (SELECT count(DISTINCT id) FROM tickets), (SELECT count(*) FROM messages)")
        .unwrap();
    // 3,000 generated tickets + 40 created by the demo + 1 late write; 3,000 messages.
    assert_eq!(
        rows[0],
        vec![json!(3041), json!(3041), json!(3000)],
        "{stdout}"
    );
    let late = wh
        .query_rows(
            "SELECT count(*) FROM tickets WHERE subject = 'Late commit from a long transaction'",
        )
        .unwrap();
    assert_eq!(
        late[0][0],
        json!(1),
        "the late write inside the lag window landed: {stdout}"
    );
    // The lake holds every committed file, and they read back with DuckDB's Parquet reader.
    let lake_rows = wh
        .query_rows(&format!(
            "SELECT count(DISTINCT id) FROM read_parquet('{}/lake/tickets/**/*.parquet', union_by_name = true)",
            demo.display()
        ))
        .unwrap();
    assert_eq!(lake_rows[0][0], json!(3041), "{stdout}");
    assert!(stdout.contains("sync 2 (incremental)"), "{stdout}");
    // The demo's reconcile marks the 3 purged tickets and hides the 5 deleted through the API.
    let marks = wh
        .query_rows("SELECT count(*) FILTER (WHERE _hw_deleted_at IS NOT NULL), count(*) FILTER (WHERE status_id = 3) FROM tickets")
        .unwrap();
    assert_eq!(marks[0][0], json!(3), "{stdout}");
    assert!(marks[0][1].as_i64().unwrap() >= 5, "{stdout}");
    let hidden = wh
        .query_rows(
            "SELECT (SELECT count(*) FROM tickets) - (SELECT count(*) FROM analytics.tickets)",
        )
        .unwrap();
    assert_eq!(
        hidden[0][0],
        json!(3 + marks[0][1].as_i64().unwrap()),
        "{stdout}"
    );
    assert!(stdout.contains("reconcile"), "{stdout}");
    // The follow-up commands the demo prints work as printed: they read only the warehouse, so
    // the demo's token variable is not needed.
    let status = highwater(dir.path())
        .args(["--config", "highwater-demo/highwater.toml", "status"])
        .env_remove("HIGHWATER_DEMO_TOKEN")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("stream tickets"));
    // Running it again replaces the earlier demo instead of failing.
    let again = highwater(dir.path()).arg("demo").output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn init_writes_a_config_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = highwater(dir.path()).arg("init").output().unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("highwater.toml").exists());
    // Refuses to overwrite.
    let out = highwater(dir.path()).arg("init").output().unwrap();
    assert!(!out.status.success());
    // Without CERB_TOKEN the config is invalid: exit code 2 and the variable named.
    let out = highwater(dir.path())
        .arg("sync")
        .env_remove("CERB_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CERB_TOKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_query_after_a_sync() {
    let env = TestEnv::new(Opts::default()).await;
    for id in 1..=30 {
        env.sim
            .insert_raw("ticket", ticket(id, 1_800_000_000 - 100, json!({})));
    }
    let out = env.bin().args(["sync", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["rows_written"], json!(30));

    let out = env.bin().args(["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st[0]["stream"], json!("tickets"));
    assert_eq!(st[0]["rows"], json!(30));
    assert_eq!(st[0]["cursor"]["updated"], json!(1_800_000_000 - 5));
    assert_eq!(st[0]["last_run"]["outcome"], json!("succeeded"));

    let out = env
        .bin()
        .args([
            "query",
            "SELECT count(*) AS n FROM tickets",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n\n30");
    let out = env
        .bin()
        .args([
            "query",
            "SELECT id FROM tickets ORDER BY id LIMIT 2",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!([{"id": 1}, {"id": 2}]));
    // Read-only: a write is refused.
    let out = env
        .bin()
        .args(["query", "DELETE FROM tickets"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 30);
}
