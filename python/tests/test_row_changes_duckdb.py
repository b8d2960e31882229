"""DELETE, UPDATE and MERGE INTO through Apiary, differentially against DuckDB running the same
statements on the same rows (DataFusion's own MemTable cannot be the reference: it shares the
empty-filter hazard Apiary guards against)."""

import duckdb
import pyarrow as pa

import apiary

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("k", pa.string(), nullable=False),
        pa.field("v", pa.int64()),
    ]
)

ROWS = pa.table(
    {
        "id": pa.array(range(1, 301), pa.int64()),
        "k": [["a", "b", "c"][i % 3] for i in range(300)],
        "v": [None if i % 17 == 0 else (i * 7) % 101 for i in range(300)],
    },
    schema=SCHEMA,
)

CHANGES = pa.table(
    {
        "id": pa.array([3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610], pa.int64()),
        "v": pa.array([0, 1, None, 3, 0, 5, 6, 0, 8, 9, 10, 11], pa.int64()),
    }
)

# Each statement in the two dialects' shared SQL; {t} is the frame (DuckDB: a table).
STATEMENTS = [
    "DELETE FROM {t} WHERE v > 90",
    "DELETE FROM {t} WHERE k = 'c' AND id BETWEEN 40 AND 80",
    "UPDATE {t} SET v = v + 1000 WHERE k = 'a' AND v < 10",
    "UPDATE {t} SET v = NULL WHERE id % 50 = 0",
    "UPDATE {t} SET k = 'b' WHERE id IN (7, 10, 100)",
    "DELETE FROM {t} WHERE v IS NULL AND k = 'b'",
    "MERGE INTO {t} AS t USING changes AS s ON t.id = s.id "
    "WHEN MATCHED AND s.v = 0 THEN DELETE "
    "WHEN MATCHED THEN UPDATE SET v = s.v "
    "WHEN NOT MATCHED THEN INSERT (id, k, v) VALUES (s.id, 'n', s.v)",
    "MERGE INTO {t} AS t USING changes AS s ON t.id = s.id "
    "WHEN NOT MATCHED BY SOURCE AND t.k = 'a' AND t.v > 50 THEN DELETE",
    "DELETE FROM {t} WHERE id > 250",
]


def rows(table):
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def frame_and_table(tmp_path):
    """Frame h.b.t and DuckDB's table t holding the same ROWS."""
    ap = apiary.Apiary("test", storage=str(tmp_path / "meadow"))
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "t", SCHEMA, partition_by=["k"])
    # Three appends: several cells per partition.
    for part in range(3):
        ap.write_to_frame("h", "b", "t", ROWS.slice(part * 100, 100))
    duck = duckdb.connect()
    duck.register("rows_in", ROWS)
    duck.execute("CREATE TABLE t AS SELECT * FROM rows_in")
    return ap, duck


def test_row_changes_match_duckdb(tmp_path):
    ap, duck = frame_and_table(tmp_path)
    duck.register("changes", CHANGES)
    ap.sql("CREATE TABLE changes (id BIGINT, v BIGINT)")
    ap.sql(
        "INSERT INTO changes VALUES "
        + ", ".join(
            f"({i}, {'NULL' if v is None else v})"
            for i, v in zip(CHANGES["id"].to_pylist(), CHANGES["v"].to_pylist())
        )
    )
    for statement in STATEMENTS:
        got = ap.sql(statement.format(t="h.b.t")).to_pylist()[0]["count"]
        expected = duck.execute(statement.format(t="t")).fetchall()[0][0]
        assert got == expected, statement
        assert rows(ap.sql("SELECT * FROM h.b.t")) == rows(
            duck.sql("SELECT * FROM t").to_arrow_table()
        ), statement


# Schema changes, then statements on the changed frame; DuckDB takes one change per ALTER.
SCHEMA_STATEMENTS = [
    "ALTER TABLE {t} ADD COLUMN note VARCHAR",
    "UPDATE {t} SET note = 'big' WHERE v > 50",
    "ALTER TABLE {t} ADD COLUMN small INT",
    "UPDATE {t} SET small = id % 7 WHERE k = 'a'",
    "ALTER TABLE {t} ALTER COLUMN small TYPE BIGINT",
    "ALTER TABLE {t} RENAME COLUMN v TO w",
    "ALTER TABLE {t} ADD COLUMN v BIGINT",
    "INSERT INTO {t} (id, k, w, note, small, v) VALUES (1000, 'a', 1, 'new', 5, 7)",
    "UPDATE {t} SET v = w * 2 WHERE k = 'b'",
    "ALTER TABLE {t} RENAME COLUMN w TO tmp",
    "ALTER TABLE {t} RENAME COLUMN v TO w",
    "ALTER TABLE {t} RENAME COLUMN tmp TO v",
    "DELETE FROM {t} WHERE w IS NULL AND v < 20",
    "UPDATE {t} SET note = 'renamed' WHERE v BETWEEN 30 AND 60",
]


def test_schema_changes_match_duckdb(tmp_path):
    ap, duck = frame_and_table(tmp_path)
    for statement in SCHEMA_STATEMENTS:
        ap.sql(statement.format(t="h.b.t"))
        duck.execute(statement.format(t="t"))
        assert rows(ap.sql("SELECT * FROM h.b.t")) == rows(
            duck.sql("SELECT * FROM t").to_arrow_table()
        ), statement
    # USE names the box for unqualified names.
    ap.sql("USE h.b")
    for query in ["SELECT count(*) AS n FROM t", "SELECT sum(v) AS n FROM t WHERE w IS NOT NULL"]:
        assert ap.sql(query).to_pylist() == duck.sql(query).to_arrow_table().to_pylist(), query
    # TRUNCATE empties it in both.
    ap.sql("TRUNCATE TABLE t")
    duck.execute("TRUNCATE TABLE t")
    query = "SELECT count(*) AS n FROM t"
    assert ap.sql(query).to_pylist() == duck.sql(query).to_arrow_table().to_pylist()
    # Under schema_mode 'merge' an INSERT adds the column it names and the frame lacks.
    ap.sql("SET apiary.schema_mode = 'merge'")
    ap.sql("INSERT INTO h.b.t (id, k, extra) VALUES (2000, 'a', 'e')")
    assert ap.sql("SELECT id, extra FROM h.b.t WHERE extra IS NOT NULL").to_pylist() == [
        {"id": 2000, "extra": "e"}
    ]
