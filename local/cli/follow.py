"""Following a registered model through approval and deployment, the way people see it happen.

After the pipeline registers a package (PendingManualApproval), the approver gets an email in the
local outbox. `decide` opens that email, follows its Approve or Reject link and confirms on the
page (`local.cli.approve.follow_approval_link`), exactly as a person would. The approval's "Model
Package State Change" event then starts the deploy state machine, whose first state records
`<status>#<package ARN>` in the DeploymentsTable and whose end records the outcome there
(deployed / rolled_back / failed / skipped). That record is the signal followed here: it names the
state machine execution, whose history gives the reason of a failure.

Every function takes a session with `client(service)`, `outputs` (the stack outputs), `state_dir`,
`args` (approve / reject flags), `progress(message)`, `remaining()` and `check_time(what)`: the
`RunSession` of `local.cli.run`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mlops_shared.deployment import cause_text

from local.cli.approve import ApprovalEmailNotFound, find_approval_email, follow_approval_link
from local.cli.common import DEPLOYMENT_STAGE, RunError

TERMINAL_OUTCOMES = ("deployed", "rolled_back", "failed", "skipped")
# How long the end of a deployment (the notification after the outcome is recorded) may take
# before the run stops waiting for it.
SETTLE_SECONDS = 60.0
MAX_REASON_CHARS = 800


def requested_action(args: Any) -> str | None:
    if getattr(args, "approve", False):
        return "approve"
    if getattr(args, "reject", False):
        return "reject"
    return None


def decide(session, result: dict) -> dict:
    """The AFTER_REGISTRATION stage: approve (then follow the deployment) or reject the package."""
    action = requested_action(session.args)
    if action is None or result.get("status") != "registered":
        return result
    package_arn = result["model_package_arn"]
    started = time.time()
    email_path = wait_for_approval_email(session, package_arn, since=started - 600)
    result["approval_email"] = str(email_path)
    session.progress(f"approval email: {email_path}")
    answer = follow_approval_link(outbox_dir(session), package_arn, action, wait_seconds=5)
    expected = "approved" if action == "approve" else "rejected"
    if answer["outcome"] != expected:
        raise RunError(f"the approval page did not {action} the package (HTTP {answer['status_code']}, "
                       f"outcome {answer['outcome']}): {answer['page_text'][:500]}")
    session.progress(f"{expected} by {answer['approver']} through the email's {action} link")
    result["status"] = expected
    if action == "reject":
        # The rejection is handled by the deploy state machine too (usually "skipped": the package
        # never served); let it finish so a cloud stopped after this run leaves nothing half done.
        deployment = wait_for_deployment(session, "Rejected", package_arn, started,
                                         timeout=min(SETTLE_SECONDS, max(session.remaining(), 1)), required=False)
        if deployment:
            session.progress(f"deployment state machine after the rejection: {deployment['outcome']}"
                             + (f" ({deployment['reason']})" if deployment.get("reason") else ""))
        return result
    return follow_deployment(session, result, started)


def outbox_dir(session) -> Path:
    return Path(session.state_dir) / "outbox"


def wait_for_approval_email(session, package_arn: str, since: float) -> Path:
    """The outbox file of the approval email for the package; RunError if notify_approval failed."""
    session.progress("waiting for the approval email in the outbox ...")
    while True:
        try:
            path, _message = find_approval_email(outbox_dir(session), package_arn)
            return path
        except ApprovalEmailNotFound:
            pass
        dead = dead_letter_about(session, package_arn, since)
        if dead is not None:
            raise RunError(f"the approval notification could not be sent: {json.dumps(dead.get('error'))[:2000]}")
        session.check_time(f"the approval email for {package_arn}")
        time.sleep(0.5)


def dead_letter_about(session, text: str, since: float) -> dict | None:
    """A dead-lettered event (in `<state>/dlq/`) newer than `since` that mentions `text`."""
    for path in sorted((Path(session.state_dir) / "dlq").glob("*.json")):
        if path.stat().st_mtime < since:
            continue
        record = json.loads(path.read_text())
        if text in json.dumps(record.get("event"), default=str):
            return record
    return None


def follow_deployment(session, result: dict, started: float) -> dict:
    """After an approval: `deployed` with the endpoint, `failed` with the reason, or `approved` when
    the stack has no deployment (or the deployment decided there was nothing to do)."""
    outputs = session.outputs
    if not outputs.get("DeploymentsTableName"):
        session.progress("no deployment is configured in this stack: the package stays approved")
        return result
    package_arn = result["model_package_arn"]
    session.progress("waiting for the deployment the approval starts ...")
    deployment = wait_for_deployment(session, "Approved", package_arn, started, timeout=session.remaining())
    outcome = deployment["outcome"]
    endpoint_name = deployment.get("endpoint_name") or outputs.get("EndpointNameOutput")
    if outcome == "deployed" or (outcome == "skipped" and _serves(session, endpoint_name, package_arn)):
        status = session.client("sagemaker").describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"]
        if status != "InService":
            raise RunError(f"the deployment reported deployed but endpoint {endpoint_name} is {status}")
        result.update(status="deployed", endpoint_name=endpoint_name)
        session.progress(f"deployed to endpoint {endpoint_name} (InService)")
    elif outcome == "skipped":
        result["reason"] = f"deployment skipped: {deployment.get('reason') or 'nothing to do'}"
        session.progress(result["reason"])
    else:
        result.update(status="failed", failed_stage=DEPLOYMENT_STAGE,
                      reason=f"deployment {outcome}: {deployment.get('reason') or 'no reason given'}")
        session.progress(result["reason"])
    return result


def _serves(session, endpoint_name: str | None, package_arn: str) -> bool:
    if not endpoint_name:
        return False
    sagemaker = session.client("sagemaker")
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    except ClientError:
        return False
    containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
    return endpoint["EndpointStatus"] == "InService" and containers[0].get("ModelPackageName") == package_arn


def deployment_record(session, approval_status: str, package_arn: str) -> dict | None:
    """The DeploymentsTable item of this status of this package, as plain strings."""
    item = session.client("dynamodb").get_item(
        TableName=session.outputs["DeploymentsTableName"], ConsistentRead=True,
        Key={"DeploymentId": {"S": f"{approval_status}#{package_arn}"}}).get("Item")
    if not item:
        return None
    return {name: next(iter(value.values())) for name, value in item.items()}


def _failed_before_recording(session, package_arn: str, since: float) -> dict | None:
    """A deploy execution about this package that ended before it could record anything (its
    first state writes the record), so the table never hears of it."""
    machine = session.outputs.get("DeployStateMachineArn")
    if not machine:
        return None
    stepfunctions = session.client("stepfunctions")
    for summary in stepfunctions.list_executions(stateMachineArn=machine, maxResults=20)["executions"]:
        if summary["status"] == "RUNNING" or summary["startDate"].timestamp() < since:
            continue
        execution = stepfunctions.describe_execution(executionArn=summary["executionArn"])
        if package_arn not in execution.get("input", ""):
            continue
        details = execution_details(stepfunctions, summary["executionArn"])
        reason = details.get("reason") or f"{execution.get('error')}: {execution.get('cause')}"
        history = stepfunctions.get_execution_history(executionArn=summary["executionArn"], reverseOrder=True,
                                                      maxResults=50)["events"]
        task = next((e["taskFailedEventDetails"] for e in history if "taskFailedEventDetails" in e), None)
        if task:
            reason += f" (task {task.get('resource')}: {task.get('error')}: {task.get('cause')})"
        return {"outcome": "failed", "execution_arn": summary["executionArn"], **details,
                "reason": f"deploy execution {execution['status']} before recording the event: {reason}"}
    return None


def wait_for_deployment(session, approval_status: str, package_arn: str, since: float, *,
                        timeout: float, required: bool = True) -> dict | None:
    """Waits for the deploy state machine to handle this status of this package.

    Returns {"outcome", "reason", "endpoint_name", "execution_arn"} once the outcome is recorded and
    the execution has finished (or SETTLE_SECONDS after the outcome). When `required` is False,
    returns None instead of raising when nothing arrives within `timeout`.
    """
    stepfunctions = session.client("stepfunctions")
    deadline = time.monotonic() + timeout
    outcome_seen_at: float | None = None
    while True:
        record = deployment_record(session, approval_status, package_arn)
        execution = None
        if record and record.get("ExecutionArn"):
            execution = stepfunctions.describe_execution(executionArn=record["ExecutionArn"])
        outcome = (record or {}).get("Outcome")
        finished = execution is not None and execution["status"] != "RUNNING"
        if outcome in TERMINAL_OUTCOMES:
            outcome_seen_at = outcome_seen_at or time.monotonic()
            if finished or time.monotonic() - outcome_seen_at > SETTLE_SECONDS:
                details = execution_details(stepfunctions, record["ExecutionArn"])
                return {"outcome": outcome, "execution_arn": record["ExecutionArn"], **details}
        elif finished:
            # The execution ended without recording an outcome (it could not notify, or crashed).
            details = execution_details(stepfunctions, record["ExecutionArn"])
            reason = details.get("reason") or f"{execution.get('error')}: {execution.get('cause')}"
            return {"outcome": "failed", "execution_arn": record["ExecutionArn"], **details,
                    "reason": f"deploy execution {execution['status']} without an outcome: {reason}"}
        if record is None:
            failed = _failed_before_recording(session, package_arn, since)
            if failed is not None:
                return failed
            dead = dead_letter_about(session, package_arn, since)
            if dead is not None and approval_status in json.dumps(dead.get("event"), default=str):
                raise RunError(f"the {approval_status} event could not start the deployment: "
                               f"{json.dumps(dead.get('error'))[:2000]}")
        if time.monotonic() >= deadline or session.remaining() <= 0:
            if not required:
                return None
            raise TimeoutError(f"timed out waiting for the deployment of {package_arn}"
                               + (f" (execution {record['ExecutionArn']}, outcome {outcome})" if record else
                                  " (the deploy state machine never started)"))
        time.sleep(1.0)


def execution_details(stepfunctions, execution_arn: str) -> dict:
    """What the deploy execution told people: the input of its last notification (plan + error).

    Returns {"reason", "endpoint_name"}; the reason reads like the notification's "Error:" line.
    """
    events: list[dict] = []
    token = None
    try:
        while True:
            page = stepfunctions.get_execution_history(executionArn=execution_arn, maxResults=1000,
                                                       **({"nextToken": token} if token else {}))
            events += page.get("events", [])
            token = page.get("nextToken")
            if not token:
                break
    except ClientError:
        return {"reason": None, "endpoint_name": None}
    notified: dict | None = None
    endpoint_failure = None
    for event in events:
        for details in event.values():
            if not isinstance(details, dict):
                continue
            for key in ("input", "parameters", "output"):
                try:
                    payload = json.loads(details.get(key) or "null")
                except (TypeError, ValueError):
                    continue
                if not isinstance(payload, dict):
                    continue
                if "outcome" in payload and "plan" in payload:
                    notified = payload
                # A DescribeEndpoint result (the task's raw output, or kept in the state as
                # `endpoint`) carries the reason an endpoint failed or an update rolled back.
                for endpoint in (payload, payload.get("endpoint")):
                    if isinstance(endpoint, dict) and endpoint.get("FailureReason"):
                        endpoint_failure = endpoint["FailureReason"]
    if notified is None:
        return {"reason": None, "endpoint_name": None}
    plan = notified.get("plan") or {}
    error = notified.get("error") or {}
    reason = None
    if error:
        reason = f"{error.get('Error', 'Error')}: {cause_text(error.get('Cause', ''))}"
    elif notified.get("outcome") == "skipped":
        reason = plan.get("reason")
    if endpoint_failure and (reason is None or endpoint_failure not in reason):
        reason = f"{reason}; endpoint failure reason: {endpoint_failure}" if reason else endpoint_failure
    if reason and len(reason) > MAX_REASON_CHARS:  # a server's log tail can hold a whole stack trace
        reason = reason[:MAX_REASON_CHARS] + " ..."
    return {"reason": reason, "endpoint_name": plan.get("endpoint_name")}
