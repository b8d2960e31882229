//! Options shared by every committer (registry and ledgers).

use crate::retry::RetryPolicy;

/// How commits are made: who signs them, how long lost races are retried, how often the full
/// state is checkpointed.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// Recorded in every entry as its writer. Default: `host:pid`.
    pub writer: String,
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
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    pub fn with_checkpoint_interval(mut self, every: u64) -> Self {
        self.checkpoint_interval = every;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// `host:pid`, which tells people which machine and process wrote an entry.
pub fn default_writer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}
