//! `highwater status`: per stream, the cursor, how far it is behind now, and the last run.

use std::path::Path;

use super::{CmdResult, load_config_offline};
use crate::warehouse::Warehouse;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Path, args: StatusArgs) -> CmdResult {
    let cfg = load_config_offline(config)?;
    if !cfg.warehouse.path.exists() {
        return Err(anyhow::anyhow!(
            "no warehouse at {} yet: run `highwater sync` first",
            cfg.warehouse.path.display()
        )
        .into());
    }
    let path = cfg.warehouse.path.clone();
    let streams = tokio::task::spawn_blocking(move || Warehouse::open_read_only(&path)?.status())
        .await
        .map_err(anyhow::Error::from)??;
    let now = crate::util::unix_now();
    let mut out = Vec::new();
    for s in &cfg.streams {
        let st = streams.iter().find(|x| x.stream == s.name);
        let lag = st
            .and_then(|x| x.cursor())
            .filter(|_| s.cursor == crate::model::CursorMode::UpdatedId)
            .map(|c| now - c.updated);
        out.push(serde_json::json!({
            "stream": s.name,
            "record_type": s.record_type,
            "cursor": st.and_then(|x| x.cursor()).map(|c| serde_json::json!({"updated": c.updated, "id": c.id})),
            "lag_seconds": lag,
            "rows": st.map(|x| x.rows_live),
            "rows_deleted": st.map(|x| x.rows_deleted),
            "last_run": st.and_then(|x| x.last_run.clone()),
            "last_reconcile": st.and_then(|x| x.last_reconcile.clone()),
            "warning": crate::reconcile::filter_warning(s),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (s, v) in cfg.streams.iter().zip(&out) {
        let st = streams.iter().find(|x| x.stream == s.name);
        println!("stream {} ({})", s.name, s.record_type);
        match st.and_then(|x| x.cursor()) {
            Some(c) => println!(
                "  cursor      {c}{}",
                v["lag_seconds"]
                    .as_i64()
                    .map(|l| format!("  ({l} s behind now)"))
                    .unwrap_or_default()
            ),
            None => println!("  cursor      none (never synced)"),
        }
        if let Some(x) = st {
            println!(
                "  rows        {} live, {} marked deleted",
                x.rows_live, x.rows_deleted
            );
            match &x.last_run {
                Some(r) => println!(
                    "  last run    {} {} {} started {}{}\n              {} rows written, {} pages, {} requests, {} retries{}",
                    r.kind,
                    r.run_id,
                    r.outcome,
                    r.started_at,
                    r.finished_at
                        .as_ref()
                        .map(|f| format!(", finished {f}"))
                        .unwrap_or_default(),
                    r.counts.rows_written,
                    r.counts.pages,
                    r.counts.requests,
                    r.counts.retries,
                    r.error
                        .as_ref()
                        .map(|e| format!("\n  error       {e}"))
                        .unwrap_or_default()
                ),
                None => println!("  last run    none"),
            }
            match &x.last_reconcile {
                Some(r) => {
                    let samples = r
                        .details
                        .as_ref()
                        .map(|d| {
                            ["sample_deleted", "sample_repaired"]
                                .iter()
                                .filter_map(|k| {
                                    let ids = d.get(*k)?.as_array()?;
                                    (!ids.is_empty()).then(|| {
                                        format!(
                                            "{} {}",
                                            k.trim_start_matches("sample_"),
                                            serde_json::Value::Array(ids.clone())
                                        )
                                    })
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    println!(
                        "  reconcile   {} {} started {}: scanned {}, deleted {}, undeleted {}, repaired {}{}{}",
                        r.run_id,
                        r.outcome,
                        r.started_at,
                        r.counts.scanned,
                        r.counts.deleted,
                        r.counts.undeleted,
                        r.counts.repaired,
                        if samples.is_empty() {
                            String::new()
                        } else {
                            format!("\n              ids: {samples}")
                        },
                        r.error
                            .as_ref()
                            .map(|e| format!("\n  error       {e}"))
                            .unwrap_or_default()
                    );
                }
                None => println!("  reconcile   never run"),
            }
            if let Some(w) = v["warning"].as_str() {
                println!("  warning     {w}");
            }
        }
    }
    Ok(())
}
