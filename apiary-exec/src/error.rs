//! The one error type of `apiary-exec`.

use datafusion::error::DataFusionError;

use crate::abandonment::Diagnostic;

pub type Result<T, E = ExecError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("invalid node setting {name}: {reason}")]
    InvalidSetting { name: String, reason: String },

    #[error(
        "the colony is full: {waiting} tasks already wait for bees (queue capacity {capacity}); retry later"
    )]
    QueueFull { waiting: usize, capacity: usize },

    #[error("a task asks for {asked} bees but this node has {bees}")]
    TooManyBees { asked: usize, bees: usize },

    #[error("deadline of {deadline_ms} ms exceeded while {while_}")]
    Deadline {
        deadline_ms: u128,
        while_: &'static str,
    },

    #[error("scratch directory {path}: {source}")]
    Scratch {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Abandoned(Box<Diagnostic>),

    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl From<ExecError> for DataFusionError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::DataFusion(inner) => inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
