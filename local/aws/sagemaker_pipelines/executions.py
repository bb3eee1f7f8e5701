"""What the local SageMaker Pipelines service knows about one execution and its steps, in the
shapes the SageMaker API answers with, and the EventBridge events AWS emits when they change."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from local.aws.sagemaker_pipelines.definition import Context

EXECUTION_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
STEP_EVENT = "SageMaker Model Building Pipeline Execution Step Status Change"
TERMINAL = ("Succeeded", "Failed", "Stopped")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def now() -> datetime:
    return datetime.now(timezone.utc)


def epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


@dataclass
class StepRun:
    name: str
    type: str
    status: str = "Starting"
    start: datetime | None = None
    end: datetime | None = None
    failure_reason: str | None = None
    metadata: dict = field(default_factory=dict)
    cache_source: str | None = None
    display_name: str | None = None
    description: str | None = None

    def to_api(self) -> dict:
        item: dict[str, Any] = {"StepName": self.name, "StepStatus": self.status, "AttemptCount": 1}
        for key, value in (("StartTime", epoch(self.start)), ("EndTime", epoch(self.end)),
                           ("StepDisplayName", self.display_name), ("StepDescription", self.description),
                           ("FailureReason", self.failure_reason)):
            if value is not None:
                item[key] = value
        if self.metadata:
            item["Metadata"] = self.metadata
        if self.cache_source:
            item["CacheHitResult"] = {"SourcePipelineExecutionArn": self.cache_source}
        return item


@dataclass
class Execution:
    arn: str
    id: str
    pipeline_name: str
    pipeline_arn: str
    definition: dict
    parameters: dict[str, Any]
    display_name: str
    description: str | None
    token: str
    role_arn: str | None = None  # the pipeline's RoleArn: SageMaker Pipelines acts with it
    creation: datetime = field(default_factory=now)
    status: str = "Executing"
    failure_reason: str | None = None
    end: datetime | None = None
    last_modified: datetime = field(default_factory=now)
    steps: dict[str, StepRun] = field(default_factory=dict)
    step_order: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    processes: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    context: Context | None = None

    def summary(self) -> dict:
        item = {"PipelineExecutionArn": self.arn, "StartTime": epoch(self.creation),
                "PipelineExecutionStatus": self.status, "PipelineExecutionDisplayName": self.display_name}
        if self.description:
            item["PipelineExecutionDescription"] = self.description
        if self.failure_reason:
            item["PipelineExecutionFailureReason"] = self.failure_reason
        return item


def execution_event_detail(execution: Execution, previous: str | None) -> dict:
    """`detail` of "SageMaker Model Building Pipeline Execution Status Change"."""
    return {
        "pipelineArn": execution.pipeline_arn,
        "pipelineExecutionArn": execution.arn,
        "pipelineExecutionDisplayName": execution.display_name,
        "currentPipelineExecutionStatus": execution.status,
        "previousPipelineExecutionStatus": previous,
        "executionStartTime": execution.creation.isoformat(),
        "executionEndTime": execution.end.isoformat() if execution.end else None,
        "pipelineExecutionDescription": execution.description,
        "failureReason": execution.failure_reason,
    }


def step_event_detail(execution: Execution, run: StepRun, previous: str | None) -> dict:
    """`detail` of "SageMaker Model Building Pipeline Execution Step Status Change"."""
    return {
        "pipelineArn": execution.pipeline_arn,
        "pipelineExecutionArn": execution.arn,
        "stepName": run.name,
        "stepType": run.type,
        "currentStepStatus": run.status,
        "previousStepStatus": previous,
        "stepStartTime": run.start.isoformat() if run.start else None,
        "stepEndTime": run.end.isoformat() if run.end else None,
        "failureReason": run.failure_reason,
        "cacheHitResult": {"sourcePipelineExecutionArn": run.cache_source} if run.cache_source else None,
        "metadata": run.metadata,
    }
