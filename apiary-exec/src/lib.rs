//! Apiary's execution layer: bees.
//!
//! One bee per core, each with a hard memory budget and a scratch folder. A task runs in a
//! [`Chamber`] of one or more bees: its own DataFusion `RuntimeEnv` whose memory pool is their
//! budget and whose spill files go to their scratch folders ([`BeePool`]). [`ChamberRule`] puts
//! every query of a session into a chamber, with a deadline ([`ChamberExec`]). The behavioral
//! model acts on real state: the [`Colony`]'s temperature regulates writes, and
//! [`TaskFailures`] bounds the retries of a failing task (abandonment). `docs/bees.md` gives the
//! formulas and defaults.
//!
//! This crate knows nothing of heartbeats or the swarm. Its modules are private; this root
//! re-exports what other crates use, and `apiary-exec/public-api.txt` lists it
//! (`scripts/public-api`).

#![warn(missing_docs)]

mod abandonment;
mod chamber_exec;
mod error;
mod folder_lock;
mod node;
mod pool;
mod queries;
mod temperature;

pub use abandonment::{Diagnostic, Failure, TaskFailures, Verdict};
pub use chamber_exec::{BeeOptions, ChamberExec, ChamberRule, bee_options};
pub use error::{ExecError, Result};
pub use folder_lock::FolderLock;
pub use node::{MemoryPoolKind, NodeConfig, parse_bytes};
pub use pool::{BROADCAST_BYTES, BeePool, Chamber, HASH_JOIN_MIN_QUERY_MEMORY, PoolStatus, Spill};
pub use queries::{QueryLog, QueryOutcome, QueryRecord, QueryShape};
pub use temperature::{Band, Colony, Regulation, Temperature, Thresholds};
