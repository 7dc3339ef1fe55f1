//! `highwater simulate`: the simulator as a standalone server for the demo and scripts.

use std::net::SocketAddr;

use super::{Clock, Sim, SimConfig};

/// The admin endpoints, shown after `--help`.
pub const ADMIN_HELP: &str = r#"Admin endpoints (JSON bodies, no auth, loopback only):
  POST /_sim/create       {"type":"ticket","fields":{...}}            -> {"id":N}   updated = now
  POST /_sim/update       {"type","id","fields",{"bump":false}}       -> {"ok":bool} bump=false keeps `updated` (like Cerb's API PUT)
  POST /_sim/bulk-update  {"type","ids":[...],"fields":{...}}         -> {"updated":T} every row stamped with one second
  POST /_sim/soft-delete  {"type","id"}   ticket: status deleted, status_id 3, updated unchanged; other types: purge
  POST /_sim/purge        {"type","id"}   the row is gone
  POST /_sim/merge        {"type","from","into"}  `from` vanishes, `into` absorbs its counts, updated not bumped
  POST /_sim/late-write   {"type","updated":T,"fields":{...}}         -> {"id":N} row at an already-read second, id below the max
  POST /_sim/faults       {"push":["429:seconds=5","429:date=UNIX","429:zero","429:none","500","502","503",
                           "maintenance","stall","truncated","reset","status_error","unauthorized","query_timeout",
                           "delay:MILLIS"],
                           "rate":0.1}   scripted faults (FIFO) for the next search requests; random fault share
  POST /_sim/clock        {"fixed":UNIX} | {"offset":SECS} | {}  (real)   -> {"now":T}
  POST /_sim/ignore-keyset {"on":true}   searches ignore q's filters (sort/limit/page still apply)
  POST /_sim/ignore-sort   {"on":true}   searches return pages in scrambled order
  POST /_sim/oauth-mint   {}  -> {"access_token","refresh_token","expires_in"}
  GET  /_sim/stats        -> {"requests":N,"now":T}     GET /_sim/clock -> {"now":T}
Cerb endpoints: GET /rest/records/{type}/search.json, GET|PUT|DELETE /rest/records/{type}/{id}.json,
  POST /oauth/access_token (grant_type=refresh_token). Types: ticket message comment contact org worker task."#;

/// Arguments of `highwater simulate`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = ADMIN_HELP)]
pub struct SimulateArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// Generated records per type.
    #[arg(long, default_value_t = 1000)]
    pub records: usize,
    /// Seed of the generated data and of random faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Bearer token accepted (repeatable).
    #[arg(long = "token", default_value = "test-token")]
    pub tokens: Vec<String>,
    /// Share of search requests answered with a random transient fault (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seconds added to the real clock (negative: behind).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset: i64,
    /// Lifetime of OAuth access tokens in seconds.
    #[arg(long, default_value_t = 3600)]
    pub access_token_ttl: i64,
    /// Generate records only for these types (comma-separated; the others stay empty).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
}

/// Serves until Ctrl-C.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let cfg = SimConfig {
        records: args.records,
        seed: args.seed,
        tokens: args.tokens,
        fault_rate: args.fault_rate,
        clock: if args.clock_offset == 0 {
            Clock::Real
        } else {
            Clock::Offset(args.clock_offset)
        },
        access_token_ttl: args.access_token_ttl,
        type_records: if args.types.is_empty() {
            Vec::new()
        } else {
            super::data::RType::ALL
                .iter()
                .map(|t| {
                    let n = if args.types.iter().any(|x| x == t.alias()) {
                        args.records
                    } else {
                        0
                    };
                    (t.alias().to_string(), n)
                })
                .collect()
        },
        ..SimConfig::default()
    };
    let sim = Sim::start_on(SocketAddr::from(([127, 0, 0, 1], args.port)), cfg).await?;
    println!("{}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}
