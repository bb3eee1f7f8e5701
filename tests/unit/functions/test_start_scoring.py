"""Batch scoring by drop against a moto server: which package serves (endpoint, an update in
progress, no endpoint, nothing approved), the checks of a dropped file and its quarantine under
quarantine/score/, the pipeline start, and the notification when the scoring execution ends."""
from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlops_shared.serving import FROM_ENDPOINT, FROM_ENDPOINT_UPDATE, FROM_NEWEST_APPROVED, serving_package
from tests.lambda_handlers import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[3]
BUCKET = "mlops-data"
GROUP = "ray-mlops-test-models"
ENDPOINT = "ray-mlops-test-endpoint"
PIPELINE = "ray-mlops-test-scoring"
TABLE = "ray-mlops-test-idempotency"
ROLE = "arn:aws:iam::123456789012:role/model"
FEATURES = ["YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS"]


def model_tar(features=FEATURES) -> bytes:
    """What the function reads of a model.tar.gz: its preprocessor.json (the booster is the job's)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {"model.json": b"{}", "preprocessor.json": json.dumps({
                "feature_order": features, "target": "PRICE",
                "scaler": {"mean": [0.0] * len(features), "scale": [1.0] * len(features)}}).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class World:
    def __init__(self, monkeypatch):
        self.s3, self.sm = boto3.client("s3"), boto3.client("sagemaker")
        self.s3.create_bucket(Bucket=BUCKET)
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.sm.create_model_package_group(ModelPackageGroupName=GROUP)
        boto3.client("dynamodb").create_table(
            TableName=TABLE, AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
        sns, self.sqs = boto3.client("sns"), boto3.client("sqs")
        self.topic = sns.create_topic(Name="notifications")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="reader")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=queue_arn)
        self.sm.create_pipeline(PipelineName=PIPELINE, RoleArn="arn:aws:iam::123456789012:role/p",
                                PipelineDefinition=json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": []}))
        for name, value in {"SCORING_PIPELINE_NAME": PIPELINE, "DATA_BUCKET": BUCKET, "NOTIFICATION_TOPIC_ARN": self.topic,
                            "MODEL_PACKAGE_GROUP_NAME": GROUP, "ENDPOINT_NAME": ENDPOINT, "IDEMPOTENCY_TABLE": TABLE,
                            "AWS_LAMBDA_FUNCTION_NAME": "start-scoring"}.items():
            monkeypatch.setenv(name, value)
        self.handler = load_handler("start_scoring")

    def package(self, status="Approved", features=FEATURES, name="m") -> str:
        key = f"models/{name}/model.tar.gz"
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=model_tar(features))
        arn = self.sm.create_model_package(
            ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties={"dataset_uri": f"s3://{BUCKET}/incoming/{name}.csv"},
            InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/{key}"}],
                                    "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]},
        )["ModelPackageArn"]
        self.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
        return arn

    def config(self, arn: str, name: str) -> str:
        self.sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": arn}])
        self.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
        return name

    def drop(self, key: str, body: str) -> dict[str, Any]:
        put = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
        event = json.loads((ROOT / "tests/events/s3_object_created.json").read_text())
        event["detail"]["bucket"]["name"] = BUCKET
        event["detail"]["object"].update(key=key, size=len(body.encode()), etag=put["ETag"].strip('"'),
                                         **{"version-id": put["VersionId"]})
        return event

    def invoke(self, event: dict) -> dict:
        return self.handler.lambda_handler(copy.deepcopy(event), LambdaContext(function_name="start-scoring"))

    def notifications(self) -> list[dict]:
        found = []
        while batch := self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
        return found


@pytest.fixture
def world(aws, monkeypatch) -> World:
    return World(monkeypatch)


def csv_text(header=FEATURES, rows=5, bad_line=None) -> str:
    lines = [",".join(header)]
    for number in range(2, rows + 2):
        lines.append(",".join("twelve" if number == bad_line and i == 1 else str(1990 + i) for i in range(len(header))))
    return "\n".join(lines) + "\n"


class PendingUpdate:
    """The SageMaker client as it answers during a blue/green update: DescribeEndpoint carries
    PendingDeploymentSummary (moto never reports an update in progress)."""

    def __init__(self, client, pending_config: str):
        self.client, self.pending_config = client, pending_config

    def describe_endpoint(self, **kwargs):
        answer = self.client.describe_endpoint(**kwargs)
        return {**answer, "EndpointStatus": "Updating", "PendingDeploymentSummary": {"EndpointConfigName": self.pending_config}}

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_serving_is_the_endpoints_package_then_the_one_it_moves_to_then_the_newest_approved(world):
    assert serving_package(GROUP, ENDPOINT, world.sm) is None  # nothing approved, no endpoint
    first = world.package(name="first")
    second = world.package(name="second")
    world.package(status="PendingManualApproval", name="pending")
    no_endpoint = serving_package(GROUP, ENDPOINT, world.sm)
    assert (no_endpoint.model_package_arn, no_endpoint.source) == (second, FROM_NEWEST_APPROVED)
    assert no_endpoint.model_package_version == 2 and no_endpoint.endpoint_name is None

    world.sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=world.config(first, "cfg-first"))
    on_endpoint = serving_package(GROUP, ENDPOINT, world.sm)
    # The endpoint's package wins over a newer Approved one that is not deployed (yet).
    assert (on_endpoint.model_package_arn, on_endpoint.source) == (first, FROM_ENDPOINT)
    assert on_endpoint.model_data_url == f"s3://{BUCKET}/models/first/model.tar.gz"

    moving = serving_package(GROUP, ENDPOINT, PendingUpdate(world.sm, world.config(second, "cfg-second")))
    assert (moving.model_package_arn, moving.source) == (second, FROM_ENDPOINT_UPDATE)


def test_a_good_drop_starts_the_scoring_pipeline_once_with_the_serving_package(world):
    arn = world.package(name="good")
    event = world.drop("score/batch/houses.csv", csv_text())
    result = world.invoke(event)
    assert result["status"] == "started" and result["model_package_arn"] == arn
    assert result["predictions_uri"] == f"s3://{BUCKET}/predictions/batch/houses.csv"
    assert world.invoke(event) == result  # a redelivered event starts nothing new
    executions = world.sm.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]
    assert len(executions) == 1
    parameters = {p["Name"]: p["Value"] for p in world.sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["execution_arn"])["PipelineParameters"]}
    assert parameters["InputKey"] == "score/batch/houses.csv" and parameters["ModelPackageArn"] == arn
    assert parameters["ModelPackageVersion"] == "1" and parameters["Explain"] == "false"
    assert parameters["ModelDataUrl"] == f"s3://{BUCKET}/models/good/model.tar.gz"
    assert parameters["InputVersionId"] == event["detail"]["object"]["version-id"]


def test_explain_prefix_switches_explanations_on(world):
    world.package()
    result = world.invoke(world.drop("score/explain/h.csv", csv_text()))
    parameters = {p["Name"]: p["Value"] for p in world.sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["execution_arn"])["PipelineParameters"]}
    assert parameters["Explain"] == "true"


@pytest.mark.parametrize("body, code, detail", [
    (csv_text(header=["YEAR_BUILT", "SQUARE_FEET"]), "missing_features", "NUM_BEDROOMS"),
    (csv_text(bad_line=4), "unscorable_rows", "lines 4"),
    ("1,2,3\n4,5,6\n", "no_header_row", "numbers"),
    (",".join(FEATURES) + "\n", "no_rows", "no rows"),
])
def test_a_bad_drop_is_quarantined_under_quarantine_score_with_the_reason(world, body, code, detail):
    arn = world.package()
    result = world.invoke(world.drop("score/team/x.csv", body))
    assert result["status"] == "quarantined" and result["reason"] == code and detail in result["message"]
    assert result["quarantine_uri"] == f"s3://{BUCKET}/quarantine/score/team/x.csv"
    reason = json.loads(world.s3.get_object(Bucket=BUCKET, Key="quarantine/score/team/x.csv.reason.json")["Body"].read())
    assert reason["code"] == code and reason["source"]["key"] == "score/team/x.csv" and reason["model_package_arn"] == arn
    assert world.s3.get_object(Bucket=BUCKET, Key="quarantine/score/team/x.csv")["Body"].read() == body.encode()
    assert world.s3.get_object(Bucket=BUCKET, Key="score/team/x.csv")["Body"].read() == body.encode()  # original kept
    listing = world.s3.list_objects_v2(Bucket=BUCKET, Prefix="quarantine/")["Contents"]
    assert all(item["Key"].startswith("quarantine/score/") for item in listing)  # never mixed with training's
    [note] = world.notifications()
    assert code in note["Subject"] and note["MessageAttributes"]["event_type"]["Value"] == "scoring_quarantined"
    assert not world.sm.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]


def test_with_no_serving_model_the_drop_is_quarantined_and_says_so(world):
    result = world.invoke(world.drop("score/x.csv", csv_text()))
    assert result["status"] == "quarantined" and result["reason"] == "no_serving_model"
    assert "Approve a model" in result["fix"]


def test_the_end_of_a_scoring_execution_is_notified_with_the_predictions_and_version(world):
    world.package()
    started = world.invoke(world.drop("score/done.csv", csv_text()))
    manifest = {"predictions_uri": started["predictions_uri"], "rows": 5, "prediction_column": "prediction",
                "manifest_uri": f"s3://{BUCKET}/predictions/done.csv.manifest.json"}
    world.s3.put_object(Bucket=BUCKET, Key="predictions/done.csv.manifest.json", Body=json.dumps(manifest).encode())
    event = json.loads((ROOT / "tests/events/pipeline_execution_succeeded.json").read_text())
    event["detail"]["pipelineExecutionArn"] = started["execution_arn"]
    result = world.invoke(event)
    assert result["status"] == "notified" and result["predictions_uri"] == started["predictions_uri"]
    [note] = world.notifications()
    assert started["predictions_uri"] in note["Message"] and "version 1" in note["Message"]
    assert note["MessageAttributes"]["event_type"]["Value"] == "scoring_succeeded"


def test_a_key_too_long_for_a_job_argument_is_quarantined_before_anything_starts(world):
    world.package()
    result = world.invoke(world.drop("score/" + "d" * 250 + "/x.csv", csv_text()))
    assert result["status"] == "quarantined" and result["reason"] == "name_too_long"
    assert not world.sm.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]


def test_the_handler_counts_what_the_dashboard_shows(world, capsys):
    from tests.lambda_handlers import emitted_metrics

    world.package()
    started = world.invoke(world.drop("score/m.csv", csv_text()))
    world.invoke(world.drop("score/n.csv", csv_text(header=["YEAR_BUILT"])))
    failed = json.loads((ROOT / "tests/events/pipeline_execution_failed.json").read_text())
    failed["detail"]["pipelineExecutionArn"] = started["execution_arn"]
    assert world.invoke(failed)["status"] == "notified"
    assert emitted_metrics(capsys.readouterr().out) == {
        "ScoringExecutionsStarted": 1, "ScoringFilesQuarantined": 1, "ScoringExecutionsFailed": 1}
    [_, note] = world.notifications()  # the quarantine, then the failure
    assert note["MessageAttributes"]["event_type"]["Value"] == "scoring_failed" and "Failed" in note["Message"]


def test_a_notification_first_makes_no_idempotency_store_and_a_later_drop_is_still_processed_once(world):
    """The store (its DynamoDB client) is made on the first drop, not at import: a container whose
    first event is the end of an execution never makes it, and the drops after it are idempotent."""
    world.package()
    started = world.invoke(world.drop("score/first.csv", csv_text()))
    fresh = load_handler("start_scoring")  # a new container
    event = json.loads((ROOT / "tests/events/pipeline_execution_failed.json").read_text())
    event["detail"]["pipelineExecutionArn"] = started["execution_arn"]
    assert fresh.lambda_handler(copy.deepcopy(event), LambdaContext(function_name="start-scoring"))["status"] == "notified"
    assert fresh.persistence_store.cache_info().currsize == 0
    drop = world.drop("score/second.csv", csv_text())
    invoke = lambda: fresh.lambda_handler(copy.deepcopy(drop), LambdaContext(function_name="start-scoring"))  # noqa: E731
    first = invoke()
    assert first["status"] == "started" and invoke() == first
    assert fresh.persistence_store.cache_info().currsize == 1
    assert len(world.sm.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]) == 2
