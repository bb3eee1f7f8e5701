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
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

import boto3
import botocore.config
from botocore.exceptions import ClientError

from local.aws.featurestore_runtime.offline_replication import OfflineReplication
from local.aws.featurestore_runtime.records import (
    OFFLINE_STORE,
    ONLINE_STORE,
    FeatureGroupDefinition,
    FeatureStoreError,
    convert_value,
    group_name_from_path,
    not_found,
    parse_event_time,
    resolve_target_stores,
    validate_record,
    validation_error,
)

log = logging.getLogger(__name__)

FEATURE_GROUP_PREFIX = "/FeatureGroup/"
BATCH_GET_PATH = "/BatchGetRecord"


@dataclass
class _OnlineRecord:
    event_time: float
    record: list[dict[str, str]]


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
        identities: Any = None,
    ):
        self.endpoint_url = endpoint_url
        self.definition_ttl_seconds = definition_ttl_seconds
        self._clock = clock
        session = boto3.session.Session()
        region = region_name or session.region_name or "us-east-1"
        credentials = {}
        if identities is not None:
            # Feature Store reading its own groups acts as the local runtime (AWS on its own resources).
            credentials = identities.runtime.client_kwargs()
        elif session.get_credentials() is None:
            # botocore refuses to send unsigned requests; a bare moto does not check the keys.
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
        s3 = s3_client or session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config, **credentials
        )
        self._lock = threading.Lock()  # the online view
        self._definitions: dict[str, tuple[FeatureGroupDefinition, float]] = {}
        self._online: dict[tuple[str, str], _OnlineRecord] = {}
        s3_by_role: dict[str, Any] = {}

        def s3_for_group(group: FeatureGroupDefinition) -> Any:
            """The offline store is written with the group's role (strict face), else the one client."""
            if identities is None or not group.role_arn:
                return s3
            if group.role_arn not in s3_by_role:
                from local.aws.identities import aws_client

                role = identities.role_credentials(group.role_arn, "sagemaker.amazonaws.com", "featurestore")
                s3_by_role[group.role_arn] = aws_client("s3", endpoint_url, role, region=region, pool_size=32)
            return s3_by_role[group.role_arn]

        self.replication = OfflineReplication(s3_for_group, replication_delay_seconds, flush_interval_seconds, clock)

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
            group_name = group_name_from_path(path[len(FEATURE_GROUP_PREFIX):])
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
        values, event_time = validate_record(group, record)
        stores = resolve_target_stores(group, target_stores)
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
            self.replication.enqueue(group, event_time, values)

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
        stores = resolve_target_stores(group, target_stores)
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
            self.replication.enqueue(group, event_time, values)

    def batch_get_record(self, body: dict[str, Any]) -> dict[str, Any]:
        identifiers = body.get("Identifiers")
        if not isinstance(identifiers, list) or not identifiers:
            raise validation_error("Identifiers must be a non-empty list")
        records, errors = [], []
        for ident in identifiers:
            group_name = group_name_from_path(str(ident.get("FeatureGroupName", "")))
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

    def close(self) -> None:
        """Stops replication after writing every row still queued."""
        self.replication.close()

    def __enter__(self) -> "FeatureStoreRuntimeApp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- offline replication, for tests and benchmarks
    @property
    def pending_offline_rows(self) -> int:
        return self.replication.pending_rows

    @property
    def files_written(self) -> int:
        return self.replication.files_written

    @property
    def rows_written(self) -> int:
        return self.replication.rows_written

    def flush(self, force: bool = False) -> int:
        return self.replication.flush(force)


def _single(query: dict[str, list[str]], name: str, required: bool = True) -> str | None:
    values = query.get(name)
    if not values:
        if required:
            raise validation_error(f"query parameter {name} is required")
        return None
    return values[0]
