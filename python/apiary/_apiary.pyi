"""Type stubs of the native module `apiary._apiary` (re-exported by `apiary`)."""

from typing import Any, Literal, Protocol, TypedDict, overload

import pyarrow

__version__: str
DATAFUSION_FFI_MAJOR: int

class ArrowStreamExportable(Protocol):
    """Any Arrow stream: pyarrow Table / RecordBatchReader, polars DataFrame, …"""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

class ArrowSchemaExportable(Protocol):
    """Any Arrow schema, e.g. `pyarrow.Schema`."""

    def __arrow_c_schema__(self) -> object: ...

class ApiaryError(Exception):
    """An error of Apiary or DataFusion; the message is the Rust error's."""

class CommitInfo(TypedDict):
    version: int
    cells_added: int
    cells_removed: int
    rows_added: int
    rows_removed: int
    attempts: int

class Status(TypedDict):
    name: str
    storage: str
    cores: int
    memory_gb: float
    bees: int
    memory_per_bee: int
    busy_bees: int
    temperature: float
    band: str
    swarm: bool
    node_id: str | None
    endpoint: str | None

class NodeStatus(TypedDict):
    node: str
    state: Literal["alive", "suspect", "dead"]
    bees: int
    busy_bees: int
    temperature: float
    band: str
    cached_cells: int
    cache_bytes: int
    endpoint: str | None

class SwarmStatus(TypedDict):
    joined: bool
    node_id: str | None
    nodes: list[NodeStatus]
    total_bees: int
    idle_bees: int

class ColonyStatus(TypedDict):
    temperature: float
    band: str
    bees: int
    busy_bees: int
    reserved_bytes: int
    budget_bytes: int
    waiting: int
    queue_capacity: int

class BeeStatus(TypedDict):
    bee: int
    state: Literal["idle", "busy"]
    memory_budget: int

class ArrowStream:
    """Query results on their way to pyarrow; readable once."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

class HiveCatalog:
    """A hive for `datafusion.SessionContext.register_catalog_provider` (datafusion-python 55)."""

    @property
    def name(self) -> str: ...
    def schema_names(self) -> list[str]: ...
    def __datafusion_catalog_provider__(self, session: Any) -> object: ...

class Apiary:
    """One Apiary: frames in a folder or bucket, SQL on this node's bees, the swarm after start()."""

    def __init__(self, name: str, storage: str | None = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def storage(self) -> str: ...
    def start(
        self, http: str | None = None, redact_sql: bool = False, listen: str | None = None
    ) -> str | None: ...
    def shutdown(self) -> None: ...
    def __enter__(self) -> Apiary: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...
    def status(self) -> Status: ...
    def swarm_status(self) -> SwarmStatus: ...
    def colony_status(self) -> ColonyStatus: ...
    def bee_status(self) -> list[BeeStatus]: ...
    def create_hive(self, hive: str, exist_ok: bool = False) -> None: ...
    def create_box(self, hive: str, box_: str, exist_ok: bool = False) -> None: ...
    def create_frame(
        self,
        hive: str,
        box_: str,
        frame: str,
        schema: ArrowSchemaExportable | dict[str, str],
        partition_by: list[str] | None = None,
        exist_ok: bool = False,
    ) -> None: ...
    def create_database(self, name: str, exist_ok: bool = False) -> None: ...
    def create_schema(self, database: str, name: str, exist_ok: bool = False) -> None: ...
    def create_table(
        self,
        database: str,
        schema_name: str,
        name: str,
        schema: ArrowSchemaExportable,
        partition_by: list[str] | None = None,
        exist_ok: bool = False,
    ) -> None: ...
    def list_hives(self) -> list[str]: ...
    def list_boxes(self, hive: str) -> list[str]: ...
    def list_frames(self, hive: str, box_: str) -> list[str]: ...
    def list_databases(self) -> list[str]: ...
    def list_schemas(self, database: str) -> list[str]: ...
    def list_tables(self, database: str, schema: str) -> list[str]: ...
    def write_to_frame(
        self,
        hive: str,
        box_: str,
        frame: str,
        data: ArrowStreamExportable,
        schema_mode: str | None = None,
    ) -> CommitInfo: ...
    def overwrite_frame(
        self, hive: str, box_: str, frame: str, data: ArrowStreamExportable
    ) -> CommitInfo: ...
    @overload
    def sql(self, query: str, stream: Literal[False] = False) -> pyarrow.Table: ...
    @overload
    def sql(self, query: str, stream: Literal[True]) -> pyarrow.RecordBatchReader: ...
    def catalog(self, hive: str) -> HiveCatalog: ...
