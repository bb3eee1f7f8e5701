"""Smoke test of a freshly deployed endpoint with rows of the package's own test split.

The model package's ModelQuality statistics point at `<artifacts>/<execution id>/Evaluate/evaluation/
evaluation.json`; the same execution prefix holds the test split (`Preprocess/test/*.csv`, features
standardised, target raw) and the fitted scaler (`Preprocess/preprocessor/preprocessor.json`). The
test rows are turned back into raw features (the endpoint takes raw features), sent as JSON and as
CSV, and the answers must be finite, one per row, identical for both formats, and about as accurate
as the evaluation said (`rmse <= tolerance × evaluation rmse`, with a floor for small samples).
Only the standard library and boto3 are used: this runs in a Lambda.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import boto3


class SmokeTestFailed(Exception):
    """The endpoint answered wrongly (or not at all); the message says how."""


@dataclass(frozen=True)
class SmokeResult:
    rows: int
    rmse: float
    evaluation_rmse: float
    limit: float

    def as_dict(self) -> dict:
        return {"rows": self.rows, "rmse": self.rmse, "evaluation_rmse": self.evaluation_rmse,
                "limit": self.limit, "passed": True}


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise SmokeTestFailed(f"not an S3 URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _read_json(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def evaluation_location(model_package: dict) -> str:
    try:
        return model_package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    except KeyError:
        raise SmokeTestFailed(f"model package {model_package.get('ModelPackageArn')} has no ModelQuality "
                              "statistics (evaluation.json), so there is nothing to compare with") from None


def load_test_rows(s3, execution_prefix_bucket: str, execution_prefix: str, max_rows: int) -> list[dict[str, str]]:
    """Up to `max_rows` rows (dicts of strings) of the first CSV under `<prefix>/Preprocess/test/`."""
    listing = s3.list_objects_v2(Bucket=execution_prefix_bucket, Prefix=f"{execution_prefix}/Preprocess/test/")
    keys = sorted(o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".csv"))
    if not keys:
        raise SmokeTestFailed(f"no test split CSV under s3://{execution_prefix_bucket}/{execution_prefix}/Preprocess/test/")
    body = s3.get_object(Bucket=execution_prefix_bucket, Key=keys[0])["Body"]
    lines = []
    for line in body.iter_lines():
        lines.append(line.decode("utf-8"))
        if len(lines) > max_rows:
            break
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def raw_features(rows: list[dict[str, str]], preprocessor: dict) -> list[list[float]]:
    """Rows in feature order, in raw units: undo the standardisation when the split is scaled."""
    features = preprocessor["feature_order"]
    mean, scale = preprocessor["scaler"]["mean"], preprocessor["scaler"]["scale"]
    values = [[float(row[name]) for name in features] for row in rows]
    # Which units is the file in? Compare each column's sample mean with 0 (scaled) and with the
    # scaler mean (raw), both in units of the scale, and take the closer hypothesis.
    n = len(values)
    to_scaled = to_raw = 0.0
    for j in range(len(features)):
        column_mean = sum(v[j] for v in values) / n
        to_scaled += abs(column_mean) / (scale[j] or 1.0)
        to_raw += abs(column_mean - mean[j]) / (scale[j] or 1.0)
    if to_scaled < to_raw:
        return [[v[j] * scale[j] + mean[j] for j in range(len(features))] for v in values]
    return values


def run_smoke_test(endpoint_name: str, model_package_arn: str, *, max_rows: int = 20, tolerance: float = 3.0,
                   sagemaker: Any = None, s3: Any = None, runtime: Any = None) -> SmokeResult:
    sagemaker = sagemaker or boto3.client("sagemaker")
    s3 = s3 or boto3.client("s3")
    runtime = runtime or boto3.client("sagemaker-runtime")
    package = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    bucket, evaluation_key = _split(evaluation_location(package))
    evaluation = _read_json(s3, bucket, evaluation_key)
    evaluation_rmse = float(evaluation["regression_metrics"]["rmse"]["value"])
    # .../<execution id>/Evaluate/evaluation/evaluation.json -> .../<execution id>
    execution_prefix = evaluation_key.rsplit("/", 3)[0]
    preprocessor = _read_json(s3, bucket, f"{execution_prefix}/Preprocess/preprocessor/preprocessor.json")
    rows = load_test_rows(s3, bucket, execution_prefix, max_rows)
    if not rows:
        raise SmokeTestFailed("the test split is empty")
    target = preprocessor.get("target")
    if not target or target not in rows[0]:
        raise SmokeTestFailed(f"test split has no target column {target!r}")
    features = preprocessor["feature_order"]
    raw = raw_features(rows, preprocessor)
    actual = [float(row[target]) for row in rows]

    records = [dict(zip(features, values)) for values in raw]
    json_predictions = _invoke(runtime, endpoint_name, "application/json", json.dumps({"instances": records}))
    csv_body = "\n".join(",".join(repr(v) for v in values) for values in raw) + "\n"
    csv_predictions = _invoke(runtime, endpoint_name, "text/csv", csv_body)
    for name, predictions in (("JSON", json_predictions), ("CSV", csv_predictions)):
        if len(predictions) != len(rows):
            raise SmokeTestFailed(f"{name} request with {len(rows)} rows got {len(predictions)} predictions")
        bad = [p for p in predictions if not isinstance(p, (int, float)) or not math.isfinite(p)]
        if bad:
            raise SmokeTestFailed(f"{name} request got non-finite predictions: {bad[:3]}")
    if any(abs(a - b) > 1e-6 * max(1.0, abs(a)) for a, b in zip(json_predictions, csv_predictions)):
        raise SmokeTestFailed("JSON and CSV requests for the same rows got different predictions")
    rmse = math.sqrt(sum((p - y) ** 2 for p, y in zip(json_predictions, actual)) / len(rows))
    # A small sample's rmse scatters around the evaluated one; a broken model misses by orders.
    limit = tolerance * evaluation_rmse + 1e-9 * max(1.0, max(abs(y) for y in actual))
    if rmse > limit:
        raise SmokeTestFailed(f"endpoint {endpoint_name} rmse {rmse:.2f} on {len(rows)} test rows exceeds "
                              f"{tolerance:g} x evaluation rmse {evaluation_rmse:.2f} (limit {limit:.2f})")
    return SmokeResult(len(rows), rmse, evaluation_rmse, limit)


def _invoke(runtime, endpoint_name: str, content_type: str, body: str) -> list:
    try:
        response = runtime.invoke_endpoint(EndpointName=endpoint_name, ContentType=content_type,
                                           Accept="application/json", Body=body.encode())
    except Exception as exc:  # botocore ClientError (ModelError, validation) or connection trouble
        raise SmokeTestFailed(f"invoking {endpoint_name} with {content_type} failed: {exc}") from exc
    try:
        return json.loads(response["Body"].read())["predictions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SmokeTestFailed(f"endpoint {endpoint_name} answered {content_type} without a predictions list") from exc
