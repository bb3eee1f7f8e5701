"""Smoke test of a freshly deployed endpoint with rows the evaluation step scored itself.

The model package's ModelQuality statistics point at `.../Evaluate/evaluation/evaluation.json`; next
to it the evaluate step writes `smoke_sample.csv`: a few test rows in RAW units (what the endpoint
takes), their true target and the prediction the evaluation made for each. The rows are sent as
JSON and as CSV; the answers must be finite, one per row, identical for both formats and equal to
the evaluation's predictions (same artifact, same scaler, same container logic). That catches a
broken artifact, a missing or wrong scaler and a serving container that parses input differently.
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

from mlops_shared.artifacts import EvaluationReport
from mlops_shared.aws import parse_s3_uri



class SmokeTestFailed(Exception):
    """The endpoint answered wrongly (or not at all); the message says how."""


@dataclass(frozen=True)
class SmokeResult:
    rows: int
    max_relative_difference: float
    rmse: float
    evaluation_rmse: float

    def as_dict(self) -> dict:
        return {"rows": self.rows, "max_relative_difference": self.max_relative_difference,
                "rmse": self.rmse, "evaluation_rmse": self.evaluation_rmse, "passed": True}


def evaluation_location(model_package: dict) -> str:
    try:
        return model_package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    except KeyError:
        raise SmokeTestFailed(f"model package {model_package.get('ModelPackageArn')} has no ModelQuality "
                              "statistics (evaluation.json), so there is nothing to compare with") from None


def load_sample(s3, bucket: str, key: str, max_rows: int) -> tuple[list[str], list[dict[str, str]]]:
    """Header and up to `max_rows` rows of the evaluation's smoke sample."""
    try:
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    except s3.exceptions.NoSuchKey:
        raise SmokeTestFailed(f"no smoke sample at s3://{bucket}/{key}: the evaluation step writes it "
                              "next to evaluation.json") from None
    reader = csv.DictReader(io.StringIO(text))
    rows = [row for _, row in zip(range(max_rows), reader)]
    return list(reader.fieldnames or []), rows


def run_smoke_test(endpoint_name: str, model_package_arn: str, *, max_rows: int = 20,
                   relative_tolerance: float = 1e-3, sagemaker: Any = None, s3: Any = None,
                   runtime: Any = None) -> SmokeResult:
    sagemaker = sagemaker or boto3.client("sagemaker")
    s3 = s3 or boto3.client("s3")
    runtime = runtime or boto3.client("sagemaker-runtime")
    package = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    try:
        bucket, evaluation_key = parse_s3_uri(evaluation_location(package))
    except ValueError as exc:
        raise SmokeTestFailed(str(exc)) from None
    evaluation = EvaluationReport.from_json(json.loads(s3.get_object(Bucket=bucket, Key=evaluation_key)["Body"].read()))
    evaluation_rmse = evaluation.rmse
    target = evaluation.target
    sample_key = f"{evaluation_key.rsplit('/', 1)[0]}/{evaluation.smoke_sample}"
    header, rows = load_sample(s3, bucket, sample_key, max_rows)
    if not rows:
        raise SmokeTestFailed(f"the smoke sample s3://{bucket}/{sample_key} has no rows")
    prediction_column = evaluation.smoke_prediction_column
    if prediction_column not in header or target not in header:
        raise SmokeTestFailed(f"the smoke sample lacks the {prediction_column!r} or target {target!r} column")
    features = [name for name in header if name not in (prediction_column, target)]
    # An empty cell is a missing feature value (the model takes those): null in JSON, empty in CSV.
    raw = [[float(row[name]) if row[name].strip() else None for name in features] for row in rows]
    expected = [float(row[prediction_column]) for row in rows]
    actual = [float(row[target]) for row in rows]

    records = [dict(zip(features, values)) for values in raw]
    json_predictions = _invoke(runtime, endpoint_name, "application/json", json.dumps({"instances": records}))
    csv_body = io.StringIO()
    writer = csv.writer(csv_body, lineterminator="\n")  # quotes names with commas or quotes
    writer.writerow(features)
    writer.writerows(["" if v is None else repr(v) for v in values] for values in raw)
    csv_predictions = _invoke(runtime, endpoint_name, "text/csv", csv_body.getvalue())
    for name, predictions in (("JSON", json_predictions), ("CSV", csv_predictions)):
        if len(predictions) != len(rows):
            raise SmokeTestFailed(f"{name} request with {len(rows)} rows got {len(predictions)} predictions")
        bad = [p for p in predictions if not isinstance(p, (int, float)) or not math.isfinite(p)]
        if bad:
            raise SmokeTestFailed(f"{name} request got non-finite predictions: {bad[:3]}")
    if any(abs(a - b) > 1e-6 * max(1.0, abs(a)) for a, b in zip(json_predictions, csv_predictions)):
        raise SmokeTestFailed("JSON and CSV requests for the same rows got different predictions")
    differences = [abs(p - e) / max(1.0, abs(e)) for p, e in zip(json_predictions, expected)]
    worst = max(differences)
    if worst > relative_tolerance:
        row = differences.index(worst)
        raise SmokeTestFailed(
            f"endpoint {endpoint_name} predicted {json_predictions[row]:.6g} for sample row {row} where the "
            f"evaluation predicted {expected[row]:.6g} (relative difference {worst:.3g} > {relative_tolerance:g}): "
            "the deployed artifact or its scaling differs from the evaluated one")
    rmse = math.sqrt(sum((p - y) ** 2 for p, y in zip(json_predictions, actual)) / len(rows))
    return SmokeResult(len(rows), worst, rmse, evaluation_rmse)


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
