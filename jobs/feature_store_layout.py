"""The Feature Store record layout and offline store file format, in one place.

Records: every row of a dataset becomes one record of the group for its schema, identified by
`record_id` = `<dataset version>-<row number>` (a re-run overwrites instead of duplicating), with the
pipeline's own features `record_id`, `event_time` (seconds) and `dataset_version` before the CSV's
columns. The offline store adds `write_time`, `api_invocation_time`, `is_deleted` and the
`year/month/day/hour` partitions; none of these is ever a feature of a model.

Offline store: Feature Store replicates each record to S3 as Parquet under the group's `ResolvedOutputS3Uri`
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

from mlops_shared.aws import parse_s3_uri

RECORD_IDENTIFIER = "record_id"
EVENT_TIME_FEATURE = "event_time"
DATASET_VERSION_FEATURE = "dataset_version"
WRITE_TIME = "write_time"
API_INVOCATION_TIME = "api_invocation_time"
IS_DELETED = "is_deleted"
PARTITION_COLUMNS = ("year", "month", "day", "hour")
# Columns the ingest step (record id, event time, dataset version) and the offline store (write/api
# times, deletion flag, partitions) add to every record: never features, never CSV column names.
METADATA_COLUMNS = (RECORD_IDENTIFIER, EVENT_TIME_FEATURE, DATASET_VERSION_FEATURE, WRITE_TIME,
                    API_INVOCATION_TIME, IS_DELETED, *PARTITION_COLUMNS)
# The pipeline's own features, first in every group's definitions.
PIPELINE_FEATURE_DEFINITIONS = (
    {"FeatureName": RECORD_IDENTIFIER, "FeatureType": "String"},
    {"FeatureName": EVENT_TIME_FEATURE, "FeatureType": "Fractional"},
    {"FeatureName": DATASET_VERSION_FEATURE, "FeatureType": "String"},
)

ARROW_TYPES = {"String": pa.string(), "Integral": pa.int64(), "Fractional": pa.float64()}
TIMESTAMP = pa.timestamp("us", tz="UTC")
# The range of an Integral feature (stored as int64).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def record_id(dataset_version: str, row_number: int) -> str:
    """The record identifier of one CSV row (row numbers start at 0 for the first data row)."""
    return f"{dataset_version}-{row_number}"


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
    bucket, prefix = parse_s3_uri(data_uri_)
    name = f"{write_time:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:16]}.parquet"
    key = "/".join(part for part in (prefix.strip("/"), partition_, name) if part)
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"
