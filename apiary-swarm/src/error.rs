//! The one error type of `apiary-swarm`.

use datafusion::error::DataFusionError;

pub type Result<T, E = SwarmError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("corrupt swarm object {key}: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("query {query} failed: {reason}")]
    QueryFailed { query: String, reason: String },

    #[error("query {query} was cancelled")]
    Cancelled { query: String },

    #[error("query {query} is over")]
    QueryOver { query: String },

    #[error("cannot listen on {addr} for the direct path: {reason}")]
    Listen { addr: String, reason: String },

    #[error("TLS of the direct path: {what}: {reason}")]
    Tls { what: String, reason: String },

    #[error("this build has no direct path (the `direct` feature): cannot listen on {addr}")]
    NoDirectPath { addr: String },

    #[error(transparent)]
    Catalog(Box<apiary_catalog::CatalogError>),

    #[error(transparent)]
    Exec(Box<apiary_exec::ExecError>),

    #[error(transparent)]
    DataFusion(Box<DataFusionError>),

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("storage error on {key}: {source}")]
    Storage {
        key: String,
        #[source]
        source: object_store::Error,
    },

    #[error(
        "the cell cache {path} is in use by another process (a node of the same name is running)"
    )]
    CacheInUse { path: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

// As the catalog's: `impl ToString` by value takes `&str`, `String` or a path alike.
#[allow(clippy::needless_pass_by_value)]
impl SwarmError {
    pub(crate) fn corrupt(key: impl ToString, reason: impl ToString) -> Self {
        SwarmError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<apiary_catalog::CatalogError> for SwarmError {
    fn from(e: apiary_catalog::CatalogError) -> Self {
        SwarmError::Catalog(Box::new(e))
    }
}

impl From<apiary_exec::ExecError> for SwarmError {
    fn from(e: apiary_exec::ExecError) -> Self {
        SwarmError::Exec(Box::new(e))
    }
}

impl From<DataFusionError> for SwarmError {
    fn from(e: DataFusionError) -> Self {
        SwarmError::DataFusion(Box::new(e))
    }
}

impl From<SwarmError> for DataFusionError {
    fn from(e: SwarmError) -> Self {
        match e {
            SwarmError::DataFusion(inner) => *inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
