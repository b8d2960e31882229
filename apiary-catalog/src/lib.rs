//! Apiary's storage and catalog layer.
//!
//! - [`Meadow`]: object storage from a URL, with a conditional create as the commit primitive.
//! - [`Registry`]: the namespace of hives, boxes and frames, versioned in the meadow.
//! - [`Ledger`]: one transaction log per frame; the source of truth for its cells.
//! - [`cell`]: writing Parquet cells (partitioning, statistics, leafcutter sizing).
//! - [`Frame`]: a frame's ledger plus writes that end in one atomic commit each.
//!
//! The storage layout and every JSON object are documented in `docs/storage.md`.
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
//!     .append(futures::stream::iter([Ok::<_, apiary_catalog::Error>(batch)]), "WRITE")
//!     .await
//!     .unwrap();
//! assert_eq!((info.version, info.rows_added), (1, 3));
//! # });
//! ```

pub mod cell;
pub mod check;
pub mod cleansing;
pub mod clustering;
pub mod column_ids;
pub mod compaction;
pub mod error;
pub mod frame;
pub mod io;
pub mod ledger;
pub mod meadow;
pub mod name;
mod numbered_log;
pub mod options;
pub mod protocol;
pub mod provider;
pub mod registry;
pub mod retry;
pub mod schema_json;
pub mod sight;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod value;

pub use cell::{CellWriter, Leafcutter, WriteOptions};
pub use clustering::{SortKey, SortOrder};
pub use error::{Error, Kind, Result};
pub use frame::{Frame, WriteAdmission};
pub use io::IoRuntime;
pub use ledger::{
    Action, CellRecord, ColumnStats, CommitInfo, FrameSnapshot, FrameSpec, Ledger, LedgerEntry,
};
pub use meadow::{Created, Meadow, MeadowKind, StoreLayer, Upload};
pub use options::CommitOptions;
pub use provider::{ApiaryCatalog, CatalogOptions, FrameTable};
pub use registry::{Creation, FrameRecord, IfExists, IfMissing, Registry, RegistryState};
pub use retry::RetryPolicy;
pub use sight::Sight;
