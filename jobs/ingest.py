"""Ingest step: one CSV version → a SageMaker Feature Store feature group (offline store).

    python -m jobs.ingest --input-uri s3://bucket/incoming/data.csv --dataset-version V \
        --target-column PRICE --feature-group-name fs-housing \
        --offline-store-s3-uri s3://bucket/feature-store --feature-store-role-arn ARN

1. Reads the CSV object at exactly the given version (S3 version id, or the ETag of an object in
   an unversioned bucket, checked with If-Match), so a later upload to the same key cannot leak in.
2. Infers the schema (Integral/Fractional per column). The feature group name gets a hash of the
   feature definitions, so a CSV with another schema gets its own group; the group is created if
   missing (offline store only).
3. Writes the rows in one of two ways (`--ingestion-mode`; `Auto` picks by size):
   * `PutRecord`: Ray actors, each running a bounded pool of concurrent PutRecord calls, retrying
     throttling and server errors with exponential backoff and jitter; then waits until the
     offline store (asynchronous replication to S3) holds every record of this run, because the
     next step reads the offline store.
   * `OfflineStore` (bulk, for data bigger than PutRecord carries in reasonable time): writes the
     offline store's Parquet files directly under the group's resolved S3 URI, in the format
     Feature Store itself writes (`jobs.offline_store`), as the Feature Store Spark connector does
     for offline-only ingestion. Visible as soon as written; the online store is not involved
     (the group has none). The service did not write these files, so whatever it keeps about
     its own writes (e.g. the Glue catalog partitions Athena queries use) may need a refresh
     (`MSCK REPAIR TABLE`) before queries see them; this pipeline reads the S3 files directly.
   Record ids are `<dataset version>-<row number>`, so a re-run overwrites instead of duplicating.
   Rows that cannot be written are kept in `rejects/rejects.csv` with the reason; too many of them
   fail the step.
4. Writes `manifest/manifest.json` describing what the next steps should read.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import boto3
import botocore.config
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from jobs import common, offline_store

log = logging.getLogger("jobs.ingest")

RECORD_IDENTIFIER = "record_id"
EVENT_TIME_FEATURE = "event_time"
DATASET_VERSION_FEATURE = "dataset_version"
# Names the feature store adds to the offline store or that the pipeline adds itself; a CSV column
# with one of these names would be overwritten, so it is refused.
RESERVED_NAMES = set(common.FEATURE_STORE_METADATA_COLUMNS)
FEATURE_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}$")
FEATURE_GROUP_NAME_MAX = 64
ETAG_PATTERN = re.compile(r'^"?[0-9a-fA-F]{32}(-\d+)?"?$')
INTEGRAL_PATTERN = re.compile(r"^[+-]?\d+$")
THROTTLING_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailable",
    "InternalFailure",
}
BATCH_ROWS = 500
PUT_RECORD, OFFLINE_STORE, AUTO = "PutRecord", "OfflineStore", "Auto"
INGESTION_MODES = (AUTO, PUT_RECORD, OFFLINE_STORE)
# Auto writes the offline store directly from this many rows on: PutRecord moves a few hundred to a
# few thousand rows a second, so 100k rows already take minutes that a bulk write does in seconds.
DEFAULT_DIRECT_WRITE_MIN_ROWS = 100_000
DIRECT_WRITE_FILE_ROWS = 250_000
MAX_REJECT_REASONS_IN_MESSAGE = 3


# --------------------------------------------------------------------------- input
def is_etag_version(dataset_version: str) -> bool:
    """True when the dataset version is an object ETag (unversioned bucket), not a version id."""
    return bool(ETAG_PATTERN.match(dataset_version))


def read_csv_object(s3: Any, input_uri: str, dataset_version: str) -> bytes:
    """The bytes of the CSV object at exactly `dataset_version`.

    A version id is read with VersionId. An ETag (or "null", the version id of objects written
    before versioning was enabled) is read without VersionId; an ETag is enforced with If-Match so a
    newer upload to the same key fails loudly instead of being ingested under the old version.
    """
    bucket, key = common.parse_s3_uri(input_uri)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if is_etag_version(dataset_version):
        kwargs["IfMatch"] = '"' + dataset_version.strip('"') + '"'
    elif dataset_version and dataset_version != "null":
        kwargs["VersionId"] = dataset_version
    try:
        return s3.get_object(**kwargs)["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412"):
            raise common.JobFailure(
                f"{input_uri} changed since it was uploaded: its ETag is no longer {dataset_version}"
            ) from None
        if code in ("NoSuchKey", "NoSuchVersion", "404", "InvalidArgument", "NoSuchBucket"):
            raise common.JobFailure(
                f"cannot read {input_uri} at version {dataset_version}: {code}"
            ) from None
        raise


def normalise_version(dataset_version: str) -> str:
    """The dataset version as stored in records (ETags lose their quotes)."""
    return dataset_version.strip().strip('"')


# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Schema:
    columns: list[str]  # CSV columns in order (the target included)
    types: dict[str, str]  # column -> Integral | Fractional
    target: str

    def feature_definitions(self) -> list[dict[str, str]]:
        """Feature definitions of the group: the pipeline's own features, then the CSV columns."""
        return [
            {"FeatureName": RECORD_IDENTIFIER, "FeatureType": "String"},
            {"FeatureName": EVENT_TIME_FEATURE, "FeatureType": "Fractional"},
            {"FeatureName": DATASET_VERSION_FEATURE, "FeatureType": "String"},
        ] + [{"FeatureName": c, "FeatureType": self.types[c]} for c in self.columns]


def read_frame(data: bytes, input_uri: str) -> pd.DataFrame:
    """Parses the CSV keeping every cell as text (types are decided per column afterwards)."""
    if not data.strip():
        raise common.JobFailure(f"{input_uri} is empty")
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise common.JobFailure(f"{input_uri} is not a readable CSV file: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise common.JobFailure(f"{input_uri} has a header but no data rows")
    return frame


def infer_schema(frame: pd.DataFrame, target: str) -> Schema:
    """Integral or Fractional per column; refuses non-numeric columns and bad column names.

    A column is numeric when most of its non-empty cells parse as numbers; the cells that do not
    are rejected row by row later (a few bad cells should not hide a whole column)."""
    columns = list(frame.columns)
    if target not in columns:
        raise common.JobFailure(
            f"target column {target!r} is not in the CSV; columns found: {', '.join(columns)}"
        )
    problems = []
    lowered: dict[str, str] = {}
    for column in columns:
        if column.lower() in RESERVED_NAMES:
            problems.append(f"{column!r} is a reserved name")
        elif not FEATURE_NAME_PATTERN.match(column):
            problems.append(
                f"{column!r} is not a valid feature name (letters, digits, - and _, at most 64)"
            )
        elif column.lower() in lowered:
            problems.append(f"{column!r} duplicates {lowered[column.lower()]!r}")
        lowered.setdefault(column.lower(), column)
    if problems:
        raise common.JobFailure("invalid CSV header: " + "; ".join(problems))
    types: dict[str, str] = {}
    non_numeric = []
    for column in columns:
        text = frame[column].str.strip()
        present = text[text != ""]
        numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype=float)
        valid = pd.Series(np.isfinite(numbers), index=present.index)
        if len(present) == 0:
            non_numeric.append(f"{column} (empty)")
            continue
        if valid.sum() * 2 <= len(present):
            non_numeric.append(f"{column} (e.g. {present[~valid].iloc[0]!r})")
            continue
        integral = present[valid].str.fullmatch(INTEGRAL_PATTERN.pattern).all()
        types[column] = "Integral" if integral else "Fractional"
    if non_numeric:
        raise common.JobFailure(
            "only numeric columns can be used; non-numeric columns: " + ", ".join(non_numeric)
        )
    return Schema(columns=columns, types=types, target=target)


def effective_group_name(base: str, schema: Schema) -> str:
    """`<base>-<8 hex of sha1(feature definitions)>`, at most 64 characters.

    A group's feature definitions are fixed, so each schema gets its own group; the definitions are
    sorted so a file with the same columns in another order shares the group.
    """
    definitions = sorted(schema.feature_definitions(), key=lambda d: d["FeatureName"])
    digest = hashlib.sha1(json.dumps(definitions, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    room = FEATURE_GROUP_NAME_MAX - len(digest) - 1
    trimmed = base[:room].rstrip("-_")
    if not trimmed or not FEATURE_NAME_PATTERN.match(trimmed):
        raise common.JobFailure(f"feature group name {base!r} is not valid")
    return f"{trimmed}-{digest}"


def prepare_rows(
    frame: pd.DataFrame, schema: Schema
) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """Splits rows into writable ones (row number, cell values as the feature store wants them)
    and rejected ones (row number, reason). Row numbers start at 0 for the first data row."""
    cells = {c: frame[c].str.strip().tolist() for c in schema.columns}
    good: list[tuple[int, list[str]]] = []
    rejected: list[tuple[int, str]] = []
    for row_number in range(len(frame)):
        values, reason = [], None
        for column in schema.columns:
            text = cells[column][row_number]
            if text == "":
                reason = f"{column} is empty"
                break
            if schema.types[column] == "Integral":
                if not INTEGRAL_PATTERN.match(text):
                    reason = f"{column} value {text!r} is not an integer"
                    break
                values.append(str(int(text)))
            else:
                try:
                    number = float(text)
                except ValueError:
                    reason = f"{column} value {text!r} is not a number"
                    break
                if not math.isfinite(number):
                    reason = f"{column} value {text!r} is not a finite number"
                    break
                values.append(repr(number))
        if reason is None:
            good.append((row_number, values))
        else:
            rejected.append((row_number, reason))
    return good, rejected


@dataclass
class PreparedColumns:
    """The writable rows of a CSV as typed columns (the bulk path's `prepare_rows`)."""

    row_numbers: np.ndarray  # int64, ascending: which CSV rows these are
    values: dict[str, np.ndarray]  # column -> int64 (Integral) or float64 (Fractional) values


def prepare_columns(frame: pd.DataFrame, schema: Schema) -> tuple[PreparedColumns, list[tuple[int, str]]]:
    """`prepare_rows` for large data: the same accept/reject decisions and reasons (the first
    failing column of a row, in column order), computed a column at a time; values come back typed.

    Cells are parsed with Python's own `int`/`float` (numpy casts of text call them), so a value
    means exactly what it means on the PutRecord path; an Integral beyond 64 bits, which the
    feature store refuses there, is rejected here with the reason."""
    count = len(frame)
    reasons = np.full(count, None, dtype=object)
    parsed: dict[str, np.ndarray] = {}
    for column in schema.columns:
        text = frame[column].str.strip().to_numpy(dtype=object)
        open_rows = pd.isna(reasons)
        empty = text == ""
        _reject(reasons, open_rows & empty, lambda _: f"{column} is empty")
        if schema.types[column] == "Integral":
            well_formed = pd.Series(text).str.fullmatch(INTEGRAL_PATTERN.pattern).to_numpy(dtype=bool)
            _reject(reasons, pd.isna(reasons) & ~empty & ~well_formed,
                    lambda cell: f"{column} value {cell!r} is not an integer", text)
            parsed[column] = _parse_integral(column, text, well_formed, reasons)
        else:
            parsed[column] = _parse_fractional(column, text, ~empty, reasons)
    good = pd.isna(reasons)
    row_numbers = np.flatnonzero(good).astype(np.int64)
    rejected = [(int(n), reasons[n]) for n in np.flatnonzero(~good)]
    return PreparedColumns(row_numbers, {c: v[good] for c, v in parsed.items()}), rejected


def _reject(reasons: np.ndarray, mask: np.ndarray, reason: Callable[[Any], str], cells: np.ndarray | None = None) -> None:
    for index in np.flatnonzero(mask):
        reasons[index] = reason(None if cells is None else cells[index])


def _parse_integral(column: str, text: np.ndarray, well_formed: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    values = np.zeros(len(text), dtype=np.int64)
    candidates = np.where(well_formed, text, "0")
    try:
        values[:] = candidates.astype(np.int64)
    except OverflowError:  # some value needs more than 64 bits: find which, one by one
        for index in np.flatnonzero(well_formed):
            number = int(text[index])
            if offline_store.INT64_MIN <= number <= offline_store.INT64_MAX:
                values[index] = number
            elif pd.isna(reasons[index]):
                reasons[index] = f"{column} value {text[index]!r} does not fit in a 64-bit integer"
    return values


def _parse_fractional(column: str, text: np.ndarray, present: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    values = np.zeros(len(text), dtype=np.float64)
    candidates = np.where(present, text, "0")
    try:
        values[:] = candidates.astype(np.float64)
        unparsable = np.zeros(len(text), dtype=bool)
    except ValueError:  # some cell is not a number: find which, one by one
        unparsable = np.zeros(len(text), dtype=bool)
        for index in np.flatnonzero(present):
            try:
                values[index] = float(text[index])
            except ValueError:
                unparsable[index] = True
    open_rows = pd.isna(reasons)
    _reject(reasons, open_rows & unparsable, lambda cell: f"{column} value {cell!r} is not a number", text)
    _reject(reasons, open_rows & present & ~unparsable & ~np.isfinite(values),
            lambda cell: f"{column} value {cell!r} is not a finite number", text)
    return values


def record_id(dataset_version: str, row_number: int) -> str:
    return f"{dataset_version}-{row_number}"


# --------------------------------------------------------------------------- feature group
def ensure_feature_group(
    sagemaker: Any,
    name: str,
    schema: Schema,
    offline_store_s3_uri: str,
    role_arn: str,
    timeout_seconds: float = 600.0,
    poll_seconds: float = 2.0,
) -> dict[str, Any]:
    """Creates the group if missing (offline store only) and waits until it is `Created`;
    returns its description."""
    definitions = schema.feature_definitions()
    try:
        sagemaker.create_feature_group(
            FeatureGroupName=name,
            RecordIdentifierFeatureName=RECORD_IDENTIFIER,
            EventTimeFeatureName=EVENT_TIME_FEATURE,
            FeatureDefinitions=definitions,
            OfflineStoreConfig={"S3StorageConfig": {"S3Uri": offline_store_s3_uri}},
            OnlineStoreConfig={"EnableOnlineStore": False},
            RoleArn=role_arn,
            Description="Rows of the uploaded CSV datasets, written by the ingest step",
        )
        log.info("created feature group %s", name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ResourceInUse":
            raise
        log.info("feature group %s exists", name)
    deadline = time.monotonic() + timeout_seconds
    while True:
        desc = sagemaker.describe_feature_group(FeatureGroupName=name)
        status = desc.get("FeatureGroupStatus")
        if status == "Created":
            break
        if status in ("CreateFailed", "Deleting", "DeleteFailed"):
            raise common.JobFailure(
                f"feature group {name} is {status}: {desc.get('FailureReason', 'no reason given')}"
            )
        if time.monotonic() > deadline:
            raise common.JobFailure(f"feature group {name} still {status} after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
    existing = {(d["FeatureName"], d["FeatureType"]) for d in desc["FeatureDefinitions"]}
    wanted = {(d["FeatureName"], d["FeatureType"]) for d in definitions}
    if not wanted <= existing:
        raise common.JobFailure(
            f"feature group {name} exists with other features than this CSV needs: "
            f"missing {sorted(wanted - existing)}"
        )
    if not (desc.get("OfflineStoreConfig") or {}).get("S3StorageConfig", {}).get("ResolvedOutputS3Uri"):
        raise common.JobFailure(f"feature group {name} has no offline store")
    return desc


# --------------------------------------------------------------------------- writing
def is_retryable(error: BaseException) -> bool:
    """Throttling, server-side errors and dropped connections are worth another attempt."""
    if isinstance(error, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in THROTTLING_CODES or status == 429 or status >= 500
    return False


def call_with_retries(
    call: Callable[[], Any],
    max_attempts: int = 8,
    base_delay: float = 0.05,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> Any:
    """Runs `call`, retrying retryable errors with exponential backoff and full jitter."""
    for attempt in range(1, max_attempts + 1):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - classified just below
            if attempt == max_attempts or not is_retryable(err):
                raise
            sleep(rand() * min(max_delay, base_delay * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def describe_error(error: BaseException) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


class RecordWriter:
    """Writes rows to a feature group with a bounded pool of concurrent PutRecord calls.

    Runs inside each Ray actor (see `IngestActor`); usable without Ray too."""

    def __init__(
        self,
        feature_group_name: str,
        feature_names: Sequence[str],
        dataset_version: str,
        event_time: float,
        max_concurrency: int = 16,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        max_attempts: int = 8,
    ):
        self.feature_group_name = feature_group_name
        self.feature_names = list(feature_names)
        self.dataset_version = dataset_version
        self.event_time_text = repr(float(event_time))
        self.max_attempts = max_attempts
        self.client = client or boto3.client(
            "sagemaker-featurestore-runtime",
            endpoint_url=endpoint_url,
            region_name=region_name,
            # Retries are ours (backoff with jitter, counted); the pool matches the concurrency.
            config=botocore.config.Config(
                retries={"max_attempts": 1, "mode": "standard"},
                max_pool_connections=max(10, max_concurrency),
            ),
        )
        self.pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency))

    def _put(self, row_number: int, values: Sequence[str]) -> None:
        record = [
            {"FeatureName": RECORD_IDENTIFIER, "ValueAsString": record_id(self.dataset_version, row_number)},
            {"FeatureName": EVENT_TIME_FEATURE, "ValueAsString": self.event_time_text},
            {"FeatureName": DATASET_VERSION_FEATURE, "ValueAsString": self.dataset_version},
        ] + [{"FeatureName": n, "ValueAsString": v} for n, v in zip(self.feature_names, values)]
        call_with_retries(
            lambda: self.client.put_record(
                FeatureGroupName=self.feature_group_name, Record=record, TargetStores=["OfflineStore"]
            ),
            max_attempts=self.max_attempts,
        )

    def write(self, rows: Sequence[tuple[int, Sequence[str]]]) -> dict[str, Any]:
        """Writes a batch; returns {"written": [row numbers], "rejected": [(row number, reason)]}."""
        futures = [(row_number, self.pool.submit(self._put, row_number, values)) for row_number, values in rows]
        written, rejected = [], []
        for row_number, future in futures:
            error = future.exception()
            if error is None:
                written.append(row_number)
            else:
                rejected.append((row_number, describe_error(error)))
        return {"written": written, "rejected": rejected}

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _ray_actor_class():
    import ray

    @ray.remote
    class IngestActor:
        def __init__(self, **kwargs: Any):
            self.writer = RecordWriter(**kwargs)

        def write(self, rows):
            return self.writer.write(rows)

    return IngestActor


def connect_ray() -> bool:
    """Joins the Ray cluster in RAY_ADDRESS, or starts a local one; True when this call started
    (or connected) Ray and should therefore shut it down."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=False)
    return True


def plan_actors(requested_actors: int, actor_cpus: float, cluster_cpus: float) -> tuple[int, float]:
    """Fits the requested actors into the cluster so none waits forever for a CPU, and uses no
    more actors than the cluster has CPUs: an actor is a process whose threads mostly wait on
    PutRecord, so its concurrency comes from threads, and extra processes on the same cores only
    compete for them (on 2 cores, 2 actors wrote twice as many rows/s as 10)."""
    cpus = min(actor_cpus, cluster_cpus) if cluster_cpus > 0 else actor_cpus
    if cpus <= 0:
        cpus = 0.01  # an actor must ask for something, or Ray schedules unlimited of them
    fitting = min(int(cluster_cpus // cpus), max(1, int(cluster_cpus))) if cluster_cpus > 0 else requested_actors
    return max(1, min(requested_actors, fitting)), cpus


def write_rows_with_ray(
    rows: list[tuple[int, list[str]]],
    *,
    feature_group_name: str,
    feature_names: Sequence[str],
    dataset_version: str,
    event_time: float,
    actors: int,
    actor_cpus: float,
    max_concurrency_per_actor: int,
    endpoint_url: str | None,
    region_name: str | None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[list[int], list[tuple[int, str]]]:
    """Spreads the rows over Ray actors in batches; returns (written row numbers, rejected rows)."""
    import ray

    started_ray = connect_ray()
    try:
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        count, cpus = plan_actors(actors, actor_cpus, cluster_cpus)
        if (count, cpus) != (actors, actor_cpus):
            log.warning(
                "cluster has %.1f CPUs: using %d actors x %.2f CPU instead of %d x %.2f",
                cluster_cpus, count, cpus, actors, actor_cpus,
            )
        actor_class = _ray_actor_class()
        pool = [
            actor_class.options(num_cpus=cpus).remote(
                feature_group_name=feature_group_name,
                feature_names=list(feature_names),
                dataset_version=dataset_version,
                event_time=event_time,
                max_concurrency=max_concurrency_per_actor,
                endpoint_url=endpoint_url,
                region_name=region_name,
            )
            for _ in range(count)
        ]
        batches = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
        written: list[int] = []
        rejected: list[tuple[int, str]] = []
        in_flight: dict[Any, int] = {}
        next_batch = 0
        started = time.monotonic()
        try:
            # Two batches per actor in flight: the next one is queued while the current one runs,
            # and the driver never holds more than that in the object store.
            for index, actor in enumerate(pool * 2):
                if next_batch < len(batches):
                    in_flight[actor.write.remote(batches[next_batch])] = index % count
                    next_batch += 1
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                actor_index = in_flight.pop(done[0])
                result = ray.get(done[0])
                written += result["written"]
                rejected += result["rejected"]
                if next_batch < len(batches):
                    in_flight[pool[actor_index].write.remote(batches[next_batch])] = actor_index
                    next_batch += 1
                log.info(
                    "written %d of %d rows (%d rejected), %.0f rows/s",
                    len(written), len(rows), len(rejected),
                    (len(written) + len(rejected)) / max(time.monotonic() - started, 1e-6),
                )
        finally:
            for actor in pool:
                ray.kill(actor)
        return written, rejected
    finally:
        if started_ray:
            ray.shutdown()


def choose_ingestion_mode(requested: str, rows: int, direct_write_min_rows: int) -> str:
    """`PutRecord` or `OfflineStore` for `rows` rows; `Auto` goes direct from the threshold on."""
    if requested not in INGESTION_MODES:
        raise common.JobFailure(f"ingestion mode must be one of {', '.join(INGESTION_MODES)}, got {requested!r}")
    if requested != AUTO:
        return requested
    return OFFLINE_STORE if rows >= direct_write_min_rows else PUT_RECORD


def write_offline_store_directly(
    s3: Any,
    offline_uri: str,
    feature_types: dict[str, str],
    prepared: PreparedColumns,
    dataset_version: str,
    event_time: float,
    *,
    file_rows: int = DIRECT_WRITE_FILE_ROWS,
    max_concurrency: int = 4,
) -> list[str]:
    """Writes the prepared rows as offline store files (Feature Store's own Parquet layout) under
    the group's resolved URI; returns the files' URIs. `feature_types` is the group's definition,
    in its order; a feature this CSV does not have stays empty, as PutRecord would leave it."""
    data_uri = offline_store.data_uri(offline_uri)
    schema = offline_store.arrow_schema(feature_types)
    partition = offline_store.partition(event_time)
    write_time = datetime.now(timezone.utc)
    stamp = np.datetime64(int(write_time.timestamp() * 1_000_000), "us")
    total = len(prepared.row_numbers)

    def build(start: int) -> pa.Table:
        numbers = prepared.row_numbers[start : start + file_rows]
        size = len(numbers)
        columns: dict[str, Any] = {
            RECORD_IDENTIFIER: pa.array([record_id(dataset_version, int(n)) for n in numbers], pa.string()),
            EVENT_TIME_FEATURE: np.full(size, float(event_time)),
            DATASET_VERSION_FEATURE: pa.array(np.full(size, dataset_version, dtype=object), pa.string()),
        }
        for name, kind in feature_types.items():
            if name in columns:
                continue
            values = prepared.values.get(name)
            columns[name] = (pa.nulls(size, offline_store.ARROW_TYPES[kind]) if values is None
                             else values[start : start + size])
        times = pa.array(np.full(size, stamp)).cast(offline_store.TIMESTAMP)
        columns[offline_store.WRITE_TIME] = times
        columns[offline_store.API_INVOCATION_TIME] = times
        columns[offline_store.IS_DELETED] = np.zeros(size, dtype=bool)
        return pa.Table.from_pydict(columns, schema=schema)

    def write(start: int) -> str:
        table = build(start)
        return call_with_retries(lambda: offline_store.write_file(s3, data_uri, partition, table, write_time))

    starts = list(range(0, total, file_rows))
    # pyarrow's Parquet writer and the uploads release the GIL: a few threads overlap them.
    with ThreadPoolExecutor(max_workers=max(1, min(max_concurrency, len(starts)))) as pool:
        files = list(pool.map(write, starts))
    log.info("wrote %d rows directly to the offline store in %d files under %s", total, len(files), data_uri)
    return files


# --------------------------------------------------------------------------- offline store
class OfflineStoreWatcher:
    """Counts this run's records in the offline store (Parquet under the resolved S3 URI),
    reading each file once."""

    def __init__(self, s3: Any, offline_store_uri: str, dataset_version: str, event_time: float):
        self.s3 = s3
        self.bucket, self.prefix = common.parse_s3_uri(offline_store_uri)
        self.dataset_version = dataset_version
        self.event_time = event_time
        self.seen_keys: set[str] = set()
        self.found: set[str] = set()

    def poll(self) -> set[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        prefix = self.prefix.rstrip("/") + "/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key in self.seen_keys or not key.endswith(".parquet"):
                    continue
                body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                table = pq.read_table(
                    io.BytesIO(body), columns=[RECORD_IDENTIFIER, EVENT_TIME_FEATURE, DATASET_VERSION_FEATURE]
                )
                frame = table.to_pandas()
                # Only this run's rows count: a re-run must not be satisfied by the previous run.
                mine = frame[
                    (frame[DATASET_VERSION_FEATURE] == self.dataset_version)
                    & (frame[EVENT_TIME_FEATURE] >= self.event_time)
                ]
                self.found.update(mine[RECORD_IDENTIFIER].tolist())
                self.seen_keys.add(key)
        return self.found


def wait_for_offline_store(
    watcher: OfflineStoreWatcher,
    expected_ids: set[str],
    timeout_seconds: float,
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Polls until every expected record is in the offline store; returns the seconds waited."""
    started = time.monotonic()
    while True:
        present = len(watcher.poll() & expected_ids)
        waited = time.monotonic() - started
        if present >= len(expected_ids):
            log.info("offline store has all %d records after %.1f s", present, waited)
            return waited
        if waited >= timeout_seconds:
            raise common.JobFailure(
                f"offline store has {present} of {len(expected_ids)} records after {waited:.0f} s "
                f"(timeout {timeout_seconds:.0f} s) at s3://{watcher.bucket}/{watcher.prefix}"
            )
        log.info("offline store has %d of %d records, waiting", present, len(expected_ids))
        sleep(max(0.05, min(poll_seconds, timeout_seconds - waited)))


# --------------------------------------------------------------------------- outputs
def write_rejects(
    frame: pd.DataFrame, schema: Schema, dataset_version: str, rejected: Iterable[tuple[int, str]]
) -> str:
    """`rejects/rejects.csv`: row number, record id, reason, then the row as it was in the CSV."""
    path = common.processing_output("rejects") / "rejects.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row_number", RECORD_IDENTIFIER, "reason", *schema.columns])
        for row_number, reason in sorted(rejected):
            writer.writerow(
                [row_number, record_id(dataset_version, row_number), reason,
                 *frame.iloc[row_number][schema.columns].tolist()]
            )
    return str(path)


def write_manifest(manifest: dict[str, Any]) -> str:
    path = common.processing_output("manifest") / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return str(path)


def rejection_message(rejected: list[tuple[int, str]], total: int, limit: int) -> str:
    examples = "; ".join(
        f"row {n}: {reason}" for n, reason in sorted(rejected)[:MAX_REJECT_REASONS_IN_MESSAGE]
    )
    return (
        f"ingest rejected {len(rejected)} of {total} rows (at most {limit} allowed); "
        f"first: {examples}; every rejected row is in rejects/rejects.csv"
    )


# --------------------------------------------------------------------------- main
@dataclass
class IngestArgs:
    input_uri: str
    dataset_version: str
    target_column: str
    feature_group_name: str
    offline_store_s3_uri: str
    feature_store_role_arn: str
    actors: int = 10
    actor_cpus: float = 0.5
    max_concurrency_per_actor: int = 16
    max_rejected_rows: int = 0
    offline_store_timeout_seconds: float = 600.0
    poll_interval_seconds: float = 2.0
    ingestion_mode: str = AUTO
    direct_write_min_rows: int = DEFAULT_DIRECT_WRITE_MIN_ROWS


def parse_args(argv: Sequence[str] | None) -> IngestArgs:
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description="CSV → Feature Store")
    parser.add_argument("--input-uri", required=True)
    parser.add_argument("--dataset-version", required=True)
    parser.add_argument("--target-column", required=True)
    parser.add_argument("--feature-group-name", required=True)
    parser.add_argument("--offline-store-s3-uri", required=True)
    parser.add_argument("--feature-store-role-arn", required=True)
    parser.add_argument("--actors", type=int, default=10)
    parser.add_argument("--actor-cpus", type=float, default=0.5)
    parser.add_argument("--max-concurrency-per-actor", type=int, default=16)
    parser.add_argument("--max-rejected-rows", type=int, default=0)
    parser.add_argument("--offline-store-timeout-seconds", type=float, default=600.0)
    parser.add_argument("--poll-interval-seconds", type=float, default=2.0)
    parser.add_argument(
        "--ingestion-mode", choices=INGESTION_MODES, default=AUTO,
        help=f"PutRecord (Ray actors), OfflineStore (bulk Parquet write), or Auto: OfflineStore from "
             f"--direct-write-min-rows rows on (default {DEFAULT_DIRECT_WRITE_MIN_ROWS:,})",
    )
    parser.add_argument("--direct-write-min-rows", type=int, default=DEFAULT_DIRECT_WRITE_MIN_ROWS)
    ns = parser.parse_args(list(argv) if argv is not None else None)
    if ns.actors < 1 or ns.actor_cpus <= 0 or ns.max_concurrency_per_actor < 1 or ns.max_rejected_rows < 0:
        parser.error("--actors, --actor-cpus, --max-concurrency-per-actor must be positive; --max-rejected-rows >= 0")
    if ns.direct_write_min_rows < 0:
        parser.error("--direct-write-min-rows must be >= 0")
    return IngestArgs(**vars(ns))


def ingest(args: IngestArgs, s3: Any = None, sagemaker: Any = None, featurestore: Any = None) -> dict[str, Any]:
    """Runs the whole step; returns the manifest. Raises `common.JobFailure` on a clear failure."""
    s3 = s3 or boto3.client("s3")
    sagemaker = sagemaker or boto3.client("sagemaker")
    featurestore = featurestore or boto3.client("sagemaker-featurestore-runtime")
    dataset_version = normalise_version(args.dataset_version)
    if not dataset_version:
        raise common.JobFailure("--dataset-version is empty")

    data = read_csv_object(s3, args.input_uri, args.dataset_version)
    frame = read_frame(data, args.input_uri)
    schema = infer_schema(frame, args.target_column)
    log.info("read %d rows, columns %s", len(frame), schema.types)

    mode = choose_ingestion_mode(args.ingestion_mode, len(frame), args.direct_write_min_rows)
    log.info("ingestion mode %s (requested %s, %d rows)", mode, args.ingestion_mode, len(frame))
    if mode == OFFLINE_STORE:
        prepared, rejected = prepare_columns(frame, schema)
    else:
        good_rows, rejected = prepare_rows(frame, schema)
    if len(rejected) > args.max_rejected_rows:
        # Too many bad rows already: fail before touching the feature store.
        write_rejects(frame, schema, dataset_version, rejected)
        raise common.JobFailure(rejection_message(rejected, len(frame), args.max_rejected_rows))

    group_name = effective_group_name(args.feature_group_name, schema)
    desc = ensure_feature_group(
        sagemaker, group_name, schema, args.offline_store_s3_uri, args.feature_store_role_arn
    )
    offline_uri = desc["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"]

    event_time = round(time.time(), 3)
    if mode == OFFLINE_STORE:
        feature_types = {d["FeatureName"]: d["FeatureType"] for d in desc["FeatureDefinitions"]}
        if len(prepared.row_numbers):
            write_offline_store_directly(s3, offline_uri, feature_types, prepared, dataset_version, event_time)
        written_count = len(prepared.row_numbers)
    else:
        written, write_rejected = write_rows_with_ray(
            good_rows,
            feature_group_name=group_name,
            feature_names=schema.columns,
            dataset_version=dataset_version,
            event_time=event_time,
            actors=args.actors,
            actor_cpus=args.actor_cpus,
            max_concurrency_per_actor=args.max_concurrency_per_actor,
            # Actors may run in processes that did not inherit this environment: give them the
            # endpoint the job resolved.
            endpoint_url=featurestore.meta.endpoint_url,
            region_name=featurestore.meta.region_name,
        )
        rejected += write_rejected
        written_count = len(written)
    write_rejects(frame, schema, dataset_version, rejected)
    if len(rejected) > args.max_rejected_rows:
        raise common.JobFailure(rejection_message(rejected, len(frame), args.max_rejected_rows))
    if not written_count:
        raise common.JobFailure(f"no row of {args.input_uri} could be ingested ({len(rejected)} rejected)")

    if mode == PUT_RECORD:
        # Replication to the offline store is asynchronous; direct writes are visible once written.
        expected = {record_id(dataset_version, n) for n in written}
        watcher = OfflineStoreWatcher(s3, offline_uri, dataset_version, event_time)
        wait_for_offline_store(watcher, expected, args.offline_store_timeout_seconds, args.poll_interval_seconds)

    manifest = {
        "dataset_version": dataset_version,
        "input_uri": args.input_uri,
        "feature_group_name": group_name,
        "offline_store_uri": offline_uri,
        "record_identifier": RECORD_IDENTIFIER,
        "event_time_feature": EVENT_TIME_FEATURE,
        "features": schema.columns,
        "feature_types": schema.types,
        "target": schema.target,
        "row_count": written_count,
        "rejected_rows": len(rejected),
        "event_time": event_time,
        "ingestion_mode": mode,
    }
    write_manifest(manifest)
    log.info("ingested %d rows into %s with %s (%d rejected)", written_count, group_name, mode, len(rejected))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    args = parse_args(argv)
    try:
        ingest(args)
    except common.JobFailure as failure:
        common.fail(str(failure), kind="processing")
    except Exception as error:  # still leave a reason for the pipeline's FailureReason
        log.exception("ingest failed")
        common.fail(f"ingest failed unexpectedly: {type(error).__name__}: {error}", kind="processing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
