//! The one error type of `apiary-swarm`.

use datafusion::error::DataFusionError;

/// Result alias used throughout the crate.
pub type Result<T, E = SwarmError> = std::result::Result<T, E>;

/// What the swarm can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// A swarm object (heartbeat, manifest, claim, …) could not be read.
    #[error("corrupt swarm object {key}: {reason}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A distributed query failed (a task abandoned, a worker's error).
    #[error("query {query} failed: {reason}")]
    QueryFailed {
        /// The query's id.
        query: String,
        /// Why.
        reason: String,
    },

    /// A distributed query was cancelled (its `finished.json` says so).
    #[error("query {query} was cancelled")]
    Cancelled {
        /// The query's id.
        query: String,
    },

    /// A task's query ended before the task ran.
    #[error("query {query} is over")]
    QueryOver {
        /// The query's id.
        query: String,
    },

    /// The direct path's worker could not bind its address.
    #[error("cannot listen on {addr} for the direct path: {reason}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        reason: String,
    },

    /// The direct path's TLS files could not be read or used.
    #[error("TLS of the direct path: {what}: {reason}")]
    Tls {
        /// The file or setting.
        what: String,
        /// Why.
        reason: String,
    },

    /// `--listen` on a build without the `direct` feature.
    #[error("this build has no direct path (the `direct` feature): cannot listen on {addr}")]
    NoDirectPath {
        /// The address asked for.
        addr: String,
    },

    /// From the storage and catalog layer.
    #[error(transparent)]
    Catalog(Box<apiary_catalog::CatalogError>),

    /// From the bees.
    #[error(transparent)]
    Exec(Box<apiary_exec::ExecError>),

    /// From DataFusion.
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),

    /// From Arrow (a partial result's IPC).
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// The meadow's store failed on an object.
    #[error("storage error on {key}: {source}")]
    Storage {
        /// The object's key.
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// Another process holds the cell cache's folder.
    #[error(
        "the cell cache {path} is in use by another process (a node of the same name is running)"
    )]
    CacheInUse {
        /// The folder.
        path: String,
    },

    /// A local file or folder (the cell cache) failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
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
