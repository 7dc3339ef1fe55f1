//! `highwater query`: read-only SQL against the warehouse, as a table, CSV or JSON.

use std::io::Write;
use std::path::Path;

use super::{CmdResult, load_config_offline};
use crate::warehouse::{OutputFormat, Warehouse};

#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    /// The SQL to run (read-only).
    pub sql: String,
    #[arg(long, value_parser = ["table", "csv", "json"], default_value = "table")]
    pub format: String,
}

pub async fn run(config: &Path, args: QueryArgs) -> CmdResult {
    let cfg = load_config_offline(config)?;
    if !cfg.warehouse.path.exists() {
        return Err(anyhow::anyhow!(
            "no warehouse at {} yet: run `highwater sync` first",
            cfg.warehouse.path.display()
        )
        .into());
    }
    let format = match args.format.as_str() {
        "csv" => OutputFormat::Csv,
        "json" => OutputFormat::Json,
        _ => OutputFormat::Table,
    };
    let path = cfg.warehouse.path.clone();
    let sql = args.sql;
    let text =
        tokio::task::spawn_blocking(move || Warehouse::open_read_only(&path)?.query(&sql, format))
            .await
            .map_err(anyhow::Error::from)??;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}
