import os
import uuid

import pyarrow as pa
import pytest

import apiary

ORDERS = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("region", pa.string()),
        pa.field("amount", pa.float64()),
    ]
)


def orders(ids, region="fr"):
    """Rows of sales.eu.orders with the given ids."""
    ids = list(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "region": [region] * len(ids),
            "amount": [float(i) for i in ids],
        },
        schema=ORDERS,
    )


def with_orders(ap):
    """Creates sales.eu.orders in `ap` and returns `ap`."""
    ap.create_hive("sales")
    ap.create_box("sales", "eu")
    ap.create_frame("sales", "eu", "orders", ORDERS)
    return ap


@pytest.fixture
def ap(tmp_path):
    return apiary.Apiary("test", storage=str(tmp_path / "meadow"))


@pytest.fixture
def s3_url():
    """A fresh prefix on the S3 test server that ./scripts/test.sh starts."""
    base = os.environ.get("APIARY_TEST_S3_URL")
    if not base:
        pytest.skip("APIARY_TEST_S3_URL is not set (run through ./scripts/test.sh)")
    return f"{base}/python-{uuid.uuid4().hex}"
