"""Per-feature contributions of a prediction: XGBoost's tree SHAP values (`pred_contribs`).

Asked for on the endpoint with the SageMaker `CustomAttributes` value `explain=true` (the container
sees the header `X-Amzn-SageMaker-Custom-Attributes`), for JSON and CSV requests alike. The answer
carries, next to `predictions`, one explanation per row:

    {"predictions": [412000.0],
     "explanations": [{"bias": 389012.5, "contributions": {"Square Feet": 21040.3, ...}}]}

`contributions` is keyed by the user's column names (the model's feature order); `bias` is the
expected value of the model (XGBoost's base score folded in), kept apart so that a feature may be
called anything, `bias` included. For each row, `bias + sum(contributions)` is the prediction
(the raw margin; for this project's regression objective, the prediction itself).

Raw feature space: the model sees each feature standardized, `(x - mean) / scale`. A tree splits on
thresholds, and a strictly increasing affine map of one feature moves every threshold with it, so
every row falls into the same leaves and tree SHAP assigns the same value to the scaled feature as
it would to the raw one. The contributions of the scaled features therefore are those of the raw
features, with no correction.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
EXPLAIN_ATTRIBUTE = "explain"
BIAS = "bias"


def wants_explanation(custom_attributes: str | None) -> bool:
    """Whether a request's CustomAttributes ask for explanations: an `explain=true` item among
    `;`- or `,`-separated `key=value` items (keys case-insensitive, as HTTP header conventions go)."""
    if not custom_attributes:
        return False
    for item in custom_attributes.replace(",", ";").split(";"):
        key, _, value = item.partition("=")
        if key.strip().lower() == EXPLAIN_ATTRIBUTE and value.strip().lower() == "true":
            return True
    return False


def contributions(booster, scaled: np.ndarray) -> np.ndarray:
    """Tree SHAP values of scaled feature rows: shape (rows, features + 1), the bias last."""
    import xgboost as xgb

    matrix = xgb.DMatrix(np.asarray(scaled, dtype=float), feature_names=booster.feature_names)
    return booster.predict(matrix, pred_contribs=True)


def explanations(values: np.ndarray, feature_order: Sequence[str]) -> list[dict]:
    """`contributions(...)` as the endpoint answers them: per row `{"bias", "contributions": {name: value}}`."""
    names = list(feature_order)
    if values.ndim != 2 or values.shape[1] != len(names) + 1:
        raise ValueError(f"contributions of shape {values.shape} do not match {len(names)} features plus the bias")
    return [{BIAS: row[-1], "contributions": dict(zip(names, row[:-1]))} for row in values.tolist()]


def explain_scaled(booster, scaled: np.ndarray, feature_order: Sequence[str]) -> list[dict]:
    """Explanations of already-scaled rows (columns in `feature_order`)."""
    return explanations(contributions(booster, scaled), feature_order)
