//! The DuckDB warehouse: one table per stream plus highwater's own tables in schema `highwater`.
//!
//! DuckDB lets one process open a file for writing and blocks every other process while it does,
//! readers included. So a [`Warehouse`] holds no connection: each call opens one, does its work in
//! a transaction and closes it. A file held by another process is retried with backoff for
//! `busy_timeout`, then reported with the holder DuckDB names.
//!
//! Tables have no PRIMARY KEY constraint: `id` is kept unique by the merge (delete the staged ids,
//! insert the staged rows, in one transaction). DuckDB's index would make widening ALTERs fail and
//! re-inserting a key deleted earlier in the same transaction raise a false conflict.

mod commit;
mod lock;
mod orphans;
mod query;
mod state;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duckdb::{AccessMode, Config, Connection};

pub use commit::{Checkpoint, CommitStats};
pub use lock::RunLock;
pub use orphans::InterruptedRun;
pub use query::OutputFormat;
pub use state::{
    CommittedFile, FileRow, Outcome, RunCounts, RunFinish, RunKind, RunStart, RunSummary,
    StreamState, StreamStatus,
};

const SYSTEM_SQL: &str = include_str!("../../sql/system.sql");

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("warehouse {path}: {context}: {message}")]
    Db {
        path: String,
        context: String,
        message: String,
    },
    #[error(
        "warehouse {path} is held by another process ({holder}); gave up after {waited:.1} s. \
         Close that process (DuckDB lets one process hold the file for writing) or raise \
         [warehouse] lock_wait_secs"
    )]
    Busy {
        path: String,
        holder: String,
        waited: f64,
    },
    #[error(
        "another highwater run holds the run lock of {path} ({holder}); waited {waited:.1} s. \
         Wait for it to finish, or check that process"
    )]
    Locked {
        path: String,
        holder: String,
        waited: f64,
    },
    #[error("no warehouse at {0} yet: run `highwater sync` first")]
    Missing(String),
    #[error("warehouse {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("warehouse {path}: {source}{}", storage_hint(&.source.to_string()).map(|h| format!("; {h}")).unwrap_or_default())]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;

/// Quote an identifier for DuckDB: `"` doubled, always quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote a string literal for DuckDB.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub struct Warehouse {
    path: PathBuf,
    read_only: bool,
    busy_timeout: Mutex<Duration>,
    /// One connection at a time from this process: two DuckDB instances on one file in one
    /// process do not see each other's locks.
    serial: Mutex<()>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Warehouse {
    /// Open (creating if needed) a warehouse for loading; creates highwater's tables.
    pub fn open(path: &Path) -> Result<Warehouse> {
        Self::open_with_timeout(path, Duration::from_secs(30))
    }

    pub fn open_with_timeout(path: &Path, busy_timeout: Duration) -> Result<Warehouse> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(|e| WarehouseError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        }
        let wh = Warehouse {
            path: path.to_path_buf(),
            read_only: false,
            busy_timeout: Mutex::new(busy_timeout),
            serial: Mutex::new(()),
        };
        wh.with_conn("create highwater's tables", |c| c.execute_batch(SYSTEM_SQL))?;
        Ok(wh)
    }

    /// Open an existing warehouse for reading only (analysts, `status`, `query`).
    pub fn open_read_only(path: &Path) -> Result<Warehouse> {
        if !path.exists() {
            return Err(WarehouseError::Missing(path.display().to_string()));
        }
        Ok(Warehouse {
            path: path.to_path_buf(),
            read_only: true,
            busy_timeout: Mutex::new(Duration::from_secs(10)),
            serial: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn busy_timeout(&self) -> Duration {
        *self.busy_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_busy_timeout(&self, d: Duration) {
        *self.busy_timeout.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    pub(crate) fn db_err(&self, context: &str, e: impl std::fmt::Display) -> WarehouseError {
        let mut message = e.to_string();
        if let Some(hint) = storage_hint(&message) {
            message.push_str("; ");
            message.push_str(hint);
        }
        WarehouseError::Db {
            path: self.display(),
            context: context.to_string(),
            message,
        }
    }

    /// Open a connection, retrying while another process holds the file.
    fn connect(&self) -> Result<Connection> {
        let started = Instant::now();
        let timeout = self.busy_timeout();
        let mut delay = Duration::from_millis(25);
        loop {
            let cfg = if self.read_only {
                Config::default().access_mode(AccessMode::ReadOnly)
            } else {
                Config::default().access_mode(AccessMode::ReadWrite)
            }
            .map_err(|e| self.db_err("configure", e))?;
            match Connection::open_with_flags(&self.path, cfg) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let msg = e.to_string();
                    if let Some(holder) = lock_holder(&msg) {
                        if started.elapsed() >= timeout {
                            return Err(WarehouseError::Busy {
                                path: self.display(),
                                holder,
                                waited: started.elapsed().as_secs_f64(),
                            });
                        }
                        tracing::debug!(holder = %holder, "warehouse file busy; retrying");
                        std::thread::sleep(delay.min(timeout.saturating_sub(started.elapsed())));
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    if msg.contains("not a valid DuckDB database file") {
                        return Err(WarehouseError::Invalid {
                            path: self.display(),
                            message: "the file is not a DuckDB database; point [warehouse] path at a new file".into(),
                        });
                    }
                    return Err(self.db_err("open", msg));
                }
            }
        }
    }

    /// Run `f` on a fresh connection (closed afterwards, so the file is free for others).
    pub(crate) fn with_conn<T, E: std::fmt::Display>(
        &self,
        context: &str,
        f: impl FnOnce(&Connection) -> std::result::Result<T, E>,
    ) -> Result<T> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let conn = self.connect()?;
        let out = f(&conn).map_err(|e| self.db_err(context, e));
        drop(conn);
        out
    }

    /// Run `f` inside one transaction; rolled back on any error.
    pub(crate) fn in_tx<T>(
        &self,
        context: &str,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let conn = self.connect()?;
        conn.execute_batch("BEGIN TRANSACTION")
            .map_err(|e| self.db_err(context, e))?;
        match f(&conn) {
            Ok(v) => {
                conn.execute_batch("COMMIT")
                    .map_err(|e| self.db_err(context, e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// What the operator can do about an I/O failure DuckDB reports (its messages carry the OS error
/// text). A failed statement or commit rolls the transaction back, so the cursor stays with the
/// last commit that succeeded.
fn storage_hint(msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    if m.contains("no space left") || m.contains("disk full") || m.contains("disk quota") {
        Some(
            "the file system holding the warehouse is full: free space there (or move [warehouse] path) \
             and rerun; nothing of this transaction was committed",
        )
    } else if m.contains("read-only file system") {
        Some(
            "the warehouse is on a read-only file system: remount it read-write or point [warehouse] \
             path at a writable place, then rerun",
        )
    } else if m.contains("permission denied") || m.contains("operation not permitted") {
        Some(
            "highwater cannot write the warehouse file or its folder: check owner, mode and \
             `lsattr` (immutable flag), or point [warehouse] path elsewhere, then rerun",
        )
    } else {
        None
    }
}

/// DuckDB's message for a file locked by another process names it:
/// `... Conflicting lock is held in /usr/bin/x (PID 123) by user u. See also ...`.
fn lock_holder(msg: &str) -> Option<String> {
    if !msg.contains("Could not set lock") && !msg.contains("Conflicting lock") {
        return None;
    }
    let holder = msg
        .split("Conflicting lock is held in ")
        .nth(1)
        .map(|rest| {
            rest.split(". See also")
                .next()
                .unwrap_or(rest)
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "a process DuckDB did not name".into());
    Some(holder)
}

#[cfg(test)]
mod lock_msg_tests {
    use super::lock_holder;

    #[test]
    fn names_the_holder_from_duckdbs_message() {
        let m = "IO Error: Could not set lock on file \"/tmp/w.duckdb\": Conflicting lock is held in /usr/bin/duckdb (PID 4242) by user ann. See also https://example.invalid/concurrency";
        assert_eq!(
            lock_holder(m).unwrap(),
            "/usr/bin/duckdb (PID 4242) by user ann"
        );
        assert!(lock_holder("Catalog Error: Table x does not exist").is_none());
    }
}
