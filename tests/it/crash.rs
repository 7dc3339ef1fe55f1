//! Crash safety, proven: `highwater sync` runs as a child process against the simulator while a
//! seeded mutation load changes the source (creates, updates, bulk updates of more rows than a
//! page in one second, soft deletes, type drift), and is SIGKILLed at a random moment between 0
//! and a little more than a typical run's duration (measured unkilled first, then the median of
//! that and the unkilled reruns). Right after each kill the cursor must be the last committed row
//! (or where it was, if nothing was committed). Then a clean rerun — the source holding still — must leave: the warehouse equal to the source
//! inside the window (every id, its content hash, no duplicates), every committed Parquet file
//! present and readable with the parquet crate, every version of a row in the committed change
//! log at most once, no orphan in the lake, and the cursor at the window end.
//!
//! The simulator's clock is fixed and moved only by the load (a second now and then) and before
//! each rerun (past the lag), so the window is exact: every change made so far is inside the
//! rerun's window. A change that does not move `updated` (a soft delete) may or may not have been
//! read by the time the cursor passed the row; either version is accepted, nothing else.
//!
//! `HIGHWATER_CRASH_KILLS=N` sets the number of kills (default 20), `HIGHWATER_CRASH_SEED=S` the
//! seed of the load and of the kill moments (where a kill lands also depends on scheduling).
//!
//! Also here: the next sync sweeps the orphans of the runs it marks aborted, and `highwater gc`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use highwater::convert::content_hash;
use highwater::lake::Lake;
use highwater::model::Cursor;
use highwater::sim::Sim;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::util::{Opts, TestEnv, obj, ticket};

const T0: i64 = 1_800_000_000;
const PAGE: u32 = 10;
const CHECKPOINT_ROWS: usize = 20;
const LAG: i64 = 5;
/// Generated tickets before the first run.
const INITIAL: usize = 40;
/// Rows in one bulk update: more than a page, all stamped with one second.
const BULK: usize = 15;
/// Mutations made before each run (on top of those made while runs are going).
const BURST: usize = 15;
/// One mutation every this often while a run is going.
const STEP: Duration = Duration::from_millis(200);

fn opts() -> Opts {
    Opts {
        records: INITIAL,
        page_size: PAGE,
        checkpoint_rows: CHECKPOINT_ROWS,
        lag: LAG,
        ..Opts::default()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The source's history: what the warehouse may hold for each id.

#[derive(Clone, Debug)]
struct Version {
    updated: i64,
    /// This change moved `updated` (a cursor sees it); a soft delete does not.
    bumped: bool,
    hash: i64,
}

#[derive(Default)]
struct History {
    rows: BTreeMap<i64, Vec<Version>>,
}

impl History {
    fn record(&mut self, sim: &Sim, id: i64, bumped: bool) {
        let Some(Value::Object(m)) = sim.get("ticket", id) else {
            panic!("ticket {id} vanished from the simulator");
        };
        let updated = m
            .get("updated")
            .and_then(highwater::source::parse_int)
            .unwrap();
        self.rows.entry(id).or_default().push(Version {
            updated,
            bumped,
            hash: content_hash(&m),
        });
    }

    /// The content hashes the warehouse may hold for `id` after a complete run whose window ends
    /// at `h`: the last version a cursor could see (the last change that moved `updated` to a
    /// second ≤ h), or any later change that did not move `updated` (a soft delete the run may or
    /// may not have read). `None`: the row is not in the window yet.
    fn acceptable(&self, id: i64, h: i64) -> Option<Vec<i64>> {
        let versions = self.rows.get(&id)?;
        let last = versions.iter().rposition(|v| v.bumped && v.updated <= h)?;
        let mut out = vec![versions[last].hash];
        out.extend(
            versions[last + 1..]
                .iter()
                .take_while(|v| !v.bumped)
                .map(|v| v.hash),
        );
        Some(out)
    }
}

/// The scripted, seeded mutation load.
struct Load {
    sim: Sim,
    rng: ChaCha8Rng,
    ids: Vec<i64>,
    history: History,
    n: u64,
}

impl Load {
    fn new(sim: Sim, seed: u64) -> Load {
        let mut history = History::default();
        let mut ids = Vec::new();
        for r in sim.records("ticket") {
            let id = highwater::source::parse_int(&r["id"]).unwrap();
            history.record(&sim, id, true);
            ids.push(id);
        }
        Load {
            sim,
            rng: ChaCha8Rng::seed_from_u64(seed),
            ids,
            history,
            n: 0,
        }
    }

    fn pick(&mut self) -> i64 {
        self.ids[self.rng.random_range(0..self.ids.len())]
    }

    fn tick(&self, secs: i64) {
        let now = self.sim.now();
        self.sim.set_clock(highwater::sim::Clock::Fixed(now + secs));
    }

    /// One mutation (or a clock tick), chosen by the seeded script.
    fn step(&mut self) {
        self.n += 1;
        let n = self.n;
        match self.rng.random_range(0..100u32) {
            0..20 => {
                let id = self
                    .sim
                    .create("ticket", obj(json!({"subject": format!("new {n}")})));
                self.ids.push(id);
                self.history.record(&self.sim, id, true);
            }
            20..50 => {
                let id = self.pick();
                let fields = obj(json!({"subject": format!("edit {n}"), "num_messages": n % 17}));
                assert!(self.sim.update("ticket", id, fields, true));
                self.history.record(&self.sim, id, true);
            }
            50..52 => {
                let count = BULK.min(self.ids.len());
                let ids: Vec<i64> = (0..count)
                    .map(|_| self.pick())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                let mut ids = ids;
                ids.sort();
                self.sim
                    .bulk_update("ticket", &ids, obj(json!({"importance": n % 100})));
                for id in ids {
                    self.history.record(&self.sim, id, true);
                }
            }
            52..66 => {
                let id = self.pick();
                if self.sim.soft_delete("ticket", id) {
                    self.history.record(&self.sim, id, false);
                }
            }
            66..70 => {
                // Type drift: the same field as an integer, a float or text.
                let id = self.pick();
                let v = match n % 3 {
                    0 => json!(n),
                    1 => json!(n as f64 + 0.5),
                    _ => json!(format!("v{n}")),
                };
                assert!(
                    self.sim
                        .update("ticket", id, obj(json!({ "drift": v })), true)
                );
                self.history.record(&self.sim, id, true);
            }
            _ => self.tick(1),
        }
    }

    /// The work waiting for the next run: a bulk update, then a burst of mutations.
    fn burst(&mut self) {
        let mut ids: Vec<i64> = (0..BULK)
            .map(|_| self.pick())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        ids.sort();
        self.sim
            .bulk_update("ticket", &ids, obj(json!({"importance": -1})));
        for id in ids {
            self.history.record(&self.sim, id, true);
        }
        for _ in 0..BURST {
            self.step();
        }
    }
}

/// The load running on its own thread while a run is going.
struct Running {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Load>,
}

impl Running {
    fn start(mut load: Load) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                load.step();
                std::thread::sleep(STEP);
            }
            load
        });
        Running { stop, handle }
    }

    fn stop(self) -> Load {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the load thread")
    }
}

// ---------------------------------------------------------------------------------------------
// Looking at what landed.

/// One read-only look at the warehouse: one DuckDB open for many questions (each open costs a
/// while in a debug build).
struct Look {
    c: duckdb::Connection,
}

impl Look {
    /// `None` while the warehouse or highwater's tables do not exist (a run killed early).
    fn open(env: &TestEnv) -> Option<Look> {
        if !env.warehouse_path().exists() {
            return None;
        }
        let cfg = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        let c = duckdb::Connection::open_with_flags(env.warehouse_path(), cfg).unwrap();
        let look = Look { c };
        (look.tables("highwater", &["streams", "runs", "files"]) == 3).then_some(look)
    }

    fn tables(&self, schema: &str, names: &[&str]) -> i64 {
        let list = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        self.int(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name IN ({list})"
        ))
    }

    fn int(&self, sql: &str) -> i64 {
        self.c
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn cursor(&self) -> Option<Cursor> {
        let mut st = self
            .c
            .prepare(
                "SELECT cursor_updated, cursor_id FROM highwater.streams WHERE name = 'tickets'",
            )
            .unwrap();
        let row: Option<(Option<i64>, Option<i64>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .next()
            .map(|r| r.unwrap());
        match row {
            Some((Some(u), Some(i))) => Some(Cursor::new(u, i)),
            _ => None,
        }
    }

    /// The last sync run recorded: (run id, outcome, window end).
    fn last_run(&self) -> Option<(String, String, Option<i64>)> {
        let mut st = self
            .c
            .prepare(
                "SELECT run_id, outcome, window_end FROM highwater.runs WHERE kind = 'sync' \
                 ORDER BY started_at DESC, run_id DESC LIMIT 1",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .next()
            .map(|r| r.unwrap())
    }

    /// The greatest `(updated, id)` in the table.
    fn last_row(&self) -> Option<Cursor> {
        if self.tables("main", &["tickets"]) == 0 {
            return None;
        }
        let mut st = self
            .c
            .prepare("SELECT updated, id FROM tickets ORDER BY updated DESC, id DESC LIMIT 1")
            .unwrap();
        st.query_map([], |r| Ok(Cursor::new(r.get(0)?, r.get(1)?)))
            .unwrap()
            .next()
            .map(|r| r.unwrap())
    }

    /// `(id, _hw_hash)` of every row.
    fn rows(&self) -> Vec<(i64, i64)> {
        if self.tables("main", &["tickets"]) == 0 {
            return Vec::new();
        }
        let mut st = self
            .c
            .prepare("SELECT id, _hw_hash FROM tickets ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// `(key, rows)` of every committed file.
    fn committed(&self) -> Vec<(String, i64)> {
        let mut st = self
            .c
            .prepare("SELECT key, rows FROM highwater.files WHERE stream = 'tickets' ORDER BY key")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Files in the lake that no committed file names, other than finished manifests.
    fn uncommitted(&self, env: &TestEnv) -> Vec<String> {
        let committed: HashSet<String> = self.committed().into_iter().map(|(k, _)| k).collect();
        lake_files(&env.path().join("lake"))
            .into_iter()
            .filter(|k| {
                let manifest = k.contains("/_manifests/") && k.ends_with(".json");
                !committed.contains(k) && !manifest
            })
            .collect()
    }
}

/// Every file under the lake folder, as keys relative to it.
fn lake_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(
                    p.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn committed_files(env: &TestEnv) -> Vec<(String, i64)> {
    Look::open(env).map(|l| l.committed()).unwrap_or_default()
}

fn uncommitted(env: &TestEnv) -> Vec<String> {
    Look::open(env)
        .map(|l| l.uncommitted(env))
        .unwrap_or_default()
}

fn i64_col(b: &arrow::record_batch::RecordBatch, name: &str) -> Int64Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("column {name} is not BIGINT"))
        .clone()
}

/// The committed change log seen so far. Committed files never change, so each is read once and
/// afterwards only checked to be still there.
#[derive(Default)]
struct ChangeLog {
    read: HashSet<String>,
    /// `(id, updated)` of every row version in a committed file.
    versions: HashSet<(i64, i64)>,
    /// `(id, content hash)` of every row version in a committed file.
    contents: HashSet<(i64, i64)>,
}

/// What the warehouse says after a clean run, for the next kill to start from.
struct Converged {
    cursor: Option<Cursor>,
    run_id: Option<String>,
    /// A manifest's staging file is left for gc.
    manifest_staging: bool,
}

/// Everything a clean rerun must leave, with the window end `h` of that rerun.
async fn assert_converged(
    env: &TestEnv,
    history: &History,
    log: &mut ChangeLog,
    h: i64,
    what: &str,
) -> Converged {
    let look = Look::open(env).expect("a warehouse after a clean run");
    let cursor = look.cursor();
    assert_eq!(
        cursor,
        Some(Cursor::window_done(h)),
        "{what}: cursor at the window end"
    );

    let mut wh: HashMap<i64, i64> = HashMap::new();
    for (id, hash) in look.rows() {
        assert!(
            wh.insert(id, hash).is_none(),
            "{what}: id {id} twice in the warehouse"
        );
    }
    let mut problems = Vec::new();
    let mut expected = 0;
    for id in history.rows.keys() {
        match (history.acceptable(*id, h), wh.get(id)) {
            (None, None) => {}
            (None, Some(_)) => problems.push(format!(
                "id {id} is in the warehouse but not yet in the window"
            )),
            (Some(_), None) => problems.push(format!(
                "id {id} is missing (source versions {:?})",
                history.rows[id]
            )),
            (Some(ok), Some(hash)) => {
                expected += 1;
                if !ok.contains(hash) {
                    problems.push(format!(
                        "id {id} holds content {hash}, the source's is one of {ok:?}"
                    ));
                }
            }
        }
    }
    for id in wh.keys() {
        if !history.rows.contains_key(id) {
            problems.push(format!("id {id} was never in the source"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: warehouse ≠ source ({} of {expected} rows; window end {h}): {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );

    // Every committed file is there and reads back with the parquet crate; each version of a row
    // is in the committed change log once, and every warehouse row is a version the log holds.
    let lake = Lake::open("file://./lake", &[], env.path()).unwrap();
    for (key, n) in look.committed() {
        if log.read.contains(&key) {
            assert!(
                env.path().join("lake").join(&key).is_file(),
                "{what}: committed file {key} is gone"
            );
            continue;
        }
        let batches = lake
            .read_parquet(&key)
            .await
            .unwrap_or_else(|e| panic!("{what}: committed file {key} does not read back: {e}"));
        let got: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(
            got as i64, n,
            "{what}: {key} holds {got} rows, highwater.files says {n}"
        );
        for b in &batches {
            let (id, upd, hash) = (
                i64_col(b, "id"),
                i64_col(b, "updated"),
                i64_col(b, "_hw_hash"),
            );
            for i in 0..b.num_rows() {
                assert!(
                    log.versions.insert((id.value(i), upd.value(i))),
                    "{what}: ticket {} version updated={} is in the committed lake twice",
                    id.value(i),
                    upd.value(i)
                );
                log.contents.insert((id.value(i), hash.value(i)));
            }
        }
        log.read.insert(key);
    }
    for (id, hash) in &wh {
        assert!(
            log.contents.contains(&(*id, *hash)),
            "{what}: warehouse row {id} is in no committed file"
        );
    }
    // A kill while a finished run replaced its manifest leaves the manifest's staging file:
    // not data, and not the sweep's to find (the run is over); gc removes it.
    let (manifest_staging, left): (Vec<String>, Vec<String>) = look
        .uncommitted(env)
        .into_iter()
        .partition(|k| k.contains("/_manifests/"));
    assert!(
        left.is_empty(),
        "{what}: orphans left in the lake after the rerun: {left:?}"
    );
    Converged {
        cursor,
        run_id: look.last_run().map(|r| r.0),
        manifest_staging: !manifest_staging.is_empty(),
    }
}

fn output_text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A full run; returns its window end and duration.
fn clean_run(env: &TestEnv, what: &str) -> (i64, Duration) {
    let started = Instant::now();
    let out = env.bin().args(["sync", "--json"]).output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{what}: the clean run failed: {}",
        output_text(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: report is not JSON ({e}): {}", output_text(&out)));
    let h = report[0]["window_end"].as_i64().expect("window_end");
    (h, took)
}

/// How long a run of the shape the harness kills takes, unkilled, on a fresh copy of the setup:
/// from a caught-up warehouse, a bulk update and a burst of changes to load while the load goes on.
async fn typical_run(seed: u64) -> Duration {
    let env = TestEnv::new(opts()).await;
    let mut load = Load::new(env.sim.clone(), seed);
    load.tick(LAG + 1);
    clean_run(&env, "calibration: initial load");
    load.burst();
    load.tick(LAG + 1);
    let running = Running::start(load);
    let (_, took) = clean_run(&env, "calibration");
    running.stop();
    env.sim.shutdown();
    took
}

#[derive(Default, Debug)]
struct Tally {
    before_start: u32,
    mid_run_nothing_committed: u32,
    mid_run_some_committed: u32,
    after_finish: u32,
    exited_first: u32,
    /// Kills that left an uncommitted Parquet object for the rerun to sweep.
    parquet_orphans: u32,
    /// Kills that left a local staging file (`<key>#<n>`) of a cut-short write.
    staging_files: u32,
    /// Reruns that left a manifest's staging file (of a run that had finished), for gc.
    manifest_staging_for_gc: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_then_rerun_converges() {
    let kills = env_u64("HIGHWATER_CRASH_KILLS", 20);
    let seed = env_u64("HIGHWATER_CRASH_SEED", 20_260_305);
    let started = Instant::now();
    let typical = typical_run(seed).await;
    // Refined by every unkilled rerun: one measurement on a busy machine can be far off.
    let mut runs = vec![typical];
    let max_delay = typical.mul_f64(1.15);
    eprintln!(
        "crash harness: {kills} kills, seed {seed}, a typical run takes {typical:?}; kills within {max_delay:?}"
    );

    let env = TestEnv::new(opts()).await;
    let mut load = Load::new(env.sim.clone(), seed);
    let mut when = ChaCha8Rng::seed_from_u64(seed ^ 0x6b696c6c);
    let mut tally = Tally::default();
    let mut rerun_time = Duration::ZERO;
    let mut changes = ChangeLog::default();
    let mut last = Converged {
        cursor: None,
        run_id: None,
        manifest_staging: false,
    };

    for k in 1..=kills {
        let what = format!("kill {k}/{kills} (seed {seed})");
        load.burst();
        load.tick(LAG + 1);
        let (cursor_before, run_before) = (last.cursor, last.run_id.clone());

        let running = Running::start(load);
        let log = std::fs::File::create(env.path().join(format!("killed-{k}.log"))).unwrap();
        let mut child = env
            .bin()
            .arg("sync")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        runs.sort();
        let max_delay = runs[runs.len() / 2].mul_f64(1.15);
        let delay = Duration::from_micros(when.random_range(0..=max_delay.as_micros() as u64));
        tokio::time::sleep(delay).await;
        let _ = child.kill();
        let status = child.wait().unwrap();
        // The rerun is clean: the source holds still, and every change so far is in its window.
        load = running.stop();
        load.tick(LAG + 1);

        // Right after the kill: the cursor is the last committed row, or where it was.
        let look = Look::open(&env);
        let run = look
            .as_ref()
            .and_then(|l| l.last_run())
            .filter(|r| Some(&r.0) != run_before.as_ref());
        let after = look.as_ref().and_then(|l| l.cursor());
        match &run {
            None => {
                tally.before_start += 1;
                assert_eq!(
                    after, cursor_before,
                    "{what}: killed before its run was recorded; cursor moved"
                );
            }
            Some((_, outcome, h)) if outcome == "succeeded" => {
                tally.after_finish += 1;
                assert_eq!(
                    after,
                    Some(Cursor::window_done(h.unwrap())),
                    "{what}: finished run, cursor at its window end"
                );
            }
            Some((run_id, outcome, _)) => {
                assert_eq!(
                    outcome, "running",
                    "{what}: a killed run is still recorded as running"
                );
                let look = look.as_ref().unwrap();
                let files = look.int(&format!(
                    "SELECT count(*) FROM highwater.files WHERE run_id = '{run_id}'"
                ));
                if files == 0 {
                    tally.mid_run_nothing_committed += 1;
                    assert_eq!(
                        after, cursor_before,
                        "{what}: nothing committed, cursor moved"
                    );
                } else {
                    tally.mid_run_some_committed += 1;
                    assert_eq!(
                        after,
                        look.last_row(),
                        "{what}: cursor = last committed row"
                    );
                }
            }
        }
        if status.signal() != Some(libc::SIGKILL) {
            tally.exited_first += 1;
            assert!(
                status.success(),
                "{what}: the run failed on its own: {status:?}"
            );
        }
        if let Some(look) = &look {
            let left = look.uncommitted(&env);
            if left.iter().any(|k| k.ends_with(".parquet")) {
                tally.parquet_orphans += 1;
            }
            if left.iter().any(|k| k.contains('#')) {
                tally.staging_files += 1;
            }
        }
        drop(look);

        let (h, took) = clean_run(&env, &what);
        rerun_time += took;
        runs.push(took);
        last = assert_converged(&env, &load.history, &mut changes, h, &what).await;
        if last.manifest_staging {
            tally.manifest_staging_for_gc += 1;
        }
        if k % 10 == 0 && k < kills {
            eprintln!(
                "crash harness: {k}/{kills} kills survived, {:?}",
                started.elapsed()
            );
        }
    }
    // gc leaves the lake holding exactly the committed files and the manifests.
    let out = env
        .bin()
        .args(["gc", "--min-age-secs", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        uncommitted(&env),
        Vec::<String>::new(),
        "after gc: {}",
        output_text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(".parquet"),
        "no Parquet orphan was left for gc: {}",
        output_text(&out)
    );
    eprintln!(
        "crash harness: {kills} kills in {:?} (reruns {:?} in all, median run {:?}); {tally:?}; {} tickets, {} committed files, {} mutations",
        started.elapsed(),
        rerun_time,
        runs[runs.len() / 2],
        load.ids.len(),
        committed_files(&env).len(),
        load.n
    );
}

// ---------------------------------------------------------------------------------------------
// Orphan cleanup, deterministically.

/// A run killed after writing the Parquet object of its second checkpoint and before committing it.
async fn killed_with_an_orphan() -> (TestEnv, String, String) {
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
        .env("HIGHWATER_FAILPOINT", "after_lake_write:2:abort")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the process died: {}",
        output_text(&out)
    );
    let run_id = env.rows("SELECT run_id FROM highwater.runs")[0][0]
        .as_str()
        .unwrap()
        .to_string();
    let left = uncommitted(&env);
    assert_eq!(left.len(), 1, "one orphan: {left:?}");
    assert!(
        left[0].contains(&run_id) && left[0].ends_with("-00002.parquet"),
        "{left:?}"
    );
    (env, run_id, left[0].clone())
}

/// Plants what else a crash (or a stranger) can leave: the staging file of an interrupted local
/// write of the killed run, and an object of a run this warehouse never recorded.
fn plant(env: &TestEnv, orphan: &str) -> (PathBuf, PathBuf) {
    let lake = env.path().join("lake");
    let staging = lake.join(format!("{orphan}#1"));
    std::fs::copy(lake.join(orphan), &staging).unwrap();
    let foreign = lake
        .join(orphan)
        .with_file_name("20200101T000000Z-0badc0de-00001.parquet");
    std::fs::copy(lake.join(orphan), &foreign).unwrap();
    (staging, foreign)
}

fn committed_all_read(env: &TestEnv) -> usize {
    let files = committed_files(env);
    for (k, _) in &files {
        assert!(
            env.path().join("lake").join(k).is_file(),
            "committed file {k} is missing"
        );
    }
    files.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_sync_sweeps_the_orphans_of_the_run_it_aborts() {
    let (env, run_id, orphan) = killed_with_an_orphan().await;
    let (staging, foreign) = plant(&env, &orphan);
    let committed = committed_all_read(&env);
    assert_eq!(committed, 1);

    let out = env.bin().arg("sync").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !env.path().join("lake").join(&orphan).exists(),
        "the orphan is gone"
    );
    assert!(
        !staging.exists(),
        "the staging file of the killed run is gone"
    );
    assert!(
        foreign.exists(),
        "an object of a run this warehouse never recorded is kept"
    );
    let deletions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("orphan deleted"))
        .collect();
    assert_eq!(deletions.len(), 2, "each deletion logged once: {log}");
    assert!(
        deletions
            .iter()
            .any(|l| l.contains(&orphan) && l.contains("tickets")),
        "{log}"
    );
    assert_eq!(
        env.rows(&format!(
            "SELECT outcome FROM highwater.runs WHERE run_id = '{run_id}'"
        ))[0][0],
        json!("aborted")
    );
    env.assert_warehouse_equals_source("tickets", "ticket");
    assert!(committed_all_read(&env) > committed);
    let left = uncommitted(&env);
    assert_eq!(
        left,
        vec![
            foreign
                .strip_prefix(env.path().join("lake"))
                .unwrap()
                .to_string_lossy()
                .to_string()
        ]
    );

    // The next run finds no interrupted run: nothing to sweep.
    let out = env.bin().arg("sync").output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("orphan"));
    assert!(foreign.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_orphans_and_keeps_committed_files() {
    // Without a warehouse nothing is known to be committed: gc refuses.
    let empty = TestEnv::new(Opts::default()).await;
    std::fs::create_dir_all(empty.path().join("lake/tickets")).unwrap();
    let out = empty.bin().arg("gc").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no warehouse"),
        "{}",
        output_text(&out)
    );

    let (env, run_id, orphan) = killed_with_an_orphan().await;
    let (staging, foreign) = plant(&env, &orphan);
    let runs =
        || env.rows("SELECT run_id, outcome, finished_at FROM highwater.runs ORDER BY run_id");
    let runs_before = runs();
    let lake = env.path().join("lake");

    // Default minimum age (1 h): the fresh orphan is spared.
    let out = env.bin().arg("gc").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("kept (young)  {orphan}")), "{text}");
    assert!(text.contains("0 orphan(s) deleted"), "{text}");
    assert!(lake.join(&orphan).exists() && staging.exists());

    // Dry run: says what it would delete, deletes nothing.
    let out = env
        .bin()
        .args(["gc", "--dry-run", "--min-age-secs", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("would delete  {orphan} ")), "{text}");
    assert!(
        text.contains(&format!("would delete  {orphan}#1 ")),
        "{text}"
    );
    assert!(
        text.contains("2 orphan(s) to delete (dry run: nothing deleted)"),
        "{text}"
    );
    assert!(lake.join(&orphan).exists() && staging.exists() && foreign.exists());

    let out = env
        .bin()
        .args(["gc", "--min-age-secs", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("deleted       {orphan} ")), "{text}");
    assert!(text.contains("2 orphan(s) deleted"), "{text}");
    assert!(
        text.contains("kept (other)  ") && text.contains("0badc0de"),
        "the stranger's object is reported: {text}"
    );
    assert!(!lake.join(&orphan).exists() && !staging.exists());
    assert!(
        foreign.exists(),
        "never delete what this warehouse did not write"
    );
    assert_eq!(committed_all_read(&env), 1, "the committed file is kept");
    let rows: usize = env
        .lake_batches("tickets")
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        rows as i64,
        env.scalar_i64("SELECT sum(rows) FROM highwater.files"),
        "and reads back"
    );
    assert!(rows > 0);
    assert_eq!(
        runs(),
        runs_before,
        "gc records nothing: the killed run is still as it was"
    );
    assert_eq!(
        env.rows(&format!(
            "SELECT outcome FROM highwater.runs WHERE run_id = '{run_id}'"
        ))[0][0],
        json!("running")
    );

    // One stream only, and an unknown one.
    let out = env
        .bin()
        .args(["gc", "--stream", "tickets", "--min-age-secs", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("0 orphan(s) deleted, 0 bytes, in 1 stream(s)")
    );
    let out = env.bin().args(["gc", "--stream", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown stream"));

    // The loader carries on from the committed checkpoint.
    let out = env.bin().arg("sync").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    env.assert_warehouse_equals_source("tickets", "ticket");
}
