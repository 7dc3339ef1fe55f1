//! `highwater check`: is this setup able to run? Validates the config, asks the source one search
//! per stream, writes, reads back and deletes a probe object in the lake, and opens the warehouse.
//! Each check prints `ok` or what failed and how to fix it; nothing is synced or changed.

use std::path::Path;

use bytes::Bytes;

use super::{CmdResult, load_config};
use crate::config::Config;
use crate::lake::Lake;
use crate::source::cerb::CerbSource;
use crate::warehouse::Warehouse;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// One check's outcome: what was checked, and the failure with a hint.
struct Line {
    what: String,
    failure: Option<(String, &'static str)>,
}

impl Line {
    fn ok(what: impl Into<String>) -> Line {
        Line {
            what: what.into(),
            failure: None,
        }
    }
    fn failed(what: impl Into<String>, error: impl std::fmt::Display, fix: &'static str) -> Line {
        Line {
            what: what.into(),
            failure: Some((error.to_string(), fix)),
        }
    }
}

pub async fn run(config: &Path, _args: CheckArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let mut lines = vec![Line::ok(format!(
        "config {} ({} stream(s))",
        config.display(),
        cfg.streams.len()
    ))];
    lines.extend(check_source(&cfg).await);
    lines.push(check_lake(&cfg).await);
    lines.push(check_warehouse(&cfg).await);

    let mut failed = 0;
    for l in &lines {
        match &l.failure {
            None => println!("ok      {}", l.what),
            Some((err, fix)) => {
                failed += 1;
                println!("FAILED  {}\n        {err}\n        fix: {fix}", l.what);
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{failed} of {} check(s) failed", lines.len()).into())
    }
}

async fn check_source(cfg: &Config) -> Vec<Line> {
    // One attempt per search: `check` is interactive, and retries would only delay the answer.
    let mut source_cfg = cfg.source.clone();
    source_cfg.max_retries = 0;
    let src = match CerbSource::new(&source_cfg) {
        Ok(s) => s,
        Err(e) => {
            return vec![Line::failed(
                format!("source {}", cfg.source.url),
                e,
                "check [source] url",
            )];
        }
    };
    let mut out = Vec::new();
    for s in &cfg.streams {
        let what = format!("source {} answers a search for stream {s}", cfg.source.url);
        out.push(match src.probe(&s.record_type, &s.filter).await {
            Ok(server_time) => {
                let skew = server_time - crate::util::unix_now();
                let mut l = Line::ok(what);
                if skew.abs() > 60 {
                    l.what.push_str(&format!(
                        " (its clock is {skew} s off this machine's; the window end follows the server)"
                    ));
                }
                l
            }
            Err(e) => {
                let cause = match &e {
                    crate::source::SourceError::RetriesExhausted { last, .. } => last.as_ref(),
                    other => other,
                };
                let fix = match cause {
                    crate::source::SourceError::Unauthorized { .. }
                    | crate::source::SourceError::Credentials { .. } => {
                        "the credentials were refused: the error says what to check for the configured [source] auth"
                    }
                    crate::source::SourceError::Cerb { .. } => {
                        "Cerb refused the search: check the stream's record_type and filter"
                    }
                    crate::source::SourceError::Transport { .. } => {
                        "the server could not be reached: check [source] url, that Cerb is running, DNS, proxies and firewalls"
                    }
                    crate::source::SourceError::Http { status: 404, .. } => {
                        "no REST API at that address: [source] url must be Cerb's base URL (the API is under /rest/)"
                    }
                    _ => "see the error; rerun with HIGHWATER_LOG=debug for each request",
                };
                Line::failed(what, e, fix)
            }
        });
    }
    out
}

async fn check_lake(cfg: &Config) -> Line {
    let what = format!(
        "lake {} (write, read back, delete a probe object)",
        cfg.lake.url
    );
    let lake = match Lake::open(&cfg.lake.url, &cfg.lake.options, &cfg.base_dir) {
        Ok(l) => l,
        Err(e) => {
            return Line::failed(what, e, "check [lake] url and [lake.options]");
        }
    };
    let what = format!(
        "lake {} (write, read back, delete a probe object)",
        lake.url()
    );
    let key = format!("_highwater_check/{}.json", uuid::Uuid::now_v7());
    let body = Bytes::from(format!("{{\"probe\":\"{key}\"}}"));
    let fix = "check the credentials (AWS_*/GOOGLE_*/AZURE_* or [lake.options]), that the bucket exists, and that they may put, get and delete objects";
    if let Err(e) = lake.put_json(&key, body.clone()).await {
        return Line::failed(what, e, fix);
    }
    let read = lake.get(&key).await;
    let deleted = lake.delete(&key).await;
    if let Some(root) = lake.local_root() {
        let _ = std::fs::remove_dir(root.join("_highwater_check"));
    }
    match (read, deleted) {
        (Ok(b), Ok(())) if b == body => Line::ok(what),
        (Ok(_), Ok(())) => Line::failed(
            what,
            "the probe object read back differs from what was written",
            "the store does not return what was put: check the endpoint, a proxy or a cache in front of it",
        ),
        (Err(e), _) | (_, Err(e)) => Line::failed(what, e, fix),
    }
}

async fn check_warehouse(cfg: &Config) -> Line {
    let path = cfg.warehouse.path.clone();
    let what = format!("warehouse {}", path.display());
    let res = tokio::task::spawn_blocking(move || -> Result<String, String> {
        if path.exists() {
            let w = Warehouse::open_read_only(&path).map_err(|e| e.to_string())?;
            let streams = w.status().map_err(|e| e.to_string())?;
            return Ok(format!("opens ({} stream(s) recorded)", streams.len()));
        }
        // Not created yet: the first sync will create it, if the folder can hold it.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let probe = dir.join(format!(".highwater-check-{}", std::process::id()));
        std::fs::write(&probe, b"probe")
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok("does not exist yet; its folder is writable, the first sync creates it".to_string())
    })
    .await;
    match res {
        Ok(Ok(msg)) => Line::ok(format!("{what} {msg}")),
        Ok(Err(e)) => Line::failed(
            what,
            e,
            "check [warehouse] path and its folder's rights; a sync holding the file makes readers wait",
        ),
        Err(e) => Line::failed(what, e, "internal error"),
    }
}
