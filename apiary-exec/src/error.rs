//! The one error type of `apiary-exec`.

use datafusion::error::DataFusionError;

use crate::abandonment::Diagnostic;

/// Result alias used throughout the crate.
pub type Result<T, E = ExecError> = std::result::Result<T, E>;

/// What the bees can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A node setting is out of range or unreadable.
    #[error("invalid node setting {name}: {reason}")]
    InvalidSetting {
        /// The setting.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// Too many tasks already wait for bees.
    #[error(
        "the colony is full: {waiting} tasks already wait for bees (queue capacity {capacity}); retry later"
    )]
    QueueFull {
        /// Tasks waiting.
        waiting: usize,
        /// How many may wait.
        capacity: usize,
    },

    /// A task asked for more bees than the node has.
    #[error("a task asks for {asked} bees but this node has {bees}")]
    TooManyBees {
        /// Bees asked for.
        asked: usize,
        /// Bees on the node.
        bees: usize,
    },

    /// The query's deadline (`apiary.timeout_ms`) passed.
    #[error("deadline of {deadline_ms} ms exceeded while {while_}")]
    Deadline {
        /// The deadline, in milliseconds.
        deadline_ms: u128,
        /// What the query was doing then (waiting for bees, running).
        while_: &'static str,
    },

    /// A bee's scratch folder could not be made or cleared.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A task failed on too many bees; the diagnostic lists every failure.
    #[error(transparent)]
    Abandoned(Box<Diagnostic>),

    /// An error of DataFusion, from a plan that ran in a chamber.
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
