"""A local SageMaker Feature Store runtime: the `sagemaker-featurestore-runtime` REST API as a WSGI app.

moto describes feature groups but has no runtime API, so this app serves the data plane that
`boto3.client("sagemaker-featurestore-runtime", endpoint_url=...)` calls, unchanged:

* `PUT /FeatureGroup/{name}` (PutRecord), `GET /FeatureGroup/{name}` (GetRecord),
  `DELETE /FeatureGroup/{name}` (DeleteRecord), `POST /BatchGetRecord`.
* Feature group definitions come from the control plane (moto, via the `sagemaker` client at the
  same endpoint), so records are validated against the real definitions.
* The online view is in memory (latest EventTime wins per record identifier).
* The offline store is written like AWS writes it: Parquet files in S3 under the group's
  `ResolvedOutputS3Uri`, partitioned `year=/month=/day=/hour=` by event time, with the extra columns
  `write_time`, `api_invocation_time` and `is_deleted`. Rows are batched into files by a flush
  thread and only become visible after `replication_delay_seconds`, because replication on AWS is
  asynchronous and consumers must wait for it.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

import boto3
import botocore.config
import pyarrow as pa
from botocore.exceptions import ClientError

from jobs import offline_store

log = logging.getLogger(__name__)

FEATURE_GROUP_PREFIX = "/FeatureGroup/"
BATCH_GET_PATH = "/BatchGetRecord"
OFFLINE_STORE = "OfflineStore"
ONLINE_STORE = "OnlineStore"
_INTEGRAL = re.compile(r"^[+-]?\d+$")


class FeatureStoreError(Exception):
    """An error returned to the client in the AWS rest-json error shape."""

    def __init__(self, code: str, status: int, message: str):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def validation_error(message: str) -> FeatureStoreError:
    # Shape name in the service model is `ValidationError` (HTTP 400): botocore maps it to
    # `client.exceptions.ValidationError`.
    return FeatureStoreError("ValidationError", 400, message)


def not_found(message: str) -> FeatureStoreError:
    return FeatureStoreError("ResourceNotFound", 404, message)


@dataclass(frozen=True)
class FeatureGroupDefinition:
    """What the runtime needs to know about a feature group."""

    name: str
    arn: str
    record_identifier: str
    event_time_feature: str
    feature_types: dict[str, str]  # ordered as the group's FeatureDefinitions
    offline_data_uri: str | None  # where `year=…` partitions start, or None (no offline store)

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> "FeatureGroupDefinition":
        storage = (desc.get("OfflineStoreConfig") or {}).get("S3StorageConfig") or {}
        resolved = storage.get("ResolvedOutputS3Uri") or storage.get("S3Uri")
        return cls(
            name=desc["FeatureGroupName"],
            arn=desc.get("FeatureGroupArn", ""),
            record_identifier=desc["RecordIdentifierFeatureName"],
            event_time_feature=desc["EventTimeFeatureName"],
            feature_types={d["FeatureName"]: d["FeatureType"] for d in desc["FeatureDefinitions"]},
            offline_data_uri=offline_store.data_uri(resolved) if resolved else None,
        )

    def arrow_schema(self) -> pa.Schema:
        return offline_store.arrow_schema(self.feature_types)


@dataclass
class _OnlineRecord:
    event_time: float
    record: list[dict[str, str]]


@dataclass
class _PendingRow:
    visible_at: float  # time.monotonic() after which the row may be written to S3
    group: FeatureGroupDefinition
    event_time: float
    values: dict[str, Any] = field(default_factory=dict)


def parse_event_time(value: str, feature_type: str) -> float:
    """EventTime as seconds since the epoch. Fractional: a number of seconds; String: ISO-8601
    (`yyyy-MM-dd'T'HH:mm:ssZ` or with milliseconds), as AWS accepts."""
    if feature_type in ("Fractional", "Integral"):
        try:
            seconds = float(value)
        except ValueError:
            raise validation_error(f"EventTime value {value!r} is not a number of seconds") from None
    else:
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise validation_error(
                f"EventTime value {value!r} is not in ISO-8601 format yyyy-MM-dd'T'HH:mm:ss[.SSS]Z"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise validation_error(f"EventTime value {value!r} is out of range")
    return seconds


def convert_value(feature: str, feature_type: str, value: str) -> Any:
    """Checks a ValueAsString against the feature type and returns the typed value."""
    if feature_type == "String":
        return value
    if feature_type == "Integral":
        if not _INTEGRAL.match(value.strip()):
            raise validation_error(
                f"Value {value!r} of feature {feature} does not match its type Integral"
            )
        number = int(value)
        if not offline_store.INT64_MIN <= number <= offline_store.INT64_MAX:
            raise validation_error(f"Value {value!r} of feature {feature} is out of range for Integral")
        return number
    if feature_type == "Fractional":
        try:
            number = float(value)
        except ValueError:
            raise validation_error(
                f"Value {value!r} of feature {feature} does not match its type Fractional"
            ) from None
        if not math.isfinite(number):
            raise validation_error(f"Value {value!r} of feature {feature} is not a finite Fractional")
        return number
    raise validation_error(f"Feature {feature} has unsupported type {feature_type}")


def _group_name_from_path(name_or_arn: str) -> str:
    # botocore percent-encodes ARNs in the path; the WSGI server decodes them, so an ARN arrives
    # as `arn:aws:sagemaker:<region>:<account>:feature-group/<name>`.
    if name_or_arn.startswith("arn:"):
        return name_or_arn.rsplit("/", 1)[-1]
    return name_or_arn


class FeatureStoreRuntimeApp:
    """WSGI application for the featurestore-runtime data plane (see module docstring)."""

    def __init__(
        self,
        endpoint_url: str,
        replication_delay_seconds: float = 0.0,
        flush_interval_seconds: float = 0.5,
        *,
        region_name: str | None = None,
        definition_ttl_seconds: float = 5.0,
        sagemaker_client: Any = None,
        s3_client: Any = None,
        clock: Callable[[], float] = time.time,
    ):
        self.endpoint_url = endpoint_url
        self.replication_delay_seconds = float(replication_delay_seconds)
        self.flush_interval_seconds = float(flush_interval_seconds)
        self.definition_ttl_seconds = definition_ttl_seconds
        self._clock = clock
        session = boto3.session.Session()
        region = region_name or session.region_name or "us-east-1"
        credentials = {}
        if session.get_credentials() is None:
            # The local cloud ignores signatures, but botocore refuses to send unsigned requests.
            credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
        config = botocore.config.Config(
            retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32
        )
        self._sagemaker = sagemaker_client or session.client(
            "sagemaker",
            endpoint_url=endpoint_url,
            region_name=region,
            # A missing group must fail fast, not be retried (moto answers it with a 500).
            config=botocore.config.Config(retries={"max_attempts": 1}),
            **credentials,
        )
        self._s3 = s3_client or session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config, **credentials
        )
        self._lock = threading.Lock()  # online view + pending rows
        self._flush_lock = threading.Lock()  # one writer to S3 at a time
        self._definitions: dict[str, tuple[FeatureGroupDefinition, float]] = {}
        self._online: dict[tuple[str, str], _OnlineRecord] = {}
        self._pending: deque[_PendingRow] = deque()
        self.files_written = 0
        self.rows_written = 0
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._flush_loop, name="featurestore-offline-flush", daemon=True
        )
        self._thread.start()

    # ---------------------------------------------------------------- WSGI
    @staticmethod
    def handles(environ: dict[str, Any]) -> bool:
        """True for requests of the featurestore-runtime API (its paths are unique among the AWS
        APIs the local cloud serves: the control plane uses `POST /` with `X-Amz-Target`)."""
        path = environ.get("PATH_INFO", "")
        return path.startswith(FEATURE_GROUP_PREFIX) or path == BATCH_GET_PATH

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request_id = uuid.uuid4().hex
        try:
            status, payload = self._dispatch(environ)
        except FeatureStoreError as err:
            status, payload = err.status, {"__type": err.code, "message": err.message}
            headers_extra = [("x-amzn-ErrorType", err.code)]
            return self._respond(start_response, status, payload, request_id, headers_extra)
        except Exception:  # a bug here must not kill the server thread; report it as AWS would
            log.exception("featurestore-runtime request failed")
            payload = {"__type": "InternalFailure", "message": "internal failure, see server log"}
            return self._respond(
                start_response, 500, payload, request_id, [("x-amzn-ErrorType", "InternalFailure")]
            )
        return self._respond(start_response, status, payload, request_id, [])

    @staticmethod
    def _respond(start_response, status, payload, request_id, extra_headers):
        body = b"" if payload is None else json.dumps(payload).encode("utf-8")
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
            *extra_headers,
        ]
        start_response(f"{status} {reason.get(status, 'Error')}", headers)
        return [body]

    def _dispatch(self, environ: dict[str, Any]) -> tuple[int, Any]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if path == BATCH_GET_PATH and method == "POST":
            return 200, self.batch_get_record(self._json_body(environ))
        if path.startswith(FEATURE_GROUP_PREFIX):
            group_name = _group_name_from_path(path[len(FEATURE_GROUP_PREFIX):])
            if method == "PUT":
                body = self._json_body(environ)
                self.put_record(group_name, body.get("Record"), body.get("TargetStores"))
                return 200, None
            if method == "GET":
                return 200, self.get_record(
                    group_name,
                    _single(query, "RecordIdentifierValueAsString"),
                    query.get("FeatureName"),
                )
            if method == "DELETE":
                self.delete_record(
                    group_name,
                    _single(query, "RecordIdentifierValueAsString"),
                    _single(query, "EventTime"),
                    query.get("TargetStores"),
                    _single(query, "DeletionMode", required=False) or "SoftDelete",
                )
                return 200, None
        raise validation_error(f"{method} {path} is not supported by the local feature store runtime")

    @staticmethod
    def _json_body(environ: dict[str, Any]) -> dict[str, Any]:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        raw = stream.read(int(length)) if length else stream.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise validation_error("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise validation_error("request body must be a JSON object")
        return body

    # ---------------------------------------------------------------- definitions
    def describe(self, group_name: str) -> FeatureGroupDefinition:
        """The group's definition from the control plane, cached for a few seconds."""
        now = time.monotonic()
        cached = self._definitions.get(group_name)
        if cached and now - cached[1] < self.definition_ttl_seconds:
            return cached[0]
        try:
            desc = self._sagemaker.describe_feature_group(FeatureGroupName=group_name)
        except ClientError as err:
            error = err.response.get("Error", {})
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # moto answers DescribeFeatureGroup of an unknown group with a bare 500.
            if error.get("Code") in ("ResourceNotFound", "ValidationException") or status == 500:
                self._definitions.pop(group_name, None)
                raise not_found(f"Resource Not Found: FeatureGroup {group_name} does not exist") from None
            raise
        status = desc.get("FeatureGroupStatus", "Created")
        if status != "Created":
            raise not_found(f"FeatureGroup {group_name} is in status {status}, not Created")
        definition = FeatureGroupDefinition.from_description(desc)
        self._definitions[group_name] = (definition, now)
        return definition

    # ---------------------------------------------------------------- operations
    def put_record(
        self,
        group_name: str,
        record: Any,
        target_stores: list[str] | None = None,
    ) -> None:
        group = self.describe(group_name)
        values, event_time = self._validate_record(group, record)
        stores = self._target_stores(group, target_stores)
        invoked_at = self._clock()
        record_id = values[group.record_identifier]
        if ONLINE_STORE in stores:
            stored = [{"FeatureName": item["FeatureName"], "ValueAsString": item["ValueAsString"]} for item in record]
            key = (group.name, record_id)
            with self._lock:
                current = self._online.get(key)
                if current is None or event_time >= current.event_time:
                    self._online[key] = _OnlineRecord(event_time, stored)
        if OFFLINE_STORE in stores:
            values["api_invocation_time"] = invoked_at
            values["is_deleted"] = False
            self._enqueue(group, event_time, values)

    def get_record(
        self, group_name: str, record_id: str, feature_names: list[str] | None = None
    ) -> dict[str, Any]:
        group = self.describe(group_name)
        record = self._online_record(group, record_id, feature_names)
        return {} if record is None else {"Record": record}

    def delete_record(
        self,
        group_name: str,
        record_id: str,
        event_time_text: str,
        target_stores: list[str] | None = None,
        deletion_mode: str = "SoftDelete",
    ) -> None:
        group = self.describe(group_name)
        if deletion_mode not in ("SoftDelete", "HardDelete"):
            raise validation_error(f"DeletionMode must be SoftDelete or HardDelete, got {deletion_mode!r}")
        if not record_id:
            raise validation_error("RecordIdentifierValueAsString must not be empty")
        event_time = parse_event_time(event_time_text, group.feature_types[group.event_time_feature])
        stores = self._target_stores(group, target_stores)
        if ONLINE_STORE in stores:
            with self._lock:
                current = self._online.get((group.name, record_id))
                if current is not None and event_time >= current.event_time:
                    del self._online[(group.name, record_id)]
        if OFFLINE_STORE in stores:
            values: dict[str, Any] = {name: None for name in group.feature_types}
            values[group.record_identifier] = convert_value(
                group.record_identifier, group.feature_types[group.record_identifier], record_id
            )
            values[group.event_time_feature] = convert_value(
                group.event_time_feature, group.feature_types[group.event_time_feature], event_time_text
            )
            values["api_invocation_time"] = self._clock()
            values["is_deleted"] = True
            self._enqueue(group, event_time, values)

    def batch_get_record(self, body: dict[str, Any]) -> dict[str, Any]:
        identifiers = body.get("Identifiers")
        if not isinstance(identifiers, list) or not identifiers:
            raise validation_error("Identifiers must be a non-empty list")
        records, errors = [], []
        for ident in identifiers:
            group_name = _group_name_from_path(str(ident.get("FeatureGroupName", "")))
            record_ids = ident.get("RecordIdentifiersValueAsString") or []
            try:
                group = self.describe(group_name)
            except FeatureStoreError as err:
                errors += [
                    {
                        "FeatureGroupName": group_name,
                        "RecordIdentifierValueAsString": rid,
                        "ErrorCode": err.code,
                        "ErrorMessage": err.message,
                    }
                    for rid in record_ids
                ]
                continue
            for rid in record_ids:
                try:
                    record = self._online_record(group, rid, ident.get("FeatureNames"))
                except FeatureStoreError as err:
                    errors.append(
                        {
                            "FeatureGroupName": group_name,
                            "RecordIdentifierValueAsString": rid,
                            "ErrorCode": err.code,
                            "ErrorMessage": err.message,
                        }
                    )
                    continue
                if record is not None:
                    records.append(
                        {"FeatureGroupName": group_name, "RecordIdentifierValueAsString": rid, "Record": record}
                    )
        return {"Records": records, "Errors": errors, "UnprocessedIdentifiers": []}

    # ---------------------------------------------------------------- helpers
    def _validate_record(
        self, group: FeatureGroupDefinition, record: Any
    ) -> tuple[dict[str, Any], float]:
        if not isinstance(record, list) or not record:
            raise validation_error("Record must be a non-empty list of FeatureValue")
        values: dict[str, Any] = {name: None for name in group.feature_types}
        seen: set[str] = set()
        for item in record:
            if not isinstance(item, dict) or not isinstance(item.get("FeatureName"), str):
                raise validation_error("every FeatureValue needs a FeatureName")
            name = item["FeatureName"]
            if name not in group.feature_types:
                raise validation_error(
                    f"Feature {name} is not defined in FeatureGroup {group.name}; "
                    f"defined features: {', '.join(group.feature_types)}"
                )
            if name in seen:
                raise validation_error(f"Feature {name} appears more than once in the record")
            seen.add(name)
            if "ValueAsStringList" in item:
                raise validation_error(f"Feature {name}: collection types are not supported")
            value = item.get("ValueAsString")
            if not isinstance(value, str):
                raise validation_error(f"Feature {name} has no ValueAsString")
            values[name] = convert_value(name, group.feature_types[name], value)
        for required in (group.record_identifier, group.event_time_feature):
            if required not in seen:
                raise validation_error(
                    f"Record is missing the {'record identifier' if required == group.record_identifier else 'event time'} "
                    f"feature {required} of FeatureGroup {group.name}"
                )
        if values[group.record_identifier] in ("", None):
            raise validation_error(f"record identifier {group.record_identifier} must not be empty")
        event_time_text = next(i["ValueAsString"] for i in record if i["FeatureName"] == group.event_time_feature)
        event_time = parse_event_time(event_time_text, group.feature_types[group.event_time_feature])
        values[group.record_identifier] = str(values[group.record_identifier])
        return values, event_time

    @staticmethod
    def _target_stores(group: FeatureGroupDefinition, target_stores: list[str] | None) -> set[str]:
        available = {ONLINE_STORE} | ({OFFLINE_STORE} if group.offline_data_uri else set())
        if not target_stores:
            return available
        requested = set(target_stores)
        unknown = requested - {ONLINE_STORE, OFFLINE_STORE}
        if unknown:
            raise validation_error(f"TargetStores must be OnlineStore/OfflineStore, got {sorted(unknown)}")
        missing = requested - available
        if missing:
            raise validation_error(
                f"FeatureGroup {group.name} has no {', '.join(sorted(missing))} configured"
            )
        return requested

    def _online_record(
        self, group: FeatureGroupDefinition, record_id: str, feature_names: list[str] | None
    ) -> list[dict[str, str]] | None:
        if feature_names:
            unknown = [n for n in feature_names if n not in group.feature_types]
            if unknown:
                raise validation_error(
                    f"Features {', '.join(unknown)} are not defined in FeatureGroup {group.name}"
                )
        with self._lock:
            current = self._online.get((group.name, record_id))
        if current is None:
            return None
        if not feature_names:
            return list(current.record)
        wanted = set(feature_names)
        return [item for item in current.record if item["FeatureName"] in wanted]

    def _enqueue(self, group: FeatureGroupDefinition, event_time: float, values: dict[str, Any]) -> None:
        row = _PendingRow(time.monotonic() + self.replication_delay_seconds, group, event_time, values)
        with self._lock:
            self._pending.append(row)

    # ---------------------------------------------------------------- offline store
    @property
    def pending_offline_rows(self) -> int:
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
                batches.setdefault((id(row.group), offline_store.partition(row.event_time)), []).append(row)
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
        offline_store.write_file(self._s3, group.offline_data_uri or "", partition, table, write_time)
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

    def __enter__(self) -> "FeatureStoreRuntimeApp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _single(query: dict[str, list[str]], name: str, required: bool = True) -> str | None:
    values = query.get(name)
    if not values:
        if required:
            raise validation_error(f"query parameter {name} is required")
        return None
    return values[0]
