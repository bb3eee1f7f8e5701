"""The dataset reference's contract (`datasets/<identity>.json`), part of `mlops_shared.artifacts`.

Import it from there (`from mlops_shared.artifacts import DatasetReference`); see
`mlops_shared._artifacts_evaluation` for why each group is its own module.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .artifacts import from_json, to_json


# ------------------------------------------------------------------------------------------------
# datasets/<identity>.json
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DatasetConfigVersion:
    """The exact dataset.json intake read the target from (it may change after the upload)."""

    key: str
    version_id: str | None
    etag: str | None


@dataclasses.dataclass(frozen=True)
class DatasetReference:
    """The exact object one pipeline execution trains on.

    SageMaker limits container arguments and processing environment values to 256 characters and
    model package metadata to `[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*` (256), while an S3 key may hold 1024
    bytes of any character. So the pipeline passes this document's URI (short, plain characters)
    and whoever needs the object reads bucket, key and version from here, verbatim.
    """

    bucket: str
    key: str
    version: str  # the version id, else the ETag without quotes (mlops_shared.dataset_version)
    version_id: str | None
    etag: str | None
    target_column: str
    target_source: str  # metadata | dataset.json | default
    # Set when target_source is dataset.json: which version of it named the target.
    dataset_config: DatasetConfigVersion | None = None

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def from_json(cls, document: Any) -> "DatasetReference":
        return from_json(cls, document, "dataset reference")

    def to_json(self) -> dict[str, Any]:
        return to_json(self)
