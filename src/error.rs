//! The facade's error type: the errors of the crates it wires, as they are.

use datafusion::error::DataFusionError;

/// Result alias of the facade.
pub type Result<T, E = ApiaryError> = std::result::Result<T, E>;

/// The facade's error: the error of the crate that failed, as it was.
#[derive(Debug, thiserror::Error)]
pub enum ApiaryError {
    /// From the storage and catalog layer.
    #[error(transparent)]
    Catalog(Box<apiary_catalog::CatalogError>),
    /// From the bees.
    #[error(transparent)]
    Exec(Box<apiary_exec::ExecError>),
    /// From the swarm.
    #[error(transparent)]
    Swarm(Box<apiary_swarm::SwarmError>),
    /// From DataFusion.
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),
    /// The status server could not start (its address, its recorder).
    #[error("status server: {0}")]
    Status(String),
}

impl From<apiary_swarm::SwarmError> for ApiaryError {
    fn from(e: apiary_swarm::SwarmError) -> Self {
        ApiaryError::Swarm(Box::new(e))
    }
}

impl From<apiary_exec::ExecError> for ApiaryError {
    fn from(e: apiary_exec::ExecError) -> Self {
        ApiaryError::Exec(Box::new(e))
    }
}

impl From<apiary_catalog::CatalogError> for ApiaryError {
    fn from(e: apiary_catalog::CatalogError) -> Self {
        ApiaryError::Catalog(Box::new(e))
    }
}

impl From<DataFusionError> for ApiaryError {
    fn from(e: DataFusionError) -> Self {
        ApiaryError::DataFusion(Box::new(e))
    }
}

impl From<ApiaryError> for DataFusionError {
    fn from(e: ApiaryError) -> Self {
        match e {
            ApiaryError::Catalog(c) => (*c).into(),
            ApiaryError::Exec(x) => (*x).into(),
            ApiaryError::Swarm(x) => (*x).into(),
            ApiaryError::DataFusion(d) => *d,
            ApiaryError::Status(s) => DataFusionError::External(s.into()),
        }
    }
}
