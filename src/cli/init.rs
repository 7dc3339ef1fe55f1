//! `highwater init`: write the commented example config.

use std::path::Path;

use super::CmdResult;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(path: &Path, args: InitArgs) -> CmdResult {
    if path.exists() && !args.force {
        return Err(anyhow::anyhow!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        )
        .into());
    }
    std::fs::write(path, crate::config::EXAMPLE)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    println!(
        "wrote {}: set source.url, export CERB_TOKEN, then run `highwater sync`",
        path.display()
    );
    Ok(())
}
