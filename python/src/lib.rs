//! `apiary._apiary`, the native part of the `apiary` Python package: the [`PyApiary`] class
//! (the SDK) and [`HiveCatalog`] (a hive for datafusion-python through datafusion-ffi).

mod apiary;
mod arrow;
mod catalog;
mod error;
mod runtime;

use pyo3::prelude::*;

use crate::apiary::PyApiary;
use crate::arrow::ArrowStream;
use crate::catalog::HiveCatalog;

#[pymodule]
fn _apiary(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyApiary>()?;
    m.add_class::<HiveCatalog>()?;
    m.add_class::<ArrowStream>()?;
    m.add("ApiaryError", m.py().get_type::<error::ApiaryError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DATAFUSION_FFI_MAJOR", datafusion_ffi::version())?;
    Ok(())
}
