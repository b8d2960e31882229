//! The wheel's error type, and how each error reaches Python.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::{PyErr, create_exception};

create_exception!(
    apiary,
    ApiaryError,
    PyException,
    "An error of Apiary or DataFusion; the message is the Rust error's."
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apiary(#[from] apiary::ApiaryError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// What was passed is not an Arrow stream or schema (no PyCapsule interface).
    #[error(
        "{what} must be Arrow {expected} (an object with {method}, such as {example}); got {found}"
    )]
    NotArrow {
        what: &'static str,
        expected: &'static str,
        method: &'static str,
        example: &'static str,
        found: String,
    },
    /// The host's datafusion-python cannot load a provider built with our datafusion-ffi.
    #[error(
        "apiary {ours} speaks datafusion-ffi {ffi}, but the session comes from datafusion-python {found}: install datafusion=={ffi}.* (pip install 'datafusion>={ffi},<{next}')",
        next = ffi + 1
    )]
    VersionMismatch {
        ours: &'static str,
        ffi: u64,
        found: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// Python raised while we waited (Ctrl-C), or a Python call failed.
    #[error(transparent)]
    Python(#[from] PyErr),
}

impl From<apiary::catalog::CatalogError> for Error {
    fn from(e: apiary::catalog::CatalogError) -> Self {
        Error::Apiary(e.into())
    }
}

impl From<apiary::swarm::SwarmError> for Error {
    fn from(e: apiary::swarm::SwarmError) -> Self {
        Error::Apiary(e.into())
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Python(e) => e,
            e @ Error::NotArrow { .. } => PyTypeError::new_err(e.to_string()),
            e => ApiaryError::new_err(e.to_string()),
        }
    }
}
