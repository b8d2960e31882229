"""DuckDB's side of `cargo bench --bench tpch`: one long-lived process over the generator's
Parquet files, so that the harness can interleave it with the other sides query by query.

    python benches/tpch_duckdb.py --data DIR

Reads one JSON request per line on stdin, {"sql": …, "rows": true|false}, runs it and prints
one JSON line: {"ms": …} with the time measured here (the query and the fetch of its Arrow
result), and with "rows" the answer as lists of strings (nulls as "NULL") for the check.
"""

import argparse
import datetime
import json
import sys
import time

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def text(value):
    if value is None:
        return "NULL"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return str(value)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    args = p.parse_args()
    import duckdb

    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{args.data}/{t}.parquet')")
    print(json.dumps({"ready": duckdb.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        relation = con.sql(request["sql"])
        table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
        reply = {"ms": (time.perf_counter() - start) * 1000}
        if request.get("rows"):
            columns = [c.to_pylist() for c in table.columns]
            reply["rows"] = [[text(v) for v in row] for row in zip(*columns)]
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
