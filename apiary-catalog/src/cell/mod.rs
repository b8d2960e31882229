//! Cells: immutable Parquet files, written partitioned, sized by the leafcutter policy, with
//! statistics taken from the Parquet writer's metadata.

pub(crate) mod conform;
pub(crate) mod encoder;
pub(crate) mod leafcutter;
pub(crate) mod partition;
pub(crate) mod stats;
pub(crate) mod writer;

use std::sync::Arc;

use datafusion::parquet::basic::Compression;

use crate::ledger::CellRecord;
use crate::meadow::Meadow;

pub use leafcutter::Leafcutter;
pub use writer::CellWriter;

/// How cells are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// How large cells are cut. Default: for a bee of [`Leafcutter::DEFAULT_BEE_MEMORY`].
    pub leafcutter: Leafcutter,
    /// Parquet compression of every column. Default: LZ4 (the `LZ4_RAW` codec).
    pub compression: Compression,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            leafcutter: Leafcutter::default(),
            compression: Compression::LZ4_RAW,
        }
    }
}

impl WriteOptions {
    /// These options with cells sized by `leafcutter`.
    pub fn with_leafcutter(mut self, leafcutter: Leafcutter) -> Self {
        self.leafcutter = leafcutter;
        self
    }

    /// These options with every column compressed by `compression`.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
}

/// Removes written cells that no commit will name (best effort: cleanup reclaims leftovers).
pub(crate) async fn remove_cells(meadow: &Meadow, location: &str, cells: &[Arc<CellRecord>]) {
    for c in cells {
        let rel = format!("{location}/{}", c.path);
        if let Err(e) = meadow.delete(&rel).await {
            log::warn!("could not remove unused cell {rel}: {e}");
        }
    }
}
