//! The facade's error type: the errors of the crates it wires, as they are.

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(Box<apiary_catalog::Error>),
    #[error(transparent)]
    Exec(Box<apiary_exec::ExecError>),
    #[error(transparent)]
    Swarm(Box<apiary_swarm::SwarmError>),
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),
    /// The status server could not start (its address, its recorder).
    #[error("status server: {0}")]
    Status(String),
}

impl From<apiary_swarm::SwarmError> for Error {
    fn from(e: apiary_swarm::SwarmError) -> Self {
        Error::Swarm(Box::new(e))
    }
}

impl From<apiary_exec::ExecError> for Error {
    fn from(e: apiary_exec::ExecError) -> Self {
        Error::Exec(Box::new(e))
    }
}

impl From<apiary_catalog::Error> for Error {
    fn from(e: apiary_catalog::Error) -> Self {
        Error::Catalog(Box::new(e))
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Catalog(c) => (*c).into(),
            Error::Exec(x) => (*x).into(),
            Error::Swarm(x) => (*x).into(),
            Error::DataFusion(d) => *d,
            Error::Status(s) => DataFusionError::External(s.into()),
        }
    }
}
