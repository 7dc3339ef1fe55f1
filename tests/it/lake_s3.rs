//! Syncs into `s3://…` on a real S3-protocol server (s3s-fs on 127.0.0.1:0, signed requests).

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use highwater::sim::Clock;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::s3::S3Server;
use crate::util::{Opts, TestEnv};

const T0: i64 = 1_800_000_000;
const ROWS: i64 = 30_000;

fn s3_lake(server: &S3Server) -> String {
    format!(
        "url = \"s3://lake/warehouse-one\"\npart_size_mib = 5\n[lake.options]\n{}",
        server.options_toml()
    )
}

/// `(id, updated)` of every row in the committed Parquet objects, read straight from the
/// server's files with the parquet crate (not through highwater).
fn parquet_rows_on_server(server: &S3Server, env: &TestEnv) -> Vec<(i64, i64)> {
    let keys: Vec<String> = env
        .rows("SELECT key FROM highwater.files WHERE stream = 'tickets' ORDER BY key")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert!(!keys.is_empty());
    let mut rows = Vec::new();
    for k in keys {
        let path = server.root().join("lake/warehouse-one").join(&k);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ids = b
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let upd = b
                .column_by_name("updated")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for i in 0..b.num_rows() {
                rows.push((ids.value(i), upd.value(i)));
            }
            assert_eq!(ids.null_count(), 0);
        }
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_into_s3_lands_readable_parquet_equal_to_the_warehouse() {
    let server = S3Server::start(&["lake"]);
    let env = TestEnv::new(Opts {
        records: 1_200,
        clock: Clock::Fixed(T0),
        page_size: 500,
        checkpoint_rows: 500,
        lake: s3_lake(&server),
        ..Opts::default()
    })
    .await;
    env.advance(60);
    // A second run over changed rows adds change-log files without touching the first ones.
    env.sync_ok().await;
    let first = server.objects("lake");
    let ids: Vec<i64> = env
        .sim
        .records("ticket")
        .iter()
        .take(20)
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    env.advance(30);
    env.sim.bulk_update(
        "ticket",
        &ids,
        crate::util::json_obj(serde_json::json!({"subject": "bulk"})),
    );
    env.advance(30);
    env.sync_ok().await;

    let wh: Vec<(i64, i64)> = env
        .rows("SELECT id, updated FROM tickets ORDER BY id")
        .into_iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(wh.len(), env.source_ids("ticket").len());
    env.assert_warehouse_equals_source("tickets", "ticket");

    // The change log: every version once. Its latest version per id is the warehouse row.
    let lake = parquet_rows_on_server(&server, &env);
    assert_eq!(lake.len(), wh.len() + ids.len());
    let mut latest = std::collections::BTreeMap::new();
    for (id, upd) in &lake {
        let e = latest.entry(*id).or_insert(*upd);
        *e = (*e).max(*upd);
    }
    assert_eq!(latest.into_iter().collect::<Vec<_>>(), wh);

    // Objects live under the prefix, with the documented keys; the first run's are untouched;
    // manifests sit beside them; highwater reads them back through object_store too.
    let all = server.objects("lake");
    for k in &first {
        assert!(all.contains(k), "{k} vanished");
    }
    let data: Vec<&String> = all.iter().filter(|k| k.ends_with(".parquet")).collect();
    assert_eq!(
        data.len() as i64,
        env.scalar_i64("SELECT count(*) FROM highwater.files")
    );
    assert!(
        data.iter()
            .all(|k| k.starts_with("warehouse-one/tickets/synced_date=")),
        "{data:?}"
    );
    assert!(
        all.iter()
            .any(|k| k.starts_with("warehouse-one/tickets/_manifests/")),
        "{all:?}"
    );
    assert_eq!(env.lake_rows("tickets").await, lake.len());
    assert!(server.pending_parts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_the_server_rejects_fails_the_run_cleanly_and_the_rerun_lands_it() {
    let server = S3Server::start(&["lake"]);
    // One checkpoint large enough for a multipart upload of at least three 5 MiB parts: rows
    // carry 900 hex characters that do not compress well.
    let env = TestEnv::new(Opts {
        clock: Clock::Fixed(T0),
        checkpoint_rows: 100_000,
        lake: s3_lake(&server),
        ..Opts::default()
    })
    .await;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for id in 1..=ROWS {
        let noise: String = (0..57)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{state:016x}")
            })
            .collect();
        env.sim.insert_raw(
            "ticket",
            crate::util::ticket(
                id,
                T0 - 100_000 + id,
                serde_json::json!({ "noise": &noise[..900] }),
            ),
        );
    }
    server.fail_part(2);
    let r = env.sync().await;
    assert_ne!(r[0].outcome, "succeeded", "{r:?}");
    let err = r[0].error.clone().unwrap_or_default();
    assert!(err.contains("tickets"), "the error names the stream: {err}");
    assert!(server.parts_seen() >= 2, "the run reached the second part");
    // Nothing at any final key, no parts left pending, no file recorded, no cursor movement.
    assert!(
        server
            .objects("lake")
            .iter()
            .all(|k| !k.ends_with(".parquet")),
        "{:?}",
        server.objects("lake")
    );
    assert!(
        server.pending_parts().is_empty(),
        "{:?}",
        server.pending_parts()
    );
    assert_eq!(env.scalar_i64("SELECT count(*) FROM highwater.files"), 0);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM tickets"), 0);
    assert_eq!(env.cursor("tickets"), None);

    server.fail_part(0);
    env.sync_ok().await;
    env.assert_warehouse_equals_source("tickets", "ticket");
    let rows = parquet_rows_on_server(&server, &env);
    assert_eq!(rows.len(), ROWS as usize);
    let parts = server.parts_seen();
    assert!(parts >= 3, "the rerun's file went up in {parts} parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_logs_carry_no_store_credentials() {
    let server = S3Server::start(&["lake"]);
    let env = TestEnv::new(Opts {
        records: 50,
        lake: s3_lake(&server),
        ..Opts::default()
    })
    .await;
    env.advance(60);
    let out = env
        .bin()
        .arg("sync")
        .env("HIGHWATER_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(crate::s3::SECRET_KEY),
        "the secret key was logged"
    );
    env.assert_warehouse_equals_source("tickets", "ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_what_works_and_what_to_fix() {
    let server = S3Server::start(&["lake"]);
    let env = TestEnv::new(Opts {
        lake: s3_lake(&server),
        ..Opts::default()
    })
    .await;
    let out = env.bin().arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in [
        "ok      config",
        "ok      source",
        "ok      lake s3://lake/warehouse-one",
        "ok      warehouse",
    ] {
        assert!(stdout.contains(what), "{what} missing:\n{stdout}");
    }
    // The probe object is gone again and nothing else was written.
    assert!(
        server.objects("lake").is_empty(),
        "{:?}",
        server.objects("lake")
    );
    assert!(
        !env.warehouse_path().exists(),
        "check does not create the warehouse"
    );

    // A wrong secret and a refused token: each named, with a fix, no secret shown.
    let bad = env
        .toml
        .replace(crate::s3::SECRET_KEY, "not-the-secret-0123456789")
        .replace("token = \"${T}\"", "token = \"${BAD_TOKEN}\"");
    std::fs::write(env.path().join("bad.toml"), &bad).unwrap();
    let out = env
        .bin()
        .args(["--config", "bad.toml", "check"])
        .env("BAD_TOKEN", "wrong-token")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED  lake"), "{stdout}");
    assert!(stdout.contains("FAILED  source"), "{stdout}");
    assert!(
        stdout.contains("fix: the credentials were refused"),
        "{stdout}"
    );
    assert!(stdout.contains("fix: check the credentials"), "{stdout}");
    assert!(!stdout.contains("not-the-secret"), "{stdout}");
    assert!(stdout.contains("ok      warehouse"), "{stdout}");
}
