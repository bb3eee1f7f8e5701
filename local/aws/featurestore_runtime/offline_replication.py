"""Offline store replication of the local Feature Store runtime: rows PutRecord accepted are written
to S3 as AWS writes them (Parquet under the group's `ResolvedOutputS3Uri`, partitioned by event
time, with `write_time`, `api_invocation_time` and `is_deleted`; the format is
`jobs.feature_store_layout`), batched into files by a flush thread, and visible only after a
replication delay, because replication on AWS is asynchronous and consumers must wait for it."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow as pa

from jobs import feature_store_layout
from local.aws.featurestore_runtime.records import FeatureGroupDefinition

log = logging.getLogger(__name__)


@dataclass
class _PendingRow:
    visible_at: float  # time.monotonic() after which the row may be written to S3
    group: FeatureGroupDefinition
    event_time: float
    values: dict[str, Any] = field(default_factory=dict)


class OfflineReplication:
    """Queues offline rows and writes the due ones to S3 from a background thread."""

    def __init__(self, s3_for_group: Callable[[FeatureGroupDefinition], Any], replication_delay_seconds: float = 0.0,
                 flush_interval_seconds: float = 0.5, clock: Callable[[], float] = time.time):
        # Feature Store writes a group's offline store with the role given to the group (its RoleArn).
        self._s3_for_group = s3_for_group
        self.replication_delay_seconds = float(replication_delay_seconds)
        self.flush_interval_seconds = float(flush_interval_seconds)
        self._clock = clock
        self._lock = threading.Lock()  # the pending rows
        self._flush_lock = threading.Lock()  # one writer to S3 at a time
        self._pending: deque[_PendingRow] = deque()
        self.files_written = 0
        self.rows_written = 0
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._flush_loop, name="featurestore-offline-flush", daemon=True)
        self._thread.start()

    def enqueue(self, group: FeatureGroupDefinition, event_time: float, values: dict[str, Any]) -> None:
        row = _PendingRow(time.monotonic() + self.replication_delay_seconds, group, event_time, values)
        with self._lock:
            self._pending.append(row)

    # ---------------------------------------------------------------- offline store
    @property
    def pending_rows(self) -> int:
        with self._lock:
            return len(self._pending)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_seconds):
            try:
                self.flush()
            except Exception:  # keep replicating; the rows stay queued for the next attempt
                log.exception("offline store flush failed")

    def flush(self, force: bool = False) -> int:
        """Writes the rows whose replication delay has passed (every row if `force`); returns
        the number of rows written. Rows whose write fails go back to the queue."""
        with self._flush_lock:
            now = time.monotonic()
            due: list[_PendingRow] = []
            with self._lock:
                # Rows are appended with a constant delay, so the queue is ordered by visibility.
                while self._pending and (force or self._pending[0].visible_at <= now):
                    due.append(self._pending.popleft())
            if not due:
                return 0
            batches: dict[tuple[int, str], list[_PendingRow]] = {}
            for row in due:
                batches.setdefault((id(row.group), feature_store_layout.partition(row.event_time)), []).append(row)
            written = 0
            failed: list[_PendingRow] = []
            for (_, partition), rows in batches.items():
                try:
                    self._write_file(rows[0].group, partition, rows)
                    written += len(rows)
                except Exception:
                    log.exception("writing %d offline rows of %s failed", len(rows), rows[0].group.name)
                    failed.extend(rows)
            if failed:
                with self._lock:
                    self._pending.extendleft(reversed(failed))
            return written

    def _write_file(self, group: FeatureGroupDefinition, partition: str, rows: list[_PendingRow]) -> None:
        schema = group.arrow_schema()
        write_time = datetime.fromtimestamp(self._clock(), timezone.utc)
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        for row in rows:
            for name in group.feature_types:
                columns[name].append(row.values.get(name))
            columns["write_time"].append(write_time)
            columns["api_invocation_time"].append(
                datetime.fromtimestamp(row.values["api_invocation_time"], timezone.utc)
            )
            columns["is_deleted"].append(row.values["is_deleted"])
        table = pa.Table.from_pydict(columns, schema=schema)
        feature_store_layout.write_file(self._s3_for_group(group), group.offline_data_uri or "", partition, table,
                                        write_time)
        self.files_written += 1
        self.rows_written += len(rows)

    def close(self) -> None:
        """Stops the flush thread and writes every row still queued."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush(force=True)
