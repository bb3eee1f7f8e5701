"""Deployment outcome messages, published to SNS by the notify handler."""
from __future__ import annotations

import json

import boto3

from mlops_shared.deployment import deployment_notification
from tests.lambda_handlers import LambdaContext, emitted_metrics, load_handler

PLAN = {"endpoint_name": "houses", "action": "update", "trigger": "Approved",
        "trigger_model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/houses/3",
        "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/houses/3",
        "previous_model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/houses/2",
        "previous_endpoint_config_name": "houses-v2-abc", "reason": "deploy the Approved package"}


def test_messages_say_what_happened():
    deployed = deployment_notification({"outcome": "deployed", "plan": PLAN,
                                        "smoke": {"rows": 20, "rmse": 100.0, "evaluation_rmse": 90.0,
                                                  "max_relative_difference": 2e-7}})
    assert deployed.event_type == "deployment_succeeded"
    assert deployed.subject == "Deployed houses/3 to endpoint houses"
    assert "20 sample rows answered as evaluated (largest relative difference 2e-07)" in deployed.body
    assert "rmse 100.00 on them, evaluation rmse 90.00" in deployed.body
    rolled = deployment_notification({"outcome": "rolled_back", "plan": PLAN,
                                      "error": {"Error": "UpdateRolledBack", "Cause": "endpoint InService kept config x"}},
                                     failure_reason="the new variant could not start")
    assert rolled.event_type == "deployment_rolled_back"
    assert "keeps serving its previous configuration houses-v2-abc" in rolled.body
    assert "the new variant could not start" in rolled.body
    lambda_error = json.dumps({"errorType": "SmokeTestFailed", "errorMessage": "rmse 9e9 exceeds"})
    plan = {**PLAN, "action": "create", "model_name": "houses-v3-m", "endpoint_config_name": "houses-v3-m"}
    failed = deployment_notification({"outcome": "failed", "plan": plan, "created": {"model": {}, "endpoint_config": {}},
                                      "error": {"Error": "SmokeTestFailed", "Cause": lambda_error}})
    assert "SmokeTestFailed: rmse 9e9 exceeds" in failed.body
    assert ("Created by this deployment, and deleted now unless the endpoint still uses them: "
            "endpoint config houses-v3-m, model houses-v3-m.") in failed.body
    nothing_created = deployment_notification({"outcome": "failed", "plan": plan, "created": {},
                                               "error": {"Error": "EndpointBusy", "Cause": "locked"}})
    assert "Created by this deployment" not in nothing_created.body


def test_handler_publishes_to_the_topic(aws, monkeypatch, capsys):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="n")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", topic)
    module = load_handler("deploy_notify")

    # the endpoint does not exist: the reason lookup must not break the notification
    result = module.lambda_handler({"outcome": "failed", "plan": PLAN, "error": {"Error": "X", "Cause": "y"}},
                                   LambdaContext(function_name="deploy-notify"))
    assert result["event_type"] == "deployment_failed" and result["message_id"]
    body = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"][0]["Body"]
    assert "Outcome: failed" in body and "Error: X: y" in body
    assert emitted_metrics(capsys.readouterr().out) == {"DeploymentsFailed": 1}
    module.lambda_handler({"outcome": "rolled_back", "plan": PLAN}, LambdaContext(function_name="deploy-notify"))
    module.lambda_handler({"outcome": "deployed", "plan": PLAN}, LambdaContext(function_name="deploy-notify"))
    assert emitted_metrics(capsys.readouterr().out) == {"DeploymentsRolledBack": 1, "DeploymentsSucceeded": 1}
