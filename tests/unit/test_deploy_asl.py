"""Static checks of the deploy state machine: no dead or unreachable states, every task can fail safely."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ASL_PATH = Path(__file__).resolve().parents[2] / "statemachines" / "deploy.asl.json"
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
    tasks = {n: s for n, s in asl["States"].items() if s["Type"] == "Task"}
    assert tasks
    for name, state in tasks.items():
        assert state.get("Retry"), f"{name} has no Retry"
        assert state.get("Catch"), f"{name} has no Catch"
        assert any("States.ALL" in c["ErrorEquals"] for c in state["Catch"]), f"{name} does not catch States.ALL"
        for retry in state["Retry"]:
            assert "States.ALL" not in retry["ErrorEquals"], f"{name} retries every error, including permanent ones"


def test_no_sync_integrations_and_known_substitutions(asl):
    text = ASL_PATH.read_text()
    assert ".sync" not in text  # wait loops instead: moto cannot run .sync, and they hide progress
    assert set(re.findall(r"\$\{(\w+)\}", text)) == SUBSTITUTIONS


def test_idempotency_record_comes_first_and_duplicates_stop_quietly(asl):
    first = asl["States"][asl["StartAt"]]
    assert first["Resource"] == "arn:aws:states:::dynamodb:putItem"
    assert first["Parameters"]["ConditionExpression"] == "attribute_not_exists(DeploymentId)"
    duplicate = next(c for c in first["Catch"] if c["ErrorEquals"] == ["DynamoDB.ConditionalCheckFailedException"])
    assert asl["States"][duplicate["Next"]]["Type"] == "Succeed"


def test_update_uses_blue_green_config_from_the_plan(asl):
    update = asl["States"]["UpdateEndpoint"]
    assert update["Parameters"]["DeploymentConfig.$"] == "$.plan.deployment_config"
