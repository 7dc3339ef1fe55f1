//! The run lock: an OS file lock on `<warehouse>.lock`, held for a whole sync or reconcile run so
//! two runs of one warehouse never interleave. The kernel releases it when the process dies, so a
//! killed run never leaves a stale lock. The file's text names the holder for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Result, Warehouse, WarehouseError};

/// Held while alive; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // SAFETY: the descriptor is owned by `self.file` and open.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl Warehouse {
    pub fn lock_path(&self) -> PathBuf {
        let mut p = self.path().as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    }

    /// Take the run lock, waiting up to `wait` for another run to finish.
    pub fn lock_runs(&self, wait: Duration) -> Result<RunLock> {
        let path = self.lock_path();
        let io = |e| WarehouseError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            // SAFETY: flock on an fd we own; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            if started.elapsed() >= wait {
                let mut holder = String::new();
                let _ = file.seek(SeekFrom::Start(0));
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(WarehouseError::Locked {
                    path: self.path().display().to_string(),
                    holder: if holder.is_empty() {
                        "a process that has not written its name yet".into()
                    } else {
                        holder.to_string()
                    },
                    waited: started.elapsed().as_secs_f64(),
                });
            }
            std::thread::sleep(delay.min(wait.saturating_sub(started.elapsed())));
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        let cmd: Vec<String> = std::env::args().take(4).collect();
        let text = format!(
            "pid={} cmd={:?} since={}\n",
            std::process::id(),
            cmd.join(" "),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RunLock { file, path })
    }
}
