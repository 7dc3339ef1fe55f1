//! `TestEnv`: a simulator on 127.0.0.1:0, a temporary lake and warehouse, and helpers that assert
//! on what landed — in DuckDB and in the Parquet files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use highwater::config::Config;
use highwater::model::Cursor;
use highwater::sim::{Clock, Sim, SimConfig};
use highwater::sync::{Pipeline, StreamReport, SyncOptions};
use highwater::warehouse::Warehouse;
use serde_json::{Map, Value, json};

pub const TOKEN: &str = "test-token";

pub struct TestEnv {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    pub toml: String,
}

pub struct Opts {
    pub records: usize,
    pub clock: Clock,
    pub page_size: u32,
    pub checkpoint_rows: usize,
    pub lag: i64,
    pub streams: Vec<(&'static str, &'static str)>,
    /// The `[lake]` table's body (default: a local folder beside the warehouse).
    pub lake: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            records: 0,
            clock: Clock::Fixed(1_800_000_000),
            page_size: 500,
            checkpoint_rows: 50_000,
            lag: 5,
            streams: vec![("tickets", "ticket")],
            lake: "url = \"file://./lake\"\n".to_string(),
        }
    }
}

pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

impl TestEnv {
    pub async fn new(o: Opts) -> TestEnv {
        let sim = Sim::start(SimConfig {
            records: o.records,
            seed: 42,
            tokens: vec![TOKEN.to_string()],
            clock: o.clock,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let mut toml = format!(
            "[source]\nurl = \"{}\"\ntoken = \"${{T}}\"\nmax_retries = 2\ntimeout_secs = 10\n\
             [warehouse]\npath = \"warehouse.duckdb\"\nlock_wait_secs = 2\n\
             [sync]\ncheckpoint_rows = {}\n[lake]\n{}",
            sim.base_url(),
            o.checkpoint_rows,
            o.lake
        );
        for (name, rt) in &o.streams {
            toml.push_str(&format!(
                "[[streams]]\nname = \"{name}\"\nrecord_type = \"{rt}\"\nlag_secs = {}\npage_size = {}\n",
                o.lag, o.page_size
            ));
        }
        std::fs::write(dir.path().join("highwater.toml"), &toml).unwrap();
        TestEnv { sim, dir, toml }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> Config {
        let env: BTreeMap<String, String> = [("T".to_string(), TOKEN.to_string())].into();
        Config::parse(
            &self.toml,
            &self.path().join("highwater.toml"),
            self.path(),
            &env,
        )
        .unwrap()
    }

    pub fn pipeline(&self) -> Pipeline {
        Pipeline::build(self.config()).unwrap()
    }

    pub async fn sync(&self) -> Vec<StreamReport> {
        self.sync_with(SyncOptions::default()).await
    }

    pub async fn sync_with(&self, opts: SyncOptions) -> Vec<StreamReport> {
        highwater::sync::run(&self.pipeline(), None, &opts)
            .await
            .unwrap()
    }

    /// Sync and insist that every stream succeeded.
    pub async fn sync_ok(&self) -> Vec<StreamReport> {
        let r = self.sync().await;
        for s in &r {
            assert_eq!(s.outcome, "succeeded", "{s:?}");
        }
        r
    }

    pub fn warehouse_path(&self) -> PathBuf {
        self.path().join("warehouse.duckdb")
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        Warehouse::open_read_only(&self.warehouse_path())
            .unwrap()
            .query_rows(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn scalar_i64(&self, sql: &str) -> i64 {
        self.rows(sql)[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql}: not an integer"))
    }

    pub fn cursor(&self, stream: &str) -> Option<Cursor> {
        let rows = self.rows(&format!(
            "SELECT cursor_updated, cursor_id FROM highwater.streams WHERE name = '{stream}'"
        ));
        rows.first()
            .and_then(|r| Some(Cursor::new(r[0].as_i64()?, r[1].as_i64()?)))
    }

    /// Every row of every committed Parquet file of a stream, read back with the parquet crate.
    pub async fn lake_batches(&self, stream: &str) -> Vec<RecordBatch> {
        let lake = self.pipeline().lake;
        let keys: Vec<String> = self
            .rows(&format!(
                "SELECT key FROM highwater.files WHERE stream = '{stream}' ORDER BY key"
            ))
            .into_iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect();
        let mut out = Vec::new();
        for k in keys {
            out.extend(lake.read_parquet(&k).await.unwrap());
        }
        out
    }

    pub async fn lake_rows(&self, stream: &str) -> usize {
        self.lake_batches(stream)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum()
    }

    /// Ids in the lake's change log for a stream, in file order.
    pub async fn lake_ids(&self, stream: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        for b in self.lake_batches(stream).await {
            let col = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .clone();
            ids.extend(col.iter().map(|v| v.unwrap()));
        }
        ids
    }

    pub fn source_ids(&self, rtype: &str) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .sim
            .records(rtype)
            .iter()
            .map(|r| highwater::source::parse_int(&r["id"]).unwrap())
            .collect();
        ids.sort();
        ids
    }

    pub fn warehouse_ids(&self, table: &str) -> Vec<i64> {
        self.rows(&format!("SELECT id FROM \"{table}\" ORDER BY id"))
            .into_iter()
            .map(|r| r[0].as_i64().unwrap())
            .collect()
    }

    /// The warehouse equals the source: same ids, no duplicates, same `updated` per id.
    pub fn assert_warehouse_equals_source(&self, table: &str, rtype: &str) {
        let dups = self.scalar_i64(&format!(
            "SELECT count(*) - count(DISTINCT id) FROM \"{table}\""
        ));
        assert_eq!(dups, 0, "duplicate ids in {table}");
        assert_eq!(
            self.warehouse_ids(table),
            self.source_ids(rtype),
            "id sets differ"
        );
        let wh: BTreeMap<i64, i64> = self
            .rows(&format!("SELECT id, updated FROM \"{table}\""))
            .into_iter()
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
            .collect();
        for r in self.sim.records(rtype) {
            let id = highwater::source::parse_int(&r["id"]).unwrap();
            assert_eq!(
                wh.get(&id).copied(),
                highwater::source::parse_int(&r["updated"]),
                "updated differs for id {id}"
            );
        }
    }

    /// Advance the simulator's fixed clock.
    pub fn advance(&self, secs: i64) {
        let now = self.sim.now();
        self.sim.set_clock(Clock::Fixed(now + secs));
    }

    pub fn bin(&self) -> std::process::Command {
        // HIGHWATER_TEST_BIN: a copy of the binary, for a target directory other builds share.
        let exe = std::env::var_os("HIGHWATER_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_highwater").into());
        let mut c = std::process::Command::new(exe);
        c.current_dir(self.path())
            .env("T", TOKEN)
            .env("HIGHWATER_LOG", "info")
            .env_remove("HIGHWATER_FAILPOINT");
        c
    }
}

pub fn json_obj(pairs: Value) -> Map<String, Value> {
    obj(pairs)
}

pub fn ticket(id: i64, updated: i64, extra: Value) -> Value {
    let mut m = obj(json!({
        "_context": "cerberusweb.contexts.ticket",
        "_type": "ticket",
        "id": id,
        "updated": updated,
        "subject": format!("ticket {id}"),
        "status": "open",
        "status_id": 0,
        "created": updated - 100,
    }));
    for (k, v) in obj(extra) {
        m.insert(k, v);
    }
    Value::Object(m)
}
