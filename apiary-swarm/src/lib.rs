//! Apiary's swarm: nodes that coordinate only through the meadow.
//!
//! - membership (modules `membership`, `heartbeat`, `cache_index`; [`WorldView`]): each node writes
//!   `_heartbeats/node_{id}.json` every few seconds (and its cache index when its cache changed);
//!   every node judges the others alive, suspect or dead from whether their heartbeats change on
//!   its own clock;
//! - planning ([`SwarmRule`], [`SwarmExec`]): a physical optimizer rule splits a plan at Apiary's
//!   scans into fragments over groups of cells and hands them to an [`Exchange`] — the seam
//!   between planning and the way tasks reach other nodes;
//! - the meadow exchange (`meadow_exchange`, `worker`): a coordinator writes the fragment and a
//!   manifest to `_queries/{id}/` and streams back the partial results; every node's free bees
//!   pull tasks with a conditional create, run them and write Arrow IPC partials;
//! - [`CellCache`]: the local cell cache (tier 2);
//! - [`ApiaryCodec`]: Apiary's `PhysicalExtensionCodec` for fragments;
//! - the direct path (module `direct`, feature `direct`): datafusion-distributed workers on the
//!   nodes that listen, and the coordinator's choice between them and the meadow.
//!
//! The modules are private; this root re-exports what other crates use, and
//! `apiary-swarm/public-api.txt` lists it (`scripts/public-api`).
//!
//! `docs/swarm.md` describes the protocol and its JSON.

#![warn(missing_docs)]

mod cache;
mod cache_index;
mod codec;
mod config;
#[cfg(feature = "direct")]
mod direct;
mod error;
mod fragment;
mod heartbeat;
mod local_node;
mod manifest;
mod meadow_exchange;
mod membership;
mod node;
mod rule;
mod swarm_exec;
mod worker;
mod world_view;

pub use cache::{CacheFolder, CacheStatus, CellCache};
pub use codec::ApiaryCodec;
pub use config::{SwarmConfig, SwarmOptions, SwarmPath, SwarmTls};
#[cfg(feature = "direct")]
pub use direct::{DirectPathExec, PathPlanner, SECRET, SwarmChannels, SwarmToken, SwarmWorkers};
pub use error::{Result, SwarmError};
pub use fragment::{ScanMatcher, files_of, fragment, ships};
pub use heartbeat::Heartbeat;
pub use manifest::{Claim, Done, Manifest, QueryDir, Retry};
pub use node::{SwarmNode, SwarmStatus};
pub use rule::{SWARM_LOCAL, SWARM_NODES_LABEL, SWARM_REASON_LABEL, SWARM_TASKS, SwarmRule};
pub use swarm_exec::{Exchange, ScanJob, SwarmExec};
pub use world_view::{NodeState, NodeView, WorldView};
