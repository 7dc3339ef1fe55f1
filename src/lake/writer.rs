//! An [`AsyncFileWriter`] that writes one object once: never over an existing one, never half.
//!
//! object_store's `BufWriter` would do for memory, but its single-put path overwrites. This writer
//! buffers up to one part: a file that ends within it is stored with one `PutMode::Create` put
//! (atomic create-if-absent). A larger file becomes a multipart upload, which object_store 0.14
//! cannot make conditional; we check that the key is absent before starting, and rely on keys
//! being unique per run and sequence number (run ids are fresh per run; a run lock keeps two runs
//! of one warehouse apart). A multipart upload becomes visible only on completion, and
//! [`ObjectWriter::abort`] removes its parts, so a failed write leaves no object at the key.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Parts in flight at once: memory stays ≤ (this + 1) parts.
const MAX_PARTS_IN_FLIGHT: usize = 2;

pub(crate) struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    state: State,
    /// The object_store error behind the last failure, kept so the caller can classify it
    /// (parquet's error type only carries it as an opaque box).
    pub(crate) last_error: Option<object_store::Error>,
    pub(crate) bytes: u64,
}

enum State {
    Buffer(Pending),
    Multipart(Multipart),
    Done,
}

/// Bytes written but not sent yet, cut into parts of an exact size.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    /// The first `n` bytes (all of them if fewer), without copying.
    fn take(&mut self, n: usize) -> PutPayload {
        let mut need = n.min(self.len);
        self.len -= need;
        let mut out = Vec::new();
        while need > 0 {
            let Some(mut c) = self.chunks.pop_front() else {
                break;
            };
            if c.len() > need {
                self.chunks.push_front(c.split_off(need));
            }
            need -= c.len();
            out.push(c);
        }
        out.into_iter().collect()
    }
}

/// A multipart upload and its parts in flight. On failure every part in flight is waited for
/// before the upload is aborted: a part that finishes after the abort would otherwise linger on
/// the store (S3 documents this race; s3s-fs shows it).
struct Multipart {
    upload: Box<dyn MultipartUpload>,
    pending: Pending,
    inflight: JoinSet<object_store::Result<()>>,
}

impl Multipart {
    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.inflight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(object_store::Error::Generic {
                store: "highwater",
                source: format!("a part upload task failed: {join}").into(),
            }),
        }
    }

    /// Sends every whole part buffered (and the rest too when `last`), keeping at most
    /// [`MAX_PARTS_IN_FLIGHT`] parts in flight.
    async fn send(&mut self, part_size: usize, last: bool) -> object_store::Result<()> {
        while self.pending.len >= part_size || (last && self.pending.len > 0) {
            while self.inflight.len() >= MAX_PARTS_IN_FLIGHT {
                self.join_one().await?;
            }
            let part = self.upload.put_part(self.pending.take(part_size));
            self.inflight.spawn(part);
        }
        Ok(())
    }

    async fn complete(&mut self, part_size: usize) -> object_store::Result<()> {
        self.send(part_size, true).await?;
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        self.upload.complete().await.map(|_| ())
    }

    async fn abort(mut self) -> object_store::Result<()> {
        while self.inflight.join_next().await.is_some() {}
        self.upload.abort().await
    }
}

impl ObjectWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, part_size: usize) -> Self {
        ObjectWriter {
            store,
            path,
            part_size,
            state: State::Buffer(Pending::default()),
            last_error: None,
            bytes: 0,
        }
    }

    /// Cancels a multipart upload in progress (after its parts in flight have ended, removing
    /// its parts); a buffered file was never sent, so there is nothing to undo.
    pub(crate) async fn abort(&mut self) -> Result<(), object_store::Error> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Multipart(upload) => upload.abort().await,
            State::Buffer(_) | State::Done => Ok(()),
        }
    }

    fn fail(&mut self, e: object_store::Error) -> ParquetError {
        let msg = e.to_string();
        self.last_error = Some(e);
        ParquetError::External(msg.into())
    }

    async fn write_bytes(&mut self, bs: Bytes) -> Result<(), ParquetError> {
        self.bytes += bs.len() as u64;
        let part_size = self.part_size;
        let result = match &mut self.state {
            State::Multipart(m) => {
                m.pending.push(bs);
                m.send(part_size, false).await
            }
            State::Buffer(buf) => {
                buf.push(bs);
                if buf.len < part_size {
                    return Ok(());
                }
                let pending = std::mem::take(buf);
                match start_multipart(Arc::clone(&self.store), self.path.clone()).await {
                    Ok(upload) => {
                        let mut m = Multipart {
                            upload,
                            pending,
                            inflight: JoinSet::new(),
                        };
                        let sent = m.send(part_size, false).await;
                        self.state = State::Multipart(m);
                        sent
                    }
                    Err(e) => Err(e),
                }
            }
            State::Done => {
                return Err(ParquetError::General(
                    "write after the object was completed or aborted".into(),
                ));
            }
        };
        result.map_err(|e| self.fail(e))
    }

    async fn finish(&mut self) -> Result<(), ParquetError> {
        let part_size = self.part_size;
        let result = match &mut self.state {
            State::Buffer(buf) => {
                let payload = buf.take(buf.len);
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                let r = self
                    .store
                    .put_opts(&self.path, payload, opts)
                    .await
                    .map(|_| ());
                self.state = State::Done;
                r
            }
            // On failure the upload stays in place for `abort`, which the caller runs.
            State::Multipart(m) => match m.complete(part_size).await {
                Ok(()) => {
                    self.state = State::Done;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            State::Done => Ok(()),
        };
        result.map_err(|e| self.fail(e))
    }
}

/// The check-before-multipart described in the module doc, then the upload. Free functions so
/// the futures hold no `&ObjectWriter` (its upload is not `Sync`).
async fn start_multipart(
    store: Arc<dyn ObjectStore>,
    path: Path,
) -> object_store::Result<Box<dyn MultipartUpload>> {
    refuse_existing(store.as_ref(), &path).await?;
    store.put_multipart(&path).await
}

/// The check-before-multipart described in the module doc. A free function so the future holds
/// no `&ObjectWriter` (its upload is not `Sync`).
async fn refuse_existing(store: &dyn ObjectStore, path: &Path) -> Result<(), object_store::Error> {
    match store.head(path).await {
        Ok(_) => Err(object_store::Error::AlreadyExists {
            path: path.to_string(),
            source: "an object already exists at this key".into(),
        }),
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl AsyncFileWriter for ObjectWriter {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.write_bytes(bs).boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.finish().boxed()
    }
}
