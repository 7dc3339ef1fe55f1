//! Reconcile: deletions and silent changes found by a guarded full scan.

use highwater::reconcile::{ReconcileOptions, ReconcileReport};
use highwater::sim::Fault;
use serde_json::json;

use crate::util::{Opts, TestEnv, obj, ticket};

const T0: i64 = 1_800_000_000;

async fn reconcile(env: &TestEnv, opts: ReconcileOptions) -> ReconcileReport {
    let p = env.pipeline();
    highwater::reconcile::run(&p, None, &opts)
        .await
        .unwrap()
        .remove(0)
}

async fn loaded(n: i64) -> TestEnv {
    let env = TestEnv::new(Opts::default()).await;
    for id in 1..=n {
        // Every row is older than the sync's window end (T0 - lag), so all of them load.
        env.sim.insert_raw(
            "ticket",
            ticket(id, T0 - 100 - n + id, json!({"num_messages": 1})),
        );
    }
    env.sync_ok().await;
    env
}

fn live_ids(env: &TestEnv) -> Vec<i64> {
    env.rows("SELECT id FROM tickets WHERE _hw_deleted_at IS NULL ORDER BY id")
        .into_iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

async fn lake_ops(env: &TestEnv, op: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for b in env.lake_batches("tickets").await {
        let id = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .clone();
        let ops = b
            .column_by_name("_hw_op")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            if ops.value(i) == op {
                ids.push(id.value(i));
            }
        }
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_rows_are_marked_deleted() {
    let env = loaded(20).await;
    let synced = env.cursor("tickets");
    assert!(synced.is_some());
    for id in [3, 7, 15] {
        assert!(env.sim.purge("ticket", id));
    }
    let r = reconcile(
        &env,
        ReconcileOptions {
            max_delete_fraction: 0.2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(
        (r.scanned, r.deleted, r.repaired, r.undeleted),
        (17, 3, 0, 0)
    );
    assert_eq!(r.sample_deleted, vec![3, 7, 15]);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        3
    );
    assert_eq!(lake_ops(&env, "delete").await, vec![3, 7, 15]);
    assert_eq!(env.scalar_i64("SELECT count(*) FROM analytics.tickets"), 17);
    let run = env.rows(
        "SELECT kind, outcome, scanned, deleted FROM highwater.runs WHERE kind = 'reconcile'",
    );
    assert_eq!(
        run,
        vec![vec![
            json!("reconcile"),
            json!("succeeded"),
            json!(17),
            json!(3)
        ]]
    );
    // Its file is listed in a manifest of its own, like a sync's.
    let run_id = env.rows("SELECT run_id FROM highwater.runs WHERE kind = 'reconcile'")[0][0]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = env
        .path()
        .join(format!("lake/tickets/_manifests/{run_id}.json"));
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let file = env.rows(&format!(
        "SELECT key FROM highwater.files WHERE run_id = '{run_id}'"
    ))[0][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&file), "{text}");
    // Reconcile leaves the sync cursor alone; a sync afterwards keeps it and changes nothing.
    let cursor = env.cursor("tickets");
    assert_eq!(cursor, synced, "reconcile moved the cursor");
    env.sync_ok().await;
    assert_eq!(env.cursor("tickets"), cursor);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_is_repaired_and_hidden_from_analysts() {
    let env = loaded(10).await;
    assert!(env.sim.soft_delete("ticket", 4));
    let r = reconcile(&env, ReconcileOptions::default()).await;
    assert_eq!((r.deleted, r.repaired), (0, 1), "{r:?}");
    let row = env
        .rows("SELECT status, status_id, _hw_deleted_at IS NULL, _hw_op FROM tickets WHERE id = 4");
    assert_eq!(
        row,
        vec![vec![
            json!("deleted"),
            json!(3),
            json!(true),
            json!("repair")
        ]]
    );
    assert_eq!(lake_ops(&env, "repair").await, vec![4]);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM analytics.tickets WHERE id = 4"),
        0
    );
    assert_eq!(env.scalar_i64("SELECT count(*) FROM analytics.tickets"), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_status_change_and_merge_are_repaired() {
    let env = loaded(10).await;
    assert!(env.sim.update(
        "ticket",
        2,
        obj(json!({"status": "closed", "status_id": 2})),
        false
    ));
    assert!(env.sim.merge("ticket", 5, 6));
    let r = reconcile(
        &env,
        ReconcileOptions {
            max_delete_fraction: 0.5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((r.deleted, r.repaired), (1, 2), "{r:?}");
    assert_eq!(r.sample_repaired, vec![2, 6]);
    assert_eq!(r.sample_deleted, vec![5]);
    let src6 = env.sim.get("ticket", 6).unwrap();
    let row = env.rows("SELECT status, num_messages FROM tickets WHERE id IN (2, 6) ORDER BY id");
    assert_eq!(row[0][0], json!("closed"));
    assert_eq!(row[1][1], src6["num_messages"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_row_that_reappears_is_undeleted() {
    let env = loaded(10).await;
    let original = env.sim.get("ticket", 8).unwrap();
    env.sim.purge("ticket", 8);
    let r = reconcile(
        &env,
        ReconcileOptions {
            max_delete_fraction: 0.5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.deleted, 1);
    env.sim.insert_raw("ticket", original);
    let r = reconcile(&env, ReconcileOptions::default()).await;
    assert_eq!((r.deleted, r.undeleted, r.repaired), (0, 1, 0), "{r:?}");
    assert_eq!(live_ids(&env), (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_does_not_finish_marks_nothing() {
    let env = loaded(5000).await;
    for id in 1..=100 {
        env.sim.purge("ticket", id);
    }
    // Page 4 of 10 answers 503 until the retries (2 in tests) are exhausted.
    let first = env.sim.request_count() + 4;
    let sim = env.sim.clone();
    env.sim.on_search(first, move || {
        for _ in 0..3 {
            sim.push_fault(Fault::ServerError(503));
        }
    });
    let r = reconcile(&env, ReconcileOptions::default()).await;
    assert_eq!(r.outcome, "failed");
    let err = r.error.unwrap();
    assert!(
        err.contains("page 4") && err.contains("nothing was marked"),
        "{err}"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        0
    );
    // The same through the command: a non-zero exit and the reason.
    let first = env.sim.request_count() + 4;
    let sim = env.sim.clone();
    env.sim.on_search(first, move || {
        for _ in 0..3 {
            sim.push_fault(Fault::ServerError(503));
        }
    });
    let out = env.bin().arg("reconcile").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was marked"), "{stderr}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        0
    );

    let out = env.bin().arg("reconcile").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        100
    );

    // A broken filter (Cerb answers success with total 0) put into the config: the stream's
    // filter changed, which is refused before anything is scanned. Non-zero exit, nothing marked.
    let broken = env.toml.replace(
        "record_type = \"ticket\"\n",
        "record_type = \"ticket\"\nfilter = \"nosuchfield:1\"\n",
    );
    assert_ne!(broken, env.toml);
    std::fs::write(env.path().join("broken.toml"), broken).unwrap();
    let out = env
        .bin()
        .args(["--config", "broken.toml", "reconcile"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was loaded with filter"), "{stderr}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        100
    );

    // The source answering success with no rows at all (a permissions change, a broken
    // proxy): refused, with the reason, through the command too.
    for id in env.source_ids("ticket") {
        env.sim.purge("ticket", id);
    }
    let r = reconcile(&env, ReconcileOptions::default()).await;
    assert_eq!(r.outcome, "refused");
    assert!(r.error.unwrap().contains("no rows at all"));
    let out = env.bin().arg("reconcile").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no rows at all"), "{stderr}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE _hw_deleted_at IS NOT NULL"),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletion_needs_force_and_dry_run_changes_nothing() {
    let env = loaded(50).await;
    for id in 1..=20 {
        env.sim.purge("ticket", id);
    }
    env.sim
        .update("ticket", 30, obj(json!({"importance": 99})), false);
    let r = reconcile(&env, ReconcileOptions::default()).await;
    assert_eq!(r.outcome, "refused");
    assert!(r.error.unwrap().contains("40.0%"));
    assert_eq!(live_ids(&env).len(), 50);

    let out = env
        .bin()
        .args(["reconcile", "--dry-run", "--force", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry[0]["outcome"], json!("dry_run"));
    assert_eq!(live_ids(&env).len(), 50, "dry run changed nothing");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM tickets WHERE id = 30 AND _hw_op = 'repair'"),
        0,
        "no repair applied"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM highwater.files"),
        1,
        "no lake file written"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM highwater.runs WHERE kind = 'reconcile'"),
        1
    );

    let out = env
        .bin()
        .args(["reconcile", "--force", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "scanned",
        "deleted",
        "undeleted",
        "repaired",
        "sample_deleted",
        "sample_repaired",
    ] {
        assert_eq!(dry[0][k], real[0][k], "{k}");
    }
    assert_eq!(real[0]["deleted"], json!(20));
    assert_eq!(live_ids(&env), (21..=50).collect::<Vec<_>>());
    let refused = env.bin().arg("reconcile").output().unwrap();
    assert!(
        refused.status.success(),
        "nothing left to delete: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[derive(Clone, Debug)]
enum Step {
    Create,
    Update { pick: usize, bump: bool },
    BulkUpdate { from: usize, n: usize },
    SoftDelete { pick: usize },
    Purge { pick: usize },
    Merge { a: usize, b: usize },
    LateWrite { back: i64 },
    Sync,
    Tick,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        3 => Just(Step::Create),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, bump)| Step::Update { pick, bump }),
        1 => (any::<usize>(), 1usize..40).prop_map(|(from, n)| Step::BulkUpdate { from, n }),
        1 => any::<usize>().prop_map(|pick| Step::SoftDelete { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Purge { pick }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Step::Merge { a, b }),
        1 => (1i64..30).prop_map(|back| Step::LateWrite { back }),
        2 => Just(Step::Sync),
        2 => Just(Step::Tick),
    ]
}

/// For any history of creates, edits (with and without `updated` moving), bulk updates, soft
/// deletes, purges, merges and late writes, interleaved with syncs: after reconcile + sync the
/// warehouse's live rows equal the source, id for id and content for content.
#[test]
fn reconcile_then_sync_converges_to_the_source() {
    use proptest::prelude::*;
    let cfg = ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(steps in proptest::collection::vec(step(), 5..30))| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let env = TestEnv::new(Opts { records: 0, ..Opts::default() }).await;
            for id in 1..=60 {
                env.sim.insert_raw("ticket", ticket(id * 2, T0 - 500 + id, json!({"num_messages": 1})));
            }
            for s in &steps {
                let ids = env.source_ids("ticket");
                let pick = |i: usize| ids.get(i % ids.len().max(1)).copied();
                match s {
                    Step::Create => { env.sim.create("ticket", obj(json!({"subject": "new"}))); }
                    Step::Update { pick: i, bump } => if let Some(id) = pick(*i) {
                        env.sim.update("ticket", id, obj(json!({"importance": (*i % 100) as i64})), *bump);
                    },
                    Step::BulkUpdate { from, n } => {
                        let sel: Vec<i64> = ids.iter().cycle().skip(*from % ids.len().max(1)).take((*n).min(ids.len())).copied().collect();
                        env.sim.bulk_update("ticket", &sel, obj(json!({"spam_training": "S"})));
                    }
                    Step::SoftDelete { pick: i } => if let Some(id) = pick(*i) { env.sim.soft_delete("ticket", id); },
                    Step::Purge { pick: i } => if let Some(id) = pick(*i) { env.sim.purge("ticket", id); },
                    Step::Merge { a, b } => if let (Some(x), Some(y)) = (pick(*a), pick(*b)) && x != y {
                        env.sim.merge("ticket", x, y);
                    },
                    Step::LateWrite { back } => { env.sim.late_write("ticket", env.sim.now() - back, obj(json!({"subject": "late"}))); }
                    Step::Sync => { env.sync_ok().await; }
                    Step::Tick => env.advance(3),
                }
            }
            env.advance(10);
            let r = reconcile(&env, ReconcileOptions { force: true, ..Default::default() }).await;
            prop_assert!(r.error.is_none(), "{:?}", r);
            env.sync_ok().await;
            prop_assert_eq!(live_ids(&env), env.source_ids("ticket"));
            let wh: std::collections::BTreeMap<i64, i64> = env
                .rows("SELECT id, _hw_hash FROM tickets WHERE _hw_deleted_at IS NULL")
                .into_iter()
                .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
                .collect();
            for rec in env.sim.records("ticket") {
                let id = highwater::source::parse_int(&rec["id"]).unwrap();
                let h = highwater::convert::content_hash(rec.as_object().unwrap());
                prop_assert_eq!(wh.get(&id).copied(), Some(h), "content of id {}", id);
            }
            Ok(())
        })?;
    });
}

/// A reconcile before the first sync loads rows in id order; the sync after it must not take
/// their keys for a cursor, or changes below them would be skipped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_before_the_first_sync_leaves_the_sync_a_full_window() {
    let env = TestEnv::new(Opts::default()).await;
    for id in 1..=20 {
        env.sim
            .insert_raw("ticket", ticket(id, T0 - 200 + id, json!({})));
    }
    // A row dated in the future: its key would be the greatest in the table.
    env.sim
        .insert_raw("ticket", ticket(21, T0 + 86_400, json!({})));
    let r = reconcile(&env, ReconcileOptions::default()).await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(env.cursor("tickets"), None, "reconcile saves no cursor");
    env.sync_ok().await;
    env.advance(30);
    env.sim
        .bulk_update("ticket", &[1, 2, 3], obj(json!({"subject": "changed"})));
    env.advance(30);
    env.sync_ok().await;
    let changed = env.scalar_i64("SELECT count(*) FROM tickets WHERE subject = 'changed'");
    assert_eq!(changed, 3, "the sync after a reconcile saw the changes");
}
