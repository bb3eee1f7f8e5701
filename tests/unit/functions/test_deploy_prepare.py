"""Deployment planning against a moto server: create / update / redeploy-previous / skip."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import boto3
import pytest

from mlops_shared.config import ConfigurationError
from mlops_shared.deployment import (DeploymentSettings, InvalidDeploymentEvent, plan_deployment, resource_name,
                                     serving_state)

GROUP = "houses"
ENDPOINT = "houses-endpoint"
ROLE = "arn:aws:iam::123456789012:role/model"
ENV = {"ENDPOINT_NAME": ENDPOINT, "MODEL_PACKAGE_GROUP_NAME": GROUP, "MODEL_EXECUTION_ROLE_ARN": ROLE,
       "CANARY_SIZE_PERCENT": "20", "CANARY_WAIT_SECONDS": "60", "ROLLBACK_ALARM_NAMES": "a-5xx, a-latency",
       "ENDPOINT_POLL_SECONDS": "10", "DEPLOYMENT_TIMEOUT_SECONDS": "900"}
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
    assert policy["TrafficRoutingConfiguration"]["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 20}
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
    path = Path(__file__).resolve().parents[3] / "functions" / "deploy_prepare" / "app.py"
    spec = importlib.util.spec_from_file_location("deploy_prepare_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "deploy-prepare", 256, "r1"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:deploy-prepare"

    arn = package(sm)
    plan = module.lambda_handler({"event": event(arn, "Approved"), "execution_name": "e1"}, Context())
    assert plan["action"] == "create"
