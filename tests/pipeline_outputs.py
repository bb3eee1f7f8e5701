"""What a pipeline execution's Evaluate step leaves in S3, made by running the real writer.

Tests of the readers (approvals, the smoke test, the CLI, deployment) use these files instead of
hand-written `evaluation.json` documents, so a change to the format written by `jobs.evaluate` shows
up in the fast tests, not only in the end-to-end run. `evaluate_tiny_model` trains a small model
(`tests.model_artifacts`), lays out the processing container the pipeline gives the step and runs
`jobs.evaluate.evaluate` in it; with a `champion_group`, the step also scores the group's champion.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlops_shared.artifacts import EvaluationReport

RMSE_THRESHOLD = 15000.0
CHAMPION_TOLERANCE = 0.05


@dataclass(frozen=True)
class EvaluationOutputs:
    files: dict[str, bytes]  # file name -> content, as the step writes them under evaluation/
    report: EvaluationReport
    trained: dict  # what `train_model_dir` returned for the evaluated model
    model_tar: bytes

    def upload(self, s3, bucket: str, prefix: str) -> str:
        """Puts every file under `prefix/`; returns the S3 URI of evaluation.json."""
        for name, body in self.files.items():
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)
        return f"s3://{bucket}/{prefix}/evaluation.json"


@contextlib.contextmanager
def container_root(root: Path):
    previous = os.environ.get("SM_CONTAINER_ROOT")
    os.environ["SM_CONTAINER_ROOT"] = str(root)
    try:
        yield root
    finally:
        if previous is None:
            os.environ.pop("SM_CONTAINER_ROOT", None)
        else:
            os.environ["SM_CONTAINER_ROOT"] = previous


def evaluate_tiny_model(workdir: Path, *, price_factor: float = 1.0, rounds: int = 40,
                        champion_group: str | None = None, sagemaker=None, s3=None) -> EvaluationOutputs:
    """Trains a tiny model and runs the real Evaluate step on its test rows."""
    import pandas as pd

    from jobs import evaluate
    from local.cli.datagen import TARGET
    from tests.model_artifacts import FEATURES, tar_model_dir, train_model_dir

    workdir = Path(workdir)
    model_dir = workdir / "model"
    trained = train_model_dir(model_dir, price_factor=price_factor, rounds=rounds)
    model_tar = tar_model_dir(model_dir)
    root = workdir / "container"
    model_input = root / "processing" / "input" / "model"
    test_input = root / "processing" / "input" / "test"
    model_input.mkdir(parents=True)
    test_input.mkdir(parents=True)
    (model_input / "model.tar.gz").write_bytes(model_tar)
    # The Preprocess step's test split: features scaled with the model's own scaler, target raw.
    test = trained["test"]
    scaled = pd.DataFrame((test[FEATURES].to_numpy(dtype=float) - trained["mean"]) / trained["scale"],
                          columns=FEATURES)
    scaled.insert(0, TARGET, test[TARGET].to_numpy(dtype=float))
    scaled.to_parquet(test_input / "part-00000.parquet", index=False)
    with container_root(root):
        document = evaluate.evaluate(TARGET, champion_group, RMSE_THRESHOLD, CHAMPION_TOLERANCE,
                                     sagemaker=sagemaker, s3=s3)
    out = root / "processing" / "output" / "evaluation"
    files = {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}
    return EvaluationOutputs(files, EvaluationReport.from_json(document), trained, model_tar)


def register_champion(workdir: Path, *, s3, sagemaker, bucket: str, group: str, rounds: int = 6) -> str:
    """A weaker Approved model in `group` (its artifact in `bucket`), for Evaluate to compare with."""
    from tests.model_artifacts import tar_model_dir, train_model_dir

    model_dir = Path(workdir) / "champion"
    train_model_dir(model_dir, rounds=rounds)
    key = "champion/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=tar_model_dir(model_dir))
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:champion",
                            "ModelDataUrl": f"s3://{bucket}/{key}"}],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]


def evaluation_with_champion(workdir: Path, endpoint_url: str) -> EvaluationOutputs:
    """The real Evaluate output of a tiny model with a (weaker) champion registered, made against the
    moto server at `endpoint_url` in a bucket and group of their own (moto cannot delete model
    packages; the names are unique, and the next reset of the server forgets them)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    sagemaker = boto3.client("sagemaker", endpoint_url=endpoint_url)
    suffix = uuid.uuid4().hex[:8]
    bucket, group = f"evaluation-fixture-{suffix}", f"evaluation-fixture-{suffix}"
    s3.create_bucket(Bucket=bucket)
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    register_champion(workdir, s3=s3, sagemaker=sagemaker, bucket=bucket, group=group)
    return evaluate_tiny_model(workdir, champion_group=group, sagemaker=sagemaker, s3=s3)


def evaluation_files(workdir: Path, endpoint_url: str) -> EvaluationOutputs:
    """`evaluation_with_champion`, from wherever the tests run: in process where the ML stack is,
    else made by the project venv (tests.project_venv); then only `files` and `report` are set."""
    from tests.project_venv import has_ml_stack, run_json

    if has_ml_stack():
        return evaluation_with_champion(workdir, endpoint_url)
    out = Path(workdir) / "evaluation"
    run_json("tests.pipeline_outputs", str(workdir), endpoint_url, str(out))
    files = {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}
    return EvaluationOutputs(files, EvaluationReport.from_json(json.loads(files["evaluation.json"])), {}, b"")


if __name__ == "__main__":  # python -m tests.pipeline_outputs WORKDIR ENDPOINT_URL OUT_DIR (project venv)
    workdir, endpoint, out_dir = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    outputs = evaluation_with_champion(workdir, endpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, body in outputs.files.items():
        (out_dir / name).write_bytes(body)
    print(json.dumps(sorted(outputs.files)))
