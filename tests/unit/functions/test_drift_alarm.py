"""The drift alarm's response: the notification names the drifted features and the report; with
RetrainOnDrift the newest labelled dataset the serving model was not trained on is trained on, once."""
from __future__ import annotations

import json
import time

import boto3
import pytest

from mlops_shared.dataset_reference import write_reference
from mlops_shared.artifacts import DatasetReference
from tests.lambda_handlers import LambdaContext, load_handler
from tests.unit.functions.test_start_pipeline import HEADER, house_rows, to_csv

DATA_BUCKET, ARTIFACTS_BUCKET = "drift-data", "drift-artifacts"
ENDPOINT, PIPELINE = "houses-endpoint", "houses-training"
LABELLED = to_csv(HEADER, house_rows(150))
UNLABELLED = to_csv([c for c in HEADER if c != "PRICE"], [r[1:] for r in house_rows(150)])


def alarm_event(state: str = "ALARM", endpoint: str = ENDPOINT) -> dict:
    return {"version": "0", "id": "e1", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
            "time": "2026-12-01T12:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:drift"],
            "detail": {"alarmName": "stack-data-drift", "state": {"value": state, "reason": "Threshold Crossed"},
                       "previousState": {"value": "OK"},
                       "configuration": {"metrics": [{"id": "m1", "metricStat": {"metric": {
                           "namespace": "RaySageMakerMLOps/DataDrift", "name": "DriftedFeatures",
                           "dimensions": {"EndpointName": endpoint}}, "period": 300, "stat": "Maximum"}}]}}}


REPORT = {"window": {"start": "2026-12-01T11:00:00Z", "end": "2026-12-01T12:00:00Z"},
          "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/houses/1",
          "baseline_uri": "s3://drift-artifacts/pipeline/x/baseline_statistics.json",
          "features": [{"feature": "SQUARE_FEET", "drifted": True, "statistics": {"PSI": 0.71, "MissingShareChange": 0.0},
                        "thresholds": {"PSI": 0.2}},
                       {"feature": "YEAR_BUILT", "drifted": False, "statistics": {"PSI": 0.01}}]}


@pytest.fixture
def world(aws, monkeypatch):
    s3, sns, sqs, sagemaker = (boto3.client(s) for s in ("s3", "sns", "sqs", "sagemaker"))
    for bucket in (DATA_BUCKET, ARTIFACTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    topic = sns.create_topic(Name="notifications")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    # an older report and the newest one: the newest is read
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=f"monitoring/{ENDPOINT}/2026/12/01/100000/drift_report.json",
                  Body=json.dumps({**REPORT, "features": []}))
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=f"monitoring/{ENDPOINT}/2026/12/01/120000/drift_report.json",
                  Body=json.dumps(REPORT))
    sagemaker.create_pipeline(PipelineName=PIPELINE, RoleArn="arn:aws:iam::123456789012:role/p",
                              PipelineDefinition=json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": []}))
    env = {"NOTIFICATION_TOPIC_ARN": topic, "ARTIFACTS_BUCKET": ARTIFACTS_BUCKET, "ENDPOINT_NAME": ENDPOINT,
           "RETRAIN_ON_DRIFT": "false", "PIPELINE_NAME": PIPELINE, "DATA_BUCKET": DATA_BUCKET,
           "FEATURE_GROUP_BASE_NAME": "fs-houses", "DEFAULT_TARGET_COLUMN": "PRICE"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    class World:
        def messages(self) -> list[str]:
            got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1, MaxNumberOfMessages=10).get("Messages", [])
            return [m["Body"] for m in got]

        def upload(self, body: str, key: str = "incoming/houses.csv") -> str:
            time.sleep(1.1)  # S3 LastModified has second resolution: uploads must be told apart
            return s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=body.encode())["VersionId"]

        def serve_model_trained_on(self, key: str, version_id: str) -> None:
            """An endpoint serving a package whose dataset_reference names (key, version_id)."""
            reference = write_reference(s3, f"s3://{ARTIFACTS_BUCKET}/pipeline", DatasetReference(
                bucket=DATA_BUCKET, key=key, version=version_id, version_id=version_id, etag=None,
                target_column="PRICE", target_source="default"))
            sagemaker.create_model_package_group(ModelPackageGroupName="houses")
            package = sagemaker.create_model_package(
                ModelPackageGroupName="houses", ModelApprovalStatus="Approved",
                CustomerMetadataProperties={"dataset_reference": reference},
                InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/j:1",
                                                        "ModelDataUrl": "s3://drift-artifacts/model.tar.gz"}],
                                        "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
            )["ModelPackageArn"]
            sagemaker.create_model(ModelName="m1", ExecutionRoleArn="arn:aws:iam::123456789012:role/m",
                                   PrimaryContainer={"ModelPackageName": package})
            sagemaker.create_endpoint_config(EndpointConfigName="c1", ProductionVariants=[{
                "VariantName": "AllTraffic", "ModelName": "m1", "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1}])
            sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="c1")

        def executions(self) -> list[dict]:
            return sagemaker.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]

    return World()


def handler(monkeypatch, retrain: bool):
    monkeypatch.setenv("RETRAIN_ON_DRIFT", "true" if retrain else "false")
    return load_handler("drift_alarm")


def test_notification_names_the_drifted_features_and_the_newest_report(world, monkeypatch):
    result = handler(monkeypatch, retrain=False).lambda_handler(alarm_event(), LambdaContext(function_name="drift"))
    assert result["status"] == "notified" and result["drifted_features"] == ["SQUARE_FEET"]
    assert result["report_uri"] == f"s3://{ARTIFACTS_BUCKET}/monitoring/{ENDPOINT}/2026/12/01/120000/drift_report.json"
    (body,) = world.messages()
    assert "- SQUARE_FEET: PSI 0.71 (threshold 0.2); MissingShareChange 0" in body
    assert "YEAR_BUILT" not in body
    assert result["report_uri"] in body and "plots/<feature>.png" in body
    assert "Retraining on drift is off" in body and world.executions() == []


def test_only_the_alarm_state_is_answered(world, monkeypatch):
    result = handler(monkeypatch, retrain=True).lambda_handler(alarm_event("OK"), LambdaContext())
    assert result["status"] == "ignored" and world.messages() == []


def test_retrains_once_on_the_newest_labelled_version_the_model_did_not_see(world, monkeypatch):
    trained = world.upload(LABELLED)
    world.serve_model_trained_on("incoming/houses.csv", trained)
    newer = world.upload(to_csv(HEADER, house_rows(160, seed=8)))
    world.upload(UNLABELLED, key="incoming/unlabelled.csv")  # newest of all, but without the target
    module = handler(monkeypatch, retrain=True)
    first = module.lambda_handler(alarm_event(), LambdaContext())
    assert first["status"] == "retraining"
    assert first["retraining"]["dataset_version"] == newer
    assert first["retraining"]["input_data_uri"] == f"s3://{DATA_BUCKET}/incoming/houses.csv"
    (started,) = world.executions()
    assert first["retraining"]["execution_arn"] == started["PipelineExecutionArn"]
    # the same alarm again (or another alarm): the same dataset, the same request token -> one run
    # where SageMaker (and the local executor) deduplicate by ClientRequestToken
    again = module.lambda_handler(alarm_event(), LambdaContext())
    assert again["retraining"]["client_request_token"] == first["retraining"]["client_request_token"]
    assert len(first["retraining"]["client_request_token"]) == 64
    bodies = world.messages()
    assert any("Retraining started on s3://drift-data/incoming/houses.csv" in b for b in bodies)


def test_no_loop_when_the_model_already_saw_the_newest_labelled_data(world, monkeypatch):
    world.upload(LABELLED, key="incoming/old.csv")
    newest = world.upload(LABELLED)
    world.serve_model_trained_on("incoming/houses.csv", newest)
    world.upload(UNLABELLED, key="incoming/unlabelled.csv")
    result = handler(monkeypatch, retrain=True).lambda_handler(alarm_event(), LambdaContext())
    assert result["status"] == "needs_labelled_data" and result["retraining"] is None
    assert world.executions() == []
    (body,) = world.messages()
    assert "there is no labelled dataset newer than the serving model's" in body
    assert f"version {newest}" in body and "Upload fresh labelled data" in body
    assert "incoming/unlabelled.csv" in body  # why the newest upload did not count


def test_no_report_is_said(world, monkeypatch):
    result = handler(monkeypatch, retrain=False).lambda_handler(alarm_event(endpoint="other"), LambdaContext())
    assert result["report_uri"] is None
    (body,) = world.messages()
    assert f"No drift report was found under s3://{ARTIFACTS_BUCKET}/monitoring/other/" in body
