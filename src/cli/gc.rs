//! `highwater gc`: delete lake objects that were written but never committed (orphans), under the
//! run lock. Syncs already remove what an interrupted run left in its own date folders; this is the
//! full sweep, one listing of each stream's folder. The rules are those of [`crate::gc`]: an object
//! goes only if it is a `.parquet` data object, `highwater.files` does not name it, its name
//! carries a run id this warehouse recorded, and it is older than `--min-age-secs`. Nothing is
//! recorded in the warehouse.
//!
//! The minimum age defaults to one hour. Under the run lock no run of this warehouse is writing,
//! but the lock is a file next to the database: a second loader that reaches the same database
//! through another path could have an object in flight that is not committed yet, and a store
//! whose clock lags this machine's makes fresh objects look old. A checkpoint commits within
//! seconds of its write, so an hour is a wide margin that costs nothing but a later cleanup.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{CmdResult, load_config};
use crate::gc::{Candidate, StreamPlan};
use crate::lake::Lake;
use crate::warehouse::{Warehouse, WarehouseError};

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Only this stream's folder.
    #[arg(long)]
    pub stream: Option<String>,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Spare objects modified less than this many seconds ago: a margin for a store whose clock
    /// lags this machine's and for a loader reaching the same warehouse by another path.
    #[arg(long, default_value_t = 3600)]
    pub min_age_secs: u64,
}

pub async fn run(config: &Path, args: GcArgs) -> CmdResult {
    let cfg = load_config(config)?;
    if !cfg.warehouse.path.exists() {
        // Without a warehouse nothing is known to be committed, so nothing may be deleted.
        return Err(anyhow::Error::new(WarehouseError::Missing(
            cfg.warehouse.path.display().to_string(),
        ))
        .into());
    }
    let lake = Lake::open(&cfg.lake.url, &cfg.lake.options, &cfg.base_dir)?;
    let wh = std::sync::Arc::new(Warehouse::open_with_timeout(
        &cfg.warehouse.path,
        cfg.warehouse.lock_wait,
    )?);
    let wait = cfg.warehouse.lock_wait;
    let w = wh.clone();
    let _lock = tokio::task::spawn_blocking(move || w.lock_runs(wait)).await??;

    let w = wh.clone();
    let recorded = tokio::task::spawn_blocking(move || w.stream_names()).await??;
    let streams: Vec<String> = match &args.stream {
        Some(s) => {
            if cfg.stream(s).is_none() && !recorded.contains(s) {
                return Err(anyhow::anyhow!(
                    "unknown stream {s:?}: neither the config nor the warehouse has it"
                )
                .into());
            }
            vec![s.clone()]
        }
        // Streams removed from the config still have folders in the lake.
        None => cfg
            .streams
            .iter()
            .map(|s| s.name.clone())
            .chain(recorded)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };

    let before = chrono::Duration::from_std(Duration::from_secs(args.min_age_secs))
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut total = (0usize, 0u64);
    for stream in &streams {
        let candidates = crate::gc::list_stream(&lake, stream).await?;
        // The warehouse is read after listing: whatever was committed before the read is kept.
        let w = wh.clone();
        let (committed, known) = tokio::task::spawn_blocking(move || {
            Ok::<_, WarehouseError>((w.committed_keys()?, w.known_run_ids()?))
        })
        .await??;
        let plan = crate::gc::plan_stream(stream, candidates, &committed, &known, before);
        let done: Vec<String> = if args.dry_run {
            plan.orphans.iter().map(|c| c.key.clone()).collect()
        } else {
            crate::gc::delete(&lake, stream, &plan.orphans).await?
        };
        for c in plan.orphans.iter().filter(|c| done.contains(&c.key)) {
            println!("{verb:<12}  {}  ({} bytes)", c.key, c.size);
        }
        total.0 += done.len();
        total.1 += plan.orphans.iter().map(|c| c.size).sum::<u64>();
        print_kept(&plan, args.min_age_secs);
    }
    println!(
        "{} orphan(s) {}, {} bytes, in {} stream(s)",
        total.0,
        if args.dry_run {
            "to delete (dry run: nothing deleted)"
        } else {
            "deleted"
        },
        total.1,
        streams.len(),
    );
    Ok(())
}

fn print_kept(plan: &StreamPlan, min_age: u64) {
    let sum = |v: &[Candidate]| v.iter().map(|c| c.size).sum::<u64>();
    println!(
        "{:<16} {} committed, {} orphan(s), {} younger than {min_age} s kept, {} not of this warehouse kept",
        plan.stream,
        plan.committed,
        plan.orphans.len(),
        plan.young.len(),
        plan.foreign.len()
    );
    for c in &plan.young {
        println!("kept (young)  {}  ({} bytes)", c.key, c.size);
    }
    if !plan.foreign.is_empty() {
        for c in &plan.foreign {
            println!("kept (other)  {}  ({} bytes)", c.key, c.size);
        }
        println!(
            "                 {} object(s), {} bytes, carry no run id this warehouse recorded (another \
             warehouse on the same lake, or one that was recreated): delete them by hand if they are garbage",
            plan.foreign.len(),
            sum(&plan.foreign)
        );
    }
}
