"""The error names and causes Step Functions reports for failed service calls, and their use in moto.

A Retry or Catch matches the *name* Step Functions gives a failure, not the service's error code, so
a state machine is only as correct as the names it lists. AWS names them differently per kind of
integration, and moto 5.2.5's runner names them its own way (e.g. `sagemaker.ResourceLimitExceededException`
with a lower-case service, `Exception` for every Lambda service error of a plain function ARN).
`error_for_client_error` is this project's one statement of AWS's rules; `install()` puts it into
moto's Step Functions runner, so a state machine executed locally is matched against the names AWS
would report.

AWS SDK integrations (`arn:aws:states:::aws-sdk:<service>:<action>`), documented in
https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html:

* the error is `<ServiceName>.<ErrorName>`, both PascalCase, and always ends in `Exception`, even
  where the service's own name has none (the docs' examples: `AcmPca.ResourceNotFoundException`;
  S3 `BucketAlreadyExists` -> `S3.BucketAlreadyExistsException`);
* the integration runs on the AWS SDK for Java 2.x, so an error code the service model does not
  declare (for SageMaker: throttling, validation and internal errors; its model declares five
  errors) arrives as the SDK's generic service exception, `<ServiceName>.<ServiceName>Exception`
  (`SageMaker.SageMakerException`, as public state machines retry it), and its `Cause` is the SDK's
  message: `<message> (Service: <ServiceName>, Status Code: <status>, Request ID: <id>)` (format of
  `AwsServiceException.getMessage`, aws/aws-sdk-java-v2 core/aws-core). The error *code* is in
  neither: only the message and the HTTP status tell throttling from validation.

Optimised integrations have their own names:

* DynamoDB (`arn:aws:states:::dynamodb:putItem|getItem|updateItem|deleteItem`,
  https://docs.aws.amazon.com/step-functions/latest/dg/connect-ddb.html): `DynamoDB.<Error>Exception`
  for the errors the DynamoDB model declares (`DynamoDB.ConditionalCheckFailedException`, used by the
  docs' and the Step Functions samples' conditional writes), `DynamoDB.AmazonDynamoDBException`
  for any other (the sample project "Invoke Synchronous Express Workflows" retries exactly that);
  the cause is the AWS SDK for Java 1.x message, which does carry the error code.
* Lambda (`arn:aws:states:::lambda:invoke` and plain function ARNs,
  https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html and
  https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html): service errors
  are `Lambda.<ErrorName>` (`Lambda.ServiceException`, `Lambda.TooManyRequestsException`,
  `Lambda.ResourceNotFoundException`; `Lambda.AWSLambdaException` for an error the model does not
  declare); an error raised by the function is reported under its `errorType`, with the function's
  error payload as the cause; a function error without an `errorType` (time-outs, out-of-memory)
  is `Lambda.Unknown`.

Which error codes a service "declares" is read from botocore's service model (shapes marked
`exception`), the same models the AWS SDKs are generated from; a code a newer model adds changes its
name from the generic one to its own, on AWS as here.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass

import botocore.session
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepFunctionsError:
    """What Step Functions reports for a failed task: `Error` (what Retry/Catch match) and `Cause`."""

    error: str
    cause: str


@dataclass(frozen=True)
class SdkService:
    name: str  # the PascalCase name Step Functions prefixes errors with
    botocore_name: str  # whose service model declares the modelled errors


@dataclass(frozen=True)
class OptimisedIntegration:
    prefix: str
    botocore_name: str
    undeclared_error: str  # the AWS SDK for Java 1.x generic exception: any error the model does not declare
    cause_service: str  # the service name the Java 1.x SDK writes into the message


# The one table. Keys are the service as it appears in the task's Resource ARN.
AWS_SDK_SERVICES = {
    # https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html (both examples)
    "acmpca": SdkService("AcmPca", "acm-pca"),
    "s3": SdkService("S3", "s3"),
    # used by statemachines/deploy.asl.json
    "sagemaker": SdkService("SageMaker", "sagemaker"),
    "sfn": SdkService("Sfn", "stepfunctions"),
    # the Java 2.x client is DynamoDbClient: aws-sdk errors are `DynamoDb.*`, unlike the optimised `DynamoDB.*`
    "dynamodb": SdkService("DynamoDb", "dynamodb"),
}
OPTIMISED_INTEGRATIONS = {
    # https://docs.aws.amazon.com/step-functions/latest/dg/connect-ddb.html
    "dynamodb": OptimisedIntegration("DynamoDB", "dynamodb", "AmazonDynamoDBException", "AmazonDynamoDBv2"),
    # https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html
    "lambda": OptimisedIntegration("Lambda", "lambda", "AWSLambdaException", "AWSLambda"),
}
LAMBDA_UNKNOWN = "Lambda.Unknown"
LAMBDA_UNKNOWN_CAUSE = "The cause could not be determined because Lambda did not return an error type. Returned payload: {}"


class UnknownIntegration(LookupError):
    """A service this table does not name; add it (with the source of its naming) before using it."""


@functools.lru_cache(maxsize=None)
def declared_errors(botocore_name: str) -> frozenset[str]:
    """The error codes the service model declares (its shapes marked `exception`)."""
    model = botocore.session.get_session().get_service_model(botocore_name)
    codes = set()
    for shape in model.error_shapes:
        codes.add(shape.name)
        code = shape.metadata.get("error", {}).get("code")  # query protocol: the wire code may differ
        if code:
            codes.add(code)
    return frozenset(codes)


def _with_exception_suffix(name: str) -> str:
    return name if name.endswith("Exception") else f"{name}Exception"


def sdk_integration_error(service: str, code: str, message: str, status: int, request_id: str,
                          extended_request_id: str | None = None) -> StepFunctionsError:
    """What an `aws-sdk:<service>:<action>` task reports when the call answered `code`."""
    try:
        sdk = AWS_SDK_SERVICES[service]
    except KeyError:
        raise UnknownIntegration(f"no Step Functions error naming for aws-sdk service {service!r}: add it to "
                                 f"local.aws.stepfunctions_errors.AWS_SDK_SERVICES") from None
    declared = code in declared_errors(sdk.botocore_name)
    error = f"{sdk.name}.{_with_exception_suffix(code) if declared else sdk.name + 'Exception'}"
    details = [f"Service: {sdk.name}", f"Status Code: {status}", f"Request ID: {request_id}"]
    if extended_request_id:
        details.append(f"Extended Request ID: {extended_request_id}")
    return StepFunctionsError(error, f"{message} ({', '.join(details)})")


def optimised_integration_error(integration: str, code: str, message: str, status: int,
                                request_id: str) -> StepFunctionsError:
    """What an optimised `dynamodb:*` or Lambda task reports when the service answered `code`."""
    try:
        spec = OPTIMISED_INTEGRATIONS[integration]
    except KeyError:
        raise UnknownIntegration(f"no Step Functions error naming for the optimised {integration!r} integration: "
                                 f"add it to local.aws.stepfunctions_errors.OPTIMISED_INTEGRATIONS") from None
    declared = code in declared_errors(spec.botocore_name)
    error = f"{spec.prefix}.{_with_exception_suffix(code) if declared else spec.undeclared_error}"
    cause = (f"{message} (Service: {spec.cause_service}; Status Code: {status}; Error Code: {code}; "
             f"Request ID: {request_id}; Proxy: null)")
    return StepFunctionsError(error, cause)


def lambda_function_error(payload: str) -> StepFunctionsError:
    """What a Lambda task reports when the function itself failed (`FunctionError` set)."""
    try:
        error_type = json.loads(payload).get("errorType")
    except (ValueError, AttributeError):
        error_type = None
    if not error_type:
        return StepFunctionsError(LAMBDA_UNKNOWN, LAMBDA_UNKNOWN_CAUSE.format(payload))
    return StepFunctionsError(str(error_type), payload)


def error_for_client_error(integration: str, service: str, exc: ClientError) -> StepFunctionsError:
    """The error and cause Step Functions reports for a service call that failed with `exc`.

    `integration` is `aws-sdk` or the optimised integration (`dynamodb`, `lambda`); `service` is the
    service as named in the Resource ARN (`sagemaker` in `aws-sdk:sagemaker:createModel`)."""
    error = exc.response.get("Error", {})
    metadata = exc.response.get("ResponseMetadata", {})
    code = error.get("Code") or "Unknown"
    message = error.get("Message") or ""
    status = int(metadata.get("HTTPStatusCode") or 0)
    request_id = metadata.get("RequestId") or ""
    if integration == "aws-sdk":
        return sdk_integration_error(service, code, message, status, request_id, metadata.get("HostId"))
    return optimised_integration_error(integration, code, message, status, request_id)


# ------------------------------------------------------------------------------------------------
# moto's Step Functions runner
# ------------------------------------------------------------------------------------------------
_INSTALLED: dict[type, object] = {}


def install() -> None:
    """Makes moto's Step Functions runner (this process) report AWS's error names and causes.

    moto builds a task failure in each task class's `_from_error`; this replaces, for service errors
    (botocore `ClientError`) and Lambda function errors, how the error and cause are named, and keeps
    moto's own handling of everything else (time-outs, its internal errors). Idempotent."""
    from moto.stepfunctions.parser.api import (HistoryEventType, LambdaFunctionFailedEventDetails,
                                               TaskFailedEventDetails)
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk)
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_dynamodb import (
        StateTaskServiceDynamoDB)
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
        StateTaskServiceLambda)
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import StateTaskLambda
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    def named(task, ex) -> StepFunctionsError | None:
        if isinstance(ex, lambda_eval_utils.LambdaFunctionErrorException):
            return lambda_function_error(ex.payload)
        if not isinstance(ex, ClientError):
            return None
        if isinstance(task, StateTaskServiceAwsSdk):
            return error_for_client_error("aws-sdk", task.resource.api_name, ex)
        if isinstance(task, StateTaskServiceDynamoDB):
            return error_for_client_error("dynamodb", "dynamodb", ex)
        return error_for_client_error("lambda", "lambda", ex)

    def task_failed(task, env, reported: StepFunctionsError):
        return FailureEvent(env=env, error_name=CustomErrorName(reported.error), event_type=HistoryEventType.TaskFailed,
                            event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                                error=reported.error, cause=reported.cause, resource=task._get_sfn_resource(),
                                resourceType=task._get_sfn_resource_type())))

    def lambda_failed(task, env, reported: StepFunctionsError):
        return FailureEvent(env=env, error_name=CustomErrorName(reported.error),
                            event_type=HistoryEventType.LambdaFunctionFailed,
                            event_details=EventDetails(lambdaFunctionFailedEventDetails=LambdaFunctionFailedEventDetails(
                                error=reported.error, cause=reported.cause)))

    for cls, build in ((StateTaskServiceAwsSdk, task_failed), (StateTaskServiceDynamoDB, task_failed),
                       (StateTaskServiceLambda, task_failed), (StateTaskLambda, lambda_failed)):
        if cls in _INSTALLED:
            continue
        original = cls._from_error

        def _from_error(self, env, ex, _original=original, _build=build):
            reported = named(self, ex)
            if reported is None:
                return _original(self, env, ex)
            return _build(self, env, reported)

        _INSTALLED[cls] = original
        cls._from_error = _from_error
    log.debug("Step Functions error naming installed into moto's runner")
