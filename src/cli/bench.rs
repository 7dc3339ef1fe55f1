//! `highwater bench`: sync N Cerb-shaped tickets from a simulator into a fresh lake + warehouse
//! and report records/s, the loader's CPU time per record and its peak RSS.
//!
//! The simulator runs as a child process so that its CPU and memory are not counted as the
//! loader's. A fetch-only walk over the same data runs first, as the baseline in the same command:
//! the ratio full-sync / fetch-only says how much the loader adds on top of the source.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use futures::StreamExt;

use super::CmdResult;
use crate::config::Config;
use crate::model::{Cursor, CursorMode};
use crate::source::Walk;
use crate::sync::{Pipeline, SyncOptions};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Tickets to serve and sync.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Rows per checkpoint (Parquet file and transaction).
    #[arg(long, default_value_t = 50_000)]
    pub checkpoint_rows: usize,
    /// Keep the lake and warehouse here instead of a temporary folder.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Skip the fetch-only baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// After the sync, run `highwater reconcile` over the loaded rows in a child process and
    /// report its time and peak RSS.
    #[arg(long)]
    pub reconcile: bool,
}

struct SimChild(Child);

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Usage {
    cpu_secs: f64,
    max_rss_mb: f64,
}

fn usage() -> Usage {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu_secs: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_mb: ru.ru_maxrss as f64 / 1024.0,
    }
}

pub async fn run(args: BenchArgs) -> CmdResult {
    let exe = std::env::current_exe()?;
    let token = "bench-token";
    eprintln!("starting the simulator with {} tickets…", args.records);
    let mut child = Command::new(&exe)
        .args([
            "simulate",
            "--port",
            "0",
            "--records",
            &args.records.to_string(),
            "--seed",
            "1",
            "--token",
            token,
            "--types",
            "ticket",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let child = SimChild(child);
    let url = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut lines = std::io::BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line?;
            if let Some(pos) = line.find("http://127.0.0.1:") {
                let url: String = line[pos..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                // Keep draining so the child never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return Ok(url);
            }
        }
        anyhow::bail!("the simulator exited before printing its URL")
    })
    .await
    .map_err(anyhow::Error::from)??;

    let tmp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let toml = format!(
        "[source]\nurl = \"{url}\"\ntoken = \"${{BENCH_TOKEN}}\"\n[lake]\nurl = \"file://./lake\"\n\
         [warehouse]\npath = \"warehouse.duckdb\"\n[sync]\ncheckpoint_rows = {}\ncheckpoint_secs = 3600\n\
         [[streams]]\nname = \"tickets\"\nrecord_type = \"ticket\"\nlag_secs = 1\n",
        args.checkpoint_rows
    );
    let env: BTreeMap<String, String> = [("BENCH_TOKEN".to_string(), token.to_string())].into();
    let cfg = Config::parse(&toml, &dir.join("highwater.toml"), &dir, &env)?;
    let p = Pipeline::build(cfg)?;

    let mut baseline_rate = None;
    if !args.no_baseline {
        let u0 = usage();
        let t0 = Instant::now();
        let now = p.source.probe("ticket", "").await?;
        let pages = p.source.pages(Walk {
            record_type: "ticket".into(),
            mode: CursorMode::UpdatedId,
            cursor_field: "updated".into(),
            filter: String::new(),
            page_size: 500,
            after: Cursor::START,
            horizon: now,
            stream: "tickets".into(),
        });
        futures::pin_mut!(pages);
        let mut n = 0u64;
        while let Some(page) = pages.next().await {
            n += page?.records.len() as u64;
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = usage().cpu_secs - u0.cpu_secs;
        let rate = n as f64 / secs;
        baseline_rate = Some(rate);
        println!(
            "fetch only : {n} records in {secs:.2} s = {rate:.0} records/s, client CPU {:.2} µs/record",
            cpu * 1e6 / n.max(1) as f64
        );
    }

    let u0 = usage();
    let t0 = Instant::now();
    let reports = crate::sync::run(&p, None, &SyncOptions::default()).await?;
    let secs = t0.elapsed().as_secs_f64();
    let u1 = usage();
    let r = &reports[0];
    if let Some(e) = &r.error {
        return Err(anyhow::anyhow!("the benchmark sync failed: {e}").into());
    }
    let n = r.rows_written;
    let rate = n as f64 / secs;
    let cpu_us = (u1.cpu_secs - u0.cpu_secs) * 1e6 / n.max(1) as f64;
    println!(
        "full sync  : {n} records in {secs:.2} s = {rate:.0} records/s, loader CPU {cpu_us:.2} µs/record, \
         peak RSS {:.0} MB, {} files",
        u1.max_rss_mb,
        r.files.len()
    );
    if let Some(b) = baseline_rate {
        println!(
            "ratio      : full sync runs at {:.2}× the fetch-only rate",
            rate / b
        );
    }
    if args.reconcile {
        // A child process, so its peak RSS is its own (RUSAGE_CHILDREN counts only waited-for
        // children, and the simulator is still running).
        let cfg_path = dir.join("highwater.toml");
        std::fs::write(&cfg_path, &toml)?;
        let t0 = Instant::now();
        let mut rec = Command::new(&exe)
            .arg("--config")
            .arg(&cfg_path)
            .args(["reconcile", "--json"])
            .env("BENCH_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        // The child's own high-water mark, read from /proc while it runs: getrusage's figure for
        // children also counts what a fork copied from this (large) process.
        let pid = rec.id();
        let mut stdout = rec
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
            buf
        });
        let mut hwm_kb = 0u64;
        let status = loop {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(kb) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                hwm_kb = hwm_kb.max(kb);
            }
            if let Some(st) = rec.try_wait()? {
                break st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let out_stdout = reader.join().unwrap_or_default();
        let secs = t0.elapsed().as_secs_f64();
        if !status.success() {
            return Err(anyhow::anyhow!(
                "the benchmark reconcile failed: {}",
                String::from_utf8_lossy(&out_stdout)
            )
            .into());
        }
        let report: serde_json::Value = serde_json::from_slice(&out_stdout).unwrap_or_default();
        let scanned = report[0]["scanned"].as_u64().unwrap_or(0);
        println!(
            "reconcile  : {scanned} ids scanned and compared in {secs:.2} s = {:.0} ids/s, peak RSS {:.0} MB (its own process), deleted {}, repaired {}",
            scanned as f64 / secs,
            hwm_kb as f64 / 1024.0,
            report[0]["deleted"],
            report[0]["repaired"]
        );
    }
    // The simulator (a child process) runs until here: the reconcile above scans it.
    drop(child);
    println!(
        "targets    : ≥ 100000 records/s end to end, ≤ 10 µs CPU/record, ≤ 300 MB peak RSS at 1M records"
    );
    Ok(())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> std::io::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("highwater-bench-{}", crate::sync::new_run_id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}
