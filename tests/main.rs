//! Integration tests of Apiary through DataFusion: SQL, pruning, a differential test against
//! DataFusion's own ListingTable, metadata views, the bees, the swarm (with worker processes),
//! the `apiary` command, TPC-H, and the examples of `docs/sql.md`.

mod alter;
mod bees;
mod cli;
mod clustering;
mod differential;
#[cfg(feature = "direct")]
mod direct;
mod docs;
mod guarantees;
mod join_filters;
mod kill;
mod metadata;
mod plans;
mod pruning;
mod row_changes;
mod slt;
mod sql;
mod status;
mod support;
mod swarm;
mod tpch;
