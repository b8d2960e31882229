//! One hive as a datafusion-python catalog provider, through datafusion-ffi.

use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use datafusion_ffi::catalog_provider::FFI_CatalogProvider;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods};

use crate::error::{Error, Result};
use crate::runtime::runtime;

const PROVIDER_CAPSULE: &std::ffi::CStr = c"datafusion_catalog_provider";
const CODEC_CAPSULE: &std::ffi::CStr = c"datafusion_logical_extension_codec";
const CODEC_METHOD: &str = "__datafusion_logical_extension_codec__";

/// A hive for `SessionContext.register_catalog_provider(name, catalog)` of datafusion-python 55.
/// Its frames' scans run on Apiary's runtime (the meadow's object store, the bees' memory bound),
/// not on the host's, which does not cross the FFI boundary.
#[pyclass(frozen, module = "apiary", name = "HiveCatalog")]
pub struct HiveCatalog {
    hive: String,
    provider: Arc<dyn CatalogProvider>,
}

impl HiveCatalog {
    pub fn new(hive: String, provider: Arc<dyn CatalogProvider>) -> Self {
        Self { hive, provider }
    }
}

/// The running datafusion-python must speak our datafusion-ffi major: its ABI is not checked
/// by datafusion-ffi itself.
fn check_datafusion_version(py: Python<'_>) -> Result<()> {
    let ffi = datafusion_ffi::version();
    let found = match py.import("datafusion") {
        Ok(module) => module.getattr("__version__")?.extract::<String>()?,
        Err(_) => "(not installed)".to_string(),
    };
    if found.split('.').next() == Some(ffi.to_string().as_str()) {
        Ok(())
    } else {
        Err(Error::VersionMismatch {
            ours: env!("CARGO_PKG_VERSION"),
            ffi,
            found,
        })
    }
}

/// The host session's logical codec: datafusion-python passes it as a capsule, or an object that
/// exports one.
fn logical_codec(session: &Bound<'_, PyAny>) -> Result<FFI_LogicalExtensionCodec> {
    let capsule = if let Ok(capsule) = session.cast::<PyCapsule>() {
        capsule.clone()
    } else if session.hasattr(CODEC_METHOD)? {
        session
            .call_method0(CODEC_METHOD)?
            .cast_into::<PyCapsule>()
            .map_err(PyErr::from)?
    } else {
        return Err(Error::Invalid(format!(
            "__datafusion_catalog_provider__ expects the session's logical codec (a PyCapsule \
             {CODEC_CAPSULE:?} or an object with {CODEC_METHOD}); got {}",
            session.get_type().name()?
        )));
    };
    let pointer = capsule.pointer_checked(Some(CODEC_CAPSULE))?;
    // SAFETY: the capsule's name says it holds an FFI_LogicalExtensionCodec; we clone it (its own
    // clone function) and keep nothing borrowed.
    let codec: &FFI_LogicalExtensionCodec = unsafe { pointer.cast().as_ref() };
    Ok(codec.clone())
}

#[pymethods]
impl HiveCatalog {
    /// The datafusion-python protocol: an `FFI_CatalogProvider` in a PyCapsule.
    fn __datafusion_catalog_provider__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        check_datafusion_version(py)?;
        let codec = logical_codec(&session)?;
        // SAFETY: `version` is a plain function of the host's datafusion-ffi.
        let host_ffi = unsafe { (codec.version)() };
        if host_ffi != datafusion_ffi::version() {
            return Err(Error::VersionMismatch {
                ours: env!("CARGO_PKG_VERSION"),
                ffi: datafusion_ffi::version(),
                found: format!("with datafusion-ffi {host_ffi}"),
            }
            .into());
        }
        let handle = runtime()?.handle().clone();
        let provider = FFI_CatalogProvider::new_with_ffi_codec(
            Arc::clone(&self.provider),
            Some(handle),
            codec,
        );
        PyCapsule::new_with_value(py, provider, PROVIDER_CAPSULE)
    }

    /// The boxes (schemas) of the hive.
    fn schema_names(&self, py: Python<'_>) -> Vec<String> {
        // May re-read the namespace from storage: without the GIL.
        let mut names = py.detach(|| self.provider.schema_names());
        names.sort();
        names
    }

    #[getter]
    fn name(&self) -> &str {
        &self.hive
    }

    fn __repr__(&self) -> String {
        format!("HiveCatalog({:?})", self.hive)
    }
}
