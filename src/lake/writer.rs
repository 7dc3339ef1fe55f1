//! An [`AsyncFileWriter`] that writes one object once: never over an existing one, never half.
//!
//! object_store's `BufWriter` would do for memory, but its single-put path overwrites. This writer
//! buffers up to one part: a file that ends within it is stored with one `PutMode::Create` put
//! (atomic create-if-absent). A larger file becomes a multipart upload, which object_store 0.14
//! cannot make conditional; we check that the key is absent before starting, and rely on keys
//! being unique per run and sequence number (run ids are fresh per run; a run lock keeps two runs
//! of one warehouse apart). A multipart upload becomes visible only on completion, and
//! [`ObjectWriter::abort`] removes its parts, so a failed write leaves no object at the key.

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::WriteMultipart;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayloadMut};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use std::sync::Arc;

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
    Buffer(PutPayloadMut),
    Multipart(WriteMultipart),
    Done,
}

impl ObjectWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, part_size: usize) -> Self {
        ObjectWriter {
            store,
            path,
            part_size,
            state: State::Buffer(PutPayloadMut::new()),
            last_error: None,
            bytes: 0,
        }
    }

    /// Cancels a multipart upload in progress (removing its parts); a buffered file was never
    /// sent, so there is nothing to undo.
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
        match &mut self.state {
            State::Multipart(upload) => {
                if let Err(e) = upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                    return Err(self.fail(e));
                }
                upload.put(bs);
                Ok(())
            }
            State::Buffer(buf) => {
                buf.push(bs);
                if buf.content_length() < self.part_size {
                    return Ok(());
                }
                let buffered = std::mem::take(buf).freeze();
                if let Err(e) = refuse_existing(self.store.as_ref(), &self.path).await {
                    return Err(self.fail(e));
                }
                let upload = match self.store.put_multipart(&self.path).await {
                    Ok(u) => u,
                    Err(e) => return Err(self.fail(e)),
                };
                let mut upload = WriteMultipart::new_with_chunk_size(upload, self.part_size);
                for chunk in buffered {
                    upload.put(chunk);
                }
                self.state = State::Multipart(upload);
                Ok(())
            }
            State::Done => Err(ParquetError::General(
                "write after the object was completed or aborted".into(),
            )),
        }
    }

    async fn finish(&mut self) -> Result<(), ParquetError> {
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Buffer(buf) => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                self.store
                    .put_opts(&self.path, buf.freeze(), opts)
                    .await
                    .map(|_| ())
            }
            // `finish` aborts the upload itself when a part or the completion fails.
            State::Multipart(upload) => upload.finish().await.map(|_| ()),
            State::Done => Ok(()),
        };
        result.map_err(|e| self.fail(e))
    }
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
