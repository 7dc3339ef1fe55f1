//! The Parquet lake: immutable objects on any object_store backend, written once.
//!
//! The lake is the change log of DESIGN.md §5: every checkpoint becomes one Parquet object at a
//! key no other run or retry can produce (`<stream>/synced_date=…/<run_id>-<seq>.parquet`),
//! written with create-if-absent so nothing is ever overwritten, and a failed write leaves
//! nothing behind. Which objects count is decided by the warehouse, not by listing the lake.
//!
//! Opening is two steps: the URL and options are parsed into plain data first (every mistake
//! reported before any I/O), then the store is built (for a local lake: the folder is created).

mod location;
mod writer;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use location::{CloudKind, Location};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::path::PathBuf;
use std::sync::Arc;
use writer::ObjectWriter;

/// Rows per row group: large enough for good compression and statistics, small enough that the
/// writer's buffered row group stays modest.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Bytes per row group (whichever limit is hit first).
pub const ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// Size of one multipart part, and the largest file written with a single conditional put.
/// S3 needs parts of at least 5 MiB.
pub const DEFAULT_PART_SIZE: usize = 10 * 1024 * 1024;

/// Sources are boxed to keep `Result<_, LakeError>` small.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake URL {url:?} is invalid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("lake option {key:?} for {url} is invalid: {reason}")]
    BadOption {
        url: String,
        key: String,
        reason: String,
    },
    #[error("could not set up the lake at {url}: {source}; check [lake] url and options")]
    Config {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "could not create the lake folder {path}: {source}; check the path and its permissions"
    )]
    LocalFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{key} already exists in the lake at {url}; lake objects are written once — this key \
         should be unique per run, so another process may be writing the same run"
    )]
    AlreadyExists { url: String, key: String },
    #[error(
        "{key} not found in the lake at {url}: {source}; if this is the lake root, check that \
         the bucket/container exists"
    )]
    NotFound {
        url: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "permission denied for {key} in the lake at {url}: {source}; check the credentials \
         (AWS_*/GOOGLE_*/AZURE_* environment or options) and the bucket policy or folder rights"
    )]
    PermissionDenied {
        url: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "the lake at {url} is on a read-only file system (writing {key}): {source}; remount it \
         read-write or point [lake] url at a writable folder, then rerun"
    )]
    ReadOnly {
        url: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("no space left writing {key} to the lake at {url}; free disk space and rerun")]
    DiskFull {
        url: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{op} of {key} in the lake at {url} failed: {source}")]
    Storage {
        url: String,
        key: String,
        op: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("Parquet {op} of {key} in the lake at {url} failed: {source}")]
    Parquet {
        url: String,
        key: String,
        op: &'static str,
        #[source]
        source: Box<ParquetError>,
    },
}

impl LakeError {
    /// Worth retrying later: storage failures that are neither "missing", "denied" nor "exists"
    /// (object_store has already retried timeouts and 5xx by then, so this is for the job).
    pub fn is_transient(&self) -> bool {
        matches!(self, LakeError::Storage { .. })
    }
}

/// One object in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the lake base, as given to [`Lake::write_parquet`].
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// What [`Lake::write_parquet`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub key: String,
    pub bytes: u64,
    pub rows: u64,
}

pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// Prefix of every key inside the store (empty for local and memory lakes).
    base: Path,
    /// The URL without credentials, for messages and logs.
    url: String,
    local_root: Option<PathBuf>,
    part_size: usize,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url).finish()
    }
}

impl Lake {
    /// Opens the lake at `url` (see [`location`] for the accepted forms). `options` go to the
    /// object_store builder after the standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), so
    /// they win over it. Relative local paths resolve against `base_dir`; a local folder is
    /// created if absent.
    pub fn open(
        url: &str,
        options: &[(String, String)],
        base_dir: &std::path::Path,
    ) -> Result<Lake, LakeError> {
        let shown = location::redact(url);
        let loc = location::parse(url, base_dir)?;
        match loc {
            Location::Local(dir) => {
                refuse_options(&shown, options, "a local lake")?;
                let display = format!("file://{}", dir.display());
                std::fs::create_dir_all(&dir).map_err(|source| LakeError::LocalFolder {
                    path: dir.clone(),
                    source,
                })?;
                let store =
                    LocalFileSystem::new_with_prefix(&dir).map_err(|source| LakeError::Config {
                        url: display.clone(),
                        source: Box::new(source),
                    })?;
                Ok(Lake::from_store(Arc::new(store), Path::default(), display).with_local(dir))
            }
            Location::Memory => {
                refuse_options(&shown, options, "a memory lake")?;
                Ok(Lake::from_store(
                    Arc::new(InMemory::new()),
                    Path::default(),
                    "memory://".into(),
                ))
            }
            Location::Cloud { kind, url, prefix } => {
                let base = Path::parse(&prefix).map_err(|e| LakeError::BadUrl {
                    url: shown.clone(),
                    reason: e.to_string(),
                })?;
                let store = build_cloud(kind, &url, options, &shown)?;
                Ok(Lake::from_store(store, base, shown))
            }
        }
    }

    /// A lake over any store (tests wrap stores to inject failures).
    pub fn from_store(store: Arc<dyn ObjectStore>, base: Path, url: String) -> Lake {
        Lake {
            store,
            base,
            url,
            local_root: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    fn with_local(mut self, dir: PathBuf) -> Lake {
        self.local_root = Some(dir);
        self
    }

    /// Changes the multipart part size (and single-put limit). Object stores set a minimum
    /// (S3: 5 MiB for all parts but the last).
    pub fn with_part_size(mut self, bytes: usize) -> Lake {
        self.part_size = bytes.max(1);
        self
    }

    /// The lake URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// For a local lake, its absolute folder (so DuckDB can glob it); `None` otherwise.
    pub fn local_root(&self) -> Option<PathBuf> {
        self.local_root.clone()
    }

    /// `<stream>/synced_date=YYYY-MM-DD/<run_id>-<seq:05>.parquet`, relative to the lake base.
    pub fn data_key(
        stream: &str,
        synced_date: chrono::NaiveDate,
        run_id: &str,
        seq: u32,
    ) -> String {
        format!(
            "{stream}/synced_date={}/{run_id}-{seq:05}.parquet",
            synced_date.format("%Y-%m-%d")
        )
    }

    /// `<stream>/_manifests/<run_id>.json`.
    pub fn manifest_key(stream: &str, run_id: &str) -> String {
        format!("{stream}/_manifests/{run_id}.json")
    }

    fn path(&self, key: &str) -> Path {
        let key = Path::from(key);
        if self.base.as_ref().is_empty() {
            key
        } else {
            self.base.parts().chain(key.parts()).collect()
        }
    }

    /// Writes `batches` as one Parquet object at `key` (zstd, statistics, row groups of
    /// [`ROW_GROUP_ROWS`] rows or [`ROW_GROUP_BYTES`]), never over an existing object and never
    /// leaving half an object behind. Memory stays near one row group plus a few parts.
    pub async fn write_parquet(
        &self,
        key: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<WrittenFile, LakeError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let sink = ObjectWriter::new(Arc::clone(&self.store), self.path(key), self.part_size);
        let parquet_err = |op, source| LakeError::Parquet {
            url: self.url.clone(),
            key: key.to_string(),
            op,
            source: Box::new(source),
        };
        let mut writer = AsyncArrowWriter::try_new(sink, schema, Some(props))
            .map_err(|e| parquet_err("setup", e))?;
        let mut rows = 0u64;
        let mut failure = None;
        for batch in batches {
            if let Err(e) = writer.write(batch).await {
                failure = Some(e);
                break;
            }
            rows += batch.num_rows() as u64;
        }
        if failure.is_none()
            && let Err(e) = writer.finish().await
        {
            failure = Some(e);
        }
        let mut sink = writer.into_inner();
        if let Some(e) = failure {
            // Leave nothing at the key: cancel a multipart upload in progress. If the abort fails
            // too, the parts stay invisible (no object exists until completion); say so.
            if let Err(abort_err) = sink.abort().await {
                tracing::warn!(url = %self.url, key, error = %abort_err,
                    "could not abort a failed multipart upload; its parts may linger until the store's lifecycle rule removes them");
            }
            return Err(match sink.last_error.take() {
                Some(source) => self.classify(key, "write", source),
                None => parquet_err("write", e),
            });
        }
        Ok(WrittenFile {
            key: key.to_string(),
            bytes: sink.bytes,
            rows,
        })
    }

    /// Stores a small JSON document (manifests), replacing any previous version.
    pub async fn put_json(&self, key: &str, bytes: Bytes) -> Result<(), LakeError> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.classify(key, "put", e))
    }

    /// Reads a whole Parquet object into batches (for repair, tests and small files: the object is
    /// loaded into memory first).
    pub async fn read_parquet(&self, key: &str) -> Result<Vec<RecordBatch>, LakeError> {
        let data = self.get(key).await?;
        let parquet_err = |source| LakeError::Parquet {
            url: self.url.clone(),
            key: key.to_string(),
            op: "read",
            source: Box::new(source),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(data)
            .map_err(parquet_err)?
            .build()
            .map_err(parquet_err)?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| parquet_err(ParquetError::from(e)))
    }

    /// The bytes of an object.
    pub async fn get(&self, key: &str) -> Result<Bytes, LakeError> {
        let result = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.classify(key, "get", e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.classify(key, "get", e))
    }

    /// Every object under `prefix` (a key prefix ending at a `/` boundary, e.g. `tickets`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, LakeError> {
        let full = self.path(prefix);
        let metas: Vec<_> = self
            .store
            .list(Some(&full))
            .try_collect()
            .await
            .map_err(|e| self.classify(prefix, "list", e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let rel: Path = m.location.prefix_match(&self.base)?.collect();
                Some(ObjectInfo {
                    key: rel.to_string(),
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object; deleting an absent object succeeds (sweeps may repeat).
    pub async fn delete(&self, key: &str) -> Result<(), LakeError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.classify(key, "delete", e)),
        }
    }

    /// Deletes the Parquet objects under `prefix` that `keep` does not name and that were last
    /// modified before `before`; returns the deleted keys. Manifests are left alone (runs rewrite
    /// them from the warehouse). Listing only finds candidates: what is kept is decided by the
    /// caller from the warehouse, so a store whose listing lags can only leave garbage, never
    /// delete a committed file.
    pub async fn sweep(
        &self,
        prefix: &str,
        keep: &std::collections::HashSet<String>,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, LakeError> {
        let mut deleted = Vec::new();
        for o in self.list(prefix).await? {
            if o.key.ends_with(".parquet")
                && !o.key.contains("/_manifests/")
                && !keep.contains(&o.key)
                && o.last_modified < before
            {
                self.delete(&o.key).await?;
                deleted.push(o.key);
            }
        }
        Ok(deleted)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, LakeError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.classify(key, "head", e)),
        }
    }

    /// Maps an object_store error to what the operator can act on.
    fn classify(&self, key: &str, op: &'static str, source: object_store::Error) -> LakeError {
        let url = self.url.clone();
        let key = key.to_string();
        let kind = io_kind(&source);
        let source = Box::new(source);
        match *source {
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
                if op == "write" =>
            {
                LakeError::AlreadyExists { url, key }
            }
            object_store::Error::NotFound { .. } => LakeError::NotFound { url, key, source },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                LakeError::PermissionDenied { url, key, source }
            }
            _ => match kind {
                Some(std::io::ErrorKind::PermissionDenied) => {
                    LakeError::PermissionDenied { url, key, source }
                }
                Some(std::io::ErrorKind::ReadOnlyFilesystem) => {
                    LakeError::ReadOnly { url, key, source }
                }
                Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => {
                    LakeError::DiskFull { url, key, source }
                }
                _ => LakeError::Storage {
                    url,
                    key,
                    op,
                    source,
                },
            },
        }
    }
}

/// The kind of the first `io::Error` in an error's source chain (local stores wrap them).
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

fn refuse_options(url: &str, options: &[(String, String)], what: &str) -> Result<(), LakeError> {
    match options.first() {
        None => Ok(()),
        Some((key, _)) => Err(LakeError::BadOption {
            url: url.to_string(),
            key: key.clone(),
            reason: format!("{what} takes no options"),
        }),
    }
}

/// Builds a cloud store: standard environment first, then the URL, then the options. Building
/// does no I/O (credentials are fetched on first use).
fn build_cloud(
    kind: CloudKind,
    url: &url::Url,
    options: &[(String, String)],
    shown: &str,
) -> Result<Arc<dyn ObjectStore>, LakeError> {
    let bad_key = |key: &str| LakeError::BadOption {
        url: shown.to_string(),
        key: key.to_string(),
        reason: "not a setting of this store (see object_store's config keys, e.g. aws_region, \
                 aws_endpoint, aws_allow_http)"
            .to_string(),
    };
    let config_err = |source| LakeError::Config {
        url: shown.to_string(),
        source: Box::new(source),
    };
    // The URL string handed to builders carries no userinfo or query (parse() refused those).
    let url_text = url.to_string();
    let store: Arc<dyn ObjectStore> = match kind {
        CloudKind::S3 => {
            // Options are applied with `with_config` only: `with_client_options` would reset
            // `allow_http` (seen with object_store 0.14).
            let mut b = AmazonS3Builder::from_env().with_url(url_text);
            for (k, v) in options {
                let key: AmazonS3ConfigKey =
                    k.to_ascii_lowercase().parse().map_err(|_| bad_key(k))?;
                b = b.with_config(key, v.clone());
            }
            Arc::new(b.build().map_err(config_err)?)
        }
        CloudKind::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url_text);
            for (k, v) in options {
                let key: GoogleConfigKey =
                    k.to_ascii_lowercase().parse().map_err(|_| bad_key(k))?;
                b = b.with_config(key, v.clone());
            }
            Arc::new(b.build().map_err(config_err)?)
        }
        CloudKind::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url_text);
            for (k, v) in options {
                let key: AzureConfigKey = k.to_ascii_lowercase().parse().map_err(|_| bad_key(k))?;
                b = b.with_config(key, v.clone());
            }
            Arc::new(b.build().map_err(config_err)?)
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests;
