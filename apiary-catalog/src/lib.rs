//! Apiary's storage and catalog layer.
//!
//! - [`Meadow`]: object storage from a URL, with a conditional create as the commit primitive.
//! - [`Registry`]: the namespace of hives, boxes and frames, versioned in the meadow.
//! - [`Ledger`]: one transaction log per frame; the source of truth for its cells.
//! - [`CellWriter`]: writing Parquet cells (partitioning, statistics, [`Leafcutter`] sizing).
//! - [`Frame`]: a frame's ledger plus writes that end in one atomic commit each.
//!
//! The storage layout and every JSON object are documented in `docs/storage.md`. The modules are
//! private but `protocol` (the format's versions and feature names), `sight` (metric names) and
//! `testing` (feature `test-util`); this root re-exports the rest on purpose, and
//! `apiary-catalog/public-api.txt` lists it (`scripts/public-api`).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use apiary_catalog::{CommitOptions, Frame, FrameSpec, IfExists, Meadow, Registry, WriteOptions};
//! use datafusion::arrow::array::{Int64Array, RecordBatch};
//! use datafusion::arrow::datatypes::{DataType, Field, Schema};
//!
//! let meadow = Meadow::open("memory://").await.unwrap();
//! let registry = Registry::open(meadow, CommitOptions::default()).await.unwrap();
//! registry.create_hive("sales", IfExists::Fail).await.unwrap();
//! registry.create_box("sales", "eu", IfExists::Fail).await.unwrap();
//! let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
//! registry
//!     .create_frame("sales", "eu", "orders", &FrameSpec::new(schema.clone()), IfExists::Fail)
//!     .await
//!     .unwrap();
//! let frame = Frame::new(registry.open_ledger("sales", "eu", "orders").await.unwrap(), WriteOptions::default());
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
//! let info = frame
//!     .append(futures::stream::iter([Ok::<_, apiary_catalog::CatalogError>(batch)]), "WRITE")
//!     .await
//!     .unwrap();
//! assert_eq!((info.version, info.rows_added), (1, 3));
//! # });
//! ```

#![warn(missing_docs)]

mod cell;
mod check;
mod cleansing;
mod clustering;
mod column_ids;
mod compaction;
mod error;
mod frame;
mod io;
mod ledger;
mod meadow;
mod name;
mod numbered_log;
mod options;
pub mod protocol;
mod provider;
mod registry;
mod retry;
mod schema_json;
pub mod sight;
#[cfg(feature = "test-util")]
pub mod testing;
mod value;

pub use cell::{CellWriter, Leafcutter, WriteOptions};
pub use check::{CheckReport, Problem, check_frame, check_meadow, check_named_frame};
pub use cleansing::{
    CleansingOptions, CleansingReport, MIN_RETENTION, Removal, RemovalKind, cleanse_frame,
    cleanse_meadow,
};
pub use clustering::{SortKey, SortOrder};
pub use column_ids::restore_frame_scan;
pub use compaction::{CompactedPartition, Compaction, CompactionReport, compact};
pub use error::{CatalogError, Kind, Result};
pub use frame::{Frame, WriteAdmission};
pub use io::IoRuntime;
pub use ledger::{
    Action, CellRecord, ColumnStats, CommitInfo, FrameSnapshot, FrameSpec, Ledger, LedgerEntry,
};
pub use meadow::{Created, Meadow, MeadowKind, StoreLayer, Upload};
pub use options::{CommitOptions, SessionOptions};
pub use provider::{
    BoxSchemaProvider, CatalogOptions, EmptyScan, EmptyScans, FilterJoinedRows, FrameTableProvider,
    FrameTableProviderFactory, HiveCatalogProvider, JoinFilterExec, KeepScanOrder,
    MeadowCatalogProviderList, OwnRuntimeExec, OwnStatement, ProviderState, PruneCounts,
    SCAN_FRAME_LABEL, SCAN_VERSION, SchemaChange, own_statement, with_runtime,
};
pub use registry::{Creation, FrameRecord, IfExists, IfMissing, Registry, RegistryState};
pub use retry::RetryPolicy;
pub use sight::Sight;
