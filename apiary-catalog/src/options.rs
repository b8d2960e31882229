//! Options shared by every committer (registry and ledgers), and the session settings of
//! `SET apiary.*`.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

use crate::retry::RetryPolicy;

extensions_options! {
    /// A session's `SET apiary.<name> = <value>` settings. DataFusion routes a prefix to one
    /// extension, so the settings of every crate live here: how queries use the bees (read by
    /// `apiary-exec`, which calls this `BeeOptions`) and how writes replace data.
    pub struct SessionOptions {
        /// Deadline of one query in milliseconds, waiting for bees included (0: none).
        pub timeout_ms: u64, default = 0
        /// Bees one query occupies (0: all of the node's).
        pub bees_per_query: usize, default = 0
        /// Whether work over budget spills to the bees' scratch folders (else it fails).
        pub spill: bool, default = true
        /// What `INSERT OVERWRITE` replaces: every cell of the frame (`static`), or only the
        /// partitions it writes rows into (`dynamic`).
        pub overwrite: String, default = "static".to_string()
        /// Whether an `INSERT` whose rows have columns the frame lacks, or wider types, first
        /// evolves the frame to fit them (`merge`, as delta-rs's `schema_mode="merge"`), or is
        /// refused (`strict`).
        pub schema_mode: String, default = "strict".to_string()
        /// Whether the rows a join's dynamic filter rules out are dropped right above the scan,
        /// while it rules out most of them (`FilterJoinedRows`).
        pub scan_join_filters: bool, default = true
    }
}

impl ConfigExtension for SessionOptions {
    const PREFIX: &'static str = "apiary";
}

/// How commits are made: who signs them, how long lost races are retried, how often the full
/// state is checkpointed.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// Recorded in every entry as its writer. Default: `host:pid`.
    pub writer: String,
    /// How long lost races are retried.
    pub retry: RetryPolicy,
    /// A checkpoint is written at every version divisible by this (0 = never). Default 100.
    pub checkpoint_interval: u64,
}

impl Default for CommitOptions {
    fn default() -> Self {
        Self {
            writer: default_writer(),
            retry: RetryPolicy::default(),
            checkpoint_interval: 100,
        }
    }
}

impl CommitOptions {
    /// These options signing commits as `writer`.
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    /// These options writing a checkpoint every `every` versions (0: never).
    pub fn with_checkpoint_interval(mut self, every: u64) -> Self {
        self.checkpoint_interval = every;
        self
    }

    /// These options retrying by `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// `host:pid`, which tells people which machine and process wrote an entry.
pub fn default_writer() -> String {
    format!("{}:{}", crate::sight::host(), std::process::id())
}
