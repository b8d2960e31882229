//! Arrow across the boundary through the Arrow PyCapsule interface: streams and schemas come in
//! from any producer (pyarrow, polars, …) and results go out to pyarrow, without copying.

use std::sync::Arc;

use parking_lot::Mutex;

use datafusion::arrow::array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ffi::FFI_ArrowSchema;
use datafusion::arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods};

use crate::error::{Error, Result};

const STREAM_CAPSULE: &std::ffi::CStr = c"arrow_array_stream";
const SCHEMA_CAPSULE: &std::ffi::CStr = c"arrow_schema";

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown object".into())
}

/// Takes the Arrow stream `obj` exports (`__arrow_c_stream__`): a pyarrow Table or
/// RecordBatchReader, a polars DataFrame, … Batches are read later, without the GIL.
pub fn import_stream(obj: &Bound<'_, PyAny>, what: &'static str) -> Result<ArrowArrayStreamReader> {
    if !obj.hasattr("__arrow_c_stream__")? {
        return Err(Error::NotArrow {
            what,
            expected: "data",
            method: "__arrow_c_stream__",
            example: "a pyarrow Table or RecordBatchReader",
            found: type_name(obj),
        });
    }
    let capsule = obj.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(PyErr::from)?;
    let pointer = capsule.pointer_checked(Some(STREAM_CAPSULE))?;
    // SAFETY: the capsule holds an ArrowArrayStream (its name says so, checked above);
    // `from_raw` moves it out and leaves a released stream for the capsule's destructor.
    let reader = unsafe { ArrowArrayStreamReader::from_raw(pointer.as_ptr().cast()) }?;
    Ok(reader)
}

/// The Arrow schema `obj` exports (`__arrow_c_schema__`), e.g. a `pyarrow.Schema`.
pub fn import_schema(obj: &Bound<'_, PyAny>, what: &'static str) -> Result<SchemaRef> {
    if !obj.hasattr("__arrow_c_schema__")? {
        return Err(Error::NotArrow {
            what,
            expected: "a schema",
            method: "__arrow_c_schema__",
            example: "a pyarrow.Schema",
            found: type_name(obj),
        });
    }
    let capsule = obj.call_method0("__arrow_c_schema__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(PyErr::from)?;
    let pointer = capsule.pointer_checked(Some(SCHEMA_CAPSULE))?;
    // SAFETY: the capsule holds an ArrowSchema (name checked); we only borrow it.
    let ffi: &FFI_ArrowSchema = unsafe { pointer.cast().as_ref() };
    Ok(std::sync::Arc::new(Schema::try_from(ffi)?))
}

/// Query results on their way to pyarrow: an object with `__arrow_c_stream__`, readable once.
#[pyclass(frozen, module = "apiary", name = "ArrowStream")]
pub struct ArrowStream {
    stream: Mutex<Option<FFI_ArrowArrayStream>>,
}

/// A query's batches read as they come: each `next` waits on Apiary's runtime (the reader is
/// read from Python's threads, never from the runtime's own).
struct Streaming {
    schema: SchemaRef,
    stream: datafusion::execution::SendableRecordBatchStream,
    runtime: &'static tokio::runtime::Runtime,
}

impl Iterator for Streaming {
    type Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures::StreamExt;
        self.runtime
            .block_on(self.stream.next())
            .map(|r| r.map_err(|e| datafusion::arrow::error::ArrowError::ExternalError(e.into())))
    }
}

impl RecordBatchReader for Streaming {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl ArrowStream {
    /// A stream that runs `stream` as it is read.
    pub fn streaming(stream: datafusion::execution::SendableRecordBatchStream) -> Result<Self> {
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(Streaming {
            schema: stream.schema(),
            stream,
            runtime: crate::runtime::runtime()?,
        });
        Ok(Self {
            stream: Mutex::new(Some(FFI_ArrowArrayStream::new(reader))),
        })
    }

    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
            batches.into_iter().map(Ok),
            schema,
        ));
        Self {
            stream: Mutex::new(Some(FFI_ArrowArrayStream::new(reader))),
        }
    }
}

#[pymethods]
impl ArrowStream {
    /// The Arrow PyCapsule stream protocol; `requested_schema` is not supported (the stream is
    /// given as it is).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let stream = self
            .stream
            .lock()
            .take()
            .ok_or_else(|| PyValueError::new_err("this Arrow stream was already read"))?;
        PyCapsule::new_with_value(py, stream, STREAM_CAPSULE)
    }
}
