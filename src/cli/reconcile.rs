//! `highwater reconcile`: a guarded full scan that finds deletions and silent changes.

use std::path::Path;

use super::{CmdResult, load_config};
use crate::reconcile::ReconcileOptions;
use crate::sync::Pipeline;

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// Only this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse to mark more than this share of the live rows deleted.
    #[arg(long, default_value_t = 0.10)]
    pub max_delete_fraction: f64,
    /// Apply even when a guard refuses.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Path, args: ReconcileArgs) -> CmdResult {
    if !(0.0..=1.0).contains(&args.max_delete_fraction) {
        return Err(super::Failure {
            code: 2,
            error: anyhow::anyhow!("--max-delete-fraction must be between 0 and 1"),
        });
    }
    let cfg = load_config(config)?;
    let p = Pipeline::build(cfg)?;
    let opts = ReconcileOptions {
        dry_run: args.dry_run,
        max_delete_fraction: args.max_delete_fraction,
        force: args.force,
    };
    let reports = crate::reconcile::run(&p, args.stream.as_deref(), &opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!(
                "{:<16} {:<9} scanned {:>9}  deleted {:>7}  undeleted {:>6}  repaired {:>7} (never loaded {})  {:.1}s{}",
                r.stream,
                r.outcome,
                r.scanned,
                r.deleted,
                r.undeleted,
                r.repaired,
                r.missing,
                r.seconds,
                if args.dry_run {
                    "  (dry run: nothing changed)"
                } else {
                    ""
                }
            );
            if !r.sample_deleted.is_empty() {
                println!("  deleted ids (sample): {:?}", r.sample_deleted);
            }
            if !r.sample_undeleted.is_empty() {
                println!("  undeleted ids (sample): {:?}", r.sample_undeleted);
            }
            if !r.sample_repaired.is_empty() {
                println!("  repaired ids (sample): {:?}", r.sample_repaired);
            }
            for w in &r.warnings {
                println!("  warning: {w}");
            }
        }
    }
    let failed: Vec<_> = reports.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{}",
            failed
                .iter()
                .filter_map(|r| r.error.clone())
                .collect::<Vec<_>>()
                .join("\n")
        )
        .into())
    }
}
