//! Apiary: a lakehouse for small compute, as Apache DataFusion extension crates.
//!
//! This facade crate wires the parts together; each lives in a crate of its own:
//! - [`catalog`] (`apiary-catalog`): the meadow (object storage), registry, ledger and cells.
//!
//! See `README.md` and `docs/` for the design, the storage layout and the commands.

pub use apiary_catalog as catalog;
