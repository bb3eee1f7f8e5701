"""A deployment that ends `failed` or `rolled_back` after an approval is the deployment's failure,
not the pipeline's: exit 6 (`follow_deployment` reads the DeploymentsTable record and the deploy
state machine's execution, as the CLI does after the approval link)."""
from __future__ import annotations

import argparse
import json
import time

import boto3
import pytest

from local.cli.common import EXIT_DEPLOYMENT_FAILED, exit_code_for
from local.cli.follow import follow_deployment
from local.cli.run import RunSession, empty_result

PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/houses/1"
ROLE = "arn:aws:iam::123456789012:role/deploy"


@pytest.mark.parametrize("outcome", ["failed", "rolled_back"])
def test_a_failed_or_rolled_back_deployment_exits_6_with_its_outcome(aws, outcome):
    dynamodb, stepfunctions = boto3.client("dynamodb"), boto3.client("stepfunctions")
    dynamodb.create_table(TableName="deployments", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "DeploymentId", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "DeploymentId", "AttributeType": "S"}])
    machine = stepfunctions.create_state_machine(
        name="deploy", roleArn=ROLE,
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}))["stateMachineArn"]
    execution = stepfunctions.start_execution(stateMachineArn=machine, name=f"deploy-{outcome}",
                                              input=json.dumps({"ModelPackageArn": PACKAGE}))["executionArn"]
    stepfunctions.stop_execution(executionArn=execution)  # ended, as the deploy execution has by then
    dynamodb.put_item(TableName="deployments", Item={
        "DeploymentId": {"S": f"Approved#{PACKAGE}"}, "Outcome": {"S": outcome}, "ExecutionArn": {"S": execution}})
    progress: list[str] = []
    session = RunSession(aws, None, {"DeploymentsTableName": "deployments", "DeployStateMachineArn": machine,
                                     "EndpointNameOutput": "houses"},
                         argparse.Namespace(approve=True), deadline=time.monotonic() + 30, progress=progress.append)
    result = follow_deployment(session, empty_result() | {"status": "approved", "model_package_arn": PACKAGE},
                               started=time.time() - 60)
    assert result["status"] == "failed" and result["failed_stage"] == "deployment", result
    assert result["reason"].startswith(f"deployment {outcome}"), result
    assert exit_code_for(result) == EXIT_DEPLOYMENT_FAILED
    assert progress[-1] == result["reason"]
