//! The tokio runtime queries run on, and waiting for it from Python.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::{PyResult, Python};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// One runtime per process, made on first use: a node's ([`apiary::node_runtime`]).
pub fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::io::Result<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(apiary::node_runtime)
        .as_ref()
        .map_err(|e| Error::Invalid(format!("cannot start Apiary's tokio runtime: {e}")))
}

/// How often a wait looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Runs `fut` to completion without the GIL. A signal (Ctrl-C) raised meanwhile drops the
/// future — which cancels a running query — and is raised in Python.
pub fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T>> + Send,
{
    let rt = runtime()?;
    py.detach(|| {
        rt.block_on(async {
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    out = &mut fut => return out.map_err(Into::into),
                    _ = tokio::time::sleep(SIGNAL_POLL) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    })
}
