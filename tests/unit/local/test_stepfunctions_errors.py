"""Step Functions' error names and causes: the documented examples, the service models' declared errors,
and moto's runner reporting them once `install()` ran (the state machine matched against AWS's names)."""
from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from local.aws.fault_injection import lambda_invoke_path
from local.aws.gateway import LocalGateway
from local.aws.stepfunctions_errors import (LAMBDA_UNKNOWN, UnknownIntegration, declared_errors, error_for_client_error,
                                        lambda_function_error, optimised_integration_error, sdk_integration_error)


def test_the_aws_sdk_integration_examples_of_the_docs():
    """supported-services-awssdk.html: AcmPca.ResourceNotFoundException, and S3's BucketAlreadyExists
    (no suffix in the S3 API) reported as S3.BucketAlreadyExistsException."""
    assert sdk_integration_error("acmpca", "ResourceNotFoundException", "m", 400, "r").error == "AcmPca.ResourceNotFoundException"
    assert sdk_integration_error("s3", "BucketAlreadyExists", "m", 409, "r").error == "S3.BucketAlreadyExistsException"


def test_sagemaker_declares_five_errors_and_everything_else_is_its_generic_exception():
    assert declared_errors("sagemaker") == {"ConflictException", "ResourceAlreadyExists", "ResourceInUse",
                                            "ResourceLimitExceeded", "ResourceNotFound"}
    limit = sdk_integration_error("sagemaker", "ResourceLimitExceeded", "quota", 400, "r1")
    assert limit.error == "SageMaker.ResourceLimitExceededException"
    for code, status in (("ThrottlingException", 400), ("ValidationException", 400), ("InternalFailure", 500),
                         ("ServiceUnavailable", 503)):
        reported = sdk_integration_error("sagemaker", code, "Rate exceeded", status, "r2")
        assert reported.error == "SageMaker.SageMakerException", code
        # the AWS SDK for Java 2.x message: the code is in neither field, the status only in the cause
        assert reported.cause == f"Rate exceeded (Service: SageMaker, Status Code: {status}, Request ID: r2)"
    s3 = sdk_integration_error("s3", "SlowDown", "Please reduce your request rate.", 503, "r3", extended_request_id="h")
    assert (s3.error, s3.cause) == ("S3.S3Exception", "Please reduce your request rate. (Service: S3, Status Code: 503, "
                                                      "Request ID: r3, Extended Request ID: h)")


def test_optimised_integrations_have_their_own_names():
    conditional = optimised_integration_error("dynamodb", "ConditionalCheckFailedException", "The conditional request failed",
                                              400, "r")
    assert conditional.error == "DynamoDB.ConditionalCheckFailedException"
    assert conditional.cause == ("The conditional request failed (Service: AmazonDynamoDBv2; Status Code: 400; Error Code: "
                                 "ConditionalCheckFailedException; Request ID: r; Proxy: null)")
    assert optimised_integration_error("dynamodb", "ValidationException", "bad", 400, "r").error == \
        "DynamoDB.AmazonDynamoDBException"
    assert optimised_integration_error("dynamodb", "InternalServerError", "x", 500, "r").error == \
        "DynamoDB.InternalServerErrorException"
    # the same DynamoDB error through the aws-sdk integration: the Java 2.x client's name, DynamoDb
    assert sdk_integration_error("dynamodb", "ConditionalCheckFailedException", "x", 400, "r").error == \
        "DynamoDb.ConditionalCheckFailedException"
    for code in ("ServiceException", "TooManyRequestsException", "ResourceNotFoundException"):
        assert optimised_integration_error("lambda", code, "x", 500, "r").error == f"Lambda.{code}"
    assert optimised_integration_error("lambda", "SomethingNew", "x", 500, "r").error == "Lambda.AWSLambdaException"


def test_lambda_function_errors():
    raised = json.dumps({"errorType": "SmokeTestFailed", "errorMessage": "rmse too high"})
    assert lambda_function_error(raised).error == "SmokeTestFailed"
    assert lambda_function_error(raised).cause == raised
    timed_out = json.dumps({"errorMessage": "2030-01-01T00:00:00Z r1 Task timed out after 120.00 seconds"})
    assert lambda_function_error(timed_out).error == LAMBDA_UNKNOWN
    assert lambda_function_error(timed_out).cause.endswith(f"Returned payload: {timed_out}")


def test_services_without_a_known_naming_fail_loudly():
    with pytest.raises(UnknownIntegration, match="AWS_SDK_SERVICES"):
        sdk_integration_error("kafka", "X", "m", 400, "r")
    with pytest.raises(UnknownIntegration, match="OPTIMISED_INTEGRATIONS"):
        optimised_integration_error("sqs", "X", "m", 400, "r")


@pytest.fixture
def gateway(monkeypatch):
    with LocalGateway() as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        yield gateway


def test_a_real_client_error_maps_to_the_reported_error(gateway):
    """botocore's own parser builds the ClientError (from an answer in SageMaker's JSON error shape)."""
    gateway.faults.inject(target="SageMaker.CreateModel", code="ResourceLimitExceeded", status=400, message="too many models")
    with pytest.raises(ClientError) as failure:
        boto3.client("sagemaker").create_model(ModelName="m", ExecutionRoleArn="arn:aws:iam::123456789012:role/r")
    reported = error_for_client_error("aws-sdk", "sagemaker", failure.value)
    request_id = failure.value.response["ResponseMetadata"]["RequestId"]
    assert reported.error == "SageMaker.ResourceLimitExceededException"
    assert reported.cause == f"too many models (Service: SageMaker, Status Code: 400, Request ID: {request_id})"


def run_definition(gateway, states: dict) -> list[dict]:
    """Runs a state machine on moto's runner (through the gateway); returns the failure details in its history."""
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(name=f"m{uuid.uuid4().hex[:8]}", roleArn="arn:aws:iam::123456789012:role/r",
                                       definition=json.dumps({"StartAt": next(iter(states)), "States": states}))
    arn = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name=uuid.uuid4().hex, input="{}")["executionArn"]
    deadline = time.monotonic() + 30
    while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.2)
    events = sfn.get_execution_history(executionArn=arn)["events"]
    return [e.get("taskFailedEventDetails") or e["lambdaFunctionFailedEventDetails"] for e in events
            if e["type"] in ("TaskFailed", "LambdaFunctionFailed")]


def test_motos_runner_reports_awss_names(gateway):
    boto3.client("dynamodb").create_table(
        TableName="t", BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
    gateway.faults.inject(target="SageMaker.DescribeEndpoint", code="ThrottlingException", status=400, message="Rate exceeded")
    gateway.faults.inject(path=lambda_invoke_path("planner"), code="TooManyRequestsException", status=429, message="Rate exceeded")

    def task(resource: str, nxt: str, **parameters) -> dict:
        state = {"Type": "Task", "Resource": resource,
                 "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": f"$.{nxt}", "Next": nxt}], "Next": nxt}
        return {**state, "Parameters": parameters} if parameters else state

    put = {"TableName": "t", "Item": {"k": {"S": "a"}}, "ConditionExpression": "attribute_not_exists(k)"}
    failures = run_definition(gateway, {
        "Throttled": task("arn:aws:states:::aws-sdk:sagemaker:describeEndpoint", "Missing", EndpointName="e"),
        "Missing": task("arn:aws:states:::aws-sdk:sagemaker:describeEndpoint", "Put", EndpointName="e"),
        "Put": task("arn:aws:states:::dynamodb:putItem", "PutAgain", **put),
        "PutAgain": task("arn:aws:states:::dynamodb:putItem", "Invoke", **put),
        "Invoke": task("arn:aws:lambda:us-east-1:123456789012:function:planner", "Done"),
        "Done": {"Type": "Pass", "End": True},
    })
    assert [(f["error"], f["cause"].split(" (")[0]) for f in failures] == [
        ("SageMaker.SageMakerException", "Rate exceeded"),
        ("SageMaker.SageMakerException", "Could not find endpoint 'arn:aws:sagemaker:us-east-1:123456789012:endpoint/e'."),
        ("DynamoDB.ConditionalCheckFailedException", "The conditional request failed"),
        ("Lambda.TooManyRequestsException", "Rate exceeded"),
    ]
    assert "(Service: SageMaker, Status Code: 400, Request ID: " in failures[0]["cause"]
    assert "Error Code: TooManyRequestsException" in failures[3]["cause"]
