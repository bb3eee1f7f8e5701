"""EventBridge "Pipeline Execution Status Change" (Failed/Stopped) -> tell people which step failed and why.

Thin handler: the explanation is built by ``mlops_shared.pipeline_failures``.
"""
from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops_shared.config import PipelineStatusSettings
from mlops_shared.pipeline_failures import handle_status_change

logger = Logger()
tracer = Tracer()
metrics = Metrics()

settings = PipelineStatusSettings.from_env()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    result = handle_status_change(dict(event.detail), settings)
    logger.info("pipeline status change handled", extra={"result": result})
    if result["status"] == "notified":
        metrics.add_metric(name=f"PipelineExecutions{result['execution_status']}", unit=MetricUnit.Count, value=1)
    return result
