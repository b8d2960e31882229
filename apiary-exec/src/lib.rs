//! Apiary's execution layer: bees.
//!
//! One bee per core, each with a hard memory budget and a scratch folder. A task runs in a
//! [`Chamber`] of one or more bees: its own DataFusion `RuntimeEnv` whose memory pool is their
//! budget and whose spill files go to their scratch folders ([`pool`]). [`ChamberRule`] puts every
//! query of a session into a chamber, with a deadline ([`chamber_exec`]). The behavioral model acts
//! on real state: colony [`temperature`] regulates writes, and [`abandonment`] bounds the retries
//! of a failing task. `docs/bees.md` gives the formulas and defaults.
//!
//! This crate knows nothing of heartbeats or the swarm.

pub mod abandonment;
pub mod chamber_exec;
pub mod error;
pub mod folder_lock;
pub mod node;
pub mod pool;
pub mod queries;
pub mod temperature;

pub use abandonment::{Diagnostic, Failure, TaskFailures, Verdict};
pub use chamber_exec::{BeeOptions, ChamberExec, ChamberRule, bee_options};
pub use error::{ExecError, Result};
pub use folder_lock::FolderLock;
pub use node::{MemoryPoolKind, NodeConfig};
pub use pool::{BeePool, Chamber, HASH_JOIN_MIN_QUERY_MEMORY, PoolStatus};
pub use queries::{QueryLog, QueryOutcome, QueryRecord, QueryShape};
pub use temperature::{Band, Colony, Regulation, Temperature, Thresholds};
