"""Feature Store runtime records: the errors the API answers with, what a feature group definition
says about its records, and how a PutRecord record is checked and typed (as AWS checks it)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from jobs import feature_store_layout

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
    role_arn: str | None = None  # the role Feature Store writes the offline store with

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
            offline_data_uri=feature_store_layout.data_uri(resolved) if resolved else None,
            role_arn=desc.get("RoleArn"),
        )

    def arrow_schema(self) -> pa.Schema:
        return feature_store_layout.arrow_schema(self.feature_types)


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
        if not feature_store_layout.INT64_MIN <= number <= feature_store_layout.INT64_MAX:
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


# ---------------------------------------------------------------- helpers
def validate_record(
    group: FeatureGroupDefinition, record: Any
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


def resolve_target_stores(group: FeatureGroupDefinition, target_stores: list[str] | None) -> set[str]:
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


def group_name_from_path(name_or_arn: str) -> str:
    # botocore percent-encodes ARNs in the path; the WSGI server decodes them, so an ARN arrives
    # as `arn:aws:sagemaker:<region>:<account>:feature-group/<name>`.
    if name_or_arn.startswith("arn:"):
        return name_or_arn.rsplit("/", 1)[-1]
    return name_or_arn
