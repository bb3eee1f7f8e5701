"""The identity of one uploaded dataset version, written the same way by intake, the pipeline jobs
and the local CLI.

A dataset is one version of one S3 object: its version id in a versioned bucket, or its ETag
(without quotes) when the bucket is not versioned. S3 reports objects written before versioning was
enabled with the version id "null", which names no version.
"""
from __future__ import annotations

import re

_ETAG = re.compile(r'^"?[0-9a-fA-F]{32}(-\d+)?"?$')


def normalize_version_id(version_id: str | None) -> str | None:
    """None for objects without a real version (unversioned or versioning-suspended buckets say "null")."""
    return None if version_id in (None, "", "null") else version_id


def dataset_version(version_id: str | None, etag: str | None, fallback: str | None = None) -> str:
    """The version that names this dataset: the version id, else the ETag without its quotes."""
    return normalize_version_id(version_id) or normalize_dataset_version(etag or "") or (fallback or "")


def normalize_dataset_version(text: str) -> str:
    """A dataset version as passed around (pipeline parameter, records): ETags lose their quotes."""
    return text.strip().strip('"')


def is_etag(text: str) -> bool:
    """True when a dataset version is an object ETag (unversioned bucket), not a version id."""
    return bool(_ETAG.match(text or ""))
