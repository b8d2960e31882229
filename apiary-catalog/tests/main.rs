//! Integration tests of the storage layer, each run on a local folder, `memory://` and the S3
//! test server (`./scripts/test.sh` starts it and exports `APIARY_TEST_S3_URL`).

mod cells;
mod cleansing;
mod compaction;
mod faults;
mod ledger;
mod meadow;
mod registry;
mod support;
