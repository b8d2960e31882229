//! Apiary's swarm: nodes that coordinate only through the meadow.
//!
//! - membership (`membership`, [`heartbeat`], [`cache_index`], [`world_view`]): each node writes
//!   `_heartbeats/node_{id}.json` every few seconds (and its cache index when its cache changed);
//!   every node judges the others alive, suspect or dead from whether their heartbeats change on
//!   its own clock;
//! - planning ([`rule`], [`swarm_exec`]): a physical optimizer rule splits a plan at Apiary's
//!   scans into fragments over groups of cells and hands them to an [`Exchange`] — the seam
//!   between planning and the way tasks reach other nodes;
//! - the meadow exchange (`meadow_exchange`, `worker`): a coordinator writes the fragment and a
//!   manifest to `_queries/{id}/` and streams back the partial results; every node's free bees
//!   pull tasks with a conditional create, run them and write Arrow IPC partials;
//! - [`cache`]: the local cell cache (tier 2);
//! - [`codec`]: Apiary's `PhysicalExtensionCodec` for fragments.
//!
//! `docs/swarm.md` describes the protocol and its JSON.

pub mod cache;
pub mod cache_index;
pub mod codec;
pub mod config;
#[cfg(feature = "direct")]
pub mod direct;
pub mod error;
pub mod fragment;
pub mod heartbeat;
mod local_node;
pub mod manifest;
mod meadow_exchange;
mod membership;
pub mod node;
pub mod rule;
pub mod swarm_exec;
mod worker;
pub mod world_view;

pub use codec::ApiaryCodec;
pub use config::{SwarmConfig, SwarmOptions, SwarmPath, SwarmTls};
pub use error::{Result, SwarmError};
pub use node::{SwarmNode, SwarmStatus};
pub use rule::SwarmRule;
pub use swarm_exec::{Exchange, ScanJob, SwarmExec};
pub use world_view::{NodeState, NodeView, WorldView};
