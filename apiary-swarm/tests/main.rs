//! Tests of the swarm's parts: world view, cell cache, fragment codec, task assignment.

mod cache;
mod codec;
mod queries;
mod support;
mod world_view;
