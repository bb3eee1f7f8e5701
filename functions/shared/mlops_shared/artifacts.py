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
# The contracts, by document: each group is its own module, loaded the first time one of its names
# is imported from here (PEP 562), so a Lambda handler that reads one document (the lineage
# recorder: a dataset reference) builds only that document's dataclasses at cold start (bench P5).
# ------------------------------------------------------------------------------------------------
_CONTRACT_MODULES = {
    **dict.fromkeys(("Estimate", "R2", "RegressionMetrics", "EvaluatedRows", "ChampionScore", "Gate",
                     "EvaluationReport"), "_artifacts_evaluation"),
    **dict.fromkeys(("DatasetConfigVersion", "DatasetReference"), "_artifacts_dataset"),
    **dict.fromkeys(("IngestManifest", "ScalerParameters", "PreprocessorDocument"), "_artifacts_jobs"),
}

if typing.TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` loads them
    from ._artifacts_dataset import DatasetConfigVersion, DatasetReference  # noqa: F401
    from ._artifacts_evaluation import (ChampionScore, Estimate, EvaluatedRows, EvaluationReport, Gate,  # noqa: F401
                                        R2, RegressionMetrics)
    from ._artifacts_jobs import IngestManifest, PreprocessorDocument, ScalerParameters  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _CONTRACT_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    globals()[name] = value  # later look-ups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_CONTRACT_MODULES})


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
