"""Deployment planning against a moto server: create / update / redeploy-previous / wait / skip, the
endpoint lock decisions, and the time budgets derived from the settings."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from mlops_shared.config import ConfigurationError
from mlops_shared.deployment import (DeploymentSettings, EndpointBusy, EndpointUnavailable, InvalidDeploymentEvent,
                                     decide_lock_wait, plan_deployment, resource_name, serving_state)
from tests.lambda_handlers import LambdaContext, load_handler

GROUP = "houses"
ENDPOINT = "houses-endpoint"
ROLE = "arn:aws:iam::123456789012:role/model"
ENV = {"ENDPOINT_NAME": ENDPOINT, "MODEL_PACKAGE_GROUP_NAME": GROUP, "MODEL_EXECUTION_ROLE_ARN": ROLE,
       "CANARY_SIZE_PERCENT": "20", "CANARY_WAIT_SECONDS": "60", "ROLLBACK_ALARM_NAMES": "a-5xx, a-latency",
       "ENDPOINT_POLL_SECONDS": "10", "DEPLOYMENT_TIMEOUT_SECONDS": "900",
       "DATA_CAPTURE_DESTINATION": "s3://artifacts/capture", "DATA_CAPTURE_SAMPLING_PERCENTAGE": "25"}
SETTINGS = DeploymentSettings.from_env(ENV)


def event(arn: str, status: str, group: str = GROUP) -> dict:
    return {"detail": {"ModelPackageArn": arn, "ModelApprovalStatus": status, "ModelPackageGroupName": group}}


@pytest.fixture
def sm(aws):
    client = boto3.client("sagemaker")
    client.create_model_package_group(ModelPackageGroupName=GROUP)
    return client


def package(sm, status="Approved") -> str:
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    return arn


def serve(sm, arn: str, name: str, create: bool = True) -> None:
    """Put `arn` on the endpoint the way the state machine does."""
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": arn}])
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    if create:
        sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=name)


def test_settings_from_env_validate():
    assert SETTINGS.rollback_alarm_names == ("a-5xx", "a-latency")
    with pytest.raises(ConfigurationError, match="ENDPOINT_NAME"):
        DeploymentSettings.from_env({**ENV, "ENDPOINT_NAME": ""})
    with pytest.raises(ConfigurationError, match="CANARY_SIZE_PERCENT"):
        DeploymentSettings.from_env({**ENV, "CANARY_SIZE_PERCENT": "ten"})


def test_first_approval_creates_with_unique_safe_names(sm):
    arn = package(sm)
    plan = plan_deployment(event(arn, "Approved"), "exec-1", SETTINGS, sm)
    assert plan["action"] == "create"
    assert plan["model_package_arn"] == arn
    assert plan["deployment_id"] == f"Approved#{arn}"
    assert plan["max_polls"] == 90
    assert len(plan["model_name"]) <= 63 and plan["model_name"].startswith(ENDPOINT)
    assert plan["model_name"] != plan_deployment(event(arn, "Approved"), "exec-2", SETTINGS, sm)["model_name"]
    policy = plan["deployment_config"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 60}
    assert policy["MaximumExecutionTimeoutInSeconds"] == 900
    assert plan["deployment_config"]["AutoRollbackConfiguration"]["Alarms"] == [{"AlarmName": "a-5xx"}, {"AlarmName": "a-latency"}]


def test_second_approval_updates_and_same_package_skips(sm):
    first, second = package(sm), package(sm)
    serve(sm, first, "m1")
    assert serving_state(ENDPOINT, sm).model_package_arn == first
    plan = plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm)
    assert plan["action"] == "update"
    assert plan["previous_endpoint_config_name"] == "m1" and plan["previous_model_package_arn"] == first
    again = plan_deployment(event(first, "Approved"), "exec", SETTINGS, sm)
    assert again["action"] == "skip" and "already serves" in again["reason"]


def test_approval_that_was_withdrawn_is_skipped(sm):
    arn = package(sm, status="Rejected")
    plan = plan_deployment(event(arn, "Approved"), "exec", SETTINGS, sm)
    assert plan["action"] == "skip" and "no longer Approved" in plan["reason"]


def test_rejecting_the_serving_package_redeploys_the_previous_approved(sm):
    older, serving = package(sm), package(sm)
    serve(sm, serving, "m2")
    sm.update_model_package(ModelPackageArn=serving, ModelApprovalStatus="Rejected")
    plan = plan_deployment(event(serving, "Rejected"), "exec", SETTINGS, sm)
    assert plan["action"] == "update" and plan["model_package_arn"] == older
    assert "after a rejection" in plan["reason"]


def test_rejecting_the_only_package_leaves_the_endpoint(sm):
    only = package(sm)
    serve(sm, only, "m3")
    sm.update_model_package(ModelPackageArn=only, ModelApprovalStatus="Rejected")
    plan = plan_deployment(event(only, "Rejected"), "exec", SETTINGS, sm)
    assert plan["action"] == "skip" and plan["notify"] is True
    assert "left as it is" in plan["reason"]


def test_rejecting_what_is_not_serving_changes_nothing(sm):
    serving, other = package(sm), package(sm, status="Rejected")
    assert plan_deployment(event(other, "Rejected"), "exec", SETTINGS, sm)["action"] == "skip"  # no endpoint
    serve(sm, serving, "m4")
    plan = plan_deployment(event(other, "Rejected"), "exec", SETTINGS, sm)
    assert plan["action"] == "skip" and "not the one" in plan["reason"]


def test_an_older_package_approved_after_a_newer_one_went_live_is_not_deployed_over_it(sm):
    older, newer = package(sm, status="PendingManualApproval"), package(sm)
    serve(sm, newer, "m-newer")
    sm.update_model_package(ModelPackageArn=older, ModelApprovalStatus="Approved")
    plan = plan_deployment(event(older, "Approved"), "exec", SETTINGS, sm)
    assert plan["action"] == "skip" and plan["notify"] is True  # said, not silent
    assert "serves the newer version 2" in plan["reason"] and "deploy_over_newer=true" in plan["reason"]

    # Forced by the package's metadata (then approved again): deployed over the newer one.
    sm.update_model_package(ModelPackageArn=older, ModelApprovalStatus="Approved",
                            CustomerMetadataProperties={"deploy_over_newer": "true"})
    forced = plan_deployment(event(older, "Approved"), "exec", SETTINGS, sm)
    assert forced["action"] == "update" and forced["model_package_arn"] == older

    # A newer one that is no longer Approved protects nothing.
    sm.update_model_package(ModelPackageArn=older, ModelApprovalStatus="Approved",
                            CustomerMetadataProperties={"deploy_over_newer": "false"})
    assert plan_deployment(event(older, "Approved"), "exec", SETTINGS, sm)["action"] == "skip"
    sm.update_model_package(ModelPackageArn=newer, ModelApprovalStatus="Rejected")
    assert plan_deployment(event(older, "Approved"), "exec", SETTINGS, sm)["action"] == "update"


def test_a_newer_package_approved_replaces_an_older_one(sm):
    older, newer = package(sm), package(sm)
    serve(sm, older, "m-older")
    assert plan_deployment(event(newer, "Approved"), "exec", SETTINGS, sm)["action"] == "update"


def test_a_rejection_overtaken_by_a_new_approval_changes_nothing(sm):
    """Approved -> Rejected -> Approved: the Rejected event planned after the package was approved
    again (late, or out of order) must not roll back what the later approval asked for."""
    older, serving = package(sm), package(sm)
    serve(sm, serving, "m-cycle")
    sm.update_model_package(ModelPackageArn=serving, ModelApprovalStatus="Rejected")
    sm.update_model_package(ModelPackageArn=serving, ModelApprovalStatus="Approved")
    plan = plan_deployment(event(serving, "Rejected"), "exec", SETTINGS, sm)
    assert plan["action"] == "skip" and "no longer Rejected" in plan["reason"]
    assert older  # still Approved, and not redeployed


def test_other_groups_and_bad_events(sm):
    arn = package(sm)
    quiet = plan_deployment(event(arn, "Approved", group="someone-else"), "exec", SETTINGS, sm)
    assert quiet["action"] == "skip" and quiet["notify"] is False
    with pytest.raises(InvalidDeploymentEvent):
        plan_deployment(event(arn, "PendingManualApproval"), "exec", SETTINGS, sm)


def test_resource_names_stay_within_sagemaker_rules():
    name = resource_name("x" * 80 + "_bad.chars", "arn:aws:sagemaker:us-east-1:1:model-package/g/12", "e")
    assert len(name) <= 63 and all(c.isalnum() or c == "-" for c in name)


def test_handler_returns_the_plan(sm, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    module = load_handler("deploy_prepare")

    arn = package(sm)
    plan = module.lambda_handler({"event": event(arn, "Approved"), "execution_name": "e1"},
                                 LambdaContext(function_name="deploy-prepare"))
    assert plan["action"] == "create"
    # The endpoint config captures requests and responses as the stack parameters say.
    assert plan["data_capture"] == {
        "EnableCapture": True, "InitialSamplingPercentage": 25, "DestinationS3Uri": "s3://artifacts/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv", "application/csv"],
                                     "JsonContentTypes": ["application/json"]}}
    assert module.data_capture_config({**ENV, "DATA_CAPTURE_SAMPLING_PERCENTAGE": "0"})["EnableCapture"] is False
    assert module.data_capture_config({**ENV, "DATA_CAPTURE_KMS_KEY_ID": "alias/capture"})["KmsKeyId"] == "alias/capture"
    for bad in ({"DATA_CAPTURE_SAMPLING_PERCENTAGE": "101"}, {"DATA_CAPTURE_DESTINATION": ""},
                {"DATA_CAPTURE_DESTINATION": "artifacts/capture"}):
        with pytest.raises(ConfigurationError):
            module.data_capture_config({**ENV, **bad})


def set_status(sm, status: str) -> None:
    """Puts the endpoint into `status` (moto runs in this process and never changes it by itself)."""
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends["123456789012"]["us-east-1"].endpoints[ENDPOINT].endpoint_status = status


NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_traffic_routing_keeps_sagemakers_canary_rule():
    """CanarySize must be at most 50 % of the variant's instances (service model); a canary is whole instances."""
    def routing(count: int, percent: int = 10) -> dict:
        return replace(SETTINGS, instance_count=count, canary_size_percent=percent).traffic_routing()

    assert routing(1) == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 60}  # no canary fits in one instance
    assert routing(2) == {"Type": "CANARY", "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}, "WaitIntervalInSeconds": 60}
    assert routing(10)["CanarySize"]["Value"] == 1
    assert routing(10, percent=50)["CanarySize"]["Value"] == 5
    assert routing(3, percent=50)["CanarySize"]["Value"] == 1  # 2 of 3 would be more than half


def test_time_budgets_follow_the_settings():
    defaults = DeploymentSettings(endpoint_name="e", model_package_group_name="g", execution_role_arn=ROLE)
    # The defaults: canary 300 s + termination 120 s + provisioning fit in the 3600 s deployment timeout.
    assert defaults.update_timeout_seconds == 3600
    assert defaults.deployment_config()["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] == 3600
    # Waiting for the endpoint outlasts a whole canary update of another deployment, and more.
    assert defaults.busy_budget_seconds >= defaults.lock_lease_seconds >= 300 + 120 + 600
    assert defaults.busy_budget_seconds == 3600 + 900 + 3600
    # Long waits stretch the update's timeout instead of making SageMaker refuse the deployment config.
    slow = replace(defaults, canary_wait_seconds=3600, termination_wait_seconds=3600, timeout_seconds=600)
    assert slow.update_timeout_seconds == 3600 + 3600 + 600
    assert slow.max_polls("update") == (3600 + 3600 + 600) // 30 and slow.max_polls("create") == 20
    assert replace(defaults, timeout_seconds=100_000).update_timeout_seconds == 28800  # SageMaker's maximum


def test_busy_endpoint_means_wait_until_the_budget_is_spent(sm):
    first, second = package(sm), package(sm)
    serve(sm, first, "m1")
    set_status(sm, "Updating")
    plan = plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm, started_at=NOW, now=NOW + timedelta(minutes=5))
    assert plan["action"] == "wait" and plan["retry_after_seconds"] == 10 and plan["waited_seconds"] == 300
    assert "Updating" in plan["reason"]
    late = NOW + timedelta(seconds=SETTINGS.busy_budget_seconds + 1)
    with pytest.raises(EndpointBusy, match="longer than the"):
        plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm, started_at=NOW, now=late)


def test_failed_endpoint_is_deleted_and_its_name_awaited(sm):
    first, second = package(sm), package(sm)
    serve(sm, first, "m1")
    set_status(sm, "Failed")
    plan = plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm)
    assert plan["action"] == "wait" and "waiting until its name is free" in plan["reason"]
    assert serving_state(ENDPOINT, sm) is None  # deleted (moto forgets at once; AWS keeps it Deleting)
    assert plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm)["action"] == "create"


@pytest.mark.parametrize("status", ["OutOfService", "UpdateRollbackFailed"])
def test_endpoints_that_need_a_person_are_not_touched(sm, status):
    first, second = package(sm), package(sm)
    serve(sm, first, "m1")
    set_status(sm, status)
    with pytest.raises(EndpointUnavailable, match=status):
        plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm)


def test_planning_again_keeps_what_was_created(sm):
    """After CreateEndpoint was refused (the name was taken), the next plan updates with the model and
    config this execution already created, instead of naming new ones."""
    first, second = package(sm), package(sm)
    created_plan = plan_deployment(event(second, "Approved"), "exec", SETTINGS, sm)
    assert created_plan["action"] == "create"
    serve(sm, first, "m1")  # meanwhile someone else's endpoint appeared
    state = {**event(second, "Approved"), "plan": created_plan, "created": {"model": {}, "endpoint_config": {}}}
    again = plan_deployment(state, "exec", SETTINGS, sm)
    assert again["action"] == "update"
    assert (again["model_name"], again["endpoint_config_name"]) == (created_plan["model_name"], created_plan["endpoint_config_name"])
    assert again["previous_endpoint_config_name"] == "m1"


def test_lock_decisions():
    def lock(owner: str, since: datetime) -> dict:
        return {"Item": {"DeploymentId": {"S": "endpoint-lock"}, "LockOwner": {"S": owner},
                         "LockedAt": {"S": since.isoformat().replace("+00:00", "Z")}}}

    assert decide_lock_wait({}, "me", SETTINGS, NOW, NOW)["action"] == "acquire"  # released meanwhile
    assert decide_lock_wait(lock("me", NOW), "me", SETTINGS, NOW, NOW)["action"] == "acquire"
    waiting = decide_lock_wait(lock("other", NOW), "me", SETTINGS, NOW, NOW + timedelta(seconds=30))
    assert waiting["action"] == "wait" and waiting["retry_after_seconds"] == 10 and "other" in waiting["reason"]
    stale_since = NOW - timedelta(seconds=SETTINGS.lock_lease_seconds + 1)
    stale = decide_lock_wait(lock("crashed", stale_since), "me", SETTINGS, NOW, NOW)
    assert stale["action"] == "take_over" and stale["stale_owner"] == "crashed"
    assert stale["stale_locked_at"] == stale_since.isoformat().replace("+00:00", "Z")
    with pytest.raises(EndpointBusy, match="locked by deployment other"):
        decide_lock_wait(lock("other", NOW), "me", SETTINGS, NOW - timedelta(days=1), NOW)
