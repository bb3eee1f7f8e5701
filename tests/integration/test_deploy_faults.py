"""Each Retry and Catch of statemachines/deploy.asl.json, exercised through AWS errors injected at the
local gateway (local.aws.fault_injection) while moto's Step Functions runner executes the state machine
and names the errors as Step Functions does (local.aws.stepfunctions_errors).

Test names say `<state>_<retries|catches|does_not_retry>_<what>`. SageMaker's throttling (400 "Rate
exceeded"), internal (500) and validation errors are all `SageMaker.SageMakerException` to Step
Functions; only `ResourceLimitExceeded` is declared by SageMaker's model and has a name of its own.
"""
from __future__ import annotations

import pytest

from local.aws.fault_injection import lambda_invoke_path

THROTTLED = dict(code="ThrottlingException", status=400, message="Rate exceeded")
INTERNAL = dict(code="InternalFailure", status=500, message="We encountered an internal error. Please try again.")
QUOTA = dict(code="ResourceLimitExceeded", status=400, message="The account-level service limit 'ml.m5.large for endpoint "
                                                             "usage' is 0 Instances")
GENERIC = "SageMaker.SageMakerException"


@pytest.fixture
def fresh(world):
    world.reset()
    yield world
    world.faults.clear()


def sagemaker(world, operation: str, times: int = 1, **error):
    return world.faults.inject(target=f"SageMaker.{operation}", times=times, **error)


def deployed(world, execution, package) -> None:
    assert execution.status == "SUCCEEDED", execution.explain()
    assert world.endpoint_status() == "InService" and world.answers_like(package)
    assert world.outcome(package) == "deployed"


def nothing_deleted(execution) -> None:
    assert not {"DeleteNewEndpoint", "DeleteNewEndpointConfig", "DeleteNewModel"} & set(execution.entered), execution.explain()


# -- RecordEvent ------------------------------------------------------------------------------------
def test_record_event_retries_dynamodb_throttling(fresh):
    package = fresh.package("record_event_retries_dynamodb_throttling-p1")
    rule = fresh.faults.inject(target="DynamoDB_20120810.PutItem", code="ProvisionedThroughputExceededException",
                               status=400, message="The level of configured provisioned throughput for the table was exceeded.",
                               times=2)
    execution = fresh.deploy(package)
    assert execution.errors_at("RecordEvent") == ["DynamoDB.ProvisionedThroughputExceededException"] * 2
    assert rule.served == 2
    deployed(fresh, execution, package)


def test_record_event_catches_the_duplicate_quietly(fresh):
    package = fresh.package("record_event_catches_the_duplicate_quietly-p1")
    first = fresh.deploy(package)
    deployed(fresh, first, package)
    again = fresh.finish(fresh.redeliver(fresh.last_event))  # the same event delivered twice
    assert again.status == "SUCCEEDED" and again.entered == ["RecordEvent", "DuplicateEvent"]
    assert again.errors_at("RecordEvent") == ["DynamoDB.ConditionalCheckFailedException"]


def test_record_event_does_not_retry_a_validation_error(fresh):
    package = fresh.package("record_event_does_not_retry_a_validation_error-p2")
    rule = fresh.faults.inject(target="DynamoDB_20120810.PutItem", code="ValidationException", status=400,
                               message="One or more parameter values were invalid", times=5)
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.error == "DeploymentNotRecorded"
    assert execution.errors_at("RecordEvent") == ["DynamoDB.AmazonDynamoDBException"] and rule.seen == 1
    assert fresh.endpoint_status() is None


# -- the endpoint lock ------------------------------------------------------------------------------
def test_acquire_endpoint_lock_retries_dynamodb_throttling(fresh):
    package = fresh.package("acquire_endpoint_lock_retries_dynamodb_throttling-p1")
    rule = fresh.faults.inject(target="DynamoDB_20120810.UpdateItem", code="ThrottlingException", status=400,
                               message="Throughput exceeds the current capacity", times=1)
    execution = fresh.deploy(package)
    assert execution.errors_at("AcquireEndpointLock") == ["DynamoDB.ThrottlingException"] and rule.served == 1
    deployed(fresh, execution, package)


def test_take_over_endpoint_lock_of_a_deployment_that_ended_without_releasing_it(fresh):
    package = fresh.package("take_over_endpoint_lock_of_a_deployment_that_ended_without_releasing_it-p1")
    fresh.dynamodb.put_item(TableName=fresh.table, Item={
        "DeploymentId": {"S": "endpoint-lock"}, "LockOwner": {"S": "arn:aws:states:us-east-1:123456789012:execution:x:gone"},
        "LockedAt": {"S": "2020-01-01T00:00:00.000Z"}})
    execution = fresh.deploy(package)
    assert execution.errors_at("AcquireEndpointLock") == ["DynamoDB.ConditionalCheckFailedException"]
    assert execution.entered.index("TakeOverEndpointLock") < execution.entered.index("Prepare")
    deployed(fresh, execution, package)
    lock = fresh.dynamodb.get_item(TableName=fresh.table, Key={"DeploymentId": {"S": "endpoint-lock"}})["Item"]
    assert "LockOwner" not in lock  # released at the end


# -- Prepare (Lambda) -------------------------------------------------------------------------------
def test_prepare_retries_lambda_throttling_and_service_errors(fresh):
    package = fresh.package("prepare_retries_lambda_throttling_and_service_errors-p1")
    path = lambda_invoke_path(fresh.function_name("DeployPrepareFunction"))
    throttled = fresh.faults.inject(path=path, code="TooManyRequestsException", status=429, message="Rate Exceeded.")
    broken = fresh.faults.inject(path=path, code="ServiceException", status=500, message="Lambda is unavailable")
    execution = fresh.deploy(package)
    assert execution.errors_at("Prepare") == ["Lambda.TooManyRequestsException", "Lambda.ServiceException"]
    assert throttled.served == broken.served == 1
    deployed(fresh, execution, package)


def test_prepare_does_not_retry_a_missing_function(fresh):
    package = fresh.package("prepare_does_not_retry_a_missing_function-p2")
    path = lambda_invoke_path(fresh.function_name("DeployPrepareFunction"))
    rule = fresh.faults.inject(path=path, code="ResourceNotFoundException", status=404, message="Function not found")
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.error == "DeploymentFailed"
    assert execution.errors_at("Prepare") == ["Lambda.ResourceNotFoundException"] and rule.seen == 1
    assert "NoPlan" in execution.entered and fresh.outcome(package) == "failed"
    nothing_deleted(execution)


# -- CreateModel / CreateEndpointConfig -------------------------------------------------------------
def test_create_model_retries_throttling_and_internal_errors(fresh):
    package = fresh.package("create-model-retries")
    throttled, internal = sagemaker(fresh, "CreateModel", **THROTTLED), sagemaker(fresh, "CreateModel", **INTERNAL)
    execution = fresh.deploy(package)
    assert execution.errors_at("CreateModel") == [GENERIC, GENERIC] and throttled.served == internal.served == 1
    deployed(fresh, execution, package)


def test_create_model_does_not_retry_a_resource_limit_and_deletes_nothing(fresh):
    package = fresh.package("create-model-quota")
    rule = sagemaker(fresh, "CreateModel", times=5, **QUOTA)
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.errors_at("CreateModel") == ["SageMaker.ResourceLimitExceededException"]
    assert rule.seen == 1 and fresh.outcome(package) == "failed"
    nothing_deleted(execution)
    assert fresh.endpoint_status() is None


def test_create_model_retries_a_validation_error_only_within_its_bound(fresh):
    """A validation error is the same SageMakerException as throttling: the Retry's bound (3 retries
    within seconds) is what keeps it from being retried for long."""
    package = fresh.package("create-model-invalid")
    rule = sagemaker(fresh, "CreateModel", times=10, code="ValidationException", status=400,
                     message="Could not access model data at s3://nowhere")
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.errors_at("CreateModel") == [GENERIC] * 4 and rule.seen == 4
    assert fresh.outcome(package) == "failed"
    nothing_deleted(execution)


def test_create_endpoint_config_retries_throttling(fresh):
    package = fresh.package("create-config-retries")
    rule = sagemaker(fresh, "CreateEndpointConfig", times=2, **THROTTLED)
    execution = fresh.deploy(package)
    assert execution.errors_at("CreateEndpointConfig") == [GENERIC, GENERIC] and rule.served == 2
    deployed(fresh, execution, package)


def test_create_endpoint_config_catches_a_resource_limit_and_deletes_only_the_new_model(fresh):
    package = fresh.package("create-config-quota")
    sagemaker(fresh, "CreateEndpointConfig", **QUOTA)
    delete_throttled = sagemaker(fresh, "DeleteModel", **THROTTLED)
    execution = fresh.deploy(package)
    assert execution.errors_at("CreateEndpointConfig") == ["SageMaker.ResourceLimitExceededException"]
    assert "DeleteNewModel" in execution.entered and "DeleteNewEndpointConfig" not in execution.entered
    assert execution.errors_at("DeleteNewModel") == [GENERIC] and delete_throttled.served == 1  # DeleteNewModel retries
    plan = execution.output()["plan"]
    assert plan["model_name"] not in fresh.models()
    assert execution.status == "FAILED" and fresh.outcome(package) == "failed"


# -- CreateEndpoint ---------------------------------------------------------------------------------
def test_create_endpoint_retries_throttling_and_internal_errors(fresh):
    package = fresh.package("create-endpoint-retries")
    throttled, internal = sagemaker(fresh, "CreateEndpoint", **THROTTLED), sagemaker(fresh, "CreateEndpoint", **INTERNAL)
    execution = fresh.deploy(package)
    assert execution.errors_at("CreateEndpoint") == [GENERIC, GENERIC] and throttled.served == internal.served == 1
    deployed(fresh, execution, package)


def test_create_endpoint_catches_a_resource_limit_and_deletes_only_what_it_created(fresh):
    package = fresh.package("create-endpoint-quota")
    sagemaker(fresh, "CreateEndpoint", **QUOTA)
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.errors_at("CreateEndpoint") == ["SageMaker.ResourceLimitExceededException"]
    assert "DeleteNewEndpoint" not in execution.entered  # it never existed: nothing of that name is ours to delete
    assert {"DeleteNewEndpointConfig", "DeleteNewModel"} <= set(execution.entered)
    assert execution.output()["plan"]["model_name"] not in fresh.models()


def test_create_endpoint_refused_for_a_taken_name_plans_again_with_what_it_created(fresh):
    package = fresh.package("create-endpoint-taken")
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{fresh.endpoint}"
    rule = sagemaker(fresh, "CreateEndpoint", times=4, code="ValidationException", status=400,
                     message=f'Cannot create already existing endpoint "{arn}".')
    models_before = fresh.models()
    execution = fresh.deploy(package)
    assert execution.errors_at("CreateEndpoint") == [GENERIC] * 4 and rule.served == 4  # bounded retries, then the Catch
    assert execution.visited("CreateEndpointRefused") == 1 and execution.visited("WaitWhileBusy") == 1
    assert execution.visited("Prepare") == 2 and execution.visited("CreateModel") == 1
    assert len(fresh.models() - models_before) == 1
    deployed(fresh, execution, package)


# -- UpdateEndpoint ---------------------------------------------------------------------------------
def test_update_endpoint_retries_throttling_and_internal_errors(fresh):
    base, package = fresh.package("update-retries-base"), fresh.package("update-retries", price_factor=1.5)
    fresh.serve(base)
    throttled, internal = sagemaker(fresh, "UpdateEndpoint", **THROTTLED), sagemaker(fresh, "UpdateEndpoint", **INTERNAL)
    execution = fresh.deploy(package)
    assert execution.errors_at("UpdateEndpoint") == [GENERIC, GENERIC] and throttled.served == internal.served == 1
    deployed(fresh, execution, package)
    # One instance allows no canary (SageMaker's CanarySize rule): all at once, with the bake time.
    update = next(params for state, params in execution.scheduled if state == "UpdateEndpoint")
    routing = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 1}


def test_update_endpoint_catches_a_resource_limit_keeps_the_old_fleet_and_deletes_the_unused_config(fresh):
    base, package = fresh.package("update-quota-base"), fresh.package("update-quota", price_factor=1.5)
    base_config = fresh.serve(base)
    sagemaker(fresh, "UpdateEndpoint", **QUOTA)
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.errors_at("UpdateEndpoint") == ["SageMaker.ResourceLimitExceededException"]
    assert "RollBackUpdate" not in execution.entered and "DeleteNewEndpoint" not in execution.entered
    assert {"DeleteNewEndpointConfig", "DeleteNewModel"} <= set(execution.entered)
    assert fresh.serving_config() == base_config and fresh.answers_like(base)


def test_update_endpoint_refused_while_in_progress_waits_and_plans_again(fresh):
    base, package = fresh.package("update-busy-base"), fresh.package("update-busy", price_factor=1.5)
    fresh.serve(base)
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{fresh.endpoint}"
    sagemaker(fresh, "UpdateEndpoint", times=4, code="ValidationException", status=400,
              message=f'Cannot update in-progress endpoint "{arn}".')
    execution = fresh.deploy(package)
    assert execution.visited("UpdateEndpointRefused") == 1 and execution.visited("Prepare") == 2
    assert execution.visited("CreateModel") == 1
    deployed(fresh, execution, package)


# -- DescribeEndpoint (the poll loop is its retry) --------------------------------------------------
def test_describe_endpoint_transient_errors_during_a_create_keep_polling_and_never_delete(fresh):
    package = fresh.package("describe-transient")
    sagemaker(fresh, "DescribeEndpoint", times=2, after=1, **THROTTLED)  # the first call is the planning's
    sagemaker(fresh, "DescribeEndpoint", after=1, **INTERNAL)
    execution = fresh.deploy(package)
    assert execution.errors_at("DescribeEndpoint") == [GENERIC] * 3
    assert execution.visited("DescribeFailedHow") == 3 and "OnFailure" not in execution.entered
    nothing_deleted(execution)
    deployed(fresh, execution, package)


def test_describe_endpoint_validation_error_fails_at_once_and_deletes_the_new_endpoint(fresh):
    package = fresh.package("describe-invalid")
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{fresh.endpoint}"
    sagemaker(fresh, "DescribeEndpoint", times=100, after=1, code="ValidationException", status=400,
              message=f"Could not find endpoint '{arn}'.")
    execution = fresh.deploy(package)
    fresh.faults.clear()
    assert execution.status == "FAILED" and execution.errors_at("DescribeEndpoint") == [GENERIC]
    assert execution.visited("DescribeFailed") == 1 and execution.visited("CountPoll") == 0
    assert "DeleteNewEndpoint" in execution.entered  # it created the endpoint and never saw another config on it
    fresh.wait_for(lambda: fresh.endpoint_status() is None, "the new endpoint to be deleted")


def test_describe_endpoint_transient_errors_stop_at_the_poll_limit(fresh):
    package = fresh.package("describe-throttled")
    sagemaker(fresh, "DescribeEndpoint", times=1000, after=1, **THROTTLED)
    execution = fresh.deploy(package)
    fresh.faults.clear()
    output = execution.output()
    assert execution.status == "FAILED" and "DescribeKeptFailing" in execution.entered
    assert len(execution.errors_at("DescribeEndpoint")) == output["plan"]["max_polls"] + 1 == 21
    assert "Rate exceeded" in output["error"]["Cause"]


# -- SmokeTest, and the clean-up and rollback after it ----------------------------------------------
def test_smoke_test_retries_lambda_throttling(fresh):
    package = fresh.package("smoke-retries")
    rule = fresh.faults.inject(path=lambda_invoke_path(fresh.function_name("DeploySmokeTestFunction")),
                               code="TooManyRequestsException", status=429, message="Rate Exceeded.")
    execution = fresh.deploy(package)
    assert execution.errors_at("SmokeTest") == ["Lambda.TooManyRequestsException"] and rule.served == 1
    deployed(fresh, execution, package)


def test_smoke_test_failure_of_a_new_endpoint_catches_and_deletes_it(fresh):
    package = fresh.package("smoke-fails-new")
    fresh.spoil_smoke_sample(package)
    delete_throttled = sagemaker(fresh, "DeleteEndpoint", **THROTTLED)
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.errors_at("SmokeTest") == ["SmokeTestFailed"]
    assert execution.errors_at("DeleteNewEndpoint") == [GENERIC] and delete_throttled.served == 1  # retried
    assert {"DeleteNewEndpoint", "DeleteNewEndpointConfig", "DeleteNewModel"} <= set(execution.entered)
    fresh.wait_for(lambda: fresh.endpoint_status() is None, "the failed new endpoint to be deleted")
    assert fresh.outcome(package) == "failed"


def test_smoke_test_failure_of_an_update_rolls_back_to_the_previous_config(fresh):
    base, package = fresh.package("smoke-fails-update-base"), fresh.package("smoke-fails-update", price_factor=1.5)
    base_config = fresh.serve(base)
    fresh.spoil_smoke_sample(package)
    rollback_throttled = sagemaker(fresh, "UpdateEndpoint", after=1, **THROTTLED)  # the second call is the rollback
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.errors_at("SmokeTest") == ["SmokeTestFailed"]
    assert execution.errors_at("RollBackUpdate") == [GENERIC] and rollback_throttled.served == 1
    assert "NotifyRolledBack" in execution.entered and fresh.outcome(package) == "rolled_back"
    nothing_deleted(execution)
    fresh.wait_for(lambda: fresh.endpoint_status() == "InService" and fresh.serving_config() == base_config,
                   "the previous config to serve again")
    assert fresh.answers_like(base)


# -- outcome records, notifications, the lock release -----------------------------------------------
def test_record_deployed_and_release_endpoint_lock_retry_dynamodb_throttling(fresh):
    package = fresh.package("records-retry")
    # UpdateItem calls: the lock, the outcome, the release.
    outcome = fresh.faults.inject(target="DynamoDB_20120810.UpdateItem", after=1, code="ProvisionedThroughputExceededException",
                                  status=400, message="slow down")
    release = fresh.faults.inject(target="DynamoDB_20120810.UpdateItem", after=3, code="InternalServerError", status=500,
                                  message="Internal server error")
    execution = fresh.deploy(package)
    assert execution.errors_at("RecordDeployed") == ["DynamoDB.ProvisionedThroughputExceededException"]
    assert execution.errors_at("ReleaseEndpointLock") == ["DynamoDB.InternalServerErrorException"]
    assert outcome.served == release.served == 1
    deployed(fresh, execution, package)


def test_notify_retries_lambda_service_errors_and_a_lost_notification_still_records_and_releases(fresh):
    first, second = fresh.package("notify-retries"), fresh.package("notify-lost", price_factor=1.5)
    path = lambda_invoke_path(fresh.function_name("DeployNotifyFunction"))
    rule = fresh.faults.inject(path=path, code="ServiceException", status=500, message="Lambda is unavailable")
    execution = fresh.deploy(first)
    assert execution.errors_at("NotifyDeployed") == ["Lambda.ServiceException"] and rule.served == 1
    deployed(fresh, execution, first)

    lost = fresh.faults.inject(path=path, times=10, code="ResourceNotFoundException", status=404, message="Function not found")
    execution = fresh.deploy(second)
    assert execution.status == "FAILED" and execution.error == "NotificationFailed"
    assert execution.errors_at("NotifyDeployed") == ["Lambda.ResourceNotFoundException"] and lost.seen == 1
    assert fresh.outcome(second) == "deployed" and fresh.answers_like(second)
    lock = fresh.dynamodb.get_item(TableName=fresh.table, Key={"DeploymentId": {"S": "endpoint-lock"}})["Item"]
    assert "LockOwner" not in lock
