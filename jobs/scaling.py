"""The StandardScaler the pipeline fits (Preprocess) and applies (Preprocess, Evaluate, serving), in
one place so training and serving scale exactly alike.

Missing values (NaN) are left out of the statistics and stay NaN when scaled: XGBoost learns a
default direction for them. Finite values of any magnitude stay finite: the moments are merged in
extended precision and each batch's squared deviations are kept relative to its largest value, so
features near float64's limit (1e308) neither overflow the variance nor the scaled values.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np


def standardize(values: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`(x - mean) / scale`, computed as `x/scale - mean/scale` so that neither term overflows."""
    values = np.asarray(values, dtype=float)
    return values / scale - mean / scale


def batch_moments(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per column of a float matrix (NaN = missing): count of present values, mean, the sum of
    squared deviations divided by `magnitude**2`, and that magnitude (the largest |value|, 1 when 0)
    — one row each, as a one-row batch for Ray Data."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError("batch_moments takes a 2-D matrix")
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    zeros = np.where(present, values, 0.0)
    magnitude = np.abs(zeros).max(axis=0, initial=0.0)
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    relative = zeros / magnitude  # in [-1, 1]: sums and squares cannot overflow
    mean_relative = np.divide(relative.sum(axis=0), count, out=np.zeros(values.shape[1]), where=count > 0)
    deviations = np.where(present, relative - mean_relative, 0.0)
    m2_relative = (deviations ** 2).sum(axis=0)
    return {
        "count": count[np.newaxis, :].astype(np.int64),
        "mean": (mean_relative * magnitude)[np.newaxis, :],
        "m2_relative": m2_relative[np.newaxis, :],
        "magnitude": magnitude[np.newaxis, :],
    }


def merge_moments(moments: Iterable[Mapping[str, Any]], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merges per-batch moments (Chan et al.) in extended precision; returns (mean, scale, count)
    like sklearn's StandardScaler with NaNs ignored: population std, 1 where a feature is constant
    or has no value at all (mean 0 then)."""
    wide = np.longdouble
    count = np.zeros(width, dtype=wide)
    mean = np.zeros(width, dtype=wide)
    m2 = np.zeros(width, dtype=wide)
    for row in moments:
        n_b = np.asarray(row["count"], dtype=wide).reshape(width)
        mean_b = np.asarray(row["mean"], dtype=wide).reshape(width)
        magnitude = np.asarray(row["magnitude"], dtype=wide).reshape(width)
        m2_b = np.asarray(row["m2_relative"], dtype=wide).reshape(width) * magnitude * magnitude
        total = count + n_b
        safe_total = np.where(total > 0, total, 1)
        delta = mean_b - mean
        mean = np.where(total > 0, mean + delta * n_b / safe_total, mean)
        m2 = np.where(total > 0, m2 + m2_b + delta * delta * count * n_b / safe_total, m2)
        count = total
    std = np.sqrt(np.divide(m2, np.where(count > 0, count, 1)))
    scale = np.where(std > 0, std, 1).astype(float)
    if not np.all(np.isfinite(scale)):  # a spread beyond float64: keep the values' own magnitude
        scale = np.where(np.isfinite(scale), scale, np.finfo(float).max)
    return mean.astype(float), scale, count.astype(np.int64)
