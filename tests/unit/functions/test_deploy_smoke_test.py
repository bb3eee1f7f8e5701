"""Smoke test logic against moto (registry, S3) and a real model server (`python -m jobs.serve`, the
endpoint's process, from the project venv) behind the gateway's InvokeEndpoint route."""
from __future__ import annotations

import contextlib
import http.client
import json

import boto3
import pytest

from local.aws.gateway import LocalGateway
from mlops_shared.smoke_test import SmokeTestFailed, run_smoke_test
from tests.project_venv import model_server, run_json

BUCKET = "smoke-artifacts"
GROUP = "smoke"


@pytest.fixture
def world(monkeypatch, tmp_path):
    """A gateway whose endpoint `houses` is answered by a model server process (switchable)."""
    servers = {}

    def invoke(environ, start_response):
        conn = http.client.HTTPConnection("127.0.0.1", servers["current"], timeout=10)
        conn.request("POST", "/invocations", body=environ["gateway.body"],
                     headers={"Content-Type": environ.get("CONTENT_TYPE", "")})
        response = conn.getresponse()
        data = response.read()
        start_response(f"{response.status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    stack = contextlib.ExitStack()

    def serve(model_dir):
        servers["current"] = stack.enter_context(model_server(model_dir))

    with LocalGateway() as gateway, stack:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        gateway.route_path(r"/endpoints/houses/invocations", invoke)
        s3, sm = boto3.client("s3"), boto3.client("sagemaker")
        s3.create_bucket(Bucket=BUCKET)
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
        yield {"s3": s3, "sm": sm, "serve": serve, "tmp": tmp_path}


def publish_package(world, execution_id: str) -> dict:
    """What one pipeline execution leaves (model, Evaluate outputs) and its registered package."""
    return run_json("tests.model_artifacts", "publish-package", str(world["tmp"]), BUCKET, GROUP, execution_id)


def train_model_dir(model_dir, price_factor: float) -> None:
    run_json("tests.model_artifacts", "train-model-dir", str(model_dir), str(price_factor))


def test_passes_for_the_model_of_the_package(world):
    package = publish_package(world, "p1")
    world["serve"](world["tmp"] / "p1" / "model")
    result = run_smoke_test("houses", package["arn"])
    assert result.rows == 20
    assert result.evaluation_rmse == pytest.approx(package["rmse"])
    assert result.max_relative_difference < 1e-4


def test_fails_when_the_endpoint_answers_far_from_the_evaluation(world):
    package = publish_package(world, "p2")
    wrong = world["tmp"] / "wrong"
    train_model_dir(wrong, price_factor=3.0)  # a different model: prices three times too high
    world["serve"](wrong)
    with pytest.raises(SmokeTestFailed, match="differs from the evaluated one"):
        run_smoke_test("houses", package["arn"])


def test_fails_when_the_scaler_is_not_applied(world, tmp_path):
    package = publish_package(world, "p4")
    # The same booster served with an identity scaler: the reference sample's bug (pre-scaled input).
    model_dir = world["tmp"] / "p4" / "model"
    preprocessor = json.loads((model_dir / "preprocessor.json").read_text())
    n = len(preprocessor["feature_order"])
    preprocessor["scaler"] = {"mean": [0.0] * n, "scale": [1.0] * n}
    (model_dir / "preprocessor.json").write_text(json.dumps(preprocessor))
    world["serve"](model_dir)
    with pytest.raises(SmokeTestFailed, match="differs from the evaluated one"):
        run_smoke_test("houses", package["arn"])


def test_fails_clearly_without_a_smoke_sample(world):
    package = publish_package(world, "p3")
    world["s3"].delete_object(Bucket=BUCKET, Key="pipeline/p3/Evaluate/evaluation/smoke_sample.csv")
    world["serve"](world["tmp"] / "p3" / "model")
    with pytest.raises(SmokeTestFailed, match="no smoke sample"):
        run_smoke_test("houses", package["arn"])
