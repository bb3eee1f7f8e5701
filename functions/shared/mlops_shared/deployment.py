"""Deployment planning: what the deploy state machine does for one model package state change.

`plan_deployment` turns an Approved/Rejected "SageMaker Model Package State Change" event into a
plan the state machine follows: `create` a new endpoint, `update` the existing one (blue/green,
canary, auto-rollback alarms), or `skip` with the reason. It names the resources of the deployment
(unique per execution, so a redeploy of an older package never collides with its first
deployment) and reads what is serving from the endpoint itself (endpoint → config → model →
model package), which is the truth even when someone changed the endpoint by hand.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from mlops_shared.champion import champion_arn
from mlops_shared.config import ConfigurationError

VARIANT_NAME = "AllTraffic"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9-]+")
# Endpoint states in which an update or create would be refused: wait (the state machine retries).
BUSY_STATUSES = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}


class DeploymentInProgress(Exception):
    """The endpoint is busy with another change; the state machine retries later."""


class InvalidDeploymentEvent(ValueError):
    """The event is not an Approved/Rejected model package state change of our group."""


@dataclass(frozen=True)
class DeploymentSettings:
    endpoint_name: str
    model_package_group_name: str
    execution_role_arn: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    canary_size_percent: int = 10
    canary_wait_seconds: int = 300
    termination_wait_seconds: int = 120
    rollback_alarm_names: tuple[str, ...] = ()
    poll_seconds: int = 30
    timeout_seconds: int = 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "DeploymentSettings":
        def required(name: str) -> str:
            value = environ.get(name, "").strip()
            if not value:
                raise ConfigurationError(f"environment variable {name} is required but not set")
            return value

        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = environ.get(name, "").strip()
            try:
                value = int(raw) if raw else default
            except ValueError:
                raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from None
            if value < minimum:
                raise ConfigurationError(f"environment variable {name} must be >= {minimum}, got {value}")
            return value

        alarms = tuple(a.strip() for a in environ.get("ROLLBACK_ALARM_NAMES", "").split(",") if a.strip())
        return cls(
            endpoint_name=required("ENDPOINT_NAME"),
            model_package_group_name=required("MODEL_PACKAGE_GROUP_NAME"),
            execution_role_arn=required("MODEL_EXECUTION_ROLE_ARN"),
            instance_type=environ.get("ENDPOINT_INSTANCE_TYPE", "").strip() or "ml.m5.large",
            instance_count=integer("ENDPOINT_INSTANCE_COUNT", 1, 1),
            canary_size_percent=integer("CANARY_SIZE_PERCENT", 10, 1),
            canary_wait_seconds=integer("CANARY_WAIT_SECONDS", 300),
            termination_wait_seconds=integer("TERMINATION_WAIT_SECONDS", 120),
            rollback_alarm_names=alarms,
            poll_seconds=integer("ENDPOINT_POLL_SECONDS", 30, 1),
            timeout_seconds=integer("DEPLOYMENT_TIMEOUT_SECONDS", 3600, 1),
        )

    def deployment_config(self) -> dict:
        """UpdateEndpoint's DeploymentConfig: canary blue/green, rolled back by the alarms."""
        config: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": min(self.canary_size_percent, 50)},
                    "WaitIntervalInSeconds": self.canary_wait_seconds,
                },
                "TerminationWaitInSeconds": self.termination_wait_seconds,
                # SageMaker accepts 600..28800 s; the state machine's own timeout is the same setting.
                "MaximumExecutionTimeoutInSeconds": max(600, min(self.timeout_seconds, 28800)),
            },
        }
        if self.rollback_alarm_names:
            config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": n} for n in self.rollback_alarm_names]}
        return config


def deployment_id(approval_status: str, model_package_arn: str) -> str:
    """The idempotency key of one event: the same status of the same package is handled once."""
    return f"{approval_status}#{model_package_arn}"


def resource_name(endpoint_name: str, model_package_arn: str, execution_name: str) -> str:
    """`<endpoint>-v<version>-<token>`, at most 63 characters of [a-zA-Z0-9-] (SageMaker's rule)."""
    version = model_package_arn.rsplit("/", 1)[-1]
    token = hashlib.sha256(f"{model_package_arn}|{execution_name}".encode()).hexdigest()[:8]
    suffix = f"-v{_NAME_UNSAFE.sub('-', version)}-{token}"
    base = _NAME_UNSAFE.sub("-", endpoint_name).strip("-")[: 63 - len(suffix)]
    return f"{base}{suffix}"


def parse_event(event: Mapping[str, Any]) -> tuple[str, str, str]:
    """(model package ARN, approval status, group) from the EventBridge event."""
    detail = event.get("detail") or {}
    arn = detail.get("ModelPackageArn")
    status = detail.get("ModelApprovalStatus")
    group = detail.get("ModelPackageGroupName")
    if not arn or status not in ("Approved", "Rejected"):
        raise InvalidDeploymentEvent(
            f"expected a model package state change with ModelApprovalStatus Approved or Rejected, got "
            f"ModelPackageArn={arn!r} ModelApprovalStatus={status!r}")
    return arn, status, group or ""


@dataclass(frozen=True)
class ServingState:
    status: str
    endpoint_config_name: str
    model_name: str | None
    model_package_arn: str | None


def serving_state(endpoint_name: str, sagemaker: Any = None) -> ServingState | None:
    """What the endpoint serves now (None when it does not exist)."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise
    config_name = endpoint["EndpointConfigName"]
    model_name = package_arn = None
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        model_name = config["ProductionVariants"][0]["ModelName"]
        model = sagemaker.describe_model(ModelName=model_name)
        containers = [model.get("PrimaryContainer") or {}] + list(model.get("Containers") or [])
        package_arn = next((c["ModelPackageName"] for c in containers if c.get("ModelPackageName")), None)
    except ClientError as exc:
        if not _not_found(exc):
            raise
    return ServingState(endpoint["EndpointStatus"], config_name, model_name, package_arn)


def previous_approved_package(group: str, exclude_arn: str, sagemaker: Any = None) -> str | None:
    """The champion of the group once `exclude_arn` (the rejected package) no longer counts."""
    return champion_arn(group, exclude={exclude_arn}, sagemaker=sagemaker)


def plan_deployment(event: Mapping[str, Any], execution_name: str, settings: DeploymentSettings,
                    sagemaker: Any = None) -> dict:
    """The plan for one event (see the module docstring); raises DeploymentInProgress when busy."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    arn, status, group = parse_event(event)
    plan: dict[str, Any] = {
        "trigger": status,
        "trigger_model_package_arn": arn,
        "endpoint_name": settings.endpoint_name,
        "deployment_id": deployment_id(status, arn),
        "poll_seconds": settings.poll_seconds,
        "max_polls": max(1, settings.timeout_seconds // settings.poll_seconds),
    }

    def skip(reason: str, notify: bool = True) -> dict:
        return {**plan, "action": "skip", "reason": reason, "notify": notify}

    if group and group != settings.model_package_group_name:
        return skip(f"package group {group} is not {settings.model_package_group_name}", notify=False)

    current = serving_state(settings.endpoint_name, sagemaker)
    if current is not None and current.status in BUSY_STATUSES:
        raise DeploymentInProgress(f"endpoint {settings.endpoint_name} is {current.status}; retrying later")

    if status == "Approved":
        package = sagemaker.describe_model_package(ModelPackageName=arn)
        if package.get("ModelApprovalStatus") != "Approved":
            return skip(f"package {arn} is {package.get('ModelApprovalStatus')} now, no longer Approved")
        target = arn
        if current is not None and current.status == "InService" and current.model_package_arn == target:
            return skip(f"endpoint {settings.endpoint_name} already serves {target}")
    else:
        if current is None:
            return skip(f"rejected package {arn} is not deployed: endpoint {settings.endpoint_name} does not exist")
        if current.model_package_arn != arn:
            return skip(f"rejected package {arn} is not the one endpoint {settings.endpoint_name} serves "
                        f"({current.model_package_arn}); nothing to do")
        target = previous_approved_package(settings.model_package_group_name, arn, sagemaker)
        if target is None:
            return skip(f"rejected package {arn} is serving on {settings.endpoint_name} and no other package is "
                        f"Approved: the endpoint is left as it is; approve a package to replace it")

    if current is not None and current.status == "Failed":
        # A failed endpoint cannot be updated; it serves nothing, so it is replaced.
        sagemaker.delete_endpoint(EndpointName=settings.endpoint_name)
        current = None

    name = resource_name(settings.endpoint_name, target, execution_name)
    return {
        **plan,
        "action": "create" if current is None else "update",
        "reason": ("redeploy the previous Approved package after a rejection" if status == "Rejected"
                   else "deploy the Approved package"),
        "notify": True,
        "model_package_arn": target,
        "model_name": name,
        "endpoint_config_name": name,
        "execution_role_arn": settings.execution_role_arn,
        "instance_type": settings.instance_type,
        "instance_count": settings.instance_count,
        "deployment_config": settings.deployment_config(),
        "previous_endpoint_config_name": current.endpoint_config_name if current else None,
        "previous_model_package_arn": current.model_package_arn if current else None,
        "tags": [{"Key": "ModelPackageArn", "Value": target[:256]}, {"Key": "DeploymentId", "Value": name}],
    }


def _not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException") and (
        "Could not find" in error.get("Message", "") or "not found" in error.get("Message", "").lower())


_OUTCOMES = {
    "deployed": ("deployment_succeeded", "Deployed {package} to endpoint {endpoint}"),
    "failed": ("deployment_failed", "Deployment to endpoint {endpoint} FAILED"),
    "rolled_back": ("deployment_rolled_back", "Deployment to endpoint {endpoint} rolled back"),
    "skipped": ("deployment_skipped", "No deployment change for endpoint {endpoint}"),
}


def endpoint_failure_reason(endpoint_name: str | None, sagemaker: Any = None) -> str | None:
    """The endpoint's FailureReason (why it failed, or why an update was rolled back), if any."""
    if not endpoint_name:
        return None
    sagemaker = sagemaker or boto3.client("sagemaker")
    try:
        return sagemaker.describe_endpoint(EndpointName=endpoint_name).get("FailureReason")
    except ClientError:
        return None


def deployment_notification(event: Mapping[str, Any], failure_reason: str | None = None):
    """The message for one deployment outcome (see functions/deploy_notify)."""
    from mlops_shared.notifications import Notification

    outcome = event.get("outcome", "failed")
    plan = event.get("plan") or {}
    event_type, subject = _OUTCOMES.get(outcome, _OUTCOMES["failed"])
    package = plan.get("model_package_arn") or plan.get("trigger_model_package_arn") or "unknown package"
    endpoint = plan.get("endpoint_name") or "unknown"
    lines = [
        f"Outcome: {outcome}",
        f"Endpoint: {endpoint}",
        f"Trigger: model package {plan.get('trigger_model_package_arn', 'unknown')} was {plan.get('trigger', '?')}",
        f"Model package deployed or attempted: {package}",
    ]
    if plan.get("reason"):
        lines.append(f"Plan: {plan.get('action', '?')} - {plan['reason']}")
    if plan.get("previous_model_package_arn"):
        lines.append(f"Previously serving: {plan['previous_model_package_arn']}")
    error = event.get("error") or {}
    if error:
        lines.append(f"Error: {error.get('Error', '')}: {cause_text(error.get('Cause', ''))}")
    if failure_reason:
        lines.append(f"Endpoint failure reason: {failure_reason}")
    if outcome == "rolled_back":
        lines.append(f"The endpoint keeps serving its previous configuration {plan.get('previous_endpoint_config_name')}.")
    if outcome == "failed" and plan.get("action") == "create":
        lines.append("The endpoint, endpoint config and model created for this deployment are deleted.")
    smoke = event.get("smoke") or {}
    if smoke:
        lines.append(f"Smoke test: {smoke.get('rows')} sample rows answered as evaluated (largest relative "
                     f"difference {smoke.get('max_relative_difference', 0.0):.2g}); rmse {smoke.get('rmse', 0.0):.2f} "
                     f"on them, evaluation rmse {smoke.get('evaluation_rmse', 0.0):.2f}")
    short_package = package.rsplit("/", 2)[-2:] if "/" in package else [package]
    return Notification(event_type=event_type,
                        subject=subject.format(package="/".join(short_package), endpoint=endpoint),
                        body="\n".join(lines))


def cause_text(cause: str) -> str:
    """A Catch cause as a person wants to read it: the endpoint's FailureReason when the cause is a
    DescribeEndpoint result, the Lambda errorMessage when it is a Lambda error payload."""
    import json

    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause)
    if isinstance(parsed, dict):
        if "EndpointStatus" in parsed:
            return f"endpoint {parsed.get('EndpointStatus')}: {parsed.get('FailureReason', 'no reason given')}"
        if "errorMessage" in parsed:
            return f"{parsed.get('errorType', 'Error')}: {parsed['errorMessage']}"
    return str(cause)
