//! The one error type of `apiary-catalog`.
//!
//! Every variant names the thing that went wrong (a key, a name, a column) so that a user can act on
//! the message alone. At the DataFusion boundary it becomes a `DataFusionError::External`.

use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;

/// Result alias used throughout the crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What kind of namespace object a name refers to, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hive,
    Box,
    Frame,
    Column,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Hive => "hive",
            Kind::Box => "box",
            Kind::Frame => "frame",
            Kind::Column => "column",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        kind: Kind,
        name: String,
        reason: &'static str,
    },

    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("storage {url} cannot be opened: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: object_store::Error,
    },

    #[error(
        "storage {url} cannot be opened: no S3 credentials were found. Set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or give \
         access_key_id=…&secret_access_key=… in the URL, or skip_signature=true for a public \
         bucket; on EC2 the instance role is used, and its metadata service did not answer: \
         {source}"
    )]
    NoCredentials {
        url: String,
        #[source]
        source: object_store::Error,
    },

    #[error("storage {url} cannot be used: {reason}")]
    UnsupportedFileSystem { url: String, reason: String },

    #[error("{kind} {name} not found")]
    NotFound { kind: Kind, name: String },

    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: String },

    #[error(
        "{kind} {name} cannot be created: it differs only in case from the existing {kind} {existing}"
    )]
    CaseCollision {
        kind: Kind,
        name: String,
        existing: String,
    },

    #[error("{kind} {name} is not empty ({detail}); drop its contents first or use CASCADE")]
    NotEmpty {
        kind: Kind,
        name: String,
        detail: String,
    },

    #[error("storage error on {key}: {source}")]
    Storage {
        key: String,
        #[source]
        source: object_store::Error,
    },

    #[error("corrupt object {key}: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("ledger of frame {frame} has no version {version} (latest is {latest})")]
    NoSuchVersion {
        frame: String,
        version: u64,
        latest: u64,
    },

    #[error(
        "ledger of frame {frame} has no version {version}: it was removed by cleanup; the oldest readable version is {oldest}"
    )]
    VersionExpired {
        frame: String,
        version: u64,
        oldest: u64,
    },

    #[error("frame {frame} has no version committed at or before {at}; its oldest is {oldest}")]
    NoVersionAtTime {
        frame: String,
        at: String,
        oldest: String,
    },

    #[error(transparent)]
    Conflict(Box<Conflict>),

    #[error(
        "commit conflict on frame {frame}: version {version} (by {winner}) changed the frame's schema or properties first; this {attempted} was computed from those before it: re-read the frame and try again"
    )]
    SchemaChanged {
        frame: String,
        version: u64,
        winner: String,
        attempted: String,
    },

    #[error(
        "the commit to {target} at version {version} may or may not have landed ({reason}); nothing it wrote was removed: re-read {target} to see whether it is there"
    )]
    CommitUnknown {
        target: String,
        version: u64,
        reason: String,
    },

    #[error("{what} cannot be used by this build of Apiary: {detail}; upgrade Apiary")]
    UnsupportedProtocol { what: String, detail: String },

    #[error(
        "frame {frame} was dropped or replaced since this statement resolved it (it writes to frame id {id}; the name now {now}){}",
        if *committed { "; the rows were committed to the dropped frame: apiary_undrop brings it back" } else { "; nothing was committed" }
    )]
    FrameReplaced {
        frame: String,
        id: String,
        now: String,
        committed: bool,
    },

    #[error(
        "gave up committing to {target} after {attempts} attempts in {elapsed_ms} ms of lost races (retry budget exhausted; raise it in the commit options)"
    )]
    RetriesExhausted {
        target: String,
        attempts: u32,
        elapsed_ms: u128,
    },

    #[error("column {column}: frame type {expected} but input has {found}; {reason}")]
    TypeMismatch {
        column: String,
        expected: DataType,
        found: DataType,
        reason: &'static str,
    },

    #[error("column {column} ({expected}, not nullable) is missing from the input")]
    MissingColumn { column: String, expected: DataType },

    #[error("column {column} ({found}) is not in the frame schema of {frame}")]
    ExtraColumn {
        column: String,
        found: DataType,
        frame: String,
    },

    #[error("column {column} is not nullable but the input has {count} null value(s)")]
    NullsInNonNullable { column: String, count: usize },

    #[error("partition column {column} has a null value; partition values must not be null")]
    NullPartitionValue { column: String },

    #[error(
        "partition column {column} has type {data_type}, which cannot partition (use an integer, string, boolean, date or timestamp column)"
    )]
    UnsupportedPartitionType { column: String, data_type: DataType },

    #[error("partition column {column} is not a column of the frame schema")]
    UnknownPartitionColumn { column: String },

    #[error("frame schema: {0}")]
    InvalidSchema(String),

    #[error("type {0} cannot be stored in a frame schema yet")]
    UnsupportedType(DataType),

    #[error("cell {path} of frame {frame} is missing from storage: {source}")]
    MissingCell {
        frame: String,
        path: String,
        #[source]
        source: object_store::Error,
    },

    #[error("write to {frame} refused: {reason}")]
    Backpressure { frame: String, reason: String },

    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: String, reason: String },

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A commit lost to a winner that already removed or rewrote cells it removes.
#[derive(Debug, thiserror::Error)]
#[error(
    "commit conflict on frame {frame}: version {version} (by {winner}, {operation}) already removed or rewrote cell(s) {cells:?} that this {attempted} removes; re-read the frame and try again"
)]
pub struct Conflict {
    pub frame: String,
    pub version: u64,
    pub winner: String,
    pub operation: String,
    pub attempted: String,
    pub cells: Vec<String>,
}

// The constructors take `impl ToString` by value so that callers pass `&str`, `String` or a
// path alike.
#[allow(clippy::needless_pass_by_value)]
impl CatalogError {
    pub(crate) fn storage(key: impl ToString, source: object_store::Error) -> Self {
        CatalogError::Storage {
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn corrupt(key: impl ToString, reason: impl ToString) -> Self {
        CatalogError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn not_found(kind: Kind, name: impl ToString) -> Self {
        CatalogError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    pub(crate) fn already_exists(kind: Kind, name: impl ToString) -> Self {
        CatalogError::AlreadyExists {
            kind,
            name: name.to_string(),
        }
    }

    /// False when a commit may have landed although it reported this error: what it wrote must
    /// then be kept (cleansing reclaims it if it turns out unused).
    pub fn proves_nothing_committed(&self) -> bool {
        !matches!(
            self,
            CatalogError::CommitUnknown { .. }
                | CatalogError::FrameReplaced {
                    committed: true,
                    ..
                }
        )
    }

    /// True when retrying the same operation later may succeed (lost races, transient storage).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CatalogError::RetriesExhausted { .. } | CatalogError::Backpressure { .. }
        )
    }
}

impl From<CatalogError> for DataFusionError {
    fn from(e: CatalogError) -> Self {
        match e {
            // Keep DataFusion's own errors as they are (e.g. ResourcesExhausted stays matchable).
            CatalogError::DataFusion(inner) => inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
