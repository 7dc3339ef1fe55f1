//! Command-line interface: one file per command. Results go to stdout, logs (tracing) to stderr.
//! Exit codes: 0 ok, 1 a job failed, 2 bad config or usage, 3 a sync stopped early because the
//! source rate-limits it (everything fetched so far is committed; run again later).

mod bench;
mod check;
mod demo;
mod gc;
mod init;
mod query;
mod reconcile;
mod status;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "highwater",
    version,
    about = "Incremental loader: Cerb → Parquet lake → DuckDB warehouse"
)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        default_value = "highwater.toml",
        env = "HIGHWATER_CONFIG"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fetch changed records and commit them to the lake and the warehouse (one run, then exit).
    Sync(sync::SyncArgs),
    /// Full scan by id: mark deleted rows, repair rows changed without `updated` moving.
    Reconcile(reconcile::ReconcileArgs),
    /// Cursor, lag and last run per stream.
    Status(status::StatusArgs),
    /// Run read-only SQL against the warehouse.
    Query(query::QueryArgs),
    /// Write a commented example config.
    Init(init::InitArgs),
    /// Check the setup: config, one search per stream, a probe object in the lake, the warehouse.
    Check(check::CheckArgs),
    /// Delete lake objects written but never committed (orphans), under the run lock.
    Gc(gc::GcArgs),
    /// Zero-config tour: a simulated Cerb on loopback, two syncs, an analyst query.
    Demo(demo::DemoArgs),
    /// Serve a Cerb-compatible simulator (for tests, demos and benchmarks).
    Simulate(crate::sim::cli::SimulateArgs),
    /// Measure sync throughput, CPU per record and peak memory against the simulator.
    Bench(bench::BenchArgs),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error: anyhow::Error = e.into();
        let code = if error.downcast_ref::<crate::config::ConfigError>().is_some() {
            2
        } else {
            1
        };
        Failure { code, error }
    }
}

pub type CmdResult = Result<(), Failure>;

/// `highwater sync` stopped because the source asked to wait longer than `max_retry_after_secs`
/// (or kept answering 429); no stream failed otherwise.
pub const EXIT_RATE_LIMITED: u8 = 3;

pub fn main() -> ExitCode {
    // Output piped into `head` ends the process quietly, as with other command-line tools,
    // instead of a panic in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // A closed stdout (`highwater query … | head`) is not a failure.
            if let Some(io) = f.error.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", f.error);
            for cause in f.error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Sync(a) => sync::run(&cli.config, a).await,
        Command::Reconcile(a) => reconcile::run(&cli.config, a).await,
        Command::Status(a) => status::run(&cli.config, a).await,
        Command::Query(a) => query::run(&cli.config, a).await,
        Command::Init(a) => init::run(&cli.config, a),
        Command::Check(a) => check::run(&cli.config, a).await,
        Command::Gc(a) => gc::run(&cli.config, a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Simulate(a) => crate::sim::cli::run(a).await.map_err(Failure::from),
        Command::Bench(a) => bench::run(a).await,
    }
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("HIGHWATER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Load the config, mapping errors to exit code 2.
pub fn load_config(path: &std::path::Path) -> Result<crate::config::Config, Failure> {
    crate::config::Config::load(path).map_err(|e| Failure {
        code: 2,
        error: e.into(),
    })
}

/// Load the config for a command that only reads the warehouse: source secrets need not be set.
pub fn load_config_offline(path: &std::path::Path) -> Result<crate::config::Config, Failure> {
    crate::config::Config::load_offline(path).map_err(|e| Failure {
        code: 2,
        error: e.into(),
    })
}
