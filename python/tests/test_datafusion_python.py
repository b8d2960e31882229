"""The datafusion-python door: a hive registered with register_catalog_provider."""

import json
from pathlib import Path

import datafusion
import pytest
from datafusion import SessionContext

import apiary
from conftest import orders, with_orders


def cell_files(ap, frame):
    """The active cells of `frame`: their statistics (from the ledger) and their files."""
    cells = ap.sql(f"SELECT path, stats FROM apiary_cells('{frame}')").to_pylist()
    root = Path(ap.storage)
    return [(json.loads(c["stats"]), next(root.rglob(c["path"]))) for c in cells]


def test_three_lines_with_a_filter_that_prunes(ap):
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(0, 100)))
    ap.write_to_frame("sales", "eu", "orders", orders(range(100, 200), region="de"))
    cells = cell_files(ap, "sales.eu.orders")
    assert len(cells) == 2

    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    query = "SELECT count(*) AS n, min(id) AS lo FROM sales.eu.orders WHERE id >= 150"
    assert ctx.sql(query).to_arrow_table().to_pylist() == [{"n": 50, "lo": 150}]

    # Remove the cell holding ids 0..99: a scan that reads it fails, one that pruned it
    # from the ledger's statistics does not — the filter crossed the FFI boundary.
    low = next(file for stats, file in cells if stats["id"]["min"] == "0")
    low.unlink()
    assert ctx.sql(query).to_arrow_table().to_pylist() == [{"n": 50, "lo": 150}]
    with pytest.raises(Exception, match=low.name):
        ctx.sql("SELECT sum(amount) FROM sales.eu.orders").to_arrow_table()


def test_the_object_store_crosses_with_the_provider(s3_url):
    # The host's runtime knows no s3:// store: the scan must run on Apiary's.
    ap = with_orders(apiary.Apiary("s3", storage=s3_url))
    ap.write_to_frame("sales", "eu", "orders", orders(range(10)))
    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    got = ctx.sql("SELECT sum(id) AS s FROM sales.eu.orders WHERE region = 'fr'")
    assert got.to_arrow_table().to_pylist() == [{"s": 45}]


def test_a_mismatched_datafusion_python_is_refused(ap, monkeypatch):
    with_orders(ap)
    monkeypatch.setattr(datafusion, "__version__", "54.1.0")
    ctx = SessionContext()
    with pytest.raises(Exception, match=r"datafusion-python 54\.1\.0.*datafusion==55"):
        ctx.register_catalog_provider("sales", ap.catalog("sales"))


def test_an_unknown_hive_is_named(ap):
    with pytest.raises(apiary.ApiaryError, match="hive nope not found"):
        ap.catalog("nope")


def test_the_host_sees_new_writes_and_boxes(ap):
    with_orders(ap)
    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    ap.write_to_frame("sales", "eu", "orders", orders(range(5)))
    assert ctx.sql("SELECT count(*) AS n FROM sales.eu.orders").to_arrow_table().to_pylist() == [
        {"n": 5}
    ]
    ap.create_box("sales", "us")
    assert "us" in ap.catalog("sales").schema_names()


def test_the_host_writes_through_insert(ap):
    with_orders(ap)
    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    ctx.sql("INSERT INTO sales.eu.orders VALUES (7, 'fr', 7.0), (8, 'de', 8.0)").collect()
    got = ap.sql("SELECT count(*) AS n, sum(id) AS s FROM sales.eu.orders").to_pylist()
    assert got == [{"n": 2, "s": 15}]
    history = ap.sql("SELECT count(*) AS n FROM apiary_history('sales.eu.orders')")
    assert history.column("n")[0].as_py() == 2  # the frame's creation and one commit


def test_the_host_cannot_delete_and_nothing_changes(ap):
    # datafusion-python's session is not Apiary's: no guard against a WHERE that DataFusion 55
    # would hand over as "every row", so row-level changes through the capsule are refused.
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(3)))
    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    for statement in [
        "DELETE FROM sales.eu.orders WHERE id = 1",
        "UPDATE sales.eu.orders SET amount = 0 WHERE id = 1",
        "TRUNCATE TABLE sales.eu.orders",
        "MERGE INTO sales.eu.orders AS o USING (SELECT 1 AS id) AS s ON o.id = s.id "
        "WHEN MATCHED THEN DELETE",
    ]:
        with pytest.raises(Exception):
            ctx.sql(statement).collect()
    assert ap.sql("SELECT count(*) AS n FROM sales.eu.orders").to_pylist() == [{"n": 3}]


def test_the_host_reads_renamed_columns_by_id(ap):
    # A column renamed after cells were written: the scan that crosses the FFI boundary reads
    # old cells by column id, so the new name has the old values and the new column of the old
    # name is NULL there.
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(3)))
    ap.sql("ALTER TABLE sales.eu.orders RENAME COLUMN amount TO total")
    ap.sql("ALTER TABLE sales.eu.orders ADD COLUMN amount DOUBLE")
    ctx = SessionContext()
    ctx.register_catalog_provider("sales", ap.catalog("sales"))
    got = ctx.sql(
        "SELECT count(total) AS totals, count(amount) AS amounts FROM sales.eu.orders WHERE total >= 0"
    ).to_arrow_table()
    assert got.to_pylist() == [{"totals": 3, "amounts": 0}]
