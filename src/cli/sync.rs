//! `highwater sync`: one run over every stream (or one), then exit. For cron, Kubernetes, Airflow.

use std::path::Path;

use super::{CmdResult, load_config};
use crate::sync::{FailPoint, Pipeline, SyncOptions};

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Only this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Print the run report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Path, args: SyncArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let p = Pipeline::build(cfg)?;
    let opts = SyncOptions {
        failpoint: FailPoint::from_env(),
    };
    let reports = crate::sync::run(&p, args.stream.as_deref(), &opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!(
                "{:<16} {:<12} rows {:>9}  pages {:>6}  files {:>3}  cursor {} → {}  {:.1}s",
                r.stream,
                r.outcome,
                r.rows_written,
                r.pages,
                r.files.len(),
                r.cursor_before,
                r.cursor_after,
                r.seconds
            );
        }
    }
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.outcome != "succeeded")
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        let msgs: Vec<String> = failed
            .iter()
            .map(|r| {
                r.error
                    .clone()
                    .unwrap_or_else(|| format!("stream {} {}", r.stream, r.outcome))
            })
            .collect();
        let error = anyhow::anyhow!(
            "{} of {} stream(s) did not finish; the cursor stays at the last committed row:\n  {}",
            failed.len(),
            reports.len(),
            msgs.join("\n  ")
        );
        // Only throttled, nothing broken: exit 3, so a scheduler can tell "try later" from a failure.
        let code = if failed.iter().all(|r| r.outcome == "rate_limited") {
            super::EXIT_RATE_LIMITED
        } else {
            1
        };
        Err(super::Failure { code, error })
    }
}
