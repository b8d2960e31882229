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
    /// A hive (a catalog).
    Hive,
    /// A box (a schema) of a hive.
    Box,
    /// A frame (a table) of a box.
    Frame,
    /// A column of a frame.
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

/// What the storage and catalog layer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A name is not a plain identifier, or a frame is not given as `hive.box.frame`.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What the name is of.
        kind: Kind,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A meadow's URL cannot be parsed, or its local folder cannot be made a root.
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },

    /// The meadow's store cannot be reached on opening (no bucket, no permission).
    #[error("storage {url} cannot be opened: {source}")]
    Unreachable {
        /// The meadow's URL.
        url: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// An S3 meadow found no credentials and the instance role's metadata service did not answer.
    #[error(
        "storage {url} cannot be opened: no S3 credentials were found. Set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or give \
         access_key_id=…&secret_access_key=… in the URL, or skip_signature=true for a public \
         bucket; on EC2 the instance role is used, and its metadata service did not answer: \
         {source}"
    )]
    NoCredentials {
        /// The meadow's URL.
        url: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// A local meadow's file system cannot hard-link, which conditional creates need.
    #[error("storage {url} cannot be used: {reason}")]
    UnsupportedFileSystem {
        /// The meadow's URL.
        url: String,
        /// Why.
        reason: String,
    },

    /// No hive, box or frame has that name.
    #[error("{kind} {name} not found")]
    NotFound {
        /// What was looked for.
        kind: Kind,
        /// The name, qualified (`hive.box.frame` for a frame).
        name: String,
    },

    /// A hive, box or frame of that name exists already.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// What was to be created.
        kind: Kind,
        /// The name, qualified (`hive.box.frame` for a frame).
        name: String,
    },

    /// A new name equals an existing one of the same namespace but for case.
    #[error(
        "{kind} {name} cannot be created: it differs only in case from the existing {kind} {existing}"
    )]
    CaseCollision {
        /// What was to be created.
        kind: Kind,
        /// The new name.
        name: String,
        /// The existing name it collides with.
        existing: String,
    },

    /// A hive with boxes, or a box with frames, was dropped without `CASCADE`.
    #[error("{kind} {name} is not empty ({detail}); drop its contents first or use CASCADE")]
    NotEmpty {
        /// What was to be dropped.
        kind: Kind,
        /// The name, qualified (`hive.box` for a box).
        name: String,
        /// What it still holds.
        detail: String,
    },

    /// The meadow's store failed on an object.
    #[error("storage error on {key}: {source}")]
    Storage {
        /// The object's key.
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// An object of the meadow (a log entry, a checkpoint, a marker) is malformed or missing.
    #[error("corrupt object {key}: {reason}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A version newer than the ledger's latest was asked for.
    #[error("ledger of frame {frame} has no version {version} (latest is {latest})")]
    NoSuchVersion {
        /// The frame, `hive.box.frame`.
        frame: String,
        /// The version asked for.
        version: u64,
        /// The ledger's latest version.
        latest: u64,
    },

    /// A version older than the oldest readable one was asked for: cleansing removed it.
    #[error(
        "ledger of frame {frame} has no version {version}: it was removed by cleanup; the oldest readable version is {oldest}"
    )]
    VersionExpired {
        /// The frame, `hive.box.frame`.
        frame: String,
        /// The version asked for.
        version: u64,
        /// The oldest version still readable.
        oldest: u64,
    },

    /// Time travel to a time before the oldest entry still in the ledger.
    #[error("frame {frame} has no version committed at or before {at}; its oldest is {oldest}")]
    NoVersionAtTime {
        /// The frame, `hive.box.frame`.
        frame: String,
        /// The time asked for (RFC 3339).
        at: String,
        /// The oldest entry still stored and when it was committed, or `none`.
        oldest: String,
    },

    /// A commit lost to one that already removed or rewrote cells it removes.
    #[error(transparent)]
    Conflict(Box<Conflict>),

    /// A schema or properties change lost to another one (computed from what the winner changed).
    #[error(
        "commit conflict on frame {frame}: version {version} (by {winner}) changed the frame's schema or properties first; this {attempted} was computed from those before it: re-read the frame and try again"
    )]
    SchemaChanged {
        /// The frame, `hive.box.frame`.
        frame: String,
        /// The winner's version.
        version: u64,
        /// The winner's writer.
        winner: String,
        /// This commit's operation.
        attempted: String,
    },

    /// The store's answer to a commit was lost and reading back could not tell whether it landed.
    #[error(
        "the commit to {target} at version {version} may or may not have landed ({reason}); nothing it wrote was removed: re-read {target} to see whether it is there"
    )]
    CommitUnknown {
        /// The log committed to (`the registry`, `ledger of hive.box.frame`).
        target: String,
        /// The version the commit may hold.
        version: u64,
        /// Why it is unknown.
        reason: String,
    },

    /// A log's protocol needs a version or feature this build does not know.
    #[error("{what} cannot be used by this build of Apiary: {detail}; upgrade Apiary")]
    UnsupportedProtocol {
        /// The log (`the registry`, `frame hive.box.frame`).
        what: String,
        /// The version or feature it lacks.
        detail: String,
    },

    /// A write's frame name was dropped or given to another frame while the write ran.
    #[error(
        "frame {frame} was dropped or replaced since this statement resolved it (it writes to frame id {id}; the name now {now}){}",
        if *committed { "; the rows were committed to the dropped frame: apiary_undrop brings it back" } else { "; nothing was committed" }
    )]
    FrameReplaced {
        /// The frame, `hive.box.frame`.
        frame: String,
        /// The id of the frame written to.
        id: String,
        /// What the name is now (`names frame id …`, `is free`).
        now: String,
        /// Whether the write landed in the frame that lost the name.
        committed: bool,
    },

    /// A commit lost the race more often, or for longer, than its retry policy allows.
    #[error(
        "gave up committing to {target} after {attempts} attempts in {elapsed_ms} ms of lost races (retry budget exhausted; raise it in the commit options)"
    )]
    RetriesExhausted {
        /// The log committed to (`the registry`, `ledger of hive.box.frame`).
        target: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent, in milliseconds.
        elapsed_ms: u128,
    },

    /// An input column's type cannot be written into the frame's column without loss.
    #[error("column {column}: frame type {expected} but input has {found}; {reason}")]
    TypeMismatch {
        /// The column.
        column: String,
        /// The frame's type.
        expected: DataType,
        /// The input's type.
        found: DataType,
        /// Why it does not fit.
        reason: &'static str,
    },

    /// A non-nullable column of the frame is missing from the input.
    #[error("column {column} ({expected}, not nullable) is missing from the input")]
    MissingColumn {
        /// The column.
        column: String,
        /// The frame's type.
        expected: DataType,
    },

    /// The input has a column the frame lacks.
    #[error("column {column} ({found}) is not in the frame schema of {frame}")]
    ExtraColumn {
        /// The column.
        column: String,
        /// The input's type.
        found: DataType,
        /// The frame, `hive.box.frame`.
        frame: String,
    },

    /// The input has nulls in a column the frame declares not nullable.
    #[error("column {column} is not nullable but the input has {count} null value(s)")]
    NullsInNonNullable {
        /// The column.
        column: String,
        /// Nulls found.
        count: usize,
    },

    /// A row to write has a null partition value.
    #[error("partition column {column} has a null value; partition values must not be null")]
    NullPartitionValue {
        /// The partition column.
        column: String,
    },

    /// A frame is partitioned by a column of a type that cannot name a folder.
    #[error(
        "partition column {column} has type {data_type}, which cannot partition (use an integer, string, boolean, date or timestamp column)"
    )]
    UnsupportedPartitionType {
        /// The partition column.
        column: String,
        /// Its type.
        data_type: DataType,
    },

    /// A frame is partitioned by a column its schema lacks.
    #[error("partition column {column} is not a column of the frame schema")]
    UnknownPartitionColumn {
        /// The partition column.
        column: String,
    },

    /// A frame's schema, partition columns or properties are refused; the message says why.
    #[error("frame schema: {0}")]
    InvalidSchema(String),

    /// A column type that a frame schema's JSON cannot hold yet.
    #[error("type {0} cannot be stored in a frame schema yet")]
    UnsupportedType(DataType),

    /// A write was refused by its [`WriteAdmission`](crate::WriteAdmission) (the colony is critical).
    #[error("write to {frame} refused: {reason}")]
    Backpressure {
        /// The frame, `hive.box.frame`.
        frame: String,
        /// Why.
        reason: String,
    },

    /// An option or argument was refused.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option or argument.
        name: String,
        /// Why.
        reason: String,
    },

    /// From Arrow.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// From Parquet.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// From DataFusion.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    /// A blocking or spawned task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),

    /// A local file or folder failed, or the I/O runtime could not start.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path, or what failed.
        path: String,
        /// The error.
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
    /// The frame, `hive.box.frame`.
    pub frame: String,
    /// The winner's version.
    pub version: u64,
    /// The winner's writer.
    pub winner: String,
    /// The winner's operation (`WRITE`, `COMPACT`, …).
    pub operation: String,
    /// This commit's operation.
    pub attempted: String,
    /// The cells both remove, by path in the frame's folder.
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
