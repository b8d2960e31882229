//! Apiary's own small runtime for storage I/O.
//!
//! DataFusion calls some catalog methods synchronously (`register_table`, `register_schema`,
//! `register_catalog`, table functions) although Apiary must reach storage to answer them. The
//! work runs here, on Apiary's runtime, while the caller waits without stalling its own async
//! workers: on a multi-threaded Tokio runtime the wait is wrapped in `block_in_place`, so Tokio
//! moves the caller's other tasks elsewhere. S3 connections are also driven by this runtime
//! (see [`crate::Meadow::open_with`]), so they outlive any one caller's runtime.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::error::{CatalogError, Result};

/// A small multi-threaded Tokio runtime owned by Apiary. Dropping it never blocks.
#[derive(Debug)]
pub struct IoRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl IoRuntime {
    /// Threads of the runtime: I/O waits, not computation, so two are plenty.
    pub const THREADS: usize = 2;

    /// Starts the runtime (threads named `apiary-io`).
    pub fn new() -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(Self::THREADS)
            .thread_name("apiary-io")
            .enable_all()
            .build()
            .map_err(|source| CatalogError::Io {
                path: "apiary-io runtime".into(),
                source,
            })?;
        let handle = runtime.handle().clone();
        Ok(Arc::new(Self {
            runtime: Some(runtime),
            handle,
        }))
    }

    /// A handle to spawn on the runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` on this runtime and waits for it from synchronous code.
    pub fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.handle.spawn(fut);
        let wait = move || futures::executor::block_on(task);
        let joined = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            // A current-thread runtime (or none): blocking is unavoidable, and safe, because the
            // work itself runs on Apiary's threads.
            _ => wait(),
        };
        Ok(joined?)
    }

    /// Runs `fut` on this runtime and awaits it from any async context.
    pub async fn spawn<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.handle.spawn(fut).await?)
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // `Runtime`'s own drop blocks, which panics inside an async context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_from_plain_threads_and_from_both_runtime_flavors() {
        let io = IoRuntime::new().unwrap();
        assert_eq!(io.block_on(async { 1 + 1 }).unwrap(), 2);
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let io2 = Arc::clone(&io);
        assert_eq!(
            current.block_on(async move { io2.block_on(async { 3 }).unwrap() }),
            3
        );
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let io3 = Arc::clone(&io);
        assert_eq!(
            multi.block_on(async move { io3.block_on(async { 4 }).unwrap() }),
            4
        );
        // Dropping the last handle inside an async context does not panic.
        multi.block_on(async move { drop(io) });
    }
}
