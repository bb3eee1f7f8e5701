"""The files one pipeline step writes and others read, as typed contracts.

| file | written by | read by |
|---|---|---|
| `datasets/<identity>.json` (`DatasetReference`) | intake (the start-pipeline function, `mlops pipeline run`) | Ingest (`--dataset-reference`); anyone resolving a model package's `dataset_reference` |
| `manifest/manifest.json` (`IngestManifest`) | the Ingest step | Preprocess |
| `preprocessor.json` (`PreprocessorDocument`, inside `model.tar.gz`) | Preprocess (train copies it) | Train, Evaluate, the model server |
| `evaluation/evaluation.json` (`EvaluationReport`) | Evaluate | the pipeline's CheckRMSE condition (`JsonGet` on `RMSE_JSON_PATH`, `CHAMPION_LIMIT_JSON_PATH`), approvals, the smoke test, the CLI |
| `evaluation/smoke_sample.csv` (`SMOKE_SAMPLE_FILE`) | Evaluate | the deployment's smoke test |

Writers build the dataclass and write `to_json()`; readers call `from_json()`, which refuses a
document that lacks a declared field or carries one of the wrong type, naming it. A field any
reader uses is a field here, so renaming or dropping it in a writer fails its contract test, not a
paid run. Extra keys are kept out of the types but allowed (an older reader ignores a newer field).
Standard library only: this module ships in the Lambda layer and in the jobs image.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Union

SMOKE_SAMPLE_FILE = "smoke_sample.csv"
# The smoke sample's last column: what the evaluation predicted for the row.
SMOKE_PREDICTION_COLUMN = "prediction"


def prediction_column_for(columns: "list[str]") -> str:
    """A name for the prediction next to the dataset's own columns: `prediction`, or
    `prediction_2`, `prediction_3`, ... when the dataset already has that name."""
    taken = set(columns)
    name, counter = SMOKE_PREDICTION_COLUMN, 2
    while name in taken:
        name, counter = f"{SMOKE_PREDICTION_COLUMN}_{counter}", counter + 1
    return name
# What the pipeline's condition step reads from evaluation.json (`JsonGet` paths).
RMSE_JSON_PATH = "regression_metrics.rmse.value"
CHAMPION_LIMIT_JSON_PATH = "gate.champion_rmse_limit"


class ArtifactFormatError(ValueError):
    """A pipeline artifact does not follow its contract; the message names the field."""


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


# ------------------------------------------------------------------------------------------------
# The typed reading and writing shared by every contract
# ------------------------------------------------------------------------------------------------
def from_json(cls: type, document: Any, where: str) -> Any:
    """`document` (parsed JSON) as an instance of the dataclass `cls`; ArtifactFormatError names
    the first field that is missing or of the wrong type (e.g. `evaluation.json: gate.rmse_threshold`)."""
    return _convert(cls, document, where)


def to_json(instance: Any) -> dict[str, Any]:
    """Plain JSON values of a contract instance (strict JSON: a non-finite float is refused)."""
    document = dataclasses.asdict(instance)
    json.dumps(document, allow_nan=False)  # raises ValueError on NaN/Infinity before anyone writes it
    return document


def contract_fields(cls: type, prefix: str = "") -> list[str]:
    """Every field path of a contract, nested ones included (`gate.rmse_threshold`, ...)."""
    paths = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        paths.append(path)
        inner = _dataclass_in(hints[field.name])
        if inner is not None:
            paths += contract_fields(inner, path + ".")
    return paths


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        return _convert(real[0], value, where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ArtifactFormatError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(hint)
        values = {}
        for field in dataclasses.fields(hint):
            if field.name not in value:
                if field.default is not dataclasses.MISSING:
                    continue
                raise ArtifactFormatError(f"{where}: the field {field.name!r} is missing")
            values[field.name] = _convert(hints[field.name], value[field.name], f"{where}.{field.name}")
        return hint(**values)
    if origin is list:
        if not isinstance(value, list):
            raise ArtifactFormatError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ArtifactFormatError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ArtifactFormatError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArtifactFormatError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ArtifactFormatError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ArtifactFormatError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported contract type {hint!r}")


# ------------------------------------------------------------------------------------------------
# The evaluation's plots (PNG files next to evaluation.json)
# ------------------------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEADER_BYTES = 24  # signature, IHDR length and type, width, height


def png_dimensions(header: bytes) -> tuple[int, int] | None:
    """(width, height) from the first 24 bytes of a PNG (its IHDR chunk); None when it is no PNG,
    so a page never sizes an image from a file that is something else."""
    if len(header) < PNG_HEADER_BYTES or not header.startswith(PNG_SIGNATURE) or header[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    return (width, height) if width > 0 and height > 0 else None
