//! Apiary's swarm: nodes that coordinate only through the meadow.
//!
//! - [`heartbeat`]: each node writes `_heartbeats/node_{id}.json` every few seconds;
//! - [`world_view`]: every node judges the others alive, suspect or dead from whether their
//!   heartbeats change on its own clock;
//! - [`rule`] and [`swarm_exec`]: a physical optimizer rule splits a plan at Apiary's scans into
//!   fragments over groups of cells; a coordinator writes them with a manifest to
//!   `_queries/{id}/` and streams back the partial results;
//! - [`worker`]: every node claims tasks with a conditional create, runs them on a bee and writes
//!   Arrow IPC partials;
//! - [`cache`]: the local cell cache (tier 2), listed in each node's [`cache_index`];
//! - [`codec`]: Apiary's `PhysicalExtensionCodec` for fragments.
//!
//! `docs/swarm.md` describes the protocol and its JSON.

pub mod cache;
pub mod cache_index;
pub mod codec;
pub mod config;
pub mod error;
pub mod fragment;
pub mod heartbeat;
pub mod manifest;
pub mod node;
pub mod rule;
pub mod swarm_exec;
mod worker;
pub mod world_view;

pub use codec::ApiaryCodec;
pub use config::{SwarmConfig, SwarmOptions};
pub use error::{Result, SwarmError};
pub use node::{SwarmNode, SwarmStatus};
pub use rule::SwarmRule;
pub use swarm_exec::SwarmExec;
pub use world_view::{NodeState, NodeView, WorldView};
