"""Writing a dataset's rows into the Feature Store, and knowing when they are there.

* `write_rows_with_ray`: PutRecord through Ray actors, each a `RecordWriter` with a bounded pool of
  concurrent calls retrying throttling, server errors and dropped connections with exponential
  backoff and full jitter (`call_with_retries`); a row the service refuses is rejected with its
  reason, never dropped silently. Needs a Ray connection (`jobs.ray_cluster.connect`).
* `write_offline_store_directly`: the bulk mode, Parquet files in Feature Store's own offline format
  (`jobs.feature_store_layout`) under the group's resolved S3 URI, as the Spark connector writes
  offline-only groups.
* `OfflineStoreWatcher` / `wait_for_offline_store`: replication to the offline store is asynchronous
  (up to 15 minutes on AWS); the next step reads the offline store, so ingest waits until every
  record of this run is there.
"""
from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

import boto3
import botocore.config
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from jobs import common, feature_store_layout
from jobs.feature_store_layout import (
    DATASET_VERSION_FEATURE,
    EVENT_TIME_FEATURE,
    RECORD_IDENTIFIER,
    record_id,
)
from mlops_shared.aws import parse_s3_uri

COPY_CHUNK_BYTES = 8 * 1024 * 1024

if TYPE_CHECKING:
    from jobs.dataset_schema import PreparedColumns

log = logging.getLogger("jobs.ingest")

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
DIRECT_WRITE_FILE_ROWS = 250_000


# --------------------------------------------------------------------------- retries
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


# --------------------------------------------------------------------------- PutRecord through Ray actors
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

    def _put(self, row_number: int, values: Sequence[str | None]) -> None:
        record = [
            {"FeatureName": RECORD_IDENTIFIER, "ValueAsString": record_id(self.dataset_version, row_number)},
            {"FeatureName": EVENT_TIME_FEATURE, "ValueAsString": self.event_time_text},
            {"FeatureName": DATASET_VERSION_FEATURE, "ValueAsString": self.dataset_version},
        # A missing cell is a feature left out of the record: the offline store holds null for it.
        ] + [{"FeatureName": n, "ValueAsString": v} for n, v in zip(self.feature_names, values) if v is not None]
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

    if not ray.is_initialized():
        raise RuntimeError("write_rows_with_ray needs a Ray connection: run inside jobs.ray_cluster.connect()")
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


# --------------------------------------------------------------------------- bulk: the offline store directly
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
    data_uri = feature_store_layout.data_uri(offline_uri)
    schema = feature_store_layout.arrow_schema(feature_types)
    partition = feature_store_layout.partition(event_time)
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
            columns[name] = (pa.nulls(size, feature_store_layout.ARROW_TYPES[kind]) if values is None
                             else values[start : start + size])
        times = pa.array(np.full(size, stamp)).cast(feature_store_layout.TIMESTAMP)
        columns[feature_store_layout.WRITE_TIME] = times
        columns[feature_store_layout.API_INVOCATION_TIME] = times
        columns[feature_store_layout.IS_DELETED] = np.zeros(size, dtype=bool)
        return pa.Table.from_pydict(columns, schema=schema)

    def write(start: int) -> str:
        table = build(start)
        return call_with_retries(lambda: feature_store_layout.write_file(s3, data_uri, partition, table, write_time))

    starts = list(range(0, total, file_rows))
    # pyarrow's Parquet writer and the uploads release the GIL: a few threads overlap them.
    with ThreadPoolExecutor(max_workers=max(1, min(max_concurrency, len(starts)))) as pool:
        files = list(pool.map(write, starts))
    log.info("wrote %d rows directly to the offline store in %d files under %s", total, len(files), data_uri)
    return files


# --------------------------------------------------------------------------- waiting for replication
class OfflineStoreWatcher:
    """Counts this run's records in the offline store (Parquet under the resolved S3 URI),
    reading each file once."""

    def __init__(self, s3: Any, offline_store_uri: str, dataset_version: str, event_time: float):
        self.s3 = s3
        self.bucket, self.prefix = parse_s3_uri(offline_store_uri)
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
                # Parquet is read from its footer backwards, so the object goes to a local file (in
                # chunks, never whole in memory) and only the three columns come off it.
                with tempfile.TemporaryFile() as local:
                    shutil.copyfileobj(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"], local,
                                       COPY_CHUNK_BYTES)
                    local.seek(0)
                    table = pq.read_table(
                        local, columns=[RECORD_IDENTIFIER, EVENT_TIME_FEATURE, DATASET_VERSION_FEATURE]
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
