"""P1's gateway-CPU row: the strict gateway process really is the strict face (it refuses keys it
does not know and a role beyond its policy), and the measurement counts only authorized calls."""
from __future__ import annotations

import botocore.exceptions
import pytest

from bench.support import GatewayProcess, boto_client, housing, local_aws_env, patched_environ


@pytest.fixture(scope="module")
def rows_and_schema():
    from jobs import dataset_schema

    csv_file = dataset_schema.CsvFile(housing(260).to_csv(index=False).encode(), "s3://bench/houses.csv")
    schema, _ = dataset_schema.infer_schema(csv_file, "PRICE")
    good_rows, _ = dataset_schema.prepare_rows(next(csv_file.chunks()), schema)
    return good_rows, schema


def test_the_strict_gateway_refuses_unknown_keys_and_serves_its_administrator(tmp_path):
    with patched_environ(local_aws_env()), GatewayProcess(log_path=tmp_path / "gateway.log", strict=True) as gateway:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            boto_client("s3", gateway.url).list_buckets()  # the bench's dummy keys
        assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        import boto3

        s3 = boto3.client("s3", endpoint_url=gateway.url, region_name="us-east-1", **gateway.administrator)
        assert s3.list_buckets()["Buckets"] == []
        assert gateway.cpu_seconds() > 0


def test_gateway_cpu_per_put_record_is_measured_over_authorized_writes(rows_and_schema, tmp_path):
    from bench.p1_ingest import GATEWAY_WARMUP_CALLS, gateway_cpu_per_put_record

    good_rows, schema = rows_and_schema
    assert len(good_rows) > GATEWAY_WARMUP_CALLS
    with patched_environ(local_aws_env()):
        milliseconds = gateway_cpu_per_put_record(good_rows, schema, strict=True, log_path=tmp_path / "gw.log")
    assert 0 < milliseconds < 1000
    # Every call was authorized as the writer role (a refusal raises in the writer): the face logged none.
    assert "refused" not in (tmp_path / "gw.log").read_text()
