"""Explains a failed or stopped pipeline execution: which step, and the reason SageMaker recorded."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import boto3

from . import notifications
from .config import PipelineStatusSettings

REPORTED_STATUSES = {"Failed", "Stopped"}
_PROBLEM_STEP_STATUSES = {"Failed", "Stopped"}


@dataclass(frozen=True)
class StepProblem:
    step_name: str
    step_status: str
    failure_reason: str
    step_type: str | None = None


def pipeline_name_from_arn(arn: str) -> str:
    """``arn:aws:sagemaker:r:a:pipeline/NAME[/execution/ID]`` -> ``NAME``."""
    resource = arn.split(":", 5)[-1]
    parts = resource.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" else ""


def find_step_problems(execution_arn: str, sagemaker: Any = None) -> list[StepProblem]:
    """The failed or stopped steps of an execution, in the order they started."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    steps: list[dict[str, Any]] = []
    request: dict[str, Any] = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
    while True:
        page = sagemaker.list_pipeline_execution_steps(**request)
        steps.extend(page.get("PipelineExecutionSteps", []))
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    problems = []
    for step in steps:
        if step.get("StepStatus") not in _PROBLEM_STEP_STATUSES:
            continue
        metadata = step.get("Metadata") or {}
        # A Fail step carries its message in its metadata; job steps carry FailureReason.
        reason = step.get("FailureReason") or (metadata.get("Fail") or {}).get("ErrorMessage") or "no reason recorded"
        problems.append(
            StepProblem(
                step_name=step.get("StepName", "?"),
                step_status=step["StepStatus"],
                failure_reason=reason,
                step_type=next(iter(metadata), None),
            )
        )
    return problems


def handle_status_change(
    detail: dict[str, Any],
    settings: PipelineStatusSettings,
    *,
    sagemaker: Any = None,
    sns: Any = None,
) -> dict[str, Any]:
    """Publishes who/what/why for a Failed or Stopped execution of our pipeline; ignores the rest."""
    status = detail.get("currentPipelineExecutionStatus")
    execution_arn = detail.get("pipelineExecutionArn", "")
    pipeline_arn = detail.get("pipelineArn") or execution_arn
    pipeline_name = pipeline_name_from_arn(pipeline_arn)
    if status not in REPORTED_STATUSES:
        return {"status": "ignored", "reason": f"execution status {status!r} is not reported"}
    # SageMaker lower-cases names inside ARNs, so compare without case.
    if pipeline_name.lower() != settings.pipeline_name.lower():
        return {"status": "ignored", "reason": f"pipeline {pipeline_name!r} is not {settings.pipeline_name!r}"}

    problems = find_step_problems(execution_arn, sagemaker)
    display_name = detail.get("pipelineExecutionDisplayName") or execution_arn.rsplit("/", 1)[-1]
    first = problems[0] if problems else None

    lines = [
        f"Pipeline {settings.pipeline_name} execution {display_name} is {status}.",
        "",
    ]
    if first:
        lines.append(f"Step {first.step_name} {first.step_status.lower()}: {first.failure_reason}")
        for other in problems[1:]:
            lines.append(f"Step {other.step_name} {other.step_status.lower()}: {other.failure_reason}")
    else:
        lines.append("No step reported a failure (the execution was probably stopped by someone).")
    lines += [
        "",
        f"Execution: {execution_arn}",
        f"Started: {detail.get('executionStartTime', '?')}  Ended: {detail.get('executionEndTime', '?')}",
        f"Details: aws sagemaker list-pipeline-execution-steps --pipeline-execution-arn {execution_arn}",
        "Nothing was registered or deployed by this execution. Fix the cause and upload the dataset again.",
    ]
    subject = f"Training {status.lower()}: {display_name}" + (f" at step {first.step_name}" if first else "")
    message_id = notifications.publish(
        notifications.Notification(event_type=f"pipeline_{status.lower()}", subject=subject, body="\n".join(lines)),
        settings.notification_topic_arn,
        sns=sns,
    )
    return {
        "status": "notified",
        "execution_status": status,
        "execution_arn": execution_arn,
        "failed_step": first.step_name if first else None,
        "failure_reason": first.failure_reason if first else None,
        "steps": [asdict(problem) for problem in problems],
        "notification_message_id": message_id,
    }
