"""Builds real, tiny model artifacts for serving and deployment tests (a few hundred rows, a second).

The artifact follows the contract in docs/contracts.md: `model.tar.gz` = `model.json` (XGBoost JSON)
+ `preprocessor.json` (`feature_order`, `target`, `scaler{mean, scale}`). `publish_package` also lays
out what a pipeline execution leaves in S3 (the model, and what the real Evaluate step writes for it:
evaluation.json, plots, smoke sample) and registers a model package pointing at it, as the
pipeline's RegisterModel step does.
"""
from __future__ import annotations

import io
import json
import math
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from local.cli.datagen import TARGET, generate_housing

FEATURES = ["YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS", "NUM_BATHROOMS", "LOT_ACRES",
            "GARAGE_SPACES", "FRONT_PORCH", "DECK"]


def housing(rows: int = 600, seed: int = 3) -> pd.DataFrame:
    return generate_housing(rows, seed)


def train_model_dir(model_dir: Path, rows: int = 600, seed: int = 3, rounds: int = 40,
                    price_factor: float = 1.0) -> dict:
    """Trains a small XGBoost regressor on scaled features and writes the model directory.

    `price_factor` scales the target, so a second model gives visibly different predictions.
    Returns {"rmse": test rmse, "mae": ..., "test": raw test DataFrame (with target)}."""
    data = housing(rows, seed)
    data[TARGET] = data[TARGET] * price_factor
    train, test = data.iloc[: int(rows * 0.8)], data.iloc[int(rows * 0.8):]
    mean = train[FEATURES].mean().to_numpy()
    scale = train[FEATURES].std(ddof=0).replace(0, 1).to_numpy()
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.3, "nthread": 1},
        xgb.DMatrix((train[FEATURES].to_numpy() - mean) / scale, label=train[TARGET].to_numpy()),
        num_boost_round=rounds,
    )
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / "model.json"))
    (model_dir / "preprocessor.json").write_text(json.dumps({
        "feature_order": FEATURES,
        "target": TARGET,
        "scaler": {"mean": mean.tolist(), "scale": scale.tolist()},
    }))
    predictions = booster.predict(xgb.DMatrix((test[FEATURES].to_numpy() - mean) / scale))
    errors = predictions - test[TARGET].to_numpy()
    return {
        "rmse": float(math.sqrt(np.mean(errors ** 2))),
        "mae": float(np.mean(np.abs(errors))),
        "test": test.reset_index(drop=True),
        "mean": mean,
        "scale": scale,
        "booster": booster,
    }


def expected_predictions(trained: dict, records: pd.DataFrame) -> np.ndarray:
    """What the served model must answer for raw `records` (independent of the server's code)."""
    scaled = (records[FEATURES].to_numpy(dtype=float) - trained["mean"]) / trained["scale"]
    return trained["booster"].predict(xgb.DMatrix(scaled))


def tar_model_dir(model_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(Path(model_dir).iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def broken_model_tar(preprocessor: bytes = b"{}") -> bytes:
    """A tarball whose model.json is not a model: the server cannot start from it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {"model.json": b"{not a model", "preprocessor.json": preprocessor}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def publish_package(s3, sagemaker, tmp_path: Path, *, bucket: str, group: str, execution_id: str,
                    price_factor: float = 1.0, broken: bool = False, image_uri: str = "local/jobs:latest") -> dict:
    """Writes one pipeline execution's outputs to S3 and registers a PendingManualApproval package.

    Returns {"arn", "model_data_url", "rmse", "trained"}."""
    from tests.pipeline_outputs import evaluate_tiny_model

    prefix = f"pipeline/{execution_id}"
    # What the pipeline's Evaluate step writes for this model (evaluation.json, plots, smoke sample).
    outputs = evaluate_tiny_model(tmp_path / execution_id, price_factor=price_factor)
    trained = outputs.trained
    model_key = f"{prefix}/Train/output/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=model_key,
                  Body=broken_model_tar((tmp_path / execution_id / "model" / "preprocessor.json").read_bytes())
                  if broken else outputs.model_tar)
    outputs.upload(s3, bucket, f"{prefix}/Evaluate/evaluation")
    model_data_url = f"s3://{bucket}/{model_key}"
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=f"tiny model from {execution_id}",
        InferenceSpecification={
            "Containers": [{"Image": image_uri, "ModelDataUrl": model_data_url}],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={"ModelQuality": {"Statistics": {
            "ContentType": "application/json",
            "S3Uri": f"s3://{bucket}/{prefix}/Evaluate/evaluation/evaluation.json",
        }}},
        ModelApprovalStatus="PendingManualApproval",
    )["ModelPackageArn"]
    return {"arn": arn, "model_data_url": model_data_url, "rmse": outputs.report.rmse, "trained": trained}


class TrafficLoop(threading.Thread):
    """Invokes the endpoint continuously, counting failures, until stopped."""

    def __init__(self, runtime, name: str, record: dict):
        super().__init__(daemon=True)
        self.runtime, self.name, self.body = runtime, name, json.dumps(record)
        self.ok, self.failures, self.answers = 0, [], set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                response = self.runtime.invoke_endpoint(EndpointName=self.name, ContentType="application/json", Body=self.body)
                self.answers.add(round(json.loads(response["Body"].read())["predictions"][0], 3))
                self.ok += 1
            except Exception as exc:  # every kind of failure counts
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


if __name__ == "__main__":
    # For tests that run where the ML stack is not (the function tests, tests.project_venv):
    #   python -m tests.model_artifacts publish-package WORKDIR BUCKET GROUP EXECUTION_ID
    #   python -m tests.model_artifacts train-model-dir MODEL_DIR PRICE_FACTOR
    # against the AWS of AWS_ENDPOINT_URL; prints one JSON line.
    import sys

    import boto3

    command, *args = sys.argv[1:]
    if command == "publish-package":
        workdir, bucket, group, execution_id = args
        published = publish_package(boto3.client("s3"), boto3.client("sagemaker"), Path(workdir), bucket=bucket,
                                    group=group, execution_id=execution_id)
        print(json.dumps({key: published[key] for key in ("arn", "model_data_url", "rmse")}))
    elif command == "train-model-dir":
        trained = train_model_dir(Path(args[0]), price_factor=float(args[1]))
        print(json.dumps({"rmse": trained["rmse"]}))
    else:
        raise SystemExit(f"unknown command {command}")
