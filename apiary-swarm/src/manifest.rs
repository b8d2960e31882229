//! A distributed query in the meadow: `_queries/{query_id}/`.
//!
//! ```text
//! fragment.plan          the fragment over every cell (datafusion-proto bytes); task n reads
//!                        the cells the manifest lists for it
//! manifest.json          the tasks: their cells, and the node that caches them if any (last)
//! claim_{n}_{a}.json     attempt a of task n, claimed by one node (conditional create)
//! error_{n}_{a}.json     attempt a failed on its node, with the error
//! retry_{n}_{a}.json     the coordinator gave up on attempt a (error, dead node, deadline)
//! progress_{n}_{a}.json  rewritten by the claimant while attempt a runs: it is alive
//! partial_{n}_{a}_{k}.arrow
//!                        part k of the result of attempt a: an Arrow IPC stream of about
//!                        PARTIAL_PART_BYTES at most, each part one plain PUT
//! done_{n}.json          which attempt's result counts (conditional create: the first to finish);
//!                        a coordinator's own small result stays in its memory (no parts)
//! finished.json          the query is over (ok, failed or cancelled); workers stop
//! ```
//!
//! and `_queries/latest.json`, the query published last, which idle nodes watch.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SwarmError};

pub const QUERIES: &str = "_queries";

/// Rewritten by every coordinator when it publishes a query: idle nodes watch this one object
/// rather than list `_queries/`.
pub const LATEST: &str = "_queries/latest.json";

/// The body of [`LATEST`]: the query published last (informative: a change is what counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub query_id: String,
    pub coordinator: String,
    pub created_ms: i64,
}

/// One task: a fragment over a group of cells, claimed by whichever node has a free bee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's number in the manifest.
    pub n: usize,
    /// The node that reported some of its cells cached: it claims the task first, others after
    /// `steal_after` (or at once when it is dead or gone). `None`: anyone's at once.
    #[serde(default, alias = "assigned", skip_serializing_if = "Option::is_none")]
    pub preferred: Option<String>,
    /// The cells it reads.
    pub cells: Vec<TaskCell>,
    /// Bytes the task reads.
    pub bytes: u64,
}

/// A cell a task reads: its object key, and the byte range when the cell is split between tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCell {
    /// The cell's object key.
    pub key: String,
    /// The byte range `[start, end)` of the cell this task reads, when the cell is split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
}

/// A distributed query's `manifest.json`: its tasks and the rules workers follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The query's id (its folder under `_queries/`).
    pub query_id: String,
    /// The node that coordinates it.
    pub coordinator: String,
    /// The coordinator's clock when it wrote the manifest (informative).
    pub created_ms: i64,
    /// The tasks, numbered from 0.
    pub tasks: Vec<TaskSpec>,
    /// An attempt running longer than this is offered again.
    pub task_deadline_ms: u64,
    /// Failures of one task before the query is abandoned.
    pub max_failures: usize,
    /// The coordinator's session settings that differ from DataFusion's defaults (time zone,
    /// batch size, Parquet options, `apiary.*`, …): workers run the tasks under them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// `claim_{n}_{a}.json`: attempt `a` of task `n` is taken (a conditional create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The node that took it.
    pub node: String,
    /// The attempt's number.
    pub attempt: usize,
    /// The node's clock when it took it (informative).
    pub clock_ms: i64,
}

/// `done_{n}.json`: task `n` finished, and where its result is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The node that ran it.
    pub node: String,
    /// The attempt that finished.
    pub attempt: usize,
    /// Rows in the result.
    pub rows: u64,
    /// Bytes in the result.
    pub bytes: u64,
    /// How many `partial_{n}_{a}_{k}.arrow` objects the result is in.
    pub parts: usize,
    /// The result is in the coordinator's memory, not in the folder: an attempt the coordinator
    /// ran itself whose result was small (no parts). Only the coordinator reads it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_memory: bool,
}

/// A partial result is cut into objects of about this size (the batch that reaches it ends the
/// part), each written by one plain PUT: no object of a query folder is ever an
/// incomplete multipart upload, which no sweep could find (object_store cannot list them).
/// Below object_store's 10 MiB multipart threshold, and a bounded buffer per running task.
pub const PARTIAL_PART_BYTES: usize = 8 << 20;

/// Rewritten by a claimant while its attempt runs, so that a coordinator sees the work go on even
/// when the claimant's heartbeats are late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub node: String,
    pub attempt: usize,
    /// Grows by one with every write.
    pub tick: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub node: String,
    pub attempt: usize,
    pub error: String,
}

/// `retry_{n}_{a}.json`: attempt `a` of task `n` is given up and offered again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// The attempt given up.
    pub attempt: usize,
    /// Why.
    pub reason: String,
    /// The node the attempt failed on (it leaves the next attempts to others while it can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// How a query ended, as `finished.json` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every task done, every batch delivered.
    Ok,
    /// The query failed (`error` says why).
    Failed,
    /// The caller stopped reading.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The keys of one query's objects.
#[derive(Debug, Clone)]
pub struct QueryDir {
    /// The query's id.
    pub query_id: String,
    dir: String,
}

impl QueryDir {
    /// The keys of query `query_id`'s objects, under `_queries/{id}`.
    pub fn new(query_id: impl Into<String>) -> Self {
        let query_id = query_id.into();
        Self {
            dir: format!("{QUERIES}/{query_id}"),
            query_id,
        }
    }

    /// The query's folder.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// `manifest.json`.
    pub fn manifest(&self) -> String {
        format!("{}/manifest.json", self.dir)
    }

    /// `fragment.plan`: the plan the tasks run (datafusion-proto).
    pub fn fragment(&self) -> String {
        format!("{}/fragment.plan", self.dir)
    }

    /// `claim_{n}_{a}.json` of attempt `a` of task `n`.
    pub fn claim(&self, n: usize, a: usize) -> String {
        format!("{}/claim_{n}_{a}.json", self.dir)
    }

    /// `error_{n}_{a}.json`.
    pub fn error(&self, n: usize, a: usize) -> String {
        format!("{}/error_{n}_{a}.json", self.dir)
    }

    /// `retry_{n}_{a}.json`.
    pub fn retry(&self, n: usize, a: usize) -> String {
        format!("{}/retry_{n}_{a}.json", self.dir)
    }

    /// `progress_{n}_{a}.json`.
    pub fn progress(&self, n: usize, a: usize) -> String {
        format!("{}/progress_{n}_{a}.json", self.dir)
    }

    /// `partial_{n}_{a}_{k}.arrow`: part `k` of an attempt's result.
    pub fn partial(&self, n: usize, a: usize, k: usize) -> String {
        format!("{}/partial_{n}_{a}_{k}.arrow", self.dir)
    }

    /// `done_{n}.json` of task `n`.
    pub fn done(&self, n: usize) -> String {
        format!("{}/done_{n}.json", self.dir)
    }

    /// `finished.json`: how the query ended.
    pub fn finished(&self) -> String {
        format!("{}/finished.json", self.dir)
    }
}

/// What a listing of a query folder shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryState {
    pub manifest: bool,
    pub finished: bool,
    /// (task, attempt) pairs.
    pub claims: BTreeSet<(usize, usize)>,
    pub errors: BTreeSet<(usize, usize)>,
    pub retries: BTreeSet<(usize, usize)>,
    pub done: BTreeSet<usize>,
    /// The progress objects, by (task, attempt): what identifies their current content.
    pub progress: BTreeMap<(usize, usize), String>,
}

fn two_numbers(rest: &str) -> Option<(usize, usize)> {
    let (n, a) = rest.split_once('_')?;
    Some((n.parse().ok()?, a.parse().ok()?))
}

impl QueryState {
    /// Reads the state from the file names of a listing of the query folder.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = QueryState::default();
        for name in names {
            if name == "manifest.json" {
                s.manifest = true;
            } else if name == "finished.json" {
                s.finished = true;
            } else if let Some(rest) = name.strip_suffix(".json") {
                if let Some(x) = rest.strip_prefix("claim_").and_then(two_numbers) {
                    s.claims.insert(x);
                } else if let Some(x) = rest.strip_prefix("error_").and_then(two_numbers) {
                    s.errors.insert(x);
                } else if let Some(x) = rest.strip_prefix("retry_").and_then(two_numbers) {
                    s.retries.insert(x);
                } else if let Some(n) = rest.strip_prefix("done_").and_then(|n| n.parse().ok()) {
                    s.done.insert(n);
                }
            }
        }
        s
    }

    /// Reads the state from a listing of the query folder.
    pub fn from_listing(objects: &[object_store::ObjectMeta]) -> Self {
        let mut s = Self::from_names(objects.iter().filter_map(|o| o.location.filename()));
        for o in objects {
            let Some(rest) = o
                .location
                .filename()
                .and_then(|n| n.strip_prefix("progress_")?.strip_suffix(".json"))
            else {
                continue;
            };
            if let Some(x) = two_numbers(rest) {
                let fingerprint = o.e_tag.clone().unwrap_or_else(|| {
                    format!("{}:{}", o.last_modified.timestamp_micros(), o.size)
                });
                s.progress.insert(x, fingerprint);
            }
        }
        s
    }

    /// The attempt task `n` is at: the number of attempts given up on.
    pub fn attempt(&self, n: usize) -> usize {
        self.retries.iter().filter(|(t, _)| *t == n).count()
    }

    /// Tasks whose current attempt is claimed, by task.
    pub fn current_claims(&self, tasks: usize) -> BTreeMap<usize, usize> {
        (0..tasks)
            .filter_map(|n| {
                let a = self.attempt(n);
                self.claims.contains(&(n, a)).then_some((n, a))
            })
            .collect()
    }
}

pub fn encode<T: Serialize>(value: &T, key: &str) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| SwarmError::corrupt(key, e))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], key: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| SwarmError::corrupt(key, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_from_names() {
        let s = QueryState::from_names([
            "manifest.json",
            "fragment.plan",
            "claim_0_0.json",
            "error_0_0.json",
            "retry_0_0.json",
            "claim_0_1.json",
            "partial_0_1_0.arrow",
            "done_0.json",
            "claim_1_0.json",
        ]);
        assert!(s.manifest && !s.finished);
        assert_eq!(s.attempt(0), 1);
        assert_eq!(s.attempt(1), 0);
        assert_eq!(s.current_claims(3), BTreeMap::from([(0, 1), (1, 0)]));
        assert!(s.done.contains(&0));
        assert!(s.errors.contains(&(0, 0)));
    }
}
