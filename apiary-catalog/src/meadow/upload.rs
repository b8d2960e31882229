//! An object streamed into the store: cells and partial results. It appears whole or not at
//! all (a multipart upload on S3, a staging file renamed into place on a local disk), and it can
//! be thrown away in any state — also after a completion that failed, when object_store's own
//! `BufWriter::abort` would panic and the object may even exist (an error after the store kept
//! it).

use std::sync::Arc;

use bytes::Bytes;
use datafusion::parquet::arrow::async_writer::AsyncFileWriter;
use datafusion::parquet::errors::ParquetError;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

/// One object being written.
pub struct Upload {
    store: Arc<dyn ObjectStore>,
    key: Path,
    writer: BufWriter,
    /// Completion was attempted: the writer can no longer be aborted, only the object deleted.
    completing: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("key", &self.key).finish()
    }
}

impl Upload {
    /// Starts the object `key` of `store`; nothing of it is visible before [`Upload::finish`].
    pub fn new(store: Arc<dyn ObjectStore>, key: Path) -> Self {
        let writer = BufWriter::new(Arc::clone(&store), key.clone());
        Self {
            store,
            key,
            writer,
            completing: false,
        }
    }

    /// The object's key in the store.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Adds `bytes` to the object (buffered; a large object goes up in parts).
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Completes the object: after this returns `Ok`, it is in the store whole.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        self.completing = true;
        self.writer.flush().await?;
        self.writer.shutdown().await
    }

    /// Throws the object away, whatever state it is in (best effort: cleansing reclaims what a
    /// failure here leaves).
    pub async fn abort(mut self) {
        let outcome = if self.completing {
            match self.store.delete(&self.key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            self.writer.abort().await
        };
        if let Err(e) = outcome {
            log::warn!("could not abort the upload of {}: {e}", self.key);
        }
    }
}

impl AsyncFileWriter for Upload {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, Result<(), ParquetError>> {
        async move {
            Upload::write(self, &bs)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, Result<(), ParquetError>> {
        async move {
            self.finish()
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}
