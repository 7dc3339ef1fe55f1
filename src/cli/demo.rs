//! `highwater demo`: the whole job on the embedded default, with nothing to configure.
//!
//! Starts the Cerb simulator on loopback, bulk-updates more tickets in one second than fit in a
//! page (the case naive loaders get wrong), syncs, changes the source, syncs again, and shows what
//! landed. Leaves `./highwater-demo/` with the config, `lake/` and `warehouse.duckdb`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::CmdResult;
use crate::config::Config;
use crate::sim::{Clock, Sim, SimConfig};
use crate::sync::{Pipeline, StreamReport, SyncOptions};
use crate::warehouse::{OutputFormat, Warehouse};

const TOKEN_VAR: &str = "HIGHWATER_DEMO_TOKEN";
const TOKEN: &str = "demo-token";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where to leave the demo's config, lake and warehouse (replaced if it holds an earlier demo).
    #[arg(long, default_value = "highwater-demo")]
    pub dir: PathBuf,
    /// Records per type in the simulated Cerb.
    #[arg(long, default_value_t = 3000)]
    pub records: usize,
}

fn demo_config(sim_url: &str) -> String {
    format!(
        r#"# Written by `highwater demo`. The simulator it points at is gone once the demo ends;
# `highwater --config highwater-demo/highwater.toml status` and `query` still work (they read
# only the warehouse, so the token variable need not be set).
[source]
kind = "cerb"
url = "{sim_url}"
token = "${{{TOKEN_VAR}}}"

[lake]
url = "file://./lake"

[warehouse]
path = "warehouse.duckdb"

[[streams]]
name = "tickets"
record_type = "ticket"
cursor = "updated_id"
lag_secs = 5

[[streams]]
name = "messages"
record_type = "message"
cursor = "id"
"#
    )
}

fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let ours = dir.join("highwater.toml").exists() || std::fs::read_dir(dir)?.next().is_none();
        if !ours {
            anyhow::bail!(
                "{} exists and does not hold an earlier demo; pass --dir to choose another folder",
                dir.display()
            );
        }
        for name in [
            "lake",
            "warehouse.duckdb",
            "warehouse.duckdb.wal",
            "warehouse.duckdb.lock",
        ] {
            let p = dir.join(name);
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn print_reports(title: &str, reports: &[StreamReport]) {
    println!("\n{title}");
    for r in reports {
        println!(
            "  {:<9} {:<10} {:>6} rows in {:>3} pages, {} file(s), cursor {} → {}",
            r.stream,
            r.outcome,
            r.rows_written,
            r.pages,
            r.files.len(),
            r.cursor_before,
            r.cursor_after
        );
        if let Some(e) = &r.error {
            println!("            error: {e}");
        }
    }
}

pub async fn run(args: DemoArgs) -> CmdResult {
    prepare_dir(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let sim = Sim::start(SimConfig {
        records: args.records,
        seed: 7,
        tokens: vec![TOKEN.to_string()],
        ..SimConfig::default()
    })
    .await?;
    println!(
        "simulated Cerb at {} with {} tickets and {} messages",
        sim.base_url(),
        sim.records("ticket").len(),
        sim.records("message").len()
    );

    // An admin bulk-updates 1,200 tickets: all stamped with one second, more than two pages.
    let ids: Vec<i64> = sim
        .records("ticket")
        .iter()
        .filter_map(|r| crate::source::parse_int(&r["id"]))
        .take(1200)
        .collect();
    let second = sim.bulk_update("ticket", &ids, obj(json!({"importance": 75})));
    println!(
        "bulk update: {} tickets now share updated = {second}",
        ids.len()
    );
    // Let the window (now − 5 s lag) pass that second.
    sim.set_clock(Clock::Offset(10));

    let toml = demo_config(&sim.base_url());
    let cfg_path = dir.join("highwater.toml");
    std::fs::write(&cfg_path, &toml)?;
    let env: BTreeMap<String, String> = [(TOKEN_VAR.to_string(), TOKEN.to_string())].into();
    let cfg = Config::parse(&toml, &cfg_path, &dir, &env)?;
    let p = Pipeline::build(cfg)?;
    let opts = SyncOptions::default();

    let first = crate::sync::run(&p, None, &opts).await?;
    print_reports("sync 1 (initial load):", &first);

    // The source changes: new tickets, edits, another same-second bulk update, a late write.
    let mut created = 0;
    for i in 0..40 {
        sim.create(
            "ticket",
            obj(json!({"subject": format!("Demo ticket {i} — 請求書について 🧾"), "status": "open", "status_id": 0})),
        );
        created += 1;
    }
    let live: Vec<i64> = sim
        .records("ticket")
        .iter()
        .filter_map(|r| crate::source::parse_int(&r["id"]))
        .collect();
    for id in live.iter().skip(1500).take(100) {
        sim.update(
            "ticket",
            *id,
            obj(json!({"status": "closed", "status_id": 2})),
            true,
        );
    }
    let bulk: Vec<i64> = live.iter().skip(2000).take(700).copied().collect();
    sim.bulk_update("ticket", &bulk, obj(json!({"spam_training": "N"})));
    // A row committed late: dated 2 s ago (inside the lag window the first sync stayed behind),
    // with an id below ones already loaded.
    let late = sim.late_write(
        "ticket",
        sim.now() - 2,
        obj(json!({"subject": "Late commit from a long transaction", "status": "open", "status_id": 0})),
    );
    sim.set_clock(Clock::Offset(20));
    println!(
        "\nsource changed: {created} new tickets, 100 closed, 700 bulk-updated in one second, \
         1 late write (id {late}, dated inside the lag window)"
    );

    let second_run = crate::sync::run(&p, None, &opts).await?;
    print_reports("sync 2 (incremental):", &second_run);

    // What no cursor can see: API deletes keep `updated`, purges make rows vanish.
    for id in live.iter().skip(100).take(5) {
        sim.soft_delete("ticket", *id);
    }
    for id in live.iter().skip(200).take(3) {
        sim.purge("ticket", *id);
    }
    println!(
        "\nsource changed silently: 5 tickets deleted through the API (updated kept), 3 purged"
    );
    let reconciled = crate::reconcile::run(
        &p,
        Some("tickets"),
        &crate::reconcile::ReconcileOptions {
            dry_run: false,
            max_delete_fraction: 0.10,
            force: false,
        },
    )
    .await?;
    println!("\nreconcile (full id scan, content hashes):");
    for r in &reconciled {
        println!(
            "  {:<9} {:<10} scanned {}, marked deleted {} {:?}, repaired {} (e.g. {:?}), undeleted {}",
            r.stream,
            r.outcome,
            r.scanned,
            r.deleted,
            r.sample_deleted,
            r.repaired,
            r.sample_repaired,
            r.undeleted
        );
        if let Some(e) = &r.error {
            println!("            error: {e}");
        }
    }
    sim.shutdown();

    let wh_path = dir.join("warehouse.duckdb");
    let src_tickets = sim.records("ticket").len();
    let src_messages = sim.records("message").len();
    let path = wh_path.clone();
    let (counts, analyst) = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, String)> {
        let wh = Warehouse::open_read_only(&path)?;
        let counts = wh.query(
            "SELECT 'tickets' AS stream, count(*) AS rows, count(DISTINCT id) AS distinct_ids FROM tickets \
             UNION ALL SELECT 'messages', count(*), count(DISTINCT id) FROM messages",
            OutputFormat::Table,
        )?;
        let analyst = wh.query(
            "SELECT status, count(*) AS tickets, round(avg(importance), 1) AS avg_importance, \
             max(updated_at) AS last_update FROM analytics.tickets GROUP BY status ORDER BY tickets DESC",
            OutputFormat::Table,
        )?;
        Ok((counts, analyst))
    })
    .await
    .map_err(anyhow::Error::from)??;
    println!(
        "\nsource now has {src_tickets} tickets and {src_messages} messages; the warehouse has:"
    );
    println!("{counts}");
    println!("an analyst's query (analytics.tickets: typed timestamps, deleted rows hidden):");
    println!("{analyst}");
    let files = count_files(&dir.join("lake"));
    println!(
        "lake: {files} Parquet file(s) under {}",
        dir.join("lake").display()
    );
    println!(
        "\nopen it yourself:\n  duckdb {wh}\n  highwater --config {cfg} status\n  highwater --config {cfg} query \"SELECT count(*) FROM tickets\"",
        wh = wh_path.display(),
        cfg = cfg_path.display()
    );
    let failed: Vec<String> = first
        .iter()
        .chain(&second_run)
        .filter_map(|r| r.error.clone())
        .chain(reconciled.iter().filter_map(|r| r.error.clone()))
        .collect();
    if !failed.is_empty() {
        return Err(
            anyhow::anyhow!("the demo did not run cleanly:\n  {}", failed.join("\n  ")).into(),
        );
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count_files(&p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}
