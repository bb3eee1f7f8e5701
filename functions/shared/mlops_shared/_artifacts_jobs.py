"""The contracts only the jobs read and write (`manifest/manifest.json`, `preprocessor.json`), part
of `mlops_shared.artifacts`.

Import them from there (`from mlops_shared.artifacts import IngestManifest`); see
`mlops_shared._artifacts_evaluation` for why each group is its own module.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .artifacts import from_json, to_json


# ------------------------------------------------------------------------------------------------
# manifest.json
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class IngestManifest:
    """What the ingest step wrote: which feature group holds this dataset version, and how."""

    dataset_version: str
    input_uri: str
    feature_group_name: str
    offline_store_uri: str  # the group's resolved offline store URI
    record_identifier: str
    event_time_feature: str
    features: list[str]  # the Feature Store name of each CSV column, in order, the target included
    feature_types: dict[str, str]  # feature name -> Integral | Fractional
    target: str  # the target's feature name
    row_count: int  # records written
    rejected_rows: int
    event_time: float
    ingestion_mode: str  # PutRecord | OfflineStore
    # The CSV's own column names, aligned with `features` (csv_rules.feature_store_names maps them);
    # absent in manifests written before the mapping, whose features were the CSV names.
    column_names: list[str] | None = None
    dropped_rows: int = 0  # rows without a target value

    def csv_names(self) -> list[str]:
        return list(self.column_names or self.features)

    @classmethod
    def from_json(cls, document: Any) -> "IngestManifest":
        return from_json(cls, document, "manifest.json")

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


# ------------------------------------------------------------------------------------------------
# preprocessor.json
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScalerParameters:
    mean: list[float]
    scale: list[float]


@dataclasses.dataclass(frozen=True)
class PreprocessorDocument:
    """The raw feature columns in the order the booster expects them and the StandardScaler fitted
    on the training split (the model server applies it, so callers send raw features)."""

    feature_order: list[str]  # the CSV's own column names (what callers send)
    target: str  # the target's CSV name
    scaler: ScalerParameters
    # Where the model's data came from (written by Preprocess; absent in hand-made artifacts).
    dataset_version: str | None = None
    feature_group_name: str | None = None
    input_uri: str | None = None
    rows: dict[str, int] | None = None
    fractions: dict[str, float] | None = None
    seed: int | None = None
    # How the data was stored: the Feature Store name of each feature in feature_order, and of the
    # target (csv_rules.feature_store_names), so a model can be traced back to its feature group.
    feature_store_names: list[str] | None = None
    target_feature_store_name: str | None = None
    # Share of missing cells per feature in the training split (XGBoost learns a default direction).
    missing_share: dict[str, float] | None = None
    dropped_rows: int | None = None  # rows without a target value, left out by Ingest

    @classmethod
    def from_json(cls, document: Any) -> "PreprocessorDocument":
        return from_json(cls, document, "preprocessor.json")

    def to_json(self) -> dict[str, Any]:
        return to_json(self)
