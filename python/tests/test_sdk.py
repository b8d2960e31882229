"""The Apiary class: namespace, writes from Arrow streams, SQL, status, bad input."""

import _thread
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import apiary
from conftest import ORDERS, orders, with_orders


def count(ap, where="true"):
    return ap.sql(f"SELECT count(*) AS n FROM sales.eu.orders WHERE {where}").column("n")[0].as_py()


def version(ap):
    history = ap.sql("SELECT max(version) AS v FROM apiary_history('sales.eu.orders')")
    return history.column("v")[0].as_py()


def test_namespace_and_sql_aliases(ap):
    ap.create_database("sales")
    ap.create_schema("sales", "eu")
    ap.create_table("sales", "eu", "orders", ORDERS, exist_ok=True)
    ap.create_hive("sales", exist_ok=True)
    assert ap.list_hives() == ap.list_databases() == ["sales"]
    assert ap.list_boxes("sales") == ap.list_schemas("sales") == ["eu"]
    assert ap.list_frames("sales", "eu") == ap.list_tables("sales", "eu") == ["orders"]
    with pytest.raises(apiary.ApiaryError, match="hive sales already exists"):
        ap.create_hive("sales")
    described = ap.sql("SELECT column_name FROM information_schema.columns "
                       "WHERE table_catalog = 'sales' ORDER BY ordinal_position")
    assert described.column(0).to_pylist() == ["id", "region", "amount"]


def test_writes_from_tables_readers_and_generators(ap):
    with_orders(ap)
    first = ap.write_to_frame("sales", "eu", "orders", orders(range(10)))
    assert first["rows_added"] == 10 and first["version"] == 1

    # A RecordBatchReader over a Python generator: batches are pulled while Rust writes.
    def batches():
        for start in range(10, 1010, 100):
            yield from orders(range(start, start + 100), region="de").to_batches()

    reader = pa.RecordBatchReader.from_batches(ORDERS, batches())
    second = ap.write_to_frame("sales", "eu", "orders", reader)
    assert second["rows_added"] == 1000 and second["version"] == 2  # one commit
    assert count(ap) == 1010 and count(ap, "region = 'de'") == 1000

    # Columns are matched by name, whatever their order.
    shuffled = orders([5000]).select(["amount", "region", "id"])
    ap.write_to_frame("sales", "eu", "orders", shuffled)
    assert count(ap, "id = 5000") == 1

    replaced = ap.overwrite_frame("sales", "eu", "orders", orders(range(3)))
    assert replaced["rows_added"] == 3 and replaced["rows_removed"] == 1011
    assert count(ap) == 3


def test_partitioned_frames(ap):
    ap.create_hive("sales")
    ap.create_box("sales", "eu")
    ap.create_frame("sales", "eu", "orders", ORDERS, partition_by=["region"])
    data = pa.concat_tables([orders(range(5), "fr"), orders(range(5, 8), "de")])
    info = ap.write_to_frame("sales", "eu", "orders", data)
    assert info["cells_added"] == 2
    cells = ap.sql("SELECT partition FROM apiary_cells('sales.eu.orders') ORDER BY partition")
    assert cells.column(0).to_pylist() == ["region=de", "region=fr"]


def test_sql_returns_pyarrow_tables(ap):
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(4)))
    table = ap.sql("SELECT region, sum(amount) AS total FROM sales.eu.orders GROUP BY region")
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"region": "fr", "total": 6.0}]
    empty = ap.sql("SELECT * FROM sales.eu.orders WHERE id < 0")
    assert empty.num_rows == 0 and empty.schema.names == ["id", "region", "amount"]
    # DDL and DML through SQL reach the same storage.
    ap.sql("CREATE SCHEMA sales.us")
    ap.sql("INSERT INTO sales.eu.orders VALUES (9, 'it', 9.0)")
    assert "us" in ap.list_boxes("sales") and count(ap) == 5


def test_row_changes_through_sql(ap):
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(6)))
    assert ap.sql("DELETE FROM sales.eu.orders WHERE id < 2").to_pylist() == [{"count": 2}]
    assert ap.sql("UPDATE sales.eu.orders SET amount = 0 WHERE id = 5").to_pylist() == [
        {"count": 1}
    ]
    got = ap.sql("SELECT id, amount FROM sales.eu.orders ORDER BY id").to_pylist()
    assert [r["id"] for r in got] == [2, 3, 4, 5] and got[-1]["amount"] == 0.0
    with pytest.raises(apiary.ApiaryError, match="refused"):
        ap.sql("DELETE FROM sales.eu.orders WHERE id IN (SELECT 1)")
    assert ap.sql("TRUNCATE TABLE sales.eu.orders").to_pylist() == [{"count": 4}]
    assert count(ap) == 0


def test_write_to_frame_can_merge_the_schema(ap):
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(2)))
    wider = pa.table(
        {
            "id": pa.array([7], pa.int64()),
            "region": ["de"],
            "amount": [7.0],
            "channel": ["web"],
        }
    )
    with pytest.raises(apiary.ApiaryError, match="channel"):
        ap.write_to_frame("sales", "eu", "orders", wider)
    ap.write_to_frame("sales", "eu", "orders", wider, schema_mode="merge")
    got = ap.sql("SELECT id, channel FROM sales.eu.orders ORDER BY id").to_pylist()
    assert got == [
        {"id": 0, "channel": None},
        {"id": 1, "channel": None},
        {"id": 7, "channel": "web"},
    ]
    with pytest.raises(apiary.ApiaryError, match="schema_mode"):
        ap.write_to_frame("sales", "eu", "orders", wider, schema_mode="sometimes")


def test_use_and_show(ap):
    with_orders(ap)
    assert ap.sql("SHOW HIVES").to_pylist() == [{"hive": "sales"}]
    assert ap.sql("SHOW BOXES IN sales").to_pylist() == [{"box": "eu"}]
    ap.sql("USE sales.eu")
    ap.write_to_frame("sales", "eu", "orders", orders(range(2)))
    assert ap.sql("SELECT count(*) AS n FROM orders").to_pylist() == [{"n": 2}]
    with pytest.raises(apiary.ApiaryError, match="hive nope not found"):
        ap.sql("USE nope")
    with pytest.raises(apiary.ApiaryError, match="invalid hive name"):
        ap.sql('CREATE DATABASE "bad-hive"')
    ap.sql("ALTER TABLE orders ADD COLUMN note VARCHAR")
    assert ap.sql("SELECT count(*) AS n FROM orders WHERE note IS NULL").to_pylist() == [{"n": 2}]


def test_bad_input_is_named_and_commits_nothing(ap, tmp_path):
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders(range(3)))
    before = version(ap)

    with pytest.raises(apiary.ApiaryError, match="frame sales.eu.nope not found"):
        ap.write_to_frame("sales", "eu", "nope", orders([1]))
    with pytest.raises(apiary.ApiaryError, match="box sales.xx not found"):
        ap.write_to_frame("sales", "xx", "orders", orders([1]))
    wrong = pa.table({"id": ["not a number"], "region": ["fr"], "amount": [1.0]})
    with pytest.raises(apiary.ApiaryError, match="column id"):
        ap.write_to_frame("sales", "eu", "orders", wrong)
    extra = orders([1]).append_column("note", pa.array(["x"]))
    with pytest.raises(apiary.ApiaryError, match="column note"):
        ap.overwrite_frame("sales", "eu", "orders", extra)
    with pytest.raises(TypeError, match=r"__arrow_c_stream__.*got list"):
        ap.write_to_frame("sales", "eu", "orders", [{"id": 1}])
    with pytest.raises(TypeError, match=r"__arrow_c_schema__.*got list"):
        ap.create_frame("sales", "eu", "other", [("id", "int64")])
    with pytest.raises(apiary.ApiaryError, match="not_a_table"):
        ap.sql("SELECT * FROM sales.eu.not_a_table")

    # A stream that fails half-way: the cells already written are removed, nothing lands.
    def failing():
        yield from orders(range(100, 200)).to_batches()
        raise ValueError("the producer broke")

    with pytest.raises(apiary.ApiaryError, match="the producer broke"):
        ap.write_to_frame("sales", "eu", "orders", pa.RecordBatchReader.from_batches(ORDERS, failing()))

    assert version(ap) == before and count(ap) == 3
    frame_dir = next(Path(ap.storage).rglob("orders"))
    assert len(list(frame_dir.rglob("*.parquet"))) == 1

    with pytest.raises(apiary.ApiaryError, match="ftp://nowhere"):
        apiary.Apiary("x", storage="ftp://nowhere/data")
    with pytest.raises(apiary.ApiaryError, match="invalid Apiary name"):
        apiary.Apiary("../escape")


def test_status_colony_bees_and_swarm(ap):
    status = ap.status()
    assert status["cores"] >= 1 and status["memory_gb"] > 0
    assert status["bees"] >= 1 and status["memory_per_bee"] > 0
    assert status["swarm"] is False and status["node_id"] is None
    colony = ap.colony_status()
    assert colony["bees"] == status["bees"] and colony["band"] == "cold"
    bees = ap.bee_status()
    assert [b["bee"] for b in bees] == list(range(status["bees"]))
    assert {b["state"] for b in bees} == {"idle"}
    assert ap.swarm_status()["nodes"] == []

    with ap:
        ap.start()
        ap.start()  # idempotent
        node = ap.status()["node_id"]
        assert node
        heartbeat = Path(ap.storage, "_heartbeats", f"node_{node}.json")
        assert heartbeat.exists()
        swarm = ap.swarm_status()
        assert swarm["joined"] and [n["node"] for n in swarm["nodes"]] == [node]
        # A second Apiary on the same storage sees this node from its heartbeat.
        other = apiary.Apiary("other", storage=ap.storage)
        assert [n["node"] for n in other.swarm_status()["nodes"]] == [node]
    assert not heartbeat.exists()  # left on __exit__
    assert ap.status()["swarm"] is False


def test_ctrl_c_cancels_a_running_query_and_the_gil_is_free(ap):
    ticks = 0
    stop = threading.Event()

    def tick():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            ap.sql("SELECT count(*) FROM generate_series(1, 1000000000000) AS a(x) WHERE x % 7 = 3")
    finally:
        stop.set()
        ticker.join()
        timer.cancel()
    elapsed = time.monotonic() - started
    # Uncancelled, the query would run for hours: the bound only needs room for a loaded machine.
    assert elapsed < 60, f"Ctrl-C took {elapsed:.1f} s"
    assert ticks > 20, "another Python thread could not run during the query (GIL held?)"
    deadline = time.monotonic() + 30
    while {b["state"] for b in ap.bee_status()} != {"idle"}:
        assert time.monotonic() < deadline, "the cancelled query still holds bees"
        time.sleep(0.05)


def test_type_stubs_ship_with_the_package():
    package = Path(apiary.__file__).parent
    assert (package / "py.typed").exists()
    stub = (package / "_apiary.pyi").read_text()
    for name in ["class Apiary", "def write_to_frame", "def catalog", "class HiveCatalog"]:
        assert name in stub


def test_create_frame_from_type_names(ap):
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "t", {"id": "int64", "v": "float64", "name": "string"})
    ap.write_to_frame("h", "b", "t", pa.table({"id": [1, 2], "v": [0.5, 1.5], "name": ["a", "b"]}))
    described = ap.sql("SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_name = 't' ORDER BY ordinal_position")
    assert described.column(0).to_pylist() == ["id", "v", "name"]
    assert described.column(1).to_pylist() == ["Int64", "Float64", "Utf8"]
    with pytest.raises(apiary.ApiaryError, match='column "v" has type "float65"'):
        ap.create_frame("h", "b", "u", {"id": "int64", "v": "float65"})
    assert ap.list_frames("h", "b") == ["t"]


def test_a_frame_can_be_clustered(ap):
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "t", {"day": "int32", "id": "int64"}, sort_by=["day DESC"])
    ap.sql("INSERT INTO h.b.t SELECT CAST((value * 7) % 100 AS INT), value "
           "FROM generate_series(1, 1000)")
    plan = "\n".join(ap.sql("EXPLAIN SELECT day FROM h.b.t ORDER BY day DESC").column(1).to_pylist())
    assert "SortExec" not in plan, plan
    days = ap.sql("SELECT day FROM h.b.t ORDER BY day DESC").column(0).to_pylist()
    assert days == sorted(days, reverse=True) and len(days) == 1000
    # write_to_frame sorts too (in a chamber of the bees), and its cells say so.
    ap.create_frame("h", "b", "w", {"day": "int32", "id": "int64"}, sort_by=["day"])
    shuffled = [(i * 37) % 500 for i in range(5000)]
    ap.write_to_frame("h", "b", "w", pa.table({"day": pa.array(shuffled, pa.int32()),
                                               "id": list(range(5000))}))
    plan = "\n".join(ap.sql("EXPLAIN SELECT day FROM h.b.w ORDER BY day").column(1).to_pylist())
    assert "SortExec" not in plan and "output_ordering=[day@0 ASC" in plan, plan
    assert ap.sql("SELECT day FROM h.b.w ORDER BY day").column(0).to_pylist() == sorted(shuffled)
    with pytest.raises(apiary.ApiaryError, match="sort key"):
        ap.create_frame("h", "b", "u", {"day": "int32"}, sort_by=["day SIDEWAYS"])
    with pytest.raises(apiary.ApiaryError, match="nope"):
        ap.create_frame("h", "b", "u", {"day": "int32"}, sort_by=["nope"])


def test_sql_can_stream_its_result(ap):
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "t", {"id": "int64"})
    ap.write_to_frame("h", "b", "t", pa.table({"id": list(range(100_000))}))
    reader = ap.sql("SELECT id FROM h.b.t", stream=True)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema.names == ["id"]
    first = reader.read_next_batch()
    assert 0 < first.num_rows < 100_000  # batches come one by one, not as one table
    rest = reader.read_all()
    assert first.num_rows + rest.num_rows == 100_000
    total = sum(first.column(0).to_pylist()) + sum(rest.column(0).to_pylist())
    assert total == sum(range(100_000))
    bad = ap.sql("SELECT CAST(CAST(id AS VARCHAR) || 'x' AS INT) FROM h.b.t", stream=True)
    with pytest.raises(Exception, match="Cannot cast"):
        bad.read_all()


def test_a_polars_dataframe_is_written_through_the_arrow_stream(ap):
    import polars as pl  # installed by scripts/test.sh: a test that cannot skip
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "t", {"id": "int64", "city": "large_string"})
    info = ap.write_to_frame("h", "b", "t", pl.DataFrame({"id": [1, 2, 3], "city": ["a", "b", "c"]}))
    assert info["rows_added"] == 3
    assert ap.sql("SELECT sum(id) AS s FROM h.b.t").column("s")[0].as_py() == 6


def test_start_can_serve_the_status_page(ap):
    import json
    import urllib.error
    import urllib.request

    ap.create_hive("h")
    url = ap.start(http="127.0.0.1:0")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    assert ap.start(http="127.0.0.1:0") == url  # idempotent
    ap.sql("SELECT 1 AS one")
    node = ap.status()["node_id"]
    status = json.load(urllib.request.urlopen(url + "api/status"))
    assert status["node"]["id"] == node and status["node"]["in_swarm"]
    assert status["queries"]["recent"][0]["sql"] == "SELECT 1 AS one"
    metrics = urllib.request.urlopen(url + "metrics").read().decode()
    assert f'apiary_queries_finished_total{{node="{node}"}}' in metrics
    ap.shutdown()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "metrics", timeout=5)


def test_start_listens_for_the_direct_path(tmp_path):
    """start(listen=...) serves the direct path's worker: with a node of another process
    listening, this node's queries take the direct path (EXPLAIN shows it) and answer right."""
    import subprocess
    import sys

    storage = str(tmp_path / "meadow")
    ap = with_orders(apiary.Apiary("coordinator", storage=storage))
    for i in range(4):
        ap.write_to_frame("sales", "eu", "orders", orders(range(i * 25000, (i + 1) * 25000)))
    code = (
        "import sys, apiary\n"
        f"node = apiary.Apiary('node', storage={storage!r})\n"
        "node.start(listen='127.0.0.1:0')\n"
        "print(node.status()['endpoint'], flush=True)\n"
        "sys.stdin.read()\n"
        "node.shutdown()\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        endpoint = worker.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:"), endpoint
        with pytest.raises(apiary.ApiaryError, match="not an address"):
            ap.start(listen="everywhere")
        with ap:
            ap.start()
            assert ap.status()["endpoint"] is None
            with pytest.raises(apiary.ApiaryError, match="shutdown"):
                ap.start(listen="127.0.0.1:0")
            # The frame is small: no size threshold, a task per cell, two tasks a stage.
            for setting in [
                "swarm.min_bytes = 0",
                "distributed.file_scan_config_bytes_per_partition = 1",
                "distributed.max_tasks_per_stage = 2",
            ]:
                ap.sql(f"SET {setting}")
            q = "SELECT region, count(*) AS n FROM sales.eu.orders GROUP BY region"
            deadline = time.monotonic() + 60
            while True:
                plan = "\n".join(ap.sql(f"EXPLAIN {q}").column("plan").to_pylist())
                if "DirectPathExec" in plan:
                    break
                assert time.monotonic() < deadline, plan
                time.sleep(0.2)
            assert endpoint in [n["endpoint"] for n in ap.swarm_status()["nodes"]]
            assert ap.sql(q).column("n").to_pylist() == [100000]
    finally:
        worker.stdin.close()
        worker.wait(timeout=30)


def test_explain_tells_the_frame_scans(ap):
    with_orders(ap)
    ap.write_to_frame("sales", "eu", "orders", orders([1, 2, 3]))
    plan = ap.sql("EXPLAIN SELECT id FROM sales.eu.orders WHERE id > 1")
    rows = dict(zip(plan.column("plan_type").to_pylist(), plan.column("plan").to_pylist()))
    assert rows["apiary_scans"].startswith("sales.eu.orders at version "), rows
    assert "to scan" in rows["apiary_scans"], rows
