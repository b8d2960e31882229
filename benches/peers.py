"""Shared by the Python peers of the benches (`row_changes_deltalake.py`, `writes_peers.py`),
which import it from their own folder."""

import os


def parquet_bytes(path):
    """The bytes of the Parquet file `path`, or of the Parquet files below the folder `path`."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".parquet"))
    return total
