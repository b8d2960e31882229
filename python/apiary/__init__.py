"""Apiary: a lakehouse for small compute, from Python.

``Apiary`` is the SDK (frames, writes from any Arrow stream, SQL on this node's bees, the
swarm); ``Apiary.catalog(hive)`` hands a hive to datafusion-python 55::

    from datafusion import SessionContext
    import apiary

    ap = apiary.Apiary("demo", storage="file:///data/demo")
    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    ctx.sql("SELECT * FROM sales.eu.orders WHERE region = 'fr'").to_arrow_table()
"""

from ._apiary import (
    DATAFUSION_FFI_MAJOR,
    Apiary,
    ApiaryError,
    ArrowStream,
    HiveCatalog,
    __version__,
)

__all__ = [
    "DATAFUSION_FFI_MAJOR",
    "Apiary",
    "ApiaryError",
    "ArrowStream",
    "HiveCatalog",
    "__version__",
]
