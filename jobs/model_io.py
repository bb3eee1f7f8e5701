"""The model artifact, shared by train, evaluate and serve.

A model directory (and the `model.tar.gz` SageMaker makes of it) holds:

* `model.json` — the XGBoost booster in XGBoost's JSON format;
* `preprocessor.json` — `{"feature_order": [...], "target": "...", "scaler": {"mean": [...],
  "scale": [...]}, ...}`: the raw feature columns in the order the booster expects them and the
  StandardScaler fitted on the training split.

`ServingModel.predict_raw` takes raw (unscaled) features, so whoever calls the model never has to
know how the features were scaled.
"""
from __future__ import annotations

import json
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import xgboost as xgb

from jobs.scaling import standardize
from mlops_shared.artifacts import ArtifactFormatError, PreprocessorDocument
from mlops_shared.csv_rules import NA_SPELLINGS

MODEL_FILE = "model.json"
PREPROCESSOR_FILE = "preprocessor.json"


class ModelInputError(ValueError):
    """The features given to the model are unusable (missing, unknown or non-numeric fields)."""


class ModelArtifactError(ValueError):
    """A model directory or archive is incomplete or inconsistent."""


@dataclass(frozen=True)
class Preprocessor:
    """Feature order + StandardScaler parameters, as written by the preprocess step."""

    feature_order: list[str]
    target: str
    mean: np.ndarray
    scale: np.ndarray
    extra: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessor":
        try:
            document = PreprocessorDocument.from_json(dict(data))
        except (ArtifactFormatError, TypeError) as err:
            raise ModelArtifactError(
                f"{PREPROCESSOR_FILE} must have feature_order, target and scaler.mean/scale: {err}"
            ) from None
        features, target = document.feature_order, document.target
        mean = np.asarray(document.scaler.mean, dtype=float)
        scale = np.asarray(document.scaler.scale, dtype=float)
        if not features or len(mean) != len(features) or len(scale) != len(features):
            raise ModelArtifactError(
                f"{PREPROCESSOR_FILE} has {len(features)} features but {len(mean)} means and "
                f"{len(scale)} scales"
            )
        if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise ModelArtifactError(f"{PREPROCESSOR_FILE} scaler has non-finite or zero values")
        extra = {k: v for k, v in data.items() if k not in ("feature_order", "target", "scaler")}
        return cls(features, target, mean, scale, extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_order": list(self.feature_order),
            "target": self.target,
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            **self.extra,
        }

    def scale_frame(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Raw feature columns -> scaled float columns (other columns are left out)."""
        values = standardize(raw[self.feature_order].to_numpy(dtype=float), self.mean, self.scale)
        return pd.DataFrame(values, columns=self.feature_order, index=raw.index)

    def unscale_frame(self, scaled: pd.DataFrame) -> pd.DataFrame:
        """Scaled feature columns -> raw values (the inverse of `scale_frame`)."""
        values = scaled[self.feature_order].to_numpy(dtype=float) * self.scale + self.mean
        return pd.DataFrame(values, columns=self.feature_order, index=scaled.index)


def read_preprocessor(path: str | Path) -> Preprocessor:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelArtifactError(f"{path} is missing") from None
    except json.JSONDecodeError as err:
        raise ModelArtifactError(f"{path} is not valid JSON: {err}") from None
    return Preprocessor.from_dict(data)


def write_preprocessor(path: str | Path, preprocessor: Mapping[str, Any] | Preprocessor) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = preprocessor.to_dict() if isinstance(preprocessor, Preprocessor) else dict(preprocessor)
    # Strict JSON: NaN/Infinity are not JSON, and every reader of this file must be able to parse it.
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _as_frame(records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(records, pd.DataFrame):
        return records
    if isinstance(records, Mapping):
        raise ModelInputError("expected a list of records (objects), got a single object")
    rows = list(records)
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ModelInputError(f"record {number} is not an object of feature name -> value")
    return pd.DataFrame.from_records(rows)


@dataclass
class ServingModel:
    """A loaded booster and its preprocessor."""

    booster: xgb.Booster
    preprocessor: Preprocessor

    @property
    def feature_order(self) -> list[str]:
        return list(self.preprocessor.feature_order)

    @property
    def target(self) -> str:
        return self.preprocessor.target

    def check_raw(self, records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Validates raw features; returns them as float columns in `feature_order`.

        The target column, if present, is ignored (a CSV row as uploaded can be scored as is);
        any other unknown field is an error, since it usually means the caller's schema differs."""
        frame = _as_frame(records)
        return pd.DataFrame(self._raw_matrix(frame), columns=self.feature_order, index=frame.index)

    def _raw_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """`check_raw`'s validation; the features as a float matrix, columns in `feature_order`."""
        if frame.empty and not len(frame.columns):
            raise ModelInputError("no records to predict")
        expected = self.feature_order
        columns = [str(c) for c in frame.columns]
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected and c != self.target]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing fields: " + ", ".join(missing))
            if extra:
                parts.append("unknown fields: " + ", ".join(extra))
            raise ModelInputError("; ".join(parts) + ". Expected: " + ", ".join(expected))
        if frame.empty:
            raise ModelInputError("no records to predict")
        frame = frame[expected]
        if frame.shape[1] == len(expected) and all(dtype.kind in "biuf" for dtype in frame.dtypes):
            # Numeric columns (the usual case): one conversion and one check for the whole frame
            # (NaN is a missing value, which the model takes); an inf goes on to the per-column
            # pass below for the error message.
            values = frame.to_numpy(dtype=float, na_value=np.nan)
            if not np.isinf(values).any():
                return values
        converted = []
        for column in expected:
            raw = frame[column]
            # Missing: null/NaN, or a cell spelled as missing in a CSV (empty, NA, NaN, ...).
            missing = raw.isna() | raw.map(lambda v: isinstance(v, str) and v.strip() in NA_SPELLINGS)
            values = pd.to_numeric(raw.where(~missing, np.nan), errors="coerce")
            numbers = values.to_numpy(dtype=float, na_value=np.nan)
            bad = (np.isnan(numbers) & ~missing.to_numpy()) | np.isinf(numbers)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ModelInputError(
                    f"field {column} must be a finite number or missing (null); record {row} has "
                    f"{frame[column].iloc[row]!r}"
                )
            converted.append(numbers)
        return np.column_stack(converted)

    def predict_scaled(self, scaled: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predictions for already-scaled features (columns in `feature_order`)."""
        if isinstance(scaled, pd.DataFrame):
            scaled = scaled[self.feature_order].to_numpy(dtype=float)
        matrix = np.asarray(scaled, dtype=float)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.preprocessor.feature_order):
            raise ModelInputError(
                f"expected a matrix of {len(self.preprocessor.feature_order)} feature columns "
                f"({', '.join(self.preprocessor.feature_order)}), got shape {matrix.shape}"
            )
        # In place: the same predictions, bit for bit, without building a DMatrix first. That saves
        # the copy and the DMatrix's own OpenMP regions; in the model server each region can pay
        # for waking the OpenMP workers that fell asleep between requests (GOMP_SPINCOUNT).
        return self.booster.inplace_predict(matrix)

    def predict_raw(self, records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Predictions for raw features (a DataFrame or a list of dicts)."""
        raw = self._raw_matrix(_as_frame(records))
        # Scaled as `Preprocessor.scale_frame` does, without building DataFrames around the matrix.
        return self.predict_scaled(standardize(raw, self.preprocessor.mean, self.preprocessor.scale))


def load_model_dir(path: str | Path) -> ServingModel:
    """Loads `model.json` + `preprocessor.json` from a directory."""
    path = Path(path)
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise ModelArtifactError(f"{model_file} is missing")
    preprocessor = read_preprocessor(path / PREPROCESSOR_FILE)
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_file))
    except xgb.core.XGBoostError as err:
        raise ModelArtifactError(f"{model_file} is not a readable XGBoost model: {err}") from None
    names = booster.feature_names
    if names is not None and list(names) != preprocessor.feature_order:
        raise ModelArtifactError(
            f"model features {list(names)} differ from the preprocessor's {preprocessor.feature_order}"
        )
    if names is None and booster.num_features() != len(preprocessor.feature_order):
        raise ModelArtifactError(
            f"model expects {booster.num_features()} features, preprocessor has "
            f"{len(preprocessor.feature_order)}"
        )
    return ServingModel(booster, preprocessor)


def extract_model_tar(path: str | Path, dest: str | Path) -> Path:
    """Extracts a `model.tar.gz` into `dest` (refusing links and paths outside it); returns the
    directory that holds `model.json` (the archive's root, or its single top-level folder)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, mode="r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise ModelArtifactError(f"cannot extract {path}: {err}") from None
    if (dest / MODEL_FILE).is_file():
        return dest
    candidates = sorted(p.parent for p in dest.rglob(MODEL_FILE))
    if len(candidates) == 1:
        return candidates[0]
    raise ModelArtifactError(f"{path} holds {len(candidates)} {MODEL_FILE} files; expected one")


def create_model_tar(model_dir: str | Path, path: str | Path) -> Path:
    """Packs a model directory the way SageMaker does (files at the archive root)."""
    model_dir, path = Path(model_dir), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w:gz") as tar:
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=item.name)
    return path


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: such values become null."""
    return float(value) if value is not None and math.isfinite(value) else None

