//! The `Apiary` class: one meadow, its bees, and this process's place in the swarm.

use std::sync::Arc;

use parking_lot::Mutex;

use apiary::catalog::{CommitInfo, FrameSpec, IfExists, RegistryState, SortKey, SortOrder};
use apiary::exec::Spill;
use apiary::swarm::{NodeState, SwarmConfig, WorldView};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ffi_stream::ArrowArrayStreamReader;
use datafusion::arrow::record_batch::RecordBatchReader;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrow::{ArrowStream, import_schema, import_stream};
use crate::catalog::HiveCatalog;
use crate::error::{Error, Result};
use crate::runtime::wait;

/// An Apiary: frames in a local folder or a bucket, SQL on this node's bees, and — after
/// `start()` — a member of the swarm of every node that uses the same storage.
#[pyclass(frozen, module = "apiary", name = "Apiary")]
pub struct PyApiary {
    name: String,
    storage: String,
    ap: apiary::Apiary,
    /// The session `sql()` runs in; made again when the node joins or leaves the swarm.
    session: Mutex<SessionContext>,
    /// The status server `start(http=…)` started, until `shutdown()`.
    status: Mutex<Option<apiary::StatusServer>>,
}

/// An Arrow schema from `{"column": "type name"}` (pyarrow's names: `int64`, `float64`,
/// `string`, `bool`, `date32`, `timestamp[us]`, …), the columns nullable, in the dict's order.
fn schema_of_names(
    py: Python<'_>,
    columns: &Bound<'_, PyDict>,
) -> PyResult<datafusion::arrow::datatypes::SchemaRef> {
    let pa = py.import("pyarrow")?;
    let fields = PyList::empty(py);
    for (name, type_name) in columns.iter() {
        let column: String = name.extract().map_err(|_| {
            Error::Invalid(format!(
                "schema: a column name must be a string, got {name}"
            ))
        })?;
        let type_name: String = type_name.extract().map_err(|_| {
            Error::Invalid(format!(
                "schema: the type of column {column:?} must be a type name like \"int64\", got {type_name}"
            ))
        })?;
        let data_type = pa.call_method1("type_for_alias", (&type_name,)).map_err(|e| {
            Error::Invalid(format!(
                "schema: column {column:?} has type {type_name:?}, which is not an Arrow type name \
                 (int64, float64, string, bool, date32, timestamp[us], …): {e}"
            ))
        })?;
        fields.append(pa.call_method1("field", (column, data_type))?)?;
    }
    let schema = pa.call_method1("schema", (fields,))?;
    Ok(import_schema(&schema, "schema")?)
}

/// `~/.apiary/{name}` (see [`apiary::default_storage`]).
fn default_storage(name: &str) -> Result<String> {
    apiary::default_storage(name)
        .ok_or_else(|| Error::Invalid("HOME is not set: pass storage=… explicitly".into()))
}

fn validate_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(Error::Invalid(format!(
            "invalid Apiary name {name:?}: it names a folder below ~/.apiary, so it must be a \
             plain non-empty name without path separators"
        )));
    }
    Ok(())
}

fn if_exists(exist_ok: bool) -> IfExists {
    if exist_ok {
        IfExists::Keep
    } else {
        IfExists::Fail
    }
}

fn commit_dict<'py>(py: Python<'py>, info: &CommitInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", info.version)?;
    d.set_item("cells_added", info.cells_added)?;
    d.set_item("cells_removed", info.cells_removed)?;
    d.set_item("rows_added", info.rows_added)?;
    d.set_item("rows_removed", info.rows_removed)?;
    d.set_item("attempts", info.attempts)?;
    Ok(d)
}

/// The batches of a C stream reader as an async stream: a thread reads them (a Python-backed
/// producer takes the GIL itself), a small channel bounds what is read ahead.
fn batches_of(
    reader: ArrowArrayStreamReader,
) -> impl futures::Stream<Item = std::result::Result<RecordBatch, ArrowError>> + Send + Unpin {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || {
        for batch in reader {
            if tx.blocking_send(batch).is_err() {
                break; // the writer gave up
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    }))
}

impl PyApiary {
    /// Names picked from the namespace as just re-read, sorted.
    fn names(
        &self,
        py: Python<'_>,
        pick: impl FnOnce(&RegistryState) -> Result<Vec<String>> + Send,
    ) -> PyResult<Vec<String>> {
        let registry = self.ap.registry().clone();
        wait(py, async move {
            let mut names = pick(&*registry.refresh().await?)?;
            names.sort();
            Ok(names)
        })
    }

    fn write(
        &self,
        py: Python<'_>,
        hive: String,
        box_: String,
        frame: String,
        data: &Bound<'_, PyAny>,
        kind: WriteKind,
    ) -> PyResult<Py<PyDict>> {
        let reader = import_stream(data, "data")?;
        let catalog = self.ap.providers().clone();
        let (bees, session) = (
            self.ap.bees().clone(),
            self.ap.session().map_err(Error::from)?,
        );
        let info = wait(py, async move {
            let Some(target) = catalog.frame(&hive, &box_, &frame).await? else {
                // The namespace (just re-read) names what is missing: hive, box or frame.
                catalog.registry().snapshot().frame(&hive, &box_, &frame)?;
                return Err(Error::Invalid(format!(
                    "frame {hive}.{box_}.{frame} was dropped while being opened"
                )));
            };
            if kind == WriteKind::AppendMergingSchema {
                // The frame first takes the data's new columns and wider types (a commit).
                target.merge_schema(&reader.schema(), "WRITE").await?;
            }
            // A mismatched schema fails here, before anything is read or written.
            target
                .cell_writer(&target.ledger().latest())?
                .check_schema(&reader.schema())?;
            let schema = reader.schema();
            let batches = batches_of(reader);
            let (operation, replace) = match kind {
                WriteKind::Overwrite => ("OVERWRITE", true),
                _ => ("WRITE", false),
            };
            if SortOrder::of(&target.ledger().latest().properties)?.is_some() {
                // A clustered frame: the rows are sorted first, in a chamber of the bees.
                let ctx = session.task_ctx();
                let chamber = bees
                    .acquire(1, &ctx.runtime_env(), Spill::ToScratch)
                    .await
                    .map_err(DataFusionError::from)?;
                let stream =
                    RecordBatchStreamAdapter::new(schema, batches.map_err(DataFusionError::from));
                let info = target
                    .write_sorted(
                        Box::pin(stream),
                        chamber.task_context(&ctx),
                        operation,
                        replace,
                    )
                    .await?;
                return Ok(info);
            }
            let info = if replace {
                target.overwrite(batches, operation).await?
            } else {
                target.append(batches, operation).await?
            };
            Ok(info)
        })?;
        Ok(commit_dict(py, &info)?.unbind())
    }
}

/// What a write does with the frame's rows and schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Append,
    /// The frame first takes the data's new columns and wider types.
    AppendMergingSchema,
    /// Every row replaced.
    Overwrite,
}

#[pymethods]
impl PyApiary {
    /// Opens (creating if needed) the Apiary stored at `storage`: a folder path,
    /// `file:///abs/path`, `s3://bucket/prefix` (credentials and endpoint from `AWS_*`, or
    /// `?endpoint=…&region=…`) or `memory://`. Without `storage`, `~/.apiary/{name}`.
    #[new]
    #[pyo3(signature = (name, storage = None))]
    fn new(py: Python<'_>, name: String, storage: Option<String>) -> PyResult<Self> {
        validate_name(&name)?;
        let storage = match storage {
            Some(s) => s,
            None => default_storage(&name)?,
        };
        let url = storage.clone();
        let ap = wait(py, async move { Ok(apiary::Apiary::open(&url).await?) })?;
        let session = ap.session().map_err(Error::from)?;
        Ok(Self {
            name,
            storage,
            ap,
            session: Mutex::new(session),
            status: Mutex::new(None),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn storage(&self) -> &str {
        &self.storage
    }

    /// Joins the swarm: this node heartbeats, works other nodes' tasks, and `sql()` distributes
    /// large scans over the live nodes. With `listen="127.0.0.1:PORT"` it also serves the direct
    /// path's worker there (port 0 picks one; `status()["endpoint"]` tells it), as
    /// `apiary node --listen` does. With `http="127.0.0.1:PORT"` it also serves its status
    /// page, `/metrics` and `/api/status` there (port 0 picks one) and returns the page's URL.
    /// Idempotent.
    #[pyo3(signature = (http = None, redact_sql = false, listen = None))]
    fn start(
        &self,
        py: Python<'_>,
        http: Option<String>,
        redact_sql: bool,
        listen: Option<String>,
    ) -> PyResult<Option<String>> {
        let listen = listen
            .map(|addr| {
                addr.parse::<std::net::SocketAddr>().map_err(|e| {
                    Error::Invalid(format!(
                        "listen={addr:?} is not an address like 127.0.0.1:50051: {e}"
                    ))
                })
            })
            .transpose()?;
        match self.ap.swarm() {
            None => {
                let config = SwarmConfig {
                    listen,
                    ..SwarmConfig::default()
                };
                wait(py, async {
                    self.ap.join_swarm(config).await?;
                    Ok(())
                })?;
                *self.session.lock() = self.ap.session().map_err(Error::from)?;
            }
            Some(node) if listen.is_some() && node.status().endpoint.is_none() => {
                return Err(Error::Invalid(
                    "this node joined the swarm without listen=: call shutdown() first".into(),
                )
                .into());
            }
            Some(_) => {}
        }
        if let Some(addr) = http
            && self.status.lock().is_none()
        {
            let addr: std::net::SocketAddr = addr.parse().map_err(|e| {
                Error::Invalid(format!(
                    "http={addr:?} is not an address like 127.0.0.1:9464: {e}"
                ))
            })?;
            let ap = self.ap.clone();
            let server = wait(py, async move {
                Ok(ap
                    .serve_status(addr, apiary::StatusOptions { redact_sql })
                    .await?)
            })?;
            *self.status.lock() = Some(server);
        }
        Ok(self
            .status
            .lock()
            .as_ref()
            .map(|s| format!("http://{}/", s.local_addr())))
    }

    /// Leaves the swarm (this node's heartbeat is removed) and stops the status server.
    /// Idempotent.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        // Stopped before this returns: its address is free (and refuses) afterwards.
        let status = self.status.lock().take();
        if let Some(server) = status {
            wait(py, async move {
                server.stop().await;
                Ok(())
            })?;
        }
        wait(py, async {
            self.ap.leave_swarm().await?;
            Ok(())
        })?;
        *self.session.lock() = self.ap.session().map_err(Error::from)?;
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.shutdown(py)?;
        Ok(false)
    }

    /// This node: cores, memory, bees, temperature, and whether it is in the swarm.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pool = self.ap.bees();
        let node = pool.node();
        let t = self.ap.colony().temperature();
        let d = PyDict::new(py);
        d.set_item("name", &self.name)?;
        d.set_item("storage", &self.storage)?;
        d.set_item("cores", node.cores)?;
        d.set_item("memory_gb", node.memory as f64 / (1u64 << 30) as f64)?;
        d.set_item("bees", pool.bees())?;
        d.set_item("memory_per_bee", pool.budget_per_bee())?;
        d.set_item("busy_bees", t.busy_bees)?;
        d.set_item("temperature", t.value)?;
        d.set_item("band", t.band.to_string())?;
        let swarm = self.ap.swarm();
        d.set_item("swarm", swarm.is_some())?;
        d.set_item("node_id", swarm.as_ref().map(|s| s.id().to_string()))?;
        d.set_item("endpoint", swarm.and_then(|s| s.status().endpoint))?;
        Ok(d)
    }

    /// Every node of the swarm as the heartbeats show it. Liveness is judged over time: after
    /// `start()` by this node's own world view; before, from one look at the heartbeats.
    fn swarm_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let swarm = self.ap.swarm();
        let nodes = match &swarm {
            Some(node) => node.status().nodes,
            None => {
                let world = WorldView::new(self.ap.meadow().clone(), SwarmConfig::default());
                wait(py, async move { Ok(world.poll().await?) })?
            }
        };
        let list = PyList::empty(py);
        let (mut total, mut idle) = (0usize, 0usize);
        for n in &nodes {
            let h = &n.heartbeat;
            let alive = n.state == NodeState::Alive;
            if alive {
                total += h.bees;
                idle += h.bees.saturating_sub(h.busy_bees);
            }
            let d = PyDict::new(py);
            d.set_item("node", &h.node_id)?;
            d.set_item("state", n.state.to_string())?;
            d.set_item("bees", h.bees)?;
            d.set_item("busy_bees", h.busy_bees)?;
            d.set_item("temperature", h.temperature)?;
            d.set_item("band", h.band.to_string())?;
            d.set_item("cached_cells", h.cache_cells)?;
            d.set_item("cache_bytes", h.cache_bytes)?;
            d.set_item("endpoint", &h.endpoint)?;
            list.append(d)?;
        }
        let d = PyDict::new(py);
        d.set_item("joined", swarm.is_some())?;
        d.set_item("node_id", swarm.as_ref().map(|s| s.id().to_string()))?;
        d.set_item("nodes", list)?;
        d.set_item("total_bees", total)?;
        d.set_item("idle_bees", idle)?;
        Ok(d)
    }

    /// The colony temperature: how busy this node's bees are, and the band that regulates writes.
    fn colony_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.ap.colony().temperature();
        let d = PyDict::new(py);
        d.set_item("temperature", t.value)?;
        d.set_item("band", t.band.to_string())?;
        d.set_item("bees", t.bees)?;
        d.set_item("busy_bees", t.busy_bees)?;
        d.set_item("reserved_bytes", t.reserved)?;
        d.set_item("budget_bytes", t.budget)?;
        d.set_item("waiting", t.waiting)?;
        d.set_item("queue_capacity", t.queue_capacity)?;
        Ok(d)
    }

    /// Each bee: its id, whether it is in a chamber now, and its memory budget.
    fn bee_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.ap.bees();
        let list = PyList::empty(py);
        for (bee, busy) in pool.busy_bees().into_iter().enumerate() {
            let d = PyDict::new(py);
            d.set_item("bee", bee)?;
            d.set_item("state", if busy { "busy" } else { "idle" })?;
            d.set_item("memory_budget", pool.budget_per_bee())?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Creates a hive (a database).
    #[pyo3(signature = (hive, exist_ok = false))]
    fn create_hive(&self, py: Python<'_>, hive: String, exist_ok: bool) -> PyResult<()> {
        let registry = self.ap.registry().clone();
        wait(py, async move {
            registry.create_hive(&hive, if_exists(exist_ok)).await?;
            Ok(())
        })
    }

    /// Creates a box (a schema) in `hive`.
    #[pyo3(signature = (hive, box_, exist_ok = false))]
    fn create_box(
        &self,
        py: Python<'_>,
        hive: String,
        box_: String,
        exist_ok: bool,
    ) -> PyResult<()> {
        let registry = self.ap.registry().clone();
        wait(py, async move {
            registry
                .create_box(&hive, &box_, if_exists(exist_ok))
                .await?;
            Ok(())
        })
    }

    /// Creates a frame (a table) with an Arrow `schema` (e.g. a `pyarrow.Schema`), optionally
    /// partitioned by some of its columns, and optionally clustered: `sort_by=["day", "id
    /// DESC"]` sorts the rows of every SQL write by those keys (`WITH ORDER` in SQL).
    #[pyo3(signature = (hive, box_, frame, schema, partition_by = None, exist_ok = false, sort_by = None))]
    #[allow(clippy::too_many_arguments)]
    fn create_frame(
        &self,
        py: Python<'_>,
        hive: String,
        box_: String,
        frame: String,
        schema: Bound<'_, PyAny>,
        partition_by: Option<Vec<String>>,
        exist_ok: bool,
        sort_by: Option<Vec<String>>,
    ) -> PyResult<()> {
        let schema = match schema.cast::<PyDict>() {
            Ok(columns) => schema_of_names(py, columns)?,
            Err(_) => import_schema(&schema, "schema")?,
        };
        let mut spec = FrameSpec::new(schema).with_partition_by(partition_by.unwrap_or_default());
        if let Some(keys) = sort_by {
            let keys = keys
                .iter()
                .map(|k| sort_key(k))
                .collect::<Result<Vec<_>>>()?;
            spec = spec.with_sort_order(&SortOrder::new(keys));
        }
        let registry = self.ap.registry().clone();
        wait(py, async move {
            registry
                .create_frame(&hive, &box_, &frame, &spec, if_exists(exist_ok))
                .await?;
            Ok(())
        })
    }

    /// `create_hive` under its SQL name.
    #[pyo3(signature = (name, exist_ok = false))]
    fn create_database(&self, py: Python<'_>, name: String, exist_ok: bool) -> PyResult<()> {
        self.create_hive(py, name, exist_ok)
    }

    /// `create_box` under its SQL name.
    #[pyo3(signature = (database, name, exist_ok = false))]
    fn create_schema(
        &self,
        py: Python<'_>,
        database: String,
        name: String,
        exist_ok: bool,
    ) -> PyResult<()> {
        self.create_box(py, database, name, exist_ok)
    }

    /// `create_frame` under its SQL name.
    #[pyo3(signature = (database, schema_name, name, schema, partition_by = None, exist_ok = false))]
    #[allow(clippy::too_many_arguments)]
    fn create_table(
        &self,
        py: Python<'_>,
        database: String,
        schema_name: String,
        name: String,
        schema: Bound<'_, PyAny>,
        partition_by: Option<Vec<String>>,
        exist_ok: bool,
    ) -> PyResult<()> {
        self.create_frame(
            py,
            database,
            schema_name,
            name,
            schema,
            partition_by,
            exist_ok,
            None,
        )
    }

    /// The hives, sorted.
    fn list_hives(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.names(py, |s| Ok(s.hive_names()))
    }

    /// The boxes of `hive`, sorted.
    fn list_boxes(&self, py: Python<'_>, hive: String) -> PyResult<Vec<String>> {
        self.names(py, move |s| Ok(s.box_names(&hive)?))
    }

    /// The frames of `hive.box_`, sorted.
    fn list_frames(&self, py: Python<'_>, hive: String, box_: String) -> PyResult<Vec<String>> {
        self.names(py, move |s| Ok(s.frame_names(&hive, &box_)?))
    }

    fn list_databases(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.list_hives(py)
    }

    fn list_schemas(&self, py: Python<'_>, database: String) -> PyResult<Vec<String>> {
        self.list_boxes(py, database)
    }

    fn list_tables(
        &self,
        py: Python<'_>,
        database: String,
        schema: String,
    ) -> PyResult<Vec<String>> {
        self.list_frames(py, database, schema)
    }

    /// Appends `data` — any Arrow stream (`__arrow_c_stream__`: a pyarrow Table or
    /// RecordBatchReader, a polars DataFrame, …) — to the frame in one commit. Columns are
    /// matched by name; the batches are read as they are written, never all held at once.
    /// `schema_mode="merge"`: columns the frame lacks are added and types the data widens are
    /// widened first, in a commit of their own (as delta-rs's `schema_mode="merge"`).
    #[pyo3(signature = (hive, box_, frame, data, schema_mode = None))]
    fn write_to_frame(
        &self,
        py: Python<'_>,
        hive: String,
        box_: String,
        frame: String,
        data: Bound<'_, PyAny>,
        schema_mode: Option<String>,
    ) -> PyResult<Py<PyDict>> {
        let kind = match schema_mode.as_deref() {
            None => WriteKind::Append,
            Some("merge") => WriteKind::AppendMergingSchema,
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "schema_mode must be \"merge\" or None, not {other:?}"
                ))
                .into());
            }
        };
        self.write(py, hive, box_, frame, &data, kind)
    }

    /// Replaces every row of the frame with `data` in one commit (see `write_to_frame`).
    fn overwrite_frame(
        &self,
        py: Python<'_>,
        hive: String,
        box_: String,
        frame: String,
        data: Bound<'_, PyAny>,
    ) -> PyResult<Py<PyDict>> {
        self.write(py, hive, box_, frame, &data, WriteKind::Overwrite)
    }

    /// Runs one SQL statement on this node's bees (and the swarm, after `start()`) and returns
    /// its result as a `pyarrow.Table`; with `stream=True` as a `pyarrow.RecordBatchReader`
    /// that runs the query as its batches are read (for results larger than memory). Ctrl-C
    /// cancels it while it runs in `sql()`.
    #[pyo3(signature = (query, stream = false))]
    fn sql<'py>(
        &self,
        py: Python<'py>,
        query: String,
        stream: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ctx = self.session.lock().clone();
        let ap = self.ap.clone();
        if stream {
            let batches = wait(py, async move {
                let df = ap.sql(&ctx, &query).await?;
                Ok(df.execute_stream().await?)
            })?;
            let reader = Bound::new(py, ArrowStream::streaming(batches)?)?;
            return py
                .import("pyarrow")?
                .getattr("RecordBatchReader")?
                .call_method1("from_stream", (reader,));
        }
        let (schema, batches) = wait(py, async move {
            // Apiary's statements too: CREATE OR REPLACE of a frame in one atomic step.
            let df = ap.sql(&ctx, &query).await?;
            let schema = Arc::clone(df.schema().inner());
            let batches = df.collect().await?;
            let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);
            Ok((schema, batches))
        })?;
        let stream = Bound::new(py, ArrowStream::new(schema, batches))?;
        py.import("pyarrow")?.call_method1("table", (stream,))
    }

    /// The hive as a catalog provider for datafusion-python 55:
    /// `ctx.register_catalog_provider("sales", ap.catalog("sales"))`.
    fn catalog(&self, py: Python<'_>, hive: String) -> PyResult<HiveCatalog> {
        let ap = self.ap.clone();
        let name = hive.clone();
        let provider = wait(
            py,
            async move { Ok(ap.catalog_with_own_runtime(&name).await?) },
        )?;
        Ok(HiveCatalog::new(hive, provider))
    }

    fn __repr__(&self) -> String {
        format!("Apiary({:?}, storage={:?})", self.name, self.storage)
    }
}

/// `"day"`, `"day DESC"`, `"day ASC NULLS FIRST"`: one key of `sort_by`.
fn sort_key(text: &str) -> Result<SortKey> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let column = text.split_whitespace().next().unwrap_or_default();
    let rest: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
    let (descending, nulls) = match rest.as_slice() {
        [] | ["ASC"] => (false, None),
        ["DESC"] => (true, None),
        ["ASC", "NULLS", n] => (false, Some(*n)),
        ["DESC", "NULLS", n] => (true, Some(*n)),
        ["NULLS", n] => (false, Some(*n)),
        _ => (false, Some("?")),
    };
    let nulls_first = match nulls {
        None => descending,
        Some("FIRST") => true,
        Some("LAST") => false,
        Some(_) => {
            return Err(Error::Invalid(format!(
                "sort key {text:?}: write \"column [ASC|DESC] [NULLS FIRST|LAST]\""
            )));
        }
    };
    if column.is_empty() {
        return Err(Error::Invalid("an empty sort key".into()));
    }
    Ok(SortKey {
        column: column.to_string(),
        descending,
        nulls_first,
    })
}
