"""EventBridge "Pipeline Execution Status Change" (Failed/Stopped) -> tell people which step failed and why.

Thin handler: the explanation is built by ``mlops_shared.pipeline_failures``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from mlops_shared.config import PipelineStatusSettings
from mlops_shared.observability import TRACED_MODULES
from mlops_shared.pipeline_failures import handle_status_change

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()

settings = PipelineStatusSettings.from_env()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The plain event, not Powertools' EventBridgeEvent: importing its data classes loads every event
    # type Powertools knows (tens of modules) at cold start to read one field.
    result = handle_status_change(dict(event["detail"]), settings)
    logger.info("pipeline status change handled", extra={"result": result})
    if result["status"] == "notified":
        metrics.add_metric(name=f"PipelineExecutions{result['execution_status']}", unit=MetricUnit.Count, value=1)
    return result
