"""Local endpoints behind the gateway: real model server processes, blue/green updates, rollback."""
from __future__ import annotations

import json
import os
import re
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from local.cli import main as cli_main
from local.aws.endpoints import LocalEndpoints
from local.aws.gateway import LocalGateway
from tests.model_artifacts import FEATURES, TrafficLoop, expected_predictions, publish_package

BUCKET = "endpoint-artifacts"
GROUP = "endpoint-tests"
ROLE = "arn:aws:iam::123456789012:role/model"


@pytest.fixture
def cloud(monkeypatch, tmp_path):
    with LocalGateway() as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        endpoints = LocalEndpoints(gateway, tmp_path / "work", max_bake_seconds=1.0).install()
        try:
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            sagemaker = boto3.client("sagemaker")
            sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
            yield {"gateway": gateway, "endpoints": endpoints, "s3": s3, "sagemaker": sagemaker,
                   "runtime": boto3.client("sagemaker-runtime"), "tmp": tmp_path}
        finally:
            endpoints.shutdown()


def deploy_config(cloud, package: dict, name: str, instances: int = 1, capture: dict | None = None) -> str:
    sm = cloud["sagemaker"]
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": package["arn"]}])
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": instances, "InstanceType": "ml.m5.large"}],
        **({"DataCaptureConfig": capture} if capture else {}))
    return name


# What the deploy state machine's CreateEndpointConfig asks for (statemachines/deploy.asl.json).
CAPTURE = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": f"s3://{BUCKET}/capture",
           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
           "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}}


def captured_records(s3, prefix: str = "capture/") -> list[tuple[str, dict]]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return [(key, json.loads(line)) for key in sorted(keys)
            for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()]


def wait_status(sm, name: str, until=lambda s: s not in ("Creating", "Updating"), timeout=90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sm.describe_endpoint(EndpointName=name)
        if until(described["EndpointStatus"]):
            return described
        time.sleep(0.1)
    raise AssertionError(f"endpoint {name} stuck in {described['EndpointStatus']}")


def predict(runtime, name: str, records: list[dict]) -> list[float]:
    response = runtime.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=json.dumps(records))
    return json.loads(response["Body"].read())["predictions"]


def test_npy_requests_are_served_captured_as_base64_and_read_back_by_the_drift_job(cloud, capsys):
    """application/x-npy end to end on the local face: sagemaker-runtime → gateway → model server,
    captured (with the content-type lists deploy-prepare sets) as BASE64, read back by the drift
    job's reader; and `mlops predict --npy`."""
    import base64
    import io

    import numpy as np

    from jobs import drift
    from jobs.serve import FeatureSchema

    package = publish_package(cloud["s3"], cloud["sagemaker"], cloud["tmp"], bucket=BUCKET, group=GROUP, execution_id="e1")
    # A capture folder of its own: S3 outlives each test's gateway in this process.
    capture = {**CAPTURE, "DestinationS3Uri": f"s3://{BUCKET}/capture-npy",
               "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv", "application/csv"],
                                            "JsonContentTypes": ["application/json"]}}
    cloud["sagemaker"].create_endpoint(EndpointName="houses", EndpointConfigName=deploy_config(cloud, package, "m1", capture=capture))
    assert wait_status(cloud["sagemaker"], "houses")["EndpointStatus"] == "InService"
    test = package["trained"]["test"].iloc[:4][FEATURES].astype(float)
    test.iloc[2, 3] = np.nan
    expected = expected_predictions(package["trained"], test).tolist()
    buffer = io.BytesIO()
    np.save(buffer, test.to_numpy(), allow_pickle=False)
    body = buffer.getvalue()
    response = cloud["runtime"].invoke_endpoint(EndpointName="houses", ContentType="application/x-npy", Body=body)
    assert json.loads(response["Body"].read())["predictions"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ClientError) as err:  # the model server's 400, reported as AWS does
        cloud["runtime"].invoke_endpoint(EndpointName="houses", ContentType="application/x-npy", Body=body[:-8])
    assert err.value.response["Error"]["Code"] == "ModelError" and "not a valid .npy file" in err.value.response["Error"]["Message"]

    cloud["endpoints"].flush_capture()
    [(_, record)] = captured_records(cloud["s3"], "capture-npy/")  # only the successful invocation
    captured = record["captureData"]["endpointInput"]
    assert captured["observedContentType"] == "application/x-npy" and captured["encoding"] == "BASE64"
    assert base64.b64decode(captured["data"]) == body
    np.testing.assert_array_equal(drift.rows_of_record(FeatureSchema(FEATURES, "PRICE"), record), test.to_numpy())

    state = cloud["tmp"] / "state"
    state.mkdir()
    (state / "cloud.json").write_text(json.dumps({
        "pid": os.getpid(), "endpoint_url": cloud["gateway"].url,
        "credentials": {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}}))
    npy_file, not_npy = cloud["tmp"] / "rows.npy", cloud["tmp"] / "rows.csv"
    npy_file.write_bytes(body)
    test.to_csv(not_npy, index=False)
    capsys.readouterr()
    assert cli_main(["predict", "houses", "--state-dir", str(state), "--npy", str(npy_file)]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"] == pytest.approx(expected, rel=1e-5)
    assert cli_main(["predict", "houses", "--state-dir", str(state), "--npy", str(not_npy)]) == 2
    assert "is not a NumPy .npy file" in capsys.readouterr().err


def test_create_then_invoke_with_json_and_csv(cloud, capsys):
    package = publish_package(cloud["s3"], cloud["sagemaker"], cloud["tmp"], bucket=BUCKET, group=GROUP, execution_id="e1")
    config = deploy_config(cloud, package, "m1", capture=CAPTURE)
    cloud["sagemaker"].create_endpoint(EndpointName="houses", EndpointConfigName=config)
    described = wait_status(cloud["sagemaker"], "houses")
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    test = package["trained"]["test"].iloc[:3]
    expected = expected_predictions(package["trained"], test).tolist()
    json_body = json.dumps(test[FEATURES].to_dict(orient="records"))
    assert predict(cloud["runtime"], "houses", test[FEATURES].to_dict(orient="records")) == pytest.approx(expected, rel=1e-5)
    csv_body = test[FEATURES].to_csv(index=False, header=False)
    response = cloud["runtime"].invoke_endpoint(EndpointName="houses", ContentType="text/csv", Body=csv_body)
    assert json.loads(response["Body"].read())["predictions"] == pytest.approx(expected, rel=1e-5)
    assert response["InvokedProductionVariant"] == "AllTraffic"
    # Explanations through sagemaker-runtime: CustomAttributes reaches the container.
    for content_type, body in (("application/json", json_body), ("text/csv", csv_body)):
        answer = json.loads(cloud["runtime"].invoke_endpoint(
            EndpointName="houses", ContentType=content_type, Body=body, CustomAttributes="explain=true")["Body"].read())
        assert answer["predictions"] == pytest.approx(expected, rel=1e-5)
        for prediction, explanation in zip(answer["predictions"], answer["explanations"]):
            assert list(explanation["contributions"]) == FEATURES
            assert explanation["bias"] + sum(explanation["contributions"].values()) == pytest.approx(prediction, rel=1e-4)
    # Data capture: every invocation above, in SageMaker's format and layout, once flushed.
    cloud["endpoints"].flush_capture()
    records = captured_records(cloud["s3"])
    assert len(records) == 4
    key, first = records[0]
    assert re.fullmatch(r"capture/houses/AllTraffic/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl", key)
    assert first["eventVersion"] == "0"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", first["eventMetadata"]["inferenceTime"])
    inputs = [(r["captureData"]["endpointInput"]["encoding"], r["captureData"]["endpointInput"]["data"]) for _, r in records]
    assert inputs == [("JSON", json_body), ("CSV", csv_body), ("JSON", json_body), ("CSV", csv_body)]
    output = records[1][1]["captureData"]["endpointOutput"]
    assert output["mode"] == "OUTPUT" and output["observedContentType"] == "application/json"
    assert json.loads(output["data"])["predictions"] == pytest.approx(expected, rel=1e-5)
    assert len({r["eventMetadata"]["eventId"] for _, r in records}) == 4
    # a bad request is the model's client error, reported as AWS does
    with pytest.raises(ClientError) as err:
        cloud["runtime"].invoke_endpoint(EndpointName="houses", ContentType="application/json", Body=b'{"DECK": 1}')
    assert err.value.response["Error"]["Code"] == "ModelError"
    assert "missing field" in err.value.response["Error"]["Message"]
    # the CLI, finding the running cloud through <state>/cloud.json
    state = cloud["tmp"] / "state"
    state.mkdir()
    (state / "cloud.json").write_text(json.dumps({
        "pid": os.getpid(), "endpoint_url": cloud["gateway"].url,
        # A bare gateway authenticates nobody: any keys do (a LocalCloud publishes its administrator's).
        "credentials": {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}}))
    csv_file = cloud["tmp"] / "rows.csv"
    test[FEATURES].to_csv(csv_file, index=False)
    for args in (["--json", json.dumps(test[FEATURES].to_dict(orient="records"))], ["--csv", str(csv_file)]):
        capsys.readouterr()
        assert cli_main(["predict", "houses", "--state-dir", str(state), *args]) == 0
        assert json.loads(capsys.readouterr().out)["predictions"] == pytest.approx(expected, rel=1e-5)
    capsys.readouterr()
    assert cli_main(["predict", "houses", "--state-dir", str(state), "--csv", str(csv_file), "--explain",
                     "--format", "json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["predictions"] == pytest.approx(expected, rel=1e-5) and len(explained["explanations"]) == 3
    assert cli_main(["predict", "houses", "--state-dir", str(state), "--csv", str(csv_file), "--explain",
                     "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert table.count("row ") == 3 and "(bias)" in table and all(name in table for name in FEATURES)
    assert f"prediction {expected[0]:,.4f}"[:-2] in table
    assert cli_main(["predict", "houses", "--state-dir", str(state), "--json", '{"DECK": 1}']) == 1
    assert "ModelError" in capsys.readouterr().err
    assert cli_main(["predict", "houses", "--state-dir", str(cloud["tmp"] / "none"), "--json", "{}"]) == 2
    # and moto's own records agree
    assert cloud["sagemaker"].list_endpoints()["Endpoints"][0]["EndpointStatus"] == "InService"
    with pytest.raises(ClientError):
        cloud["sagemaker"].create_endpoint(EndpointName="houses", EndpointConfigName=config)


def test_unknown_endpoint_is_a_validation_error(cloud):
    with pytest.raises(ClientError) as err:
        predict(cloud["runtime"], "nope", [{}])
    assert "not found" in err.value.response["Error"]["Message"]


def test_create_from_broken_artifact_fails_with_reason(cloud):
    package = publish_package(cloud["s3"], cloud["sagemaker"], cloud["tmp"], bucket=BUCKET, group=GROUP,
                              execution_id="bad", broken=True)
    cloud["sagemaker"].create_endpoint(EndpointName="broken", EndpointConfigName=deploy_config(cloud, package, "mb"))
    described = wait_status(cloud["sagemaker"], "broken")
    assert described["EndpointStatus"] == "Failed"
    assert "model.json" in described["FailureReason"]

    # Deleted, the name stays taken while the endpoint is Deleting, as on AWS; then it is free again.
    cloud["sagemaker"].delete_endpoint(EndpointName="broken")
    assert cloud["sagemaker"].describe_endpoint(EndpointName="broken")["EndpointStatus"] == "Deleting"
    with pytest.raises(ClientError) as refused:
        cloud["sagemaker"].create_endpoint(EndpointName="broken", EndpointConfigName="mb")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert refused.value.response["Error"]["Message"].startswith("Cannot create already existing endpoint")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            cloud["sagemaker"].describe_endpoint(EndpointName="broken")
        except ClientError as gone:
            assert "Could not find endpoint" in gone.response["Error"]["Message"]
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the endpoint stayed Deleting")
    assert cloud["endpoints"].deleting_seconds == 1.0
    cloud["sagemaker"].create_endpoint(EndpointName="broken", EndpointConfigName="mb")  # the name is free again


def test_blue_green_update_drops_nothing_and_broken_update_rolls_back(cloud):
    sm, runtime = cloud["sagemaker"], cloud["runtime"]
    first = publish_package(cloud["s3"], sm, cloud["tmp"], bucket=BUCKET, group=GROUP, execution_id="v1")
    second = publish_package(cloud["s3"], sm, cloud["tmp"], bucket=BUCKET, group=GROUP, execution_id="v2", price_factor=2.0)
    broken = publish_package(cloud["s3"], sm, cloud["tmp"], bucket=BUCKET, group=GROUP, execution_id="v3", broken=True)
    sm.create_endpoint(EndpointName="houses", EndpointConfigName=deploy_config(cloud, first, "c1"))
    assert wait_status(sm, "houses")["EndpointStatus"] == "InService"
    row = first["trained"]["test"].iloc[[0]]
    record = row[FEATURES].iloc[0].to_dict()
    old_answer = float(expected_predictions(first["trained"], row)[0])
    new_answer = float(expected_predictions(second["trained"], row)[0])

    loop = TrafficLoop(runtime, "houses", record)
    loop.start()
    try:
        time.sleep(0.3)
        canary = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
            "Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 30}, "WaitIntervalInSeconds": 1},
            "TerminationWaitInSeconds": 0}}
        # SageMaker's rule: a canary is at most half the instances, so one instance allows none.
        with pytest.raises(ClientError) as refused:
            sm.update_endpoint(EndpointName="houses", EndpointConfigName=deploy_config(cloud, second, "c2-single"),
                               DeploymentConfig=canary)
        assert "at most 50% of the variant's instance count" in refused.value.response["Error"]["Message"]
        sm.update_endpoint(EndpointName="houses", EndpointConfigName=deploy_config(cloud, second, "c2", instances=2),
                           DeploymentConfig=canary)
        updating = sm.describe_endpoint(EndpointName="houses")
        assert updating["EndpointStatus"] == "Updating"
        # As SageMaker: the config the update moves to (what batch scoring's serving package reads).
        assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == "c2"
        described = wait_status(sm, "houses")
        time.sleep(0.3)
    finally:
        loop.stop()
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "c2"
    assert "FailureReason" not in described and "PendingDeploymentSummary" not in described
    assert loop.failures == [] and loop.ok > 20
    assert predict(runtime, "houses", [record])[0] == pytest.approx(new_answer, rel=1e-5)
    assert any(abs(a - old_answer) < 1 for a in loop.answers) and any(abs(a - new_answer) < 1 for a in loop.answers)

    # A broken artifact: the new variant never gets traffic, the old one keeps serving.
    loop = TrafficLoop(runtime, "houses", record)
    loop.start()
    try:
        sm.update_endpoint(EndpointName="houses", EndpointConfigName=deploy_config(cloud, broken, "c3", instances=2),
                          DeploymentConfig=canary)
        described = wait_status(sm, "houses")
    finally:
        loop.stop()
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "c2"
    assert "rolled back" in described["FailureReason"]
    assert loop.failures == []
    assert predict(runtime, "houses", [record])[0] == pytest.approx(new_answer, rel=1e-5)


def test_shutdown_stops_every_server_process(cloud):
    package = publish_package(cloud["s3"], cloud["sagemaker"], cloud["tmp"], bucket=BUCKET, group=GROUP, execution_id="s1")
    cloud["sagemaker"].create_endpoint(EndpointName="short", EndpointConfigName=deploy_config(cloud, package, "ms"))
    assert wait_status(cloud["sagemaker"], "short")["EndpointStatus"] == "InService"
    processes = [v.process for v in cloud["endpoints"]._all_variants]
    assert processes and all(p.poll() is None for p in processes)
    cloud["endpoints"].shutdown()
    assert all(p.poll() is not None for p in processes)
