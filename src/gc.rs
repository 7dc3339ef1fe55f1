//! The orphan sweep: lake objects that were written but never committed.
//!
//! A checkpoint's Parquet object is written before the transaction that records it (DESIGN.md
//! §7), so a process that dies in between leaves an object no `highwater.files` row names. It is
//! harmless — nothing reads the lake without the warehouse's list — but it is garbage. Two sweeps
//! remove it:
//! - the next run, for the runs it finds interrupted ([`sweep_run`]): it knows their ids and start
//!   dates, so it lists only the date folders those runs could have written, never the whole lake;
//! - `highwater gc`, which lists whole streams ([`plan_stream`]): for runs that failed and could
//!   not clean up, or a recovery whose listing failed.
//!
//! An object is deleted only when all of these hold: it is a data object (`….parquet`; manifests
//! are rewritten from the warehouse, never swept, but their staging files are), its key is not in `highwater.files`, and its
//! name carries the id of a run this warehouse recorded. The last rule keeps the files of a second
//! warehouse pointed at the same lake by mistake, or of an earlier warehouse that was recreated:
//! they are reported, never deleted. `gc` also spares objects younger than a minimum age.
//!
//! A local lake also holds object_store's staging files (`<key>#<n>`) of writes that a kill cut
//! short. Listing hides them; they are found on disk and follow the same rules. (An interrupted
//! multipart upload to a cloud store is invisible too; a lifecycle rule that aborts incomplete
//! multipart uploads removes it.)

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::lake::{Lake, LakeError};
use crate::warehouse::InterruptedRun;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("could not {op} {path} in the local lake: {source}; check the folder's permissions")]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl GcError {
    pub fn is_transient(&self) -> bool {
        match self {
            GcError::Lake(e) => e.is_transient(),
            GcError::Local { .. } => false,
        }
    }
}

/// A lake object the sweep looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Relative to the lake base, `/`-separated.
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// An object_store staging file of a local lake (`<key>#<n>`), not an object.
    pub staging: bool,
}

/// What the sweep decides about one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a data object (a manifest, a foreign file type): never touched.
    Ignored,
    /// Named in `highwater.files`.
    Committed,
    /// Written by a run of this warehouse, never committed, old enough: delete.
    Orphan,
    /// Like an orphan, but younger than the minimum age.
    Young,
    /// Not committed, and its name carries no run id this warehouse recorded.
    Foreign,
}

/// The run id in a lake file name: `<run_id>-<seq>.parquet` (data) or `<run_id>.json`
/// (manifest), optionally followed by a staging suffix `#<n>`. `None` for other names.
pub fn run_of_name(name: &str) -> Option<&str> {
    let name = strip_staging(name).unwrap_or(name);
    if let Some(stem) = name.strip_suffix(".parquet") {
        let (run, seq) = stem.rsplit_once('-')?;
        return (!run.is_empty() && !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
            .then_some(run);
    }
    name.strip_suffix(".json").filter(|r| !r.is_empty())
}

/// `name` without an object_store staging suffix (`#` and digits only), if it has one.
fn strip_staging(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('#')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The sweep's rules (see the module documentation), without I/O.
pub fn classify(
    c: &Candidate,
    committed: &HashSet<String>,
    known_runs: &HashSet<String>,
    before: DateTime<Utc>,
) -> Verdict {
    let name = file_name(&c.key);
    let base = if c.staging {
        strip_staging(name).unwrap_or(name)
    } else {
        name
    };
    let in_manifests = c.key.contains("/_manifests/");
    let data = base.ends_with(".parquet") && !in_manifests;
    // A manifest cut short while being replaced; the manifest itself is rewritten from the warehouse.
    let manifest_staging = c.staging && in_manifests && base.ends_with(".json");
    if !data && !manifest_staging {
        return Verdict::Ignored;
    }
    if !c.staging && committed.contains(&c.key) {
        return Verdict::Committed;
    }
    match run_of_name(name) {
        Some(run) if known_runs.contains(run) => {
            if c.last_modified < before {
                Verdict::Orphan
            } else {
                Verdict::Young
            }
        }
        _ => Verdict::Foreign,
    }
}

/// What `gc` found in one stream's folder.
#[derive(Clone, Debug, Default)]
pub struct StreamPlan {
    pub stream: String,
    pub committed: usize,
    pub orphans: Vec<Candidate>,
    pub young: Vec<Candidate>,
    pub foreign: Vec<Candidate>,
}

/// Lists `<stream>/` (and, for a local lake, its staging files) and sorts every data object by
/// [`classify`]. Read the warehouse's `committed` and `known_runs` after listing, so that anything
/// committed before the read is seen as committed.
pub async fn list_stream(lake: &Lake, stream: &str) -> Result<Vec<Candidate>, GcError> {
    let mut out: Vec<Candidate> = lake
        .list(stream)
        .await?
        .into_iter()
        .map(|o| Candidate {
            key: o.key,
            size: o.size,
            last_modified: o.last_modified,
            staging: false,
        })
        .collect();
    if let Some(root) = lake.local_root() {
        local_staging(&root, Path::new(stream), true, &mut out)?;
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Sorts listed candidates into a plan.
pub fn plan_stream(
    stream: &str,
    candidates: Vec<Candidate>,
    committed: &HashSet<String>,
    known_runs: &HashSet<String>,
    before: DateTime<Utc>,
) -> StreamPlan {
    let mut plan = StreamPlan {
        stream: stream.to_string(),
        ..StreamPlan::default()
    };
    for c in candidates {
        match classify(&c, committed, known_runs, before) {
            Verdict::Ignored => {}
            Verdict::Committed => plan.committed += 1,
            Verdict::Orphan => plan.orphans.push(c),
            Verdict::Young => plan.young.push(c),
            Verdict::Foreign => plan.foreign.push(c),
        }
    }
    plan
}

/// Deletes candidates (objects through the store, staging files from disk), logging each once.
/// Returns the keys deleted; stops at the first failure.
pub async fn delete(
    lake: &Lake,
    stream: &str,
    victims: &[Candidate],
) -> Result<Vec<String>, GcError> {
    let mut deleted = Vec::new();
    for c in victims {
        if c.staging {
            let Some(root) = lake.local_root() else {
                continue;
            };
            let path = root.join(&c.key);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(GcError::Local {
                        op: "delete",
                        path,
                        source,
                    });
                }
            }
        } else {
            lake.delete(&c.key).await?;
        }
        tracing::info!(stream, key = %c.key, bytes = c.size, "orphan deleted from the lake");
        deleted.push(c.key.clone());
    }
    Ok(deleted)
}

/// Date folders wider than this are not listed one by one: the stream is listed once instead.
const MAX_DATE_FOLDERS: u64 = 31;

/// Deletes what an interrupted run wrote and never committed: its data objects (and staging
/// files) in the date folders from the day before it started to the day after today, and staging
/// files of its manifest. `committed` must be read after the run lock was taken. Objects of other
/// runs in those folders are not looked at.
pub async fn sweep_run(
    lake: &Lake,
    run: &InterruptedRun,
    committed: &HashSet<String>,
) -> Result<Vec<String>, GcError> {
    sweep_run_files(
        lake,
        &run.stream,
        &run.run_id,
        run.started_at_micros,
        committed,
    )
    .await
}

/// [`sweep_run`] for any run that is over (a failed run cleaning up after itself, say):
/// `started_at_micros` bounds the date folders looked at.
pub async fn sweep_run_files(
    lake: &Lake,
    stream: &str,
    run_id: &str,
    started_at_micros: i64,
    committed: &HashSet<String>,
) -> Result<Vec<String>, GcError> {
    let started = DateTime::from_timestamp_micros(started_at_micros)
        .unwrap_or_default()
        .date_naive();
    let folders = date_folders(stream, started, Utc::now().date_naive());
    let mut candidates = Vec::new();
    for prefix in &folders {
        for o in lake.list(prefix).await? {
            candidates.push(Candidate {
                key: o.key,
                size: o.size,
                last_modified: o.last_modified,
                staging: false,
            });
        }
        if let Some(root) = lake.local_root() {
            // A whole-stream listing (a long-dead run) walks subfolders; a date folder has none.
            local_staging(&root, Path::new(prefix), prefix == stream, &mut candidates)?;
        }
    }
    if let Some(root) = lake.local_root() {
        let manifest = Lake::manifest_key(stream, run_id);
        for n in 1.. {
            let key = format!("{manifest}#{n}");
            let Ok(meta) = std::fs::metadata(root.join(&key)) else {
                break;
            };
            candidates.push(Candidate {
                key,
                size: meta.len(),
                last_modified: meta
                    .modified()
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_default(),
                staging: true,
            });
        }
    }
    candidates.sort_by(|a, b| a.key.cmp(&b.key));
    candidates.dedup_by(|a, b| a.key == b.key);
    // The same rules as gc, with this run as the only one known and no minimum age: the run is
    // dead, and objects of every other run are foreign to this sweep.
    let only: HashSet<String> = [run_id.to_string()].into();
    let victims: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| classify(c, committed, &only, DateTime::<Utc>::MAX_UTC) == Verdict::Orphan)
        .collect();
    delete(lake, stream, &victims).await
}

/// `<stream>/synced_date=…` for every day from `start - 1` to `today + 1` (a clock stepped back
/// or forward by the time a checkpoint was named), or just `<stream>` when that is too many.
fn date_folders(stream: &str, start: NaiveDate, today: NaiveDate) -> Vec<String> {
    let first = start.checked_sub_days(Days::new(1)).unwrap_or(start);
    let last = today
        .max(start)
        .checked_add_days(Days::new(1))
        .unwrap_or(today);
    if (last - first).num_days() as u64 > MAX_DATE_FOLDERS {
        return vec![stream.to_string()];
    }
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| format!("{stream}/synced_date={}", d.format("%Y-%m-%d")))
        .collect()
}

/// object_store staging files (`<name>#<digits>`) under `root/dir`, as candidates keyed like
/// objects. A missing folder has none.
fn local_staging(
    root: &Path,
    dir: &Path,
    recurse: bool,
    out: &mut Vec<Candidate>,
) -> Result<(), GcError> {
    let full = root.join(dir);
    let entries = match std::fs::read_dir(&full) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(GcError::Local {
                op: "list",
                path: full,
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| GcError::Local {
            op: "list",
            path: full.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        let rel = dir.join(name);
        if meta.is_dir() {
            if recurse {
                local_staging(root, &rel, true, out)?;
            }
            continue;
        }
        if strip_staging(name).is_none() {
            continue;
        }
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push(Candidate {
            key,
            size: meta.len(),
            last_modified: meta
                .modified()
                .map(DateTime::<Utc>::from)
                .unwrap_or_default(),
            staging: true,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(key: &str, staging: bool, age_secs: i64) -> Candidate {
        Candidate {
            key: key.to_string(),
            size: 1,
            last_modified: Utc::now() - chrono::Duration::seconds(age_secs),
            staging,
        }
    }

    #[test]
    fn run_ids_come_from_data_and_manifest_names() {
        let run = "20261203T201501Z-1a2b3c4d";
        assert_eq!(run_of_name(&format!("{run}-00001.parquet")), Some(run));
        assert_eq!(run_of_name(&format!("{run}-00012.parquet#3")), Some(run));
        assert_eq!(run_of_name(&format!("{run}.json")), Some(run));
        assert_eq!(run_of_name(&format!("{run}.json#1")), Some(run));
        assert_eq!(run_of_name("export.parquet"), None);
        assert_eq!(run_of_name(&format!("{run}-x1.parquet")), None);
        assert_eq!(run_of_name("notes.txt"), None);
        // `#` followed by non-digits is an object name, not a staging file.
        assert_eq!(run_of_name(&format!("{run}-00001.parquet#a")), None);
    }

    #[test]
    fn only_uncommitted_old_files_of_known_runs_are_orphans() {
        let ours = "20261203T201501Z-00000001";
        let theirs = "20261203T201501Z-ffffffff";
        let committed: HashSet<String> =
            [format!("t/synced_date=2026-12-03/{ours}-00001.parquet")].into();
        let known: HashSet<String> = [ours.to_string()].into();
        let before = Utc::now() - chrono::Duration::seconds(3600);
        let v = |key: String, staging: bool, age: i64| {
            classify(&cand(&key, staging, age), &committed, &known, before)
        };
        let dir = "t/synced_date=2026-12-03";
        assert_eq!(
            v(format!("{dir}/{ours}-00001.parquet"), false, 7200),
            Verdict::Committed
        );
        assert_eq!(
            v(format!("{dir}/{ours}-00002.parquet"), false, 7200),
            Verdict::Orphan
        );
        assert_eq!(
            v(format!("{dir}/{ours}-00002.parquet"), false, 60),
            Verdict::Young
        );
        assert_eq!(
            v(format!("{dir}/{theirs}-00001.parquet"), false, 7200),
            Verdict::Foreign
        );
        assert_eq!(
            v(format!("{dir}/export.parquet"), false, 7200),
            Verdict::Foreign
        );
        // The staging file of a committed key is still garbage.
        assert_eq!(
            v(format!("{dir}/{ours}-00001.parquet#1"), true, 7200),
            Verdict::Orphan
        );
        assert_eq!(
            v(format!("t/_manifests/{ours}.json"), false, 7200),
            Verdict::Ignored
        );
        assert_eq!(
            v(format!("t/_manifests/{ours}.json#2"), true, 7200),
            Verdict::Orphan
        );
        assert_eq!(
            v(format!("t/_manifests/{theirs}.json#1"), true, 7200),
            Verdict::Foreign
        );
        assert_eq!(v(format!("{dir}/notes.csv"), false, 7200), Verdict::Ignored);
    }

    #[test]
    fn date_folders_span_the_run_with_a_day_of_slack() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            date_folders("t", d("2026-03-01"), d("2026-03-02")),
            vec![
                "t/synced_date=2026-02-28",
                "t/synced_date=2026-03-01",
                "t/synced_date=2026-03-02",
                "t/synced_date=2026-03-03"
            ]
        );
        assert_eq!(
            date_folders("t", d("2026-01-01"), d("2026-03-02")),
            vec!["t"]
        );
    }
}
