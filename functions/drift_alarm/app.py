"""EventBridge "CloudWatch Alarm State Change" of the data drift alarm -> tell people, retrain if asked.

Thin handler: the response lives in ``mlops_shared.drift_response`` (newest drift report, drifted
features, and with RetrainOnDrift the newest labelled dataset the serving model was not trained on).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mlops_shared.observability import metrics_namespace
from mlops_shared.drift_response import DriftResponseSettings, respond

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics(namespace=metrics_namespace())
settings = DriftResponseSettings.from_env()

OUTCOME_METRICS = {"notified": "DriftAlarmsNotified", "retraining": "RetrainingsOnDriftStarted",
                   "needs_labelled_data": "DriftAlarmsWithoutLabelledData"}


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = respond(event, settings)
    logger.info("drift alarm handled", extra={"result": result})
    if result["status"] in OUTCOME_METRICS:
        metrics.add_metric(name=OUTCOME_METRICS[result["status"]], unit=MetricUnit.Count, value=1)
    return result
