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

/// One of the Arrow PyCapsule interface's exports: the method that makes it, the capsule's name,
/// and, for errors, what it holds and an example of an object that has it.
struct Export {
    method: &'static str,
    capsule: &'static std::ffi::CStr,
    expected: &'static str,
    example: &'static str,
}

const STREAM: Export = Export {
    method: "__arrow_c_stream__",
    capsule: c"arrow_array_stream",
    expected: "data",
    example: "a pyarrow Table or RecordBatchReader",
};

const SCHEMA: Export = Export {
    method: "__arrow_c_schema__",
    capsule: c"arrow_schema",
    expected: "a schema",
    example: "a pyarrow.Schema",
};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown object".into())
}

/// The capsule `obj` exports as `export`. An object without the export's method is refused with
/// an error naming what was expected and what came instead. The caller holds the capsule for as
/// long as it uses the pointer inside: dropping it runs the capsule's destructor, which releases
/// what the pointer points to.
fn exported<'py>(
    obj: &Bound<'py, PyAny>,
    what: &'static str,
    export: &Export,
) -> Result<Bound<'py, PyCapsule>> {
    if !obj.hasattr(export.method)? {
        return Err(Error::NotArrow {
            what,
            expected: export.expected,
            method: export.method,
            example: export.example,
            found: type_name(obj),
        });
    }
    let capsule = obj.call_method0(export.method)?;
    Ok(capsule.cast_into::<PyCapsule>().map_err(PyErr::from)?)
}

/// Takes the Arrow stream `obj` exports (`__arrow_c_stream__`): a pyarrow Table or
/// RecordBatchReader, a polars DataFrame, … Batches are read later, without the GIL.
pub fn import_stream(obj: &Bound<'_, PyAny>, what: &'static str) -> Result<ArrowArrayStreamReader> {
    let capsule = exported(obj, what, &STREAM)?;
    let pointer = capsule.pointer_checked(Some(STREAM.capsule))?;
    // SAFETY: the capsule holds an ArrowArrayStream (its name says so, checked above);
    // `from_raw` moves it out and leaves a released stream for the capsule's destructor.
    let reader = unsafe { ArrowArrayStreamReader::from_raw(pointer.as_ptr().cast()) }?;
    Ok(reader)
}

/// The Arrow schema `obj` exports (`__arrow_c_schema__`), e.g. a `pyarrow.Schema`.
pub fn import_schema(obj: &Bound<'_, PyAny>, what: &'static str) -> Result<SchemaRef> {
    let capsule = exported(obj, what, &SCHEMA)?;
    let pointer = capsule.pointer_checked(Some(SCHEMA.capsule))?;
    // SAFETY: the capsule holds an ArrowSchema (name checked) and outlives this borrow of it.
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
        PyCapsule::new_with_value(py, stream, STREAM.capsule)
    }
}
