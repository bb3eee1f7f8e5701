"""Deployments racing each other and endpoint states the old state machine mishandled, on a local cloud
running the stack's deploy state machine (the local endpoints keep a deleted endpoint Deleting, and a
test hook makes them end in OutOfService or UpdateRollbackFailed)."""
from __future__ import annotations

import pytest



@pytest.fixture
def fresh(world):
    world.reset()
    world.cloud.endpoints.deleting_seconds = 0.5
    yield world
    world.faults.clear()


def succeeded(world, execution, package=None) -> None:
    assert execution.status == "SUCCEEDED", execution.explain()
    assert not {"DeleteNewEndpoint", "DeleteNewEndpointConfig", "DeleteNewModel"} & set(execution.entered)
    if package is not None:
        assert world.outcome(package) == "deployed"


def plan_reasons(execution) -> list[str]:
    return [result["reason"] for result in execution.results_of("Prepare")]


def test_a_failed_endpoint_is_replaced_once_its_name_is_free(fresh):
    """DeleteEndpoint of a Failed endpoint leaves the name Deleting for a while; CreateEndpoint on it
    would be refused (AWS: "Cannot create already existing endpoint"). The plan waits instead."""
    fresh.cloud.endpoints.deleting_seconds = 3.0
    broken, package = fresh.package("failed-before", broken=True), fresh.package("replaces-failed")
    fresh.serve(broken)
    assert fresh.endpoint_status() == "Failed"
    execution = fresh.deploy(package)
    succeeded(fresh, execution, package)
    reasons = plan_reasons(execution)
    assert "waiting until its name is free" in reasons[0]
    assert any("is Deleting" in reason for reason in reasons[1:-1]) and reasons[-1] == "deploy the Approved package"
    assert execution.errors_at("CreateEndpoint") == [] and fresh.answers_like(package)


def test_two_approvals_planned_together_deploy_one_after_the_other(fresh):
    """Both would plan `create`; the one without the endpoint lock waits, then updates. Nobody's clean-up
    deletes the other's endpoint."""
    first, second = fresh.package("together-a"), fresh.package("together-b", price_factor=1.5)
    arns = [fresh.start(first), fresh.start(second)]
    executions = [fresh.finish(arn) for arn in arns]
    for execution, package in zip(executions, (first, second)):
        succeeded(fresh, execution, package)
    actions = sorted(execution.results_of("Prepare")[-1]["action"] for execution in executions)
    assert actions == ["create", "update"]
    waited = next(e for e in executions if e.results_of("Prepare")[-1]["action"] == "update")
    assert waited.visited("WaitForEndpointLock") >= 1
    assert fresh.answers_like(second if waited is executions[1] else first)


def test_an_approval_during_an_update_waits_for_it_instead_of_being_dropped(fresh):
    base, updating, later = (fresh.package("during-base"), fresh.package("during-update", price_factor=1.5),
                             fresh.package("during-later", price_factor=2.0))
    fresh.serve(base)
    running = fresh.start(updating)
    fresh.wait_for(lambda: fresh.endpoint_status() == "Updating", "the first update to start")
    queued = fresh.start(later)
    first, second = fresh.finish(running), fresh.finish(queued)
    succeeded(fresh, first, updating)
    succeeded(fresh, second, later)
    decisions = second.results_of("ConsiderEndpointLock")
    assert decisions and all(d["action"] == "wait" and first.arn in d["reason"] for d in decisions)
    assert fresh.answers_like(later)


def test_an_endpoint_changed_outside_the_state_machine_is_waited_for(fresh):
    base, other, package = (fresh.package("outside-base"), fresh.package("outside-change", price_factor=3.0),
                            fresh.package("outside-deploy", price_factor=1.5))
    fresh.serve(base)
    other_config = fresh.serve_config(other)
    fresh.sm.update_endpoint(EndpointName=fresh.endpoint, EndpointConfigName=other_config)
    execution = fresh.deploy(package)
    succeeded(fresh, execution, package)
    assert any("is Updating" in reason for reason in plan_reasons(execution))
    assert execution.visited("WaitWhileBusy") >= 1 and fresh.answers_like(package)


def test_update_rollback_failed_is_reported_for_what_it_is_and_left_to_a_person(fresh):
    base, package, next_one = (fresh.package("urf-base"), fresh.package("urf", price_factor=1.5),
                               fresh.package("urf-next", price_factor=2.0))
    fresh.serve(base)
    fresh.cloud.endpoints.end_next_change_in(fresh.endpoint, "UpdateRollbackFailed",
                                             "the rollback of the new fleet failed")
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and "EndpointUpdateRollbackFailed" in execution.entered
    error = execution.output()["error"]
    assert error["Error"] == "EndpointUpdateRollbackFailed" and "needs a person" in error["Cause"]
    assert execution.visited("CountPoll") < 10  # reported when seen, not polled until the time-out
    assert not {"RollBackUpdate", "DeleteNewEndpoint", "DeleteNewEndpointConfig", "DeleteNewModel"} & set(execution.entered)
    assert fresh.endpoint_status() == "UpdateRollbackFailed" and fresh.outcome(package) == "failed"
    # The next deployment does not touch it either: it is reported, not waited for.
    blocked = fresh.deploy(next_one)
    assert blocked.status == "FAILED" and blocked.errors_at("Prepare") == ["EndpointUnavailable"]
    assert blocked.visited("Prepare") == 1 and fresh.outcome(next_one) == "failed"


def test_out_of_service_after_a_create_is_reported_and_the_new_endpoint_deleted(fresh):
    package = fresh.package("oos")
    fresh.cloud.endpoints.end_next_change_in(fresh.endpoint, "OutOfService", "instances failed health checks")
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.output()["error"]["Error"] == "EndpointOutOfService"
    assert execution.visited("CountPoll") < 10
    assert {"DeleteNewEndpoint", "DeleteNewEndpointConfig", "DeleteNewModel"} <= set(execution.entered)
    fresh.wait_for(lambda: fresh.endpoint_status() is None, "the new endpoint to be deleted")


def test_a_new_endpoint_that_fails_is_reported_and_deleted(fresh):
    package = fresh.package("fails-new", broken=True)
    execution = fresh.deploy(package)
    assert execution.status == "FAILED" and execution.output()["error"]["Error"] == "EndpointFailed"
    assert "DeleteNewEndpoint" in execution.entered
    fresh.wait_for(lambda: fresh.endpoint_status() is None, "the failed endpoint to be deleted")
