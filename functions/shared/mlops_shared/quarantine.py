"""Puts a rejected dataset aside with the reason, without ever losing the original.

``incoming/a/b.csv`` is COPIED to ``quarantine/a/b.csv`` and the reason is written next to the copy as
``quarantine/a/b.csv.reason.json``. The original stays where the user put it (the data bucket is
versioned, so even a later overwrite keeps it), which means a quarantine can never destroy data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import boto3

from .csv_validation import CsvProfile, ValidationIssue

REASON_SUFFIX = ".reason.json"
S3_KEY_MAX_BYTES = 1024


@dataclass(frozen=True)
class QuarantineLocation:
    bucket: str
    key: str

    @property
    def reason_key(self) -> str:
        return self.key + REASON_SUFFIX

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def reason_uri(self) -> str:
        return f"s3://{self.bucket}/{self.reason_key}"


def quarantine_key(key: str, incoming_prefix: str = "incoming/", quarantine_prefix: str = "quarantine/") -> str:
    """``incoming/x/y.csv`` -> ``quarantine/x/y.csv`` (a key outside incoming/ keeps its whole path).

    S3 keys hold at most 1024 bytes (UTF-8) and ``quarantine/`` is longer than ``incoming/``, with the
    reason's suffix longer still: when the copy or its reason would not fit, the name is cut at a
    character boundary and a digest of the whole original key keeps cut names apart (reason.json
    holds the original key)."""
    relative = key[len(incoming_prefix):] if key.startswith(incoming_prefix) else key
    candidate = quarantine_prefix + relative
    if _utf8_length(candidate + REASON_SUFFIX) <= S3_KEY_MAX_BYTES:
        return candidate
    extension = relative[-4:] if relative.lower().endswith(".csv") else ""
    tail = f"-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}{extension}"
    budget = S3_KEY_MAX_BYTES - _utf8_length(quarantine_prefix + tail + REASON_SUFFIX)
    stem = relative[:len(relative) - len(extension)]
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return quarantine_prefix + cut + tail


def is_shortened(key: str, location_key: str, incoming_prefix: str = "incoming/",
                 quarantine_prefix: str = "quarantine/") -> bool:
    relative = key[len(incoming_prefix):] if key.startswith(incoming_prefix) else key
    return location_key != quarantine_prefix + relative


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def build_reason(
    issue: ValidationIssue,
    *,
    bucket: str,
    key: str,
    version_id: str | None,
    etag: str | None,
    profile: CsvProfile | None,
    location: QuarantineLocation,
    target_source: str | None = None,
    docs: str | None = None,
    copied: bool = True,
    shortened: bool = False,
) -> dict[str, Any]:
    version = f"?versionId={version_id}" if version_id else ""
    return {
        "code": issue.code,
        "message": issue.message,
        "fix": issue.fix,
        "docs": docs,  # the page explaining what a CSV may look like and every code
        "details": issue.details,
        "source": {
            "bucket": bucket,
            "key": key,
            "version_id": version_id,
            "etag": etag,
            "s3_uri": f"s3://{bucket}/{key}",
            "s3_uri_with_version": f"s3://{bucket}/{key}{version}",
        },
        "quarantined_copy": location.uri if copied else None,
        # Cut (with a digest) when the original key would make the copy's too long for S3.
        "quarantine_key_shortened": shortened,
        "detected": {
            "header": profile.header if profile else [],
            "encoding": profile.encoding if profile else None,
            "line_ending": profile.line_ending if profile else None,
            "delimiter": profile.delimiter if profile else None,
            "target_column": profile.target_column if profile else None,
            "target_source": target_source,
            # CSV column -> its Feature Store name (csv_rules.feature_store_names).
            "feature_names": profile.feature_names if profile else {},
            "rows_in_sample": profile.rows_in_sample if profile else 0,
            "estimated_rows": profile.estimated_rows if profile else None,
            "object_size": profile.object_size if profile else None,
            "sample_bytes": profile.sample_bytes if profile else None,
        },
        "profile": asdict(profile) if profile else None,
        "quarantined_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def quarantine_object(
    *,
    bucket: str,
    key: str,
    version_id: str | None,
    reason: dict[str, Any],
    location: QuarantineLocation,
    s3: Any = None,
    copy: bool = True,
) -> QuarantineLocation:
    """Copies the exact version that was checked next to its reason (`copy=False`: the reason only);
    the source is left untouched."""
    s3 = s3 or boto3.client("s3")
    source: dict[str, str] = {"Bucket": bucket, "Key": key}
    if version_id:
        source["VersionId"] = version_id
    if copy:
        # The managed copy switches to multipart above 5 GB, where a single CopyObject would fail.
        s3.copy(source, location.bucket, location.key)
    s3.put_object(
        Bucket=location.bucket,
        Key=location.reason_key,
        Body=json.dumps(reason, indent=2, default=str).encode("utf-8"),
        ContentType="application/json",
    )
    return location
