"""The Python side of `cargo bench --bench writes`: one write of the same Parquet file through
DuckDB (`COPY … TO … (FORMAT parquet)`), through delta-rs (`write_deltalake` of a streaming
reader over the file) and through Apiary's wheel (`write_to_frame` of the same reader into a
fresh frame of a local meadow). Prints one JSON object: {"way": …, "ms": …, "bytes": …}.

    python benches/writes_peers.py --source FILE --out DIR --way duckdb|deltalake|apiary
"""

import argparse
import json
import os
import shutil
import time

from peers import parquet_bytes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--way", choices=["duckdb", "deltalake", "apiary"], required=True)
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    if args.way == "duckdb":
        import duckdb

        con = duckdb.connect()
        target = os.path.join(args.out, "out.parquet")
        start = time.perf_counter()
        con.execute(f"COPY (SELECT * FROM read_parquet('{args.source}')) TO '{target}' (FORMAT parquet)")
        ms = (time.perf_counter() - start) * 1000
    elif args.way == "apiary":
        import apiary
        import pyarrow.dataset as ds

        ap = apiary.Apiary("bench", storage=args.out)
        ap.create_hive("h")
        ap.create_box("h", "b")
        dataset = ds.dataset(args.source, format="parquet")
        ap.create_frame("h", "b", "t", dataset.schema)
        start = time.perf_counter()
        ap.write_to_frame("h", "b", "t", dataset.scanner().to_reader())
        ms = (time.perf_counter() - start) * 1000
        landed = ap.sql("SELECT count(*) FROM h.b.t").column(0)[0].as_py()
        assert landed == dataset.count_rows(), f"{landed} rows landed"
    else:
        import pyarrow.dataset as ds
        from deltalake import write_deltalake

        start = time.perf_counter()
        reader = ds.dataset(args.source, format="parquet").scanner().to_reader()
        write_deltalake(args.out, reader)
        ms = (time.perf_counter() - start) * 1000
    print(json.dumps({"way": args.way, "ms": ms, "bytes": parquet_bytes(args.out)}), flush=True)
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
