"""Baseline statistics of the training split, and the binning and statistics the drift job compares
against them (docs/monitoring.md, "Baseline" and "Drift monitoring").

Preprocess writes `baseline_statistics.json` next to `preprocessor.json` from the train split it
holds (raw feature space, the CSV's own column names, target included); Evaluate copies it next to
`evaluation.json` and RegisterModel registers it as `DriftCheckBaselines.ModelDataQuality.Statistics`.

Per column: `count` (present values), `missing` and `missing_share`, `min`/`max`/`mean`/`std`,
`quantiles` and a histogram fit for PSI: `bin_edges` (k+1 ascending edges, the first the minimum,
the last the maximum) and `bin_counts` (k counts). Bin i holds the values in (edges[i], edges[i+1]]
(the first bin also the minimum). When the drift job sorts new values into the bins, the outer bins
are open-ended: a value below the minimum counts in the first bin, one above the maximum in the last
(the out-of-range share reports those separately). The edges are the deciles of the column, or, for
a column with at most `MAX_BINS` distinct values (counts, flags), the midpoints between them, so
each value keeps a bin of its own.

Only numpy: one column at a time is turned into a float array, so this holds at most one column
more than the caller already does.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

BASELINE_FILE = "baseline_statistics.json"
SCHEMA = "ray-sagemaker-mlops/baseline-statistics"
SCHEMA_VERSION = 1
MAX_BINS = 10
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
# A bin share of 0 makes PSI infinite: empty bins count as this share (on either side). 1e-4 is the
# usual choice (it bounds one empty bin's term at about 0.1 × ln(1000) ≈ 0.69 for a 10 % bin).
PSI_EPSILON = 1e-4


class BaselineError(ValueError):
    """A baseline document that does not follow the schema above."""


# --------------------------------------------------------------------------- binning
def bin_edges(values: np.ndarray, max_bins: int = MAX_BINS) -> list[float]:
    """Ascending edges for the present (finite) `values`: deciles, or midpoints between the distinct
    values when there are at most `max_bins` of them. One value only: the single edge pair [v, v]."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    distinct = np.unique(values)
    if distinct.size == 1:
        return [float(distinct[0]), float(distinct[0])]
    if distinct.size <= max_bins:
        cuts = (distinct[:-1] + distinct[1:]) / 2
    else:
        cuts = np.unique(np.quantile(values, np.linspace(0, 1, max_bins + 1)[1:-1]))
        cuts = cuts[(cuts > distinct[0]) & (cuts < distinct[-1])]
    return [float(distinct[0]), *map(float, cuts), float(distinct[-1])]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts of the finite `values` per bin of `edges` (right-closed, outer bins open-ended)."""
    bins = max(1, len(edges) - 1)
    values = values[np.isfinite(values)]
    if len(edges) <= 2:
        return np.array([values.size], dtype=np.int64)
    index = np.searchsorted(np.asarray(edges[1:-1], dtype=float), values, side="left")
    return np.bincount(index, minlength=bins).astype(np.int64)


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index Σ (a − e) · ln(a / e) over the bins' shares, each share at least
    `epsilon`. 0 when either side has no values."""
    expected = np.asarray(expected_counts, dtype=float)
    actual = np.asarray(actual_counts, dtype=float)
    if expected.shape != actual.shape:
        raise ValueError(f"bin counts differ in length: {expected.size} and {actual.size}")
    if expected.sum() <= 0 or actual.sum() <= 0:
        return 0.0
    e = np.maximum(expected / expected.sum(), epsilon)
    a = np.maximum(actual / actual.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


# --------------------------------------------------------------------------- statistics
def column_statistics(name: str, values: np.ndarray) -> dict[str, Any]:
    """The baseline entry of one column (`values`: float64, NaN where missing)."""
    values = np.asarray(values, dtype=float)
    rows = int(values.size)
    present = values[np.isfinite(values)]
    count = int(present.size)
    entry: dict[str, Any] = {
        "name": name, "count": count, "missing": rows - count,
        "missing_share": round((rows - count) / rows, 6) if rows else 0.0,
    }
    if count == 0:
        entry.update(min=None, max=None, mean=None, std=None, quantiles={},
                     histogram={"bin_edges": [], "bin_counts": []})
        return entry
    edges = bin_edges(present)
    # Moments of the values divided by their largest magnitude, then scaled back: the sums of huge
    # magnitudes (a CSV may hold 1e300) would overflow to inf, which JSON cannot carry (as jobs/scaling.py).
    magnitude = float(np.max(np.abs(present)))
    unit = present / magnitude if magnitude > 0 else present
    mean, std = float(unit.mean()), float(unit.std())
    if magnitude > 0:
        mean, std = mean * magnitude, std * magnitude
    entry.update(
        min=float(present.min()), max=float(present.max()),
        mean=mean, std=std,
        quantiles={str(q): float(v) for q, v in zip(QUANTILES, np.quantile(present, QUANTILES))},
        histogram={"bin_edges": edges, "bin_counts": bin_counts(present, edges).tolist()},
    )
    return entry


def _column(blocks: Sequence[Any], name: str) -> np.ndarray:
    parts = [_floats(block[name]) for block in blocks]
    return np.concatenate(parts) if parts else np.zeros(0)


def _floats(column: Any) -> np.ndarray:
    """A pyarrow column or a pandas Series as float64, nulls as NaN."""
    if hasattr(column, "to_numpy") and type(column).__module__.startswith("pyarrow"):
        return column.to_numpy(zero_copy_only=False).astype(float, copy=False)
    return np.asarray(column.to_numpy(dtype=float, na_value=np.nan) if hasattr(column, "to_numpy") else column,
                      dtype=float)


def baseline_statistics(blocks: Any, columns: Sequence[str], target: str, **about: Any) -> dict[str, Any]:
    """The baseline document of `columns` (CSV names, target included) over `blocks`: one table
    (pyarrow or pandas) or a list of them (e.g. a Ray dataset's blocks), read a column at a time.
    `about` (dataset version, ...) is recorded as it is."""
    if not isinstance(blocks, (list, tuple)):
        blocks = [blocks]
    if target not in columns:
        raise BaselineError(f"the target {target!r} is not among the columns {list(columns)}")
    rows = sum(len(block) for block in blocks)
    return {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "split": "train", "rows": rows, "target": target,
        "feature_order": [c for c in columns if c != target],
        "columns": [column_statistics(name, _column(blocks, name)) for name in columns],
        "psi_epsilon": PSI_EPSILON, **about,
    }


def write_baseline(directory: Path, document: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / BASELINE_FILE
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- reading
def parse_baseline(document: Any) -> dict[str, dict[str, Any]]:
    """The columns of a baseline document by name, checked (raises `BaselineError`)."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise BaselineError(f"not a baseline statistics document (schema {SCHEMA!r} expected)")
    if document.get("version") != SCHEMA_VERSION:
        raise BaselineError(f"baseline schema version {document.get('version')!r} is not {SCHEMA_VERSION}")
    columns = document.get("columns")
    if not isinstance(columns, list) or not columns:
        raise BaselineError("the baseline lists no columns")
    by_name: dict[str, dict[str, Any]] = {}
    for entry in columns:
        try:
            name = entry["name"]
            edges, counts = entry["histogram"]["bin_edges"], entry["histogram"]["bin_counts"]
            entry["missing_share"], entry["count"]  # noqa: B018 - presence check
        except (KeyError, TypeError):
            raise BaselineError(f"baseline column entry {entry!r:.120} lacks a field") from None
        if edges and len(counts) != max(1, len(edges) - 1):
            raise BaselineError(f"column {name!r}: {len(edges)} bin edges but {len(counts)} counts")
        if any(not math.isfinite(e) for e in edges) or list(edges) != sorted(edges):
            raise BaselineError(f"column {name!r}: bin edges must be finite and ascending")
        by_name[name] = entry
    return by_name
