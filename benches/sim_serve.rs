//! Records per second the simulator serves to a client that only downloads keyset pages of 500
//! tickets (`(updated:"{T+1} to {H}" OR (updated:"{T} to {T}" id:>{I})) sort:updated,id`).
//!
//! Run: `cargo bench --bench sim_serve` (env `SIM_BENCH_RECORDS`, default 200000). Simulator and
//! client share one single-threaded runtime, so the number is what one core serves while also
//! running the client: a floor for the simulator alone.

use std::time::Instant;

use highwater::sim::{Clock, Sim, SimConfig};

/// The last `"key":<int>` in a page body (the cursor of the page's last row).
fn last_int(body: &[u8], key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let pos = body.windows(pat.len()).rposition(|w| w == pat.as_bytes())?;
    let rest = &body[pos + pat.len()..];
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("SIM_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let now = 1_800_000_000;
        let cfg = SimConfig {
            records: 10,
            type_records: vec![("ticket".into(), n)],
            clock: Clock::Fixed(now),
            ..SimConfig::default()
        };
        let t0 = Instant::now();
        let sim = Sim::start(cfg).await?;
        println!("generated {n} tickets in {:.2?}", t0.elapsed());
        let client = reqwest::Client::new();
        let url = format!("{}/rest/records/ticket/search.json", sim.base_url());
        let h = now;
        let (mut t, mut i) = (0i64, 0i64);
        let mut rows = 0usize;
        let mut bytes = 0usize;
        let start = Instant::now();
        loop {
            let q = format!(
                r#"(updated:"{} to {h}" OR (updated:"{t} to {t}" id:>{i})) sort:updated,id"#,
                t + 1
            );
            let body = client
                .get(&url)
                .query(&[("q", q.as_str()), ("limit", "500"), ("page", "1")])
                .bearer_auth("test-token")
                .send()
                .await?
                .bytes()
                .await?;
            bytes += body.len();
            let count = last_int(&body, "count").unwrap_or(0) as usize;
            if count == 0 {
                break;
            }
            rows += count;
            // The page's last row: its `updated` precedes its `status`/`url` keys, `id` comes earlier.
            let tail = &body[..body.len().saturating_sub(20)];
            t = last_int(tail, "updated").unwrap_or(t);
            i = last_int(tail, "id").unwrap_or(i);
        }
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(rows == n, "walk returned {rows} rows, expected {n}");
        println!(
            "served {rows} tickets in {secs:.2}s: {:.0} records/s, {:.1} MB/s",
            rows as f64 / secs,
            bytes as f64 / secs / 1e6
        );
        sim.shutdown();
        Ok(())
    })
}
