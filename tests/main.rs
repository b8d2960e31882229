//! Integration tests of Apiary through DataFusion: SQL, pruning, a differential test against
//! DataFusion's own ListingTable, metadata views, TPC-H, and the examples of `docs/sql.md`.

mod differential;
mod docs;
mod metadata;
mod pruning;
mod sql;
mod support;
mod tpch;
