"""The evaluation report's contract (`evaluation/evaluation.json`), part of `mlops_shared.artifacts`.

Import it from there (`from mlops_shared.artifacts import EvaluationReport`): each group of contracts
is its own module, loaded when first named, so a handler that reads one document does not build
the dataclasses of every other at cold start.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .artifacts import SMOKE_PREDICTION_COLUMN, from_json, to_json


# ------------------------------------------------------------------------------------------------
# evaluation.json
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float
    standard_deviation: float


@dataclasses.dataclass(frozen=True)
class R2:
    """1 - (sum of squared errors) / (sum of squared deviations of the target from its mean), on the
    test split."""

    value: float | None  # undefined (None) when the test target has no variance
    note: str | None = None  # why it is undefined


@dataclasses.dataclass(frozen=True)
class RegressionMetrics:
    rmse: Estimate
    mae: Estimate
    r2: R2


@dataclasses.dataclass(frozen=True)
class EvaluatedRows:
    test: int
    champion_scored: int


@dataclasses.dataclass(frozen=True)
class ChampionScore:
    """The current champion scored on the challenger's test rows (or why it could not be)."""

    model_package_arn: str
    rmse: float | None
    mae: float | None
    r2: float | None
    comparable: bool
    reason: str | None = None
    model_package_version: int | None = None


@dataclasses.dataclass(frozen=True)
class Gate:
    rmse_threshold: float
    champion_tolerance: float
    champion_rmse_limit: float  # champion rmse × (1 + tolerance), or 1e308 without a champion
    passes_threshold: bool
    passes_champion: bool


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
    regression_metrics: RegressionMetrics
    rows: EvaluatedRows
    feature_importance: dict[str, float]
    champion: ChampionScore | None
    gate: Gate
    target: str
    plots: list[str]
    smoke_sample: str
    # The smoke sample's column holding the evaluation's prediction: `prediction`, unless the
    # dataset has a column of that name (`prediction_column_for`).
    smoke_prediction_column: str = SMOKE_PREDICTION_COLUMN
    # The data behind the model, as Preprocess saw it: share of missing cells per feature (train
    # split) and rows Ingest left out for having no target value.
    missing_share: dict[str, float] | None = None
    dropped_rows: int | None = None

    @classmethod
    def from_json(cls, document: Any) -> "EvaluationReport":
        return from_json(cls, document, "evaluation.json")

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @property
    def rmse(self) -> float:
        return self.regression_metrics.rmse.value
