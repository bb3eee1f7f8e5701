"""Static checks of the deploy state machine: no dead or unreachable states, every task can fail safely,
every error name is one Step Functions reports, every loop is bounded and the endpoint lock is always released."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from local.aws.stepfunctions_errors import (AWS_SDK_SERVICES, LAMBDA_UNKNOWN, OPTIMISED_INTEGRATIONS, declared_errors,
                                        optimised_integration_error, sdk_integration_error)
from mlops_shared.deployment import LOCK_ID

ASL_PATH = Path(__file__).resolve().parents[2] / "statemachines" / "deploy.asl.json"
ASL_VALIDATOR = ASL_PATH.parent / "node_modules" / ".bin" / "asl-validator"
SUBSTITUTIONS = {"DeploymentsTableName", "DeployPrepareFunctionArn", "DeploySmokeTestFunctionArn", "DeployNotifyFunctionArn"}


@pytest.fixture(scope="module")
def asl() -> dict:
    return json.loads(ASL_PATH.read_text())


def transitions(state: dict) -> set[str]:
    targets = set()
    if "Next" in state:
        targets.add(state["Next"])
    if "Default" in state:
        targets.add(state["Default"])
    targets.update(choice["Next"] for choice in state.get("Choices", []))
    targets.update(c["Next"] for c in state.get("Catch", []))
    return targets


def test_every_transition_targets_an_existing_state(asl):
    states = asl["States"]
    assert asl["StartAt"] in states
    for name, state in states.items():
        for target in transitions(state):
            assert target in states, f"{name} -> {target} does not exist"


def test_every_state_is_reachable(asl):
    states = asl["States"]
    seen, todo = set(), [asl["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(transitions(states[name]))
    assert set(states) - seen == set()


def test_no_dead_ends(asl):
    for name, state in asl["States"].items():
        if state["Type"] in ("Succeed", "Fail"):
            continue
        if state["Type"] == "Choice":
            assert state.get("Choices") and "Default" in state, f"{name} needs Choices and a Default"
        else:
            assert "Next" in state or state.get("End") is True, f"{name} has neither Next nor End"


def test_every_task_retries_and_catches(asl):
    """Each task retries its transient errors and catches everything else. DescribeEndpoint is the one
    task without a Retry: its poll loop retries it (its SageMaker errors go to a Choice that can poll again)."""
    states = asl["States"]
    tasks = {n: s for n, s in states.items() if s["Type"] == "Task"}
    assert tasks
    for name, state in tasks.items():
        assert state.get("Catch"), f"{name} has no Catch"
        assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"], f"{name} does not catch States.ALL last"
        for retry in state.get("Retry", []):
            assert "States.ALL" not in retry["ErrorEquals"], f"{name} retries every error, including permanent ones"
        if name == "DescribeEndpoint":
            assert "Retry" not in state
            sagemaker_catch = next(c for c in state["Catch"] if c["ErrorEquals"] == ["SageMaker.SageMakerException"])
            assert "DescribeEndpoint" in reachable(states, sagemaker_catch["Next"])
        else:
            assert state.get("Retry"), f"{name} has no Retry"


def reachable(states: dict, start: str, without: frozenset = frozenset()) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen and name not in without:
            seen.add(name)
            todo.extend(transitions(states[name]))
    return seen


def names_reported_by(resource: str) -> set[str]:
    """Every error name Step Functions can report for this task's service errors (local.aws.stepfunctions_errors)."""
    if resource.startswith("arn:aws:states:::aws-sdk:"):
        service = resource.split(":")[6]
        codes = declared_errors(AWS_SDK_SERVICES[service].botocore_name) | {"AnyUndeclaredError"}
        return {sdk_integration_error(service, code, "", 400, "r").error for code in codes}
    integration = "dynamodb" if resource.startswith("arn:aws:states:::dynamodb:") else "lambda"
    codes = declared_errors(OPTIMISED_INTEGRATIONS[integration].botocore_name) | {"AnyUndeclaredError"}
    names = {optimised_integration_error(integration, code, "", 400, "r").error for code in codes}
    if integration == "lambda":
        # The SDK's own client-side failures (bp-lambda-serviceexception) and a function error without a type.
        names |= {"Lambda.SdkClientException", "Lambda.ClientExecutionTimeoutException", LAMBDA_UNKNOWN}
    return names


def test_every_error_name_is_one_step_functions_reports(asl):
    """A Retry/Catch on a name Step Functions never emits (e.g. SageMaker.ThrottlingException: SageMaker's
    model does not declare it, so it arrives as SageMaker.SageMakerException) silently matches nothing."""
    for name, state in asl["States"].items():
        if state["Type"] != "Task":
            continue
        possible = names_reported_by(state["Resource"])
        for rule in state.get("Retry", []) + state.get("Catch", []):
            for error in rule["ErrorEquals"]:
                if not error.startswith("States."):
                    assert error in possible, f"{name}: Step Functions never reports {error!r} for {state['Resource']}"


def test_quotas_conditions_and_refusals_are_not_retried(asl):
    """Retrying cannot help these: a quota (ResourceLimitExceeded), a failed condition, a missing function."""
    never = {"SageMaker.ResourceLimitExceededException", "DynamoDB.ConditionalCheckFailedException",
             "Lambda.ResourceNotFoundException", "SageMaker.ResourceNotFoundException"}
    for name, state in asl["States"].items():
        for retry in state.get("Retry", []):
            assert not never & set(retry["ErrorEquals"]), f"{name} retries {never & set(retry['ErrorEquals'])}"


def test_every_loop_is_bounded(asl):
    """Each loop passes a state that ends it: the planning function (it raises EndpointBusy once the
    execution has waited longer than the budget the settings allow) or a poll-limit Choice."""
    states = asl["States"]
    bounded_by = frozenset({"Prepare", "ConsiderEndpointLock", "EndpointStatus", "DescribeFailedHow"})
    for rule in states["EndpointStatus"]["Choices"] + states["DescribeFailedHow"]["Choices"]:
        if rule.get("NumericGreaterThanEqualsPath") == "$.plan.max_polls":
            break
    else:
        raise AssertionError("the poll loop has no poll limit")
    for name in states:
        if name in bounded_by:
            continue
        for target in transitions(states[name]):
            assert name not in reachable(states, target, without=bounded_by), f"{name} loops without a bound"


def test_the_endpoint_lock_is_released_on_every_path(asl):
    states = asl["States"]
    terminal = {n for n, s in states.items() if s["Type"] in ("Succeed", "Fail")}
    after_lock = reachable(states, "AcquireEndpointLock", without=frozenset({"ReleaseEndpointLock"}))
    assert not after_lock & terminal, f"these end without releasing the lock: {after_lock & terminal}"
    keys = {json.dumps(states[n]["Parameters"]["Key"]) for n in
            ("AcquireEndpointLock", "ReadEndpointLock", "TakeOverEndpointLock", "ReleaseEndpointLock")}
    assert keys == {json.dumps({"DeploymentId": {"S": LOCK_ID}})}


def test_clean_up_deletes_only_what_this_execution_created(asl):
    states = asl["States"]
    guards = {"DeleteNewEndpoint": "CleanUpEndpoint", "DeleteNewEndpointConfig": "CleanUpEndpointConfig",
              "DeleteNewModel": "CleanUpModel"}
    for delete, guard in guards.items():
        created = {"DeleteNewEndpoint": "$.created.endpoint", "DeleteNewEndpointConfig": "$.created.endpoint_config",
                   "DeleteNewModel": "$.created.model"}[delete]
        first = states[guard]["Choices"][0]
        assert first == {"Variable": created, "IsPresent": False, "Next": first["Next"]} and first["Next"] != delete
        assert all(guard == n for n, s in states.items() if delete in transitions(s)), f"{delete} is entered unguarded"


@pytest.mark.skipif(not ASL_VALIDATOR.exists(), reason="asl-validator is not installed: make asl-validator (make test installs it)")
def test_asl_validator_accepts_the_definition():
    result = subprocess.run([str(ASL_VALIDATOR), "--json-path", str(ASL_PATH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_sync_integrations_and_known_substitutions(asl):
    text = ASL_PATH.read_text()
    assert ".sync" not in text  # wait loops instead: moto cannot run .sync, and they hide progress
    assert set(re.findall(r"\$\{(\w+)\}", text)) == SUBSTITUTIONS


def test_idempotency_record_comes_first_and_duplicates_stop_quietly(asl):
    first = asl["States"][asl["StartAt"]]
    assert first["Resource"] == "arn:aws:states:::dynamodb:putItem"
    # Keyed on the status change, not the status: a package approved again is deployed again.
    assert first["Parameters"]["ConditionExpression"] == "attribute_not_exists(DeploymentId) OR StatusChangedAt <> :changed"
    assert first["Parameters"]["Item"]["StatusChangedAt"] == {"S.$": "States.Format('{}', $.detail.LastModifiedTime)"}
    assert first["Parameters"]["ExpressionAttributeValues"][":changed"] == {"S.$": "States.Format('{}', $.detail.LastModifiedTime)"}
    duplicate = next(c for c in first["Catch"] if c["ErrorEquals"] == ["DynamoDB.ConditionalCheckFailedException"])
    assert asl["States"][duplicate["Next"]]["Type"] == "Succeed"


def test_update_uses_blue_green_config_from_the_plan(asl):
    update = asl["States"]["UpdateEndpoint"]
    assert update["Parameters"]["DeploymentConfig.$"] == "$.plan.deployment_config"
