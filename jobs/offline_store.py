"""The Feature Store offline store's file format, in one place.

Feature Store replicates each record to S3 as Parquet under the group's `ResolvedOutputS3Uri`
(`…/<group>-<creation time>/data`), partitioned `year=/month=/day=/hour=` by event time, with three
columns of its own after the features: `write_time`, `api_invocation_time` and `is_deleted`.
The ingest step's bulk mode writes files in this format directly (as the Feature Store Spark
connector does for offline-only ingestion), the local featurestore runtime writes it when it
replicates PutRecord calls, and the preprocess step reads it; all three use these definitions.
"""
from __future__ import annotations

import io
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import common

ARROW_TYPES = {"String": pa.string(), "Integral": pa.int64(), "Fractional": pa.float64()}
TIMESTAMP = pa.timestamp("us", tz="UTC")
# The range of an Integral feature (stored as int64).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
WRITE_TIME = "write_time"
API_INVOCATION_TIME = "api_invocation_time"
IS_DELETED = "is_deleted"


def arrow_schema(feature_types: Mapping[str, str]) -> pa.Schema:
    """The Parquet schema of a group's offline files: its features in definition order, then the
    store's own columns. `feature_types` maps feature name → String | Integral | Fractional."""
    fields = [pa.field(name, ARROW_TYPES[kind]) for name, kind in feature_types.items()]
    fields += [
        pa.field(WRITE_TIME, TIMESTAMP),
        pa.field(API_INVOCATION_TIME, TIMESTAMP),
        pa.field(IS_DELETED, pa.bool_()),
    ]
    return pa.schema(fields)


def data_uri(resolved_output_s3_uri: str) -> str:
    """Where the `year=…` partitions start for a group's resolved offline store URI."""
    uri = resolved_output_s3_uri.rstrip("/")
    # AWS (and moto) resolve to `…/<group>-<timestamp>/data`; a bare prefix gets `/data`.
    return uri if uri.endswith("/data") else uri + "/data"


def partition(event_time: float) -> str:
    """The partition folder of a record with this event time (seconds since the epoch, UTC)."""
    return datetime.fromtimestamp(event_time, timezone.utc).strftime("year=%Y/month=%m/day=%d/hour=%H")


def write_file(s3: Any, data_uri_: str, partition_: str, table: pa.Table, write_time: datetime) -> str:
    """Writes `table` as one Parquet object in the partition; returns its S3 URI. The name starts
    with the write time, like the files Feature Store writes, and ends with a random part so
    concurrent writers never collide."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    bucket, prefix = common.parse_s3_uri(data_uri_)
    name = f"{write_time:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:16]}.parquet"
    key = "/".join(part for part in (prefix.strip("/"), partition_, name) if part)
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"
