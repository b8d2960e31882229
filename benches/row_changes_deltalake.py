"""The delta-rs side of `cargo bench --bench row_changes`: the same rows, the same changes,
through the `deltalake` Python package. Prints one JSON object per operation.

    python benches/row_changes_deltalake.py --dir WORK --rows N --runs R [--only "DELETE 1 %"]
"""

import argparse
import json
import os
import shutil
import time

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from peers import parquet_bytes

CELLS = 20


def rows(first, n):
    """Rows first..first+n: id, k = id % 100, v = id / 2 (as the Apiary side writes them)."""
    ids = pa.array(range(first, first + n), pa.int64())
    return pa.table(
        {
            "id": ids,
            "k": pa.array([i % 100 for i in range(first, first + n)], pa.int32()),
            "v": pc.multiply(pc.cast(ids, pa.float64()), 0.5),
        }
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", help="run this operation alone (by its name)")
    args = p.parse_args()
    n = args.rows
    base = os.path.join(args.dir, f"delta-base-{n}")
    if not os.path.exists(os.path.join(base, ".complete")):
        shutil.rmtree(base, ignore_errors=True)
        per = n // CELLS
        for c in range(CELLS):
            write_deltalake(base, rows(c * per, per), mode="append")
        open(os.path.join(base, ".complete"), "w").close()
    step = n // 10_000
    source = pa.table(
        {
            "id": pa.array(range(0, step * 10_000, step), pa.int64()),
            "v": pa.array([-1.0] * 10_000, pa.float64()),
        }
    )
    ops = {
        "DELETE 1 row": lambda dt: dt.delete(f"id = {n // 2}")["num_deleted_rows"],
        "DELETE 1 %": lambda dt: dt.delete("id % 100 = 7")["num_deleted_rows"],
        "UPDATE 1 %": lambda dt: dt.update(updates={"v": "v + 1"}, predicate="id % 100 = 7")[
            "num_updated_rows"
        ],
        "MERGE 10,000": lambda dt: dt.merge(
            source, predicate="t.id = s.id", source_alias="s", target_alias="t"
        )
        .when_matched_update(updates={"v": "s.v"})
        .execute()["num_target_rows_updated"],
    }
    run_dir = os.path.join(args.dir, "delta-run")
    for name, op in ops.items():
        if args.only and name != args.only:
            continue
        times, written, affected = [], 0, 0
        for _ in range(args.runs):
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(base, run_dir)
            before = parquet_bytes(run_dir)
            start = time.perf_counter()
            affected = op(DeltaTable(run_dir))
            times.append((time.perf_counter() - start) * 1000)
            written = parquet_bytes(run_dir) - before
        print(json.dumps({"op": name, "ms": times, "bytes": written, "rows": affected}), flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
