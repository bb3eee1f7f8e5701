"""pipeline_status handler: a Failed/Stopped execution produces a message naming the pipeline, the
execution, the failing step and its reason. SNS -> SQS is the real moto server; only
ListPipelineExecutionSteps is stubbed, because moto answers it with HTTP 500."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mlops_shared import pipeline_failures
from mlops_shared.config import PipelineStatusSettings
from tests.lambda_handlers import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[3]
EVENTS = ROOT / "tests" / "events"
PIPELINE_NAME = "ray-mlops-dev-training"
EXECUTION_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{PIPELINE_NAME}/execution/x1y2z3abc456"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def topic(aws, monkeypatch):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="ray-mlops-dev-notifications")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="status-reader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("PIPELINE_NAME", PIPELINE_NAME)
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", topic_arn)

    def messages() -> list[dict[str, Any]]:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(m["Body"]) for m in batch.get("Messages", [])]

    return topic_arn, messages


def stubbed_sagemaker(steps: list[dict[str, Any]] | None, pages: int = 1) -> tuple[Any, Stubber]:
    client = boto3.client("sagemaker")
    stubber = Stubber(client)
    if steps is not None:
        chunk = max(1, -(-len(steps) // pages))
        for page in range(pages):
            response: dict[str, Any] = {"PipelineExecutionSteps": steps[page * chunk:(page + 1) * chunk]}
            expected: dict[str, Any] = {"PipelineExecutionArn": EXECUTION_ARN, "SortOrder": "Ascending"}
            if page:
                expected["NextToken"] = f"page-{page}"
            if page < pages - 1:
                response["NextToken"] = f"page-{page + 1}"
            stubber.add_response("list_pipeline_execution_steps", response, expected)
    stubber.activate()
    return client, stubber


STEPS = [
    {"StepName": "Ingest", "StepStatus": "Succeeded", "Metadata": {"ProcessingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/ingest"}}},
    {"StepName": "Preprocess", "StepStatus": "Succeeded", "Metadata": {"ProcessingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/pre"}}},
    {"StepName": "Tune", "StepStatus": "Failed",
     "FailureReason": "AlgorithmError: column PRICE has 3 non-numeric values (rows 17, 90, 301)",
     "Metadata": {"TuningJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/t"}}},
    {"StepName": "Evaluate", "StepStatus": "Stopped", "Metadata": {}},
]


def test_failed_execution_message_names_step_and_reason(topic):
    _, messages = topic
    sagemaker, stubber = stubbed_sagemaker(STEPS, pages=2)
    detail = load_event("pipeline_execution_failed.json")["detail"]

    result = pipeline_failures.handle_status_change(
        detail, PipelineStatusSettings.from_env(), sagemaker=sagemaker, sns=boto3.client("sns")
    )

    stubber.assert_no_pending_responses()
    assert result["status"] == "notified"
    assert result["failed_step"] == "Tune"
    assert "non-numeric" in result["failure_reason"]
    [message] = messages()
    assert "Tune" in message["Subject"] and "failed" in message["Subject"]
    body = message["Message"]
    assert PIPELINE_NAME in body
    assert "house-pricing-20240501-123045" in body
    assert EXECUTION_ARN in body
    assert "Step Tune failed: AlgorithmError: column PRICE has 3 non-numeric values (rows 17, 90, 301)" in body
    assert "Step Evaluate stopped" in body
    assert message["MessageAttributes"]["event_type"]["Value"] == "pipeline_failed"


def test_fail_step_message_is_used_when_there_is_no_failure_reason(topic):
    _, messages = topic
    steps = [{"StepName": "CheckQuality", "StepStatus": "Failed",
              "Metadata": {"Fail": {"ErrorMessage": "rmse 21000.5 is above the threshold 15000.0"}}}]
    sagemaker, _ = stubbed_sagemaker(steps)
    result = pipeline_failures.handle_status_change(
        load_event("pipeline_execution_failed.json")["detail"], PipelineStatusSettings.from_env(),
        sagemaker=sagemaker, sns=boto3.client("sns"),
    )
    assert result["failed_step"] == "CheckQuality"
    assert "rmse 21000.5 is above the threshold 15000.0" in messages()[0]["Message"]


def test_handler_reports_stopped_execution_through_the_typed_event(topic, monkeypatch):
    _, messages = topic
    sagemaker, stubber = stubbed_sagemaker([{"StepName": "Ingest", "StepStatus": "Stopped"}])
    monkeypatch.setattr(pipeline_failures.boto3, "client",
                        lambda service, *a, **k: sagemaker if service == "sagemaker" else boto3.session.Session().client(service, *a, **k))
    module = load_handler("pipeline_status")
    result = module.lambda_handler(load_event("pipeline_execution_stopped.json"), LambdaContext(function_name="pipeline-status"))
    stubber.assert_no_pending_responses()
    assert result["status"] == "notified" and result["execution_status"] == "Stopped"
    assert result["failed_step"] == "Ingest"
    [message] = messages()
    assert "stopped" in message["Subject"].lower()


@pytest.mark.parametrize("event_name", ["pipeline_execution_succeeded.json"])
def test_other_statuses_are_ignored(topic, event_name):
    _, messages = topic
    sagemaker, _ = stubbed_sagemaker(None)  # any SageMaker call would fail the test
    result = pipeline_failures.handle_status_change(
        load_event(event_name)["detail"], PipelineStatusSettings.from_env(), sagemaker=sagemaker,
        sns=boto3.client("sns"),
    )
    assert result["status"] == "ignored"
    assert messages() == []


def test_other_pipelines_are_ignored(topic):
    _, messages = topic
    detail = load_event("pipeline_execution_failed.json")["detail"]
    detail["pipelineArn"] = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/someone-elses-pipeline"
    sagemaker, _ = stubbed_sagemaker(None)
    result = pipeline_failures.handle_status_change(detail, PipelineStatusSettings.from_env(),
                                                    sagemaker=sagemaker, sns=boto3.client("sns"))
    assert result["status"] == "ignored"
    assert messages() == []


def test_pipeline_name_is_matched_without_case():
    assert pipeline_failures.pipeline_name_from_arn(EXECUTION_ARN) == PIPELINE_NAME
    assert pipeline_failures.pipeline_name_from_arn("arn:aws:sagemaker:us-east-1:1:pipeline/Abc") == "Abc"
