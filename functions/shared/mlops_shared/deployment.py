"""Deployment planning: what the deploy state machine does for one model package state change.

`plan_deployment` turns an Approved/Rejected "SageMaker Model Package State Change" event into a
plan the state machine follows: `create` a new endpoint, `update` the existing one (blue/green with
a canary or, on a single instance, all at once; rolled back by the alarms), `wait` while the
endpoint is busy with another change, or `skip` with the reason. It names the resources of the
deployment (unique per execution, so a redeploy of an older package never collides with its first
deployment) and reads what is serving from the endpoint itself (endpoint -> config -> model ->
model package), which is the truth even when someone changed the endpoint by hand.

One deployment changes the endpoint at a time: the state machine holds a lock item in the
DeploymentsTable while it plans and deploys. `decide_lock_wait` tells an execution that found the
lock taken whether to wait, or to take over a lock whose holder stopped renewing it. How long an
execution may wait at all (`DeploymentSettings.busy_budget_seconds`) is derived from the same
settings that bound the deployments it waits for.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import ClientError

from mlops_shared.aws import is_not_found
from mlops_shared.champion import champion_arn
from mlops_shared.environment import int_env, required_env

VARIANT_NAME = "AllTraffic"
LOCK_ID = "endpoint-lock"  # the DeploymentsTable item the state machine locks the endpoint with
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9-]+")
# Endpoint states in which an update or create would be refused: wait, then plan again.
BUSY_STATUSES = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
# States a deployment must not touch: the endpoint needs a person (or SageMaker) first.
UNAVAILABLE_STATUSES = {"OutOfService", "UpdateRollbackFailed"}
# A new fleet (instances, container, health check) comes up within minutes; blue/green waits add to it.
PROVISIONING_ALLOWANCE_SECONDS = 600
# After the endpoint settles: the smoke test (its function's timeout is 120 s), notifications,
# Step Functions' bounded retries and the clean-up of a failed deployment.
LEASE_MARGIN_SECONDS = 900
# A package's metadata property that lets an approval replace a newer serving version with it.
FORCE_OVER_NEWER_PROPERTY = "deploy_over_newer"
# SageMaker's bounds of BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds.
MIN_UPDATE_TIMEOUT_SECONDS, MAX_UPDATE_TIMEOUT_SECONDS = 600, 28800


class EndpointBusy(Exception):
    """The endpoint stayed busy (locked by another deployment, or changing) longer than the budget."""


class EndpointUnavailable(Exception):
    """The endpoint is in a state a deployment must not act on (OutOfService, UpdateRollbackFailed)."""


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
            return required_env(environ, name)

        def integer(name: str, default: int, minimum: int = 0) -> int:
            return int_env(environ, name, default, minimum)

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

    # -- time budgets, all derived from the settings ------------------------------------------------
    @property
    def update_timeout_seconds(self) -> int:
        """How long a blue/green update may run: SageMaker's MaximumExecutionTimeoutInSeconds, and how
        long the state machine polls an update. The deployment timeout, but never less than the update's
        own waits plus provisioning (SageMaker requires the timeout to exceed the waits)."""
        needed = self.canary_wait_seconds + self.termination_wait_seconds + PROVISIONING_ALLOWANCE_SECONDS
        return max(MIN_UPDATE_TIMEOUT_SECONDS, min(max(self.timeout_seconds, needed), MAX_UPDATE_TIMEOUT_SECONDS))

    @property
    def lock_lease_seconds(self) -> int:
        """How long a deployment may hold the endpoint lock without renewing it: its longest stretch
        without passing the lock (an update polled to its timeout, then smoke test, notify, clean-up)."""
        return self.update_timeout_seconds + LEASE_MARGIN_SECONDS

    @property
    def busy_budget_seconds(self) -> int:
        """How long a deployment waits for the endpoint before it gives up: the lease of the deployment
        holding it, then one more endpoint change it may leave running (a rollback)."""
        return self.lock_lease_seconds + self.update_timeout_seconds

    def max_polls(self, action: str) -> int:
        limit = self.update_timeout_seconds if action == "update" else self.timeout_seconds
        return max(1, math.ceil(limit / self.poll_seconds))

    # -- blue/green ----------------------------------------------------------------------------
    def traffic_routing(self) -> dict:
        """How an update moves traffic. SageMaker's rule (TrafficRoutingConfig.CanarySize): the canary is
        at most 50 % of the variant's instance count. A canary needs a whole instance, so with one
        instance there is none: traffic moves all at once, and the same bake time (WaitIntervalInSeconds)
        with the same rollback alarms guards the new fleet before the old one is terminated."""
        largest_canary = self.instance_count // 2
        if largest_canary < 1:
            return {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": self.canary_wait_seconds}
        canary = min(largest_canary, max(1, math.ceil(self.instance_count * self.canary_size_percent / 100)))
        return {"Type": "CANARY", "CanarySize": {"Type": "INSTANCE_COUNT", "Value": canary},
                "WaitIntervalInSeconds": self.canary_wait_seconds}

    def deployment_config(self) -> dict:
        """UpdateEndpoint's DeploymentConfig: blue/green, rolled back by the alarms."""
        config: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": self.traffic_routing(),
                "TerminationWaitInSeconds": self.termination_wait_seconds,
                "MaximumExecutionTimeoutInSeconds": self.update_timeout_seconds,
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


def parse_time(value: str | None) -> datetime | None:
    """A Step Functions timestamp (`$$.Execution.StartTime`, ISO 8601 in UTC) as an aware datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


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
        if is_not_found(exc):
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
        if not is_not_found(exc):
            raise
    return ServingState(endpoint["EndpointStatus"], config_name, model_name, package_arn)


def previous_approved_package(group: str, exclude_arn: str, sagemaker: Any = None) -> str | None:
    """The champion of the group once `exclude_arn` (the rejected package) no longer counts."""
    return champion_arn(group, exclude={exclude_arn}, sagemaker=sagemaker)


def _newer_approved_serving(current: ServingState | None, package: Mapping[str, Any], sagemaker: Any) -> dict | None:
    """The package the endpoint serves when it is a newer version of the same group that is still
    Approved (what an approval of the older `package` would silently replace), else None."""
    if current is None or not current.model_package_arn or current.model_package_arn == package.get("ModelPackageArn"):
        return None
    if current.status == "Failed":
        return None  # a Failed endpoint serves nothing; it is replaced whatever it held
    try:
        serving = sagemaker.describe_model_package(ModelPackageName=current.model_package_arn)
    except ClientError as exc:
        if is_not_found(exc) or exc.response.get("Error", {}).get("Code") == "ValidationException":
            return None  # deleted since: nothing newer to protect
        raise
    same_group = serving.get("ModelPackageGroupName") == package.get("ModelPackageGroupName")
    newer = (serving.get("ModelPackageVersion") or 0) > (package.get("ModelPackageVersion") or 0)
    return serving if same_group and newer and serving.get("ModelApprovalStatus") == "Approved" else None


def _forced_over_newer(package: Mapping[str, Any]) -> bool:
    value = (package.get("CustomerMetadataProperties") or {}).get(FORCE_OVER_NEWER_PROPERTY, "")
    return value.strip().lower() == "true"


def _waited(settings: DeploymentSettings, started_at: datetime | None, now: datetime, why: str) -> float:
    """Seconds this execution has run; raises EndpointBusy once that exceeds the busy budget."""
    waited = (now - started_at).total_seconds() if started_at else 0.0
    if waited > settings.busy_budget_seconds:
        raise EndpointBusy(f"{why}; this deployment has waited {waited:.0f} s, longer than the "
                           f"{settings.busy_budget_seconds} s it may (the lease of the deployment holding the "
                           f"endpoint plus one update, derived from DEPLOYMENT_TIMEOUT_SECONDS, CANARY_WAIT_SECONDS "
                           f"and TERMINATION_WAIT_SECONDS)")
    return waited


def decide_lock_wait(lock_item: Mapping[str, Any] | None, execution_id: str, settings: DeploymentSettings,
                     started_at: datetime | None, now: datetime | None = None) -> dict:
    """What to do about the endpoint lock another execution holds (`lock_item` as GetItem returns it):

    `acquire` (it is free, or ours), `take_over` (its holder has not renewed it for longer than the
    lease: that execution ended without releasing it), or `wait` `retry_after_seconds`. Raises
    EndpointBusy when this execution has waited longer than the busy budget."""
    now = now or datetime.now(timezone.utc)
    item = (lock_item or {}).get("Item") or {}
    owner = (item.get("LockOwner") or {}).get("S")
    locked_at = (item.get("LockedAt") or {}).get("S")
    if not owner or owner == execution_id:
        return {"action": "acquire", "reason": "the endpoint lock is free"}
    held_for = (now - parse_time(locked_at)).total_seconds() if locked_at else math.inf
    if held_for > settings.lock_lease_seconds:
        return {"action": "take_over", "stale_owner": owner, "stale_locked_at": locked_at or "",
                "reason": f"execution {owner} has not renewed the endpoint lock for {held_for:.0f} s "
                          f"(lease {settings.lock_lease_seconds} s)"}
    waited = _waited(settings, started_at, now, f"endpoint {settings.endpoint_name} is locked by deployment {owner}")
    return {"action": "wait", "retry_after_seconds": settings.poll_seconds, "waited_seconds": round(waited),
            "reason": f"endpoint {settings.endpoint_name} is locked by deployment {owner} since {locked_at}"}


def _retained_deployment(state: Mapping[str, Any]) -> dict | None:
    """When planning again after resources were created (a refused CreateEndpoint/UpdateEndpoint), the
    deployment keeps its target and the names of what it created."""
    created = state.get("created") or {}
    previous = state.get("plan") or {}
    if not created.get("model") or not previous.get("model_name"):
        return None
    keys = ("model_package_arn", "model_name", "endpoint_config_name", "reason")
    return {key: previous[key] for key in keys if key in previous}


def plan_deployment(event: Mapping[str, Any], execution_name: str, settings: DeploymentSettings,
                    sagemaker: Any = None, *, started_at: datetime | None = None, now: datetime | None = None) -> dict:
    """The plan for one event (see the module docstring). `event` is the state machine's state: the
    EventBridge event, and on a second planning the previous `plan` and what was `created`."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    now = now or datetime.now(timezone.utc)
    arn, status, group = parse_event(event)
    retained = _retained_deployment(event)
    plan: dict[str, Any] = {
        "trigger": status,
        "trigger_model_package_arn": arn,
        "endpoint_name": settings.endpoint_name,
        "deployment_id": deployment_id(status, arn),
        "poll_seconds": settings.poll_seconds,
        **(retained or {}),
    }

    def skip(reason: str, notify: bool = True) -> dict:
        return {**plan, "action": "skip", "reason": reason, "notify": notify, "max_polls": 1}

    def wait(reason: str) -> dict:
        waited = _waited(settings, started_at, now, reason)
        return {**plan, "action": "wait", "reason": reason, "notify": False, "retry_after_seconds": settings.poll_seconds,
                "waited_seconds": round(waited), "max_polls": 1}

    if group and group != settings.model_package_group_name:
        return skip(f"package group {group} is not {settings.model_package_group_name}", notify=False)

    current = serving_state(settings.endpoint_name, sagemaker)
    if current is not None and current.status in BUSY_STATUSES:
        return wait(f"endpoint {settings.endpoint_name} is {current.status}")
    if current is not None and current.status in UNAVAILABLE_STATUSES:
        raise EndpointUnavailable(f"endpoint {settings.endpoint_name} is {current.status}: it needs attention "
                                  f"(see its FailureReason) before a deployment can change it")

    if retained is not None:
        target = retained["model_package_arn"]
    elif status == "Approved":
        package = sagemaker.describe_model_package(ModelPackageName=arn)
        if package.get("ModelApprovalStatus") != "Approved":
            return skip(f"package {arn} is {package.get('ModelApprovalStatus')} now, no longer Approved")
        target = arn
        if current is not None and current.status == "InService" and current.model_package_arn == target:
            return skip(f"endpoint {settings.endpoint_name} already serves {target}")
        newer = _newer_approved_serving(current, package, sagemaker)
        if newer is not None and not _forced_over_newer(package):
            return skip(
                f"package {arn} (version {package.get('ModelPackageVersion')}) was approved, but endpoint "
                f"{settings.endpoint_name} serves the newer version {newer.get('ModelPackageVersion')} "
                f"({newer['ModelPackageArn']}), which is still Approved: an older model is not deployed over a newer "
                f"one. To serve the older one anyway, set its metadata property {FORCE_OVER_NEWER_PROPERTY}=true and "
                f"approve it again; or reject the newer version, which redeploys the best Approved one left")
    else:
        package = sagemaker.describe_model_package(ModelPackageName=arn)
        if package.get("ModelApprovalStatus") != "Rejected":
            # Approved again since (or the events arrived out of order): the later event decides.
            return skip(f"package {arn} is {package.get('ModelApprovalStatus')} now, no longer Rejected")
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
        # A failed endpoint cannot be updated and serves nothing: it is replaced. Its name stays taken
        # while it is Deleting (CreateEndpoint refuses it), so plan again once it is gone.
        sagemaker.delete_endpoint(EndpointName=settings.endpoint_name)
        return wait(f"deleted the Failed endpoint {settings.endpoint_name}; waiting until its name is free")

    name = resource_name(settings.endpoint_name, target, execution_name)
    action = "create" if current is None else "update"
    return {
        "model_name": name,
        "endpoint_config_name": name,
        "reason": ("redeploy the previous Approved package after a rejection" if status == "Rejected"
                   else "deploy the Approved package"),
        **plan,
        "action": action,
        "notify": True,
        "model_package_arn": target,
        "max_polls": settings.max_polls(action),
        "execution_role_arn": settings.execution_role_arn,
        "instance_type": settings.instance_type,
        "instance_count": settings.instance_count,
        "deployment_config": settings.deployment_config(),
        "previous_endpoint_config_name": current.endpoint_config_name if current else None,
        "previous_model_package_arn": current.model_package_arn if current else None,
        "tags": [{"Key": "ModelPackageArn", "Value": target[:256]}, {"Key": "DeploymentId", "Value": name}],
    }


_OUTCOMES = {
    "deployed": ("deployment_succeeded", "Deployed {package} to endpoint {endpoint}"),
    "failed": ("deployment_failed", "Deployment to endpoint {endpoint} FAILED"),
    "rolled_back": ("deployment_rolled_back", "Deployment to endpoint {endpoint} rolled back"),
    "skipped": ("deployment_skipped", "No deployment change for endpoint {endpoint}"),
}
# The custom metric each outcome counts (namespace POWERTOOLS_METRICS_NAMESPACE, dimension service);
# the dashboard shows them and DeploymentsFailingAlarm watches the failed and rolled-back ones.
OUTCOME_METRICS = {"deployed": "DeploymentsSucceeded", "failed": "DeploymentsFailed",
                   "rolled_back": "DeploymentsRolledBack", "skipped": "DeploymentsSkipped"}


def outcome_metric(outcome: str | None) -> str:
    return OUTCOME_METRICS.get(outcome or "failed", OUTCOME_METRICS["failed"])


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
    if outcome == "failed":
        created = _created_resources(plan, event.get("created") or {})
        if created:
            lines.append(f"Created by this deployment, and deleted now unless the endpoint still uses them: "
                         f"{', '.join(created)}.")
    smoke = event.get("smoke") or {}
    if smoke:
        lines.append(f"Smoke test: {smoke.get('rows')} sample rows answered as evaluated (largest relative "
                     f"difference {smoke.get('max_relative_difference', 0.0):.2g}); rmse {smoke.get('rmse', 0.0):.2f} "
                     f"on them, evaluation rmse {smoke.get('evaluation_rmse', 0.0):.2f}")
    short_package = package.rsplit("/", 2)[-2:] if "/" in package else [package]
    return Notification(event_type=event_type,
                        subject=subject.format(package="/".join(short_package), endpoint=endpoint),
                        body="\n".join(lines))


def _created_resources(plan: Mapping[str, Any], created: Mapping[str, Any]) -> list[str]:
    """What the state machine recorded as created by this execution (`$.created`), by name."""
    names = {"endpoint": ("endpoint", plan.get("endpoint_name")),
             "endpoint_config": ("endpoint config", plan.get("endpoint_config_name")),
             "model": ("model", plan.get("model_name"))}
    return [f"{kind} {name}" for key, (kind, name) in names.items() if key in created and name]


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
