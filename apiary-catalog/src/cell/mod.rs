//! Cells: immutable Parquet files, written partitioned, sized by the leafcutter policy, with
//! statistics taken from the Parquet writer's metadata.

pub mod conform;
pub mod leafcutter;
pub mod partition;
pub mod stats;
pub mod writer;

use datafusion::parquet::basic::Compression;

pub use conform::Conformer;
pub use leafcutter::Leafcutter;
pub use writer::CellWriter;

/// How cells are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
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
    pub fn with_leafcutter(mut self, leafcutter: Leafcutter) -> Self {
        self.leafcutter = leafcutter;
        self
    }

    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
}
